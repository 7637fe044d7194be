#!/usr/bin/env python3
"""Turns a raw fitalloc heap profile (FITALLOC_PROFILE=path) into folded
stacks for flame graphs, and optionally draws them as an SVG.

    profile_report.py RAW -o prof.txt [--pinned prof.pinned.txt] [--svg prof.svg] [--top N]

RAW is what the library wrote at exit (or fitalloc_profile_dump): a header,
a copy of /proc/self/maps, and one line per live sample, `s SIZE PINNED IP...`
(return addresses, innermost first). Each sample stands for SIZE / P bytes,
P = 1 - exp(-SIZE / rate) being the chance that a block of SIZE bytes was
sampled; its pinned free bytes are scaled the same way.

Addresses are symbolised with addr2line (binutils) against the files named
in the maps: function names (C++ demangled, inlined frames expanded), or
`file+0xoffset` where a file has no symbol for the address. Output, one
line per stack, root first, most bytes first:

    main;load_table;xmalloc 8392704

prof.txt holds live bytes; the pinned file (default: prof.pinned.txt) the
free bytes that cannot be returned to the system because those blocks sit
on their pages. A summary of the top allocation sites goes to stderr.
Used by `fitalloc profile`; needs python3 and addr2line only.
"""

import argparse
import html
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from collections import defaultdict


class Mapping:
    __slots__ = ("start", "end", "offset", "path")

    def __init__(self, start, end, offset, path):
        self.start, self.end, self.offset, self.path = start, end, offset, path


def parse(path):
    header, maps, samples = {}, [], []
    section = "header"
    with open(path, "r", errors="replace") as f:
        first = f.readline()
        if not first.startswith("fitalloc heap profile"):
            raise ValueError(f"{path}: not a fitalloc heap profile")
        for line in f:
            line = line.rstrip("\n")
            if line == "maps":
                section = "maps"
            elif line == "samples":
                section = "samples"
            elif line == "end":
                header["complete"] = 1
                break
            elif section == "header":
                k, _, v = line.partition(" ")
                header[k] = int(v) if v.isdigit() else v
            elif section == "maps":
                parts = line.split(None, 5)
                if len(parts) < 5:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                p = parts[5].strip() if len(parts) > 5 else ""
                maps.append(Mapping(lo, hi, int(parts[2], 16), p))
            elif line.startswith("s "):
                parts = line.split()
                samples.append((int(parts[1]), int(parts[2]), [int(x, 16) for x in parts[3:]]))
    return header, maps, samples


def load_segments(path):
    """(file offset, vaddr, filesz) of each PT_LOAD of an ELF file, or []."""
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if ident[:4] != b"\x7fELF" or ident[4] != 2:
                return []
            end = "<" if ident[5] == 1 else ">"
            phoff, = struct.unpack_from(end + "Q", ident, 32)
            phentsize, phnum = struct.unpack_from(end + "HH", ident, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return []
    segs = []
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(end + "IIQQQQ", table, i * phentsize)
        if p_type == 1:
            segs.append((p_offset, p_vaddr, p_filesz))
    return segs


class Symbolizer:
    def __init__(self, maps):
        self.maps = sorted(maps, key=lambda m: m.start)
        self.starts = [m.start for m in self.maps]
        self.segs = {}
        self.cache = {}

    def mapping(self, ip):
        import bisect
        i = bisect.bisect_right(self.starts, ip) - 1
        if i >= 0 and self.maps[i].start <= ip < self.maps[i].end:
            return self.maps[i]
        return None

    def vaddr(self, m, ip):
        off = ip - m.start + m.offset
        if m.path not in self.segs:
            self.segs[m.path] = load_segments(m.path)
        for p_offset, p_vaddr, filesz in self.segs[m.path]:
            if p_offset <= off < p_offset + max(filesz, 1):
                return off - p_offset + p_vaddr
        return off

    def resolve(self, ips):
        """Fills the cache: ip -> list of names, innermost first."""
        by_file = defaultdict(list)
        for ip in ips:
            if ip in self.cache:
                continue
            pc = ip - 1  # a return address: the call is the byte before
            m = self.mapping(pc)
            if m is None or not m.path.startswith("/"):
                self.cache[ip] = [f"0x{ip:x}" if m is None else f"{m.path or 'anon'}+0x{pc - m.start:x}"]
                continue
            by_file[m.path].append((ip, self.vaddr(m, pc), pc - m.start + m.offset))
        for path, items in by_file.items():
            base = os.path.basename(path)
            names = {}
            if os.path.exists(path):
                names = addr2line(path, [v for _, v, _ in items])
            for ip, v, off in items:
                chain = [n for n in names.get(v, []) if n and n != "??"]
                self.cache[ip] = chain or [f"{base}+0x{off:x}"]


def addr2line(path, vaddrs):
    out = {}
    uniq = sorted(set(vaddrs))
    for k in range(0, len(uniq), 2000):
        chunk = uniq[k:k + 2000]
        p = subprocess.run(["addr2line", "-a", "-f", "-C", "-i", "-e", path] + [f"0x{v:x}" for v in chunk],
                           capture_output=True, text=True, errors="replace")
        cur, lines, i = None, p.stdout.splitlines(), 0
        while i < len(lines):
            line = lines[i]
            if re.fullmatch(r"0x[0-9a-fA-F]+", line):
                cur = int(line, 16)
                out.setdefault(cur, [])
                i += 1
                continue
            if cur is not None:  # a function name, then its file:line
                out[cur].append(line.replace(";", ",").replace(" ", "_") if line != "??" else "??")
            i += 2
    return out


def folded(samples, sym, rate, max_frames=0):
    live, pinned, sites = defaultdict(float), defaultdict(float), defaultdict(lambda: [0.0, 0.0, 0])
    for size, pin, ips in samples:
        p = -math.expm1(-size / rate) if rate > 0 else 1.0
        w = 1.0 / p if p > 0 else 1.0
        frames = []
        for ip in ips:
            frames.extend(sym.cache.get(ip, [f"0x{ip:x}"]))
        if not frames:
            frames = ["[unknown]"]
        elif max_frames and len(ips) >= max_frames:
            frames.append("[deeper]")  # the stack went on: keep it out of the real roots
        key = ";".join(reversed(frames))
        live[key] += size * w
        pinned[key] += pin * w
        s = sites[frames[0]]
        s[0] += size * w
        s[1] += pin * w
        s[2] += 1
    return live, pinned, sites


def write_folded(path, table):
    with open(path, "w") as f:
        for k, v in sorted(table.items(), key=lambda kv: -kv[1]):
            if round(v) > 0:
                f.write(f"{k} {round(v)}\n")


# ---- a small flame graph ---------------------------------------------------

def tree_of(table):
    root = {"n": 0.0, "c": {}}
    for stack, v in table.items():
        if v <= 0:
            continue
        node = root
        node["n"] += v
        for fr in stack.split(";"):
            node = node["c"].setdefault(fr, {"n": 0.0, "c": {}})
            node["n"] += v
    return root


def color(name, hue):
    h = sum(ord(c) * (i + 1) for i, c in enumerate(name)) % 1000 / 1000.0
    if hue == "warm":
        r, g, b = 205 + int(50 * h), int(80 + 120 * h), int(40 + 20 * (1 - h))
    else:
        r, g, b = int(60 + 40 * h), int(120 + 80 * h), 200 + int(55 * h)
    return f"rgb({r},{g},{b})"


def human(v):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024


def flame_svg(panels, width=1200):
    """panels: list of (title, folded table, hue). Returns SVG text."""
    fh, pad, title_h = 16, 10, 24
    parts, y0 = [], pad
    for title, table, hue in panels:
        root = tree_of(table)
        depth = [0]

        total = root["n"] or 1.0

        def measure(node, d):
            depth[0] = max(depth[0], d)
            for c in node["c"].values():
                if c["n"] / total * (width - 2 * pad) >= 0.3:  # drawn
                    measure(c, d + 1)
        measure(root, 0)
        h = title_h + depth[0] * fh + pad
        parts.append(f'<text x="{width / 2}" y="{y0 + 16}" text-anchor="middle" font-size="15">'
                     f'{html.escape(title)}: {html.escape(human(root["n"]))}</text>')
        total = root["n"] or 1.0
        base_y = y0 + h - pad  # bottom of the panel: roots at the bottom

        def draw(node, x, d):
            cx = x
            for name, c in sorted(node["c"].items()):
                w = c["n"] / total * (width - 2 * pad)
                if w >= 0.3:
                    y = base_y - (d - 1) * fh
                    label = html.escape(name)
                    tip = f'{label} ({html.escape(human(c["n"]))}, {100 * c["n"] / total:.1f}%)'
                    parts.append(f'<g><title>{tip}</title><rect x="{cx:.1f}" y="{y - fh + 1}" width="{w:.1f}" '
                                 f'height="{fh - 1}" fill="{color(name, hue)}" rx="2"/>')
                    chars = int(w / 7)
                    if chars >= 3:
                        text = name if len(name) <= chars else name[:chars - 2] + ".."
                        parts.append(f'<text x="{cx + 3:.1f}" y="{y - 4}" font-size="11">{html.escape(text)}</text>')
                    parts.append("</g>")
                    draw(c, cx, d + 1)
                cx += w
        draw(root, pad, 1)
        y0 += h + pad
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y0}" '
            f'viewBox="0 0 {width} {y0}" font-family="Verdana, sans-serif">'
            f'<rect width="100%" height="100%" fill="#fafafa"/>')
    return head + "".join(parts) + "</svg>\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw")
    ap.add_argument("-o", "--output", required=True, help="folded stacks of live bytes")
    ap.add_argument("--pinned", help="folded stacks of pinned free bytes (default: OUTPUT with .pinned before its extension)")
    ap.add_argument("--svg", help="also draw both as flame graphs in one SVG")
    ap.add_argument("--title", default="", help="a title for the SVG's panels")
    ap.add_argument("--top", type=int, default=5, help="allocation sites in the summary (default 5)")
    a = ap.parse_args()
    if shutil.which("addr2line") is None:
        sys.exit("fitalloc: profile: addr2line is needed to name call sites (Debian: apt-get install binutils)")
    try:
        header, maps, samples = parse(a.raw)
    except (OSError, ValueError) as e:
        sys.exit(f"fitalloc: profile: {e}")
    if "complete" not in header:
        print(f"fitalloc: profile: {a.raw} is incomplete (the process died before writing it all)", file=sys.stderr)
    rate = int(header.get("rate", 524288))
    sym = Symbolizer(maps)
    sym.resolve({ip for _, _, ips in samples for ip in ips})
    live, pinned, sites = folded(samples, sym, rate, int(header.get("max_frames", 0)))
    pinned_path = a.pinned
    if not pinned_path:
        root, ext = os.path.splitext(a.output)
        pinned_path = f"{root}.pinned{ext or '.txt'}"
    write_folded(a.output, live)
    write_folded(pinned_path, pinned)
    if a.svg:
        t = f"{a.title}: " if a.title else ""
        with open(a.svg, "w") as f:
            f.write(flame_svg([(f"{t}live bytes by call stack", live, "warm"),
                               (f"{t}pinned free bytes (free space on pages those blocks keep from the system)", pinned, "cool")]))
    tot_live, tot_pin = sum(live.values()), sum(pinned.values())
    err = sys.stderr
    print(f"fitalloc: profile of pid {header.get('pid', '?')}: {len(samples)} live samples "
          f"(1 per {human(rate)} allocated; {header.get('samples_dropped', 0)} dropped), "
          f"~{human(tot_live)} live, ~{human(tot_pin)} pinned free "
          f"(heap {human(header.get('heap_bytes', 0))}, free {human(header.get('free_bytes', 0))}, "
          f"pinned {human(header.get('pinned_free_bytes', 0))})", file=err)
    for title, idx in (("live bytes", 0), ("pinned free bytes", 1)):
        ranked = sorted(sites.items(), key=lambda kv: -kv[1][idx])[:a.top]
        ranked = [(k, v) for k, v in ranked if v[idx] > 0]
        if not ranked:
            continue
        print(f"  top allocation sites by {title}:", file=err)
        for k, v in ranked:
            print(f"    {human(v[idx]):>10}  {k}  ({v[2]} samples)", file=err)
    print(f"fitalloc: folded stacks: {a.output} (live), {pinned_path} (pinned)"
          + (f"; flame graphs: {a.svg}" if a.svg else ""), file=err)


if __name__ == "__main__":
    main()
