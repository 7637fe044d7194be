/* profile_smash.c - the heap profiler's stack walk under a stack buffer
 * overflow (run by scripts/profile_test.sh, built with -O0
 * -fno-omit-frame-pointer). A function overflows a buffer on its stack
 * over its saved frame pointer (not its return address) and calls malloc
 * before it returns, as `strcpy(buf, s); strdup(buf)` would; every malloc
 * is sampled. The walk must end the stack there, not follow the forged
 * frame pointer (found by a hostile review: SIGSEGV in libgcc's walk, to
 * which the frame was handed, or in the walk's own read of another
 * thread's stack guard page, which is mapped but unreadable).
 *
 *   profile_smash garbage   the saved frame pointer 0x4141414141414141
 *   profile_smash guard     the saved frame pointer inside another
 *                           thread's stack guard page
 * Prints "no fault" and exits 0 when the malloc returned. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uintptr_t target;
static volatile size_t size = 100;

__attribute__((noinline)) static void *smash_then_malloc(void)
{
    char buf[16];
    memset(buf, 'x', sizeof buf);
    volatile uintptr_t *saved_fp = (volatile uintptr_t *)__builtin_frame_address(0);
    *saved_fp = target; /* the overflow reaching the saved frame pointer */
    void *p = malloc(size);
    printf("no fault (%p)\n", p);
    fflush(stdout);
    _exit(0); /* the frame is broken: never return through it */
}

__attribute__((noinline)) static void *caller(void *arg)
{
    (void)arg;
    return smash_then_malloc();
}

static void *sleeper(void *arg)
{
    (void)arg;
    pause();
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "guard") == 0) {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 1 << 20);
        pthread_t a, b;
        pthread_create(&a, &at, sleeper, NULL);
        pthread_attr_t ga;
        void *lo;
        size_t sz, guard;
        pthread_getattr_np(a, &ga);
        pthread_attr_getstack(&ga, &lo, &sz);
        pthread_attr_getguardsize(&ga, &guard);
        target = (uintptr_t)lo - guard + 64; /* inside the other thread's guard page */
        pthread_create(&b, &at, caller, NULL);
        pthread_join(b, NULL);
    } else {
        target = 0x4141414141414141ull;
        caller(NULL);
    }
    return 1;
}
