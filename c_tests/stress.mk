# c_tests/stress.mk - the multi-threaded stress test, included by the top
# Makefile.
#
# The including Makefile provides CC, LIB (target/release/libfitalloc.so) and
# a rule that builds $(LIB) (which also generates include/fitalloc.h).
#
#   make stress          long run: STRESS_SECONDS (default 300) whole seconds
#   make stress-ci       bounded run for CI: STRESS_CI_SECONDS (default 20)
#   make stress-build    only build c_tests/bin/stress
#
# Both runs take STRESS_THREADS (default 12 workers, plus one thread that
# forks) and STRESS_SEED (default 1). c_tests/bin/stress can also be run by
# hand: c_tests/bin/stress [SECONDS [THREADS [SEED]]]. A run that outlives its
# duration by STRESS_GRACE seconds is killed (the program has its own
# watchdog too).

STRESS_DIR        := c_tests
STRESS_BIN        := $(STRESS_DIR)/bin/stress
STRESS_SECONDS    ?= 300
STRESS_CI_SECONDS ?= 20
STRESS_THREADS    ?= 12
STRESS_SEED       ?= 1
STRESS_GRACE      ?= 120
STRESS_INCDIR     ?= include
STRESS_LIBDIR      = $(patsubst %/,%,$(dir $(LIB)))
STRESS_CFLAGS     ?= -std=c11 -Wall -Wextra -Werror -O2 -g -fno-builtin -pthread
STRESS_LDLIBS     ?= -ldl -pthread

.PHONY: stress stress-ci stress-build

stress-build: $(STRESS_BIN)

# The header is a prerequisite only once it exists: building $(LIB) generates it.
$(STRESS_BIN): $(STRESS_DIR)/stress.c $(STRESS_DIR)/common.h $(wildcard $(STRESS_INCDIR)/fitalloc.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(STRESS_CFLAGS) -I$(STRESS_INCDIR) -o $@ $< \
		-L$(STRESS_LIBDIR) -lfitalloc -Wl,-rpath,$(abspath $(STRESS_LIBDIR)) $(STRESS_LDLIBS)

stress: $(STRESS_BIN)
	timeout --kill-after=10 $$(( $(STRESS_SECONDS) + $(STRESS_GRACE) )) \
		$(STRESS_BIN) $(STRESS_SECONDS) $(STRESS_THREADS) $(STRESS_SEED)

stress-ci: $(STRESS_BIN)
	timeout --kill-after=10 $$(( $(STRESS_CI_SECONDS) + $(STRESS_GRACE) )) \
		$(STRESS_BIN) $(STRESS_CI_SECONDS) $(STRESS_THREADS) $(STRESS_SEED)
