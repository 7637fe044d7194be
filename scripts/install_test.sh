#!/usr/bin/env bash
# make install / make uninstall, end to end: install into a temporary
# PREFIX, build a C and a C++ program with `pkg-config --cflags --libs
# fitalloc`, and one C program against libfitalloc.a, run them and check
# (fitalloc_stats, fitalloc_check_heap) that fitalloc served them; run the
# installed fitalloc command; uninstall and check nothing is left. Then the
# same install under DESTDIR. A missing tool (pkg-config, g++) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0 failed=0
ok() { echo "ok    $*"; passed=$((passed + 1)); }
bad() { echo "FAIL  $*"; failed=$((failed + 1)); }
finish() {
    echo "install: $passed passed, $failed failed"
    ((failed == 0))
    exit
}

for tool in pkg-config g++ cc; do
    command -v "$tool" >/dev/null 2>&1 || bad "$tool is not installed (.ci/run installs it)"
done
((failed == 0)) || finish

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
prefix=$work/prefix
expected=(
    "lib/libfitalloc.so.$version" lib/libfitalloc.so.0 lib/libfitalloc.so lib/libfitalloc.a
    include/fitalloc.h lib/pkgconfig/fitalloc.pc bin/fitalloc libexec/fitalloc/replay libexec/fitalloc/bench.py libexec/fitalloc/profile_report.py
    share/man/man1/fitalloc.1
)

# Every expected file under $1 and nothing else (files and links).
check_tree() { # root what
    local root=$1 what=$2 f missing="" extra
    for f in "${expected[@]}"; do
        [[ -e $root/$f || -L $root/$f ]] || missing+=" $f"
    done
    extra=$(cd "$root" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort |
        grep -vxF -f <(printf '%s\n' "${expected[@]}") || true)
    if [[ -z $missing && -z $extra ]]; then
        ok "$what: the ${#expected[@]} files, and nothing else"
    else
        bad "$what: missing:${missing:- none}; unexpected: ${extra:-none}"
    fi
}

# Nothing but (empty) directories left under $1.
check_empty() { # root what
    local left
    left=$(find "$1" \( -type f -o -type l \) 2>/dev/null)
    if [[ -z $left ]]; then ok "$2: nothing left"; else bad "$2: left behind: $left"; fi
}

if ! $MAKE -s install PREFIX="$prefix" LDCONFIG=true >"$work/install.log" 2>&1; then
    bad "make install PREFIX=$prefix: $(tail -3 "$work/install.log")"
    finish
fi
check_tree "$prefix" "make install PREFIX=tmp"

soname=$(readelf -d "$prefix/lib/libfitalloc.so.$version" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
links="$(readlink "$prefix/lib/libfitalloc.so") $(readlink "$prefix/lib/libfitalloc.so.0")"
if [[ $soname == libfitalloc.so.0 && $links == "libfitalloc.so.0 libfitalloc.so.$version" ]]; then
    ok "soname libfitalloc.so.0; libfitalloc.so -> .so.0 -> .so.$version"
else
    bad "soname '$soname', links '$links'"
fi

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
flags=$(pkg-config --cflags --libs fitalloc 2>&1)
if [[ $(pkg-config --modversion fitalloc 2>&1) == "$version" && $flags == *"-I$prefix/include"* && $flags == *"-L$prefix/lib"* ]]; then
    ok "pkg-config --cflags --libs fitalloc: $flags"
else
    bad "pkg-config: $flags"
fi

cat >"$work/prog.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fitalloc.h>

int main(void)
{
    struct fitalloc_stats before, after;
    fitalloc_stats(&before);
    char *v[1000];
    for (int i = 0; i < 1000; i++) {
        v[i] = malloc(16 + i * 7);
        memset(v[i], i, 16 + i * 7);
    }
    for (int i = 0; i < 1000; i += 2)
        free(v[i]);
    v[1] = realloc(v[1], 100000);
    fitalloc_stats(&after);
    unsigned long mallocs = after.malloc_calls - before.malloc_calls;
    unsigned long frees = after.free_calls - before.free_calls;
    size_t problems = fitalloc_check_heap();
    printf("mallocs %lu frees %lu problems %zu\n", mallocs, frees, problems);
    return mallocs >= 1000 && frees >= 500 && problems == 0 ? 0 : 1;
}
EOF

cat >"$work/prog.cc" <<'EOF'
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <fitalloc.h>

int main()
{
    struct fitalloc_stats before, after;
    fitalloc_stats(&before);
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 1000; i++)
        m["key " + std::to_string(i) + std::string(40, 'x')].assign(i % 50 + 1, i);
    auto p = std::make_unique<long[]>(100000);
    p[99999] = 1;
    fitalloc_stats(&after);
    unsigned long mallocs = after.malloc_calls - before.malloc_calls;
    size_t problems = fitalloc_check_heap();
    std::printf("mallocs %lu problems %zu\n", mallocs, problems);
    return mallocs >= 2000 && problems == 0 ? 0 : 1;
}
EOF

# build NAME COMPILER SOURCE FLAGS...; then run it with the installed library.
build_and_run() {
    local name=$1 compiler=$2 src=$3; shift 3
    if ! "$compiler" -O1 -o "$work/$name" "$src" "$@" >"$work/$name.log" 2>&1; then
        bad "$name: build failed: $(tail -3 "$work/$name.log")"
        return
    fi
    local out status=0
    out=$(LD_LIBRARY_PATH=$prefix/lib "$work/$name" 2>&1) || status=$?
    echo "$out" >"$work/$name.out"
    local needed
    needed=$(readelf -d "$work/$name" | sed -n 's/.*Shared library: \[\(libfitalloc[^]]*\)\].*/\1/p')
    if ((status == 0)) && [[ $needed == "${EXPECT_NEEDED-libfitalloc.so.0}" ]]; then
        ok "$name: $out${needed:+ (links $needed)}"
    else
        bad "$name: exit $status, links '${needed}': $out"
    fi
}

# shellcheck disable=SC2046 # pkg-config's flags are words
build_and_run c-prog cc "$work/prog.c" $(pkg-config --cflags --libs fitalloc)
# shellcheck disable=SC2046
build_and_run cxx-prog g++ "$work/prog.cc" $(pkg-config --cflags --libs fitalloc)
# shellcheck disable=SC2046
EXPECT_NEEDED="" build_and_run c-static cc "$work/prog.c" $(pkg-config --cflags fitalloc) \
    "$prefix/lib/libfitalloc.a" $(pkg-config --static --libs-only-l fitalloc | sed 's/-lfitalloc//')

# The installed command finds the installed library (../lib).
out=$("$prefix/bin/fitalloc" run --stats -- ls / 2>&1 >/dev/null)
if [[ $out == *"fitalloc: calls: malloc"* ]]; then
    ok "installed fitalloc run --stats finds $prefix/lib/libfitalloc.so"
else
    bad "installed fitalloc run --stats: $out"
fi
"$prefix/bin/fitalloc" record -o "$work/ls.rep" -- ls -R /usr/share/doc/bash >/dev/null 2>&1
if "$prefix/bin/fitalloc" replay --check -n 1 "$work/ls.rep" >"$work/replay.out" 2>&1 &&
   grep -q '^verified.*ok' "$work/replay.out"; then
    ok "installed fitalloc record + replay (libexec/fitalloc/replay)"
else
    bad "installed fitalloc record + replay: $(tail -2 "$work/replay.out")"
fi

$MAKE -s uninstall PREFIX="$prefix" >"$work/uninstall.log" 2>&1 || bad "make uninstall: $(tail -3 "$work/uninstall.log")"
check_empty "$prefix" "make uninstall PREFIX=tmp"

# DESTDIR: files go under DESTDIR/PREFIX; the .pc names PREFIX alone.
dest=$work/stage
if $MAKE -s install DESTDIR="$dest" PREFIX=/opt/fitalloc >"$work/install2.log" 2>&1; then
    check_tree "$dest/opt/fitalloc" "make install DESTDIR=tmp PREFIX=/opt/fitalloc"
    if grep -qx 'prefix=/opt/fitalloc' "$dest/opt/fitalloc/lib/pkgconfig/fitalloc.pc"; then
        ok "the staged fitalloc.pc says prefix=/opt/fitalloc"
    else
        bad "the staged fitalloc.pc: $(head -3 "$dest/opt/fitalloc/lib/pkgconfig/fitalloc.pc")"
    fi
    $MAKE -s uninstall DESTDIR="$dest" PREFIX=/opt/fitalloc >/dev/null 2>&1 || bad "make uninstall DESTDIR"
    check_empty "$dest" "make uninstall DESTDIR=tmp"
else
    bad "make install DESTDIR: $(tail -3 "$work/install2.log")"
fi
finish
