#!/usr/bin/env python3
"""The multi-threaded patterns users hit, fitalloc against glibc, jemalloc,
mimalloc and tcmalloc in the same run (issue 9):

  larson-T    larson.c: a server whose threads replace blocks and hand
              their slot arrays to each other (most frees cross-thread)
  prodcons    prodcons.c: one thread allocates, another frees; blowup =
              peak RSS growth / peak live bytes (target <= 1.2)
  churn-C     churn.c: 10,000 short-lived threads, C at a time; RSS at the end
  thrash-T    thrash.c: do concurrently allocated small blocks of two
              threads share a cache line (shared %), and what writing
              them costs (mimalloc-bench's cache-thrash)
  mt-T        mt.c with half of the frees handed to another thread (-x 50)

Every measurement is its own process with the allocator in LD_PRELOAD
(the peers' libraries are bench.py's KNOWN_ALLOCATORS).  Repetitions are
interleaved: each repetition runs every case with every allocator, in an
order rotated by one each time; the table shows medians.  For fitalloc the
tools also read its lock counters (fitalloc_stats, version 3) and the table
gives lock waits per thousand malloc/free calls.

Writes OUT/mt-patterns.txt (the table), OUT/mt-patterns.csv (one row per
case, metric and allocator) and OUT/mt-patterns-raw.txt (every process's
output line).  Python standard library only.
"""

import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (KNOWN_ALLOCATORS, DEFAULT_ORDER, child_env, rotate)

B = bench.BENCH_DIR
MT_CSV = ["bench", "allocator", "threads", "ops", "seconds", "ops_per_sec", "ns_op", "handed_off",
          "peak_rss_kb", "lock_waits", "lock_sleeps"]

# Metrics: key -> (label, unit, which way is good for fitalloc's ratio)
METRICS = {
    "mops": ("throughput", "Mops/s", "higher"),
    "seconds": ("time", "s", "lower"),
    "peak_mib": ("peak RSS", "MiB", "lower"),
    "blowup": ("blowup", "x", "lower"),
    "end_mib": ("RSS at end", "MiB", "lower"),
    "shared_pct": ("shared lines", "%", "lower"),
    "thrash_lines": ("thrash lines", "lines", "lower"),
    "cross_pct": ("cross-thread", "% frees", "info"),
}


def cases(quick):
    """(name, argv, metrics shown); sizes smaller with --quick."""
    q = quick
    out = []
    for t in (1, 2, 4):
        out.append((f"larson-{t}", [B / "larson", "-n", "250000" if q else "1000000", str(t)],
                    ["mops", "peak_mib", "cross_pct"]))
    out.append(("prodcons", [B / "prodcons", "-n", "500000" if q else "2000000"],
                ["mops", "peak_mib", "blowup"]))
    for c in (1, 4):
        out.append((f"churn-{c}", [B / "churn", "-n", "2500" if q else "10000", str(c)],
                    ["seconds", "peak_mib", "end_mib"]))
    for t in (2, 4):
        out.append((f"thrash-{t}", [B / "thrash", "-r", "5000" if q else "20000", str(t)],
                    ["seconds", "peak_mib", "shared_pct", "thrash_lines"]))
    for t in (1, 2, 4):
        out.append((f"mt-{t}", [B / "mt", "-x", "50", "-n", "300000" if q else "1000000", "--csv", str(t)],
                    ["mops", "peak_mib"]))
    return out


def parse(name, text):
    """The tool's output -> dict of figures (None if there is none)."""
    line = next((l for l in text.splitlines() if l.strip()), "")
    if not line:
        return None
    if name.startswith("mt-"):
        row = dict(zip(MT_CSV, line.split(",")))
    else:
        row = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    try:
        d = {"ops": float(row["ops"]), "seconds": float(row["seconds"]),
             "peak_mib": float(row["peak_rss_kb"]) / 1024}
    except (KeyError, ValueError):
        return None
    if "ops_per_sec" in row:
        d["mops"] = float(row["ops_per_sec"]) / 1e6
    else:
        d["mops"] = d["ops"] / d["seconds"] / 1e6 if d["seconds"] > 0 else None
    for key in ("blowup", "shared_pct", "thrash_lines", "cross_pct"):
        if row.get(key):
            d[key] = float(row[key])
    if row.get("end_rss_kb"):
        d["end_mib"] = float(row["end_rss_kb"]) / 1024
    if row.get("lock_waits"):
        d["waits_kop"] = 1000 * float(row["lock_waits"]) / d["ops"]
        d["sleeps_kop"] = 1000 * float(row["lock_sleeps"]) / d["ops"]
    return d


def run(argv, lib, alloc):
    try:
        p = subprocess.run([str(a) for a in argv], env=bench.child_env(lib, bench.ALLOCATOR_ENV.get(alloc, {})),
                           capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return -1, "", "timed out"
    err = [l for l in p.stderr.splitlines() if l.strip()]
    return p.returncode, p.stdout, err[-1] if err else ""


def fmt(v):
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs, 2 repetitions (about a minute)")
    ap.add_argument("--reps", type=int, default=0, help="processes per case and allocator (default 5, --quick 2)")
    ap.add_argument("--allocators", default=",".join(bench.DEFAULT_ORDER),
                    help="comma-separated names, NAME=PATH for another library (default %(default)s)")
    ap.add_argument("--cases", default="", help="comma-separated case name prefixes (default: all)")
    ap.add_argument("--out", type=Path, default=B / "results")
    args = ap.parse_args()
    reps = args.reps or (2 if args.quick else 5)

    allocs, libs = [], {}
    for item in [s.strip() for s in args.allocators.split(",") if s.strip()]:
        name, _, path = item.partition("=")
        lib = Path(path) if path else bench.KNOWN_ALLOCATORS.get(name, "unknown")
        if lib == "unknown":
            ap.error(f"unknown allocator {name!r} (use NAME=PATH)")
        if lib is not None and not lib.exists():
            bench.note(f"skipping {name}: {lib} does not exist")
            continue
        allocs.append(name)
        libs[name] = lib
    base = "fitalloc"
    peers = [a for a in allocs if a != base]

    todo = cases(args.quick)
    if args.cases:
        want = args.cases.split(",")
        todo = [c for c in todo if any(c[0].startswith(w) for w in want)]
    for _, argv, _ in todo:
        if not Path(argv[0]).exists():
            ap.error(f"{argv[0]} is not built (make bench/mt bench/larson bench/prodcons bench/churn bench/thrash)")

    res = {}    # (case, alloc) -> [dict]
    fails = {}  # (case, alloc) -> message
    raw = []
    started = time.monotonic()
    total = reps * len(todo) * len(allocs)
    i = 0
    for rep in range(reps):
        for k, (name, argv, _) in enumerate(todo):
            for alloc in bench.rotate(allocs, rep + k):
                i += 1
                print(f"[{i}/{total}] {name} {alloc} ({time.monotonic() - started:.0f} s)", file=sys.stderr,
                      flush=True)
                rc, out, err = run(argv + ["--name", alloc], libs[alloc], alloc)
                raw.append(f"{name} {alloc} rep={rep} exit={rc} {out.strip()}")
                d = parse(name, out) if rc == 0 else None
                if d is None:
                    fails[name, alloc] = f"exit {rc}: {err}"
                    bench.note(f"{name} {alloc} failed (exit {rc}): {err}")
                    continue
                res.setdefault((name, alloc), []).append(d)

    def med(case, alloc, key):
        vals = [d[key] for d in res.get((case, alloc), []) if d.get(key) is not None]
        return (statistics.median(vals), min(vals), max(vals), len(vals)) if vals else None

    w_case, w_metric, w = 10, 22, 10
    head = f"{'case':<{w_case}} {'metric':<{w_metric}}" + "".join(f"{a:>{w}}" for a in allocs)
    head += "  |" + "".join(f"{'f/' + p[:7]:>{w}}" for p in peers) + f"  | {'good':>6}{'waits/kop':>11}"
    lines = [
        "Multi-threaded patterns, medians of %d interleaved runs%s." % (reps, " (--quick)" if args.quick else ""),
        "Ratios f/peer = fitalloc / peer; 'good' says which way is better for fitalloc:",
        "  higher (throughput) or lower (time, RSS, blowup, shared lines).",
        "waits/kop: fitalloc's lock acquisitions that found the lock held, per 1000 malloc+free calls",
        "  (futex sleeps per 1000 calls in brackets).  Peak RSS is the process's VmHWM.",
        "-" * len(head), head, "-" * len(head)]
    rows = []
    for name, _, metrics in todo:
        for mi, key in enumerate(metrics):
            label, unit, good = METRICS[key]
            cells, vals = "", {}
            for a in allocs:
                if (name, a) in fails and not res.get((name, a)):
                    cells += f"{'FAIL':>{w}}"
                    continue
                m = med(name, a, key)
                vals[a] = m[0] if m else None
                cells += f"{fmt(vals[a]):>{w}}"
                if m:
                    rows.append([name, key, unit, a, f"{m[0]:.4g}", f"{m[1]:.4g}", f"{m[2]:.4g}", m[3]])
            ratios = ""
            for p in peers:
                b, v = vals.get(base), vals.get(p)
                r = f"{b / v:.2f}" if b is not None and v and good != "info" else "-"
                ratios += f"{r:>{w}}"
            extra = ""
            if mi == 0:
                wk, sk = med(name, base, "waits_kop"), med(name, base, "sleeps_kop")
                if wk:
                    extra = f"{fmt(wk[0])} ({fmt(sk[0])})"
                    rows.append([name, "lock_waits_per_kop", "waits/kop", base, f"{wk[0]:.4g}", f"{wk[1]:.4g}",
                                 f"{wk[2]:.4g}", wk[3]])
                    rows.append([name, "lock_sleeps_per_kop", "sleeps/kop", base, f"{sk[0]:.4g}", f"{sk[1]:.4g}",
                                 f"{sk[2]:.4g}", sk[3]])
            metric = f"{label} ({unit})"
            lines.append(f"{name if mi == 0 else '':<{w_case}} {metric:<{w_metric}}{cells}  |{ratios}  | "
                         f"{good if good != 'info' else '':>6} {extra:>10}")
        lines.append("")
    if lines[-1] == "":
        lines.pop()
    lines.append("-" * len(head))
    for (name, a), msg in sorted(fails.items()):
        lines.append(f"failed: {name} with {a}: {msg}")
    lines.append(f"({time.monotonic() - started:.0f} s; results in {args.out})")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mt-patterns.txt").write_text(text)
    (args.out / "mt-patterns-raw.txt").write_text("\n".join(raw) + "\n")
    with open(args.out / "mt-patterns.csv", "w", newline="") as f:
        cw = csv.writer(f)
        cw.writerow(["case", "metric", "unit", "allocator", "median", "min", "max", "runs"])
        cw.writerows(rows)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
