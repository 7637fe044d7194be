# bench/bench.mk - the measurement tools; included from the top Makefile:
#     include bench/bench.mk
#
# Targets
#   bench         build the tools, then the full side-by-side run (< 15 min:
#                 the traces, returns.py, then mt_patterns.py, about 3 min)
#   bench-quick   the same with fewer repetitions (about a minute)
#   bench-hitpath instructions per cached malloc and free (callgrind)
#   bench-programs real programs' wall time and peak RSS under each allocator
#   bench-mt      only the multi-threaded patterns (mt_patterns.py; --quick
#                 with MT_ARGS=--quick)
#   bench-mimalloc mimalloc-bench's C/C++ programs under each allocator
#                 (mimalloc_bench.py, about 20 min; not part of bench)
#   bench-security mimalloc-bench's security tests under each allocator
#                 (security.py, about 3 min; not part of bench)
#   bench/replay bench/mt bench/micro ...   the tools themselves
#   bench-deps    install the peer allocators' Debian packages if missing
#   bench-asan    replay every trace under an ASan/UBSan build of replay
#   bench-clean   remove the binaries and bench/results
#
# Variables: CC and LIB (target/release/libfitalloc.so) come from the top
# Makefile.  CFLAGS is deliberately NOT used: the top Makefile's flags are
# for the tests (-O0, sanitizers) and would distort the measurements; set
# BENCH_CFLAGS to change how the tools are built.  BENCH_ARGS is passed to
# bench.py (e.g. BENCH_ARGS="--allocators fitalloc,glibc --reps 3");
# MIMALLOC_BENCH_ARGS to mimalloc_bench.py (e.g. "--src DIR --reps 1"),
# SECURITY_ARGS to security.py (e.g. "--src DIR --runs 1").

LIB ?= target/release/libfitalloc.so
PYTHON ?= python3
BENCH_CFLAGS ?= -O2 -g -std=c11 -Wall -Wextra
BENCH_LDLIBS := -ldl -lpthread
BENCH_ARGS ?=
BENCH_TRACES ?= ../shared/traces
MT_PATTERNS := bench/larson bench/prodcons bench/churn bench/thrash
BENCH_TOOLS := bench/replay bench/mt bench/micro bench/large bench/buffers bench/hitpath $(MT_PATTERNS)
MT_ARGS ?=
MIMALLOC_BENCH_ARGS ?=
SECURITY_ARGS ?=
BENCH_DEB_PKGS := libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4

.PHONY: bench bench-hitpath bench-programs bench-mt bench-mimalloc bench-security bench-returns bench-quick bench-deps bench-asan bench-clean

bench/replay: bench/replay.c bench/benchutil.h
	$(CC) $(BENCH_CFLAGS) -o $@ bench/replay.c $(BENCH_LDLIBS)

bench/mt: bench/mt.c bench/benchutil.h bench/mtutil.h include/fitalloc.h
	$(CC) $(BENCH_CFLAGS) -o $@ bench/mt.c $(BENCH_LDLIBS)

# The multi-threaded patterns (mt_patterns.py runs them with bench/mt).
$(MT_PATTERNS): bench/%: bench/%.c bench/benchutil.h bench/mtutil.h include/fitalloc.h
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(BENCH_LDLIBS)

bench/micro: bench/micro.c bench/benchutil.h
	$(CC) $(BENCH_CFLAGS) -o $@ bench/micro.c $(BENCH_LDLIBS)

bench/large: bench/large.c
	$(CC) $(BENCH_CFLAGS) -o $@ bench/large.c $(BENCH_LDLIBS)

bench/buffers: bench/buffers.c
	$(CC) $(BENCH_CFLAGS) -o $@ bench/buffers.c

# Instructions per cached malloc and free, counted by callgrind.
bench/hitpath: bench/hitpath.c
	$(CC) $(BENCH_CFLAGS) -o $@ bench/hitpath.c -pthread -lstdc++

bench-hitpath: bench-deps bench/hitpath $(LIB)
	$(PYTHON) bench/hitpath.py

# Real programs (python3, perl, gcc, sqlite3, xz, node) under each allocator.
bench-programs: bench-deps $(LIB)
	$(PYTHON) bench/programs.py $(PROGRAMS_ARGS)

bench: bench-deps $(BENCH_TOOLS) $(LIB)
	$(PYTHON) bench/bench.py --traces $(BENCH_TRACES) $(BENCH_ARGS)
	$(PYTHON) bench/returns.py
	$(PYTHON) bench/hitpath.py
	$(PYTHON) bench/programs.py $(PROGRAMS_ARGS)
	$(PYTHON) bench/mt_patterns.py $(MT_ARGS)

# Larson-style server, producer/consumer, thread churn, false sharing and
# mt with cross-thread frees, at 1, 2 and 4 threads (about 3 minutes).
bench-mt: bench-deps bench/mt $(MT_PATTERNS) $(LIB)
	$(PYTHON) bench/mt_patterns.py $(MT_ARGS)

# mimalloc-bench (daanx/mimalloc-bench at a pinned commit): cfrac, espresso,
# barnes, larson, alloc-test, cache-scratch/thrash, xmalloc-test,
# malloc-large, mstress, mleak, rptest, glibc-simple/thread.  Clones the
# sources into bench/mimalloc-bench-work (git-ignored); without network,
# MIMALLOC_BENCH_ARGS="--src DIR" (a checkout, or a git directory with
# that commit).
bench-mimalloc: bench-deps $(LIB)
	$(PYTHON) bench/mimalloc_bench.py $(MIMALLOC_BENCH_ARGS)

# Which misuse each allocator stops (mimalloc-bench's bench/security).
bench-security: bench-deps $(LIB)
	$(PYTHON) bench/security.py $(SECURITY_ARGS)

# Memory that comes back: large buffers and a freed spike (bench/large.c).
bench-returns: bench-deps bench/large bench/buffers $(LIB)
	$(PYTHON) bench/returns.py

bench-quick: bench-deps $(BENCH_TOOLS) $(LIB)
	$(PYTHON) bench/bench.py --quick --traces $(BENCH_TRACES) $(BENCH_ARGS)
	$(PYTHON) bench/mt_patterns.py --quick $(MT_ARGS)

# Installs only what is missing, only as root, and never fails the run:
# bench.py skips an allocator whose library is absent.
bench-deps:
	@missing=""; \
	if ! command -v dpkg-query >/dev/null 2>&1; then \
	  echo "bench: not a Debian system; peer allocators that are missing will be skipped"; \
	  exit 0; \
	fi; \
	for p in $(BENCH_DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' \
	    || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "bench: not root, so not installing$$missing (those allocators will be skipped)"; \
	  exit 0; \
	fi; \
	echo "bench: installing$$missing"; \
	{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; } \
	  || echo "bench: could not install$$missing (those allocators will be skipped)"

# The replayer must itself be free of memory errors and undefined
# behaviour: replay every trace, with full patterns, under glibc.
bench/replay-asan: bench/replay.c bench/benchutil.h
	$(CC) -O1 -g -std=c11 -Wall -Wextra -fsanitize=address,undefined \
	  -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
	  -o $@ bench/replay.c $(BENCH_LDLIBS)

bench-asan: bench/replay-asan
	@set -e; for t in $(BENCH_TRACES)/*.rep*; do \
	  echo "bench-asan: $$t"; \
	  env -u LD_PRELOAD bench/replay-asan --check -n 1 --no-fitalloc --csv $$t; \
	done

bench-clean:
	rm -f $(BENCH_TOOLS) bench/replay-asan
	rm -rf bench/results bench/mimalloc-bench-work
