#!/usr/bin/env bash
# The heap profiler (FITALLOC_PROFILE, `fitalloc profile`) on
# c_tests/test_profile.c, whose call sites keep known amounts live: each
# site's estimate is within 35-40% (about 4 standard deviations at the
# sampling rate used), freed blocks are gone, the pinned-free-space profile
# names the site that leaves holes between its blocks, a dump on demand
# sees only what was live then, and the program's exit status comes back.
# A missing tool (python3, addr2line) fails the test.
set -uo pipefail
cd "$(dirname "$0")/.."
FA=$(pwd)/scripts/fitalloc
PROG=$(pwd)/c_tests/bin/test_profile
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0 failed=0
ok() { echo "ok    $*"; passed=$((passed + 1)); }
bad() { echo "FAIL  $*"; failed=$((failed + 1)); }

for tool in python3 addr2line; do
    command -v "$tool" >/dev/null 2>&1 || bad "$tool is not installed (Debian: binutils for addr2line)"
done

# bytes FILE SITE: the bytes of the stacks whose leaf is SITE (0 if none).
bytes() {
    awk -v site="$2" '{ n = split($1, f, ";"); if (f[n] == site) s += $2 } END { printf "%d\n", s }' "$1"
}
# within VALUE WANT PERCENT
within() {
    awk -v v="$1" -v w="$2" -v p="$3" 'BEGIN { exit !(v >= w * (1 - p / 100) && v <= w * (1 + p / 100)) }'
}

# A stack buffer overflow over a saved frame pointer, then a sampled
# malloc: the walk ends the stack there (c_tests/profile_smash.c).
if gcc -O0 -g -fno-omit-frame-pointer -pthread -o "$work/smash" c_tests/profile_smash.c 2>"$work/smash.err"; then
    for mode in garbage guard; do
        out=$(FITALLOC_PROFILE="$work/smash.%p" FITALLOC_PROFILE_RATE=1 LD_PRELOAD="$(pwd)/target/release/libfitalloc.so" \
            "$work/smash" "$mode" 2>&1)
        st=$?
        if [[ $st == 0 && $out == *"no fault"* ]]; then
            ok "a sampled malloc after an overflow over a saved frame pointer ($mode): no fault"
        else
            bad "profile_smash $mode: exit status $st: $out"
        fi
    done
else
    bad "c_tests/profile_smash.c did not build: $(cat "$work/smash.err")"
fi

status=0
"$FA" profile -o "$work/prof.txt" --rate 16k --svg "$work/prof.svg" --raw "$work/raw" -- \
    "$PROG" "$work/dump.raw" 3 >"$work/out" 2>"$work/err" || status=$?
if [[ $status == 3 ]]; then ok "fitalloc profile: the program's exit status (3)"; else bad "exit status $status, want 3: $(tail -3 "$work/err")"; fi
if grep -q "top allocation sites by live bytes" "$work/err"; then ok "a summary on stderr"; else bad "no summary: $(tail -3 "$work/err")"; fi

live=$work/prof.txt pinned=$work/prof.pinned.txt
if [[ -s $live && -s $pinned ]]; then ok "live and pinned folded stacks written"; else bad "missing $live or $pinned"; fi
if grep -q '^_start;.*;main;keep_dense [0-9]*$' "$live"; then ok "folded stacks run from _start to the allocating function"; else bad "no _start;...;main;keep_dense line: $(head -3 "$live")"; fi

# Known live bytes per site (the blocks' requested sizes).
check_site() { # site want percent
    local got
    got=$(bytes "$live" "$1")
    if within "$got" "$2" "$3"; then ok "$1: $got live bytes (real: $2)"; else bad "$1: $got live bytes, real $2 (more than $3% off)"; fi
}
check_site keep_dense 4000000 35
check_site pin_pages 4000000 35
check_site thread_keep 2097152 40
total=$(awk '{ s += $NF } END { printf "%d\n", s }' "$live")
churn=$(bytes "$live" churn)
holes=$(bytes "$live" make_holes)
if ((churn * 50 < total && holes * 50 < total)); then ok "freed blocks are not live (churn $churn, make_holes $holes of $total)"; else bad "freed sites still live: churn $churn, make_holes $holes of $total"; fi

# Pinned free space: pin_pages's blocks sit between 4000 freed 2000-byte
# holes (about 8 MB of free space on shared pages); keep_dense's are packed.
pin=$(bytes "$pinned" pin_pages)
dense=$(bytes "$pinned" keep_dense)
top=$(sort -k2 -n -r -t' ' "$pinned" | awk 'NR == 1 { n = split($1, f, ";"); print f[n] }')
if [[ $top == pin_pages ]]; then ok "the pinned-free-space profile's top site is pin_pages"; else bad "top pinned site is '$top', want pin_pages"; fi
if within "$pin" 8000000 40; then ok "pin_pages pins $pin free bytes (holes: 8000000)"; else bad "pin_pages pins $pin bytes, want about 8000000"; fi
if ((dense * 10 < pin)); then ok "keep_dense pins little ($dense bytes)"; else bad "keep_dense pins $dense bytes (pin_pages $pin)"; fi

# keep_dense_only RAW LABEL: RAW, a profile taken after keep_dense only,
# symbolised, holds keep_dense's bytes and none of pin_pages.
keep_dense_only() {
    local raw=$1 label=$2 txt=$1.txt
    if "$FA" profile --from "$raw" -o "$txt" 2>"$raw.err"; then
        local dense pin
        dense=$(bytes "$txt" keep_dense)
        pin=$(bytes "$txt" pin_pages)
        if within "$dense" 4000000 35 && ((pin == 0)); then ok "$label: keep_dense only ($dense bytes)"; else bad "$label: keep_dense $dense, pin_pages $pin"; fi
    else
        bad "$label: profile --from failed: $(tail -2 "$raw.err")"
    fi
}

# The dump on demand, taken after keep_dense only.
keep_dense_only "$work/dump.raw" "fitalloc_profile_dump"

if head -c 300 "$work/prof.svg" | grep -q '<svg' && grep -q 'pin_pages' "$work/prof.svg"; then ok "--svg draws the flame graphs"; else bad "no SVG with pin_pages in $work/prof.svg"; fi

# A snapshot on a signal (FITALLOC_PROFILE_SIGNAL, `--signal`), raised
# after keep_dense: written at the next allocation, it holds keep_dense only.
status=0
"$FA" profile -o "$work/sig.txt" --rate 16k --signal USR2 --raw "$work/sig.raw" -- "$PROG" - 0 raise >/dev/null 2>"$work/sig.err" || status=$?
snaps=("$work"/sig.raw.*.1)
if [[ $status == 0 && -s ${snaps[0]} ]] && grep -q "1 snapshots" "$work/sig.err"; then
    keep_dense_only "${snaps[0]}" "--signal USR2: the snapshot"
else
    bad "--signal USR2: status $status, snapshots: ${snaps[*]}: $(tail -2 "$work/sig.err")"
fi
sig_final=$(bytes "$work/sig.txt" pin_pages)
if within "$sig_final" 4000000 35; then ok "--signal: the final profile is still written ($sig_final bytes of pin_pages)"; else bad "--signal: final pin_pages $sig_final"; fi

# FITALLOC_PROFILE directly, with a %p in the path; a forked child's file.
FITALLOC_PROFILE="$work/env.%p" LD_PRELOAD=$(pwd)/target/release/libfitalloc.so sh -c 'ls / >/dev/null; :'
n=$(ls "$work"/env.* 2>/dev/null | wc -l)
if ((n >= 2)) && grep -q '^samples$' "$work"/env.* && grep -q '^end$' "$work"/env.*; then ok "FITALLOC_PROFILE=path.%p: one complete file per process ($n)"; else bad "FITALLOC_PROFILE=path.%p: $n files"; fi

echo "heap profiler: $passed passed, $failed failed"
((failed == 0))
