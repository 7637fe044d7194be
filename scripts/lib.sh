# scripts/lib.sh - helpers sourced by scripts/real_programs.sh and
# scripts/timing.sh (not run on its own).
# shellcheck shell=bash

# resolve_lib TOOL [LIB]: prints the absolute path of the library to preload:
# LIB, else $LIB, else target/release/libfitalloc.so. A relative path is
# taken from the current directory if it exists there, else from the
# repository root. Fails (status 1) with "TOOL: library not found: ..." on
# stderr if it is not a file.
resolve_lib() {
    local tool=$1 lib repo_root
    repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    lib=${2:-${LIB:-target/release/libfitalloc.so}}
    if [[ $lib != /* ]]; then
        if [[ -e $PWD/$lib ]]; then
            lib=$PWD/$lib
        else
            lib=$repo_root/$lib
        fi
    fi
    if [[ ! -f $lib ]]; then
        echo "$tool: library not found: $lib (build it first: make)" >&2
        return 1
    fi
    printf '%s\n' "$lib"
}
