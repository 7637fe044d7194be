/* stress.c - many threads, every allocation call, sizes from 1 byte to
 * several MiB, blocks passed between threads, threads born and ended in
 * rounds, and fork() while the others allocate.
 *
 *   stress [SECONDS [THREADS [SEED]]]      (defaults: 20 s, 12 threads, seed 1)
 *
 * Workers share NSLOTS slots. An operation puts a new block into a random
 * slot with an atomic exchange (checking and freeing the block it displaces),
 * takes a block out and reallocs it, takes one out and frees it, or works on
 * the worker's own private blocks. So most blocks are freed or resized by a
 * thread other than the one that allocated them, often after that thread
 * has exited. Every allocation API is used: malloc, calloc, realloc (from
 * NULL, and to 0 as a free), reallocarray, memalign, posix_memalign,
 * aligned_alloc, valloc.
 *
 * Every block is described by a small descriptor (itself malloc'ed) and
 * stamped with a byte pattern derived from its id: the whole block when it
 * is small, else its head, its tail and four words in between. The pattern
 * is checked before every free and realloc, the kept prefix after every
 * realloc, and calloc memory must read as zero.
 *
 * Threads run in rounds: within a round each worker lives for a random
 * number of operations and is replaced by a new one when it ends, so thread
 * caches are created and destroyed while others run. One extra thread per
 * round also allocates, and every 50-250 ms calls fork(): the child checks
 * and frees blocks it inherited, allocates and frees a few thousand blocks
 * (sometimes from a new thread), runs fitalloc_check_heap() and exits 0. The
 * parent waits for it with a deadline: a child that hangs is a failure.
 *
 * After each round (no other thread left): fitalloc_check_heap() == 0 and
 * the number of live thread caches is back to its start value. At the end,
 * with the slots drained, in_use_blocks must be back near its start value.
 * A watchdog thread ends the program (exit 3) if a round does not finish.
 *
 * STRESS_NO_MAPPED_REALLOC=1 in the environment replaces realloc of blocks
 * that may have their own mapping (over 64 KiB, or aligned to 64 KiB or
 * more) with malloc + copy + free, to tell a bug on that path from others.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define NSLOTS 2048
#define NPRIVATE 48
#define MAX_THREADS 64
#define DESC_MAGIC 0x5A17C0DEu
#define FORK_KEEP 16            /* private blocks of the forker a child checks */
#define CHILD_DEADLINE_S 30.0   /* a child that runs longer is hung */
#define STAMP_FULL 256          /* blocks up to this size are stamped entirely */
#define STAMP_EDGE 64

/* ---- blocks ----------------------------------------------------------------- */

enum how { BY_MALLOC, BY_CALLOC, BY_REALLOC_NULL, BY_MEMALIGN, BY_POSIX_MEMALIGN, BY_ALIGNED_ALLOC, BY_VALLOC,
           BY_REALLOCARRAY, HOW_COUNT };

struct desc {
    uint32_t magic;
    uint32_t owner;   /* thread that made it */
    size_t size;
    uint64_t id;      /* pattern seed */
    unsigned char *blk;
    size_t align;     /* alignment asked for (16: none) */
};

static int no_mapped_realloc; /* STRESS_NO_MAPPED_REALLOC */

static atomic_ulong next_id = 1;
static atomic_ulong total_ops;
static atomic_ulong calls[HOW_COUNT];
static atomic_ulong reallocs, frees, cross_checks, big_blocks;

/* Mostly small, some medium, a few multi-MiB. */
static size_t pick_size(struct rng *r)
{
    uint64_t k = rng_next(r) % 1000;
    if (k < 600)
        return rng_range(r, 1, 128);
    if (k < 820)
        return rng_range(r, 129, 4096);
    if (k < 940)
        return rng_range(r, 4097, 64 * 1024);
    if (k < 990)
        return rng_range(r, 64 * 1024 + 1, 1024 * 1024);
    return rng_range(r, 1024 * 1024 + 1, 6 * 1024 * 1024);
}

static size_t pick_align(struct rng *r)
{
    uint64_t k = rng_next(r) % 100;
    if (k < 90)
        return (size_t)1 << rng_range(r, 3, 12);      /* 8 .. 4096 */
    if (k < 98)
        return (size_t)1 << rng_range(r, 13, 16);     /* 8 KiB .. 64 KiB */
    return (size_t)1 << rng_range(r, 17, 21);         /* 128 KiB .. 2 MiB */
}

/* The stamped ranges of a block of n bytes: all of it when small, else the
 * head, the tail and four 16-byte pieces in between placed by the id. */
static int stamp_ranges(size_t n, uint64_t id, size_t rg[6][2])
{
    if (n <= STAMP_FULL) {
        rg[0][0] = 0;
        rg[0][1] = n;
        return 1;
    }
    rg[0][0] = 0;
    rg[0][1] = STAMP_EDGE;
    rg[1][0] = n - STAMP_EDGE;
    rg[1][1] = n;
    uint64_t h = mix64(id);
    for (int k = 0; k < 4; k++) {
        size_t span = n - 2 * STAMP_EDGE - 16;
        size_t off = STAMP_EDGE + (size_t)((h >> (16 * k)) & 0xFFFF) * span / 0xFFFF;
        rg[2 + k][0] = off;
        rg[2 + k][1] = off + 16;
    }
    return 6;
}

static void stamp(unsigned char *b, size_t n, uint64_t id)
{
    size_t rg[6][2];
    int m = stamp_ranges(n, id, rg);
    for (int i = 0; i < m; i++)
        pat_fill_range(b, rg[i][0], rg[i][1], id);
}

/* First wrong byte of [from, to) of block b (pattern id), or SIZE_MAX. */
static size_t check_range(const unsigned char *b, size_t from, size_t to, uint64_t id)
{
    if (from == 0)
        return pat_check(b, to, id);
    for (size_t i = from; i < to; i++)
        if (b[i] != (unsigned char)(pat_word(id, i / 8) >> (8 * (i % 8))))
            return i;
    return SIZE_MAX;
}

/* Checks the stamps of a block of n bytes (pattern id) below limit. */
static size_t check_stamps(const unsigned char *b, size_t n, uint64_t id, size_t limit)
{
    size_t rg[6][2];
    int m = stamp_ranges(n, id, rg);
    for (int i = 0; i < m; i++) {
        size_t to = rg[i][1] < limit ? rg[i][1] : limit;
        if (rg[i][0] >= to)
            continue;
        size_t bad = check_range(b, rg[i][0], to, id);
        if (bad != SIZE_MAX)
            return bad;
    }
    return SIZE_MAX;
}

static void check_zeroed(const unsigned char *b, size_t n, const char *what)
{
    size_t bad = SIZE_MAX;
    if (n <= 1024 * 1024) {
        bad = zero_check(b, n);
    } else {
        /* head, tail, and 256 bytes every 64 KiB */
        bad = zero_check(b, 65536);
        if (bad == SIZE_MAX && zero_check(b + n - 65536, 65536) != SIZE_MAX)
            bad = n - 65536 + zero_check(b + n - 65536, 65536);
        for (size_t o = 65536; bad == SIZE_MAX && o + 256 <= n; o += 65536)
            if (zero_check(b + o, 256) != SIZE_MAX)
                bad = o + zero_check(b + o, 256);
    }
    if (bad != SIZE_MAX)
        thread_err("%s(%zu bytes) = %p: byte %zu is not zero", what, n, (void *)b, bad);
}

static unsigned char *allocate(struct rng *r, size_t n, size_t *align_out)
{
    unsigned char *b = NULL;
    size_t align = 16;
    int how = (int)(rng_next(r) % 100);
    how = how < 45 ? BY_MALLOC : how < 60 ? BY_CALLOC : how < 68 ? BY_REALLOC_NULL : how < 76 ? BY_MEMALIGN
        : how < 84 ? BY_POSIX_MEMALIGN : how < 91 ? BY_ALIGNED_ALLOC : how < 93 ? BY_VALLOC : BY_REALLOCARRAY;
    switch (how) {
    case BY_MALLOC:
        b = malloc(hide_size(n));
        break;
    case BY_CALLOC: {
        size_t k = (n % 4 == 0) ? 4 : 1;
        b = calloc(hide_size(n / k), hide_size(k));
        if (b)
            check_zeroed(b, n, "calloc");
        break;
    }
    case BY_REALLOC_NULL:
        b = realloc(hide_ptr(NULL), hide_size(n));
        break;
    case BY_MEMALIGN:
        align = pick_align(r);
        b = memalign(hide_size(align), hide_size(n));
        break;
    case BY_POSIX_MEMALIGN: {
        void *p = NULL;
        align = pick_align(r);
        int e = posix_memalign(&p, hide_size(align), hide_size(n));
        if (e != 0)
            thread_err("posix_memalign(%zu, %zu) = %d", align, n, e);
        b = e == 0 ? p : NULL;
        break;
    }
    case BY_ALIGNED_ALLOC:
        align = pick_align(r);
        b = aligned_alloc(hide_size(align), hide_size(n));
        break;
    case BY_VALLOC:
        align = 4096;
        b = valloc(hide_size(n));
        break;
    default: {
        size_t k = (n % 8 == 0) ? 8 : 1;
        b = reallocarray(hide_ptr(NULL), hide_size(n / k), hide_size(k));
        break;
    }
    }
    atomic_fetch_add_explicit(&calls[how], 1, memory_order_relaxed);
    if (b == NULL) {
        thread_err("allocation of %zu bytes (kind %d, align %zu) failed: %s", n, how, align, strerror(errno));
        return NULL;
    }
    if (((uintptr_t)b & (align - 1)) != 0)
        thread_err("block %p of %zu bytes (kind %d) not aligned to %zu", (void *)b, n, how, align);
    if (malloc_usable_size(b) < n)
        thread_err("malloc_usable_size(%p) = %zu < %zu (kind %d)", (void *)b, malloc_usable_size(b), n, how);
    if (n > 1024 * 1024)
        atomic_fetch_add_explicit(&big_blocks, 1, memory_order_relaxed);
    if (align_out)
        *align_out = align;
    return b;
}

static struct desc *new_block(struct rng *r, uint32_t owner)
{
    struct desc *d = (rng_next(r) & 3) ? malloc(sizeof *d) : calloc(1, sizeof *d);
    if (d == NULL) {
        thread_err("descriptor allocation failed");
        return NULL;
    }
    size_t n = pick_size(r);
    size_t align = 16;
    unsigned char *b = allocate(r, n, &align);
    if (b == NULL) {
        free(d);
        return NULL;
    }
    d->align = align;
    d->magic = DESC_MAGIC;
    d->owner = owner;
    d->size = n;
    d->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
    d->blk = b;
    stamp(b, n, d->id);
    return d;
}

static int verify(const struct desc *d, const char *when)
{
    if (d->magic != DESC_MAGIC) {
        thread_err("descriptor %p damaged (magic %#x) %s", (const void *)d, d->magic, when);
        return 0;
    }
    size_t bad = check_stamps(d->blk, d->size, d->id, d->size);
    if (bad != SIZE_MAX) {
        thread_err("block %p (%zu bytes, id %llu, from thread %u): byte %zu changed, %s", (void *)d->blk,
                   d->size, (unsigned long long)d->id, d->owner, bad, when);
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
    if (rng_next(r) % 16 == 0) {
        void *q = realloc(d->blk, hide_size(0)); /* glibc: frees, returns NULL */
        if (q != NULL)
            thread_err("realloc(%p, 0) returned %p", (void *)d->blk, q);
    } else {
        free(d->blk);
    }
    free(d);
    atomic_fetch_add_explicit(&frees, 1, memory_order_relaxed);
}

/* Resizes d's block to a new random size, checking what must be kept. */
static void resize(struct rng *r, struct desc *d)
{
    if (!verify(d, "before realloc"))
        return;
    size_t n = pick_size(r);
    unsigned char *q;
    if (no_mapped_realloc && (d->size > 65536 || d->align >= 65536)) {
        q = malloc(hide_size(n));
        if (q) {
            memcpy(q, d->blk, d->size < n ? d->size : n);
            free(d->blk);
        }
    } else if (rng_next(r) % 8 == 0 && n % 2 == 0)
        q = reallocarray(d->blk, hide_size(n / 2), hide_size(2));
    else
        q = realloc(d->blk, hide_size(n));
    atomic_fetch_add_explicit(&reallocs, 1, memory_order_relaxed);
    if (q == NULL) {
        thread_err("realloc(%zu -> %zu) failed: %s", d->size, n, strerror(errno));
        return;
    }
    if (((uintptr_t)q & 15) != 0)
        thread_err("realloc returned %p, not 16-aligned", (void *)q);
    if (malloc_usable_size(q) < n)
        thread_err("after realloc: malloc_usable_size(%p) = %zu < %zu", (void *)q, malloc_usable_size(q), n);
    size_t keep = d->size < n ? d->size : n;
    size_t bad = check_stamps(q, d->size, d->id, keep);
    if (bad != SIZE_MAX)
        thread_err("realloc(%p [%zu bytes] -> %zu) = %p lost byte %zu of the kept %zu", (void *)d->blk, d->size,
                   n, (void *)q, bad, keep);
    d->blk = q;
    d->size = n;
    d->align = 16;
    if (n > 1024 * 1024)
        atomic_fetch_add_explicit(&big_blocks, 1, memory_order_relaxed);
    stamp(q, n, d->id);
}

/* ---- workers ---------------------------------------------------------------- */

static _Atomic(struct desc *) slots[NSLOTS];

/* One operation on the shared slots or on the private blocks priv[]. */
static void one_op(struct rng *r, uint32_t me, struct desc **priv)
{
    uint64_t k = rng_next(r) % 100;
    size_t s = (size_t)(rng_next(r) % NSLOTS);
    if (k < 38) {
        struct desc *d = new_block(r, me);
        if (d)
            release(r, atomic_exchange(&slots[s], d), "when displaced from a slot");
    } else if (k < 53) {
        struct desc *d = atomic_exchange(&slots[s], NULL);
        if (d == NULL)
            return;
        resize(r, d);
        atomic_fetch_add_explicit(&cross_checks, d->owner != me, memory_order_relaxed);
        release(r, atomic_exchange(&slots[s], d), "when displaced after a realloc");
    } else if (k < 65) {
        struct desc *d = atomic_exchange(&slots[s], NULL);
        if (d)
            atomic_fetch_add_explicit(&cross_checks, d->owner != me, memory_order_relaxed);
        release(r, d, "when taken from a slot");
    } else if (k < 70) {
        struct desc *d = atomic_exchange(&slots[s], NULL);
        if (d == NULL)
            return;
        if (verify(d, "on a visit") && malloc_usable_size(d->blk) < d->size)
            thread_err("malloc_usable_size(%p) = %zu < %zu", (void *)d->blk, malloc_usable_size(d->blk), d->size);
        release(r, atomic_exchange(&slots[s], d), "when displaced after a visit");
    } else {
        size_t i = (size_t)(rng_next(r) % NPRIVATE);
        if (priv[i] == NULL) {
            priv[i] = new_block(r, me);
        } else if (k < 80) {
            resize(r, priv[i]);
        } else {
            release(r, priv[i], "private");
            priv[i] = NULL;
        }
    }
}

struct worker {
    pthread_t th;
    uint32_t id;
    uint64_t seed;
    long ops_to_do;
    atomic_int done;
    int running;
};

static atomic_int stop_round;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct rng r;
    rng_seed(&r, w->seed);
    struct desc *priv[NPRIVATE] = {0};
    long ops = 0;
    while (ops < w->ops_to_do && !atomic_load_explicit(&stop_round, memory_order_relaxed)) {
        one_op(&r, w->id, priv);
        ops++;
    }
    /* Leave some private blocks to the others (a slot), free the rest. */
    for (int i = 0; i < NPRIVATE; i++) {
        if (priv[i] == NULL)
            continue;
        if (rng_next(&r) & 1)
            release(&r, atomic_exchange(&slots[rng_next(&r) % NSLOTS], priv[i]), "displaced by an exiting thread");
        else
            release(&r, priv[i], "private at thread exit");
    }
    atomic_fetch_add_explicit(&total_ops, (unsigned long)ops, memory_order_relaxed);
    atomic_store(&w->done, 1);
    return NULL;
}

/* ---- fork ------------------------------------------------------------------- */

static atomic_ulong forks, fork_failures, fork_hangs;

/* A burst of allocation in the child; returns the number of problems. */
static int child_churn(uint64_t seed, int ops)
{
    enum { K = 64 };
    struct desc *blk[K] = {0};
    struct rng r;
    rng_seed(&r, seed);
    int before = thread_err_count();
    for (int i = 0; i < ops; i++) {
        int j = (int)(rng_next(&r) % K);
        if (blk[j] == NULL)
            blk[j] = new_block(&r, 1000000);
        else if (rng_next(&r) % 4 == 0)
            resize(&r, blk[j]);
        else {
            release(&r, blk[j], "in a child");
            blk[j] = NULL;
        }
    }
    for (int j = 0; j < K; j++)
        release(&r, blk[j], "at the end of a child");
    return thread_err_count() - before;
}

static void *child_thread(void *arg)
{
    return (void *)(intptr_t)child_churn((uint64_t)(uintptr_t)arg, 1000);
}

/* Runs in the child: exit status 0 when all is well, else a bit set of
 * 1 inherited blocks damaged, 2 churn errors, 4 thread in the child,
 * 8 check_heap. */
static int child_main(struct desc **keep, int nkeep, uint64_t seed)
{
    int status = 0;
    thread_err_after_fork();
    for (int i = 0; i < nkeep; i++) {
        if (keep[i] == NULL)
            continue;
        if (!verify(keep[i], "inherited by a forked child"))
            status |= 1;
        else if (i % 2 == 0) {
            struct rng r;
            rng_seed(&r, seed + (uint64_t)i);
            release(&r, keep[i], "inherited, freed in a child");
        }
    }
    if (child_churn(seed, 3000) != 0)
        status |= 2;
    if (seed % 4 == 0) {
        pthread_t t;
        void *res = NULL;
        if (pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)(seed + 1)) != 0 ||
            pthread_join(t, &res) != 0 || res != NULL)
            status |= 4;
    }
    if (fitalloc_check_heap() != 0)
        status |= 8;
    if (status != 0) {
        char msg[400];
        int len = snprintf(msg, sizeof msg, "stress: forked child %d failed (bits %d): %s\n", (int)getpid(), status,
                           first_error);
        if (len > 0)
            (void)!write(2, msg, (size_t)len < sizeof msg ? (size_t)len : sizeof msg - 1);
    }
    return status;
}

struct forker {
    pthread_t th;
    uint64_t seed;
};

static void *forker_main(void *arg)
{
    struct forker *f = arg;
    struct rng r;
    rng_seed(&r, f->seed);
    struct desc *priv[NPRIVATE] = {0};
    while (!atomic_load(&stop_round)) {
        double until = now_s() + 0.05 + (double)(rng_next(&r) % 200) / 1000.0;
        long ops = 0;
        while (now_s() < until && !atomic_load(&stop_round)) {
            for (int i = 0; i < 32; i++)
                one_op(&r, 999999, priv);
            ops += 32;
        }
        atomic_fetch_add_explicit(&total_ops, (unsigned long)ops, memory_order_relaxed);
        if (atomic_load(&stop_round))
            break;
        /* The child checks (and frees half of) these private blocks. */
        struct desc *keep[FORK_KEEP];
        for (int i = 0; i < FORK_KEEP; i++)
            keep[i] = priv[i];
        uint64_t cseed = rng_next(&r);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0)
            _exit(child_main(keep, FORK_KEEP, cseed));
        if (pid < 0) {
            thread_err("fork failed: %s", strerror(errno));
            atomic_fetch_add(&fork_failures, 1);
            continue;
        }
        atomic_fetch_add(&forks, 1);
        int status;
        if (!wait_child(pid, CHILD_DEADLINE_S, &status)) {
            atomic_fetch_add(&fork_hangs, 1);
            thread_err("forked child %d hung for %.0f s (killed)", (int)pid, CHILD_DEADLINE_S);
        } else if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            atomic_fetch_add(&fork_failures, 1);
            if (status != -1 && WIFSIGNALED(status))
                thread_err("forked child %d killed by signal %d (%s)", (int)pid, WTERMSIG(status),
                           strsignal(WTERMSIG(status)));
            else
                thread_err("forked child %d exited with status %d (1 inherited blocks, 2 churn, 4 thread, "
                           "8 check_heap)",
                           (int)pid, status == -1 ? -1 : WEXITSTATUS(status));
        }
    }
    for (int i = 0; i < NPRIVATE; i++)
        release(&r, priv[i], "forker private at round end");
    return NULL;
}

/* ---- watchdog ------------------------------------------------------------------ */

static atomic_long watchdog_deadline_ms; /* monotonic ms; 0 = disarmed */

static void *watchdog_main(void *arg)
{
    (void)arg;
    for (;;) {
        sleep_ms(500);
        long d = atomic_load(&watchdog_deadline_ms);
        if (d != 0 && (long)(now_s() * 1000) > d) {
            /* No stdio here: the allocator may be deadlocked. */
            static const char tap[] = "not ok - watchdog: a round did not finish in time\n";
            static const char msg[] = "stress: WATCHDOG: a round did not finish in time (hang or deadlock)\n";
            (void)!write(1, tap, sizeof tap - 1);
            (void)!write(2, msg, sizeof msg - 1);
            _exit(3);
        }
    }
    return NULL;
}

/* ---- main --------------------------------------------------------------------- */

static struct fitalloc_stats stats_now(void)
{
    struct fitalloc_stats s;
    memset(&s, 0, sizeof s);
    fitalloc_stats(&s);
    return s;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 20.0;
    int nthreads = argc > 2 ? atoi(argv[2]) : 12;
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 0) : 1;
    if (seconds <= 0 || nthreads < 1 || nthreads > MAX_THREADS) {
        fprintf(stderr, "usage: %s [SECONDS>0 [THREADS 1..%d [SEED]]]\n", argv[0], MAX_THREADS);
        return 2;
    }
    double round_s = seconds / 10;
    round_s = round_s < 1 ? 1 : round_s > 5 ? 5 : round_s;
    if (round_s > seconds)
        round_s = seconds;

    const char *nmr = getenv("STRESS_NO_MAPPED_REALLOC");
    no_mapped_realloc = nmr != NULL && nmr[0] != '\0' && nmr[0] != '0';

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (no_mapped_realloc)
        diag("STRESS_NO_MAPPED_REALLOC: blocks over 64 KiB are moved by malloc + copy + free, not realloc");
    diag("stress: %.0f s, %d worker threads + 1 forking thread, rounds of %.1f s, %d shared slots, seed %llu",
         seconds, nthreads, round_s, NSLOTS, (unsigned long long)seed);

    pthread_t wd;
    pthread_create(&wd, NULL, watchdog_main, NULL);
    /* The main thread's cache (if any) exists before the start values. */
    free(malloc(hide_size(100)));
    struct fitalloc_stats s0 = stats_now();
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at start", " ");

    struct rng r;
    rng_seed(&r, seed);
    static struct worker w[MAX_THREADS];
    uint32_t next_thread_id = 0;
    unsigned long threads_started = 0;
    int rounds = 0, bad_rounds = 0, thread_growth = 0;
    double t_start = now_s();

    while (now_s() - t_start < seconds - 0.1) {
        double round_end = now_s() + round_s;
        if (round_end > t_start + seconds)
            round_end = t_start + seconds;
        atomic_store(&watchdog_deadline_ms, (long)((round_end + 120.0) * 1000));
        atomic_store(&stop_round, 0);

        struct forker fk = {.seed = rng_next(&r)};
        int have_forker = pthread_create(&fk.th, NULL, forker_main, &fk) == 0;
        if (!have_forker)
            thread_err("cannot start the forking thread");
        for (int i = 0; i < nthreads; i++)
            w[i].running = 0;
        /* Keep nthreads workers alive until the round ends; each lives for a
         * random number of operations. */
        while (now_s() < round_end) {
            for (int i = 0; i < nthreads; i++) {
                if (w[i].running && atomic_load(&w[i].done)) {
                    pthread_join(w[i].th, NULL);
                    w[i].running = 0;
                }
                if (!w[i].running) {
                    w[i].id = next_thread_id++;
                    w[i].seed = rng_next(&r);
                    w[i].ops_to_do = (long)rng_range(&r, 500, 20000);
                    atomic_store(&w[i].done, 0);
                    if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) == 0) {
                        w[i].running = 1;
                        threads_started++;
                    } else {
                        thread_err("pthread_create failed");
                    }
                }
            }
            sleep_ms(5);
        }
        atomic_store(&stop_round, 1);
        for (int i = 0; i < nthreads; i++)
            if (w[i].running) {
                pthread_join(w[i].th, NULL);
                w[i].running = 0;
            }
        if (have_forker)
            pthread_join(fk.th, NULL);
        atomic_store(&watchdog_deadline_ms, 0);
        rounds++;

        size_t problems = heap_problems();
        struct fitalloc_stats s = stats_now();
        int errs = thread_err_count();
        if (problems != 0 || errs != 0)
            bad_rounds++;
        if (s.threads > s0.threads)
            thread_growth++;
        diag("round %d: %lu threads started so far, %lu ops, %lu forks; check_heap %zu, thread caches %llu (start %llu), "
             "in_use_blocks %llu, errors %d",
             rounds, threads_started, atomic_load(&total_ops), atomic_load(&forks), problems,
             (unsigned long long)s.threads, (unsigned long long)s0.threads, (unsigned long long)s.in_use_blocks, errs);
        if (errs != 0 || problems != 0)
            break;
    }

    check(bad_rounds == 0 && thread_err_count() == 0,
          "every round: patterns intact, calloc zeroed, alignment and usable sizes right, check_heap == 0",
          "%d bad round(s), %d error(s), first: %s", bad_rounds, thread_err_count(), first_error);
    check(thread_growth == 0, "live thread caches back to the start value after every round",
          "%d round(s) ended with more caches than at the start", thread_growth);
    check(atomic_load(&forks) > 0 && atomic_load(&fork_failures) == 0 && atomic_load(&fork_hangs) == 0,
          "forks while other threads allocate: every child checks, allocates, check_heap == 0, exits 0 in time",
          "%lu forks, %lu failed, %lu hung", atomic_load(&forks), atomic_load(&fork_failures),
          atomic_load(&fork_hangs));

    /* Drain the slots: blocks made by threads long gone. */
    unsigned long left = 0;
    for (int i = 0; i < NSLOTS; i++) {
        struct desc *d = atomic_exchange(&slots[i], NULL);
        if (d) {
            left++;
            release(&r, d, "drained at the end");
        }
    }
    check(thread_err_count() == 0, "blocks left in slots by exited threads are intact and freed by main",
          "%lu blocks, %d errors, first: %s", left, thread_err_count(), first_error);

    struct fitalloc_stats s1 = stats_now();
    check(s1.in_use_blocks <= s0.in_use_blocks + 64, "in_use_blocks back near the start value (slack 64)",
          "start %llu, end %llu", (unsigned long long)s0.in_use_blocks, (unsigned long long)s1.in_use_blocks);
    check(s1.threads <= s0.threads, "no thread cache left alive by exited threads", "start %llu, end %llu",
          (unsigned long long)s0.threads, (unsigned long long)s1.threads);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at the end", " ");

    double el = now_s() - t_start;
    unsigned long ops = atomic_load(&total_ops);
    diag("summary: %.1f s, %d rounds, %lu threads started, %lu operations (%.0f/s), %lu forks, %lu reallocs, "
         "%lu frees, %lu multi-MiB blocks, %lu blocks handled by a thread other than their maker",
         el, rounds, threads_started, ops, (double)ops / el, atomic_load(&forks), atomic_load(&reallocs),
         atomic_load(&frees), atomic_load(&big_blocks), atomic_load(&cross_checks));
    diag("allocations by kind: malloc %lu, calloc %lu, realloc(NULL) %lu, memalign %lu, posix_memalign %lu, "
         "aligned_alloc %lu, valloc %lu, reallocarray %lu",
         atomic_load(&calls[BY_MALLOC]), atomic_load(&calls[BY_CALLOC]), atomic_load(&calls[BY_REALLOC_NULL]),
         atomic_load(&calls[BY_MEMALIGN]), atomic_load(&calls[BY_POSIX_MEMALIGN]),
         atomic_load(&calls[BY_ALIGNED_ALLOC]), atomic_load(&calls[BY_VALLOC]), atomic_load(&calls[BY_REALLOCARRAY]));
    diag("fitalloc: peak system bytes %llu, peak in-use bytes %llu, mmap calls %llu, munmap %llu, mremap %llu",
         (unsigned long long)s1.peak_system_bytes, (unsigned long long)s1.peak_in_use_bytes,
         (unsigned long long)s1.mmap_calls, (unsigned long long)s1.munmap_calls, (unsigned long long)s1.mremap_calls);
    return tap_done("stress");
}
