#!/usr/bin/env python3
"""mimalloc-bench's security tests (bench/security: overflows, underflows,
double and invalid frees, uses after free, zero-size reads and writes,
impossibly large requests), fitalloc against glibc, jemalloc, mimalloc and
tcmalloc in the same run.

Each test is built as mimalloc-bench's CMakeLists.txt builds it (the C
tests at 8, 4096 and 256 KiB, the C++ ones at 4096 bytes) and run once
per allocator with the library in LD_PRELOAD (the tests are deterministic
but for address randomisation: --runs repeats them, and a test counts as
missed if any run missed it). A test prints NOT_CAUGHT when the misuse
went through; otherwise the run ended one of these ways:

  stopped   killed by SIGABRT (the allocator's own check; its first
            stderr line is kept in the CSV)
  fault     killed by SIGSEGV or SIGBUS: the misuse touched memory that
            is not there (a guard page, an unmapped block), or the
            allocator faulted (this script does not tell them apart)
  safe      a clean exit without NOT_CAUGHT: the misuse was harmless here
            (for example malloc(-2) returned NULL)
  MISSED    NOT_CAUGHT printed: the misuse went unnoticed

As mimalloc-bench's README says, a missed test is not a vulnerability
and a stopped one not a guarantee: these are simple probes. The table
counts, for each allocator, how many tests were missed.

Writes OUT/security.txt (the table) and OUT/security.csv (one row per
test, allocator and run).  Python standard library only.

    python3 bench/security.py --src /path/to/mimalloc-bench [--out DIR]
"""

import argparse
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (KNOWN_ALLOCATORS, DEFAULT_ORDER, child_env)
import mimalloc_bench  # noqa: E402  (get_sources: the pinned mimalloc-bench tree)

C_SIZES = [("small", "8"), ("medium", "4096"), ("large", "256*1024")]
C_FLAGS = ["-Wno-free-nonheap-object", "-fno-inline", "-fno-builtin-inline",
           "-fno-inline-small-functions", "-fno-ipa-pure-const"]


def build(src, bindir):
    """Builds every test (once); returns {name: binary}."""
    sec = src / "bench" / "security"
    bindir.mkdir(parents=True, exist_ok=True)
    out = {}
    jobs = []
    for f in sorted(sec.glob("*.c")):
        for tag, size in C_SIZES:
            jobs.append((f"{f.stem}_{tag}", ["cc", *C_FLAGS, f"-DALLOCATION_SIZE={size}", "-w", str(f)]))
    for f in sorted(sec.glob("*.cc")):
        jobs.append((f.stem, ["c++", "-std=c++17", "-fsized-deallocation", "-DALLOCATION_SIZE=4096", "-w", str(f)]))
    for name, cmd in jobs:
        exe = bindir / name
        if not exe.exists():
            p = subprocess.run([*cmd, "-o", str(exe)], capture_output=True, text=True)
            if p.returncode != 0:
                bench.note(f"{name} did not build: {p.stderr.strip()[:200]}")
                continue
        out[name] = exe
    return out


def run_one(exe, lib, extra):
    p = subprocess.run([str(exe)], env=bench.child_env(lib, extra), capture_output=True, timeout=60)
    outs = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace").replace("\0", "")
    first = next((line for line in err.splitlines() if line.strip()), "")
    if "NOT_CAUGHT" in outs:
        return "MISSED", first
    if p.returncode == -signal.SIGABRT:
        return "stopped", first
    if p.returncode in (-signal.SIGSEGV, -signal.SIGBUS):
        return "fault", first
    if p.returncode == 0:
        return "safe", first
    return f"exit {p.returncode}", first


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--allocators", default=",".join(bench.DEFAULT_ORDER),
                    help="comma-separated names, NAME=PATH for another library (default %(default)s)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each test per allocator (default %(default)s)")
    ap.add_argument("--out", type=Path, default=bench.BENCH_DIR / "results")
    ap.add_argument("--work", type=Path, default=bench.BENCH_DIR / "mimalloc-bench-work")
    ap.add_argument("--src", type=Path, help="a mimalloc-bench checkout, or a git directory with the pinned commit")
    args = ap.parse_args()
    args.work = args.work.resolve()

    allocs, libs = [], {}
    for item in [s.strip() for s in args.allocators.split(",") if s.strip()]:
        name, _, path = item.partition("=")
        lib = Path(path).resolve() if path else bench.KNOWN_ALLOCATORS.get(name, "unknown")
        if lib == "unknown":
            ap.error(f"unknown allocator {name!r} (use NAME=PATH)")
        if lib is not None and not lib.exists():
            bench.note(f"skipping {name}: {lib} does not exist")
            continue
        allocs.append(name)
        libs[name] = lib

    src, commit = mimalloc_bench.get_sources(args)
    tests = build(src, args.work / f"security-{mimalloc_bench.PINNED[:12]}")
    rows, verdict = [], {}
    for r in range(args.runs):
        for name, exe in tests.items():
            for a in bench.rotate(allocs, r):
                how, first = run_one(exe, libs[a], bench.ALLOCATOR_ENV.get(a, {}))
                rows.append({"test": name, "allocator": a, "run": r, "outcome": how, "stderr": first[:200]})
                prev = verdict.get((name, a))
                # Missed in any run counts as missed.
                if prev is None or how == "MISSED":
                    verdict[(name, a)] = how

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "security.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["test", "allocator", "run", "outcome", "stderr"])
        w.writeheader()
        w.writerows(rows)

    lines = [f"mimalloc-bench security tests ({commit[:12]}), {len(tests)} tests, {args.runs} runs each; "
             "a test is MISSED if any run printed NOT_CAUGHT.",
             "stopped: SIGABRT (the allocator's check); fault: SIGSEGV/SIGBUS; safe: clean exit, misuse harmless.",
             ""]
    w = max(len(n) for n in tests) + 2
    lines.append(f"{'test':<{w}}" + "".join(f"{a:>12}" for a in allocs))
    for name in tests:
        lines.append(f"{name:<{w}}" + "".join(f"{verdict[(name, a)]:>12}" for a in allocs))
    lines.append("")
    for kind in ["MISSED", "stopped", "fault", "safe"]:
        counts = [sum(1 for n in tests if verdict[(n, a)] == kind) for a in allocs]
        lines.append(f"{kind + ' (tests)':<{w}}" + "".join(f"{c:>12}" for c in counts))
    text = "\n".join(lines) + "\n"
    (args.out / "security.txt").write_text(text)
    sys.stdout.write(text)
    print(f"(results in {args.out})")


if __name__ == "__main__":
    main()
