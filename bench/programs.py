#!/usr/bin/env python3
"""Real programs under fitalloc and its peers, in the same run: wall time
and peak RSS of each program preloaded with each allocator, interleaved
(one run of every allocator, then the next round), medians of the rounds,
and ratios against fitalloc.

    python3 bench/programs.py [--runs 5] [--allocators a,b,...] [--out DIR]

The workloads are allocation-heavy uses of programs found on the machine
(python3 with and without PYTHONMALLOC=malloc, perl, gcc, sqlite3, xz,
node); one that is missing is skipped with a note. Writes programs.txt and
programs.csv to the output directory (bench/results by default).
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from bench import KNOWN_ALLOCATORS, DEFAULT_ORDER, ALLOCATOR_ENV  # noqa: E402

PY_SCRIPT = r"""
import json, random
random.seed(7)
total = 0
for rnd in range(3):
    objs = {}
    for i in range(40000):
        objs["k%d_%d" % (rnd, i)] = [i, str(i) * (i % 9), {"v": i * 0.5, "t": (i, i + 1)}]
    for i in range(0, 40000, 2):
        del objs["k%d_%d" % (rnd, i)]
    text = json.dumps(objs)
    back = json.loads(text)
    total += len(back) + len(text)
    words = [("%x" % random.getrandbits(40)) * random.randint(1, 4) for _ in range(30000)]
    words.sort()
    total += len("".join(words[::100]))
print(total)
"""

PERL_SCRIPT = r"""
my %h; my @a;
for my $r (0..2) {
  for my $i (0..150000) { $h{"k$r-$i"} = "v" x ($i % 40) . $i; }
  for my $i (0..150000) { delete $h{"k$r-$i"} if $i % 3; }
  push @a, join(",", map { $_ * 2 } (0..20000)) for 0..20;
  @a = sort @a;
}
print scalar(keys %h), "\n";
"""

SQL_SCRIPT = """
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000)
INSERT INTO t SELECT x, printf('name-%d-%s', x, hex(randomblob(8))), x * 0.5 FROM c;
CREATE INDEX t_name ON t(name);
SELECT count(*), sum(length(name)) FROM t WHERE name LIKE 'name-1%';
SELECT name FROM t ORDER BY v DESC LIMIT 3;
"""

NODE_SCRIPT = r"""
let m = new Map(); let s = 0;
for (let r = 0; r < 3; r++) {
  for (let i = 0; i < 200000; i++) m.set('k' + r + '_' + i, {i, t: 'x'.repeat(i % 30)});
  for (let i = 0; i < 200000; i += 2) m.delete('k' + r + '_' + i);
  s += JSON.stringify([...m.values()].slice(0, 50000)).length;
}
console.log(s);
"""


def big_c(path):
    """About 5,000 lines of C for gcc -O2 (as scripts/timing.sh makes)."""
    lines = ["#include <stddef.h>", "struct rec { int a, b; double c; char name[16]; };"]
    for f in range(100):
        lines.append(f"int fn{f}(struct rec *r, size_t n, int k)\n{{\n    int acc = 0;\n    double d = 0.0;")
        lines.append("    for (size_t i = 0; i < n; i++) {\n        switch ((r[i].a + k) % 6) {")
        for c in range(6):
            lines.append(f"        case {c}:\n            acc += r[i].b * {c + f % 7} + (int)(r[i].c * {c}.5);")
            lines.append(f"            d += r[i].c / (1.0 + {c + 1}.0 * i);\n            break;")
        lines.append("        default:\n            acc ^= (int)i;\n        }\n    }")
        for j in range(10):
            lines.append(f"    acc = acc * {j + 3} + (int)d + k * {f};")
        lines.append(f"    return acc + fn{f - 1}(r, n / 2, k + 1);\n}}" if f else "    return acc;\n}")
    lines.append("int main(void) { struct rec r[4] = {{0}}; return fn99(r, 4, 1) & 1; }")
    Path(path).write_text("\n".join(lines) + "\n")


def workloads(tmp):
    """(name, argv, extra env) for each program found."""
    w = []
    py = shutil.which("python3")
    if py:
        (tmp / "heavy.py").write_text(PY_SCRIPT)
        w.append(("python3 (PYTHONMALLOC=malloc)", [py, str(tmp / "heavy.py")], {"PYTHONMALLOC": "malloc"}))
        w.append(("python3 (pymalloc)", [py, str(tmp / "heavy.py")], {}))
    if shutil.which("perl"):
        (tmp / "heavy.pl").write_text(PERL_SCRIPT)
        w.append(("perl hashes and sorts", ["perl", str(tmp / "heavy.pl")], {}))
    if shutil.which("gcc"):
        big_c(tmp / "big.c")
        w.append(("gcc -O2, 5,000 lines", ["gcc", "-O2", "-c", str(tmp / "big.c"), "-o", str(tmp / "big.o")], {}))
    if shutil.which("sqlite3"):
        (tmp / "q.sql").write_text(SQL_SCRIPT)
        w.append(("sqlite3 200,000 rows", ["sh", "-c", f"sqlite3 :memory: < {tmp / 'q.sql'}"], {}))
    if shutil.which("xz"):
        data = tmp / "data.txt"
        with open(data, "w") as f:
            for i in range(100000):
                f.write(f"line {i} {i * 7919 % 104729} {'abc' * (i % 11)}\n")
        w.append(("xz -6 of 4 MB", ["xz", "-6", "-k", "-c", "-T1", str(data)], {}))
    if shutil.which("node"):
        (tmp / "heavy.js").write_text(NODE_SCRIPT)
        w.append(("node maps and JSON", ["node", str(tmp / "heavy.js")], {}))
    return w


def measure(argv, env):
    """Wall seconds and peak RSS (KiB) of one run of `argv`. The peak RSS
    of one process needs a fresh RUSAGE_CHILDREN high-water mark, so it
    runs under a small Python that reports its own child's maximum (the
    time includes that Python's start, the same for every allocator)."""
    code = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(json.loads(sys.argv[1]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
        "w = time.perf_counter() - t\n"
        "if r.returncode: sys.stderr.write(r.stderr.decode(errors='replace')[-300:]); sys.exit(r.returncode)\n"
        "print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], env=env, capture_output=True, text=True,
                       timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {p.stderr[-300:]}")
    wall, rss = p.stdout.split()
    return float(wall), int(rss)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--allocators", default=",".join(DEFAULT_ORDER))
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    a = ap.parse_args()
    allocs = []
    for item in a.allocators.split(","):
        name, _, path = item.partition("=")
        lib = Path(path) if path else KNOWN_ALLOCATORS.get(name)
        if name not in KNOWN_ALLOCATORS and not path:
            sys.exit(f"programs: unknown allocator {name}")
        if lib is not None and not Path(lib).exists():
            print(f"programs: {name}: {lib} missing, skipped", file=sys.stderr)
            continue
        allocs.append((name, lib))
    with tempfile.TemporaryDirectory(prefix="fitalloc-programs.") as d:
        tmp = Path(d)
        ws = workloads(tmp)
        times = {(w[0], n): [] for w in ws for n, _ in allocs}
        rss = {(w[0], n): [] for w in ws for n, _ in allocs}
        for r in range(a.runs + 1):  # round 0 warms the caches and is dropped
            for wname, argv, wenv in ws:
                for name, lib in allocs:
                    env = dict(os.environ)
                    env.pop("LD_PRELOAD", None)
                    env.update(wenv)
                    env.update(ALLOCATOR_ENV.get(name, {}))
                    if lib is not None:
                        env["LD_PRELOAD"] = str(lib)
                    wall, peak = measure(argv, env)
                    if r:
                        times[(wname, name)].append(wall)
                        rss[(wname, name)].append(peak)
            print(f"programs: round {r}/{a.runs} done", file=sys.stderr, flush=True)
    names = [n for n, _ in allocs]
    lines = [f"Real programs, each preloaded with each allocator; medians of {a.runs} interleaved rounds",
             f"(load average {os.getloadavg()[0]:.1f} at the end). time: wall seconds; RSS: peak MiB.",
             "ratios: peer / fitalloc (time: >1 = fitalloc faster; RSS: >1 = fitalloc smaller).", ""]
    head = f"{'program':<32}{'metric':<8}" + "".join(f"{n:>10}" for n in names)
    head += "  |" + "".join(f"{'vs ' + n:>13}" for n in names if n != "fitalloc")
    lines += [head, "-" * len(head)]
    rows = []
    for wname, _, _ in ws:
        for metric, data, fmt in (("time", times, "{:>10.3f}"), ("RSS", rss, "{:>10.1f}")):
            med = {n: statistics.median(data[(wname, n)]) for n in names}
            if metric == "RSS":
                med = {n: v / 1024 for n, v in med.items()}
            line = f"{wname:<32}{metric:<8}" + "".join(fmt.format(med[n]) for n in names) + "  |"
            if "fitalloc" in med:
                line += "".join(f"{med[n] / med['fitalloc']:>13.2f}" for n in names if n != "fitalloc")
            lines.append(line)
            rows.append([wname, metric] + [med[n] for n in names])
    if "fitalloc" in names:
        lines.append("-" * len(head))
        for metric, data in (("time", times), ("RSS", rss)):
            line = f"{'geomean':<32}{metric:<8}" + " " * 10 * len(names) + "  |"
            for n in names:
                if n == "fitalloc":
                    continue
                prod, k = 1.0, 0
                for wname, _, _ in ws:
                    prod *= statistics.median(data[(wname, n)]) / statistics.median(data[(wname, "fitalloc")])
                    k += 1
                line += f"{prod ** (1 / k):>13.2f}"
            lines.append(line)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "programs.txt").write_text(text)
    with open(a.out / "programs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["program", "metric"] + names)
        w.writerows(rows)


if __name__ == "__main__":
    main()
