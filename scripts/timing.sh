#!/usr/bin/env bash
# scripts/timing.sh - informational wall-time comparison of real programs
# with and without LD_PRELOAD=$LIB. Not part of `make test`.
#
# usage: scripts/timing.sh [LIB]
#   LIB          library to preload (argument, or $LIB, default
#                target/release/libfitalloc.so; made absolute)
#   TIMING_RUNS  runs per command (default 5, plus one warm-up)
#   TIMING_NO_HYPERFINE=1  use the plain bash loop even if hyperfine exists
#
# Workloads: python3 (PYTHONMALLOC=malloc, so its objects come from malloc)
# running an allocation-heavy script of ~1-2 s, and gcc -O2 compiling a
# generated 5,000-line C file. Prints the median of each and the ratio
# (with library / without).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib=$(resolve_lib timing "${1:-}") || exit 1
runs=${TIMING_RUNS:-5}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fitalloc-timing.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export LC_ALL=C PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
unset LD_PRELOAD FITALLOC_STATS FITALLOC_CHECK FITALLOC_TRACE

# ---- workloads --------------------------------------------------------------------

cat >"$tmp/alloc_heavy.py" <<'PY'
import json
import random

random.seed(7)
total = 0
for rnd in range(3):
    objs = {}
    for i in range(25000):
        key = "k%d_%d" % (rnd, i)
        objs[key] = [i, str(i) * (i % 9), {"v": i * 0.5, "t": (i, i + 1)}]
    for i in range(0, 25000, 2):
        del objs["k%d_%d" % (rnd, i)]
    text = json.dumps(objs)
    back = json.loads(text)
    total += len(back) + len(text)
    words = [("%x" % random.getrandbits(40)) * random.randint(1, 4) for _ in range(20000)]
    words.sort()
    total += len("".join(words[::100]))
print(total)
PY

# ~5,000 lines of C: 100 functions with loops, arrays, structs and switches.
awk 'BEGIN {
    print "#include <stddef.h>"
    print "struct rec { int a, b; double c; char name[16]; };"
    for (f = 0; f < 100; f++) {
        printf "int fn%d(struct rec *r, size_t n, int k)\n{\n", f
        print "    int acc = 0;"
        print "    double d = 0.0;"
        print "    for (size_t i = 0; i < n; i++) {"
        print "        switch ((r[i].a + k) % 6) {"
        for (c = 0; c < 6; c++) {
            printf "        case %d:\n", c
            printf "            acc += r[i].b * %d + (int)(r[i].c * %d.5);\n", c + f % 7, c
            printf "            d += r[i].c / (1.0 + %d.0 * i);\n", c + 1
            print "            break;"
        }
        print "        default:"
        print "            acc ^= (int)i;"
        print "        }"
        print "        if (r[i].name[0] == (char)(acc & 127))"
        print "            acc += r[i].a << 2;"
        print "    }"
        for (j = 0; j < 10; j++)
            printf "    acc = acc * %d + (int)d + k * %d;\n", j + 3, f
        print "    for (int j = 0; j < 16; j++)"
        print "        acc += (acc >> (j & 7)) ^ j;"
        if (f > 0)
            printf "    return acc + fn%d(r, n / 2, k + 1);\n}\n", f - 1
        else
            print "    return acc;\n}"
    }
    print "int main(void) { struct rec r[4] = {{0}}; return fn99(r, 4, 1) & 1; }"
}' >"$tmp/big.c"

py=$(python3 -c 'import sys; print(sys.executable)')
cc=$(command -v gcc || true)

names=()
cmd_base=()
cmd_lib=()
if [[ -n $py ]]; then
    names+=("python3 alloc-heavy")
    cmd_base+=("env PYTHONMALLOC=malloc $py $tmp/alloc_heavy.py")
    cmd_lib+=("env PYTHONMALLOC=malloc LD_PRELOAD=$lib $py $tmp/alloc_heavy.py")
fi
if [[ -n $cc ]]; then
    names+=("gcc -O2 $(wc -l <"$tmp/big.c")-line file")
    cmd_base+=("$cc -O2 -c $tmp/big.c -o $tmp/big.o")
    cmd_lib+=("env LD_PRELOAD=$lib $cc -O2 -c $tmp/big.c -o $tmp/big.o")
fi

# ---- measuring ----------------------------------------------------------------------

# median_loop CMD: runs CMD (split on spaces, no shell) runs+1 times, prints the median seconds.
median_loop() {
    local -a argv
    read -r -a argv <<<"$1"
    "${argv[@]}" >/dev/null 2>&1 # warm-up
    local times=() i t0 t1
    for ((i = 0; i < runs; i++)); do
        t0=$(date +%s%N)
        "${argv[@]}" >/dev/null 2>&1
        t1=$(date +%s%N)
        times+=("$((t1 - t0))")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.4f\n", m / 1e9 }'
}

median_hyperfine() {
    local json=$tmp/hf.json
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$json" "$1" >/dev/null 2>&1
    python3 -c 'import json, sys; print("%.4f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$json"
}

use_hyperfine=0
if [[ ${TIMING_NO_HYPERFINE:-0} != 1 ]] && command -v hyperfine >/dev/null 2>&1; then
    use_hyperfine=1
fi

median() {
    # Sanity: the command must succeed at all.
    local -a argv
    read -r -a argv <<<"$1"
    if ! "${argv[@]}" >/dev/null 2>"$tmp/err"; then
        echo "timing: command failed: $1" >&2
        head -n 5 "$tmp/err" >&2
        echo "nan"
        return
    fi
    if [[ $use_hyperfine == 1 ]]; then
        median_hyperfine "$1"
    else
        median_loop "$1"
    fi
}

echo "timing with LD_PRELOAD=$lib ($runs runs each, $([[ $use_hyperfine == 1 ]] && echo hyperfine || echo 'bash loop'))"
echo "load average: $(cut -d" " -f1-3 /proc/loadavg) (other load makes these numbers noisy)"
printf '%-28s %14s %16s %8s\n' "workload" "without (s)" "with lib (s)" "ratio"
for i in "${!names[@]}"; do
    without=$(median "${cmd_base[$i]}")
    with=$(median "${cmd_lib[$i]}")
    ratio=$(awk -v a="$without" -v b="$with" 'BEGIN { if (a + 0 > 0 && b != "nan") printf "%.2f", b / a; else print "n/a" }')
    printf '%-28s %14s %16s %8s\n' "${names[$i]}" "$without" "$with" "$ratio"
done
