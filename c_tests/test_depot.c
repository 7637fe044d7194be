/* test_depot.c - blocks one thread frees and another allocates (issue 9).
 *
 * A thread that only frees gets a thread cache of its own, and a full list
 * of that cache passes half of itself to the depot as one chain, which an
 * empty list of another thread takes whole (src/depot.rs). Checked here:
 *
 *   - a thread that only frees gets a cache at its 16th free, not before;
 *   - producer/consumer rounds (the consumer never allocates): every block
 *     keeps its pattern until it is freed, the heap checker finds nothing,
 *     and the statistics count every block back;
 *   - once a producer and a consumer of blocks of a size nobody else uses
 *     have exited (their own caches went home), blocks of that size still
 *     wait as cached blocks: in the depot; another thread's next malloc of
 *     the size is one of them, and malloc_trim sends the rest home;
 *   - a thread that exits hands its cache's lists to the depot: blocks it
 *     freed into its own cache (no list overflowed) wait there as cached
 *     blocks, and another thread's next malloc of the size takes them;
 *   - freeing a block that waits in the depot is a double free, reported;
 *   - FITALLOC_DEPOT_BYTES=0 turns the depot off;
 *   - a thread that frees blocks of every cached size keeps its cache
 *     within its byte budget.
 *
 * The test runs again on the lock-check build (make lock-check-test).
 */
#define _GNU_SOURCE
#include <malloc.h>

#include "common.h"

#define ROUNDS 6
#define PER_ROUND 20000
#define ODD_SIZE 700 /* a size no other part of the test allocates */
#define ODD_BLOCKS 256

static void *ring[PER_ROUND];
static size_t ring_size[PER_ROUND];

static void *consume(void *arg)
{
    uint64_t round = (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < PER_ROUND; i++) {
        if (pat_check(ring[i], ring_size[i], round * PER_ROUND + (uint64_t)i) != SIZE_MAX)
            thread_err("round %llu: block %d changed before it was freed", (unsigned long long)round, i);
        free(ring[i]);
    }
    return NULL;
}

static void producer_consumer(void)
{
    struct rng rng;
    rng_seed(&rng, 7);
    uint64_t base = stats().in_use_blocks;
    int heap_ok = 1;
    for (uint64_t r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < PER_ROUND; i++) {
            size_t n = rng_range(&rng, 1, 1000);
            ring[i] = malloc(hide_size(n));
            ring_size[i] = n;
            if (!ring[i]) {
                thread_err("malloc(%zu) failed", n);
                return;
            }
            pat_fill(ring[i], n, r * PER_ROUND + (uint64_t)i);
        }
        pthread_t t;
        pthread_create(&t, NULL, consume, (void *)(uintptr_t)r);
        pthread_join(t, NULL);
        heap_ok &= heap_problems() == 0;
    }
    check(thread_err_count() == 0, "producer/consumer: every block intact until the other thread frees it", "%s",
          first_error);
    check(heap_ok, "producer/consumer: the heap checker finds nothing after each round", "%s", "problems");
    uint64_t now = stats().in_use_blocks;
    check(now <= base + 16, "producer/consumer: every block counted back", "in use %llu, at start %llu",
          (unsigned long long)now, (unsigned long long)base);
}

/* Blocks of ODD_SIZE: the producer's, freed by a consumer that then exits. */
static void *odd[ODD_BLOCKS];

static void *free_odd(void *arg)
{
    (void)arg;
    for (int i = 0; i < ODD_BLOCKS; i++)
        free(odd[i]);
    return NULL;
}

static void *alloc_odd(void *arg)
{
    (void)arg;
    for (int i = 0; i < ODD_BLOCKS; i++)
        odd[i] = malloc(ODD_SIZE);
    return NULL;
}

/* A thread allocates the odd blocks and exits, another frees them and
 * exits: their caches went home, the calling thread's holds none of the
 * size. */
static void odd_blocks_through_a_consumer(void)
{
    pthread_t t;
    pthread_create(&t, NULL, alloc_odd, NULL);
    pthread_join(t, NULL);
    pthread_create(&t, NULL, free_odd, NULL);
    pthread_join(t, NULL);
}

struct cached_odd {
    size_t n;
    void *at[ODD_BLOCKS];
};

static int is_odd(const void *p)
{
    for (int i = 0; i < ODD_BLOCKS; i++)
        if (odd[i] == p)
            return 1;
    return 0;
}

/* Walk callback: cached blocks that are payloads of the odd blocks (a
 * block's address is its header's, 4 bytes before the payload). */
static void find_cached(void *ctx, size_t addr, uint64_t size, uint32_t kind)
{
    struct cached_odd *c = ctx;
    (void)size;
    void *payload = (void *)(addr + 4);
    if (kind == FITALLOC_WALK_CACHED && c->n < ODD_BLOCKS && is_odd(payload))
        c->at[c->n++] = payload;
}

static struct cached_odd cached_odd(void)
{
    struct cached_odd c;
    c.n = 0;
    fitalloc_heap_walk(find_cached, &c);
    return c;
}

static void depot_serves_and_trim_empties(void)
{
    malloc_trim(0); /* the depot (bounded) may be full of the rounds' chains */
    odd_blocks_through_a_consumer();
    struct cached_odd c = cached_odd();
    check(c.n > 0, "a consumer's freed blocks wait in the depot after it exited", "%zu cached", c.n);
    check(stats().cached_blocks >= c.n, "the statistics count the depot's blocks as cached", "%zu", c.n);
    void *p = malloc(ODD_SIZE);
    int from_depot = 0;
    for (size_t i = 0; i < c.n; i++)
        from_depot |= c.at[i] == p;
    check(from_depot, "another thread's next malloc of the size takes a chain of the depot", "%p", p);
    free(p);
    malloc_trim(0);
    c = cached_odd();
    check(c.n == 0, "malloc_trim sends the depot's chains home", "%zu still cached", c.n);
    check(heap_problems() == 0, "the heap checker finds nothing after the depot went home", "%s", "problems");
}

/* Blocks of EXIT_SIZE (no other part of the test allocates it), freed by
 * the thread that allocated them, a few: they stay in its cache's list. */
#define EXIT_SIZE 600
#define EXIT_BLOCKS 5
static void *exit_blocks[EXIT_BLOCKS];

static void *alloc_free_and_exit(void *arg)
{
    (void)arg;
    for (int i = 0; i < EXIT_BLOCKS; i++)
        exit_blocks[i] = malloc(EXIT_SIZE);
    for (int i = 0; i < EXIT_BLOCKS; i++)
        free(exit_blocks[i]);
    return NULL;
}

static size_t exit_cached;
static void find_exit_cached(void *ctx, size_t addr, uint64_t size, uint32_t kind)
{
    (void)ctx;
    (void)size;
    for (int i = 0; i < EXIT_BLOCKS; i++)
        if (kind == FITALLOC_WALK_CACHED && (void *)(addr + 4) == exit_blocks[i])
            exit_cached++;
}

static void exiting_thread_hands_its_lists_over(void)
{
    malloc_trim(0); /* an empty depot */
    pthread_t t;
    pthread_create(&t, NULL, alloc_free_and_exit, NULL);
    pthread_join(t, NULL);
    exit_cached = 0;
    fitalloc_heap_walk(find_exit_cached, NULL);
    check(exit_cached == EXIT_BLOCKS, "an exiting thread's cached blocks wait in the depot", "%zu of %d cached",
          exit_cached, EXIT_BLOCKS);
    void *p = malloc(EXIT_SIZE);
    int taken = 0;
    for (int i = 0; i < EXIT_BLOCKS; i++)
        taken |= exit_blocks[i] == p;
    check(taken, "another thread's next malloc of the size takes the exited thread's list", "%p", p);
    free(p);
    malloc_trim(0);
    check(heap_problems() == 0, "the heap checker finds nothing after the exited thread's list went home", "%s",
          "problems");
}

static void double_free_in_the_depot(void *arg)
{
    (void)arg;
    malloc_trim(0);
    odd_blocks_through_a_consumer();
    struct cached_odd c = cached_odd();
    if (c.n == 0)
        _exit(4);
    free(c.at[0]);
    _exit(0);
}

/* A thread that frees a few blocks and never allocates gets no cache (so
 * nothing to leak if those frees come late in its exit); one that frees
 * many does. */
static void *blocks_to_free[64];
static uint64_t threads_seen;

static void *free_n(void *arg)
{
    int n = (int)(intptr_t)arg;
    for (int i = 0; i < n; i++)
        free(blocks_to_free[i]);
    threads_seen = stats().threads;
    return NULL;
}

static void caches_of_threads_that_only_free(void)
{
    uint64_t base = stats().threads;
    for (int n = 4; n <= 64; n += 60) {
        for (int i = 0; i < n; i++)
            blocks_to_free[i] = malloc(900);
        pthread_t t;
        pthread_create(&t, NULL, free_n, (void *)(intptr_t)n);
        pthread_join(t, NULL);
        if (n == 4)
            check(threads_seen == base, "a thread that frees 4 blocks and never allocates gets no cache",
                  "threads %llu, before %llu", (unsigned long long)threads_seen, (unsigned long long)base);
        else
            check(threads_seen == base + 1, "a thread that frees 64 blocks gets a cache",
                  "threads %llu, before %llu", (unsigned long long)threads_seen, (unsigned long long)base);
    }
    malloc_trim(0);
    check(stats().threads == base, "its cache is retired when it exits", "threads %llu, before %llu",
          (unsigned long long)stats().threads, (unsigned long long)base);
}

/* A thread that only frees blocks of every cached size keeps at most its
 * byte budget (256 KiB) in its cache: run with the depot off, so that the
 * process's cached bytes are the two threads' caches, each within its
 * budget (when the budget was enforced only as a list overflowed, the
 * consumer's cache held up to 888 KiB between overflows). Exits 0 when the
 * cached bytes never passed two budgets, 3 otherwise. */
#define BUDGET_BLOCKS 6000
static void *budget_blocks[BUDGET_BLOCKS];
static uint64_t budget_peak;
static void *free_watching_the_cache(void *arg)
{
    (void)arg;
    for (int i = 0; i < BUDGET_BLOCKS; i++) {
        free(budget_blocks[i]);
        if (i % 32 == 31) {
            uint64_t c = stats().cached_bytes;
            if (c > budget_peak)
                budget_peak = c;
        }
    }
    return NULL;
}
static int cache_within_its_budget(void)
{
    uint64_t seed = 12345;
    for (int i = 0; i < BUDGET_BLOCKS; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        budget_blocks[i] = malloc(hide_size(16 + (seed >> 33) % 1009));
    }
    pthread_t t;
    pthread_create(&t, NULL, free_watching_the_cache, NULL);
    pthread_join(t, NULL);
    if (budget_peak > 2 * 256 * 1024) {
        fprintf(stderr, "cached bytes peaked at %llu\n", (unsigned long long)budget_peak);
        return 3;
    }
    return 0;
}

static void run_budget(void *arg)
{
    char *argv[] = {(char *)arg, "budget", NULL};
    char *envp[] = {"FITALLOC_DEPOT_BYTES=0", NULL};
    execve("/proc/self/exe", argv, envp);
    _exit(126);
}

/* Run by the test itself with FITALLOC_DEPOT_BYTES=0: exits 0 when no
 * block waits in a depot after the consumer exited. */
static int no_depot(void)
{
    odd_blocks_through_a_consumer();
    return cached_odd().n == 0 ? 0 : 3;
}

static void run_without_a_depot(void *arg)
{
    char *argv[] = {(char *)arg, "no-depot", NULL};
    char *envp[] = {"FITALLOC_DEPOT_BYTES=0", NULL};
    execve("/proc/self/exe", argv, envp);
    _exit(126);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "no-depot") == 0)
        return no_depot();
    if (argc > 1 && strcmp(argv[1], "budget") == 0)
        return cache_within_its_budget();
    producer_consumer();
    caches_of_threads_that_only_free();
    depot_serves_and_trim_empties();
    exiting_thread_hands_its_lists_over();
    char err[1024];
    int status = run_child_stderr(double_free_in_the_depot, NULL, err, sizeof err, 60);
    check(aborted_with_one_line(status, err, "fitalloc: free(): ", "double free", NULL),
          "freeing a block that waits in the depot: a double free", "status %#x; stderr: %s", status, err);
    status = run_child_stderr(run_without_a_depot, argv[0], err, sizeof err, 60);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "FITALLOC_DEPOT_BYTES=0: no depot", "status %#x; stderr: %s", status, err);
    status = run_child_stderr(run_budget, argv[0], err, sizeof err, 60);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a thread that frees blocks of every cached size keeps its cache within its byte budget",
          "status %#x; stderr: %s", status, err);
    return tap_done("test_depot");
}
