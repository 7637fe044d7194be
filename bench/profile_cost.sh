#!/usr/bin/env bash
# The heap profiler's cost on the shared traces, two ways:
#  1. time: bench.py replays each trace under fitalloc, fitalloc with the
#     profiler on (FITALLOC_PROFILE, default rate 512k) and with the profiler
#     on but never sampling (FITALLOC_PROFILE_RATE=1000g: the route alone),
#     interleaved, in fresh processes (medians; a shared machine is noisy);
#  2. instructions: callgrind counts the instructions inside one timed
#     replay (replay_timed) for the same three settings: exact and
#     repeatable, though an instruction is not a unit of time.
# usage: bench/profile_cost.sh [REPS]   (from the top of the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
LIB=$(pwd)/target/release/libfitalloc.so
TRACES=${BENCH_TRACES:-../shared/traces}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "# fitalloc heap profiler: cost on the shared traces ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD))"
echo
echo "## 1. time (bench.py, $reps processes per trace and setting)"
echo
python3 bench/bench.py --traces "$TRACES" \
    --allocators "fitalloc=$LIB,fitalloc-profile=$LIB,fitalloc-profile-hook=$LIB" \
    --no-mt --no-micro --no-check --reps "$reps" --out "$work/bench" 2>/dev/null
echo
echo "## 2. instructions in one timed replay (callgrind, --toggle-collect=replay_timed)"
echo
printf '%-10s %14s %14s %8s %14s %8s %8s\n' trace off route-only "+%" profile-on "+%" samples
for t in "$TRACES"/*.rep.xz; do
    name=$(basename "$t" .rep.xz)
    xz -dc "$t" >"$work/$name.rep"
    count() {
        env "$@" LD_PRELOAD="$LIB" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
            --toggle-collect=replay_timed bench/replay --mode=time -n 1 "$work/$name.rep" 2>&1 |
            sed -n 's/.*Collected : //p'
    }
    off=$(count X=1)
    hook=$(count FITALLOC_PROFILE=/dev/null FITALLOC_PROFILE_RATE=1000g)
    on=$(count FITALLOC_PROFILE="$work/$name.prof")
    samples=$(sed -n 's/^samples_taken //p' "$work/$name.prof")
    awk -v n="$name" -v a="$off" -v b="$hook" -v c="$on" -v s="$samples" 'BEGIN {
        printf "%-10s %14d %14d %7.1f%% %14d %7.1f%% %8s\n", n, a, b, 100 * (b - a) / a, c, 100 * (c - a) / a, s }'
    rm -f "$work/$name.rep"
done
echo
echo "(samples: taken in the whole process: the verifying pass and the timed one)"
