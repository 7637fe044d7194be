/*
 * prodcons.c - producer/consumer: one thread allocates blocks (8..1024
 * bytes; 1 in 64 up to 16 KiB), writes their first and last bytes and
 * passes them through a bounded single-producer single-consumer ring to
 * a second thread, which checks and frees them.  Every block is freed by
 * a thread that did not allocate it, so the memory must flow back from
 * the consumer to the producer; if it does not, RSS grows with the number
 * of blocks passed rather than with the ring's contents.
 *
 * blowup = (peak RSS - RSS before the first block) / peak live bytes,
 * where live bytes are the requested bytes allocated and not yet freed
 * (the producer's count minus the consumer's, which the consumer publishes
 * every 64 frees: an overestimate by at most 64 blocks).  The target of
 * issue 9 is at most 1.2.  Also reported: ops (mallocs + frees) and time.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "benchutil.h"
#include "mtutil.h"

#define PUBLISH_EVERY 64

static uint64_t nblocks = 2000000, ring_cap = 16384;

/* The ring: its own mapping, so that it is no part of the allocator's RSS. */
static struct {
    _Alignas(128) _Atomic uint64_t head; /* written by the producer */
    _Alignas(128) _Atomic uint64_t tail; /* written by the consumer */
    _Alignas(128) _Atomic uint64_t consumed_bytes;
    _Alignas(128) void **slot;
    size_t *size;
} ring;

static uint64_t peak_live, bad_blocks;

static size_t random_size(uint64_t *rng)
{
    if (bench_below(rng, 64) == 0)
        return 1025 + (size_t)bench_below(rng, 16384 - 1024);
    return 8 + (size_t)bench_below(rng, 1024 - 8 + 1);
}

/* Waiting for the other side: spin a little, then let it run (on a loaded
 * 2-core machine both threads may share one core). */
static void pause_a_little(unsigned *spins)
{
    if (++*spins < 64)
        __builtin_ia32_pause();
    else
        sched_yield();
}

static void *producer(void *arg)
{
    (void)arg;
    uint64_t rng = bench_mix64(7) | 1, produced = 0;
    for (uint64_t i = 0; i < nblocks; i++) {
        size_t n = random_size(&rng);
        unsigned char *p = malloc(n);
        if (!p) {
            fprintf(stderr, "prodcons: malloc(%zu) returned NULL\n", n);
            exit(1);
        }
        p[0] = p[n - 1] = (unsigned char)i;
        unsigned spins = 0;
        while (i - atomic_load_explicit(&ring.tail, memory_order_acquire) >= ring_cap)
            pause_a_little(&spins);
        ring.slot[i % ring_cap] = p;
        ring.size[i % ring_cap] = n;
        atomic_store_explicit(&ring.head, i + 1, memory_order_release);
        produced += n;
        if (i % PUBLISH_EVERY == 0) {
            uint64_t live = produced - atomic_load_explicit(&ring.consumed_bytes, memory_order_relaxed);
            if (live > peak_live)
                peak_live = live;
        }
    }
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    uint64_t consumed = 0;
    for (uint64_t i = 0; i < nblocks; i++) {
        unsigned spins = 0;
        while (atomic_load_explicit(&ring.head, memory_order_acquire) <= i)
            pause_a_little(&spins);
        unsigned char *p = ring.slot[i % ring_cap];
        size_t n = ring.size[i % ring_cap];
        if (p[0] != (unsigned char)i || p[n - 1] != (unsigned char)i)
            bad_blocks++;
        free(p);
        atomic_store_explicit(&ring.tail, i + 1, memory_order_release);
        consumed += n;
        if (i % PUBLISH_EVERY == 0)
            atomic_store_explicit(&ring.consumed_bytes, consumed, memory_order_relaxed);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *name_opt = NULL;
    bool csv = false, header = false;
    for (int i = 1; i < argc; i++) {
        if (bench_output_option(argc, argv, &i, &name_opt, &csv, &header))
            continue;
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-n") == 0 && next) {
            nblocks = bench_parse_num("prodcons", argv[++i], "-n", 1, UINT64_C(1) << 40);
        } else if (strcmp(a, "-r") == 0 && next) {
            ring_cap = bench_parse_num("prodcons", argv[++i], "-r", 1, UINT64_C(1) << 26);
        } else {
            fprintf(stderr, "usage: prodcons [-n BLOCKS] [-r RING_SLOTS] [--name NAME]\n");
            return 2;
        }
    }
    size_t bytes = ring_cap * (sizeof(void *) + sizeof(size_t));
    char *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (m == MAP_FAILED) {
        perror("prodcons: mmap");
        return 1;
    }
    ring.slot = (void **)m;
    ring.size = (size_t *)(m + ring_cap * sizeof(void *));

    pthread_t pt, ct;
    /* The baseline is taken before the threads start: their stacks (a few
     * pages each) count in the growth, a trifle next to the ring's blocks. */
    uint64_t base_kb = mt_rss_kb();
    struct mt_locks l0 = mt_locks_now();
    uint64_t t0 = bench_now_ns();
    if (pthread_create(&ct, NULL, consumer, NULL) || pthread_create(&pt, NULL, producer, NULL)) {
        fprintf(stderr, "prodcons: pthread_create failed\n");
        return 1;
    }
    pthread_join(pt, NULL);
    pthread_join(ct, NULL);
    uint64_t t1 = bench_now_ns();
    struct mt_locks l1 = mt_locks_now();
    uint64_t peak_kb = mt_peak_rss_kb();
    double growth = (double)(peak_kb > base_kb ? peak_kb - base_kb : 0) * 1024.0;
    char name[64];
    bench_report_name(name, sizeof name, name_opt);
    mt_report("prodcons", name, 2, 2 * nblocks, (double)(t1 - t0) / 1e9, l0, l1,
              " base_rss_kb=%llu peak_live_kb=%llu blowup=%.3f", (unsigned long long)base_kb,
              (unsigned long long)(peak_live / 1024), peak_live ? growth / (double)peak_live : 0.0);
    if (bad_blocks) {
        fprintf(stderr, "prodcons: %llu blocks corrupted\n", (unsigned long long)bad_blocks);
        return 1;
    }
    return 0;
}
