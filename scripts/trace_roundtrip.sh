#!/usr/bin/env bash
# The trace recorder, end to end: record real programs with FITALLOC_TRACE
# (python3, gcc with its child processes, multi-threaded xz), check each
# trace's header against its body, and replay each with full pattern checks.
set -euo pipefail
cd "$(dirname "$0")/.."
LIB=${1:-$(pwd)/target/release/libfitalloc.so}
REPLAY=$(pwd)/bench/replay
[[ -x $REPLAY ]] || { echo "trace: $REPLAY is missing (make bench/replay)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

passed=0 failed=0
ok() { echo "ok    $*"; passed=$((passed + 1)); }
bad() { echo "FAIL  $*"; failed=$((failed + 1)); }

# Header lines 2 and 3 must be the number of ids and of operations, every
# id below the former, every block freed by the end.
check_trace() {
  awk 'NR==2 {ids=$1} NR==3 {n=$1} NR>4 {ops++; if ($2+0 >= ids) bad=1;
         if ($1=="f") live[$2]--; else if ($1!="r") live[$2]++}
       END {for (k in live) if (live[k]>0) leak++;
            exit !(ops==n && !bad && !leak)}' "$1"
}

record() {
  local name=$1; shift
  rm -f "$name".rep*
  FITALLOC_TRACE="$work/$name.rep" LD_PRELOAD="$LIB" "$@" >/dev/null
  local files=("$name".rep*)
  local total=0 f
  for f in "${files[@]}"; do
    if ! check_trace "$f"; then bad "$name: $f: header and body disagree"; return; fi
    if ! "$REPLAY" --check -n 1 "$f" >"$f.out" 2>&1; then
      bad "$name: replay of $f failed: $(tail -1 "$f.out")"; return
    fi
    total=$((total + $(sed -n 3p "$f")))
  done
  ok "$name: ${#files[@]} trace file(s), $total operations recorded and replayed with full checks"
}

PY=$(python3 -c 'import sys; print(sys.executable)')
record python env PYTHONMALLOC=malloc "$PY" -c '
import json
d = [{"k": i, "v": [str(i)] * 4} for i in range(20000)]
print(len(json.loads(json.dumps(d))))'

printf '#include <stdio.h>\nint main(void) { printf("%%d\\n", 6 * 7); return 0; }\n' > t.c
record gcc gcc -O2 -o t t.c

head -c 4000000 /dev/urandom | base64 > in.txt
record xz_threads xz -T4 -k -c in.txt

echo "trace recorder: $passed passed, $failed failed"
((failed == 0))
