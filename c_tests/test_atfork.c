/* test_atfork.c - fork handlers of the program's own that allocate.
 *
 * The program registers its pthread_atfork handlers before its first
 * malloc, so before fitalloc registers its own (at its first allocation).
 * glibc runs prepare handlers in the reverse order of registration and the
 * parent and child handlers in order: the program's prepare handler runs
 * after fitalloc's has taken every lock, its parent and child handlers
 * before fitalloc's have released them. Each allocates (from the thread
 * cache, a slab, the heap, a mapping) while a second thread exists, so the
 * locks are real. Found by a hostile review: every one of them waited
 * forever on a lock its own thread held.
 *
 * The forks run in a child process with a deadline, so a hang is a failed
 * check, not a stuck test.
 */
#define _GNU_SOURCE
#include <malloc.h>

#include "common.h"

static size_t handler_size = 24;
static atomic_int prepares, parents;
static volatile int child_ran;

/* One allocation of each kind the size allows, written, then freed. */
static void allocate(void)
{
    size_t n = handler_size;
    char *p = malloc(n);
    char *q = calloc(1, n);
    if (!p || !q || q[n - 1] != 0)
        abort();
    memset(p, 0x5a, n);
    p = realloc(p, 2 * n);
    if (!p || p[n - 1] != 0x5a)
        abort();
    void *a = memalign(64, n);
    if (!a)
        abort();
    free(a);
    free(q);
    free(p);
}

static void prep(void)
{
    allocate();
    prepares++;
}

static void parent(void)
{
    allocate();
    parents++;
}

static void child(void)
{
    allocate();
    child_ran = 1;
}

__attribute__((constructor(101))) static void register_before_the_first_malloc(void)
{
    pthread_atfork(prep, parent, child);
}

static void *idle(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

/* In the runner child: an idle second thread, then forks whose handlers
 * allocate blocks of each size class. Exits 0 when every fork child ran its
 * handler and exited 0. */
static void forks_with_allocating_handlers(void *arg)
{
    (void)arg;
    int prepares0 = prepares, parents0 = parents; /* the fork that made this process ran some */
    pthread_t t;
    if (pthread_create(&t, NULL, idle, NULL) != 0)
        _exit(3);
    size_t sizes[] = {24, 200, 2000, 40000, 300000, 3u << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        handler_size = sizes[i];
        for (int k = 0; k < 10; k++) {
            pid_t pid = fork();
            if (pid < 0)
                _exit(4);
            if (pid == 0) {
                void *p = malloc(hide_size(100));
                free(p);
                _exit(child_ran && heap_problems() == 0 ? 0 : 5);
            }
            int status;
            if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                _exit(6);
        }
    }
    _exit(prepares - prepares0 == 60 && parents - parents0 == 60 ? 0 : 7);
}

int main(void)
{
    char err[1024];
    int status = run_child_stderr(forks_with_allocating_handlers, NULL, err, sizeof err, 60);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "fork handlers registered before the first malloc allocate in prepare, parent and child "
          "(24 B to 3 MiB, a second thread alive): no deadlock",
          "status %#x (-1: still running after 60 s; exit 6: a fork child failed); stderr: %s", status, err);
    return tap_done("test_atfork");
}
