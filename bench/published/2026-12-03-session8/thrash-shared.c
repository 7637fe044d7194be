/*
 * thrash.c - false sharing between threads' small blocks.
 *
 * Part 1, the direct check: T fresh threads start together and each
 * allocates 1,000 blocks of 8..48 bytes at the same time as the others.
 * Then, for every block, does a 64-byte cache line it covers also hold
 * part of another thread's block?  shared_pct is the share of blocks for
 * which it does (0 is what issue 9 asks for: blocks allocated concurrently
 * by two threads must not share a line).
 *
 * Part 2, the cost (mimalloc-bench's cache-thrash): T fresh threads each,
 * 1,000 times, allocate one 8-byte block, write each of its bytes R times
 * (default 20,000), and free it.  If the threads' blocks share a line, the
 * line bounces between the cores on every write.  Reported: seconds for
 * part 2, and thrash_lines = the number of distinct lines that blocks of
 * two different threads used during part 2.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "mtutil.h"

#define MAX_THREADS 16
#define BURST 1000
#define ITERS 1000
#define LINE 64

/* One 64-byte line that a block covers, with the block and its thread. */
struct lineuse {
    uintptr_t line;
    unsigned thread, block;
};

static unsigned nthreads = 2;
static uint64_t reps = 20000;
static pthread_barrier_t barrier;
static void *burst[MAX_THREADS][BURST];
static size_t burst_size[MAX_THREADS][BURST];
static uintptr_t thrash_addr[MAX_THREADS][ITERS];

static _Atomic int done[MAX_THREADS]; static int other_done[MAX_THREADS][BURST];
static void *burst_thread(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    uint64_t rng = bench_mix64(t + 17) | 1;
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < BURST; i++) {
        size_t n = 8 + (size_t)bench_below(&rng, 41);
        other_done[t][i] = done[1-t];
        burst[t][i] = malloc(n);
        burst_size[t][i] = n;
        if (burst[t][i])
            memset(burst[t][i], (int)t, n);
    }
    done[t] = 1;
    return NULL;
}

static void *thrash_thread(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < ITERS; i++) {
        volatile char *p = malloc(8);
        if (!p) {
            fprintf(stderr, "thrash: malloc(8) returned NULL\n");
            exit(1);
        }
        thrash_addr[t][i] = (uintptr_t)p;
        for (uint64_t r = 0; r < reps; r++)
            for (int k = 0; k < 8; k++)
                p[k] = (char)(p[k] + 1);
        free((void *)p);
    }
    return NULL;
}

static int by_line(const void *a, const void *b)
{
    const struct lineuse *x = a, *y = b;
    return x->line < y->line ? -1 : x->line > y->line ? 1 : 0;
}

/* Sorts u[] by line; returns the number of lines used by blocks of more
 * than one thread, and marks those blocks in block_shared[] (if given). */
static size_t mixed_lines(struct lineuse *u, size_t n, bool *block_shared)
{
    size_t lines = 0;
    qsort(u, n, sizeof *u, by_line);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        bool mixed = false;
        while (j < n && u[j].line == u[i].line) {
            mixed |= u[j].thread != u[i].thread;
            j++;
        }
        lines += mixed;
        if (mixed && block_shared)
            for (size_t k = i; k < j; k++)
                { block_shared[u[k].block] = true; fprintf(stderr, "shared line %#lx thread %u block %u addr %p other thread done: %d\n", (unsigned long)u[k].line*64, u[k].thread, u[k].block, burst[u[k].block/BURST][u[k].block%BURST], other_done[u[k].block/BURST][u[k].block%BURST]); }
        i = j;
    }
    return lines;
}

static void run_threads(void *(*fn)(void *))
{
    pthread_t th[MAX_THREADS];
    pthread_barrier_init(&barrier, NULL, nthreads);
    for (unsigned t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, fn, (void *)(uintptr_t)t) != 0) {
            fprintf(stderr, "thrash: pthread_create failed\n");
            exit(1);
        }
    for (unsigned t = 0; t < nthreads; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&barrier);
}

int main(int argc, char **argv)
{
    const char *name_opt = NULL;
    bool csv = false, header = false;
    for (int i = 1; i < argc; i++) {
        if (bench_output_option(argc, argv, &i, &name_opt, &csv, &header))
            continue;
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-r") == 0 && next) {
            reps = bench_parse_num("thrash", argv[++i], "-r", 1, UINT64_C(1) << 40);
        } else if (a[0] != '-') {
            nthreads = (unsigned)bench_parse_num("thrash", a, "THREADS", 2, MAX_THREADS);
        } else {
            fprintf(stderr, "usage: thrash [-r REPS] [--name NAME] THREADS\n");
            return 2;
        }
    }

    /* Part 1. */
    run_threads(burst_thread);
    size_t cap = (size_t)nthreads * (BURST * 2 + ITERS);
    struct lineuse *u = calloc(cap, sizeof *u);
    bool *block_shared = calloc((size_t)nthreads * BURST, sizeof *block_shared);
    if (!u || !block_shared) {
        fprintf(stderr, "thrash: out of memory\n");
        return 1;
    }
    size_t n = 0;
    for (unsigned t = 0; t < nthreads; t++)
        for (unsigned i = 0; i < BURST; i++) {
            uintptr_t a = (uintptr_t)burst[t][i];
            if (!a)
                continue;
            for (uintptr_t l = a / LINE; l <= (a + burst_size[t][i] - 1) / LINE; l++)
                u[n++] = (struct lineuse){l, t, t * BURST + i};
        }
    mixed_lines(u, n, block_shared);
    size_t shared_blocks = 0;
    for (size_t b = 0; b < (size_t)nthreads * BURST; b++)
        shared_blocks += block_shared[b];
    for (unsigned t = 0; t < nthreads; t++)
        for (int i = 0; i < BURST; i++)
            free(burst[t][i]);

    /* Part 2. */
    struct mt_locks l0 = mt_locks_now();
    uint64_t t0 = bench_now_ns();
    run_threads(thrash_thread);
    uint64_t t1 = bench_now_ns();
    struct mt_locks l1 = mt_locks_now();
    n = 0;
    for (unsigned t = 0; t < nthreads; t++)
        for (unsigned i = 0; i < ITERS; i++) /* 8 bytes, 8-aligned: one line */
            u[n++] = (struct lineuse){thrash_addr[t][i] / LINE, t, 0};
    size_t thrash_lines = mixed_lines(u, n, NULL);

    char name[64];
    bench_report_name(name, sizeof name, name_opt);
    mt_report("thrash", name, nthreads, (uint64_t)nthreads * ITERS * 2, (double)(t1 - t0) / 1e9, l0, l1,
              " shared_pct=%.1f thrash_lines=%zu", 100.0 * (double)shared_blocks / ((double)nthreads * BURST),
              thrash_lines);
    free(u);
    free(block_shared);
    return 0;
}
