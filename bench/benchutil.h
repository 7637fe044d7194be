/*
 * benchutil.h - small helpers shared by replay.c, mt.c and micro.c.
 * Header-only (static functions) so that each tool stays one .c file.
 * The tool defines _GNU_SOURCE before its first #include (dladdr).
 */
#ifndef FITALLOC_BENCHUTIL_H
#define FITALLOC_BENCHUTIL_H

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64: turns a small seed (0, 1, 2...) into a well-mixed state. */
static inline uint64_t bench_mix64(uint64_t z)
{
    z += UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* xorshift64*: a few cycles per number, so the generator costs little
 * next to the malloc/free being measured.  The state must not be 0. */
static inline uint64_t bench_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(0x2545F4914F6CDD1D);
}

/* Uniform in [0, n) by multiply-high (no division, negligible bias). */
static inline uint64_t bench_below(uint64_t *s, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)bench_rand(s) * n) >> 64);
}

/* Name of the library that provides malloc in this process: "glibc",
 * "jemalloc", "mimalloc", "tcmalloc_minimal", "fitalloc"... */
static inline void bench_allocator_name(char *out, size_t n)
{
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, "malloc");
    const char *file = NULL;
    if (sym && dladdr(sym, &info) && info.dli_fname)
        file = info.dli_fname;
    if (!file || !*file) {
        snprintf(out, n, "unknown");
        return;
    }
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (strncmp(base, "lib", 3) == 0)
        base += 3;
    size_t len = strcspn(base, ".");
    if (len == 1 && base[0] == 'c')
        snprintf(out, n, "glibc");
    else
        snprintf(out, n, "%.*s", (int)len, base);
}

/* Name to report: the one given with --name, else the detected one.
 * (replay.c detects it in every case: see there.) */
static inline void bench_report_name(char *out, size_t n, const char *given)
{
    if (given)
        snprintf(out, n, "%s", given);
    else
        bench_allocator_name(out, n);
}

/* A decimal number in [lo, hi] for option `what`, or exit 2 with
 * "PROG: WHAT: expected a number from LO to HI, got 'S'". */
static inline uint64_t bench_parse_num(const char *prog, const char *s,
                                       const char *what, uint64_t lo,
                                       uint64_t hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || errno || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s: expected a number from %" PRIu64
                " to %" PRIu64 ", got '%s'\n", prog, what, lo, hi, s);
        exit(2);
    }
    return v;
}

/* The output options every tool takes: --name NAME, --csv, --header.
 * Returns true when argv[*i] is one of them (--name also takes
 * argv[*i + 1] and advances *i); false otherwise, also for a --name
 * without a value. */
static inline bool bench_output_option(int argc, char **argv, int *i,
                                       const char **name, bool *csv,
                                       bool *header)
{
    const char *a = argv[*i];
    if (strcmp(a, "--name") == 0 && *i + 1 < argc) {
        *name = argv[++*i];
        return true;
    }
    if (strcmp(a, "--csv") == 0) {
        *csv = true;
        return true;
    }
    if (strcmp(a, "--header") == 0) {
        *header = true;
        return true;
    }
    return false;
}

#endif
