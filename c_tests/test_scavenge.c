/* test_scavenge.c - a thread cache gives back what it keeps idle (issue 8).
 *
 * A thread cache's list that never overflows keeps its blocks for good
 * unless something takes them back. While the process has one thread,
 * every 64 refills the cache sends home half of what each list kept idle
 * since the previous such scavenge (the fewer of its blocks then and now,
 * for a list that did not run empty in between).
 *
 * This frees 16 blocks of one size (they wait in the cache), then makes
 * many refills of other sizes without touching that size: most of the 16
 * must have left the cache (found with fitalloc_heap_walk), a size in use
 * must keep serving from the cache, every block stays intact, and the heap
 * stays sound.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fitalloc.h"
#include "common.h"

enum { IDLE = 16, IDLE_SIZE = 200, KEPT = 4000, SIZES = 24 };

static void *idle[IDLE];
static unsigned char *kept[KEPT];

/* Walk callback: how many of the idle blocks wait in a thread cache (a
 * block's address is its header's, 4 bytes before the payload). */
static void count_idle_cached(void *ctx, size_t addr, uint64_t size, uint32_t kind)
{
    size_t *n = ctx;
    (void)size;
    if (kind != FITALLOC_WALK_CACHED)
        return;
    for (int i = 0; i < IDLE; i++)
        *n += (void *)(addr + 4) == idle[i];
}

static size_t idle_cached(void)
{
    size_t n = 0;
    fitalloc_heap_walk(count_idle_cached, &n);
    return n;
}

static size_t kept_size(int i)
{
    return 48 + (size_t)(i % SIZES) * 40;
}

int main(void)
{
    for (int i = 0; i < IDLE; i++)
        idle[i] = malloc(hide_size(IDLE_SIZE));
    for (int i = 0; i < IDLE; i++)
        free(idle[i]);
    size_t before = idle_cached();
    check(before == IDLE, "16 freed blocks of 200 bytes wait in the thread cache", "%zu of 16 cached", before);

    /* Blocks of 24 other sizes, kept: each size's list runs empty and is
     * refilled again and again (hundreds of refills in all). A block of
     * 100 bytes is taken and freed between them: a size in use. */
    void *in_use = malloc(hide_size(100));
    free(in_use);
    int reused = 0;
    for (int i = 0; i < KEPT; i++) {
        kept[i] = malloc(hide_size(kept_size(i)));
        memset(kept[i], i & 0xff, kept_size(i));
        void *p = malloc(hide_size(100));
        reused += p == in_use;
        free(p);
    }
    size_t after = idle_cached();
    check(after <= IDLE / 2, "after hundreds of refills of other sizes, most of the idle blocks left the cache",
          "%zu of 16 still cached", after);
    check(reused == KEPT, "a size in use keeps being served from the cache (the same block every time)",
          "%d of %d", reused, KEPT);

    size_t bad = 0;
    for (int i = 0; i < KEPT; i++)
        for (size_t g = 0; g < kept_size(i); g++)
            bad += kept[i][g] != (unsigned char)(i & 0xff);
    check(bad == 0, "4,000 kept blocks of 24 sizes keep their contents", "%zu bytes changed", bad);

    /* The idle size again: served (from the heap now), aligned, intact. */
    void *again[IDLE];
    size_t misaligned = 0;
    for (int i = 0; i < IDLE; i++) {
        again[i] = malloc(hide_size(IDLE_SIZE));
        misaligned += again[i] == NULL || ((uintptr_t)again[i] & 15) != 0;
        memset(again[i], 0xa5, IDLE_SIZE);
    }
    check(misaligned == 0, "the idle size is served again after its blocks went home", "%zu failed or misaligned",
          misaligned);
    for (int i = 0; i < IDLE; i++)
        free(again[i]);
    for (int i = 0; i < KEPT; i++)
        free(kept[i]);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at the end", " ");
    return tap_done("test_scavenge");
}
