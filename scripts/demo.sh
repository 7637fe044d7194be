#!/usr/bin/env bash
# make demo: runs a real program on fitalloc and shows what the allocator did.
set -euo pipefail
cd "$(dirname "$0")/.."
LIB="$(pwd)/target/release/libfitalloc.so"
[[ -f $LIB ]] || { echo "demo: $LIB is missing (run make)"; exit 1; }

# The real interpreter, not a version-manager shim that would spawn helpers.
PY=$(python3 -c 'import sys; print(sys.executable)')
prog='
import json, random
random.seed(7)
docs = [{"id": i, "name": "item-%d" % i, "tags": [random.choice("abcdef") * random.randint(1, 20) for _ in range(5)],
         "nested": {"x": random.random(), "y": list(range(i % 50))}} for i in range(50000)]
text = json.dumps(docs)
back = json.loads(text)
back.sort(key=lambda d: (d["tags"][0], d["id"]))
print("documents:", len(back), " json bytes:", len(text), " first:", back[0]["name"])
'

echo "== python3 (PYTHONMALLOC=malloc: every object through malloc) on fitalloc"
echo "   LD_PRELOAD=$LIB FITALLOC_STATS=1 python3 -c '<build 50,000 JSON documents, dump, load, sort>'"
echo
start=$(date +%s%N)
out_fit=$(LD_PRELOAD=$LIB FITALLOC_STATS=1 PYTHONMALLOC=malloc "$PY" -c "$prog" 2>/tmp/fitalloc-demo.$$)
t_fit=$(( ($(date +%s%N) - start) / 1000000 ))
echo "$out_fit"
cat /tmp/fitalloc-demo.$$; rm -f /tmp/fitalloc-demo.$$
start=$(date +%s%N)
out_libc=$(PYTHONMALLOC=malloc "$PY" -c "$prog")
t_libc=$(( ($(date +%s%N) - start) / 1000000 ))
echo
if [[ $out_fit == "$out_libc" ]]; then
  echo "same output as with the C library's malloc; wall time ${t_fit} ms on fitalloc, ${t_libc} ms on glibc"
else
  echo "OUTPUT DIFFERS from the C library's run:"; echo "$out_libc"; exit 1
fi
