/*
 * benchutil.h - small helpers shared by replay.c, mt.c and micro.c.
 * Header-only (static functions) so that each tool stays one .c file.
 */
#ifndef FITALLOC_BENCHUTIL_H
#define FITALLOC_BENCHUTIL_H

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
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

#endif
