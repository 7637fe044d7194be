#!/usr/bin/env bash
# scripts/real_programs.sh - run real programs with and without
# LD_PRELOAD=$LIB and compare what they print and how they exit.
#
# usage: scripts/real_programs.sh [LIB]
#   LIB                   the library to preload (argument, or $LIB, default
#                         target/release/libfitalloc.so; made absolute)
#   FITALLOC_SERVED_CHECK 0 = skip the "served by the library" checks (useful
#                         when trying the script with another allocator)
#   REAL_PROGRAMS_ONLY    space-separated case names to run (default: all)
#
# Each case runs three times in the same fresh directory: without the library
# (baseline), with LD_PRELOAD (stdout, exit status and, where deterministic,
# stderr must equal the baseline's), and once more with LD_PRELOAD and
# FITALLOC_STATS=1, whose stderr must contain a line starting with
# "fitalloc: " (the statistics the library prints at exit): the proof that
# the library really served the program. Missing programs are skipped.
# Exit status: 0 if nothing failed.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib=$(resolve_lib real_programs "${1:-}") || exit 1
served_check=${FITALLOC_SERVED_CHECK:-1}
only=${REAL_PROGRAMS_ONLY:-}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fitalloc-real.XXXXXX")
cleanup() {
    chmod -R u+w "$tmp" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

data=$tmp/data
work=$tmp/work
results=$tmp/results
mkdir -p "$data" "$results"

# A deterministic environment for every run.
export LC_ALL=C TZ=UTC
export PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
export PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0
export HOME=$tmp/home
mkdir -p "$HOME"
unset LD_PRELOAD FITALLOC_STATS FITALLOC_CHECK FITALLOC_TRACE

passed=0
failed=0
skipped=0
failed_names=()

# ---- test data (made once, without the library) -----------------------------

make_data() {
    # ~3.5 MB of pseudo-random lines: "word number word word"
    awk 'BEGIN {
        srand(42)
        for (i = 0; i < 120000; i++) {
            w = ""
            n = 3 + int(rand() * 10)
            for (j = 0; j < n; j++) w = w sprintf("%c", 97 + int(rand() * 26))
            printf "%s %d %s%d key%d\n", w, int(rand() * 1000000), substr(w, 1, 2), i % 97, int(rand() * 5000)
        }
    }' >"$data/lines.txt"

    cat >"$data/workload.py" <<'PY'
import hashlib
import json
import random

random.seed(12345)


def make(depth):
    if depth == 0:
        kind = random.randrange(5)
        if kind == 0:
            return random.random()
        if kind == 1:
            return random.randint(-10**12, 10**12)
        if kind == 2:
            return "x" * random.randint(0, 60) + str(random.random())
        if kind == 3:
            return None
        return random.random() < 0.5
    if depth % 2:
        return {"k%d_%d" % (i, random.randint(0, 999)): make(depth - 1) for i in range(random.randint(1, 6))}
    return [make(depth - 1) for _ in range(random.randint(1, 6))]


data = [make(6) for _ in range(25)]
text = json.dumps(data, sort_keys=True, indent=1)
back = json.loads(text)
assert back == data
print(len(text), hashlib.sha256(text.encode()).hexdigest())

words = text.split('"')
words.sort(key=lambda w: (len(w), w))
print(len(words), words[-1][:30])

nums = sorted(random.random() for _ in range(200000))
print("%.6f" % sum(nums))

table = {}
for i in range(150000):
    table[str(i) * 3] = [i] * (i % 7)
for i in range(0, 150000, 3):
    del table[str(i) * 3]
print(len(table), sum(len(v) for v in table.values()))

blobs = [bytes([i % 256]) * (i * 37 % 70000) for i in range(3000)]
print(sum(map(len, blobs)), hashlib.sha256(b"".join(blobs[::7])).hexdigest()[:16])
PY

    cat >"$data/workload.pl" <<'PL'
use strict;
use warnings;
my %h;
my $s = "";
for my $i (1 .. 100000) {
    $s .= chr(97 + $i % 26);
    $s = substr($s, 500) if length($s) > 5000;
    $h{"k$i"} = substr($s, -(1 + $i % 300)) . $i;
}
my @m = grep { /a[b-e]+f?(\d+)$/ } values %h;
my @sorted = sort { length($a) <=> length($b) or $a cmp $b } values %h;
print scalar(@m), " ", $sorted[0], " ", length($sorted[-1]), " ", length(join("", @sorted)), "\n";
(my $t = join(",", @sorted[0 .. 4999])) =~ s/(\d+)/<$1>/g;
print length($t), "\n";
my %count;
$count{$_}++ for map { substr($_, 0, 2) } @sorted;
print join(" ", map { "$_=$count{$_}" } (sort keys %count)[0 .. 9]), "\n";
delete $h{"k$_"} for grep { $_ % 3 } 1 .. 100000;
print scalar(keys %h), "\n";
PL

    cat >"$data/prog.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node { struct node *next; char name[24]; int value; };

static int cmp(const void *a, const void *b)
{
    const struct node *x = *(const struct node *const *)a, *y = *(const struct node *const *)b;
    return x->value != y->value ? (x->value < y->value ? -1 : 1) : strcmp(x->name, y->name);
}

int main(void)
{
    enum { N = 20000 };
    struct node **v = malloc(N * sizeof *v);
    unsigned s = 1;
    for (int i = 0; i < N; i++) {
        v[i] = calloc(1, sizeof **v);
        s = s * 1103515245u + 12345u;
        v[i]->value = (int)(s >> 16) % 1000;
        snprintf(v[i]->name, sizeof v[i]->name, "n%u", s % 100000u);
    }
    qsort(v, N, sizeof *v, cmp);
    long sum = 0;
    for (int i = 0; i < N; i++) {
        sum += (long)v[i]->value * (i % 13);
        free(v[i]);
    }
    free(v);
    printf("%ld\n", sum);
    return 0;
}
C

    # 20,000 INSERTs in one transaction, then index, group by, update, delete, vacuum.
    awk 'BEGIN {
        print "CREATE TABLE t (id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, score REAL, note TEXT);"
        print "BEGIN;"
        for (i = 1; i <= 20000; i++)
            printf "INSERT INTO t (grp, name, score, note) VALUES (%d, \x27name%d\x27, %d.%02d, \x27%s\x27);\n",
                i % 37, (i * 7919) % 20000, (i * 31) % 1000, i % 100, substr("abcdefghijklmnopqrstuvwxyz", 1 + i % 26)
        print "COMMIT;"
        print "CREATE INDEX t_grp ON t (grp, score);"
        print "SELECT grp, count(*), printf(\x27%.2f\x27, sum(score)), max(name) FROM t GROUP BY grp ORDER BY grp;"
        print "UPDATE t SET score = score * 2, note = note || \x27!\x27 WHERE grp % 3 = 0;"
        print "DELETE FROM t WHERE id % 5 = 0;"
        print "VACUUM;"
        print "SELECT count(*), printf(\x27%.2f\x27, sum(score)), count(DISTINCT note) FROM t;"
        print "SELECT name, score FROM t WHERE grp = 5 ORDER BY score DESC, name LIMIT 10;"
        print "PRAGMA integrity_check;"
    }' >"$data/script.sql"
}

# ---- the cases ------------------------------------------------------------------
# Each case runs in $work (a fresh, identical path every time) with errexit off;
# it prints the exit status of the steps that matter so stdout covers them.

case_ls() { ls -lR /usr/share/doc; }

case_python_sum() { python3 -c 'print(sum(range(10**6)))'; }

case_python_json() { PYTHONMALLOC=malloc python3 "$data/workload.py"; }

case_python_exit() {
    python3 -c 'import sys; sys.stderr.write("to stderr\n"); print("to stdout"); sys.exit(3)'
}

case_perl() { perl "$data/workload.pl"; }

case_gcc() {
    cp "$data/prog.c" prog.c
    gcc -O2 -Wall -c prog.c -o prog.o
    echo "compile: $?"
    gcc -O2 prog.o -o prog
    echo "link: $?"
    ./prog
    echo "run: $?"
    sha256sum prog.o
}

case_git() {
    export GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=Tester GIT_AUTHOR_EMAIL=tester@example.invalid
    export GIT_COMMITTER_NAME=Tester GIT_COMMITTER_EMAIL=tester@example.invalid
    export GIT_AUTHOR_DATE='2024-01-01T00:00:00Z' GIT_COMMITTER_DATE='2024-01-01T00:00:00Z'
    git -c init.defaultBranch=main init -q repo || return
    cd repo || return
    git config pack.threads 1
    for i in 1 2 3 4 5 6; do
        seq 1 $((i * 500)) >numbers.txt
        head -c $((i * 3000)) "$data/lines.txt" >"file$i.txt"
        sed -n "$i~3p" "$data/lines.txt" | head -n 2000 >sample.txt
        git add -A
        git commit -q -m "commit $i"
    done
    git log --stat --format='%H %an %s'
    git diff --stat HEAD~4 HEAD
    git diff HEAD~2 HEAD -- numbers.txt | tail -n 5
    git gc --quiet
    echo "gc: $?"
    git count-objects -v | grep -v '^size'
    git fsck --strict
    echo "fsck: $?"
    git rev-list --all | wc -l
}

case_sqlite() {
    sqlite3 db.sqlite <"$data/script.sql"
    echo "sqlite3: $?"
}

case_sort() {
    sort "$data/lines.txt" | sha256sum
    sort -t' ' -k2,2n -k1,1 "$data/lines.txt" | head -n 20
    sort -S 1M -T . -u -k3,3 "$data/lines.txt" | sha256sum
    sort -r "$data/lines.txt" | tail -n 5
}

case_xz() {
    head -c 1500000 "$data/lines.txt" >part.txt
    xz -3 -T2 --block-size=300KiB -c part.txt >part.xz
    echo "xz: $?"
    sha256sum part.xz
    xz -dc part.xz | cmp - part.txt
    echo "round trip: $?"
    xz -1 -c part.txt | xz -dc | sha256sum
}

case_awk() {
    awk '{ for (i = 1; i <= NF; i++) c[$i]++; g[$3] += $2 } END {
            for (w in c) if (c[w] > 1) print w, c[w]
            for (k in g) print "sum", k, g[k]
        }' "$data/lines.txt" | sort | sha256sum
    awk '{ s[substr($1, 1, 3)] = s[substr($1, 1, 3)] $4 } END { for (k in s) print k, length(s[k]) }' \
        "$data/lines.txt" | sort | tail -n 10
}

case_find() {
    find /usr/share/doc -name '*.gz' | sort | head -n 100
    find /usr/share/doc -type f | wc -l
    find /usr/share/doc -type d -printf '%d %p\n' | sort | tail -n 20
}

case_grep() {
    grep -r -c -i 'license' /usr/share/doc | sort | sha256sum
    grep -r -l -E 'GNU (General|Lesser)' /usr/share/doc | sort | head -n 20
    grep -r 'zqzqzq-not-there' /usr/share/doc
    echo "grep no match: $?"
}

case_tar() {
    (cd /usr/share/doc && tar --sort=name -cf "$work/doc.tar" [a-f]*)
    echo "tar c: $?"
    sha256sum doc.tar
    tar -tvf doc.tar | sha256sum
    mkdir out
    tar -xf doc.tar -C out
    echo "tar x: $?"
    for d in out/*; do
        diff -r "$d" "/usr/share/doc/${d#out/}" >/dev/null || echo "differs: $d"
    done
    echo "compared"
}

# name:programs needed:compare stderr (1/0)
cases=(
    "ls:ls:1"
    "python_sum:python3:1"
    "python_json:python3:1"
    "python_exit:python3:1"
    "perl:perl:1"
    "gcc:gcc sha256sum:1"
    "git:git seq sed head sha256sum:1"
    "sqlite:sqlite3:1"
    "sort:sort sha256sum:1"
    "xz:xz cmp sha256sum:1"
    "awk:awk sort sha256sum:1"
    "find:find sort:1"
    "grep:grep sort sha256sum:1"
    "tar:tar diff sha256sum:1"
)

# ---- the harness ---------------------------------------------------------------

# run_variant CASE VARIANT: VARIANT is base, lib or stats.
run_variant() {
    local name=$1 variant=$2
    local out=$results/$name.$variant
    rm -rf "$work"
    mkdir -p "$work"
    local status=0
    (
        cd "$work" || exit 99
        if [[ $variant != base ]]; then
            export LD_PRELOAD=$lib
        fi
        if [[ $variant == stats ]]; then
            export FITALLOC_STATS=1
        fi
        "case_$name"
    ) >"$out.stdout" 2>"$out.stderr" </dev/null || status=$?
    echo "$status" >"$out.status"
}

show_diff() {
    local a=$1 b=$2
    diff "$a" "$b" | head -n 8 | sed 's/^/      /' || true
}

result_ok() {
    passed=$((passed + 1))
    printf 'ok    %s\n' "$1"
}

result_fail() {
    failed=$((failed + 1))
    failed_names+=("$1")
    printf 'FAIL  %s: %s\n' "$1" "$2"
}

result_skip() {
    skipped=$((skipped + 1))
    printf 'skip  %s: %s\n' "$1" "$2"
}

selected() {
    [[ -z $only ]] && return 0
    local n
    for n in $only; do
        [[ $n == "$1" ]] && return 0
    done
    return 1
}

echo "real programs with LD_PRELOAD=$lib"
make_data

runnable=()
start_all=$(date +%s)
for entry in "${cases[@]}"; do
    IFS=: read -r name progs cmp_stderr <<<"$entry"
    selected "$name" || continue
    missing=""
    for p in $progs; do
        command -v "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [[ -n $missing ]]; then
        result_skip "$name" "missing:$missing"
        continue
    fi
    t0=$(date +%s.%N)
    run_variant "$name" base
    run_variant "$name" lib
    t1=$(date +%s.%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    base=$results/$name.base
    with=$results/$name.lib
    runnable+=("$name")
    if [[ $(cat "$base.status") != "$(cat "$with.status")" ]]; then
        result_fail "$name" "exit status $(cat "$base.status") without the library, $(cat "$with.status") with it"
        echo "      stderr with the library:"
        head -n 8 "$with.stderr" | sed 's/^/      /'
    elif ! cmp -s "$base.stdout" "$with.stdout"; then
        result_fail "$name" "stdout differs ($(wc -c <"$base.stdout") vs $(wc -c <"$with.stdout") bytes)"
        show_diff "$base.stdout" "$with.stdout"
    elif [[ $cmp_stderr == 1 ]] && ! cmp -s "$base.stderr" "$with.stderr"; then
        result_fail "$name" "stderr differs"
        show_diff "$base.stderr" "$with.stderr"
    else
        result_ok "$name (exit $(cat "$with.status"), $(wc -c <"$with.stdout") bytes of stdout, ${secs}s for both runs)"
    fi
done

echo
echo "--- served by the library: FITALLOC_STATS=1 must print a 'fitalloc: ' line on stderr ---"
for name in "${runnable[@]}"; do
    if [[ $served_check != 1 ]]; then
        result_skip "served: $name" "FITALLOC_SERVED_CHECK=$served_check"
        continue
    fi
    run_variant "$name" stats
    if grep -q '^fitalloc: ' "$results/$name.stats.stderr"; then
        result_ok "served: $name ($(grep -c '^fitalloc: ' "$results/$name.stats.stderr") 'fitalloc:' line(s))"
    else
        result_fail "served: $name" "no line starting with 'fitalloc: ' on stderr with FITALLOC_STATS=1"
    fi
done

echo
if [[ $failed -gt 0 ]]; then
    echo "failed: ${failed_names[*]}"
fi
echo "real programs ($(($(date +%s) - start_all))s): $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
