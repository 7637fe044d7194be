#!/bin/bash
# trace_instructions.sh - instructions the allocator executes per operation
# of a trace replay, counted by callgrind (deterministic, unlike times on
# a shared machine).
#
#   bench/trace_instructions.sh LIB TRACE...   (TRACE: .rep or .rep.xz)
#
# LIB is a fitalloc build (the release profile keeps the debug information
# that names its source files); the counts are of fitalloc's own functions.
#
# For each trace: one timed replay (`bench/replay --mode=time -n 1`) under
# callgrind with LIB preloaded, collecting only inside the C entry points
# (malloc, free, calloc, realloc, memalign, posix_memalign, aligned_alloc;
# callgrind's --toggle-collect, so everything they call counts, whatever
# the compiler inlined), divided by the trace's operations.
# Prints one line per trace: "name instructions-per-op".
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 LIB TRACE..." >&2
    exit 2
fi
command -v valgrind >/dev/null || { echo "$0: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
lib=$(realpath "$1")
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in "$@"; do
    name=$(basename "$t")
    name=${name%.xz}
    name=${name%.rep}
    plain="$tmp/$name.rep"
    case "$t" in
        *.xz) xz -dc "$t" > "$plain" ;;
        *) cp "$t" "$plain" ;;
    esac
    ops=$(sed -n 3p "$plain")
    LD_PRELOAD="$lib" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --toggle-collect=malloc --toggle-collect=free --toggle-collect=calloc \
        --toggle-collect=realloc --toggle-collect=memalign --toggle-collect=posix_memalign \
        --toggle-collect=aligned_alloc \
        "$here/replay" --mode=time -n 1 "$plain" > /dev/null 2> "$tmp/err" \
        || { cat "$tmp/err" >&2; exit 1; }
    collected=$(awk '/Collected :/ { print $NF }' "$tmp/err")
    [ -n "$collected" ] || { echo "$0: callgrind collected nothing for $name" >&2; exit 1; }
    awk -v c="$collected" -v ops="$ops" -v name="$name" 'BEGIN { printf "%-10s %7.1f\n", name, c / ops }'
    rm -f "$plain"
done
