# c_tests/c_tests.mk - the C test harnesses, included by the top Makefile.
#
# The including Makefile provides CC, LIB (target/release/libfitalloc.so) and
# a rule that builds $(LIB) (which also generates include/fitalloc.h).
#
#   make c-test          build c_tests/bin/* (C, and C++ from *.cc) and run them with a summary
#   make c-tests-build   only build them
#   make c-tests-clean   remove c_tests/bin
#
# Each test is linked with -lfitalloc before libc, so malloc & co resolve to
# fitalloc; the tests also call the fitalloc_* API and fitalloc_check_heap().
# FITALLOC_EXPECT=1 (the default C_TESTS_ENV) enables the checks that only
# hold with the real library. Against glibc (a stand-in libfitalloc.so that
# forwards to glibc), use: make c-test C_TESTS_ENV= LIB=/path/to/stand-in.so

C_TESTS_DIR     := c_tests
C_TESTS_BINDIR  := $(C_TESTS_DIR)/bin
C_TESTS_NAMES   := test_api test_threads test_fork test_misuse test_oom test_regions test_hostile test_promises test_return test_cxx_noruntime test_contention test_arenas test_depot test_churn test_atfork
C_TESTS         := $(addprefix $(C_TESTS_BINDIR)/,$(C_TESTS_NAMES))
# C++ tests (g++ links -lstdc++ after -lfitalloc, so fitalloc's operators win).
CXX             ?= g++
CXX_TESTS_NAMES := test_cxx test_cxx_harden test_cxx_replaced
CXX_TESTS       := $(addprefix $(C_TESTS_BINDIR)/,$(CXX_TESTS_NAMES))
CXX_TESTS_FLAGS ?= -std=c++17 -Wall -Wextra -Werror -O1 -g -pthread
FITALLOC_INCDIR ?= include
C_TESTS_LIBDIR   = $(patsubst %/,%,$(dir $(LIB)))
C_TESTS_CFLAGS  ?= -std=c11 -Wall -Wextra -Werror -O1 -g -fno-builtin -pthread
C_TESTS_LDLIBS  ?= -ldl -pthread
C_TESTS_ENV     ?= FITALLOC_EXPECT=1
C_TESTS_TIMEOUT ?= 300

.PHONY: c-test c-tests-build c-tests-clean

c-tests-build: $(C_TESTS) $(CXX_TESTS)

# The header is a prerequisite only once it exists: building $(LIB) generates it.
$(C_TESTS): $(C_TESTS_BINDIR)/%: $(C_TESTS_DIR)/%.c $(C_TESTS_DIR)/common.h \
		$(wildcard $(FITALLOC_INCDIR)/fitalloc.h) $(LIB)
	@mkdir -p $(C_TESTS_BINDIR)
	$(CC) $(C_TESTS_CFLAGS) -I$(FITALLOC_INCDIR) -o $@ $< \
		-L$(C_TESTS_LIBDIR) -lfitalloc -Wl,-rpath,$(abspath $(C_TESTS_LIBDIR)) $(C_TESTS_LDLIBS)

$(CXX_TESTS): $(C_TESTS_BINDIR)/%: $(C_TESTS_DIR)/%.cc $(wildcard $(FITALLOC_INCDIR)/fitalloc.h) $(LIB)
	@mkdir -p $(C_TESTS_BINDIR)
	$(CXX) $(CXX_TESTS_FLAGS) -I$(FITALLOC_INCDIR) -o $@ $< \
		-L$(C_TESTS_LIBDIR) -lfitalloc -Wl,-rpath,$(abspath $(C_TESTS_LIBDIR)) $(C_TESTS_LDLIBS)

c-test: $(C_TESTS) $(CXX_TESTS)
	@$(C_TESTS_ENV) C_TESTS_TIMEOUT=$(C_TESTS_TIMEOUT) bash $(C_TESTS_DIR)/run_tests.sh $(C_TESTS) $(CXX_TESTS)

c-tests-clean:
	rm -rf $(C_TESTS_BINDIR)
