#!/usr/bin/env bash
# mt_loaded.sh - bench/mt with 2 and 4 threads (half the frees handed to
# another thread) on an idle machine and beside two busy loops, for
# several builds of the library, interleaved; prints the median ns/op of 5
# runs each. Shows what lock waiting costs when holders get preempted.
#   bench/mt_loaded.sh NAME=LIB [NAME=LIB ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[[ -x $here/mt ]] || make -s -C "$here/.." bench/mt
(($#)) || { echo "usage: $0 NAME=LIB..." >&2; exit 2; }
run() { # $1 = label
  for t in 2 4; do
    declare -A r=()
    for rep in 1 2 3 4 5; do
      for spec in "$@"; do
        [[ $spec == *=* ]] || continue
        v=$(LD_PRELOAD=${spec#*=} "$here/mt" -t "$t" -x 50 2>&1 | grep -o '[0-9.]* ns/op' | cut -d' ' -f1)
        r[${spec%%=*}]+=" $v"
      done
    done
    for spec in "$@"; do
      [[ $spec == *=* ]] || continue
      n=${spec%%=*}
      printf '%-7s threads=%d %-12s median %8s ns/op  (runs:%s)\n' "$1" "$t" "$n" \
        "$(tr ' ' '\n' <<<"${r[$n]}" | grep . | sort -n | sed -n 3p)" "${r[$n]}"
    done
  done
}
run idle "$@"
pids=()
for _ in 1 2; do (while :; do :; done) & pids+=($!); done
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
run loaded "$@"
