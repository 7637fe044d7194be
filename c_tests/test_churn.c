/* test_churn.c - a size whose thread-cache list churns (issue 8).
 *
 * A single-threaded program that mallocs more blocks of one size than its
 * thread cache holds and frees them all, again and again (glibc's
 * bench-malloc-simple, mimalloc-bench's glibc-simple), overflows the list
 * home and empties it every round. While the process has one thread, small
 * requests take the heap's fragments first; a size whose list has
 * overflowed home takes slabs instead, where giving a block back is a bit
 * in a map rather than a coalescing. This
 * checks that it does (the blocks of a later round lie in slabs), that the
 * blocks stay distinct and intact, and that the heap stays sound.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fitalloc.h"
#include "common.h"

enum { BATCH = 400, SIZE = 32, ROUNDS = 12 };

static unsigned char *blocks[BATCH];

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(unsigned char *const *)a, y = (uintptr_t)*(unsigned char *const *)b;
    return x < y ? -1 : x > y;
}

int main(void)
{
    size_t slab_live = 0, overlaps = 0, bad = 0;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < BATCH; i++) {
            blocks[i] = malloc(hide_size(SIZE));
            memset(blocks[i], r * 7 + i, SIZE);
        }
        for (int i = 0; i < BATCH; i++)
            for (int g = 0; g < SIZE; g++)
                bad += blocks[i][g] != (unsigned char)(r * 7 + i);
        unsigned char *sorted[BATCH];
        memcpy(sorted, blocks, sizeof sorted);
        qsort(sorted, BATCH, sizeof sorted[0], cmp_ptr);
        for (int i = 1; i < BATCH; i++)
            overlaps += (uintptr_t)sorted[i] < (uintptr_t)sorted[i - 1] + SIZE;
        if (r == ROUNDS - 1) {
            struct fitalloc_stats s = stats();
            slab_live = (size_t)(s.slab_bytes - s.slab_free_bytes);
        }
        for (int i = 0; i < BATCH / 2; i++)
            free(blocks[i]);
        for (int i = BATCH; i-- > BATCH / 2;)
            free(blocks[i]);
    }
    check(overlaps == 0 && bad == 0, "12 rounds of 400 blocks of 32 bytes: distinct, contents intact",
          "%zu overlapping, %zu bytes changed", overlaps, bad);
    /* Blocks of 48 bytes (32 requested): at least half of the 400 live
     * blocks of the last round must lie in slabs. */
    check(slab_live >= BATCH / 2 * 48, "a churning size is served from slabs, not the heap's fragments",
          "%zu bytes of slab blocks in use with %d blocks of 48 bytes live", slab_live, BATCH);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 after the rounds", " ");
    return tap_done("test_churn");
}
