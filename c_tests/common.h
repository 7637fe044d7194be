/* Shared helpers for the fitalloc C test programs: TAP output, heap checks,
 * the first error from any thread, time and child processes, a small PRNG,
 * byte patterns and ways to hide values from the optimizer.
 * Everything is static inline so each test program is self-contained.
 * The program must define _GNU_SOURCE before its first #include. */
#ifndef FITALLOC_C_TESTS_COMMON_H
#define FITALLOC_C_TESTS_COMMON_H

#if !defined(_GNU_SOURCE)
#error "common.h: define _GNU_SOURCE before the first #include"
#endif

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fitalloc.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "patterns assume a little-endian machine");

/* ---- hiding values from the compiler --------------------------------- */

/* The optimizer must not see constant sizes (it would warn about
 * "exceeds maximum object size" or fold the call) nor follow a pointer
 * through free/realloc. An empty asm that "modifies" the value does both. */
static inline size_t hide_size(size_t n)
{
    __asm__ volatile("" : "+r"(n));
    return n;
}

static inline void *hide_ptr(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

/* ---- TAP output -------------------------------------------------------- */

static int tap_count;
static int tap_failures;

static inline size_t heap_problems(void)
{
    return (size_t)fitalloc_check_heap();
}

/* fitalloc's statistics now (zeroes where the library has none). */
static inline struct fitalloc_stats stats(void)
{
    struct fitalloc_stats st;
    memset(&st, 0, sizeof st);
    fitalloc_stats(&st);
    return st;
}

/* Prints "ok N - name" or "not ok N - name: detail". Every check also runs
 * fitalloc_check_heap(), which must report 0 problems. Returns 1 on pass. */
__attribute__((format(printf, 3, 4)))
static inline int check(int cond, const char *name, const char *fmt, ...)
{
    size_t problems = heap_problems();
    int pass = cond && problems == 0;

    tap_count++;
    if (pass) {
        printf("ok %d - %s\n", tap_count, name);
    } else {
        tap_failures++;
        printf("not ok %d - %s: ", tap_count, name);
        if (!cond) {
            va_list ap;
            va_start(ap, fmt);
            vprintf(fmt, ap);
            va_end(ap);
        }
        if (problems != 0)
            printf("%sfitalloc_check_heap() reported %zu problem(s)", cond ? "" : "; ", problems);
        printf("\n");
    }
    fflush(stdout);
    return pass;
}

static inline void skip(const char *name, const char *reason)
{
    tap_count++;
    printf("ok %d - %s # SKIP %s\n", tap_count, name, reason);
    fflush(stdout);
}

static inline void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void diag(const char *fmt, ...)
{
    va_list ap;
    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* Prints the plan and a summary line; returns the process exit status. */
static inline int tap_done(const char *prog)
{
    printf("1..%d\n", tap_count);
    printf("# %s: %d passed, %d failed\n", prog, tap_count - tap_failures, tap_failures);
    fflush(stdout);
    return tap_failures == 0 ? 0 : 1;
}

/* The first error detail seen in a loop, kept for the check's message. */
struct first_err {
    int count;
    char msg[256];
};

__attribute__((format(printf, 2, 3)))
static inline void note_err(struct first_err *e, const char *fmt, ...)
{
    if (e->count++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
}

/* ---- the first error from any thread -----------------------------------
 * Worker threads (and forked children) report problems with thread_err();
 * the test then checks thread_err_count() and prints first_error. */

static atomic_int thread_errors;
static pthread_mutex_t thread_err_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_error[320];

/* Counts an error; the first one's message goes to first_error. */
__attribute__((format(printf, 1, 2)))
static inline void thread_err(const char *fmt, ...)
{
    if (atomic_fetch_add(&thread_errors, 1) == 0) {
        va_list ap;
        pthread_mutex_lock(&thread_err_lock);
        va_start(ap, fmt);
        vsnprintf(first_error, sizeof first_error, fmt, ap);
        va_end(ap);
        pthread_mutex_unlock(&thread_err_lock);
    }
}

static inline int thread_err_count(void)
{
    return atomic_load(&thread_errors);
}

/* For a forked child: another thread of the parent may have held the lock
 * at the fork. */
static inline void thread_err_after_fork(void)
{
    pthread_mutex_init(&thread_err_lock, NULL);
}

/* ---- time, child processes, raw output ------------------------------------ */

/* Seconds on the monotonic clock. */
static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Waits for child pid until now_s() passes deadline, looking every poll_ms
 * milliseconds. Returns 1 with *status set (-1 if waitpid failed), or 0 when
 * the deadline passed: the child is then killed (SIGKILL) and reaped. */
static inline int wait_child_until(pid_t pid, double deadline, long poll_ms, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        if (r < 0 && errno != EINTR) {
            *status = -1;
            return 1;
        }
        if (now_s() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            return 0;
        }
        sleep_ms(poll_ms);
    }
}

/* The same for at most timeout_s seconds from now, looking every millisecond. */
static inline int wait_child(pid_t pid, double timeout_s, int *status)
{
    return wait_child_until(pid, now_s() + timeout_s, 1, status);
}

/* Runs fn(arg) in a forked child whose stderr goes to a pipe, then exits
 * the child with status 0 if fn returns. Fills err (cap bytes, NUL-ended)
 * with what the child wrote on stderr and returns its wait status, or -1
 * if it could not be run or outlived timeout_s (then it is killed). */
static inline int run_child_stderr(void (*fn)(void *), void *arg, char *err, size_t cap, double timeout_s)
{
    int fds[2];
    err[0] = 0;
    if (pipe(fds) != 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    /* The pipe is read against the same deadline: a child that hangs
     * (a loop inside the allocator) keeps its end open forever. */
    double deadline = now_s() + timeout_s;
    size_t got = 0;
    for (;;) {
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int left_ms = (int)((deadline - now_s()) * 1000);
        if (left_ms <= 0)
            break;
        int n = poll(&pfd, 1, left_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        char sink_buf[256];
        char *to = got < cap - 1 ? err + got : sink_buf;
        size_t room = got < cap - 1 ? cap - 1 - got : sizeof sink_buf;
        ssize_t r = read(fds[0], to, room);
        if (r <= 0)
            break;
        if (to != sink_buf)
            got += (size_t)r;
    }
    err[got] = 0;
    close(fds[0]);
    int status = 0;
    if (!wait_child_until(pid, deadline, 1, &status))
        return -1;
    return status;
}

/* Whether a child's end is a clean misuse report: SIGABRT after exactly one
 * line starting with "fitalloc: ", which starts with `prefix` and contains
 * `needle` and `needle2` (each skipped when NULL). */
static inline int aborted_with_one_line(int status, const char *err, const char *prefix, const char *needle,
                                        const char *needle2)
{
    int lines = 0;
    for (const char *s = err; (s = strstr(s, "fitalloc: ")); s++)
        lines++;
    return status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && lines == 1 &&
           strncmp(err, prefix, strlen(prefix)) == 0 && (!needle || strstr(err, needle)) &&
           (!needle2 || strstr(err, needle2));
}

/* Writes the n bytes at s to fd with write(2) alone (no stdio, no memory
 * allocated: for children that report while the heap may be unusable),
 * retrying after EINTR; gives up silently on any other error. */
static inline void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* ---- PRNG (splitmix64 seeding an xorshift64*) ------------------------- */

static inline uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

struct rng {
    uint64_t s;
};

static inline void rng_seed(struct rng *r, uint64_t seed)
{
    r->s = mix64(seed) | 1;
}

static inline uint64_t rng_next(struct rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [lo, hi]. */
static inline size_t rng_range(struct rng *r, size_t lo, size_t hi)
{
    return lo + (size_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* ---- byte patterns ------------------------------------------------------
 * Byte i of a block with seed s is byte (i % 8) of pat_word(s, i / 8), so a
 * prefix of a block keeps its pattern after realloc, and a block copied to
 * the wrong offset or overwritten by a neighbour is detected. */

typedef uint64_t __attribute__((may_alias)) u64_alias;

static inline uint64_t pat_word(uint64_t seed, size_t k)
{
    uint64_t x = seed ^ ((uint64_t)k * 0xD6E8FEB86659FD93ull);
    x ^= x >> 32;
    x *= 0x9E3779B97F4A7C15ull;
    return x ^ (x >> 29);
}

/* Fills bytes [from, to) of block p with the pattern of seed. */
static inline void pat_fill_range(void *p, size_t from, size_t to, uint64_t seed)
{
    unsigned char *b = p;
    size_t i = from;
    while (i < to && (i % 8 != 0 || ((uintptr_t)(b + i) % 8) != 0)) {
        b[i] = (unsigned char)(pat_word(seed, i / 8) >> (8 * (i % 8)));
        i++;
    }
    for (; i + 8 <= to; i += 8)
        *(u64_alias *)(void *)(b + i) = pat_word(seed, i / 8);
    for (; i < to; i++)
        b[i] = (unsigned char)(pat_word(seed, i / 8) >> (8 * (i % 8)));
}

static inline void pat_fill(void *p, size_t n, uint64_t seed)
{
    pat_fill_range(p, 0, n, seed);
}

/* Returns the offset of the first wrong byte in [0, n), or SIZE_MAX. */
static inline size_t pat_check(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    size_t i = 0;
    while (i < n && ((uintptr_t)(b + i) % 8) != 0) {
        if (b[i] != (unsigned char)(pat_word(seed, i / 8) >> (8 * (i % 8))))
            return i;
        i++;
    }
    if (i % 8 == 0) {
        for (; i + 8 <= n; i += 8)
            if (*(const u64_alias *)(const void *)(b + i) != pat_word(seed, i / 8))
                break;
    }
    for (; i < n; i++)
        if (b[i] != (unsigned char)(pat_word(seed, i / 8) >> (8 * (i % 8))))
            return i;
    return SIZE_MAX;
}

/* Returns the offset of the first non-zero byte in [0, n), or SIZE_MAX. */
static inline size_t zero_check(const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i = 0;
    while (i < n && ((uintptr_t)(b + i) % 8) != 0) {
        if (b[i] != 0)
            return i;
        i++;
    }
    for (; i + 8 <= n; i += 8)
        if (*(const u64_alias *)(const void *)(b + i) != 0)
            break;
    for (; i < n; i++)
        if (b[i] != 0)
            return i;
    return SIZE_MAX;
}

#endif
