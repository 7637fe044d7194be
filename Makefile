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

.PHONY: all build test rust-test rust-global-test lint header-check demo clean

all: build

build: $(LIB)

# Cargo decides what is stale; the header is written by build.rs.
$(LIB) $(HEADER): FORCE
	$(CARGO) build --release --quiet

FORCE:

rust-test:
	$(CARGO) test --release --quiet

# Clippy with warnings as errors, including the undocumented-unsafe lint
# (Cargo.toml [lints]); skipped where clippy is not installed.
lint:
	@if $(CARGO) clippy --version >/dev/null 2>&1; then \
	  $(CARGO) clippy --release --quiet -- -D warnings && \
	  $(CARGO) clippy --release --quiet --no-default-features --features rust-global -- -D warnings && \
	  echo "lint: clippy clean (default features, and rust-global)"; \
	else echo "lint: cargo clippy is not installed, skipped"; fi

# fitalloc as a std Rust program's #[global_allocator] (feature rust-global),
# built in its own target directory: cargo builds every crate type of a
# path dependency, and its libfitalloc.so has no C names.
rust-global-test:
	@cd crates/globalalloc-test && CARGO_TARGET_DIR=$(abspath target/crates) $(CARGO) run --release --quiet

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

test: build header-check lint rust-test rust-global-test c-test stress-ci real-programs trace-test
	@echo "make test: all tests passed"

demo: $(LIB)
	@scripts/demo.sh

clean:
	$(CARGO) clean
	rm -rf c_tests/bin bench/results
