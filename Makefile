# fitalloc: build, test, demo and benchmarks.
#
#   make          build target/release/libfitalloc.so (and include/fitalloc.h)
#   make test     every test: Rust, C harnesses, real programs under LD_PRELOAD
#   make demo     run a real program on the allocator and show its statistics
#   make bench    side-by-side benchmarks against glibc, jemalloc, mimalloc, tcmalloc

CC      ?= cc
CFLAGS  ?= -O2 -g -Wall -Wextra
CARGO   ?= cargo
LIB     := target/release/libfitalloc.so
LIBDIR  := $(abspath target/release)
HEADER  := include/fitalloc.h

.PHONY: all build test rust-test lint lock-check-test header-check demo clean

all: build

build: $(LIB)

# Cargo decides what is stale; the header is written by build.rs.
$(LIB) $(HEADER): FORCE
	$(CARGO) build --release --quiet

FORCE:

rust-test:
	$(CARGO) test --release --quiet

# Clippy with warnings as errors, including the undocumented-unsafe lint
# (Cargo.toml [lints]). A machine without clippy fails: a skipped check
# must not pass.
lint:
	@$(CARGO) clippy --version >/dev/null 2>&1 || { echo "lint: cargo clippy is not installed (rustup component add clippy)"; exit 1; }
	$(CARGO) clippy --release --quiet -- -D warnings
	@echo "lint: clippy clean"

# The thread and fork tests again, on a build that checks the lock-order
# table (src/sync.rs) at every acquisition.
LOCKCHECK_DIR := target/lockcheck
lock-check-test: c-tests-build
	$(CARGO) build --release --quiet --features lock-check --target-dir $(LOCKCHECK_DIR)
	@LD_LIBRARY_PATH=$(abspath $(LOCKCHECK_DIR))/release FITALLOC_EXPECT=1 \
	  bash c_tests/run_tests.sh c_tests/bin/test_threads c_tests/bin/test_fork

# include/fitalloc.h is generated and committed: a build that changes it
# means the committed header is stale.
header-check: $(LIB)
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  if ! git diff --quiet -- $(HEADER); then \
	    echo "header-check: $(HEADER) is stale: commit the regenerated header"; git --no-pager diff --stat -- $(HEADER); exit 1; \
	  fi; echo "header-check: $(HEADER) is up to date"; \
	else echo "header-check: not a git checkout, skipped"; fi

-include c_tests/c_tests.mk
-include c_tests/stress.mk
-include bench/bench.mk
-include scripts/scripts.mk

test: build header-check lint rust-test c-test lock-check-test stress-ci real-programs trace-test
	@echo "make test: all tests passed"

demo: $(LIB)
	@scripts/demo.sh

clean:
	$(CARGO) clean
	rm -rf c_tests/bin bench/results
