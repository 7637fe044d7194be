/* test_arenas.c - several heaps (arenas), each with its own lock (issue 9).
 *
 * The test runs itself again with FITALLOC_ARENAS=4 (read at start-up), so
 * that it covers four arenas on any machine. Four threads, given arenas
 * round-robin, each fill their heap with blocks too large for the thread
 * caches; then each frees and reallocates the blocks of another thread, so
 * that every block goes back to the heap of the arena that made it, from a
 * thread of another arena. After each step the heap checker (which checks
 * each arena's heap against its own regions) must find nothing, the
 * statistics must count the blocks back, malloc_trim must work on every
 * arena, and a child forked while the other threads hold their heaps' locks
 * in turn must be able to allocate from all of them.
 */
#define _GNU_SOURCE
#include <malloc.h>

#include "common.h"

#define THREADS 4
#define BLOCKS 3000

static void *blocks[THREADS][BLOCKS];
static size_t sizes[THREADS][BLOCKS];
static pthread_barrier_t step;

static void *worker(void *arg)
{
    int me = (int)(intptr_t)arg, other = (me + 1) % THREADS;
    struct rng rng;
    rng_seed(&rng, (uint64_t)(me + 1));
    /* 1: fill this thread's arena with heap-sized blocks. */
    for (int i = 0; i < BLOCKS; i++) {
        size_t n = rng_range(&rng, 1100, 7100);
        unsigned char *p = malloc(hide_size(n));
        if (!p) {
            thread_err("malloc(%zu) failed", n);
            break;
        }
        pat_fill(p, n, (uint64_t)(me * BLOCKS + i));
        blocks[me][i] = p;
        sizes[me][i] = n;
    }
    pthread_barrier_wait(&step); /* main checks the heaps */
    pthread_barrier_wait(&step);
    /* 2: the next thread's blocks, checked, half reallocated (in place in
     * their arena or moved to ours), half freed: cross-arena frees. */
    for (int i = 0; i < BLOCKS; i++) {
        unsigned char *p = blocks[other][i];
        size_t n = sizes[other][i];
        if (!p)
            continue;
        if (pat_check(p, n, (uint64_t)(other * BLOCKS + i)) != SIZE_MAX) {
            thread_err("block %d of thread %d was overwritten", i, other);
            break;
        }
        if (i % 2) {
            size_t m = n + 512 - rng_range(&rng, 0, 1024);
            unsigned char *q = realloc(p, hide_size(m));
            if (!q) {
                thread_err("realloc(%zu) failed", m);
                break;
            }
            if (pat_check(q, n < m ? n : m, (uint64_t)(other * BLOCKS + i)) != SIZE_MAX) {
                thread_err("realloc lost the contents of block %d", i);
                break;
            }
            free(q);
        } else {
            free(p);
        }
        blocks[other][i] = NULL;
    }
    pthread_barrier_wait(&step);
    return NULL;
}

static int run(void)
{
    const char *want = getenv("FITALLOC_EXPECT");
    int expect = want && *want == '1';
    free(malloc(hide_size(32)));
    struct fitalloc_stats s0 = stats();
    if (expect)
        check(s0.version >= 4 && s0.arenas == 4, "FITALLOC_ARENAS=4: four arenas", "version %llu arenas %llu",
              (unsigned long long)s0.version, (unsigned long long)s0.arenas);

    pthread_barrier_init(&step, NULL, THREADS + 1);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0) {
            check(0, "pthread_create", "failed");
            return tap_done("test_arenas");
        }
    pthread_barrier_wait(&step);
    struct fitalloc_stats s1 = stats();
    check(thread_err_count() == 0, "four threads filled their arenas", "%s", first_error);
    if (expect)
        check(s1.arenas_with_memory == 4, "every arena holds memory (threads are given arenas round-robin)",
              "%llu of %llu arenas hold memory", (unsigned long long)s1.arenas_with_memory,
              (unsigned long long)s1.arenas);

    /* A fork while the workers run: the child must find every arena's
     * lock free and its heap whole. */
    pthread_barrier_wait(&step);
    pid_t pid = fork();
    if (pid == 0) {
        int bad = 0;
        void *p[64];
        for (int round = 0; round < 8; round++) {
            for (int i = 0; i < 64; i++)
                p[i] = malloc(hide_size(1200 + (size_t)i * 97));
            for (int i = 0; i < 64; i++)
                free(p[i]);
        }
        bad |= fitalloc_check_heap() != 0;
        _exit(bad ? 3 : 0);
    }
    int status = 0;
    if (pid > 0)
        waitpid(pid, &status, 0);
    check(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a child forked amid cross-arena frees allocates and its heap checks clean", "status %#x", status);

    pthread_barrier_wait(&step);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    check(thread_err_count() == 0, "cross-arena frees and reallocs kept every block's contents", "%s", first_error);
    struct fitalloc_stats s2 = stats();
    check(s2.in_use_bytes <= s0.in_use_bytes + 64 * 1024, "every block came back to its heap",
          "in use %llu bytes, %llu at start", (unsigned long long)s2.in_use_bytes,
          (unsigned long long)s0.in_use_bytes);
    malloc_trim(0);
    struct fitalloc_stats s3 = stats();
    check(s3.heap_bytes <= s2.heap_bytes, "malloc_trim gives back from every arena", "heap %llu -> %llu bytes",
          (unsigned long long)s2.heap_bytes, (unsigned long long)s3.heap_bytes);
    return tap_done("test_arenas");
}

int main(int argc, char **argv)
{
    (void)argc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!getenv("FITALLOC_ARENAS")) {
        setenv("FITALLOC_ARENAS", "4", 1);
        execv("/proc/self/exe", argv);
        perror("test_arenas: execv");
        return 1;
    }
    return run();
}
