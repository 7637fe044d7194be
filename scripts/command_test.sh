#!/usr/bin/env bash
# The fitalloc command (scripts/fitalloc) in a checkout: --help, run with
# each option, exit status propagation, missing program and trace errors,
# record + replay round trip, heapmap, compare, profile.
set -uo pipefail
cd "$(dirname "$0")/.."
FA=$(pwd)/scripts/fitalloc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0 failed=0
ok() { echo "ok    $*"; passed=$((passed + 1)); }
bad() { echo "FAIL  $*"; failed=$((failed + 1)); }
# expect WHAT STATUS PATTERN -- command...: exit status and a glob on its
# stdout+stderr.
expect() {
    local what=$1 want=$2 pattern=$3; shift 4
    local out status=0
    out=$("$@" 2>&1) || status=$?
    if [[ $status == "$want" && $out == $pattern ]]; then
        ok "$what"
    else
        bad "$what: exit $status (want $want): $(printf '%s' "$out" | tail -3)"
    fi
}

# --help of the command and of each subcommand.
expect "fitalloc --help" 0 "usage: fitalloc COMMAND*profile*" -- "$FA" --help
for c in run record replay compare heapmap profile; do
    expect "fitalloc $c --help" 0 "usage: fitalloc $c*" -- "$FA" $c --help
    expect "fitalloc help $c" 0 "usage: fitalloc $c*" -- "$FA" help $c
done
expect "no command: usage, exit 2" 2 "usage: fitalloc*" -- "$FA"
expect "unknown command: exit 2" 2 "fitalloc: unknown command 'frobnicate'*" -- "$FA" frobnicate

# run: preloaded, variables set, output unchanged, status propagated.
expect "run preloads the library" 0 "*/libfitalloc.so*" -- "$FA" run -- sh -c 'echo "$LD_PRELOAD"'
expect "run --stats --harden --check 3 --trace F sets FITALLOC_*" 0 \
    "*FITALLOC_CHECK=3*FITALLOC_HARDEN=1*FITALLOC_STATS=1*FITALLOC_TRACE=$work/t.rep*" -- \
    "$FA" run --stats --harden --check 3 --trace "$work/t.rep" -- sh -c 'env | grep ^FITALLOC_ | sort'
ls_plain=$(ls -l /usr/bin 2>&1)
ls_fit=$("$FA" run --stats -- ls -l /usr/bin 2>"$work/stats.err")
if [[ $ls_plain == "$ls_fit" ]] && grep -q "^fitalloc: calls: malloc [1-9]" "$work/stats.err"; then
    ok "run --stats -- ls -l /usr/bin: same output, statistics on stderr"
else
    bad "run --stats -- ls: output differs or no statistics: $(head -2 "$work/stats.err")"
fi
ls_h=$("$FA" run --harden --check 50 -- ls -l /usr/bin 2>&1)
if [[ $ls_plain == "$ls_h" ]]; then ok "run --harden --check 50 -- ls: same output"; else bad "run --harden --check 50: output differs"; fi
expect "run: the program's exit status (7)" 7 "" -- "$FA" run -- sh -c 'exit 7'
expect "run: killed by SIGTERM gives 143" 143 "" -- "$FA" run -- sh -c 'kill -TERM $$'
expect "run: missing program: 127 and a message" 127 "fitalloc: program not found: no-such-program-here" -- \
    "$FA" run -- no-such-program-here
expect "run: missing program path: 127" 127 "fitalloc: program not found: /no/such/prog" -- "$FA" run /no/such/prog
expect "run: no program: 2" 2 "fitalloc: run: no program given*" -- "$FA" run --stats
expect "run: bad --check: 2" 2 "fitalloc: --check needs a positive number*" -- "$FA" run --check x -- true
expect "run: unknown option: 2" 2 "fitalloc: run: unknown option --frob*" -- "$FA" run --frob -- true

# record + replay round trip; the trace is valid and replays with full checks.
PY=$(python3 -c 'import sys; print(sys.executable)')
expect "record -o: the program's output, a trace" 0 "*recorded * operations in $work/py.rep*" -- \
    "$FA" record -o "$work/py.rep" -- env PYTHONMALLOC=malloc "$PY" -c 'print(len({str(i): [i] * 3 for i in range(5000)}))'
expect "replay --check of the recorded trace" 0 "*verified*ok*" -- "$FA" replay --check -n 1 "$work/py.rep"
expect "record: the program's exit status (3)" 3 "fitalloc: *$work/s.rep*" -- "$FA" record -o "$work/s.rep" -- sh -c 'exit 3'
expect "record: no -o: 2" 2 "fitalloc: record: no output file*" -- "$FA" record -- true
expect "record: missing program: 127" 127 "fitalloc: program not found: no-such-program-here" -- \
    "$FA" record -o "$work/x.rep" -- no-such-program-here
expect "replay: missing trace: 2" 2 "fitalloc: no such trace: $work/none.rep" -- "$FA" replay "$work/none.rep"
expect "replay: no trace: 2" 2 "fitalloc: replay: no trace given*" -- "$FA" replay

expect "record: child processes' traces are counted" 0 "fitalloc: $work/two.rep is empty: *, and 2 more from child processes*" -- \
    "$FA" record -o "$work/two.rep" -- sh -c 'ls / >/dev/null; ls / >/dev/null; :'

# A C++ program that knows nothing of fitalloc, preloaded: its operator new
# is fitalloc's, and a failed new throws bad_alloc it catches.
cat >"$work/plain.cc" <<'EOF'
#include <dlfcn.h>
#include <cstdio>
#include <new>
#include <string>
#include <vector>
int main()
{
    Dl_info info;
    void *(*op)(std::size_t) = &::operator new;
    dladdr(reinterpret_cast<void *>(op), &info);
    std::vector<std::string> v(1000, std::string(100, 'x'));
    volatile std::size_t absurd = std::size_t(1) << 62;
    try {
        char *p = new char[absurd];
        p[0] = 1;
        std::printf("not thrown\n");
    } catch (const std::bad_alloc &) {
        std::printf("operator new from %s; bad_alloc caught\n", info.dli_fname);
    }
    return 0;
}
EOF
if g++ -O1 -o "$work/plain" "$work/plain.cc" -ldl 2>"$work/plain.log"; then
    expect "run: a C++ program's new/delete are fitalloc's; bad_alloc caught" 0 \
        "*operator new from */libfitalloc.so*; bad_alloc caught*" -- "$FA" run -- "$work/plain"
else
    bad "g++ could not build a C++ program: $(tail -2 "$work/plain.log")"
fi

# heapmap and compare on the recorded trace.
expect "heapmap -o map.svg" 0 "fitalloc: heap map of * written to $work/map.svg" -- \
    "$FA" heapmap "$work/py.rep" -o "$work/map.svg"
if head -c 200 "$work/map.svg" 2>/dev/null | grep -q '<svg'; then ok "the heap map is an SVG"; else bad "no SVG in $work/map.svg"; fi
expect "heapmap: missing trace: 2" 2 "fitalloc: no such trace: nope.rep" -- "$FA" heapmap nope.rep
expect "compare --reps 1: a table with fitalloc and glibc, progress lines" 0 \
    "*replaying*fitalloc, glibc*[1/*py*fitalloc*glibc*util*ns/op*" -- "$FA" compare --reps 1 -o "$work/cmp" "$work/py.rep"
expect "compare: missing trace: 2" 2 "fitalloc: no such trace: nope.rep" -- "$FA" compare nope.rep
# profile (its results are checked by scripts/profile_test.sh).
expect "profile: no -o: 2" 2 "fitalloc: profile: no output file*" -- "$FA" profile -- true
expect "profile: no program: 2" 2 "fitalloc: profile: no program given*" -- "$FA" profile -o "$work/p.txt"
expect "profile: missing program: 127" 127 "fitalloc: program not found: no-such-program-here" -- \
    "$FA" profile -o "$work/p.txt" -- no-such-program-here
expect "profile: bad --rate: 2" 2 "fitalloc: --rate needs a positive size*" -- "$FA" profile -o "$work/p.txt" --rate 0 -- true
expect "profile: unknown option: 2" 2 "fitalloc: profile: unknown option --frob*" -- "$FA" profile --frob -- true
expect "profile --from: missing profile: 2" 2 "fitalloc: no such profile: nope.raw" -- "$FA" profile --from nope.raw -o "$work/p.txt"
expect "profile: the program's exit status (5), a profile" 5 "*top allocation sites by live bytes*$work/p.txt*" -- \
    "$FA" profile -o "$work/p.txt" --rate 4k -- env PYTHONMALLOC=malloc "$PY" -c 'import sys; x = [str(i) * 10 for i in range(50000)]; sys.exit(5)'
if grep -q ' [0-9]*$' "$work/p.txt" 2>/dev/null; then ok "profile: folded stacks of python3"; else bad "profile: no folded stacks in $work/p.txt"; fi

echo "fitalloc command: $passed passed, $failed failed"
((failed == 0))
