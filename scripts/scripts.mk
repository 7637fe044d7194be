# scripts/scripts.mk - real programs under LD_PRELOAD, included by the Makefile.
.PHONY: real-programs timing trace-test command-test

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
