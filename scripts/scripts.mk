# scripts/scripts.mk - real programs under LD_PRELOAD, included by the Makefile.
.PHONY: real-programs timing

# Real programs with and without the library: same output, same status.
real-programs: $(LIB)
	@bash scripts/real_programs.sh $(abspath $(LIB))

# Wall time of python3 and gcc with and without the library (informational).
timing: $(LIB)
	@bash scripts/timing.sh $(abspath $(LIB))
