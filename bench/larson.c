/*
 * larson.c - a larson-style server (after Larson and Krishnan's benchmark,
 * as mimalloc-bench runs it): T threads each own an array of S slots and
 * replace random slots with new blocks of random size (8..1024 bytes; 1 in
 * 64 up to 16 KiB), writing the first and last bytes.  Every R
 * replacements a thread hands its array over: it puts it into a shared
 * depot (a FIFO under a mutex, which starts with one spare array) and takes
 * out the oldest array that another thread put there, waiting (yielding)
 * until there is one, and goes on with that one.  A thread that is done
 * leaves its array in the depot.  With the defaults (10,000 slots, a
 * hand-over every 2,500 replacements) about 88% of the frees are of blocks
 * another thread allocated, as in a server whose connections move between
 * workers.  With one thread there is no hand-over.
 *
 * Fixed seeds.  Reported (one key=value line, see mtutil.h): ops = mallocs
 * + frees in the timed part, seconds from the moment all threads start to
 * the moment the last one is done, cross_pct = the share of frees of a block
 * another thread allocated, peak RSS, and fitalloc's lock waits.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "mtutil.h"

#define MAX_THREADS 64

struct slots {
    void **p;
    uint16_t *owner; /* thread that allocated p[i] */
    unsigned holder; /* the thread that put it into the depot */
};

struct worker {
    _Alignas(128) pthread_t th;
    unsigned idx;
    uint64_t rng;
    uint64_t ops, cross, frees, failures;
};

static unsigned nthreads;
static uint64_t nslots = 10000, steps = 1000000, round_len = 2500;
static struct worker *workers;
static pthread_mutex_t depot_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slots *depot[MAX_THREADS + 1];
static unsigned depot_n;
static unsigned running; /* threads not done yet (under depot_lock) */
static pthread_barrier_t start_barrier, end_barrier;

static size_t random_size(uint64_t *rng)
{
    if (bench_below(rng, 64) == 0)
        return 1025 + (size_t)bench_below(rng, 16384 - 1024);
    return 8 + (size_t)bench_below(rng, 1024 - 8 + 1);
}

static struct slots *fill(unsigned owner, uint64_t *rng)
{
    struct slots *s = malloc(sizeof *s);
    s->p = malloc(nslots * sizeof *s->p);
    s->owner = malloc(nslots * sizeof *s->owner);
    if (!s->p || !s->owner) {
        fprintf(stderr, "larson: out of memory\n");
        exit(1);
    }
    for (uint64_t i = 0; i < nslots; i++) {
        size_t n = random_size(rng);
        unsigned char *p = malloc(n);
        if (p)
            p[0] = p[n - 1] = (unsigned char)i;
        s->p[i] = p;
        s->owner[i] = (uint16_t)owner;
    }
    return s;
}

static void drop(struct slots *s)
{
    for (uint64_t i = 0; i < nslots; i++)
        free(s->p[i]);
    free(s->p);
    free(s->owner);
    free(s);
}

/* Puts `mine` into the depot and returns the oldest array another thread
 * put there, waiting for one while another thread still runs (it will
 * come back with its array); the last thread running keeps its own. */
static struct slots *hand_over(struct slots *mine, unsigned me)
{
    for (;;) {
        pthread_mutex_lock(&depot_lock);
        if (running == 1) {
            pthread_mutex_unlock(&depot_lock);
            return mine;
        }
        for (unsigned k = 0; k < depot_n; k++) {
            if (depot[k]->holder == me)
                continue;
            struct slots *next = depot[k];
            memmove(&depot[k], &depot[k + 1], (depot_n - k - 1) * sizeof depot[0]);
            mine->holder = me;
            depot[depot_n - 1] = mine;
            pthread_mutex_unlock(&depot_lock);
            return next;
        }
        pthread_mutex_unlock(&depot_lock);
        sched_yield();
    }
}

static void leave(struct slots *mine, unsigned me)
{
    pthread_mutex_lock(&depot_lock);
    running--;
    mine->holder = me;
    depot[depot_n++] = mine;
    pthread_mutex_unlock(&depot_lock);
}

static void *run(void *arg)
{
    struct worker *me = arg;
    struct slots *mine = fill(me->idx, &me->rng);
    pthread_barrier_wait(&start_barrier);
    for (uint64_t step = 0; step < steps; step++) {
        uint64_t i = bench_below(&me->rng, nslots);
        if (mine->p[i]) {
            me->cross += mine->owner[i] != me->idx;
            me->frees++;
            free(mine->p[i]);
            me->ops++;
        }
        size_t n = random_size(&me->rng);
        unsigned char *p = malloc(n);
        me->ops++;
        if (p)
            p[0] = p[n - 1] = (unsigned char)step;
        else
            me->failures++;
        mine->p[i] = p;
        mine->owner[i] = (uint16_t)me->idx;
        if (nthreads > 1 && step % round_len == round_len - 1)
            mine = hand_over(mine, me->idx);
    }
    leave(mine, me->idx);
    pthread_barrier_wait(&end_barrier);
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: larson [-n STEPS] [-s SLOTS] [-r ROUND] [--name NAME] THREADS\n"
               "  -n  replacements per thread (default 1000000)\n"
               "  -s  slots per array (default 10000)\n"
               "  -r  replacements between two hand-overs (default 2500)\n");
}

int main(int argc, char **argv)
{
    const char *name_opt = NULL;
    bool csv = false, header = false;
    nthreads = 1;
    for (int i = 1; i < argc; i++) {
        if (bench_output_option(argc, argv, &i, &name_opt, &csv, &header))
            continue;
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-n") == 0 && next) {
            steps = bench_parse_num("larson", argv[++i], "-n", 1, UINT64_C(1) << 40);
        } else if (strcmp(a, "-s") == 0 && next) {
            nslots = bench_parse_num("larson", argv[++i], "-s", 1, UINT64_C(1) << 24);
        } else if (strcmp(a, "-r") == 0 && next) {
            round_len = bench_parse_num("larson", argv[++i], "-r", 1, UINT64_C(1) << 40);
        } else if (a[0] != '-') {
            nthreads = (unsigned)bench_parse_num("larson", a, "THREADS", 1, MAX_THREADS);
        } else {
            usage(stderr);
            return 2;
        }
    }
    workers = calloc(nthreads, sizeof *workers);
    running = nthreads;
    uint64_t rng = bench_mix64(4141) | 1;
    depot[depot_n++] = fill(nthreads, &rng); /* the spare array */
    depot[0]->holder = nthreads;
    pthread_barrier_init(&start_barrier, NULL, nthreads + 1);
    pthread_barrier_init(&end_barrier, NULL, nthreads + 1);
    for (unsigned t = 0; t < nthreads; t++) {
        workers[t].idx = t;
        workers[t].rng = bench_mix64(1000003u * (t + 1)) | 1;
        if (pthread_create(&workers[t].th, NULL, run, &workers[t]) != 0) {
            fprintf(stderr, "larson: pthread_create failed\n");
            return 1;
        }
    }
    pthread_barrier_wait(&start_barrier);
    struct mt_locks l0 = mt_locks_now();
    uint64_t t0 = bench_now_ns();
    pthread_barrier_wait(&end_barrier);
    uint64_t t1 = bench_now_ns();
    struct mt_locks l1 = mt_locks_now();
    uint64_t ops = 0, cross = 0, frees = 0, failures = 0;
    for (unsigned t = 0; t < nthreads; t++) {
        pthread_join(workers[t].th, NULL);
        ops += workers[t].ops;
        cross += workers[t].cross;
        frees += workers[t].frees;
        failures += workers[t].failures;
    }
    for (unsigned k = 0; k < depot_n; k++)
        drop(depot[k]);
    char name[64];
    bench_report_name(name, sizeof name, name_opt);
    mt_report("larson", name, nthreads, ops, (double)(t1 - t0) / 1e9, l0, l1, " cross_pct=%.1f",
              frees ? 100.0 * (double)cross / (double)frees : 0.0);
    if (failures)
        fprintf(stderr, "larson: %llu allocations returned NULL\n", (unsigned long long)failures);
    free(workers);
    return failures ? 1 : 0;
}
