#!/usr/bin/env python3
"""Side-by-side allocator benchmark: fitalloc against glibc, jemalloc,
mimalloc and tcmalloc, on the shared allocation traces (replay), a
multi-threaded benchmark (mt) and a small-object micro-benchmark (micro).

Every measurement is its own process with the allocator in LD_PRELOAD
(glibc: nothing preloaded).  Allocators are interleaved: each repetition
runs every allocator once, in an order rotated by one each time, so that
slow drift of a shared machine hits all of them alike.  Footprint comes
from the first replay of a fresh process (median over the processes);
time is the median over all timed replays.

Writes OUT/results.csv (one row per benchmark and allocator), OUT/raw.csv
(one row per process), OUT/tradeoff.svg and, when fitalloc is present,
OUT/heapmap-TRACE.svg.  Python standard library only.
"""

import argparse
import csv
import io
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
DEFAULT_TRACES = REPO.parent / "shared" / "traces"

# name -> library to preload (None = the C library's own malloc)
KNOWN_ALLOCATORS = {
    "fitalloc": REPO / "target" / "release" / "libfitalloc.so",
    "glibc": None,
    "jemalloc": LIBDIR / "libjemalloc.so.2",
    "mimalloc": LIBDIR / "libmimalloc.so.2",
    "tcmalloc": LIBDIR / "libtcmalloc_minimal.so.4",
    # fitalloc in its hardened mode (canaries, quarantine, guard pages);
    # not in the default set: ask for it with --allocators.
    "fitalloc-hardened": REPO / "target" / "release" / "libfitalloc.so",
}
# The Debian package that provides each peer (bench.mk's BENCH_DEB_PKGS).
DEB_PACKAGES = {"jemalloc": "libjemalloc2", "mimalloc": "libmimalloc2.0",
                "tcmalloc": "libtcmalloc-minimal4"}
# Environment an allocator runs with, beyond LD_PRELOAD.
# fitalloc-profile: the heap profiler on at its default rate (the profile
# itself is written to /dev/null at exit, outside the timed replays);
# fitalloc-profile-hook: on, but with a rate that never samples, to
# separate the cost of the hooked route from that of the samples.
ALLOCATOR_ENV = {"fitalloc-hardened": {"FITALLOC_HARDEN": "1"},
                 "fitalloc-arenas": {"FITALLOC_ARENAS": "0"},  # one arena per CPU
                 "fitalloc-profile": {"FITALLOC_PROFILE": "/dev/null"},
                 "fitalloc-profile-hook": {"FITALLOC_PROFILE": "/dev/null",
                                           "FITALLOC_PROFILE_RATE": "1000g"}}
DEFAULT_ORDER = ["fitalloc", "glibc", "jemalloc", "mimalloc", "tcmalloc"]

TOOLS = ["replay", "mt", "micro"]
CFLAGS = ["-O2", "-g", "-std=c11", "-Wall", "-Wextra"]
PROC_TIMEOUT = 900  # seconds for one process; a hung allocator must not hang us


def note(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Building the C tools when they are missing or older than their sources

def ensure_tools():
    cc = os.environ.get("CC", "cc")
    header = BENCH_DIR / "benchutil.h"
    for tool in TOOLS:
        exe, src = BENCH_DIR / tool, BENCH_DIR / f"{tool}.c"
        if not src.exists():
            continue  # installed copy (fitalloc compare): the tools come built
        deps = [src, header, BENCH_DIR / "mtutil.h", REPO / "include" / "fitalloc.h"]
        newest = max(d.stat().st_mtime for d in deps if d.exists())
        if exe.exists() and exe.stat().st_mtime >= newest:
            continue
        cmd = [cc, *CFLAGS, "-o", str(exe), str(src), "-ldl", "-lpthread"]
        note("building " + " ".join(cmd))
        subprocess.run(cmd, check=True)


# --------------------------------------------------------------------------
# Plan

class Job:
    """One process to run: a benchmark with one allocator."""

    def __init__(self, bench, alloc, kind, argv, label):
        self.bench, self.alloc, self.kind = bench, alloc, kind
        self.argv, self.label = argv, label


def trace_name(path):
    name = path.name
    for suffix in (".xz", ".rep", ".trace", ".txt"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def trace_params(path, args):
    """(processes, timed replays per process) for one trace.

    The 2M-op py-json and the 515 MiB sort dominate the run time: sort
    replays are cheap per op but each fresh process faults in half a GiB,
    so they get fewer processes; py-json gets fewer replays per process."""
    name = trace_name(path)
    procs, replays = (2, 2) if args.quick else (5, 3)
    if args.reps:
        procs = args.reps
    # The file size tells a multi-million-op trace without reading it.
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if name.startswith("sort"):
        procs, replays = max(1, min(procs, 3 if not args.quick else 1)), 1
    elif size > 2_000_000:  # the big .xz files: millions of ops
        replays = max(1, replays - 1)
    return procs, replays


def rotate(seq, k):
    if not seq:
        return seq
    k %= len(seq)
    return seq[k:] + seq[:k]


def plan_jobs(args, allocs, traces):
    jobs = []
    replay = str(BENCH_DIR / "replay")
    for path in traces:
        name = trace_name(path)
        procs, replays = trace_params(path, args)
        for rep in range(procs):
            for alloc in rotate(allocs, rep):
                argv = [replay, "--mode=both", "-n", str(replays), "--csv",
                        "--name", alloc, str(path)]
                jobs.append(Job(name, alloc, "trace", argv, "mem+time"))
    if not args.no_mt:
        steps = 300_000 if args.quick else 2_000_000
        reps = args.reps or (2 if args.quick else 5)
        for threads in (1, 2, 4):
            for rep in range(reps):
                for alloc in rotate(allocs, rep):
                    argv = [str(BENCH_DIR / "mt"), "-n", str(steps), "--csv",
                            "--name", alloc, str(threads)]
                    jobs.append(Job(f"mt-{threads}", alloc, "mt", argv,
                                    "time"))
    if not args.no_micro:
        pairs = 1_000_000 if args.quick else 5_000_000
        reps = args.reps or (2 if args.quick else 5)
        for rep in range(reps):
            for alloc in rotate(allocs, rep):
                argv = [str(BENCH_DIR / "micro"), "-n", str(pairs), "--csv",
                        "--name", alloc]
                jobs.append(Job("micro", alloc, "micro", argv, "time"))
    return jobs


# --------------------------------------------------------------------------
# Running

def child_env(lib, extra):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if lib is not None:
        env["LD_PRELOAD"] = str(lib)
    env.update(extra)
    return env


def run(argv, lib, extra=None):
    """Returns (returncode, stdout, last stderr line)."""
    try:
        p = subprocess.run(argv, env=child_env(lib, extra or {}), capture_output=True,
                           text=True, timeout=PROC_TIMEOUT)
    except subprocess.TimeoutExpired:
        return -1, "", f"timed out after {PROC_TIMEOUT} s"
    err = [l for l in p.stderr.splitlines() if l.strip()]
    return p.returncode, p.stdout, err[-1] if err else ""


def parse_csv_lines(text):
    return [row for row in csv.reader(io.StringIO(text)) if row]


class Results:
    def __init__(self):
        self.cell = {}  # (bench, alloc) -> dict
        self.raw = []   # (bench, alloc, kind, status, stdout line)
        self.benches = []  # in order of first appearance
        self.kinds = {}

    def get(self, bench, alloc, kind):
        if bench not in self.kinds:
            self.benches.append(bench)
            self.kinds[bench] = kind
        return self.cell.setdefault((bench, alloc), {
            "util": [], "growth": [], "anon": [], "ns": [], "ops": None,
            "peak_live": None, "errors": [], "check": "", "unit": "ns/op"})


REPLAY_COLS = ["trace", "allocator", "ops", "peak_live", "peak_op",
               "rss_growth", "util", "rss_method", "anon_growth",
               "hwm_growth", "ns_op", "ns_op_min", "ns_op_max", "time_reps",
               "fit_heap", "fit_mapped", "fit_peak_system", "failures",
               "anomalies", "verified"]


def record(res, job, rc, out, err):
    lines = parse_csv_lines(out)
    for line in lines:
        res.raw.append([job.bench, job.alloc, job.kind, rc] + line)
    if rc != 0 or not lines:
        names = [job.bench]
        if job.kind == "micro":  # one process measures both cases
            names = ["micro-1000", "micro-100000", "mid-1000", "batch-400",
                     "batch-1600"]
        for name in names:
            res.get(name, job.alloc, job.kind)["errors"].append(
                f"exit {rc}: {err}")
        return
    if job.kind == "trace":
        row = dict(zip(REPLAY_COLS, lines[0]))
        cell = res.get(job.bench, job.alloc, job.kind)
        cell["ops"] = int(row["ops"])
        cell["peak_live"] = int(row["peak_live"])
        if row["rss_growth"] and int(row["rss_growth"]) > 0:
            cell["util"].append(float(row["util"]))
            cell["growth"].append(int(row["rss_growth"]))
            cell["anon"].append(int(row["anon_growth"] or 0))
        # One time per process: the median of its timed replays.
        if row["ns_op"]:
            cell["ns"].append(float(row["ns_op"]))
    elif job.kind == "mt":
        cell = res.get(job.bench, job.alloc, job.kind)
        cell["ns"].append(float(lines[0][6]))
    elif job.kind == "micro":
        for line in lines:
            cell = res.get(line[0], job.alloc, "micro")
            cell["unit"] = "ns/pair"
            cell["ns"].append(float(line[4]))


# --------------------------------------------------------------------------
# Reporting

def median(xs):
    return statistics.median(xs) if xs else None


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def fmt(x, digits):
    if x is None:
        return "-"
    return f"{x:.{digits}f}"


def summarize(res, allocs):
    """Per (bench, alloc): median util and ns."""
    util, ns = {}, {}
    for (bench, alloc), cell in res.cell.items():
        if cell["errors"]:
            continue
        util[bench, alloc] = median(cell["util"])
        ns[bench, alloc] = median(cell["ns"])
    return util, ns


def print_table(res, allocs, baseline, util, ns, out=sys.stdout):
    peers = [a for a in allocs if a != baseline]
    has_base = baseline in allocs
    traces = [b for b in res.benches if res.kinds[b] == "trace"]
    benches = list(res.benches)

    def cell_text(bench, alloc, metric):
        c = res.cell.get((bench, alloc))
        if c is None:
            return "-"
        if c["errors"]:
            return "FAIL"
        v = (util if metric == "util" else ns).get((bench, alloc))
        return fmt(v, 3 if metric == "util" else 1)

    w_name, w_col = 12, 10
    head = f"{'bench':<{w_name}} {'metric':<8}" + "".join(
        f"{a:>{w_col}}" for a in allocs)
    if has_base:
        head += "  |" + "".join(f"{'vs ' + p:>{w_col + 2}}" for p in peers)
    rule = "-" * len(head)
    print(file=out)
    print("util  = peak live requested bytes / growth of peak RSS over the "
          "first replay (higher = more compact)", file=out)
    print("ns/op = median wall time per operation (lower = faster); micro: "
          "ns per free+malloc pair; batch-B: ns per block, B blocks of "
          "32 bytes malloc'd then freed", file=out)
    if has_base:
        print(f"ratios: {baseline} against each peer -- util: "
              f"{baseline}/peer (>1 = {baseline} more compact); time: "
              f"peer/{baseline} (>1 = {baseline} faster)", file=out)
    else:
        print(f"({baseline} not measured: no ratio columns)", file=out)
    print(rule, file=out)
    print(head, file=out)
    print(rule, file=out)

    def emit(label, metric, values, text=None):
        line = f"{label:<{w_name}} {metric:<8}"
        for a in allocs:
            line += f"{(text or {}).get(a, fmt(values.get(a), 3 if metric == 'util' else 1)):>{w_col}}"
        if has_base:
            line += "  |"
            for p in peers:
                b, v = values.get(baseline), values.get(p)
                if b and v:
                    r = b / v if metric == "util" else v / b
                    line += f"{r:>{w_col + 2}.2f}"
                else:
                    line += f"{'-':>{w_col + 2}}"
        print(line, file=out)

    for bench in benches:
        kind = res.kinds[bench]
        metrics = ["util", "ns/op"] if kind == "trace" else ["ns/op"]
        for metric in metrics:
            src = util if metric == "util" else ns
            values = {a: src.get((bench, a)) for a in allocs}
            text = {a: cell_text(bench, a, "util" if metric == "util" else "ns")
                    for a in allocs}
            unit = res.cell.get((bench, allocs[0]), {}).get("unit", "ns/op")
            emit(bench, metric if metric == "util" else
                 ("ns/pair" if unit == "ns/pair" else "ns/op"), values, text)
    print(rule, file=out)

    # Geometric means over the benchmarks every allocator completed, so
    # that all columns average the same set.
    def complete(bench_list, src):
        return [b for b in bench_list
                if all(src.get((b, a)) for a in allocs)]

    gm_rows = []
    t_util = complete(traces, util)
    t_ns = complete(traces, ns)
    all_ns = complete(benches, ns)
    for label, metric, blist, src in (
            ("geomean", "util", t_util, util),
            ("geomean", "ns/op", t_ns, ns),
            ("geomean*", "time", all_ns, ns)):
        values = {a: geomean([src[b, a] for b in blist]) for a in allocs}
        emit(label, metric, values)
        gm_rows.append((label, metric, blist, values))
    print(rule, file=out)
    print(f"geomean util and ns/op: over the traces ({len(t_util)} of "
          f"{len(traces)}); geomean* time: over every row with a time "
          f"({len(all_ns)} of {len(benches)})", file=out)
    return gm_rows


def write_results_csv(path, res, allocs, util, ns):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bench", "kind", "allocator", "util", "util_min",
                    "util_max", "mem_runs", "rss_growth_median",
                    "anon_growth_median", "ns", "ns_min", "ns_max",
                    "time_samples", "unit", "ops", "peak_live", "status"])
        for bench in res.benches:
            for a in allocs:
                c = res.cell.get((bench, a))
                if c is None:
                    continue
                status = "; ".join(c["errors"]) if c["errors"] else "ok"
                if c["check"]:
                    status += f"; check {c['check']}"
                w.writerow([
                    bench, res.kinds[bench], a,
                    fmt(util.get((bench, a)), 4) if c["util"] else "",
                    fmt(min(c["util"]), 4) if c["util"] else "",
                    fmt(max(c["util"]), 4) if c["util"] else "",
                    len(c["util"]),
                    int(median(c["growth"])) if c["growth"] else "",
                    int(median(c["anon"])) if c["anon"] else "",
                    fmt(ns.get((bench, a)), 2) if c["ns"] else "",
                    fmt(min(c["ns"]), 2) if c["ns"] else "",
                    fmt(max(c["ns"]), 2) if c["ns"] else "",
                    len(c["ns"]), c["unit"], c["ops"] or "",
                    c["peak_live"] or "", status])


def write_raw_csv(path, res):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bench", "allocator", "kind", "exit", "tool output..."])
        for row in res.raw:
            w.writerow(row)


def nice_step(span, target=6):
    if span <= 0:
        return 1.0
    raw = span / target
    p = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * p >= raw:
            return m * p
    return 10 * p


def write_tradeoff_svg(path, points, baseline):
    """points: [(alloc, ns, util)]; x = geomean ns/op, y = geomean util."""
    W, H = 720, 480
    left, right, top, bottom = 80, 30, 50, 60
    pw, ph = W - left - right, H - top - bottom
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]
    xstep = nice_step(max(xs) * 1.15)
    xmax = math.ceil(max(xs) * 1.15 / xstep) * xstep
    ylo = min(min(ys) - 0.05, 0.9)
    yhi = max(max(ys) + 0.05, 1.0)
    ystep = nice_step(yhi - ylo, 6)
    ylo = math.floor(ylo / ystep) * ystep
    yhi = math.ceil(yhi / ystep) * ystep

    def X(v):
        return left + v / xmax * pw

    def Y(v):
        return top + ph - (v - ylo) / (yhi - ylo) * ph

    o = []
    o.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" '
             f'height="{H}" font-family="sans-serif" font-size="12">')
    o.append('<rect width="100%" height="100%" fill="white"/>')
    o.append(f'<text x="{left}" y="22" font-size="15" font-weight="bold">'
             'Footprint against speed (geometric means over the traces)'
             '</text>')
    o.append(f'<text x="{left}" y="38" fill="#555">up and to the left is '
             'better: more compact and faster</text>')
    o.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" '
             'fill="none" stroke="#888"/>')
    v = 0.0
    while v <= xmax + 1e-9:
        x = X(v)
        o.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" '
                 f'y2="{top + ph}" stroke="#eee"/>')
        o.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" '
                 f'y2="{top + ph + 5}" stroke="#444"/>')
        o.append(f'<text x="{x:.1f}" y="{top + ph + 18}" '
                 f'text-anchor="middle">{v:g}</text>')
        v += xstep
    v = ylo
    while v <= yhi + 1e-9:
        y = Y(v)
        o.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" '
                 f'y2="{y:.1f}" stroke="#eee"/>')
        o.append(f'<line x1="{left - 5}" x2="{left}" y1="{y:.1f}" '
                 f'y2="{y:.1f}" stroke="#444"/>')
        o.append(f'<text x="{left - 8}" y="{y + 4:.1f}" '
                 f'text-anchor="end">{v:.2f}</text>')
        v += ystep
    o.append(f'<text x="{left + pw / 2}" y="{H - 18}" text-anchor="middle">'
             'ns/op (geometric mean over the traces, lower is better)</text>')
    o.append(f'<text transform="translate(20 {top + ph / 2}) rotate(-90)" '
             'text-anchor="middle">util = peak live / peak RSS growth '
             '(higher is better)</text>')
    # Labels: first of four places around the point that overlaps no
    # label already placed (points can sit close together).
    placed = []
    for alloc, x_val, y_val in sorted(points, key=lambda p: -p[2]):
        colour = "#c0392b" if alloc == baseline else "#2c5d9e"
        x, y = X(x_val), Y(y_val)
        text = f"{alloc} ({x_val:.1f} ns, {y_val:.3f})"
        w, h = 6.6 * len(text), 14
        choice = None
        for dx, dy, anchor in ((9, -8, "start"), (9, 18, "start"),
                               (-9, -8, "end"), (-9, 18, "end")):
            x0 = x + dx if anchor == "start" else x + dx - w
            box = (x0, y + dy - h + 3, x0 + w, y + dy + 3)
            if x0 < 2 or box[2] > W - 2:
                continue
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or
                   box[1] > b[3] for b in placed):
                choice = (dx, dy, anchor, box)
                break
        if choice is None:
            choice = (9, -8, "start", (x + 9, y - 19, x + 9 + w, y - 5))
        dx, dy, anchor, box = choice
        placed.append(box)
        o.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{colour}"/>')
        o.append(f'<text x="{x + dx:.1f}" y="{y + dy:.1f}" fill="{colour}" '
                 f'text-anchor="{anchor}">{text}</text>')
    o.append('</svg>')
    Path(path).write_text("\n".join(o) + "\n")


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(
        description="Compare fitalloc with glibc, jemalloc, mimalloc and "
        "tcmalloc on traces, mt and micro.")
    ap.add_argument("--quick", action="store_true",
                    help="fewer repetitions and smaller mt/micro runs "
                    "(about a minute)")
    ap.add_argument("--traces", type=Path, default=DEFAULT_TRACES,
                    help=f"directory of traces (default {DEFAULT_TRACES})")
    ap.add_argument("--allocators", default=",".join(DEFAULT_ORDER),
                    help="comma-separated names; NAME=PATH adds a library "
                    "(default %(default)s)")
    ap.add_argument("--baseline", default="fitalloc",
                    help="allocator the ratio columns compare (default "
                    "fitalloc)")
    ap.add_argument("--reps", type=int, default=0,
                    help="processes per benchmark and allocator (default 5, "
                    "--quick 2; sort at most 3)")
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "results",
                    help="output directory (default bench/results)")
    ap.add_argument("--no-mt", action="store_true", help="skip mt")
    ap.add_argument("--no-micro", action="store_true", help="skip micro")
    ap.add_argument("--no-check", action="store_true",
                    help="skip the full-pattern check runs of the baseline")
    ap.add_argument("--which", action="store_true",
                    help="list the known allocators, their libraries, whether "
                    "they are installed and their Debian packages, then exit")
    args = ap.parse_args()
    if args.which:
        for name in DEFAULT_ORDER:
            lib = KNOWN_ALLOCATORS[name]
            present = lib is None or lib.exists()
            print(f"{name}\t{lib or '-'}\t{'yes' if present else 'no'}\t"
                  f"{DEB_PACKAGES.get(name, '-')}")
        return 0
    if args.reps < 0:
        ap.error("--reps must be positive")

    # Which allocators exist here.
    allocs, libs = [], {}
    for item in [s.strip() for s in args.allocators.split(",") if s.strip()]:
        name, _, path = item.partition("=")
        if path:
            lib = Path(path)
        elif name in KNOWN_ALLOCATORS:
            lib = KNOWN_ALLOCATORS[name]
        else:
            ap.error(f"unknown allocator {name!r} (use NAME=PATH)")
        if lib is not None and not lib.exists():
            pkg = DEB_PACKAGES.get(name)
            hint = f" (Debian package {pkg})" if pkg else ""
            note(f"skipping {name}: {lib} does not exist{hint}")
            continue
        allocs.append(name)
        libs[name] = lib
    if not allocs:
        ap.error("no allocator to measure")

    traces = []
    if args.traces.is_dir():
        traces = sorted(p for p in args.traces.iterdir()
                        if p.is_file() and (p.name.endswith(".rep") or
                                            p.name.endswith(".rep.xz") or
                                            p.name.endswith(".trace")))
    if not traces:
        note(f"no traces (*.rep, *.rep.xz) in {args.traces}")

    ensure_tools()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(args, allocs, traces)
    baseline_present = args.baseline in allocs
    extra = []
    if baseline_present:
        replay = str(BENCH_DIR / "replay")
        for path in traces:
            name = trace_name(path)
            if not args.no_check:
                extra.append(Job(name, args.baseline, "check",
                                 [replay, "--mode=mem", "--check", "--csv",
                                  "--name", args.baseline, str(path)],
                                 "check"))
            if args.baseline != "fitalloc":
                continue  # only fitalloc has fitalloc_heap_walk
            extra.append(Job(name, args.baseline, "heapmap",
                             [replay, "--mode=mem", "--csv", "--name",
                              args.baseline, "--heap-map",
                              str(args.out / f"heapmap-{name}.svg"),
                              str(path)], "heap map"))
    total = len(jobs) + len(extra)
    res = Results()
    started = time.monotonic()
    for i, job in enumerate(jobs + extra, 1):
        elapsed = time.monotonic() - started
        print(f"[{i}/{total}] {job.bench} {job.alloc} {job.label}… "
              f"({elapsed:.0f} s)", file=sys.stderr, flush=True)
        rc, out, err = run(job.argv, libs[job.alloc], ALLOCATOR_ENV.get(job.alloc))
        if job.kind in ("check", "heapmap"):
            cell = res.get(job.bench, job.alloc, "trace")
            if job.kind == "check":
                # Exit 3 = the allocator returned bad memory; anything
                # else is a crash or an unreadable trace.
                cell["check"] = ("ok" if rc == 0 else
                                 f"FAILED ({err})" if rc == 3 else
                                 f"run failed, exit {rc} ({err})")
            if rc != 0:
                note(f"{job.bench} {job.alloc} {job.label} failed: {err}")
            continue
        if rc != 0:
            note(f"{job.bench} {job.alloc} failed (exit {rc}): {err}")
        record(res, job, rc, out, err)

    util, ns = summarize(res, allocs)
    buf = io.StringIO()
    gm = print_table(res, allocs, args.baseline, util, ns, out=buf)
    failed_checks = [(b, a) for (b, a), c in res.cell.items()
                     if c["check"] and c["check"] != "ok"]
    for b, a in failed_checks:
        print(f"check of {b} with {a}: {res.cell[b, a]['check']}", file=buf)
    print(f"({time.monotonic() - started:.0f} s; results in {args.out})",
          file=buf)
    sys.stdout.write(buf.getvalue())
    (args.out / "table.txt").write_text(buf.getvalue())
    write_results_csv(args.out / "results.csv", res, allocs, util, ns)
    write_raw_csv(args.out / "raw.csv", res)
    # Trade-off plot from the geomean rows.
    g_util = next((v for l, m, b, v in gm if m == "util"), {})
    g_ns = next((v for l, m, b, v in gm if m == "ns/op"), {})
    points = [(a, g_ns[a], g_util[a]) for a in allocs
              if g_ns.get(a) and g_util.get(a)]
    if points:
        write_tradeoff_svg(args.out / "tradeoff.svg", points, args.baseline)
    return 1 if failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
