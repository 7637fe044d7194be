#!/usr/bin/env python3
"""The depot's bound (FITALLOC_DEPOT_BYTES) against speed and footprint.

Runs bench/prodcons (one thread allocates, another frees every block) and
bench/larson (threads free each other's blocks) under fitalloc with several
depot bounds, 0 (no depot) included, interleaved, and prints the medians:
throughput, peak RSS and, for prodcons, the blowup (peak RSS growth / peak
live bytes; issue 9's target is at most 1.2).

    python3 bench/depot_bound.py [--reps N] [--bounds 0,64k,128k,256k] [--lib PATH]
"""
import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

B = Path(__file__).resolve().parent
ROOT = B.parent

CASES = [
    ("prodcons", [B / "prodcons", "-n", "2000000"]),
    ("larson-2", [B / "larson", "-n", "1000000", "2"]),
]


def run(argv, lib, bound):
    env = dict(os.environ, LD_PRELOAD=str(lib), FITALLOC_DEPOT_BYTES=bound)
    out = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        sys.exit(f"{argv[0]} failed ({out.returncode}): {out.stderr.strip()}")
    line = next(l for l in out.stdout.splitlines() if "=" in l)
    return {k: v for k, v in (kv.split("=", 1) for kv in line.split() if "=" in kv)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--bounds", default="0,64k,128k,256k")
    ap.add_argument("--lib", default=str(ROOT / "target/release/libfitalloc.so"))
    args = ap.parse_args()
    bounds = args.bounds.split(",")
    got = {(c, b): [] for c, _ in CASES for b in bounds}
    for r in range(args.reps):
        for i, b in enumerate(bounds):
            b = bounds[(i + r) % len(bounds)]
            for name, argv in CASES:
                got[(name, b)].append(run(argv, args.lib, b))
    print(f"fitalloc with FITALLOC_DEPOT_BYTES=bound; medians of {args.reps} interleaved runs")
    print(f"{'case':10} {'bound':>6} {'Mops/s':>8} {'peak RSS (MiB)':>15} {'blowup':>7}")
    for name, _ in CASES:
        for b in bounds:
            rows = got[(name, b)]
            mops = statistics.median(float(x["mops"]) for x in rows)
            rss = statistics.median(float(x["peak_rss_kb"]) for x in rows) / 1024
            blow = statistics.median(float(x["blowup"]) for x in rows) if "blowup" in rows[0] else None
            print(f"{name:10} {b:>6} {mops:8.2f} {rss:15.2f} {'' if blow is None else f'{blow:7.3f}':>7}")


if __name__ == "__main__":
    main()
