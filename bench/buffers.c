/*
 * buffers.c - mimalloc-bench's malloc-large pattern, in C: 2,000 times, a
 * random one of 20 slots gets a new buffer of 5 to 25 MiB, every byte
 * written (as `std::make_unique<char[]>(n)` writes it), and its old buffer
 * is freed. Prints the seconds and the peak RSS; run it under each
 * allocator with LD_PRELOAD.
 *
 *     buffers [--name NAME]
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define SLOTS 20
#define ITERATIONS 2000
#define MIN_SIZE (5u << 20)
#define MAX_SIZE (25u << 20)

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

int main(int argc, char **argv)
{
    const char *name = argc > 2 && strcmp(argv[1], "--name") == 0 ? argv[2] : "default";
    static char *slot[SLOTS];
    uint64_t rng = 42;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < ITERATIONS; i++) {
        size_t k = next(&rng) % SLOTS;
        size_t n = MIN_SIZE + next(&rng) % (MAX_SIZE - MIN_SIZE + 1);
        char *p = malloc(n);
        if (!p) {
            fprintf(stderr, "buffers: malloc(%zu) failed\n", n);
            return 1;
        }
        memset(p, 0x5a, n); /* not 0: malloc and a zeroing memset may be folded into calloc */
        free(slot[k]);
        slot[k] = p;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    for (int k = 0; k < SLOTS; k++)
        free(slot[k]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("pattern=buffers allocator=%s seconds=%.3f peak_rss_kb=%ld\n", name,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, ru.ru_maxrss);
    return 0;
}
