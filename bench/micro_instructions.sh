#!/bin/bash
# micro_instructions.sh - instructions per block of bench/micro's batch
# cases (B blocks of 32 bytes malloc'd, written whole, then freed), counted
# by callgrind: deterministic, unlike times on a shared machine.
#
#   bench/micro_instructions.sh LIB [BLOCKS]   (BLOCKS: default 200000)
#
# LIB is preloaded (empty for the C library's own malloc). For each batch
# size, the whole process's instructions less those of the same run with
# no batch case, divided by the blocks: the allocator's work plus the
# benchmark's own (writing each block, about 190 instructions), the same
# for every library. Prints "batch-B instructions-per-block".
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 LIB [BLOCKS]" >&2
    exit 2
fi
command -v valgrind >/dev/null || { echo "$0: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
lib=${1:+$(realpath "$1")}
n=${2:-200000}
count() {
    LD_PRELOAD="$lib" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$here/micro" -n "$n" -l 2 -b "$1" 2>&1 >/dev/null | awk '/Collected/ { print $NF }'
}
base=$(count 0)
for b in 400 1600; do
    total=$(count "$b")
    echo "batch-$b $(( (total - base) / n ))"
done
