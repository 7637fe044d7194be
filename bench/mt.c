/*
 * mt.c - multi-threaded malloc/free throughput.
 *
 * T threads each keep a working set of W slots.  Each step picks a random
 * slot; if it holds a block, the block is freed - or, with probability X%,
 * handed to another thread, which frees it: this is the producer/consumer
 * pattern that makes allocators free memory owned by another thread's
 * cache or arena.  Then a new block of 16..1024 bytes (1 in 64: up to
 * 64 KiB) is allocated into the slot and touched (first and last byte).
 *
 * Handoff: one lock-free multi-producer stack per thread, linked through
 * the blocks themselves; the owner takes the whole stack with one atomic
 * exchange every 32 steps, so there is no ABA problem and no extra memory.
 *
 * Counted: every malloc and every free, by whichever thread calls it.
 * Reported: ops/s and ns/op = wall time / total ops (all threads), taken
 * from the moment all threads start to the moment the last one finishes
 * its steps (set-up and final clean-up are outside), the peak RSS and,
 * under fitalloc, its lock waits and futex sleeps in that time (the CSV
 * line's last three fields).  Seeds are fixed:
 * the same arguments give the same sequence of requests in every thread.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "mtutil.h"

#define MAX_THREADS 256
#define DRAIN_EVERY 32

struct thread {
    /* Written by other threads: on its own cache line. */
    _Alignas(128) _Atomic(void *) inbox;
    _Alignas(128) pthread_t th;
    unsigned idx;
    uint64_t rng;
    void **slots;
    uint64_t ops;       /* malloc + free calls made by this thread */
    uint64_t timed_ops; /* ... of them, before the clock stopped */
    uint64_t handed;
    uint64_t failures;
};

static struct thread *threads;
static unsigned nthreads;
static uint64_t steps_per_thread, working_set, handoff_pct, seed;
static pthread_barrier_t start_barrier, end_barrier;

static void push_inbox(struct thread *to, void *block)
{
    void *old = atomic_load_explicit(&to->inbox, memory_order_relaxed);
    do
        *(void **)block = old; /* every block is at least 16 bytes */
    while (!atomic_compare_exchange_weak_explicit(
        &to->inbox, &old, block, memory_order_release, memory_order_relaxed));
}

static void drain_inbox(struct thread *me)
{
    void *b = atomic_exchange_explicit(&me->inbox, NULL, memory_order_acquire);
    while (b) {
        void *next = *(void **)b;
        free(b);
        me->ops++;
        b = next;
    }
}

static size_t random_size(uint64_t *rng)
{
    if (bench_below(rng, 64) == 0)
        return 1025 + (size_t)bench_below(rng, 65536 - 1024);
    return 16 + (size_t)bench_below(rng, 1024 - 16 + 1);
}

static void *worker(void *arg)
{
    struct thread *me = arg;
    uint64_t *rng = &me->rng;

    /* Fill the working set before the clock starts. */
    for (uint64_t i = 0; i < working_set; i++) {
        size_t n = random_size(rng);
        unsigned char *p = malloc(n);
        if (p) {
            p[0] = (unsigned char)i;
            p[n - 1] = (unsigned char)i;
        }
        me->slots[i] = p;
    }
    pthread_barrier_wait(&start_barrier);

    for (uint64_t step = 0; step < steps_per_thread; step++) {
        uint64_t i = bench_below(rng, working_set);
        void *old = me->slots[i];
        if (old) {
            if (nthreads > 1 && bench_below(rng, 100) < handoff_pct) {
                /* Any thread but me. */
                unsigned to = (me->idx + 1 +
                               (unsigned)bench_below(rng, nthreads - 1)) %
                              nthreads;
                push_inbox(&threads[to], old);
                me->handed++;
            } else {
                free(old);
                me->ops++;
            }
        }
        size_t n = random_size(rng);
        unsigned char *p = malloc(n);
        me->ops++;
        if (p) {
            p[0] = (unsigned char)step;
            p[n - 1] = (unsigned char)step;
        } else {
            me->failures++;
        }
        me->slots[i] = p;
        if (step % DRAIN_EVERY == 0)
            drain_inbox(me);
    }
    drain_inbox(me);
    me->timed_ops = me->ops;
    pthread_barrier_wait(&end_barrier);

    /* Clean-up, not timed: wait until nobody pushes any more. */
    pthread_barrier_wait(&end_barrier);
    drain_inbox(me);
    for (uint64_t i = 0; i < working_set; i++)
        free(me->slots[i]);
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: mt [options] [THREADS]\n"
"  -t T     threads (default 1; also the positional argument)\n"
"  -n N     malloc steps per thread (default 2000000)\n"
"  -w W     live blocks per thread (default 4096)\n"
"  -x P     percent of frees handed to another thread (default 10)\n"
"  -s S     seed (default 1)\n"
"  --name NAME  allocator name to report\n"
"  --csv    one CSV line;  --header  print the header line first\n");
}

int main(int argc, char **argv)
{
    bool csv = false, header = false;
    const char *name_opt = NULL;
    nthreads = 1;
    steps_per_thread = 2000000;
    working_set = 4096;
    handoff_pct = 10;
    seed = 1;
    for (int i = 1; i < argc; i++) {
        if (bench_output_option(argc, argv, &i, &name_opt, &csv, &header))
            continue;
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-t") == 0 && next) {
            nthreads = (unsigned)bench_parse_num("mt", argv[++i], "-t", 1,
                                                 MAX_THREADS);
        } else if (strcmp(a, "-n") == 0 && next) {
            steps_per_thread = bench_parse_num("mt", argv[++i], "-n", 1,
                                               UINT64_C(1) << 40);
        } else if (strcmp(a, "-w") == 0 && next) {
            working_set = bench_parse_num("mt", argv[++i], "-w", 1,
                                          UINT64_C(1) << 28);
        } else if (strcmp(a, "-x") == 0 && next) {
            handoff_pct = bench_parse_num("mt", argv[++i], "-x", 0, 100);
        } else if (strcmp(a, "-s") == 0 && next) {
            seed = bench_parse_num("mt", argv[++i], "-s", 0, UINT64_MAX);
        } else if (a[0] != '-') {
            nthreads = (unsigned)bench_parse_num("mt", a, "THREADS", 1,
                                                 MAX_THREADS);
        } else {
            fprintf(stderr, "mt: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }

    threads = aligned_alloc(128, sizeof(struct thread) * nthreads);
    if (!threads) {
        fprintf(stderr, "mt: out of memory\n");
        return 1;
    }
    memset(threads, 0, sizeof(struct thread) * nthreads);
    pthread_barrier_init(&start_barrier, NULL, nthreads + 1);
    pthread_barrier_init(&end_barrier, NULL, nthreads + 1);
    for (unsigned t = 0; t < nthreads; t++) {
        struct thread *th = &threads[t];
        th->idx = t;
        th->rng = bench_mix64(seed * 1000003 + t) | 1;
        th->slots = calloc(working_set, sizeof(void *));
        if (!th->slots) {
            fprintf(stderr, "mt: out of memory\n");
            return 1;
        }
        atomic_init(&th->inbox, NULL);
        int err = pthread_create(&th->th, NULL, worker, th);
        if (err) {
            fprintf(stderr, "mt: pthread_create: %s\n", strerror(err));
            return 1;
        }
    }
    pthread_barrier_wait(&start_barrier);
    struct mt_locks l0 = mt_locks_now();
    uint64_t t0 = bench_now_ns();
    pthread_barrier_wait(&end_barrier); /* all threads done with steps */
    uint64_t t1 = bench_now_ns();
    struct mt_locks l1 = mt_locks_now();
    pthread_barrier_wait(&end_barrier); /* let them clean up */
    uint64_t ops = 0, handed = 0, failures = 0;
    for (unsigned t = 0; t < nthreads; t++) {
        pthread_join(threads[t].th, NULL);
        ops += threads[t].timed_ops;
        handed += threads[t].handed;
        failures += threads[t].failures;
        free(threads[t].slots);
    }
    free(threads);

    char name[64];
    bench_report_name(name, sizeof name, name_opt);
    double secs = (double)(t1 - t0) / 1e9;
    double ns_op = (double)(t1 - t0) / (double)ops;
    if (failures)
        fprintf(stderr, "mt: %" PRIu64 " allocations returned NULL\n",
                failures);
    if (csv) {
        if (header)
            puts("bench,allocator,threads,ops,seconds,ops_per_sec,ns_op,"
                 "handed_off,peak_rss_kb,lock_waits,lock_sleeps");
        printf("mt-%u,%s,%u,%" PRIu64 ",%.4f,%.0f,%.2f,%" PRIu64 ",%" PRIu64,
               nthreads, name, nthreads, ops, secs, (double)ops / secs, ns_op,
               handed, mt_peak_rss_kb());
        if (l0.present && l1.present)
            printf(",%" PRIu64 ",%" PRIu64 "\n", l1.waits - l0.waits,
                   l1.sleeps - l0.sleeps);
        else
            printf(",,\n");
    } else {
        printf("mt: %s, %u thread%s, %" PRIu64 " ops (%" PRIu64 " frees "
               "handed to another thread) in %.3f s: %.2f Mops/s, %.2f ns/op\n",
               name, nthreads, nthreads == 1 ? "" : "s", ops, handed, secs,
               (double)ops / secs / 1e6, ns_op);
        if (l0.present && l1.present)
            printf("mt: fitalloc lock waits %" PRIu64 " (%.3f per 1000 ops), "
                   "futex sleeps %" PRIu64 "\n", l1.waits - l0.waits,
                   1000.0 * (double)(l1.waits - l0.waits) / (double)ops,
                   l1.sleeps - l0.sleeps);
    }
    return failures ? 1 : 0;
}
