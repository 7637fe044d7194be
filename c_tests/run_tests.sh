#!/usr/bin/env bash
# Runs the C test programs given as arguments (TAP output), keeps each one's
# output in <program>.log beside it, and prints one PASS/FAIL line per program
# and a summary. Exit status 1 if any program failed.
#   C_TESTS_TIMEOUT  seconds each program may run (default 300)
#   C_TESTS_VERBOSE  1 = print every program's full output
set -euo pipefail

timeout_s=${C_TESTS_TIMEOUT:-300}
verbose=${C_TESTS_VERBOSE:-0}
passed=0
failed=0
failed_names=()

if [[ $# -eq 0 ]]; then
    echo "usage: $0 TEST_BINARY..." >&2
    exit 2
fi

for prog in "$@"; do
    name=$(basename "$prog")
    log="$prog.log"
    start=$(date +%s.%N)
    status=0
    timeout --kill-after=10 "$timeout_s" "$prog" >"$log" 2>&1 || status=$?
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    n_ok=$(grep -c '^ok ' "$log" || true)
    n_not_ok=$(grep -c '^not ok ' "$log" || true)
    if [[ $verbose == 1 ]]; then
        cat "$log"
    fi
    if [[ $status -eq 0 && $n_not_ok -eq 0 && $n_ok -gt 0 ]]; then
        passed=$((passed + 1))
        printf 'PASS  %-14s %4d checks  %6ss\n' "$name" "$n_ok" "$secs"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        if [[ $status -eq 124 || $status -eq 137 ]]; then
            why="timed out after ${timeout_s}s"
        elif [[ $status -gt 128 ]]; then
            why="killed by signal $((status - 128))"
        else
            why="exit status $status"
        fi
        printf 'FAIL  %-14s %4d ok, %d not ok, %s  %6ss  (log: %s)\n' "$name" "$n_ok" "$n_not_ok" "$why" "$secs" "$log"
        grep '^not ok ' "$log" | sed 's/^/      /' || true
        echo "      --- last lines of $log ---"
        tail -n 15 "$log" | sed 's/^/      /'
    fi
done

echo
if [[ $failed -gt 0 ]]; then
    echo "failed: ${failed_names[*]}"
fi
echo "c-test: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
