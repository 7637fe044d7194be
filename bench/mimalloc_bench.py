#!/usr/bin/env python3
"""mimalloc-bench's C and C++ programs under fitalloc and its peers, in the
same run: cfrac, espresso, barnes, larson, alloc-test, cache-scratch,
cache-thrash, xmalloc-test, malloc-large, mstress, mleak, rptest,
glibc-simple and glibc-thread, with the arguments mimalloc-bench's bench.sh
gives them (procs = --threads).

    python3 bench/mimalloc_bench.py [--reps 3] [--threads P] [--only a,b]
        [--allocators fitalloc,glibc,...|NAME=PATH] [--out DIR]
        [--work DIR] [--src DIR]

Sources: mimalloc-bench at the commit PINNED below, cloned into
WORK/src (WORK defaults to bench/mimalloc-bench-work, git-ignored); without
network, --src names an existing checkout, or a git directory holding that
commit (its bench/ is extracted into WORK/src).  Each program is built with
gcc/g++ -O3 -DNDEBUG (CMake's Release, as mimalloc-bench builds them) into
WORK/bin-COMMIT; one that fails to build is skipped with a message, and
named under the table.

Every run is its own process, `/usr/bin/time env LD_PRELOAD=LIB PROG ARGS`
as bench.sh does it (glibc: nothing preloaded), in the order of bench.py:
each round runs every program with every allocator, in an order rotated by
one each time; the table shows medians of the rounds.  Per program: its
time (wall seconds; for larson, xmalloc-test, rptest and glibc-thread the
"relative time" bench.sh derives from the program's own throughput), CPU
seconds (user + sys) and peak RSS (time's %M); for the fixed-duration
programs also the time scaled by the share of P CPUs the run got.  A
non-zero exit, a missing metric, or an output that differs from glibc's
(deterministic programs only, timing lines removed) makes the cell FAILED.

Writes OUT/mimalloc-bench.txt (the table), OUT/mimalloc-bench.csv (one row
per program, metric and allocator) and OUT/mimalloc-bench-raw.csv (one row
per process).  Python standard library only.
"""

import argparse
import csv
import io
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (KNOWN_ALLOCATORS, DEFAULT_ORDER, ALLOCATOR_ENV, child_env, rotate)

B = bench.BENCH_DIR
URL = "https://github.com/daanx/mimalloc-bench.git"
# daanx/mimalloc-bench master of 2026-07-15 ("Upgrade to rpmalloc 2.0.1").
PINNED = "ce5784f1cef3d48ddc931479e4899ffad5ab3943"
PROC_TIMEOUT = 600  # seconds for one process (malloc-large under jemalloc: ~20)
TIME = "/usr/bin/time"

# --------------------------------------------------------------------------
# Building: mimalloc-bench's bench/CMakeLists.txt, target by target.

CFLAGS = ["-O3", "-DNDEBUG", "-w"]
OLD_C = ["-std=gnu89"]  # CMakeLists: cfrac, espresso and barnes are K&R C
CFRAC = ("cfrac.c pops.c pconst.c pio.c pabs.c pneg.c pcmp.c podd.c phalf.c padd.c psub.c pmul.c "
         "pdivmod.c psqrt.c ppowmod.c atop.c ptoa.c itop.c utop.c ptou.c errorp.c pfloat.c pidiv.c "
         "pimod.c picmp.c primes.c pcfrac.c pgcd.c").split()
ESPRESSO = ("cofactor.c cols.c compl.c contain.c cubestr.c cvrin.c cvrm.c cvrmisc.c cvrout.c dominate.c "
            "equiv.c espresso.c essen.c exact.c expand.c gasp.c getopt.c gimpel.c globals.c hack.c "
            "indep.c irred.c main.c map.c matrix.c mincov.c opo.c pair.c part.c primes.c reduce.c "
            "rows.c set.c setc.c sharp.c sminterf.c solution.c sparse.c unate.c utility.c verify.c").split()
BARNES = "code.c code_io.c load.c grav.c getparam.c util.c".split()

# program -> (compiler, extra flags, sources under bench/, libraries)
BUILDS = {
    "cfrac": ("cc", OLD_C + ["-DNOMEMOPT=1"], [f"cfrac/{s}" for s in CFRAC], ["-lm"]),
    "espresso": ("cc", OLD_C, [f"espresso/{s}" for s in ESPRESSO], ["-lm"]),
    "barnes": ("cc", OLD_C, [f"barnes/{s}" for s in BARNES], ["-lm"]),
    "larson": ("c++", ["-std=c++17", "-DCPP=1"], ["larson/larson.cpp"], ["-lpthread"]),
    "alloc-test": ("c++", ["-std=c++17", "-DBENCH=4"],
                   ["alloc-test/test_common.cpp", "alloc-test/allocator_tester.cpp"], ["-lpthread"]),
    "cache-scratch": ("c++", ["-std=c++17"], ["cache-scratch/cache-scratch.cpp"], ["-lpthread"]),
    "cache-thrash": ("c++", ["-std=c++17"], ["cache-thrash/cache-thrash.cpp"], ["-lpthread"]),
    "xmalloc-test": ("cc", [], ["xmalloc-test/xmalloc-test.c"], ["-lpthread"]),
    "malloc-large": ("c++", ["-std=c++17"], ["malloc-large/malloc-large.cpp"], ["-lpthread"]),
    "mstress": ("cc", [], ["mstress/mstress.c"], ["-lpthread"]),
    "mleak": ("cc", [], ["mleak/mleak.c"], ["-lpthread"]),
    "rptest": ("cc", ["-Ibench/rptest"], ["rptest/rptest.c", "rptest/thread.c", "rptest/timer.c"],
               ["-lpthread", "-lm"]),
    "glibc-simple": ("cc", [], ["glibc-bench/bench-malloc-simple.c"], ["-lpthread"]),
    "glibc-thread": ("cc", [], ["glibc-bench/bench-malloc-thread.c"], ["-lpthread"]),
}

# --------------------------------------------------------------------------
# The cases: bench.sh's run_test_cmd lines.


def rel_time(pattern, convert=float):
    """bench.sh's "relative time" from a program's output, or None."""
    def get(out):
        m = re.search(pattern, out, re.M)
        return convert(m.group(1)) if m else None
    return get


LARSON_TIME = rel_time(r"relative time: ([0-9.]+)")
XMALLOC_TIME = rel_time(r"^rtime: ([0-9.]+)")
RPTEST_TIME = rel_time(r"\.\.\.([0-9]+) memory ops", lambda ops: 2_000_000 / float(ops))
GTHREAD_TIME = rel_time(r"^([0-9.]+)", lambda it: 1e9 / float(it))

# Output normalisers for the deterministic programs: what is left must be
# the same under every allocator.  None: the output is not compared.
EXACT = "exact"


def drop_lines(pattern, sort=False):
    def norm(out):
        lines = [ln for ln in out.splitlines() if not re.search(pattern, ln)]
        return "\n".join(sorted(lines) if sort else lines)
    return norm


class Case:
    def __init__(self, name, prog, args, metric=None, fixed=False, check=EXACT, stdin=None):
        self.name, self.prog, self.args = name, prog, args
        self.metric = metric  # None: wall time
        self.fixed = fixed    # runs for a fixed time; the metric is throughput-derived
        self.check, self.stdin = check, stdin


def cases(p, src):
    """bench.sh's cases at procs = p."""
    sb = src / "bench"
    c = [
        Case("cfrac", "cfrac", ["17545186520507317056371138836327483792789528"]),
        Case("espresso", "espresso", [str(sb / "espresso" / "largest.espresso")]),
        Case("barnes", "barnes", [], check=drop_lines(r"TIME|START|END"), stdin=sb / "barnes" / "input"),
        Case("larsonN", "larson", ["5", "8", "1000", "5000", "100", "4141", str(p)], LARSON_TIME, True, None),
        Case("alloc-test1", "alloc-test", ["1"], check=drop_lines(r" ms ", sort=True)),
        Case("alloc-testN", "alloc-test", [str(min(p, 16))], check=drop_lines(r" ms ", sort=True)),
        Case("xmalloc-testN", "xmalloc-test", ["-w", str(p), "-t", "5", "-s", "64"], XMALLOC_TIME, True, None),
        Case("cache-thrash1", "cache-thrash", ["1", "1000", "1", "2000000", str(p)]),
        Case("cache-thrashN", "cache-thrash", [str(p), "1000", "1", "2000000", str(p)]),
        Case("cache-scratch1", "cache-scratch", ["1", "1000", "1", "2000000", str(p)]),
        Case("cache-scratchN", "cache-scratch", [str(p), "1000", "1", "2000000", str(p)]),
        Case("malloc-large", "malloc-large", []),
        Case("mstressN", "mstress", [str(p), "50", "25"]),
        Case("mleak10", "mleak", ["5"]),
        Case("mleak100", "mleak", ["50"]),
        Case("rptestN", "rptest", [str(p), "0", "1", "2", "500", "1000", "100", "8", "16000"], RPTEST_TIME,
             False, None),
        Case("glibc-simple", "glibc-simple", []),
        Case("glibc-thread", "glibc-thread", [str(p)], GTHREAD_TIME, True, None),
    ]
    if p == 1:  # bench.sh's only cases that depend on procs != 1
        c = [x for x in c if x.name not in ("alloc-testN", "cache-thrashN", "cache-scratchN")]
    return c


# --------------------------------------------------------------------------
# Sources and binaries

def git(*args, **kw):
    return subprocess.run(["git", *args], capture_output=True, text=True, **kw)


def get_sources(args):
    """The mimalloc-bench tree to build from (a directory holding bench/)."""
    if args.src:
        src = args.src.resolve()
        if (src / "bench" / "CMakeLists.txt").exists():
            head = git("-C", str(src), "rev-parse", "HEAD").stdout.strip()
            if head and head != PINNED:
                bench.note(f"warning: {src} is at {head[:12]}, not the pinned {PINNED[:12]}")
            return src, head or "(commit unknown: not a git checkout)"
        # A (bare) git directory: extract bench/ at the pinned commit.
        out = args.work / f"src-{PINNED[:12]}"
        if not (out / "bench" / "CMakeLists.txt").exists():
            p = subprocess.run(["git", f"--git-dir={src}", "archive", PINNED, "bench"], capture_output=True)
            if p.returncode != 0:
                sys.exit(f"mimalloc-bench: {src} is neither a checkout nor a git directory with {PINNED[:12]}: "
                         f"{p.stderr.decode(errors='replace').strip()}")
            out.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=io.BytesIO(p.stdout)) as t:
                t.extractall(out)
        return out, PINNED
    out = args.work / "src"
    if (out / ".git").exists() and git("-C", str(out), "rev-parse", "HEAD").stdout.strip() == PINNED:
        return out, PINNED
    bench.note(f"cloning {URL} at {PINNED[:12]} into {out}")
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    p = git("clone", "-q", "--no-checkout", URL, str(out))
    if p.returncode == 0:
        p = git("-C", str(out), "checkout", "-q", PINNED)
    if p.returncode != 0:
        sys.exit(f"mimalloc-bench: could not get {URL} at {PINNED}: {p.stderr.strip()}\n"
                 "  without network, pass --src DIR: a mimalloc-bench checkout, or a git directory "
                 "holding that commit")
    return out, PINNED


def build(progs, src, work):
    """Builds what is missing; returns {program: binary} for those that built."""
    bindir = work / f"bin-{PINNED[:12]}"
    bindir.mkdir(parents=True, exist_ok=True)
    built = {}
    for prog in progs:
        cc, flags, sources, libs = BUILDS[prog]
        cc = os.environ.get("CXX" if cc == "c++" else "CC", cc)
        exe = bindir / prog
        cmd = [cc, *CFLAGS, "-pthread", *[f.replace("-Ibench/", f"-I{src}/bench/") for f in flags],
               "-o", str(exe), *[str(src / "bench" / s) for s in sources], *libs]
        stamp = bindir / f"{prog}.cmd"
        if exe.exists() and stamp.exists() and stamp.read_text() == " ".join(cmd):
            built[prog] = exe
            continue
        bench.note(f"building {prog}")
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            err = ([ln for ln in p.stderr.splitlines() if "error" in ln] or p.stderr.splitlines()
                   or [f"{cc} exited with status {p.returncode}"])
            bench.note(f"{prog}: build failed, skipped: {err[0].strip()[:200]}")
            continue
        stamp.write_text(" ".join(cmd))
        built[prog] = exe
    return built


# --------------------------------------------------------------------------
# Running

def run_one(case, exe, lib, alloc, rundir):
    """One process.  Returns a dict: status ('ok' or why not), wall, cpu,
    rss_kb, metric, out (stdout)."""
    argv = [str(exe), *case.args]
    if lib is not None:
        argv = ["/usr/bin/env", f"LD_PRELOAD={lib}", *argv]
    tf = rundir / "time.txt"
    if tf.exists():
        tf.unlink()
    use_time = os.access(TIME, os.X_OK)
    if use_time:
        argv = [TIME, "-o", str(tf), "-f", "%e %M %U %S", *argv]
    stdin = open(case.stdin) if case.stdin else subprocess.DEVNULL
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=rundir, env=bench.child_env(None, bench.ALLOCATOR_ENV.get(alloc, {})),
                             start_new_session=True)
        try:
            out, err = p.communicate(timeout=PROC_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return {"status": f"timed out after {PROC_TIMEOUT} s", "out": ""}
        wall = time.perf_counter() - t0
    finally:
        if case.stdin:
            stdin.close()
    rc = p.returncode
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Without GNU time: CPU from our children's totals; no peak RSS (the
    # child's ru_maxrss would include this driver's, kept across exec).
    res = {"status": "ok", "out": out, "wall": wall, "rss_kb": None,
           "cpu": ru.ru_utime + ru.ru_stime - (ru0.ru_utime + ru0.ru_stime)}
    if use_time and tf.exists():
        # GNU time prints "Command exited with non-zero status N" first.
        last = tf.read_text().strip().splitlines()[-1].split()
        res["wall"], res["rss_kb"] = float(last[0]), int(last[1])
        res["cpu"] = float(last[2]) + float(last[3])
    errs = [ln for ln in err.splitlines() if ln.strip()]
    if rc != 0:
        res["status"] = f"exit {rc}" + (f": {errs[-1][:120]}" if errs else "")
        return res
    res["metric"] = case.metric(out) if case.metric else res["wall"]
    if res["metric"] is None:
        res["status"] = "no throughput in the output"
    elif case.fixed and res["cpu"]:
        # The share of P CPUs the run got: on a shared machine a fixed-duration
        # run that got less does proportionally fewer operations.
        res["adj"] = res["metric"] * res["cpu"] / (PROCS * res["wall"])
    return res


def normalise(case, out):
    return out.strip() if case.check == EXACT else case.check(out)


# --------------------------------------------------------------------------
# Reporting

METRICS = [("time", "time (s)"), ("cpu", "CPU (s)"), ("rss", "peak RSS (MiB)"), ("adj", "time x CPU share")]


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


PROCS = 2


def main():
    global PROCS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="interleaved rounds (default %(default)s)")
    ap.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 4),
                    help="bench.sh's procs (default: the CPU count, at most 4: %(default)s)")
    ap.add_argument("--allocators", default=",".join(bench.DEFAULT_ORDER),
                    help="comma-separated names, NAME=PATH for another library (default %(default)s)")
    ap.add_argument("--only", default="", help="comma-separated cases or programs (larsonN or larson)")
    ap.add_argument("--out", type=Path, default=B / "results")
    ap.add_argument("--work", type=Path, default=B / "mimalloc-bench-work",
                    help="sources, binaries and scratch (default %(default)s)")
    ap.add_argument("--src", type=Path, help="a mimalloc-bench checkout, or a git directory with the pinned "
                    "commit, instead of cloning")
    args = ap.parse_args()
    PROCS = args.threads
    args.work = args.work.resolve()

    allocs, libs = [], {}
    for item in [s.strip() for s in args.allocators.split(",") if s.strip()]:
        name, _, path = item.partition("=")
        lib = Path(path).resolve() if path else bench.KNOWN_ALLOCATORS.get(name, "unknown")
        if lib == "unknown":
            ap.error(f"unknown allocator {name!r} (use NAME=PATH)")
        if lib is not None and not lib.exists():
            hint = f" (Debian package {bench.DEB_PACKAGES[name]})" if name in bench.DEB_PACKAGES else ""
            bench.note(f"skipping {name}: {lib} does not exist{hint}")
            continue
        allocs.append(name)
        libs[name] = lib
    if not allocs:
        ap.error("no allocator to run")
    base = "fitalloc" if "fitalloc" in allocs else allocs[0]
    peers = [a for a in allocs if a != base]
    ref = "glibc" if "glibc" in allocs else allocs[0]

    src, commit = get_sources(args)
    todo = cases(args.threads, src)
    if args.only:
        want = set(args.only.split(","))
        todo = [c for c in todo if c.name in want or c.prog in want]
        if not todo:
            ap.error(f"--only {args.only}: no such case")
    built = build(sorted({c.prog for c in todo}), src, args.work)
    not_built = sorted({c.prog for c in todo} - set(built))
    todo = [c for c in todo if c.prog in built]
    rundir = args.work / "run"
    rundir.mkdir(parents=True, exist_ok=True)

    res = {}     # (case, alloc) -> [result dict]
    outs = {}    # (case, alloc) -> [normalised output]
    raw = []
    started = time.monotonic()
    total = args.reps * len(todo) * len(allocs)
    i = 0
    for rep in range(args.reps):
        for k, case in enumerate(todo):
            for alloc in bench.rotate(allocs, rep + k):
                i += 1
                print(f"[{i}/{total}] {case.name} {alloc} ({time.monotonic() - started:.0f} s)", file=sys.stderr,
                      flush=True)
                r = run_one(case, built[case.prog], libs[alloc], alloc, rundir)
                if r["status"] != "ok":
                    bench.note(f"{case.name} {alloc} failed: {r['status']}")
                res.setdefault((case.name, alloc), []).append(r)
                if case.check is not None and r["status"] == "ok":
                    outs.setdefault((case.name, alloc), []).append(normalise(case, r["out"]))
                raw.append([case.name, alloc, rep, r["status"], r.get("wall"), r.get("cpu"), r.get("rss_kb"),
                            r.get("metric")])

    # Verify: every deterministic output equals the reference's (glibc's).
    fails = {}  # (case, alloc) -> reason
    for case in todo:
        for alloc in allocs:
            bad = [r["status"] for r in res.get((case.name, alloc), []) if r["status"] != "ok"]
            if bad:
                fails[case.name, alloc] = f"{len(bad)} of {args.reps} runs: {bad[0]}"
        if case.check is None:
            continue
        want = outs.get((case.name, ref), [None])[0]
        for alloc in allocs:
            got = outs.get((case.name, alloc), [])
            if want is not None and any(o != want for o in got) and (case.name, alloc) not in fails:
                fails[case.name, alloc] = f"output differs from {ref}'s"

    def med(case, alloc, key):
        rs = [r for r in res.get((case, alloc), []) if r["status"] == "ok"]
        vals = [r["metric"] if key == "time" else r["rss_kb"] / 1024 if key == "rss" and r.get("rss_kb") else
                r.get(key) for r in rs]
        vals = [v for v in vals if v is not None]
        return (statistics.median(vals), min(vals), max(vals), len(vals)) if vals else None

    w_case, w_metric, w = 15, 17, 10
    head = f"{'program':<{w_case}} {'metric':<{w_metric}}" + "".join(f"{a:>{w}}" for a in allocs)
    head += "  |" + "".join(f"{'f/' + p[:7]:>{w}}" for p in peers)
    load = os.getloadavg()
    lines = [
        f"mimalloc-bench (daanx/mimalloc-bench {commit[:12] if commit == PINNED else commit}), procs={args.threads}, "
        f"medians of {args.reps} interleaved rounds; load average {load[0]:.1f} at the end.",
        "time: wall seconds; * = bench.sh's relative time from the program's own throughput (fixed-duration",
        "  runs: larson, xmalloc-test, glibc-thread; rptest counts ops per CPU second).  CPU: user+sys seconds.",
        "  peak RSS: /usr/bin/time's %M.  time x CPU share: the * time times CPU / (procs x wall), for the",
        "  fixed-duration runs, which do fewer operations when the machine gives them fewer CPUs.",
        f"Ratios f/peer = {base} / peer: below 1 is better for {base} (every metric here is lower-better).",
        f"FAILED: a non-zero exit, no throughput line, or an output different from {ref}'s (listed below).",
        "-" * len(head), head, "-" * len(head)]
    rows = []
    ratios_by_metric = {m: {p: [] for p in peers} for m, _ in METRICS}
    for case in todo:
        shown = [m for m in METRICS if m[0] != "adj" or case.fixed]
        complete = all((case.name, a) not in fails for a in allocs)
        for mi, (key, label) in enumerate(shown):
            cells, vals = "", {}
            for a in allocs:
                m = med(case.name, a, key)
                if (case.name, a) in fails:
                    cells += f"{'FAILED':>{w}}"
                    continue
                vals[a] = m[0] if m else None
                cells += f"{fmt(vals[a]):>{w}}"
                if m:
                    rows.append([case.name, key, label, a, f"{m[0]:.4g}", f"{m[1]:.4g}", f"{m[2]:.4g}", m[3]])
            rat = ""
            for p in peers:
                b, v = vals.get(base), vals.get(p)
                if b is not None and v:
                    rat += f"{b / v:>{w}.2f}"
                    if complete:
                        ratios_by_metric[key][p].append(b / v)
                else:
                    rat += f"{'-':>{w}}"
            name = case.name + ("*" if case.metric else "")
            lines.append(f"{name if mi == 0 else '':<{w_case}} {label:<{w_metric}}{cells}  |{rat}")
    for (case, a) in [(c.name, a) for c in todo for a in allocs]:
        if (case, a) in fails:
            rows.append([case, "status", "FAILED", a, "", "", "", fails[case, a]])
    lines.append("-" * len(head))
    for key, label in METRICS:
        if key == "adj" or not peers:
            continue
        rat = ""
        for p in peers:
            xs = ratios_by_metric[key][p]
            rat += f"{math.exp(sum(map(math.log, xs)) / len(xs)):>{w}.2f}" if xs else f"{'-':>{w}}"
        lines.append(f"{'geomean':<{w_case}} {label:<{w_metric}}{'':>{w * len(allocs)}}  |{rat}")
    lines.append("-" * len(head))
    lines.append("geomean: over the programs every allocator completed.")
    for (case, a), msg in sorted(fails.items()):
        lines.append(f"FAILED: {case} with {a}: {msg}")
    for prog in not_built:
        lines.append(f"not built (skipped): {prog}")
    lines.append(f"({time.monotonic() - started:.0f} s; results in {args.out})")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mimalloc-bench.txt").write_text(text)
    with open(args.out / "mimalloc-bench.csv", "w", newline="") as f:
        cw = csv.writer(f)
        cw.writerow(["program", "metric", "unit", "allocator", "median", "min", "max", "runs"])
        cw.writerows(rows)
    with open(args.out / "mimalloc-bench-raw.csv", "w", newline="") as f:
        cw = csv.writer(f)
        cw.writerow(["program", "allocator", "round", "status", "wall_s", "cpu_s", "peak_rss_kb", "time"])
        cw.writerows(raw)
    return 1 if fails or not_built else 0


if __name__ == "__main__":
    sys.exit(main())
