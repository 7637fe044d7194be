/*
 * churn.c - thread churn: N short-lived threads (default 10,000), run C at
 * a time.  Each allocates 100 blocks (16..1024 bytes; 1 in 16 up to 64
 * KiB), writes them, frees them; one thread in four leaves 4 of its blocks
 * behind, which the main thread frees after joining it (memory freed by a
 * thread that did not allocate it, after its owner has gone).  An
 * allocator that keeps per-thread memory after the thread exits grows
 * with N; one that does not ends near where it started.
 *
 * Reported: seconds for all N threads (creation and join included, the
 * same for every allocator), peak RSS, RSS before the first thread and at
 * the end (after every block is freed), in KiB.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "mtutil.h"

#define BLOCKS 100
#define LEFT 4
#define MAX_CONC 64

struct job {
    unsigned idx;
    void *left[LEFT];
};

static void *run(void *arg)
{
    struct job *j = arg;
    uint64_t rng = bench_mix64(j->idx) | 1;
    void *b[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        size_t n = bench_below(&rng, 16) == 0 ? 1025 + (size_t)bench_below(&rng, 65536 - 1024)
                                               : 16 + (size_t)bench_below(&rng, 1024 - 16 + 1);
        unsigned char *p = malloc(n);
        if (!p) {
            fprintf(stderr, "churn: malloc(%zu) returned NULL\n", n);
            exit(1);
        }
        memset(p, (int)i, n < 256 ? n : 256);
        p[n - 1] = (unsigned char)i;
        b[i] = p;
    }
    int keep = j->idx % 4 == 0 ? LEFT : 0;
    for (int i = 0; i < BLOCKS - keep; i++)
        free(b[i]);
    for (int i = 0; i < keep; i++)
        j->left[i] = b[BLOCKS - keep + i];
    return NULL;
}

int main(int argc, char **argv)
{
    const char *name_opt = NULL;
    bool csv = false, header = false;
    uint64_t total = 10000;
    unsigned conc = 4;
    for (int i = 1; i < argc; i++) {
        if (bench_output_option(argc, argv, &i, &name_opt, &csv, &header))
            continue;
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-n") == 0 && next) {
            total = bench_parse_num("churn", argv[++i], "-n", 1, UINT64_C(1) << 30);
        } else if (a[0] != '-') {
            conc = (unsigned)bench_parse_num("churn", a, "THREADS", 1, MAX_CONC);
        } else {
            fprintf(stderr, "usage: churn [-n THREADS_IN_ALL] [--name NAME] CONCURRENT\n");
            return 2;
        }
    }
    /* One warm-up thread, so that the C library's first-thread set-up
     * (and its cached stack) is in the baseline for every allocator. */
    struct job jobs[MAX_CONC];
    pthread_t th[MAX_CONC];
    memset(jobs, 0, sizeof jobs);
    jobs[0].idx = 1;
    pthread_create(&th[0], NULL, run, &jobs[0]);
    pthread_join(th[0], NULL);
    uint64_t base_kb = mt_rss_kb();
    struct mt_locks l0 = mt_locks_now();
    uint64_t t0 = bench_now_ns();
    for (uint64_t done = 0; done < total;) {
        unsigned n = total - done < conc ? (unsigned)(total - done) : conc;
        for (unsigned k = 0; k < n; k++) {
            memset(&jobs[k], 0, sizeof jobs[k]);
            jobs[k].idx = (unsigned)(done + k);
            if (pthread_create(&th[k], NULL, run, &jobs[k]) != 0) {
                fprintf(stderr, "churn: pthread_create failed\n");
                return 1;
            }
        }
        for (unsigned k = 0; k < n; k++) {
            pthread_join(th[k], NULL);
            for (int i = 0; i < LEFT; i++)
                free(jobs[k].left[i]);
        }
        done += n;
    }
    uint64_t t1 = bench_now_ns();
    struct mt_locks l1 = mt_locks_now();
    uint64_t end_kb = mt_rss_kb();
    char name[64];
    bench_report_name(name, sizeof name, name_opt);
    mt_report("churn", name, conc, total * BLOCKS * 2, (double)(t1 - t0) / 1e9, l0, l1,
              " base_rss_kb=%llu end_rss_kb=%llu", (unsigned long long)base_kb, (unsigned long long)end_kb);
    return 0;
}
