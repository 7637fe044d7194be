#!/usr/bin/env python3
"""Memory that comes back, against the peers in one run (bench/large.c):
ns per malloc/free pair of large buffers (untouched and touched), and RSS
after a 1 GiB spike freed but one block in a thousand, right after the
frees and after 1 s and 2 s of ordinary calls; a buffer grown by realloc
from 4 KiB to 4 MiB by doubling right after an 8 MiB one was freed (us
per round, peak RSS); and bench/buffers.c
(mimalloc-bench's malloc-large: buffers of 5 to 25 MiB, 20 live, each
written whole): seconds and peak RSS. Allocators interleaved, medians of
3 processes. Prints a table with ratios and writes OUT/returns.txt.
Standard library only."""

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (KNOWN_ALLOCATORS, DEFAULT_ORDER, env)

PAIRS = [  # (label, size, touch, n)
    ("1.5 MiB untouched", 1536 << 10, 0, 2000),
    ("1023 KiB touched", 1023 << 10, 1, 300),
    ("2 MiB touched", 2 << 20, 1, 200),
    ("8 MiB touched", 8 << 20, 1, 50),
]


def run(lib, args, tool="large"):
    env = dict(bench.os.environ)
    env.pop("LD_PRELOAD", None)
    if lib is not None:
        env["LD_PRELOAD"] = str(lib)
    out = subprocess.run([str(bench.BENCH_DIR / tool)] + args, env=env, capture_output=True, text=True,
                         timeout=600, check=True)
    if tool == "buffers":
        kv = dict(x.split("=", 1) for x in out.stdout.split() if "=" in x)
        return [float(kv["seconds"]), float(kv["peak_rss_kb"])]
    return [float(x) for x in out.stdout.split()]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=bench.BENCH_DIR / "results")
    ap.add_argument("--allocators", default=",".join(bench.DEFAULT_ORDER),
                    help="comma-separated names, NAME=PATH for another library (default %(default)s)")
    args = ap.parse_args()
    allocs, libs = [], {}
    for item in [s.strip() for s in args.allocators.split(",") if s.strip()]:
        name, _, path = item.partition("=")
        lib = Path(path) if path else bench.KNOWN_ALLOCATORS.get(name, "unknown")
        if lib == "unknown":
            ap.error(f"unknown allocator {name!r} (use NAME=PATH)")
        if lib is None or lib.exists():
            allocs.append(name)
            libs[name] = lib
    rows = {}  # (row label) -> alloc -> [values]
    for rep in range(args.reps):
        order = allocs[rep % len(allocs):] + allocs[:rep % len(allocs)]
        for a in order:
            lib = libs[a]
            for label, size, touch, n in PAIRS:
                v = run(lib, ["pairs", str(size), str(touch), str(n)])[0]
                rows.setdefault(f"{label} (ns/pair)", {}).setdefault(a, []).append(v)
            us, peak = run(lib, ["grow", "20"])
            rows.setdefault("grow 4 KiB-4 MiB after 8 MiB (us)", {}).setdefault(a, []).append(us)
            rows.setdefault("grow: peak RSS (KiB)", {}).setdefault(a, []).append(peak)
            r0, r1, r2, live = run(lib, ["spike"])
            for label, v in [("spike: RSS after frees (KiB)", r0), ("spike: RSS after 1 s (KiB)", r1),
                             ("spike: RSS after 2 s (KiB)", r2), ("spike: live (KiB)", live)]:
                rows.setdefault(label, {}).setdefault(a, []).append(v)
            secs, peak = run(lib, ["--name", a], tool="buffers")
            rows.setdefault("buffers 5-25 MiB, 20 live (s)", {}).setdefault(a, []).append(secs)
            rows.setdefault("buffers: peak RSS (KiB)", {}).setdefault(a, []).append(peak)
            print(f"returns: rep {rep + 1}/{args.reps} {a} done", file=sys.stderr, flush=True)
    peers = [a for a in allocs if a != "fitalloc"]
    head = f"{'measure':32}" + "".join(f"{a:>11}" for a in allocs) + "  |" + "".join(f"{'vs ' + p:>13}" for p in peers)
    lines = ["lower is better; ratios: peer / fitalloc (>1: fitalloc lower)", head, "-" * len(head)]
    for label, per in rows.items():
        med = {a: statistics.median(per[a]) for a in allocs}
        cells = "".join(f"{med[a]:>11.1f}" for a in allocs)
        ratios = "".join(f"{(med[p] / med['fitalloc'] if med['fitalloc'] else float('nan')):>13.2f}" for p in peers)
        lines.append(f"{label:32}{cells}  |{ratios}")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "returns.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
