#!/usr/bin/env python3
"""Instructions per cached malloc and per cached free, for fitalloc and its
peers in the same run, counted by callgrind (bench/hitpath.c says how).

Deterministic: instruction counts do not depend on the machine's load, so
one run of each is enough.  Prints three tables: one thread, after a
second thread was created (the C library, and allocators that ask it, then
count the process as multi-threaded: fitalloc's hit paths read a header in
three parts), then a third for C++'s operator new and delete (one thread),
and writes them to bench/results/hitpath.txt.

    python3 bench/hitpath.py [--sizes 32,256] [--allocators a,b,...]
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from bench import KNOWN_ALLOCATORS, DEFAULT_ORDER, ALLOCATOR_ENV  # noqa: E402

TOOL = BENCH_DIR / "hitpath"
CALLS = 100000  # bench/hitpath.c's CALLS


def collected(lib, env, mode, size, threaded):
    """Instructions callgrind collected for one run of hitpath."""
    with tempfile.TemporaryDirectory() as d:
        cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes",
               "--collect-atstart=no", f"--callgrind-out-file={d}/cg.%p",
               "env"] + [f"{k}={v}" for k, v in env.items()]
        if lib is not None:
            cmd.append(f"LD_PRELOAD={lib}")
        cmd += [str(TOOL), mode, str(size)] + (["threaded"] if threaded else [])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"hitpath {mode} failed: {r.stderr[-400:]}")
        counts = [int(m.replace(",", "")) for m in
                  re.findall(r"Collected : ([\d,]+)", r.stderr)]
        # The run of `env` itself collects nothing; the program's run does.
        return max(counts)


def per_call(lib, env, size, threaded, modes=("none", "malloc", "free")):
    base = collected(lib, env, modes[0], size, threaded)
    return tuple((collected(lib, env, m, size, threaded) - base) / CALLS
                 for m in modes[1:])


CXX_MODES = ("cxxnone", "new", "delete")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,256")
    ap.add_argument("--allocators", default=",".join(DEFAULT_ORDER))
    ap.add_argument("--out", default=str(BENCH_DIR / "results" / "hitpath.txt"))
    a = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("hitpath: valgrind is not installed (apt-get install valgrind)")
    if not TOOL.exists():
        sys.exit(f"hitpath: {TOOL} is not built (make bench/hitpath)")
    names = [n for n in a.allocators.split(",") if n]
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = {}
    for name in names:
        # NAME=PATH adds a library (another fitalloc build, say), as in
        # bench.py; any other name must be a known allocator (glibc's
        # entry is None: nothing preloaded).
        if "=" in name:
            name, lib = name.split("=", 1)
        elif name in KNOWN_ALLOCATORS:
            lib = KNOWN_ALLOCATORS[name]
        else:
            sys.exit(f"hitpath: unknown allocator {name} (NAME=PATH adds one)")
        if lib is not None and not Path(lib).exists():
            print(f"hitpath: {name}: {lib} missing, skipped", file=sys.stderr)
            continue
        env = ALLOCATOR_ENV.get(name, {})
        rows[name] = {t: [per_call(lib, env, s, t) for s in sizes]
                      for t in (False, True)}
        rows[name]["cxx"] = [per_call(lib, env, s, False, CXX_MODES) for s in sizes]
        print(f"hitpath: {name} done", file=sys.stderr, flush=True)
    lines = []
    for threaded in (False, True, "cxx"):
        when = ("after a second thread was created and joined" if threaded is True
                else "C++ operator new(size_t) and operator delete(void *), one thread"
                if threaded == "cxx" else "one thread")
        lines += [f"Instructions per cached call (callgrind; the toggles' own cost "
                  f"subtracted), one warm block of the size freed and taken again; "
                  f"{when}:", ""]
        take, give = ("new", "delete") if threaded == "cxx" else ("malloc", "free")
        head = f"{'allocator':<12}" + "".join(
            f"{f'{take}({s})':>13}{f'{give}({s})':>12}{'pair':>7}{'x fitalloc':>12}"
            for s in sizes)
        lines.append(head)
        ref = rows["fitalloc"][threaded] if "fitalloc" in rows else None
        for name, by_mode in rows.items():
            line = f"{name:<12}"
            for i, (m, f) in enumerate(by_mode[threaded]):
                ratio = ""
                if ref is not None:
                    ratio = f"{(m + f) / sum(ref[i]):.2f}"
                line += f"{m:>13.0f}{f:>12.0f}{m + f:>7.0f}{ratio:>12}"
            lines.append(line)
        lines.append("")
    text = "\n".join(lines)
    print(text, end="")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
