# fitalloc: build, test, demo and benchmarks.
#
#   make          build target/release/libfitalloc.so (and include/fitalloc.h)
#   make test     every test: Rust, C harnesses, real programs under LD_PRELOAD
#   make demo     run a real program on the allocator and show its statistics
#   make bench    side-by-side benchmarks against glibc, jemalloc, mimalloc, tcmalloc
#   make install  the library, header, pkg-config file and the fitalloc command
#                 under $(DESTDIR)$(PREFIX) (PREFIX=/usr/local); make uninstall

CC      ?= cc
CFLAGS  ?= -O2 -g -Wall -Wextra
CARGO   ?= cargo
LIB     := target/release/libfitalloc.so
LIBDIR  := $(abspath target/release)
HEADER  := include/fitalloc.h

.PHONY: all build test rust-test rust-global-test lint lock-check-test header-check demo clean install uninstall install-test

all: build

build: $(LIB)

# Cargo decides what is stale; the header is written by build.rs. The
# library's soname is libfitalloc.so.0 (build.rs), the name programs linked
# against it look for: the link beside it serves those linked against the
# build tree (the C tests).
$(LIB) $(HEADER): FORCE
	$(CARGO) build --release --quiet
	@ln -sf libfitalloc.so target/release/libfitalloc.so.0

FORCE:

rust-test:
	$(CARGO) test --release --quiet

# Clippy with warnings as errors, including the undocumented-unsafe lint
# (Cargo.toml [lints]). A machine without clippy fails: a skipped check
# must not pass.
lint:
	@$(CARGO) clippy --version >/dev/null 2>&1 || { echo "lint: cargo clippy is not installed (rustup component add clippy)"; exit 1; }
	$(CARGO) clippy --release --quiet -- -D warnings
	$(CARGO) clippy --release --quiet --no-default-features --features rust-global -- -D warnings
	@echo "lint: clippy clean (default features, and rust-global)"

# The thread and fork tests again, on a build that checks the lock-order
# table (src/sync.rs) at every acquisition. The tests look for the soname,
# libfitalloc.so.0, and LD_LIBRARY_PATH comes before their run path.
LOCKCHECK_DIR := target/lockcheck
lock-check-test: c-tests-build
	$(CARGO) build --release --quiet --features lock-check --target-dir $(LOCKCHECK_DIR)
	@ln -sf libfitalloc.so $(LOCKCHECK_DIR)/release/libfitalloc.so.0
	@LD_LIBRARY_PATH=$(abspath $(LOCKCHECK_DIR))/release FITALLOC_EXPECT=1 \
	  bash c_tests/run_tests.sh c_tests/bin/test_threads c_tests/bin/test_fork c_tests/bin/test_contention c_tests/bin/test_arenas c_tests/bin/test_depot c_tests/bin/test_atfork c_tests/bin/test_hostile

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

# ---- install ---------------------------------------------------------------
# lib/libfitalloc.so.0.1.0 (soname libfitalloc.so.0, set by build.rs) with
# its .so.0 and .so links, lib/libfitalloc.a, include/fitalloc.h,
# lib/pkgconfig/fitalloc.pc, bin/fitalloc and its man page, and the tools `fitalloc replay`
# and `fitalloc compare` run and the profile symboliser in libexec/fitalloc/. With DESTDIR empty and
# as root, ldconfig refreshes the loader's cache (LDCONFIG=true skips it).
PREFIX  ?= /usr/local
DESTDIR ?=
LDCONFIG ?= ldconfig
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
SONAME  := libfitalloc.so.0
STATIC  := target/release/libfitalloc.a
I_LIB   := $(DESTDIR)$(PREFIX)/lib
I_INC   := $(DESTDIR)$(PREFIX)/include
I_BIN   := $(DESTDIR)$(PREFIX)/bin
I_EXEC  := $(DESTDIR)$(PREFIX)/libexec/fitalloc
I_PC    := $(I_LIB)/pkgconfig
I_MAN   := $(DESTDIR)$(PREFIX)/share/man/man1

# Builds only what is missing (`sudo make install` after `make` need not
# find cargo in root's PATH).
install: bench/replay
	@[ -f $(LIB) ] && [ -f $(STATIC) ] || $(MAKE) build
	install -d $(I_LIB) $(I_INC) $(I_BIN) $(I_EXEC) $(I_PC) $(I_MAN)
	install -m 755 $(LIB) $(I_LIB)/libfitalloc.so.$(VERSION)
	ln -sf libfitalloc.so.$(VERSION) $(I_LIB)/$(SONAME)
	ln -sf $(SONAME) $(I_LIB)/libfitalloc.so
	install -m 644 $(STATIC) $(I_LIB)/libfitalloc.a
	install -m 644 $(HEADER) $(I_INC)/fitalloc.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' fitalloc.pc.in > $(I_PC)/fitalloc.pc
	chmod 644 $(I_PC)/fitalloc.pc
	install -m 755 scripts/fitalloc $(I_BIN)/fitalloc
	install -m 644 docs/fitalloc.1 $(I_MAN)/fitalloc.1
	install -m 755 bench/replay $(I_EXEC)/replay
	install -m 644 bench/bench.py $(I_EXEC)/bench.py
	install -m 644 scripts/profile_report.py $(I_EXEC)/profile_report.py
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v $(LDCONFIG) >/dev/null 2>&1; then $(LDCONFIG); fi

uninstall:
	rm -f $(I_LIB)/libfitalloc.so.$(VERSION) $(I_LIB)/$(SONAME) $(I_LIB)/libfitalloc.so \
	  $(I_LIB)/libfitalloc.a $(I_INC)/fitalloc.h $(I_PC)/fitalloc.pc $(I_BIN)/fitalloc \
	  $(I_EXEC)/replay $(I_EXEC)/bench.py $(I_EXEC)/profile_report.py $(I_MAN)/fitalloc.1
	rmdir $(I_EXEC) 2>/dev/null || true

# Installs into temporary prefixes, builds C and C++ programs with
# pkg-config, runs them, uninstalls.
install-test: build bench/replay
	@bash scripts/install_test.sh

test: build header-check lint rust-test rust-global-test c-test lock-check-test stress-ci real-programs trace-test install-test command-test profile-test
	@echo "make test: all tests passed"

demo: $(LIB)
	@scripts/demo.sh

clean:
	$(CARGO) clean
	rm -rf c_tests/bin bench/results
