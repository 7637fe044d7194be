/* test_contention.c - lock contention is counted, and only contention
 * (issue 9: "contention visible").
 *
 * Forced contention: the main thread holds the heap lock for a while by
 * sleeping inside a fitalloc_heap_walk callback (the walk runs with the
 * heap locked); meanwhile a second thread asks for a block too large for
 * its thread cache, which needs the heap lock. That thread must find the
 * lock held (heap_lock_waits + 1), spin, and sleep on the futex
 * (heap_lock_sleeps + 1). The figures must also appear in the
 * FITALLOC_STATS report text. Then, with no other thread alive, 100,000
 * heap acquisitions must count no wait at all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fitalloc.h"
#include "common.h"

/* Larger than the thread cache's largest block: served under the heap lock. */
#define HEAP_REQUEST 4096
#define HOLD_AFTER_MS 300

static atomic_int waiter_ready, waiter_trying, waiter_done;

static void *waiter(void *arg)
{
    (void)arg;
    /* The thread cache exists before the lock is held (creating it takes
     * the registry lock, which the walk holds too). */
    free(malloc(hide_size(32)));
    atomic_store(&waiter_ready, 1);
    while (atomic_load(&waiter_trying) == 0)
        ;
    void *p = malloc(hide_size(HEAP_REQUEST));
    free(p);
    atomic_store(&waiter_done, 1);
    return p ? (void *)1 : NULL;
}

/* Runs with the heap locked; must not allocate. The first call lets the
 * waiter go and keeps the lock long enough for it to spin and sleep. */
static void hold_heap(void *ctx, size_t addr, uint64_t size, uint32_t kind)
{
    (void)addr, (void)size, (void)kind;
    int *calls = ctx;
    if ((*calls)++ != 0)
        return;
    atomic_store(&waiter_trying, 1);
    sleep_ms(HOLD_AFTER_MS);
}

/* The number after "heap " in the report's lock line, or -1. */
static long report_heap_waits(char *text, size_t cap)
{
    char path[] = "/tmp/fitalloc-contention-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fitalloc_print_stats();
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, text, cap - 1, 0);
    close(fd);
    text[n > 0 ? n : 0] = 0;
    const char *line = strstr(text, "lock waits (futex sleeps): heap ");
    if (!line)
        return -1;
    return strtol(line + strlen("lock waits (futex sleeps): heap "), NULL, 10);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    free(malloc(hide_size(32)));
    struct fitalloc_stats s0 = stats();
    check(s0.version >= 3 && s0.size >= offsetof(struct fitalloc_stats, other_lock_sleeps) + 8,
          "fitalloc_stats has the lock counters (version 3)", "version %llu size %llu",
          (unsigned long long)s0.version, (unsigned long long)s0.size);

    /* A caller built against an older, smaller struct: only its bytes are
     * written (here the first two fields), and `size` tells the whole. */
    unsigned char buf[sizeof(struct fitalloc_stats) + 64];
    memset(buf, 0xEE, sizeof buf);
    fitalloc_stats_sized((struct fitalloc_stats *)buf, 16);
    uint64_t got_size, got_version;
    memcpy(&got_size, buf, 8);
    memcpy(&got_version, buf + 8, 8);
    int untouched = 1;
    for (size_t i = 16; i < sizeof buf; i++)
        untouched &= buf[i] == 0xEE;
    check(got_size == sizeof(struct fitalloc_stats) && got_version == s0.version && untouched,
          "fitalloc_stats_sized writes only the bytes the caller has", "size %llu version %llu, rest untouched %d",
          (unsigned long long)got_size, (unsigned long long)got_version, untouched);

    pthread_t th;
    if (pthread_create(&th, NULL, waiter, NULL) != 0) {
        check(0, "pthread_create", "failed");
        return tap_done("test_contention");
    }
    while (atomic_load(&waiter_ready) == 0)
        sleep_ms(1);
    int calls = 0;
    fitalloc_heap_walk(hold_heap, &calls);
    void *ok;
    pthread_join(th, &ok);
    check(ok != NULL && atomic_load(&waiter_done), "the waiter got its block once the lock was free", " ");

    struct fitalloc_stats s1 = stats();
    unsigned long long waits = s1.heap_lock_waits - s0.heap_lock_waits;
    unsigned long long sleeps = s1.heap_lock_sleeps - s0.heap_lock_sleeps;
    diag("forced contention: heap lock waits %llu, futex sleeps %llu (held %d ms)", waits, sleeps,
         HOLD_AFTER_MS);
    check(waits >= 1, "a malloc that found the heap lock held is counted in heap_lock_waits", "waits %llu",
          waits);
    check(sleeps >= 1, "a waiter that slept on the futex is counted in heap_lock_sleeps", "sleeps %llu",
          sleeps);

    static char text[4096];
    long reported = report_heap_waits(text, sizeof text);
    check(reported >= (long)s1.heap_lock_waits && reported >= 1,
          "the FITALLOC_STATS report has the lock line with the heap's waits",
          "reported %ld, stats %llu; report:\n%s", reported, (unsigned long long)s1.heap_lock_waits, text);

    /* Alone again: the heap lock is taken (the process is no longer
     * single-threaded, so locks are real) but never found held. */
    struct fitalloc_stats s2 = stats();
    for (int i = 0; i < 100000; i++)
        free(malloc(hide_size(HEAP_REQUEST)));
    struct fitalloc_stats s3 = stats();
    check(s3.heap_lock_waits == s2.heap_lock_waits && s3.heap_lock_sleeps == s2.heap_lock_sleeps,
          "uncontended acquisitions count no wait", "waits %llu -> %llu, sleeps %llu -> %llu",
          (unsigned long long)s2.heap_lock_waits, (unsigned long long)s3.heap_lock_waits,
          (unsigned long long)s2.heap_lock_sleeps, (unsigned long long)s3.heap_lock_sleeps);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at the end", " ");
    return tap_done("test_contention");
}
