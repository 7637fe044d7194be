/* large.c - memory that comes back (issue 10, items 11 and 14):
 *
 *   large pairs SIZE TOUCH N   N malloc/free pairs of SIZE bytes (every
 *                              page written when TOUCH is 1); prints the
 *                              median ns per pair over 5 rounds
 *   large spike                1 GiB of 64,000-byte blocks, all freed but
 *                              one in a thousand, then ordinary calls
 *                              (100 and 3,000 bytes) for 2 s; prints the
 *                              RSS above the start (KiB) right after the
 *                              frees, after 1 s and after 2 s, and the
 *                              live KiB
 *
 *   large grow N               N rounds: an 8 MiB buffer written and
 *                              freed, then a 4 KiB one grown by realloc,
 *                              doubling up to 4 MiB, each new half
 *                              written, and freed (sqlite grows its
 *                              buffers so); prints the median us per
 *                              round over 5 rounds and the peak RSS above
 *                              the start (KiB)
 *
 * Run under each allocator with LD_PRELOAD by bench/returns.py.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static size_t rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (size_t)sysconf(_SC_PAGESIZE) / 1024;
}

static void *volatile sink;

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void pairs(size_t size, int touch, long n)
{
    double t[5];
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (long i = 0; i < n; i++) {
            char *p = malloc(size);
            if (touch)
                for (size_t o = 0; o < size; o += 4096)
                    p[o] = (char)o;
            else
                p[0] = 1;
            sink = p;
            free(p);
        }
        t[r] = (now() - t0) / n * 1e9;
    }
    qsort(t, 5, sizeof t[0], cmp);
    printf("%.1f\n", t[2]);
}

static void ordinary(double secs)
{
    double end = now() + secs;
    while (now() < end) {
        for (int i = 0; i < 1000; i++) {
            void *volatile a = malloc(100);
            void *volatile b = malloc(3000);
            free(a);
            free(b);
        }
        usleep(10000);
    }
}

static void spike(void)
{
    enum { N = 16384 };
    static char *blocks[N];
    size_t base = rss_kib(), live = 0;
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(64000);
        memset(blocks[i], i, 64000);
    }
    for (int i = 0; i < N; i++) {
        if (i % 1000 == 999)
            live += 64000;
        else
            free(blocks[i]);
    }
    size_t r0 = rss_kib() - base;
    ordinary(1.0);
    size_t r1 = rss_kib() - base;
    ordinary(1.0);
    size_t r2 = rss_kib() - base;
    printf("%zu %zu %zu %zu\n", r0, r1, r2, live / 1024);
}

static size_t peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %zu kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static void grow(long n)
{
    size_t base = peak_rss_kib();
    double t[5];
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (long i = 0; i < n; i++) {
            char *big = malloc(8 << 20);
            memset(big, 1, 8 << 20);
            sink = big;
            free(big);
            size_t len = 4096;
            char *p = malloc(len);
            memset(p, 2, len);
            while (len < (4 << 20)) {
                p = realloc(p, 2 * len);
                memset(p + len, 3, len);
                len *= 2;
            }
            sink = p;
            free(p);
        }
        t[r] = (now() - t0) / n * 1e6;
    }
    qsort(t, 5, sizeof t[0], cmp);
    printf("%.1f %zu\n", t[2], peak_rss_kib() - base);
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "pairs") == 0)
        pairs(strtoul(argv[2], NULL, 0), atoi(argv[3]), atol(argv[4]));
    else if (argc == 2 && strcmp(argv[1], "spike") == 0)
        spike();
    else if (argc == 3 && strcmp(argv[1], "grow") == 0)
        grow(atol(argv[2]));
    else {
        fprintf(stderr, "usage: large pairs SIZE TOUCH N | large spike | large grow N\n");
        return 2;
    }
    return 0;
}
