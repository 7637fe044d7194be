# scripts/scripts.mk - real programs under LD_PRELOAD, included by the Makefile.
.PHONY: real-programs timing trace-test command-test profile-test

# Real programs with and without the library: same output, same status.
real-programs: $(LIB)
	@bash scripts/real_programs.sh $(abspath $(LIB))

# Wall time of python3 and gcc with and without the library (informational).
timing: $(LIB)
	@bash scripts/timing.sh $(abspath $(LIB))

# The trace recorder end to end: record real programs, replay the traces.
trace-test: $(LIB) bench/replay
	@bash scripts/trace_roundtrip.sh $(abspath $(LIB))

# The fitalloc command (scripts/fitalloc): every subcommand, errors, exit status.
command-test: $(LIB) bench/replay
	@bash scripts/command_test.sh

# The heap profiler end to end: known call sites, pinned free space, a dump
# on demand, through `fitalloc profile`. The program is not linked with
# fitalloc (the command preloads it).
c_tests/bin/test_profile: c_tests/test_profile.c
	@mkdir -p c_tests/bin
	$(CC) -std=c11 -O1 -g -fno-optimize-sibling-calls -Wall -Wextra -Werror -pthread -o $@ $< -ldl

profile-test: $(LIB) c_tests/bin/test_profile
	@bash scripts/profile_test.sh
