/* The heap profiler's test program, driven by scripts/profile_test.sh
 * through `fitalloc profile`: call sites with known live bytes, one that
 * leaves holes between its blocks (and so pins free pages), one whose
 * blocks are all freed, one in another thread, and a dump on demand.
 *
 *   keep_dense    2,000 blocks of 2,000 bytes, kept, side by side (~3.8 MiB)
 *   pin_pages     2,000 blocks of 2,000 bytes, kept, each between two
 *                 blocks of make_holes that are freed afterwards (~3.8 MiB
 *                 live, ~7.6 MiB of free holes it pins)
 *   churn         64 MiB allocated and freed: nothing live
 *   thread_keep   2 MiB kept in 256-byte blocks by a second thread
 *
 * argv[1]: where to write a dump on demand (fitalloc_profile_dump), taken
 * after keep_dense only ("-": none); argv[2]: the exit status to return;
 * argv[3] "raise": raise SIGUSR2 after keep_dense (the profile snapshot
 * signal, FITALLOC_PROFILE_SIGNAL=USR2; uncaught, it ends the program).
 * Links against nothing of fitalloc's: the dump function is looked up. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 2000
#define SIZE 2000

static void *dense[N], *pinned[N], *holes[2 * N];
static void *threaded[8192];

/* Each site is its own frame: not inlined (and built with
 * -fno-optimize-sibling-calls, so not a tail call). */
#define SITE __attribute__((noinline))

SITE static void *keep_dense(size_t n) { void *p = malloc(n); memset(p, 1, n); return p; }
SITE static void *pin_pages(size_t n) { void *p = malloc(n); memset(p, 2, n); return p; }
SITE static void *make_holes(size_t n) { void *p = malloc(n); memset(p, 3, n); return p; }
SITE static void *churn(size_t n) { void *p = malloc(n); memset(p, 4, 64); return p; }
SITE static void *thread_keep(size_t n) { void *p = malloc(n); memset(p, 5, n); return p; }

static void *thread_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < 8192; i++)
        threaded[i] = thread_keep(256);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *dump_path = argc > 1 && strcmp(argv[1], "-") != 0 ? argv[1] : NULL;
    int status = argc > 2 ? atoi(argv[2]) : 0;
    int raise_signal = argc > 3 && strcmp(argv[3], "raise") == 0;

    for (int i = 0; i < N; i++)
        dense[i] = keep_dense(SIZE);

    int (*dump)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "fitalloc_profile_dump");
    if (dump_path && dump) {
        if (dump(dump_path) != 0) {
            fprintf(stderr, "test_profile: fitalloc_profile_dump(%s) failed\n", dump_path);
            return 99;
        }
    }
    if (raise_signal)
        raise(SIGUSR2);

    for (int i = 0; i < N; i++) {
        holes[2 * i] = make_holes(SIZE);
        pinned[i] = pin_pages(SIZE);
        holes[2 * i + 1] = make_holes(SIZE);
    }
    for (int i = 0; i < 2 * N; i++)
        free(holes[i]);

    for (int i = 0; i < 64 * 1024; i++)
        free(churn(1024));

    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, NULL) != 0 || pthread_join(t, NULL) != 0) {
        fprintf(stderr, "test_profile: no thread\n");
        return 98;
    }
    printf("test_profile: done (dump function %s)\n", dump ? "found" : "not found");
    return status;
}
