/* test_return.c - memory that comes back (issue 10, items 11 and 14):
 * freed large mappings are kept for reuse (no mmap/munmap per malloc/free
 * pair of a large buffer), stay correct (calloc zeroes a reused one, a
 * second free is still a double free), and go back to the system after
 * FITALLOC_PURGE_MS unused; a kept mapping of another size is resized
 * (in place, or moved by mremap) rather than replaced, and a block split
 * off one grows into the tail kept beside it; after a spike of 1 GiB freed except one block
 * in a thousand, RSS falls back near the live bytes within two seconds of
 * further ordinary calls, without a call to malloc_trim; a program whose
 * use swings keeps its pages (the decay gives back only what stayed unused
 * a whole period).
 *
 * Item 10 under RLIMIT_AS: after rounds of 48 B, 3,000 B and 200,000 B
 * blocks filling the address space allowed, each freed, 8 MiB and 100 MiB
 * are served; and when the program keeps the last 48 B block (so the
 * heap's free space cannot go back), they come from that free space in
 * heap blocks above 1 MiB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fitalloc.h"
#include "common.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (size_t)sysconf(_SC_PAGESIZE);
}

static void *volatile sink;

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/* Ordinary calls for `secs`: small and heap-sized blocks, nothing large. */
static void ordinary_calls(double secs)
{
    double end = now_s() + secs;
    while (now_s() < end) {
        for (int i = 0; i < 1000; i++) {
            void *a = malloc(hide_size(100)), *b = malloc(hide_size(3000));
            sink = a;
            sink = b;
            free(a);
            free(b);
        }
        sleep_ms(10);
    }
}

static void kept_mappings(void)
{
    struct fitalloc_stats a = stats();
    for (int i = 0; i < 20000; i++) {
        char *p = malloc(1536 * KiB);
        p[0] = 1;
        sink = p;
        free(p);
    }
    struct fitalloc_stats b = stats();
    unsigned long long maps = b.mmap_calls - a.mmap_calls, unmaps = b.munmap_calls - a.munmap_calls;
    check(maps < 10 && unmaps < 10, "20,000 malloc/free pairs of 1.5 MiB reuse one kept mapping",
          "%llu mmap, %llu munmap calls", maps, unmaps);
    check(b.kept_mapped_bytes >= 1536 * KiB, "the freed mapping is counted as kept", "%llu bytes kept",
          (unsigned long long)b.kept_mapped_bytes);

    char *p = malloc(2 * MiB);
    memset(p, 0xab, 2 * MiB);
    free(p);
    unsigned char *z = calloc(1, 2 * MiB);
    size_t nonzero = 0;
    for (size_t i = 0; i < 2 * MiB; i++)
        nonzero += z[i] != 0;
    check(z && nonzero == 0, "calloc of a reused, dirtied mapping returns zeroes", "%zu non-zero bytes", nonzero);
    free(z);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 after the reuse", " ");

    /* A second free of a block whose mapping is kept is still a double free. */
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        char *q = malloc(3 * MiB);
        free(q);
        free(hide_ptr(q));
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    check(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "double free of a kept large block: SIGABRT",
          "status %#x", status);

    /* Kept mappings go back after the decay time. */
    char *big = malloc(8 * MiB);
    memset(big, 1, 8 * MiB);
    free(big);
    size_t kept = (size_t)stats().kept_mapped_bytes;
    ordinary_calls(2.5);
    size_t after = (size_t)stats().kept_mapped_bytes;
    check(kept >= 8 * MiB && after == 0, "kept mappings go back within 2.5 s of ordinary calls",
          "%zu bytes kept, %zu after", kept, after);
}

/* A kept mapping of another size is resized, not replaced: its resident
 * pages serve the next request (mimalloc-bench's malloc-large pattern,
 * buffers of 5 to 25 MiB replaced at random). A larger one is split: the
 * block takes its head and the tail stays kept, resident, for the next
 * request. */
static void resized_reuse(void)
{
    size_t sizes[][2] = {{6 * MiB, 20 * MiB}, {20 * MiB, 6 * MiB}};
    for (int k = 0; k < 2; k++) {
        size_t first = sizes[k][0], second = sizes[k][1];
        const char *how = first < second ? "grown" : "split";
        malloc_trim(0); /* no kept mapping but the one freed below */
        char *p = malloc(hide_size(first));
        memset(p, 0x5a, first);
        free(p);
        struct fitalloc_stats a = stats();
        unsigned char *q = malloc(hide_size(second));
        struct fitalloc_stats b = stats();
        /* Replaced would be an mmap for the block and a munmap of the kept
         * mapping. A mapping grown by moving it may land where the page map
         * has no leaf yet, which takes one mmap of the page map's own (seen
         * about once in 30 runs): so no munmap, and at most one mmap. */
        if (first < second)
            check(q && b.mmap_calls <= a.mmap_calls + 1 && b.munmap_calls == a.munmap_calls &&
                      b.mremap_calls == a.mremap_calls + 1,
                  "a kept 6 MiB mapping is grown for a 20 MiB request, not replaced",
                  "%llu mmap, %llu munmap, %llu mremap calls", (unsigned long long)(b.mmap_calls - a.mmap_calls),
                  (unsigned long long)(b.munmap_calls - a.munmap_calls),
                  (unsigned long long)(b.mremap_calls - a.mremap_calls));
        else
            check(q && b.mmap_calls == a.mmap_calls && b.munmap_calls == a.munmap_calls &&
                      b.mremap_calls == a.mremap_calls && b.kept_mapped_bytes >= first - second - 2 * 4096 &&
                      b.kept_mapped_bytes <= first - second + 4096,
                  "a kept 20 MiB mapping is split for a 6 MiB request: no system call, the 14 MiB tail kept",
                  "%llu mmap, %llu munmap, %llu mremap calls, %llu bytes kept",
                  (unsigned long long)(b.mmap_calls - a.mmap_calls),
                  (unsigned long long)(b.munmap_calls - a.munmap_calls),
                  (unsigned long long)(b.mremap_calls - a.mremap_calls), (unsigned long long)b.kept_mapped_bytes);
        long faults = minor_faults();
        memset(q, 0x33, second);
        faults = minor_faults() - faults;
        long most = (long)((second > first ? second - first : 0) / (size_t)sysconf(_SC_PAGESIZE)) + 64;
        check(q && faults <= most, "writing the resized block faults in only the pages it did not have",
              "%ld page faults, at most %ld expected (%s)", faults, most, how);
        free(q);
        /* calloc of a resized kept mapping: old bytes cleared, new pages zero. */
        p = malloc(hide_size(first));
        memset(p, 0x77, first);
        free(p);
        unsigned char *z = calloc(1, second);
        size_t nonzero = 0;
        for (size_t i = 0; z && i < second; i++)
            nonzero += z[i] != 0;
        check(z && nonzero == 0, "calloc of a resized kept mapping returns zeroes", "%zu non-zero bytes (%s)",
              nonzero, how);
        check(z && malloc_usable_size(z) >= second, "its usable size covers the request", "%zu usable (%s)",
              z ? malloc_usable_size(z) : 0, how);
        free(z);
    }
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 after resized reuse", " ");
    malloc_trim(0); /* the kept mapping goes back: the spike below measures from here */
    check(stats().kept_mapped_bytes == 0, "malloc_trim gives the kept mapping back", "%llu bytes kept",
          (unsigned long long)stats().kept_mapped_bytes);
}

/* A loop that mallocs, fills and frees a block the heap can hold but that
 * was mapped at first (1023 KiB) moves to the heap after the first free
 * (glibc's dynamic threshold): it used to keep its mapping, closed and
 * opened again every round (11.6 us a round against glibc's 0.75). */
static void threshold_at_the_heaps_limit(void)
{
    size_t size = 1023 * KiB;
    char *p = malloc(hide_size(size));
    memset(p, 1, size);
    unsigned long long first = stats().mapped_blocks;
    free(p);
    p = malloc(hide_size(size));
    memset(p, 2, size);
    unsigned long long second = stats().mapped_blocks;
    unsigned long long base = (free(p), stats().mapped_blocks);
    check(first == base + 1 && second == base,
          "a 1023 KiB block is mapped at first, and comes from the heap once one was freed",
          "mapped blocks: %llu with the first, %llu with the second, %llu with neither", first, second, base);
}

/* A block made of the head of a split kept mapping grows, by realloc, into
 * the tail kept beside it: in place, with no mmap or mremap, its bytes
 * kept, the tail's kept bytes shrinking by the growth. (It used to move
 * at every step: the tail held the range mremap wanted.) */
static void grown_into_kept_tail(void)
{
    malloc_trim(0);
    char *p = malloc(hide_size(8 * MiB));
    memset(p, 0x5a, 8 * MiB);
    free(p);
    unsigned char *q = malloc(hide_size(2 * MiB)); /* the kept 8 MiB split: 6 MiB kept */
    for (size_t i = 0; q && i < 2 * MiB; i++)
        q[i] = (unsigned char)(i * 7);
    struct fitalloc_stats a = stats();
    unsigned char *r = q;
    size_t steps = 0, moved = 0;
    for (size_t n = 3 * MiB; r && n <= 6 * MiB; n += MiB, steps++) {
        unsigned char *g = realloc(r, hide_size(n));
        moved += g != r;
        r = g;
        if (r)
            memset(r + n - MiB, 0x11, MiB);
    }
    struct fitalloc_stats b = stats();
    size_t wrong = 0;
    for (size_t i = 0; r && i < 2 * MiB; i++)
        wrong += r[i] != (unsigned char)(i * 7);
    check(r && moved == 0 && wrong == 0, "a block split off a kept mapping grows into its kept tail in place",
          "%zu of %zu steps moved, %zu bytes changed", moved, steps, wrong);
    check(b.mmap_calls == a.mmap_calls && b.mremap_calls == a.mremap_calls && b.munmap_calls == a.munmap_calls,
          "growing into the kept tail makes no mmap, mremap or munmap", "%llu mmap, %llu mremap, %llu munmap calls",
          (unsigned long long)(b.mmap_calls - a.mmap_calls), (unsigned long long)(b.mremap_calls - a.mremap_calls),
          (unsigned long long)(b.munmap_calls - a.munmap_calls));
    check(b.kept_mapped_bytes + 4 * MiB == a.kept_mapped_bytes,
          "the kept tail shrinks by what the block took", "%llu bytes kept before, %llu after",
          (unsigned long long)a.kept_mapped_bytes, (unsigned long long)b.kept_mapped_bytes);
    free(r);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 after growing into a kept tail", " ");
    malloc_trim(0);
}

/* A request no address space could hold fails at once, and gives nothing
 * back on the way: trimming the heap for it only made the next small
 * request grow it again (glibc's tst-malloc-too-large took 38 s, two brk
 * calls per failure). memalign(2^63, ...) is refused by its size check
 * (the check once wrapped around for that alignment). */
static void hopeless_requests(void)
{
    struct fitalloc_stats a = stats();
    int wrong = 0;
    for (int i = 0; i < 10000; i++) {
        void *volatile p = malloc(hide_size(16));
        free(p);
        errno = 0;
        void *q = memalign((size_t)1 << 63, hide_size(SIZE_MAX - 100));
        wrong += q != NULL || errno != ENOMEM;
        errno = 0;
        q = memalign(64, hide_size((size_t)1 << 50));
        wrong += q != NULL || errno != ENOMEM;
        errno = 0;
        q = malloc(hide_size((size_t)1 << 60));
        wrong += q != NULL || errno != ENOMEM;
    }
    struct fitalloc_stats b = stats();
    unsigned long long brks = b.sbrk_calls - a.sbrk_calls, unmaps = b.munmap_calls - a.munmap_calls;
    check(wrong == 0, "memalign(2^63, SIZE_MAX - 100), memalign(64, 2^50), malloc(2^60): NULL, ENOMEM",
          "%d wrong results in 30,000", wrong);
    check(brks < 10 && unmaps < 10, "10,000 rounds of a small block and three hopeless requests: the heap is not trimmed",
          "%llu sbrk, %llu munmap calls", brks, unmaps);
    /* Nor do they cost a kept mapping (one was taken, grown by a failing
     * mremap and unmapped; an aligned one gave back all of them). */
    void *k = malloc(hide_size(8 * MiB));
    memset(k, 1, 8 * MiB);
    free(k);
    a = stats();
    for (int i = 0; i < 100; i++) {
        sink = malloc(hide_size((size_t)1 << 60));
        sink = memalign(64, hide_size((size_t)1 << 60));
    }
    b = stats();
    check(b.kept_mapped_bytes == a.kept_mapped_bytes && b.munmap_calls == a.munmap_calls && b.mremap_calls == a.mremap_calls,
          "hopeless requests leave the kept mappings alone", "%llu bytes kept, %llu before; %llu munmap, %llu mremap calls",
          (unsigned long long)b.kept_mapped_bytes, (unsigned long long)a.kept_mapped_bytes,
          (unsigned long long)(b.munmap_calls - a.munmap_calls), (unsigned long long)(b.mremap_calls - a.mremap_calls));
    malloc_trim(0);
}

static void spike(void)
{
    enum { N = 16384 };
    static char *blocks[N];
    size_t size = 64000, live = 0;
    size_t base = rss_bytes();
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(size);
        memset(blocks[i], i, size);
    }
    size_t peak = rss_bytes();
    for (int i = 0; i < N; i++) {
        if (i % 1000 == 999)
            live += size;
        else
            free(blocks[i]);
    }
    /* Beside the live bytes: the page map keeps one 4-byte entry per page
     * of the heap's address space (0.1%; the heap's regions stay, since
     * live blocks are spread over them); each free run between live blocks
     * keeps the page of its header and links and the page of its footer;
     * the thread cache may hold 256 KiB, and the allocator's own tables a
     * few hundred more. */
    size_t heap = (size_t)stats().heap_bytes;
    size_t runs = N / 1000 + 1;
    size_t bound = live + live / 10 + heap / 1024 + runs * 2 * 4096 + 512 * KiB;
    double t0 = now_s();
    size_t rss = 0;
    while (now_s() - t0 < 2.0) {
        ordinary_calls(0.1);
        rss = rss_bytes() - base;
        if (rss <= bound)
            break;
    }
    diag("spike: %.0f MiB at peak, %zu KiB live; %zu KiB above the start after %.2f s (bound %zu KiB)",
         (peak - base) / 1048576.0, live / 1024, rss / 1024, now_s() - t0, bound / 1024);
    check(rss <= bound,
          "after a 1 GiB spike freed but 1 block in 1,000, RSS falls to live + 10% + the page map within 2 s",
          "%zu KiB above the start for %zu KiB live (bound %zu KiB)", rss / 1024, live / 1024, bound / 1024);
    for (int i = 999; i < N; i += 1000)
        free(blocks[i]);
}

/* A program whose use swings: 32 MiB of heap blocks allocated, written
 * and freed, round after round, with a pause at each trough (where the
 * once-a-second decay tends to fall). A live block after them keeps their
 * free space off the heap's top (which the trim threshold gives back at
 * once, as glibc's does). The decay gives back only what stayed unused a
 * whole period: the rounds after the first fault in (almost) nothing.
 * Giving back all the free space at each decay, as the decay did before,
 * cost a fault per page and round after each trough it fell on. Once the
 * swings stop, the free space still goes back within 2.5 s. */
static void swings(void)
{
    enum { N = 512, ROUNDS = 9 };
    static char *blocks[N];
    size_t size = 64000;
    long faults = 0;
    char *pin = NULL;
    for (int r = 0; r < ROUNDS; r++) {
        long f0 = minor_faults();
        for (int i = 0; i < N; i++) {
            blocks[i] = malloc(hide_size(size));
            memset(blocks[i], r + i, size);
        }
        if (!pin)
            pin = malloc(hide_size(size));
        for (int i = 0; i < N; i++)
            free(blocks[i]);
        if (r > 0)
            faults += minor_faults() - f0;
        ordinary_calls(0.3);
    }
    long pages = (long)(N * size / 4096);
    diag("swings: %ld faults in %d rounds after the first (%ld pages a round)", faults, ROUNDS - 1, pages);
    check(faults < pages / 4, "rounds of 32 MiB allocated and freed over 3 s: the decay leaves their pages",
          "%ld faults in %d rounds (%ld pages a round)", faults, ROUNDS - 1, pages);
    size_t before = rss_bytes();
    double t0 = now_s();
    while (now_s() - t0 < 2.5 && before - rss_bytes() < N * size / 2)
        ordinary_calls(0.1);
    size_t after = rss_bytes();
    check(before > after && before - after >= N * size / 2, "once the swings stop, their pages go back within 2.5 s",
          "RSS %zu KiB -> %zu KiB after %.2f s", before / 1024, after / 1024, now_s() - t0);
    free(pin);
}

/* Fills memory (under RLIMIT_AS) with blocks of `size` until malloc
 * fails, then frees them all; returns how many there were. */
static size_t fill_and_free(size_t size)
{
    void *list = NULL;
    size_t n = 0;
    for (void *p; (p = malloc(size)); n++) {
        *(void **)p = list;
        list = p;
    }
    while (list) {
        void *next = *(void **)list;
        free(list);
        list = next;
    }
    return n;
}

static size_t vsz_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0;
    if (f) {
        if (fscanf(f, "%lu", &size) != 1)
            size = 0;
        fclose(f);
    }
    return size * (size_t)sysconf(_SC_PAGESIZE);
}

/* Writes `c` over the n bytes at p and reads them back. */
static int writable(char *p, size_t n, int c)
{
    memset(p, c, n);
    for (size_t i = 0; i < n; i += 4093)
        if (p[i] != (char)c)
            return 0;
    return p[n - 1] == (char)c;
}

/* Freed memory is reusable for anything: rounds of 48-byte, 3,000-byte and
 * 200,000-byte blocks fill the address space allowed and are freed, then
 * 8 MiB and 100 MiB must be served (glibc serves both). In a child, which
 * reports through its exit status. */
static void reusable_for_anything(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        size_t limit = vsz_bytes() + 384 * MiB;
        struct rlimit r = {limit, limit};
        if (setrlimit(RLIMIT_AS, &r) != 0)
            _exit(10);
        size_t a = fill_and_free(48), b = fill_and_free(3000), c = fill_and_free(200000);
        char *p = malloc(8 * MiB);
        if (p && !writable(p, 8 * MiB, 0x5a))
            _exit(3);
        free(p);
        char *q = malloc(100 * MiB);
        if (q && !writable(q, 100 * MiB, 0xa5))
            _exit(4);
        free(q);
        if (a < 1000 || b < 1000 || c < 100)
            _exit(11);
        _exit(p ? q ? 0 : 2 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "under RLIMIT_AS, after rounds of 48 B, 3,000 B and 200,000 B blocks all freed, 8 MiB and 100 MiB are served",
          "status %#x (exit 1: 8 MiB failed, 2: 100 MiB failed, 3/4: not writable)", status);
}

/* Fills memory with blocks of `size` until malloc fails, then frees all
 * of them but the last one, which it returns (its address is the highest
 * the round reached: the end of the heap for small blocks). */
static void *fill_and_free_but_last(size_t size, size_t *count)
{
    void *list = NULL, *last = NULL;
    size_t n = 0;
    for (void *p; (p = malloc(size)); n++) {
        *(void **)p = list;
        list = p;
    }
    last = list;
    if (list)
        list = *(void **)list;
    while (list) {
        void *next = *(void **)list;
        free(list);
        list = next;
    }
    *count = n;
    return last;
}

/* The same rounds, but the program keeps one 48-byte block, the last one
 * it got: it sits at the end of the heap, so the heap's free space (a few
 * hundred MB below it, in one piece) cannot go back to the system, and no
 * mapping of 8 MiB can be made. The heap must serve both requests from
 * that space (as glibc does); before its blocks could exceed 1 MiB, both
 * returned NULL. The child exits 0 when both were served, writable and
 * freed, and the heap checks clean. */
static void reusable_below_a_live_block(void)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        size_t limit = vsz_bytes() + 384 * MiB;
        struct rlimit r = {limit, limit};
        if (setrlimit(RLIMIT_AS, &r) != 0)
            _exit(10);
        size_t a, b, c;
        void *pin = fill_and_free_but_last(48, &a);
        b = fill_and_free(3000);
        c = fill_and_free(200000);
        if (!pin || a < 1000 || b < 1000 || c < 100)
            _exit(11);
        char *p = malloc(8 * MiB);
        if (!p)
            _exit(1);
        if (!writable(p, 8 * MiB, 0x5a))
            _exit(3);
        char *q = malloc(100 * MiB);
        if (!q)
            _exit(2);
        if (!writable(q, 100 * MiB, 0xa5) || p[8 * MiB - 1] != 0x5a)
            _exit(4);
        if (heap_problems() != 0)
            _exit(5);
        /* The big heap block grows and shrinks in place (the space after
         * it is free), keeping its contents. */
        char *g = realloc(q, 150 * MiB);
        if (g != q || g[100 * MiB - 1] != (char)0xa5 || !writable(g, 150 * MiB, 0x3c))
            _exit(12);
        g = realloc(q, 20 * MiB);
        if (g != q || g[20 * MiB - 1] != 0x3c)
            _exit(13);
        free(p);
        free(q);
        if (heap_problems() != 0)
            _exit(6);
        /* Served again from the same space once freed. */
        p = malloc(100 * MiB);
        if (!p || !writable(p, 100 * MiB, 1))
            _exit(7);
        free(p);
        free(pin);
        _exit(heap_problems() == 0 ? 0 : 8);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "under RLIMIT_AS, the same rounds with the last 48 B block kept at the heap's end: 8 MiB and 100 MiB "
          "come from the free heap space below it, writable, realloc'd in place to 150 MiB and 20 MiB, freed, "
          "served again",
          "status %#x (exit 1: 8 MiB failed, 2: 100 MiB failed, 3/4: not writable, 5/6/8: heap check, 7: "
          "100 MiB again, 12/13: realloc not in place or contents lost)",
          status);
}

int main(void)
{
    kept_mappings();
    resized_reuse();
    grown_into_kept_tail();
    threshold_at_the_heaps_limit();
    hopeless_requests();
    spike();
    swings();
    reusable_for_anything();
    reusable_below_a_live_block();
    return tap_done("test_return");
}
