/*
 * mtutil.h - what the multi-threaded pattern tools (larson.c, prodcons.c,
 * churn.c, thrash.c) and mt.c share beyond benchutil.h: RSS readings that
 * do not allocate, fitalloc's lock counters when fitalloc is the malloc in
 * this process, and the one output line they print.
 *
 * Output: one line of `key=value` pairs, read by bench/mt_patterns.py and
 * readable as it is.  Keys every tool prints: pattern, allocator, threads,
 * ops, seconds, peak_rss_kb; with fitalloc also lock_waits and
 * lock_sleeps (over the timed part only).
 */
#ifndef FITALLOC_MTUTIL_H
#define FITALLOC_MTUTIL_H

#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The struct's layout, so that the offsets follow the library's header. */
#include "../include/fitalloc.h"

/* Resident set size now, in KiB, from /proc/self/statm (exact, unlike
 * VmHWM; and read with a stack buffer: no malloc). */
static inline uint64_t mt_rss_kb(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    unsigned long long size = 0, res = 0;
    if (sscanf(buf, "%llu %llu", &size, &res) != 2)
        return 0;
    return res * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
}

/* Peak resident set size of this program, in KiB: VmHWM from
 * /proc/self/status (the kernel's high-water mark, within a few hundred
 * KiB).  Not getrusage's ru_maxrss: that one keeps the peak of the process
 * before exec, here the Python driver's. */
static inline uint64_t mt_peak_rss_kb(void)
{
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    const char *hwm = strstr(buf, "VmHWM:");
    unsigned long long kb = 0;
    if (!hwm || sscanf(hwm + 6, "%llu", &kb) != 1)
        return 0;
    return kb;
}

/* fitalloc's lock counters, all locks added up. */
struct mt_locks {
    bool present;
    uint64_t waits, sleeps;
};

/* Reads them through fitalloc_stats, looked up at run time: present is
 * false under another allocator, or a fitalloc without the counters
 * (stats version < 3).  Call from one thread at a time. */
static inline struct mt_locks mt_locks_now(void)
{
    /* The library writes its own idea of the struct: room for a larger one. */
    static uint64_t buf[1024];
    struct mt_locks r = {false, 0, 0};
    void *sym = dlsym(RTLD_DEFAULT, "fitalloc_stats");
    if (!sym)
        return r;
    void (*fn)(void *) = (void (*)(void *))(uintptr_t)sym;
    memset(buf, 0, sizeof buf);
    fn(buf);
    const struct fitalloc_stats *s = (const struct fitalloc_stats *)buf;
    if (s->version < 3 || s->size < offsetof(struct fitalloc_stats, other_lock_sleeps) + sizeof(uint64_t))
        return r;
    r.present = true;
    r.waits = s->heap_lock_waits + s->large_lock_waits + s->registry_lock_waits + s->other_lock_waits;
    r.sleeps = s->heap_lock_sleeps + s->large_lock_sleeps + s->registry_lock_sleeps + s->other_lock_sleeps;
    return r;
}

/* The output line: the common keys, then the tool's own `extra`
 * (" key=value..." or ""), then the lock counters accumulated between
 * `before` and `after` if fitalloc is there. */
static inline void mt_report(const char *pattern, const char *alloc, unsigned threads, uint64_t ops, double secs,
                             struct mt_locks before, struct mt_locks after, const char *fmt, ...)
{
    char extra[512] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(extra, sizeof extra, fmt, ap);
    va_end(ap);
    printf("pattern=%s allocator=%s threads=%u ops=%llu seconds=%.6f mops=%.3f peak_rss_kb=%llu%s", pattern, alloc,
           threads, (unsigned long long)ops, secs, secs > 0 ? (double)ops / secs / 1e6 : 0.0,
           (unsigned long long)mt_peak_rss_kb(), extra);
    if (before.present && after.present)
        printf(" lock_waits=%llu lock_sleeps=%llu", (unsigned long long)(after.waits - before.waits),
               (unsigned long long)(after.sleeps - before.sleeps));
    printf("\n");
}

#endif
