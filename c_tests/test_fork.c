/* test_fork.c - fork while the allocator is busy.
 *
 * Part 1 (runs first, while the process is still single-threaded, in a
 * forked "runner" process so the parent can watch it): SIGALRM arrives every
 * millisecond (setitimer) during a tight malloc/free/realloc loop, and the
 * handler calls fork(); the child only calls _exit(0). glibc promises that
 * fork from a signal handler does not hang in a single-threaded process; the
 * allocator's fork handlers must not hang either, even when the signal
 * interrupted malloc while it held a lock. 200 forks; every child must exit
 * with status 0, the runner must finish, and nothing may hang (watchdogs).
 *
 * Part 2: 4 threads run malloc/free loops while the main thread forks 50
 * times. Each child checks and frees blocks the parent allocated before the
 * fork, mallocs/frees a few thousand blocks of various sizes, starts a thread
 * that allocates too, runs fitalloc_check_heap() and exits 0. The parent waits
 * for each child with a timeout: a hung child is a failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define SIGNAL_FORKS 200
#define THREAD_FORKS 50
#define WORKERS 4

static void describe_status(char *buf, size_t len, int status)
{
    if (status == -1)
        snprintf(buf, len, "waitpid failed");
    else if (WIFEXITED(status))
        snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "status %#x", status);
}

/* A short malloc/free/realloc burst with pattern checks; returns the number
 * of problems found. */
static int churn(struct rng *r, int ops, size_t max_size)
{
    enum { K = 32 };
    void *blk[K] = {0};
    size_t sz[K] = {0};
    uint64_t sd[K] = {0};
    int bad = 0;
    for (int op = 0; op < ops; op++) {
        int i = (int)(rng_next(r) % K);
        if (blk[i]) {
            if (pat_check(blk[i], sz[i], sd[i]) != SIZE_MAX)
                bad++;
            if (rng_next(r) % 4 == 0) {
                size_t n = rng_range(r, 1, max_size);
                void *q = realloc(blk[i], hide_size(n));
                if (q == NULL) {
                    bad++;
                    continue;
                }
                size_t keep = sz[i] < n ? sz[i] : n;
                if (pat_check(q, keep, sd[i]) != SIZE_MAX)
                    bad++;
                pat_fill(q, n, sd[i]);
                blk[i] = q;
                sz[i] = n;
                continue;
            }
            if (rng_next(r) & 1)
                free(blk[i]);
            else
                fitalloc_free(blk[i]);
            blk[i] = NULL;
        } else {
            size_t n = (rng_next(r) % 8 == 0) ? rng_range(r, 1, max_size) : rng_range(r, 1, 512);
            void *p = (rng_next(r) & 1) ? malloc(hide_size(n)) : fitalloc_malloc(hide_size(n));
            if (p == NULL) {
                bad++;
                continue;
            }
            blk[i] = p;
            sz[i] = n;
            sd[i] = rng_next(r);
            pat_fill(p, n, sd[i]);
        }
    }
    for (int i = 0; i < K; i++) {
        if (blk[i] && pat_check(blk[i], sz[i], sd[i]) != SIZE_MAX)
            bad++;
        free(blk[i]);
    }
    return bad;
}

/* ---- part 1: fork from a signal handler ---------------------------------------- */

static volatile sig_atomic_t sig_forks;
static volatile sig_atomic_t sig_fork_failures;
static pid_t sig_pids[SIGNAL_FORKS];

static void alarm_fork(int sig)
{
    (void)sig;
    int saved = errno;
    if (sig_forks < SIGNAL_FORKS) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        if (pid > 0)
            sig_pids[sig_forks++] = pid;
        else
            sig_fork_failures++;
    }
    errno = saved;
}

/* The runner: exit status 0 = all good, 10+ = failures (details on stderr). */
static int signal_fork_runner(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = alarm_fork;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);

    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, NULL);

    struct rng r;
    rng_seed(&r, 31337);
    int bad = 0;
    double deadline = now_s() + 60;
    while (sig_forks < SIGNAL_FORKS && now_s() < deadline)
        bad += churn(&r, 200, 300000);

    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    signal(SIGALRM, SIG_IGN);

    int forks = sig_forks, failed_exit = 0, hung = 0;
    for (int i = 0; i < forks; i++) {
        int status;
        if (!wait_child(sig_pids[i], 10, &status)) {
            hung++;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            char d[100];
            describe_status(d, sizeof d, status);
            if (failed_exit++ == 0)
                fprintf(stderr, "signal-fork child %d: %s\n", (int)sig_pids[i], d);
        }
    }
    size_t problems = heap_problems();
    if (forks < SIGNAL_FORKS)
        fprintf(stderr, "only %d forks in 60 s (%d fork failures)\n", forks, (int)sig_fork_failures);
    if (bad)
        fprintf(stderr, "%d pattern/allocation errors in the runner\n", bad);
    if (hung)
        fprintf(stderr, "%d children forked in the signal handler hung\n", hung);
    if (problems)
        fprintf(stderr, "fitalloc_check_heap() = %zu in the runner\n", problems);
    return (forks < SIGNAL_FORKS ? 1 : 0) | (bad ? 2 : 0) | (hung ? 4 : 0) | (failed_exit ? 8 : 0) |
           (problems ? 16 : 0);
}

static void test_signal_fork(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        check(0, "fork from a SIGALRM handler during malloc/free, 200 times", "fork failed: %s", strerror(errno));
        return;
    }
    if (pid == 0)
        _exit(signal_fork_runner());
    int status;
    double t0 = now_s();
    int done = wait_child(pid, 90, &status);
    char d[100] = "";
    if (done)
        describe_status(d, sizeof d, status);
    check(done && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "fork from a SIGALRM handler during malloc/free, 200 times: no hang, children exit 0, runner heap ok",
          "%s (bits: 1 too few forks, 2 pattern errors, 4 hung child, 8 child failed, 16 check_heap)",
          done ? d : "runner hung for 90 s (killed)");
    diag("signal-fork part took %.2f s", now_s() - t0);
}

/* ---- part 2: fork while other threads allocate ---------------------------------- */

static atomic_int stop_workers;
static atomic_int worker_errors;
static atomic_long worker_ops;

static void *worker(void *arg)
{
    struct rng r;
    rng_seed(&r, (uint64_t)(uintptr_t)arg);
    while (!atomic_load(&stop_workers)) {
        int bad = churn(&r, 100, 100000);
        if (bad)
            atomic_fetch_add(&worker_errors, bad);
        atomic_fetch_add(&worker_ops, 100);
    }
    return NULL;
}

static void *child_thread(void *arg)
{
    struct rng r;
    rng_seed(&r, (uint64_t)(uintptr_t)arg);
    return (void *)(intptr_t)churn(&r, 1000, 50000);
}

/* Runs in the forked child: exit status 0 = good. */
static int child_work(int k, void **pre, size_t *pre_sz, int npre)
{
    int bad = 0;
    for (int i = 0; i < npre; i++) {
        if (pat_check(pre[i], pre_sz[i], (uint64_t)(i + 1)) != SIZE_MAX)
            bad |= 1;
        free(pre[i]);
    }
    struct rng r;
    rng_seed(&r, (uint64_t)k * 7919u);
    if (churn(&r, 3000, 100000) != 0)
        bad |= 2;
    pthread_t t;
    if (pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)(k + 1)) != 0) {
        bad |= 4;
    } else {
        void *res;
        pthread_join(t, &res);
        if (res != NULL)
            bad |= 4;
    }
    if (heap_problems() != 0)
        bad |= 8;
    return bad;
}

static void test_thread_fork(void)
{
    pthread_t th[WORKERS];
    int started = 0;
    for (int i = 0; i < WORKERS; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(i + 1)) == 0)
            started++;

    enum { NPRE = 64 };
    void *pre[NPRE];
    size_t pre_sz[NPRE];
    int failed = 0, hung = 0;
    char first[200] = "";
    double t0 = now_s();
    for (int k = 0; k < THREAD_FORKS; k++) {
        for (int i = 0; i < NPRE; i++) {
            pre_sz[i] = (size_t)(i * 331 + k) % (i % 8 == 0 ? 200000 : 2000) + 1;
            pre[i] = malloc(hide_size(pre_sz[i]));
            if (pre[i])
                pat_fill(pre[i], pre_sz[i], (uint64_t)(i + 1));
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0)
            _exit(child_work(k, pre, pre_sz, NPRE));
        for (int i = 0; i < NPRE; i++)
            free(pre[i]);
        if (pid < 0) {
            failed++;
            snprintf(first, sizeof first, "fork %d failed: %s", k, strerror(errno));
            continue;
        }
        int status;
        if (!wait_child(pid, 20, &status)) {
            hung++;
            if (!first[0])
                snprintf(first, sizeof first, "child %d hung for 20 s (killed)", k);
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failed++;
            if (!first[0]) {
                char d[100];
                describe_status(d, sizeof d, status);
                snprintf(first, sizeof first,
                         "child %d: %s (bits: 1 inherited blocks, 2 churn, 4 thread in child, 8 check_heap)", k, d);
            }
        }
    }
    atomic_store(&stop_workers, 1);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    diag("thread-fork part: %d forks in %.2f s, workers did %ld operations", THREAD_FORKS, now_s() - t0,
         atomic_load(&worker_ops));

    check(started == WORKERS, "4 allocating worker threads started", "only %d", started);
    check(hung == 0 && failed == 0,
          "50 forks while 4 threads malloc/free: every child checks inherited blocks, allocates, starts a thread, "
          "check_heap == 0 and exits 0 in time",
          "%d hung, %d failed; first: %s", hung, failed, first);
    check(atomic_load(&worker_errors) == 0, "worker threads saw intact patterns throughout",
          "%d errors", atomic_load(&worker_errors));
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    diag("test_fork: %d forks from a signal handler, %d forks with %d allocating threads", SIGNAL_FORKS,
         THREAD_FORKS, WORKERS);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at start", " ");
    /* Must run while this process has never had a second thread. */
    test_signal_fork();
    test_thread_fork();
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at the end", " ");
    return tap_done("test_fork");
}
