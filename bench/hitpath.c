/*
 * hitpath.c - instructions executed by one cached malloc and one cached
 * free, counted by callgrind (this machine, like many VMs, has no hardware
 * instruction counter).
 *
 * Run under `valgrind --tool=callgrind --collect-atstart=no`; the program
 * turns collection on only around the calls it measures, with callgrind's
 * client requests, and reads nothing itself: bench/hitpath.py divides the
 * collected instruction count by the number of calls.
 *
 * Mode "malloc": collection on around each malloc(SIZE) of a block that the
 * allocator just got back from free(SIZE) (a cache hit in every allocator
 * with a thread cache), with eight more blocks of the size live.  Mode "free": around each free of such a block.
 * Mode "none": around an empty out-of-line call, the cost of the toggles
 * themselves, which hitpath.py subtracts.
 *
 * With a third argument "threaded", a second thread is created and joined
 * first: the C library then counts the process as multi-threaded for the
 * rest of its life (glibc's __libc_single_threaded stays false), and so do
 * the allocators that read it, whose hit paths may differ (fitalloc's
 * reads a block header in three parts then, see src/block.rs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <valgrind/callgrind.h>

#define CALLS 100000

__attribute__((noinline)) static void *nothing(size_t n)
{
    __asm__ volatile("" ::"r"(n) : "memory");
    return NULL;
}

static void *idle_thread(void *arg)
{
    return arg;
}

/* C++'s operator new(size_t) and operator delete(void *), called from C
 * by their names (the program links libstdc++, whose own ones call malloc
 * and free when the allocator preloaded has none). */
void *_Znwm(size_t);
void _ZdlPv(void *);

static int cxx;

static void *take(size_t n)
{
    return cxx ? _Znwm(n) : malloc(n);
}

static void give(void *p)
{
    if (cxx)
        _ZdlPv(p);
    else
        free(p);
}

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 4 && strcmp(argv[3], "threaded") == 0)) {
        fprintf(stderr, "usage: hitpath malloc|free|none|new|delete|cxxnone SIZE [threaded]\n");
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "new") == 0 || strcmp(mode, "delete") == 0 || strcmp(mode, "cxxnone") == 0) {
        cxx = 1;
        mode = strcmp(mode, "new") == 0 ? "malloc" : strcmp(mode, "delete") == 0 ? "free" : "none";
    }
    size_t size = strtoull(argv[2], NULL, 10);
    if (argc == 4) {
        pthread_t t;
        if (pthread_create(&t, NULL, idle_thread, NULL) != 0 || pthread_join(t, NULL) != 0) {
            fprintf(stderr, "hitpath: cannot create a thread\n");
            return 1;
        }
    }
    /* Warm up: the thread's cache exists and holds blocks of this size.
     * Eight blocks of the size stay live throughout, so that the block
     * measured is never the last one of its page (mimalloc retires a page
     * whose last block is freed: with one block live, its free measured
     * 87 instructions, the page's retirement, not its hit path). */
    void *warm[64], *live[8];
    for (int i = 0; i < 64; i++)
        warm[i] = take(size);
    for (int i = 0; i < 8; i++)
        live[i] = take(size);
    for (int i = 0; i < 64; i++)
        give(warm[i]);
    __asm__ volatile("" ::"r"(live) : "memory");
    int m = strcmp(mode, "malloc") == 0, f = strcmp(mode, "free") == 0;
    for (int i = 0; i < CALLS && cxx; i++) {
        void *p;
        if (m) {
            CALLGRIND_TOGGLE_COLLECT;
            p = _Znwm(size);
            CALLGRIND_TOGGLE_COLLECT;
        } else {
            p = _Znwm(size);
        }
        __asm__ volatile("" ::"r"(p) : "memory");
        if (f) {
            CALLGRIND_TOGGLE_COLLECT;
            _ZdlPv(p);
            CALLGRIND_TOGGLE_COLLECT;
        } else if (!m) {
            CALLGRIND_TOGGLE_COLLECT;
            nothing(size);
            CALLGRIND_TOGGLE_COLLECT;
            _ZdlPv(p);
        } else {
            _ZdlPv(p);
        }
    }
    for (int i = 0; i < CALLS && !cxx; i++) {
        void *p;
        if (m) {
            CALLGRIND_TOGGLE_COLLECT;
            p = malloc(size);
            CALLGRIND_TOGGLE_COLLECT;
        } else {
            p = malloc(size);
        }
        __asm__ volatile("" ::"r"(p) : "memory");
        if (f) {
            CALLGRIND_TOGGLE_COLLECT;
            free(p);
            CALLGRIND_TOGGLE_COLLECT;
        } else if (!m) {
            CALLGRIND_TOGGLE_COLLECT;
            nothing(size);
            CALLGRIND_TOGGLE_COLLECT;
            free(p);
        } else {
            free(p);
        }
    }
    printf("calls %d\n", CALLS);
    return 0;
}
