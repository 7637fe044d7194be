/* test_threads.c - threads allocating and freeing each other's blocks.
 *
 * 8 threads share 512 slots; each operation puts a new block into a random
 * slot with an atomic exchange (and frees whatever it displaced), or takes a
 * block out, checks it, reallocs it and puts it back, or frees it. So most
 * blocks are freed or resized by a thread other than the one that allocated
 * them, and by the other API (malloc vs fitalloc_malloc). Every block carries
 * a byte pattern checked before it is touched. Threads are created and joined
 * in rounds; after each round fitalloc_check_heap() must return 0. At the end,
 * if the library exports fitalloc_stats (looked up with dlsym, so this test
 * also runs against glibc), in_use_blocks must be back near its start value
 * and no thread cache may be left alive.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define NTHREADS 8
#define ROUNDS 4
#define OPS_PER_THREAD 15000
#define NSLOTS 512
#define NPRIVATE 64
#define DESC_MAGIC 0xB10CB10Cu

struct desc {
    uint32_t magic;
    uint32_t owner;
    size_t size;
    uint64_t seed;
    unsigned char *blk;
};

static _Atomic(struct desc *) slots[NSLOTS];
static atomic_ulong seed_counter = 1;
static size_t thread_size(struct rng *r)
{
    uint64_t k = rng_next(r) % 100;
    if (k < 60)
        return rng_range(r, 1, 128);
    if (k < 85)
        return rng_range(r, 129, 4096);
    if (k < 98)
        return rng_range(r, 4097, 65536);
    return rng_range(r, 65537, 256 * 1024);
}

static void any_free(struct rng *r, void *p)
{
    if (rng_next(r) & 1)
        free(p);
    else
        fitalloc_free(p);
}

static struct desc *new_block(struct rng *r, uint32_t owner)
{
    struct desc *d = (rng_next(r) & 1) ? malloc(sizeof *d) : fitalloc_malloc(sizeof *d);
    if (d == NULL) {
        thread_err("descriptor allocation failed");
        return NULL;
    }
    size_t n = thread_size(r);
    unsigned char *b;
    size_t align = 16;
    switch (rng_next(r) % 6) {
    case 0: b = malloc(hide_size(n)); break;
    case 1: b = fitalloc_malloc(hide_size(n)); break;
    case 2:
        b = fitalloc_calloc(1, hide_size(n));
        if (b && zero_check(b, n) != SIZE_MAX)
            thread_err("calloc(1, %zu) not zeroed at %zu", n, zero_check(b, n));
        break;
    case 3:
        align = (size_t)1 << rng_range(r, 4, 12);
        b = (rng_next(r) & 1) ? memalign(hide_size(align), hide_size(n))
                              : fitalloc_memalign(hide_size(align), hide_size(n));
        break;
    case 4: b = realloc(NULL, hide_size(n)); break;
    default: b = fitalloc_realloc(NULL, hide_size(n)); break;
    }
    if (b == NULL) {
        thread_err("allocation of %zu bytes failed", n);
        any_free(r, d);
        return NULL;
    }
    if (((uintptr_t)b & (align - 1)) != 0)
        thread_err("block %p of %zu bytes not aligned to %zu", (void *)b, n, align);
    if (malloc_usable_size(b) < n)
        thread_err("usable size %zu < %zu", malloc_usable_size(b), n);
    d->magic = DESC_MAGIC;
    d->owner = owner;
    d->size = n;
    d->seed = atomic_fetch_add(&seed_counter, 1);
    d->blk = b;
    pat_fill(b, n, d->seed);
    return d;
}

static int verify(struct desc *d, const char *when)
{
    if (d->magic != DESC_MAGIC) {
        thread_err("descriptor %p damaged (%s)", (void *)d, when);
        return 0;
    }
    size_t bad = pat_check(d->blk, d->size, d->seed);
    if (bad != SIZE_MAX) {
        thread_err("block %p (%zu bytes, from thread %u) byte %zu changed (%s)", (void *)d->blk, d->size, d->owner,
                   bad, when);
        return 0;
    }
    return 1;
}

static void release(struct rng *r, struct desc *d, const char *when)
{
    if (d == NULL)
        return;
    verify(d, when);
    d->magic = 0;
    any_free(r, d->blk);
    any_free(r, d);
}

struct targ {
    uint32_t id;
    uint64_t seed;
};

static void *worker(void *arg)
{
    struct targ *t = arg;
    struct rng r;
    rng_seed(&r, t->seed);
    struct desc *priv[NPRIVATE] = {0};

    for (int op = 0; op < OPS_PER_THREAD; op++) {
        uint64_t k = rng_next(&r) % 100;
        size_t s = (size_t)(rng_next(&r) % NSLOTS);
        if (k < 45) {
            struct desc *d = new_block(&r, t->id);
            if (d == NULL)
                continue;
            release(&r, atomic_exchange(&slots[s], d), "displaced from a slot");
        } else if (k < 60) {
            struct desc *d = atomic_exchange(&slots[s], NULL);
            if (d == NULL || !verify(d, "before realloc"))
                continue;
            size_t n = thread_size(&r);
            unsigned char *b = (rng_next(&r) & 1) ? realloc(d->blk, hide_size(n)) : fitalloc_realloc(d->blk, hide_size(n));
            if (b == NULL) {
                thread_err("realloc(%zu -> %zu) failed", d->size, n);
            } else {
                size_t keep = d->size < n ? d->size : n;
                if (pat_check(b, keep, d->seed) != SIZE_MAX)
                    thread_err("realloc(%zu -> %zu) lost data at %zu", d->size, n, pat_check(b, keep, d->seed));
                if (n > d->size)
                    pat_fill_range(b, d->size, n, d->seed);
                d->blk = b;
                d->size = n;
            }
            release(&r, atomic_exchange(&slots[s], d), "displaced after realloc");
        } else if (k < 85) {
            size_t i = (size_t)(rng_next(&r) % NPRIVATE);
            if (priv[i]) {
                release(&r, priv[i], "private");
                priv[i] = NULL;
            } else {
                priv[i] = new_block(&r, t->id);
            }
        } else {
            release(&r, atomic_exchange(&slots[s], NULL), "taken from a slot");
        }
    }
    for (int i = 0; i < NPRIVATE; i++)
        release(&r, priv[i], "private at thread end");
    return NULL;
}

/* Mirror of the start of struct fitalloc_stats (notes-api.md), read through
 * dlsym so this test does not depend on the library exporting it. */
struct stats_mirror {
    uint64_t size, version, heap_bytes, peak_heap_bytes, mapped_bytes, peak_mapped_bytes, mapped_blocks;
    uint64_t system_bytes, peak_system_bytes, in_use_bytes, peak_in_use_bytes, in_use_blocks;
    uint64_t cached_bytes, cached_blocks, free_bytes, free_blocks, largest_free_block, requested_bytes;
    uint64_t malloc_calls, free_calls, calloc_calls, realloc_calls, memalign_calls;
    uint64_t sbrk_calls, mmap_calls, munmap_calls, mremap_calls, madvise_calls;
    uint64_t trimmed_bytes, threads;
    uint64_t spare[64]; /* room for a newer, larger struct */
};
typedef void (*stats_fn)(struct stats_mirror *);

static const char *nm_round(int round)
{
    static char name[160];
    snprintf(name, sizeof name, "round %d: %d threads x %d operations on shared slots, patterns intact", round + 1,
             NTHREADS, OPS_PER_THREAD);
    return name;
}

/* The heap checker beside a thread whose cache takes and gives back heap
 * blocks (300 to 1,000 bytes: each take and give turns the block's header
 * between its used and cached forms, without a lock): a correct program,
 * so every check must find nothing (a checker that read a header twice
 * reported "used header with a bad tag" within seconds: found by a
 * hostile review). */
static atomic_int churn_stop;
static void *churn_heap_sizes(void *arg)
{
    (void)arg;
    static const size_t sizes[4] = {300, 500, 700, 1000};
    void *keep[4];
    while (!atomic_load(&churn_stop)) {
        for (int i = 0; i < 4; i++)
            keep[i] = malloc(hide_size(sizes[i]));
        for (int i = 0; i < 4; i++) {
            memset(keep[i], 0x5a, 16);
            free(keep[i]);
        }
    }
    return NULL;
}
static void checker_beside_a_churning_cache(void)
{
    pthread_t t;
    pthread_create(&t, NULL, churn_heap_sizes, NULL);
    size_t found = 0;
    long checks = 0;
    for (; checks < 200000 && found == 0; checks++)
        found = heap_problems();
    atomic_store(&churn_stop, 1);
    pthread_join(t, NULL);
    check(found == 0, "the heap checker beside a thread whose cache takes and gives back heap blocks finds nothing",
          "%zu problems at check %ld", found, checks);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    diag("test_threads: %d threads x %d rounds x %d operations, %d shared slots", NTHREADS, ROUNDS,
         OPS_PER_THREAD, NSLOTS);

    union { void *obj; stats_fn fn; } st;
    st.obj = dlsym(RTLD_DEFAULT, "fitalloc_stats");
    struct stats_mirror s0 = {0}, s1 = {0};
    /* make sure the main thread's own cache (if any) exists before the start value */
    free(malloc(hide_size(100)));
    fitalloc_free(fitalloc_malloc(hide_size(100)));
    if (st.obj)
        st.fn(&s0);

    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at start", " ");
    /* First, while the heap is small (each check walks it all). */
    checker_beside_a_churning_cache();
    for (int round = 0; round < ROUNDS; round++) {
        pthread_t th[NTHREADS];
        struct targ args[NTHREADS];
        int created = 0;
        for (int i = 0; i < NTHREADS; i++) {
            args[i].id = (uint32_t)(round * NTHREADS + i);
            args[i].seed = 1000003u * (uint64_t)(round + 1) + (uint64_t)i;
            if (pthread_create(&th[i], NULL, worker, &args[i]) != 0)
                break;
            created++;
        }
        for (int i = 0; i < created; i++)
            pthread_join(th[i], NULL);
        int errs = thread_err_count();
        check(created == NTHREADS && errs == 0,
              nm_round(round), "created %d threads, %d errors, first: %s", created, errs, first_error);
    }

    struct rng r;
    rng_seed(&r, 99);
    int left = 0;
    for (int s = 0; s < NSLOTS; s++) {
        struct desc *d = atomic_exchange(&slots[s], NULL);
        if (d) {
            left++;
            release(&r, d, "drained at the end");
        }
    }
    check(thread_err_count() == 0, "blocks left in slots by exited threads are intact and freed by main",
          "%d blocks, %d errors, first: %s", left, thread_err_count(), first_error);

    if (st.obj == NULL) {
        skip("in_use_blocks back near the start value after all threads exited", "fitalloc_stats not exported");
        skip("no thread cache left alive after all threads exited", "fitalloc_stats not exported");
    } else {
        st.fn(&s1);
        check(s1.size >= offsetof(struct stats_mirror, spare) && s1.version >= 1,
              "fitalloc_stats fills size and version", "size %llu version %llu", (unsigned long long)s1.size,
              (unsigned long long)s1.version);
        check(s1.in_use_blocks <= s0.in_use_blocks + 64,
              "in_use_blocks back near the start value after all threads exited (slack 64)",
              "start %llu, end %llu", (unsigned long long)s0.in_use_blocks, (unsigned long long)s1.in_use_blocks);
        check(s1.threads <= s0.threads, "no thread cache left alive after all threads exited",
              "threads: start %llu, end %llu", (unsigned long long)s0.threads, (unsigned long long)s1.threads);
    }
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at the end", " ");
    return tap_done("test_threads");
}
