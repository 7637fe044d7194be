/* test_regions.c - a heap of many regions (issue 7): a program that moves
 * the program break itself before every allocation forces every heap growth
 * into a region of its own. fitalloc must keep allocating past 1,000 regions
 * and 16 GiB of address space (blocks of 100 KB, untouched beyond their
 * headers), keep a sound heap, and take everything back.
 *
 * Then the region's own edges: free, realloc and malloc_usable_size of a
 * region's first address, of its last byte, and of an address in the
 * unused space at its end must end in SIGABRT with one line naming the
 * cause (the page map knows where payloads may start).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fitalloc.h"
#include "common.h"

#define KB ((size_t)1000)
#define GiB ((size_t)1 << 30)

struct regions {
    size_t count;
    uintptr_t first_start, first_size;
    uintptr_t last_start, last_size; /* the highest-addressed region */
    uintptr_t last_free, last_free_size; /* the last free block of that region */
};

static void region_cb(void *ctx, size_t addr, uint64_t size, uint32_t kind)
{
    struct regions *r = ctx;
    if (kind == FITALLOC_WALK_REGION) {
        if (r->count++ == 0) {
            r->first_start = addr;
            r->first_size = size;
        }
        if (addr >= r->last_start) {
            r->last_start = addr;
            r->last_size = size;
            r->last_free = 0;
        }
    } else if (kind == FITALLOC_WALK_FREE && r->last_start && addr >= r->last_start &&
               addr < r->last_start + r->last_size) {
        r->last_free = addr;
        r->last_free_size = size;
    }
}

static void many_regions(void)
{
    enum { MAX_BLOCKS = 200000 };
    static void *blocks[MAX_BLOCKS];
    size_t n = 0, nulls = 0;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    double t0 = now_s();
    while (n < MAX_BLOCKS) {
        if (sbrk(64) == (void *)-1) {
            diag("sbrk(64) failed after %zu blocks", n);
            break;
        }
        void *p = malloc(100 * KB);
        if (!p) {
            nulls++;
            break;
        }
        blocks[n++] = p;
        uintptr_t a = (uintptr_t)p;
        lo = a < lo ? a : lo;
        hi = a + 100 * KB > hi ? a + 100 * KB : hi;
        if (hi - lo >= 16 * GiB + GiB / 2 && n % 64 == 0)
            break;
    }
    struct regions r = {0};
    fitalloc_heap_walk(region_cb, &r);
    diag("%zu blocks of 100 KB in %.1f s, spanning %.2f GiB, %zu heap regions", n, now_s() - t0,
         (double)(hi - lo) / GiB, r.count);
    check(nulls == 0, "100 KB mallocs with the break moved before each: no NULL", "NULL after %zu blocks", n);
    check(r.count > 1000, "more than 1,000 heap regions", "%zu regions", r.count);
    check(hi - lo >= 16 * GiB, "blocks span at least 16 GiB of address space", "%.2f GiB", (double)(hi - lo) / GiB);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 with every block held", " ");
    for (size_t i = 0; i < n; i++)
        free(blocks[i]);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 after every block was freed", " ");
    struct fitalloc_stats st;
    fitalloc_stats(&st);
    check(st.in_use_blocks < 100, "every block was taken back", "%llu blocks in use",
          (unsigned long long)st.in_use_blocks);
}

/* ---- the edges of a region: each case in a child ---------------------------- */

enum { EDGE_FIRST, EDGE_LAST, EDGE_TOP };

static void misuse(const char *func, void *p)
{
    volatile size_t sink;
    p = hide_ptr(p);
    if (strcmp(func, "free") == 0)
        free(p);
    else if (strcmp(func, "realloc") == 0)
        sink = (size_t)(uintptr_t)realloc(p, hide_size(100));
    else
        sink = malloc_usable_size(p);
    (void)sink;
}

struct edge_misuse {
    const char *func;
    void *p;
};

static void misuse_child(void *arg)
{
    struct edge_misuse *m = arg;
    misuse(m->func, m->p);
}

static void edge_case(const char *func, int edge, const char *cause)
{
    /* The address is found in the parent (the child must not allocate
     * before the misuse), in a fresh region at the top of the heap. */
    void *keep = malloc(1000);
    struct regions r = {0};
    fitalloc_heap_walk(region_cb, &r);
    uintptr_t a = 0;
    switch (edge) {
    case EDGE_FIRST:
        a = r.last_start;
        break;
    case EDGE_LAST:
        a = r.last_start + r.last_size - 1;
        break;
    case EDGE_TOP:
        /* Near the end of the region's last free block (its unused top),
         * 16-aligned, a page before the region's end. */
        a = (r.last_start + r.last_size - 4096) & ~(uintptr_t)15;
        if (!r.last_free || a < r.last_free || a >= r.last_free + r.last_free_size) {
            check(0, "setup: the top region ends with free space", "no free block at the region's end");
            return;
        }
        break;
    }
    char name[160];
    const char *what[] = {"the region's first address", "the region's last byte", "the region's unused top"};
    snprintf(name, sizeof name, "%s(%s): SIGABRT, one line naming the cause", func, what[edge]);
    struct edge_misuse m = {func, (void *)a};
    char err[1024], want[64], addr[32];
    int status = run_child_stderr(misuse_child, &m, err, sizeof err, 60);
    snprintf(want, sizeof want, "fitalloc: %s(): ", func);
    snprintf(addr, sizeof addr, "%#lx", (unsigned long)a);
    check(aborted_with_one_line(status, err, want, cause, addr), name, "status %#x, stderr: %s (expected \"%s\" with %s)",
          status, err, cause, addr);
    free(keep);
}

/* ---- memory given back: a pointer into it was freed before ----------------- */

/* An 8 MiB heap block (the threshold raised: no mapping), freed into the
 * top and given back by malloc_trim(0), then a free inside it. */
static void free_after_trim(void *arg)
{
    (void)arg;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    char *big = malloc(hide_size(8 << 20));
    free(big);
    malloc_trim(0);
    free(hide_ptr(big + (4 << 20)));
}

/* An interior pointer of a large block already freed (and unmapped). */
static void interior_of_a_freed_large_block(void *arg)
{
    (void)arg;
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    char *a = malloc(hide_size(4 << 20));
    free(a);
    malloc_trim(0);
    free(hide_ptr(a + 4096));
}

static void given_back_case(void (*fn)(void *), const char *name, const char *cause)
{
    char err[1024];
    int status = run_child_stderr(fn, NULL, err, sizeof err, 60);
    check(aborted_with_one_line(status, err, "fitalloc: free(): ", cause, NULL), name,
          "status %#x, stderr: %s (expected \"%s\")", status, err, cause);
}

int main(void)
{
    given_back_case(free_after_trim, "free into heap memory malloc_trim gave back: named as freed before",
                    "already freed and given back to the system");
    given_back_case(interior_of_a_freed_large_block, "free inside a freed large block: named as freed before",
                    "inside a large block already freed");
    const char *funcs[] = {"free", "realloc", "malloc_usable_size"};
    for (int f = 0; f < 3; f++) {
        edge_case(funcs[f], EDGE_FIRST, "not a block start");
        edge_case(funcs[f], EDGE_LAST, "not a block start");
        edge_case(funcs[f], EDGE_TOP, "unused heap space");
    }
    many_regions();
    return tap_done("test_regions");
}
