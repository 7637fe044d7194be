/*
 * micro.c - small-object malloc/free cost with few and with many blocks
 * live.
 *
 * For each live count L (default 1,000 and 100,000): allocate L blocks of
 * random size 16..256 bytes, run L untimed replacements so that the heap
 * reaches its steady mix, then time N replacements.  A replacement frees a
 * random live block and mallocs a new random size in its place, then
 * writes its first byte.  Reported: ns per replacement (one free + one
 * malloc).  The two cases differ only in how many blocks are live, i.e. in
 * how far apart in memory consecutive operations land: an allocator whose
 * cost grows with the heap (free-list search, cache misses on metadata)
 * slows down in the 100,000 case.  Sizes and indices come from a fixed
 * seed, so every allocator sees the same requests.
 *
 * Mid-size cases (-m L; default one, of 1,000 blocks): the same with sizes
 * of 1..16 KiB, above every thread cache (glibc's 1,032 bytes, fitalloc's
 * 1 KiB) and most size classes: each replacement goes through the heap's
 * free lists and trees, as rptest's and t-test1's do.
 *
 * Batch cases (default 400 and 1,600 blocks; glibc's bench-malloc-simple,
 * which mimalloc-bench runs as glibc-simple): malloc B blocks of 32 bytes,
 * writing each whole, then free the first half in the order they came and
 * the second half in reverse; repeated until N blocks went through.
 * Reported: ns per block (one malloc + one free).  More blocks than a
 * thread cache holds go back and forth between the cache and its source
 * each round.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "benchutil.h"

#define MAX_CASES 16

/* A case: `live` blocks of random sizes in [lo, hi]. */
struct mcase { uint64_t live; size_t lo, hi; const char *kind; };

static size_t case_size(const struct mcase *c, uint64_t *rng)
{
    return c->lo + (size_t)bench_below(rng, c->hi - c->lo + 1);
}

/* A table of block pointers, mmapped so that it is not itself on the
 * heap. */
static unsigned char **map_slots(size_t bytes)
{
    unsigned char **slot = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (slot == MAP_FAILED) {
        fprintf(stderr, "micro: cannot map %zu bytes\n", bytes);
        exit(1);
    }
    return slot;
}

/* Returns ns per replacement. */
static double run_case(const struct mcase *c, uint64_t pairs, uint64_t seed,
                       uint64_t *failures)
{
    uint64_t live = c->live;
    size_t bytes = live * sizeof(unsigned char *);
    unsigned char **slot = map_slots(bytes);
    uint64_t rng = bench_mix64(seed * 7919 + live) | 1;
    for (uint64_t i = 0; i < live; i++) {
        size_t n = case_size(c, &rng);
        slot[i] = malloc(n);
        if (slot[i])
            slot[i][0] = (unsigned char)i;
        else
            ++*failures;
    }
    /* Untimed warm-up: as many replacements as there are blocks. */
    for (uint64_t k = 0; k < live; k++) {
        uint64_t i = bench_below(&rng, live);
        free(slot[i]);
        slot[i] = malloc(case_size(c, &rng));
        if (slot[i])
            slot[i][0] = (unsigned char)k;
    }
    uint64_t t0 = bench_now_ns();
    for (uint64_t k = 0; k < pairs; k++) {
        uint64_t i = bench_below(&rng, live);
        free(slot[i]);
        unsigned char *p = malloc(case_size(c, &rng));
        if (__builtin_expect(p != NULL, 1))
            p[0] = (unsigned char)k;
        else
            ++*failures;
        slot[i] = p;
    }
    uint64_t t1 = bench_now_ns();
    for (uint64_t i = 0; i < live; i++)
        free(slot[i]);
    munmap(slot, bytes);
    return (double)(t1 - t0) / (double)pairs;
}

/* Returns ns per block of a batch case of `batch` blocks. */
static double run_batch(uint64_t batch, uint64_t blocks, uint64_t *failures)
{
    enum { SIZE = 32 };
    size_t bytes = batch * sizeof(unsigned char *);
    unsigned char **slot = map_slots(bytes);
    uint64_t rounds = blocks / batch ? blocks / batch : 1;
    uint64_t t0 = 0;
    /* One untimed round first. */
    for (uint64_t r = 0; r <= rounds; r++) {
        if (r == 1)
            t0 = bench_now_ns();
        for (uint64_t i = 0; i < batch; i++) {
            slot[i] = malloc(SIZE);
            if (__builtin_expect(slot[i] != NULL, 1))
                for (unsigned g = 0; g < SIZE; g++)
                    ((volatile unsigned char *)slot[i])[g] = (unsigned char)g;
            else
                ++*failures;
        }
        for (uint64_t i = 0; i < batch / 2; i++)
            free(slot[i]);
        for (uint64_t i = batch; i-- > batch / 2;)
            free(slot[i]);
    }
    uint64_t t1 = bench_now_ns();
    munmap(slot, bytes);
    return (double)(t1 - t0) / (double)(rounds * batch);
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: micro [options]\n"
"  -n N     timed replacements per case (default 5000000)\n"
"  -l L     live blocks of 16..256 B; repeat for several cases (default 1000\n"
"           and 100000)\n"
"  -m L     live blocks of 1..16 KiB; repeat for several (default 1000)\n"
"  -b B     batch case of B blocks; repeat for several (default 400 and 1600;\n"
"           -b 0: none)\n"
"  -s S     seed (default 1)\n"
"  --name NAME  allocator name to report\n"
"  --csv    one CSV line per case;  --header  print the header line first\n");
}

int main(int argc, char **argv)
{
    uint64_t pairs = 5000000, seed = 1, batches[MAX_CASES];
    struct mcase cases[MAX_CASES];
    size_t ncases = 0, nbatches = 0;
    bool small_given = false, mid_given = false;
    bool batch_given = false;
    bool csv = false, header = false;
    const char *name_opt = NULL;
    for (int i = 1; i < argc; i++) {
        if (bench_output_option(argc, argv, &i, &name_opt, &csv, &header))
            continue;
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-n") == 0 && next) {
            pairs = bench_parse_num("micro", argv[++i], "-n", 1,
                                    UINT64_C(1) << 40);
        } else if ((strcmp(a, "-l") == 0 || strcmp(a, "-m") == 0) && next) {
            if (ncases == MAX_CASES) {
                fprintf(stderr, "micro: at most %d -l and -m options\n", MAX_CASES);
                return 2;
            }
            bool mid = a[1] == 'm';
            uint64_t live = bench_parse_num("micro", argv[++i], a, 1, UINT64_C(1) << 30);
            if (mid)
                cases[ncases++] = (struct mcase){live, 1024, 16384, "mid"};
            else
                cases[ncases++] = (struct mcase){live, 16, 256, "micro"};
            small_given |= !mid;
            mid_given |= mid;
        } else if (strcmp(a, "-b") == 0 && next) {
            if (nbatches == MAX_CASES) {
                fprintf(stderr, "micro: at most %d -b options\n", MAX_CASES);
                return 2;
            }
            batch_given = true;
            uint64_t b = bench_parse_num("micro", argv[++i], "-b", 0, UINT64_C(1) << 24);
            if (b > 0)
                batches[nbatches++] = b;
        } else if (strcmp(a, "-s") == 0 && next) {
            seed = bench_parse_num("micro", argv[++i], "-s", 0, UINT64_MAX);
        } else {
            fprintf(stderr, "micro: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!small_given && !mid_given) {
        cases[ncases++] = (struct mcase){1000, 16, 256, "micro"};
        cases[ncases++] = (struct mcase){100000, 16, 256, "micro"};
        cases[ncases++] = (struct mcase){1000, 1024, 16384, "mid"};
    }
    if (!batch_given) {
        batches[nbatches++] = 400;
        batches[nbatches++] = 1600;
    }
    char name[64];
    bench_report_name(name, sizeof name, name_opt);
    if (csv && header)
        puts("bench,allocator,live,pairs,ns_pair");
    uint64_t failures = 0;
    double first = 0;
    for (size_t c = 0; c < ncases; c++) {
        double ns = run_case(&cases[c], pairs, seed, &failures);
        if (c == 0)
            first = ns;
        if (csv) {
            printf("%s-%" PRIu64 ",%s,%" PRIu64 ",%" PRIu64 ",%.2f\n",
                   cases[c].kind, cases[c].live, name, cases[c].live, pairs, ns);
        } else {
            printf("micro: %s, %7" PRIu64 " live of %zu..%zu B: %.2f ns per free+malloc",
                   name, cases[c].live, cases[c].lo, cases[c].hi, ns);
            if (c > 0 && first > 0 && cases[c].lo == cases[0].lo)
                printf(" (%.1fx the first case)", ns / first);
            printf("\n");
        }
        fflush(stdout);
    }
    for (size_t c = 0; c < nbatches; c++) {
        double ns = run_batch(batches[c], pairs, &failures);
        if (csv)
            printf("batch-%" PRIu64 ",%s,%" PRIu64 ",%" PRIu64 ",%.2f\n",
                   batches[c], name, batches[c], pairs, ns);
        else
            printf("micro: %s, batches of %5" PRIu64 ": %.2f ns per malloc+free\n",
                   name, batches[c], ns);
        fflush(stdout);
    }
    if (failures)
        fprintf(stderr, "micro: %" PRIu64 " allocations returned NULL\n",
                failures);
    return failures ? 1 : 0;
}
