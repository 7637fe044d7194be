/* test_promises.c - issue 10, "Keep every promise": each case pins down one
 * promise the allocator broke before, in a fresh process.
 *
 * The program re-executes itself (/proc/self/exe CASE) with the environment
 * the case needs, collects the child's stdout and stderr through pipes with
 * a deadline, and turns what the child printed and how it ended into TAP
 * checks. A child prints "R <0|1> <name>\t<detail>" lines for its own
 * checks (through write(2): some children close their descriptors or run
 * out of memory) and exits 0 when it got to its end.
 *
 * Cases:
 *   calloc-after-purge   item 4: the top is given back with madvise (the
 *                        break was moved by the program), then calloc must
 *                        still return zeroed memory, up to the region end.
 *   calloc-after-purge-mapped  the same in a mapped heap region (a mapping
 *                        put above the break keeps sbrk from growing).
 *   huge-requests        item 5: malloc, calloc, memalign, realloc of
 *                        94 GiB, 1 TiB and 16 TiB follow the system's
 *                        overcommit policy as glibc does: under the default
 *                        heuristic (vm.overcommit_memory = 0) a request
 *                        beyond RAM + swap returns NULL with ENOMEM.
 *   harden-big-align     item 7: with FITALLOC_HARDEN=1, memalign(1 GiB, 16)
 *                        and memalign(256 MiB, 100) cost neither seconds nor
 *                        memory in proportion to the alignment;
 *   harden-big-align-overflow  and a one-byte overflow of such a block is
 *                        still reported (SIGABRT, one "fitalloc:" line
 *                        naming free and the block).
 *   data-after-closing   item 6: a program closes every descriptor, opens a
 *                        data file and duplicates it onto every number up
 *                        to 1100, then exits: with FITALLOC_STATS=1, with
 *                        FITALLOC_TRACE=path and with FITALLOC_STATS_FILE=
 *                        path the data file must hold only what the
 *                        program wrote (and the stats file the report).
 *   stats-plain          FITALLOC_STATS=1 still reports on stderr, with
 *                        the thread cache's trips: 2,000 blocks of 48
 *                        bytes malloc'd and freed, twice, make refills
 *                        (bringing more than 1 block each on average, at
 *                        most 32) and overflows (each sending 1 to 64
 *                        away).
 *   options              item 8: every option value either works or is
 *                        refused or clamped with exactly one "fitalloc:"
 *                        line on stderr, and the program runs on: a top
 *                        pad of 64g, FITALLOC_CHECK=abc (must not mean
 *                        "check every call"), an unwritable trace path,
 *                        a non-size, a non-flag, an oversized count; valid
 *                        values print nothing.
 *   malloc-stats-stream  item 13: malloc_stats() writes through the C
 *                        `stderr` stream, as glibc's does: a program that
 *                        freopen()s stderr to a file finds the whole
 *                        report there, between its own lines.
 *   fork-stdio           item 12: 4 threads fork in a loop (the children
 *                        _exit at once) while 8 threads read a file with
 *                        getline and one calls fflush(NULL), for 5 s: the
 *                        program must finish (a watchdog kills a hang).
 *   first-malloc-signals a SIGALRM handler that mallocs, a timer firing
 *                        every 100 us, and then the process's first malloc
 *                        (the allocator's start-up, a heap growth): run
 *                        150 times, no run may hang or die of anything but
 *                        SIGABRT (an allocation in a handler that
 *                        interrupted one is a misuse, reported on one line;
 *                        it used to spin forever in the start-up, or wait
 *                        forever for the region table's lock: found by a
 *                        hostile review).
 *   racing-double-free   two threads free the same block (freed once
 *                        already) at the same moment: both find the double
 *                        free; 100 runs, each must end with SIGABRT after
 *                        exactly one line (both threads wrote theirs in
 *                        about 1 run in 15: found by a hostile review).
 *   handler-allocs       one thread mallocs, callocs and frees blocks of up
 *                        to 200 KB for 0.4 s under a 500 us timer whose
 *                        handler mallocs and frees blocks of up to 300 KB:
 *                        10 runs, each ends with exit 0 or one line and
 *                        SIGABRT (a fault in the heap's growth, or a report
 *                        of corruption that had not happened, before).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)
#define GiB ((size_t)1024 * 1024 * 1024)

extern char **environ;

/* ---- child side ------------------------------------------------------------ */

static int res_fd = 1;

/* "R <pass> <name>\t<detail>": one check for the parent (write(2) only). */
__attribute__((format(printf, 3, 4)))
static void res(int pass, const char *name, const char *fmt, ...)
{
    char line[700];
    int n = snprintf(line, sizeof line, "R %d %s\t", pass ? 1 : 0, name);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    for (int i = 0; i < n; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[n++] = '\n';
    write_all(res_fd, line, (size_t)n);
}

/* ---- glibc's knobs and corners (found by porting glibc's own tests) -------- */

/* How many of the n bytes at p differ from `byte`. */
static size_t differ(const unsigned char *p, size_t n, unsigned char byte)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += p[i] != byte;
    return d;
}

static volatile int stats_thread_reached;
static void *stats_with_cancel_pending(void *arg)
{
    (void)arg;
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    pthread_cancel(pthread_self());
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
    malloc_stats(); /* glibc: not a cancellation point */
    stats_thread_reached = 1;
    pthread_testcancel();
    return NULL;
}

static void alloc_in_handler(int sig)
{
    (void)sig;
    char *p = malloc(32);
    if (p) {
        memset(p, 1, 32);
        free(p);
    }
}

static void *handler_slots[64];
static unsigned handler_seed = 1;

static void heavy_alloc_in_handler(int sig)
{
    (void)sig;
    for (int k = 0; k < 4; k++) {
        handler_seed = handler_seed * 1103515245u + 12345u;
        int i = (int)((handler_seed >> 16) % 64);
        if (handler_slots[i]) {
            free(handler_slots[i]);
            handler_slots[i] = NULL;
        } else {
            size_t n = 16 + (handler_seed >> 8) % (k == 3 ? 300000 : 3000);
            char *q = malloc(n);
            if (q)
                memset(q, i, n < 64 ? n : 64);
            handler_slots[i] = q;
        }
    }
}

/* A signal handler's allocations inside the thread's own, in a process
 * with one thread. */
/* racing-double-free: see the header comment. */
static void *volatile rdf_block;
static atomic_int rdf_ready, rdf_go;

static void *rdf_free_again(void *arg)
{
    (void)arg;
    atomic_fetch_add(&rdf_ready, 1);
    while (!atomic_load(&rdf_go))
        ;
    free(rdf_block);
    return NULL;
}

static int child_racing_double_free(void)
{
    rdf_block = malloc(40);
    free(rdf_block);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, rdf_free_again, NULL);
    while (atomic_load(&rdf_ready) < 2)
        ;
    atomic_store(&rdf_go, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    return 0; /* not reached: the double free ends the process */
}

static int child_handler_allocs(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = heavy_alloc_in_handler;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 500}, {0, 500}};
    setitimer(ITIMER_REAL, &it, NULL);
    enum { N = 512 };
    static unsigned char *slot[N];
    static size_t len[N];
    unsigned seed = 7;
    double end = now_s() + 0.4;
    while (now_s() < end) {
        for (int r = 0; r < 2000; r++) {
            seed = seed * 1664525u + 1013904223u;
            int i = (int)((seed >> 10) % N);
            if (slot[i]) {
                for (size_t j = 0; j < len[i]; j++)
                    if (slot[i][j] != (unsigned char)i)
                        return 5; /* a block of the program's rewritten */
                free(slot[i]);
                slot[i] = NULL;
            } else {
                size_t n = 1 + (seed >> 4) % ((seed & 7) == 0 ? 200000 : 1000);
                slot[i] = (seed & 1) ? malloc(n) : calloc(1, n);
                if (!slot[i])
                    return 6;
                len[i] = n;
                memset(slot[i], i, n);
            }
        }
    }
    struct itimerval off;
    memset(&off, 0, sizeof off);
    setitimer(ITIMER_REAL, &off, NULL);
    return 0;
}

/* The process's first allocation, under a storm of signals whose handler
 * allocates. Exit 0, or SIGABRT after one line: never a hang. */
static int child_first_malloc_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = alloc_in_handler;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    timer_t tid;
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGALRM;
    if (timer_create(CLOCK_MONOTONIC, &sev, &tid) != 0)
        return 3;
    struct itimerspec its = {{0, 100000}, {0, 100000}};
    timer_settime(tid, 0, &its, NULL);
    void *p = malloc(hide_size(100)); /* the first allocation */
    struct itimerspec off;
    memset(&off, 0, sizeof off);
    timer_settime(tid, 0, &off, NULL);
    free(p);
    return p ? 0 : 4;
}

/* Run with MALLOC_PERTURB_=165 and
 * GLIBC_TUNABLES=glibc.malloc.mmap_threshold=300000. */
static int child_glibc_knobs(void)
{
    unsigned char *p = malloc(hide_size(1000));
    res(p && differ(p, 1000, 0x5a) == 0, "MALLOC_PERTURB_=165 fills malloc'd bytes with 0x5a",
        "%zu of 1000 bytes differ", p ? differ(p, 1000, 0x5a) : 0);
    unsigned char *q = calloc(1, hide_size(1000));
    res(q && zero_check(q, 1000) == SIZE_MAX, "calloc is not perturbed", " ");
    free(q);
    mallopt(M_PERTURB, 0x11);
    unsigned char *t = malloc(hide_size(5000));
    res(t && differ(t, 5000, 0xee) == 0, "mallopt(M_PERTURB, 0x11) fills with 0xee", " ");
    free(t);
    free(p);
    mallopt(M_PERTURB, 0);

    struct mallinfo2 before = mallinfo2();
    void *m = malloc(hide_size(200 * 1024));
    struct mallinfo2 after = mallinfo2();
    res(m && after.hblks == before.hblks, "GLIBC_TUNABLES mmap_threshold=300000: 200 KiB comes from the heap",
        "mapped blocks %zu -> %zu", before.hblks, after.hblks);
    free(m);

    free(malloc(hide_size(64))); /* something in the thread cache */
    struct mallinfo2 mi = mallinfo2();
    res((mi.smblks == 0) == (mi.fsmblks == 0) && mi.ordblks >= 1, "mallinfo2: smblks counts fsmblks's blocks",
        "smblks %zu fsmblks %zu ordblks %zu", mi.smblks, mi.fsmblks, mi.ordblks);

    /* M_MXFAST bounds the blocks mallinfo counts as fastbin chunks
     * (glibc's tst-mxfast: after mallopt(M_MXFAST, 0), a freed 3-byte
     * block is not one); 500 bytes is above the default (128). */
    free(malloc(hide_size(500)));
    struct mallinfo2 dflt = mallinfo2();
    size_t small_bytes = dflt.fsmblks;
    free(malloc(hide_size(24)));
    struct mallinfo2 more = mallinfo2();
    res(dflt.smblks >= 1 && dflt.fsmblks <= 128 * dflt.smblks && more.fsmblks > small_bytes &&
            more.fsmblks - small_bytes <= 128,
        "mallinfo2: a cached 64-byte block is a fastbin chunk, a 500-byte one is not",
        "smblks %zu fsmblks %zu, then %zu %zu", dflt.smblks, dflt.fsmblks, more.smblks, more.fsmblks);
    res(mallopt(M_MXFAST, 0) == 1 && mallopt(M_MXFAST, 161) == 0, "mallopt(M_MXFAST): 0 accepted, 161 refused", " ");
    char *volatile p1 = malloc(hide_size(3));
    char *volatile p2 = malloc(hide_size(512));
    free(p1);
    struct mallinfo2 none = mallinfo2();
    res(none.smblks == 0 && none.fsmblks == 0, "mallinfo2 after mallopt(M_MXFAST, 0): no fastbin chunks (tst-mxfast)",
        "smblks %zu fsmblks %zu", none.smblks, none.fsmblks);
    free(p2);
    mallopt(M_MXFAST, 128);

    int devnull = open("/dev/null", O_WRONLY);
    int saved = dup(2);
    dup2(devnull, 2);
    pthread_t th;
    pthread_create(&th, NULL, stats_with_cancel_pending, NULL);
    pthread_join(th, NULL);
    dup2(saved, 2);
    res(stats_thread_reached, "malloc_stats is not a cancellation point", " ");
    return 0;
}

/* ---- parent side: run a case in a fresh process ---------------------------- */

struct run {
    int status;      /* waitpid status, -1 if unknown */
    int hung;        /* killed at the deadline */
    double secs;
    char out[16384]; /* the child's stdout */
    char err[16384]; /* the child's stderr */
};

/* Runs "/proc/self/exe mode" with the environment plus `extra` (NULL-ended;
 * NULL for none), for at most timeout_s seconds. */
static void run_case(const char *mode, const char *const *extra, double timeout_s, struct run *r)
{
    memset(r, 0, sizeof *r);
    r->status = -1;
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
        snprintf(r->err, sizeof r->err, "pipe: %s", strerror(errno));
        return;
    }
    size_t n_env = 0, n_extra = 0;
    while (environ[n_env])
        n_env++;
    while (extra && extra[n_extra])
        n_extra++;
    char **envp = calloc(n_env + n_extra + 1, sizeof *envp);
    size_t k = 0;
    for (size_t i = 0; i < n_extra; i++)
        envp[k++] = (char *)extra[i];
    for (size_t i = 0; i < n_env; i++)
        envp[k++] = environ[i];
    char *argv[] = {"test_promises", (char *)mode, NULL};
    double start = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        execve("/proc/self/exe", argv, envp);
        _exit(127);
    }
    free(envp);
    close(out[1]);
    close(err[1]);
    if (pid < 0) {
        snprintf(r->err, sizeof r->err, "fork: %s", strerror(errno));
        close(out[0]);
        close(err[0]);
        return;
    }
    size_t lens[2] = {0, 0};
    char *bufs[2] = {r->out, r->err};
    struct pollfd pf[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    double deadline = start + timeout_s;
    int open_fds = 2;
    while (open_fds > 0) {
        int left_ms = (int)((deadline - now_s()) * 1000);
        if (left_ms <= 0)
            break;
        int p = poll(pf, 2, left_ms);
        if (p < 0 && errno == EINTR)
            continue;
        if (p <= 0)
            break;
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || pf[i].revents == 0)
                continue;
            char tmp[4096];
            ssize_t n = read(pf[i].fd, tmp, sizeof tmp);
            if (n <= 0) {
                close(pf[i].fd);
                pf[i].fd = -1;
                open_fds--;
                continue;
            }
            size_t room = sizeof r->out - 1 - lens[i];
            size_t take = (size_t)n < room ? (size_t)n : room;
            memcpy(bufs[i] + lens[i], tmp, take);
            lens[i] += take;
        }
    }
    for (int i = 0; i < 2; i++)
        if (pf[i].fd >= 0)
            close(pf[i].fd);
    r->hung = !wait_child_until(pid, deadline, 5, &r->status);
    r->secs = now_s() - start;
}

/* How the child ended, in words. */
static const char *ending(const struct run *r, char *buf, size_t len)
{
    if (r->hung)
        snprintf(buf, len, "hung (killed after %.1f s)", r->secs);
    else if (r->status == -1)
        snprintf(buf, len, "not run");
    else if (WIFSIGNALED(r->status))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(r->status));
    else
        snprintf(buf, len, "exit status %d", WEXITSTATUS(r->status));
    return buf;
}

static int exited_ok(const struct run *r)
{
    return !r->hung && r->status != -1 && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

/* Turns the child's "R" lines into checks, shows its other output as
 * diagnostics, and checks that it exited with status 0. */
static void report(const char *label, struct run *r)
{
    char *save = NULL;
    for (char *line = strtok_r(r->out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == 'R' && line[1] == ' ' && (line[2] == '0' || line[2] == '1') && line[3] == ' ') {
            char *name = line + 4, *tab = strchr(name, '\t');
            const char *detail = "";
            if (tab) {
                *tab = 0;
                detail = tab + 1;
            }
            char full[400];
            snprintf(full, sizeof full, "%s: %s", label, name);
            check(line[2] == '1', full, "%s", detail);
        } else {
            diag("%s: %s", label, line);
        }
    }
    if (r->err[0])
        diag("%s: stderr: %s", label, r->err);
    char why[64], name[200];
    snprintf(name, sizeof name, "%s: child ran to its end", label);
    check(exited_ok(r), name, "%s", ending(r, why, sizeof why));
}

/* ---- item 4: calloc after the top was purged -------------------------------- */

struct top_find {
    uintptr_t region_lo, region_hi; /* the region holding `inside` */
    uintptr_t inside;
    uintptr_t top;                  /* the highest free block in it */
    uint64_t top_size;
};

static void find_top_cb(void *ctx, size_t addr, uint64_t size, uint32_t kind)
{
    struct top_find *f = ctx;
    if (kind == FITALLOC_WALK_REGION && f->inside >= addr && f->inside < addr + size) {
        f->region_lo = addr;
        f->region_hi = addr + size;
    }
    if (kind == FITALLOC_WALK_FREE && f->region_hi != 0 && addr >= f->region_lo && addr < f->region_hi &&
        addr > f->top) {
        f->top = addr;
        f->top_size = size;
    }
}

/* Finds the region holding `inside` and the highest free block in it. */
static struct top_find find_top(const void *inside)
{
    struct top_find f = {0};
    f.inside = (uintptr_t)inside;
    fitalloc_heap_walk(find_top_cb, &f); /* the region */
    fitalloc_heap_walk(find_top_cb, &f); /* its highest free block */
    return f;
}

/* Two ways the top is given back with madvise rather than by moving the
 * break down. `mapped` = 0: the heap grows from sbrk until the current
 * region's last page is dirty, then the program moves the break itself.
 * `mapped` = 1: the program puts a mapping right above the break first, so
 * the heap lives in a mapped region (64 MiB), filled with 1000 KiB blocks.
 * Either way calloc must return zeroes everywhere afterwards, the region's
 * last page included. */
static int child_calloc_after_purge(int mapped)
{
    enum { MAX = 200 };
    static void *blocks[MAX + 1];
    size_t size = mapped ? 1000 * KiB : 2000;
    int n = 0;
    mallopt(M_TOP_PAD, 0);
    mallopt(M_TRIM_THRESHOLD, 64 * 1024);
    if (mapped) {
        mallopt(M_MMAP_THRESHOLD, 1 << 30); /* 1000 KiB blocks stay in the heap */
        uintptr_t brk_page = ((uintptr_t)sbrk(0) + 4095) & ~(uintptr_t)4095;
        void *wall = mmap((void *)brk_page, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                          -1, 0);
        res(wall == (void *)brk_page, "a mapping blocks the break", "mmap at %#lx returned %p",
            (unsigned long)brk_page, wall);
    }
    for (n = 0; n < MAX; n++) {
        if (mapped && n > 0) {
            struct top_find f = find_top(blocks[n - 1]);
            if (f.top_size < size + 64)
                break; /* the next block would start a new region */
        }
        blocks[n] = malloc(size);
        if (blocks[n] == NULL) {
            res(0, "heap grows", "malloc(%zu) returned NULL", size);
            return 0;
        }
        memset(blocks[n], 0xAA, size);
    }
    /* Carve the rest of the top too, so the region is dirty to its end. */
    struct top_find f = find_top(blocks[n - 1]);
    size_t last = 0;
    if (f.top != 0 && f.top_size >= 32 && f.top + f.top_size + 4 >= f.region_hi) {
        last = (size_t)f.top_size - 4;
        blocks[n] = malloc(last);
        if (blocks[n])
            memset(blocks[n], 0xAA, last);
    }
    res(f.region_hi != 0 && (!mapped || f.region_hi - f.region_lo >= 64 * MiB),
        mapped ? "the blocks lie in a mapped region" : "the blocks lie in a heap region",
        "%d blocks, region [%#lx, %#lx), top %#lx (%lu bytes)", n, (unsigned long)f.region_lo,
        (unsigned long)f.region_hi, (unsigned long)f.top, (unsigned long)f.top_size);
    if (!mapped) {
        /* Someone else moves the break. */
        void *old_brk = sbrk(4096);
        res(old_brk != (void *)-1 && (uintptr_t)old_brk >= f.region_hi, "the program moves the break after the heap",
            "sbrk(4096) returned %p", old_brk);
    }
    for (int i = n; i >= 0; i--)
        free(blocks[i]);
    malloc_trim(0);
    struct fitalloc_stats st;
    fitalloc_stats(&st);
    res(st.madvise_calls > 0, "the top was given back with madvise", "%lu madvise calls, %lu bytes given back",
        (unsigned long)st.madvise_calls, (unsigned long)st.trimmed_bytes);
    /* calloc the whole region again, in the same pieces and more. */
    int bad = 0;
    char detail[300] = "";
    size_t total = 0;
    for (int i = 0; i <= n + 60; i++) {
        size_t len = i < n ? size : i == n && last > 0 ? last : 1000;
        unsigned char *p = calloc(1, len);
        if (p == NULL) {
            snprintf(detail, sizeof detail, "calloc(1, %zu) returned NULL", len);
            bad++;
            break;
        }
        size_t off = zero_check(p, len);
        if (off != SIZE_MAX && bad++ == 0)
            snprintf(detail, sizeof detail, "calloc(1, %zu) = %p: byte %zu (at %p, %#lx before the region end) is %#x",
                     len, (void *)p, off, (void *)(p + off), (unsigned long)(f.region_hi - (uintptr_t)(p + off)),
                     p[off]);
        total += len;
    }
    res(bad == 0, "calloc returns zeroes up to the region's end", "%d non-zero blocks of %zu bytes; first: %s", bad,
        total, detail);
    return 0;
}

/* ---- item 5: requests far beyond memory ------------------------------------- */

/* A number from a /proc file ("0\n"), or -1. */
static long long proc_number(const char *path)
{
    char buf[64] = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n > 0 ? atoll(buf) : -1;
}

/* A "Name:   123 kB" figure of /proc/meminfo, in bytes, or -1. */
static long long meminfo_bytes(const char *name)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long long v = -1;
    size_t len = strlen(name);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, name, len) == 0 && line[len] == ':')
            v = atoll(line + len + 1) * 1024;
    if (f)
        fclose(f);
    return v;
}

/* glibc's answer under the kernel's policy: 1 if a private writable
 * mapping of `size` bytes is refused. */
static int kernel_refuses(int policy, size_t size)
{
    if (policy == 1)
        return 0;
    if (policy == 2) {
        long long limit = meminfo_bytes("CommitLimit"), committed = meminfo_bytes("Committed_AS");
        return limit >= 0 && committed >= 0 && (long long)size > limit - committed;
    }
    struct sysinfo si;
    sysinfo(&si);
    unsigned long long ram_swap = ((unsigned long long)si.totalram + si.totalswap) * si.mem_unit;
    return size > ram_swap;
}

static int child_huge_requests(void)
{
    int policy = (int)proc_number("/proc/sys/vm/overcommit_memory");
    /* No policy to compare with: fail loudly rather than skip. */
    res(policy >= 0 && policy <= 2, "vm.overcommit_memory is readable", "read %d", policy);
    if (policy < 0 || policy > 2)
        return 0;
    const size_t sizes[] = {94 * GiB, 1024 * GiB, 16 * 1024 * GiB};
    const char *names[] = {"94 GiB", "1 TiB", "16 TiB"};
    for (int i = 0; i < 3; i++) {
        size_t n = hide_size(sizes[i]);
        int refused = kernel_refuses(policy, n);
        for (int k = 0; k < 4; k++) {
            const char *fn[] = {"malloc", "calloc", "memalign(4096)", "realloc"};
            void *small = k == 3 ? malloc(16) : NULL;
            errno = 0;
            void *p = k == 0 ? malloc(n) : k == 1 ? calloc(1, n) : k == 2 ? memalign(4096, n) : realloc(small, n);
            int err = errno;
            char name[100];
            snprintf(name, sizeof name, "%s of %s (policy %d: %s)", fn[k], names[i], policy,
                     refused ? "refused" : "allowed");
            if (refused)
                res(p == NULL && err == ENOMEM, name, "returned %p, errno %d", p, err);
            else
                res(p != NULL, name, "returned %p, errno %d", p, err);
            free(p != NULL ? p : small);
        }
    }
    res(fitalloc_check_heap() == 0, "heap sound afterwards", " ");
    return 0;
}

/* ---- item 7: hardened memalign with a big alignment ------------------------- */

static long max_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Three of each, all live at once so that each gets a mapping at another
 * address (the slack an alignment leaves depends on where the mapping
 * lands). */
static int child_harden_big_align(void)
{
    enum { ROUNDS = 3 };
    unsigned char *a[ROUNDS], *b[ROUNDS];
    long rss0 = max_rss_kib();
    double t0 = now_s();
    int aligned = 1, sizes_ok = 1;
    for (int i = 0; i < ROUNDS; i++) {
        a[i] = memalign(hide_size(GiB), hide_size(16));
        b[i] = memalign(hide_size(256 * MiB), hide_size(100));
        aligned &= a[i] && b[i] && (uintptr_t)a[i] % GiB == 0 && (uintptr_t)b[i] % (256 * MiB) == 0;
        if (a[i]) {
            memset(a[i], 1, 16);
            sizes_ok &= malloc_usable_size(a[i]) == 16;
        }
        if (b[i]) {
            memset(b[i], 2, 100);
            sizes_ok &= malloc_usable_size(b[i]) == 100;
        }
    }
    for (int i = 0; i < ROUNDS; i++) {
        free(a[i]);
        free(b[i]);
    }
    double secs = now_s() - t0;
    long grew = max_rss_kib() - rss0;
    res(aligned, "every block returned, aligned", "first: %p, %p", (void *)a[0], (void *)b[0]);
    res(sizes_ok, "usable sizes are the requested ones", " ");
    res(secs < 1.0, "3 x memalign(1 GiB, 16) and 3 x memalign(256 MiB, 100) take under a second", "%.2f s", secs);
    res(grew < 16 * 1024, "peak RSS grows by less than 16 MiB", "grew by %ld KiB", grew);
    printf("3 x hardened memalign(1 GiB, 16) + 3 x memalign(256 MiB, 100): %.3f s, peak RSS +%ld KiB\n", secs,
           grew);
    fflush(stdout);
    return 0;
}

static int child_harden_big_align_overflow(void)
{
    unsigned char *a = memalign(hide_size(GiB), hide_size(16));
    if (a == NULL)
        return 3;
    char line[64];
    int n = snprintf(line, sizeof line, "P %p\n", (void *)a);
    write_all(1, line, (size_t)n);
    /* One byte past the block, made different from the canary byte there
     * (a fixed value would match the keyed canary once in 256 runs). */
    size_t past = hide_size(16);
    a[past] = (unsigned char)~a[past];
    free(a);
    return 0;                /* not reached when the overflow is caught */
}

/* The child must have died of SIGABRT with exactly one line on stderr,
 * "fitalloc: free(): ... <the pointer the child printed>". */
static void check_death(const char *label, struct run *r)
{
    char addr[40] = "?", why[64], name[200];
    const char *p = strstr(r->out, "P 0x");
    if (p)
        sscanf(p + 2, "%39s", addr);
    int lines = 0, named = 0;
    for (const char *l = r->err; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
        lines++;
        const char *end = strchr(l, '\n');
        size_t len = end ? (size_t)(end - l) : strlen(l);
        char one[400];
        snprintf(one, sizeof one, "%.*s", (int)(len < 399 ? len : 399), l);
        if (strncmp(one, "fitalloc: free(): ", 18) == 0 && strstr(one, addr) != NULL)
            named++;
    }
    snprintf(name, sizeof name, "%s: SIGABRT", label);
    check(!r->hung && r->status != -1 && WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGABRT, name, "%s",
          ending(r, why, sizeof why));
    snprintf(name, sizeof name, "%s: one \"fitalloc: free(): ...\" line naming %s", label, addr);
    check(lines == 1 && named == 1, name, "stderr: %s", r->err);
}

/* ---- item 6: diagnostics stay out of the program's files ------------------- */

static const char DATA[] = "the program's own data\n";

static void churn(int n)
{
    void *keep[64];
    for (int i = 0; i < n; i++) {
        keep[i % 64] = malloc((size_t)(i % 700) + 1);
        if (i % 64 == 63)
            for (int k = 0; k < 64; k++)
                free(keep[k]);
    }
}

static int child_data_after_closing(void)
{
    const char *path = getenv("PROMISES_DATA");
    if (path == NULL)
        return 3;
    churn(1000);
    for (int fd = 0; fd < 2048; fd++)
        close(fd);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd != 0)
        return 4;
    write_all(fd, DATA, strlen(DATA));
    for (int i = 1; i <= 1100; i++)
        dup2(fd, i);
    churn(1000);
    return 0; /* exit: the stats report and the trace are written now */
}

static int child_stats_plain(void)
{
    churn(100);
    static void *b[2000];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 2000; i++)
            b[i] = malloc(48);
        for (int i = 0; i < 2000; i++)
            free(b[i]);
    }
    return 0;
}

/* The whole of a (small) file, NUL-terminated, or "" when absent. */
static void read_file(const char *path, char *buf, size_t len)
{
    buf[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    size_t have = 0;
    ssize_t n;
    while (have < len - 1 && (n = read(fd, buf + have, len - 1 - have)) > 0)
        have += (size_t)n;
    buf[have] = 0;
    close(fd);
}

static void diagnostics_cases(struct run *r)
{
    char dir[] = "/tmp/fitalloc-promises-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        check(0, "diagnostics: temporary directory", "mkdtemp: %s", strerror(errno));
        return;
    }
    char data[200], trace[200], stats[200], env_data[240], env_trace[240], env_stats[240];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(trace, sizeof trace, "%s/trace.rep", dir);
    snprintf(stats, sizeof stats, "%s/stats.txt", dir);
    snprintf(env_data, sizeof env_data, "PROMISES_DATA=%s", data);
    snprintf(env_trace, sizeof env_trace, "FITALLOC_TRACE=%s", trace);
    snprintf(env_stats, sizeof env_stats, "FITALLOC_STATS_FILE=%s", stats);
    static char got[1 << 16];

    const char *with_stats[] = {env_data, "FITALLOC_STATS=1", NULL};
    const char *with_trace[] = {env_data, env_trace, NULL};
    const char *with_file[] = {env_data, env_stats, NULL};
    const struct {
        const char *label;
        const char *const *env;
    } cases[] = {
        {"FITALLOC_STATS=1, descriptors closed", with_stats},
        {"FITALLOC_TRACE, descriptors closed", with_trace},
        {"FITALLOC_STATS_FILE, descriptors closed", with_file},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unlink(data);
        run_case("data-after-closing", cases[i].env, 30, r);
        report(cases[i].label, r);
        read_file(data, got, sizeof got);
        char name[200];
        snprintf(name, sizeof name, "%s: the data file holds only the program's data", cases[i].label);
        check(strcmp(got, DATA) == 0, name, "it holds %zu bytes: %.200s", strlen(got), got);
    }
    read_file(stats, got, sizeof got);
    check(strstr(got, "fitalloc: heap ") != NULL && strstr(got, "fitalloc: calls: malloc ") != NULL,
          "FITALLOC_STATS_FILE: the report is in the stats file", "it holds: %.300s", got);

    const char *plain[] = {"FITALLOC_STATS=1", NULL};
    run_case("stats-plain", plain, 30, r);
    int on_stderr = strstr(r->err, "fitalloc: heap ") != NULL;
    const char *trips = strstr(r->err, "fitalloc: thread cache trips: ");
    unsigned long refills = 0, overflows = 0;
    double per_refill = 0, per_overflow = 0;
    int parsed = trips && sscanf(trips, "fitalloc: thread cache trips: refills %lu (%lf blocks each), overflows %lu (%lf blocks each sent away)",
                                 &refills, &per_refill, &overflows, &per_overflow) == 4;
    char seen[200];
    snprintf(seen, sizeof seen, "%.150s", trips ? trips : "no trips line");
    r->err[0] = 0;
    report("FITALLOC_STATS=1, descriptors left alone", r);
    check(on_stderr, "FITALLOC_STATS=1, descriptors left alone: the report is on stderr", " ");
    check(parsed && refills >= 1 && per_refill > 1.0 && per_refill <= 32.0,
          "FITALLOC_STATS=1: refills counted, bringing more than 1 and at most 32 blocks each", "%s", seen);
    check(parsed && overflows >= 1 && per_overflow >= 1.0 && per_overflow <= 64.0,
          "FITALLOC_STATS=1: overflows counted, each sending 1 to 64 blocks away", "%s", seen);

    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char f[500];
        snprintf(f, sizeof f, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.')
            unlink(f);
    }
    if (d)
        closedir(d);
    if (rmdir(dir) != 0)
        diag("left %s behind: %s", dir, strerror(errno));
}

/* ---- item 8: option values --------------------------------------------------- */

/* Grows the heap (the top pad is used), then makes 4000 calls with 4000
 * blocks live: about 64 million block visits if the heap checker ran on
 * every call, a millisecond otherwise. */
static int child_options(void)
{
    enum { LIVE = 8000, CALLS = 8000 };
    static void *live[LIVE];
    for (int i = 0; i < LIVE; i++) {
        live[i] = malloc(200 + (size_t)(i % 50) * 16);
        if (live[i] == NULL)
            return 3;
        memset(live[i], 0x11, 200);
    }
    double t0 = now_s();
    for (int i = 0; i < CALLS / 2; i++)
        free(malloc(64 + (size_t)(i % 8) * 16));
    double secs = now_s() - t0;
    void *big = malloc(300 * KiB);
    if (big == NULL)
        return 4;
    free(big);
    for (int i = 0; i < LIVE; i++)
        free(live[i]);
    char line[80];
    int n = snprintf(line, sizeof line, "T %.3f\n", secs);
    write_all(1, line, (size_t)n);
    return 0;
}

/* Runs the options child with `env`; it must exit 0 with exactly
 * `lines` lines on stderr, the first starting with `expect` (if any), in
 * little time (no checker on every call). */
static void option_case(struct run *r, const char *env, int lines, const char *expect)
{
    const char *e[] = {env, NULL};
    run_case("options", e, 60, r);
    char why[64], name[300];
    snprintf(name, sizeof name, "%s: the program runs to its end", env);
    check(exited_ok(r), name, "%s; stderr: %.300s", ending(r, why, sizeof why), r->err);
    int n = 0;
    for (const char *l = r->err; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l))
        n++;
    if (lines == 0) {
        snprintf(name, sizeof name, "%s: nothing on stderr", env);
        check(n == 0, name, "stderr: %.300s", r->err);
    } else {
        snprintf(name, sizeof name, "%s: one line on stderr, \"%s...\"", env, expect);
        check(n == 1 && strncmp(r->err, expect, strlen(expect)) == 0, name, "%d lines: %.300s", n, r->err);
    }
    const char *t = strstr(r->out, "T ");
    double secs = t ? atof(t + 2) : -1;
    snprintf(name, sizeof name, "%s: 8000 calls with 8000 blocks live take under 0.1 s (no checker on every call)",
             env);
    check(secs >= 0 && secs < 0.1, name, "%.3f s", secs);
}

static void options_cases(struct run *r)
{
    option_case(r, "FITALLOC_TOP_PAD=64g", 1, "fitalloc: FITALLOC_TOP_PAD=64g is too large; using ");
    option_case(r, "MALLOC_TOP_PAD_=64g", 1, "fitalloc: MALLOC_TOP_PAD_=64g is too large; using ");
    option_case(r, "FITALLOC_CHECK=abc", 1, "fitalloc: FITALLOC_CHECK=abc is not a number; ignored");
    option_case(r, "FITALLOC_TRACE=/nonexistent-dir/trace.rep", 1,
                "fitalloc: cannot open FITALLOC_TRACE=/nonexistent-dir/trace.rep");
    option_case(r, "FITALLOC_TCACHE_COUNT=100000", 1, "fitalloc: FITALLOC_TCACHE_COUNT=100000 is too large; using 64");
    option_case(r, "FITALLOC_HARDEN=maybe", 1, "fitalloc: FITALLOC_HARDEN=maybe is not 0 or 1; ignored");
    option_case(r, "FITALLOC_MMAP_THRESHOLD=12x", 1, "fitalloc: FITALLOC_MMAP_THRESHOLD=12x is not a size");
    option_case(r, "FITALLOC_TOP_PAD=1m", 0, NULL);
    option_case(r, "FITALLOC_CHECK=0", 0, NULL);
    option_case(r, "FITALLOC_TCACHE=1", 0, NULL);
    option_case(r, "FITALLOC_TRIM_THRESHOLD=64k", 0, NULL);
}

/* ---- item 13: malloc_stats through the stderr stream ------------------------- */

static int child_malloc_stats_stream(void)
{
    const char *path = getenv("PROMISES_DATA");
    const char *how = getenv("PROMISES_HOW");
    if (path == NULL || how == NULL)
        return 3;
    if (strcmp(how, "freopen") == 0) {
        if (freopen(path, "w", stderr) == NULL)
            return 3;
    } else {
        FILE *f = fopen(path, "w"); /* the stderr pointer itself is changed */
        if (f == NULL)
            return 3;
        stderr = f;
    }
    void *p = malloc(1000), *q = malloc(300 * KiB);
    fputs("before the report\n", stderr);
    malloc_stats();
    fputs("after the report\n", stderr);
    free(p);
    free(q);
    return fclose(stderr) == 0 ? 0 : 4;
}

static void malloc_stats_case(struct run *r, const char *how)
{
    char dir[] = "/tmp/fitalloc-promises-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        check(0, "malloc_stats: temporary directory", "mkdtemp: %s", strerror(errno));
        return;
    }
    char data[200], env_data[240], env_how[100], label[100], name[300];
    snprintf(data, sizeof data, "%s/stderr.txt", dir);
    snprintf(env_data, sizeof env_data, "PROMISES_DATA=%s", data);
    snprintf(env_how, sizeof env_how, "PROMISES_HOW=%s", how);
    snprintf(label, sizeof label, "malloc_stats, stderr %s", strcmp(how, "freopen") == 0 ? "freopen()ed" : "= fopen()");
    const char *env[] = {env_data, env_how, NULL};
    run_case("malloc-stats-stream", env, 30, r);
    static char got[8192];
    read_file(data, got, sizeof got);
    int on_fd2 = strstr(r->err, "Arena 0:") != NULL;
    report(label, r);
    const char *want[] = {"before the report\n", "Arena 0:\n", "system bytes     = ", "in use bytes     = ",
                          "Total (incl. mmap):\n", "system bytes     = ", "in use bytes     = ",
                          "max mmap regions = ", "max mmap bytes   = ", "after the report\n"};
    const char *at = got;
    int in_order = 1;
    for (size_t i = 0; i < sizeof want / sizeof want[0] && in_order; i++) {
        const char *f = strstr(at, want[i]);
        in_order = f != NULL;
        if (f)
            at = f + strlen(want[i]);
    }
    snprintf(name, sizeof name, "%s: the stream has glibc's lines, between the program's", label);
    check(in_order, name, "it holds: %.600s", got);
    snprintf(name, sizeof name, "%s: nothing on descriptor 2", label);
    check(!on_fd2, name, "the report went to descriptor 2");
    unlink(data);
    rmdir(dir);
}

/* ---- item 12: fork among stdio threads --------------------------------------- */

static atomic_int fork_stdio_stop;
static atomic_long fork_stdio_forks, fork_stdio_lines, fork_stdio_flushes;
static const char *fork_stdio_path;

static void *forker(void *arg)
{
    (void)arg;
    while (!atomic_load(&fork_stdio_stop)) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        if (pid > 0) {
            int st;
            waitpid(pid, &st, 0);
            atomic_fetch_add(&fork_stdio_forks, 1);
        }
    }
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    while (!atomic_load(&fork_stdio_stop)) {
        FILE *f = fopen(fork_stdio_path, "r");
        if (f == NULL)
            continue;
        char *line = NULL; /* getline allocates, and reallocates as lines grow */
        size_t cap = 0;
        while (!atomic_load(&fork_stdio_stop) && getline(&line, &cap, f) > 0)
            atomic_fetch_add(&fork_stdio_lines, 1);
        free(line);
        fclose(f);
    }
    return NULL;
}

static void *flusher(void *arg)
{
    (void)arg;
    while (!atomic_load(&fork_stdio_stop)) {
        fflush(NULL);
        atomic_fetch_add(&fork_stdio_flushes, 1);
    }
    return NULL;
}

static int child_fork_stdio(void)
{
    fork_stdio_path = getenv("PROMISES_DATA");
    if (fork_stdio_path == NULL)
        return 3;
    FILE *f = fopen(fork_stdio_path, "w");
    if (f == NULL)
        return 3;
    for (int i = 0; i < 3000; i++) {
        int len = (i * 37) % 1500 + 1;
        for (int k = 0; k < len; k++)
            fputc('a' + (i + k) % 26, f);
        fputc('\n', f);
    }
    fclose(f);
    pthread_t t[13];
    for (int i = 0; i < 13; i++)
        pthread_create(&t[i], NULL, i < 4 ? forker : i < 12 ? reader : flusher, NULL);
    sleep_ms(5000);
    atomic_store(&fork_stdio_stop, 1);
    for (int i = 0; i < 13; i++)
        pthread_join(t[i], NULL);
    printf("%ld forks, %ld lines read, %ld fflush(NULL) calls in 5 s\n", atomic_load(&fork_stdio_forks),
           atomic_load(&fork_stdio_lines), atomic_load(&fork_stdio_flushes));
    fflush(stdout);
    res(atomic_load(&fork_stdio_forks) > 0 && atomic_load(&fork_stdio_lines) > 0, "every kind of thread made progress",
        " ");
    return 0;
}

static void fork_stdio_case(struct run *r)
{
    char dir[] = "/tmp/fitalloc-promises-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        check(0, "fork among stdio threads: temporary directory", "mkdtemp: %s", strerror(errno));
        return;
    }
    char data[200], env_data[240];
    snprintf(data, sizeof data, "%s/lines.txt", dir);
    snprintf(env_data, sizeof env_data, "PROMISES_DATA=%s", data);
    const char *env[] = {env_data, NULL};
    run_case("fork-stdio", env, 25, r);
    report("fork among getline and fflush(NULL) threads (5 s, killed at 25 s)", r);
    unlink(data);
    rmdir(dir);
}

/* ---- main -------------------------------------------------------------------- */

/* first-malloc-signals, 150 fresh processes: every one ends, with exit 0
 * or SIGABRT after one "fitalloc:" line. */
static void signals_case(const char *mode, int runs, const char *label, struct run *r)
{
    int ok = 0, aborted = 0, bad = 0;
    char why[64] = "", first_bad[400] = "";
    for (int i = 0; i < runs; i++) {
        run_case(mode, NULL, 10, r);
        int one_line = strncmp(r->err, "fitalloc: ", 10) == 0 && strchr(r->err, '\n') == r->err + strlen(r->err) - 1;
        if (exited_ok(r)) {
            ok++;
        } else if (!r->hung && r->status != -1 && WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGABRT && one_line) {
            aborted++;
        } else {
            if (!bad++)
                snprintf(first_bad, sizeof first_bad, "%s; stderr: %.200s", ending(r, why, sizeof why), r->err);
        }
    }
    diag("%s: %d of %d ran through, %d reported the allocation in the handler", mode, ok, runs, aborted);
    check(bad == 0, label, "%d bad runs, the first: %s", bad, first_bad);
}

static void racing_double_free_case(struct run *r)
{
    int good = 0, bad = 0;
    char why[64] = "", first_bad[400] = "";
    for (int i = 0; i < 100; i++) {
        run_case("racing-double-free", NULL, 10, r);
        int one_line = strncmp(r->err, "fitalloc: ", 10) == 0 && strchr(r->err, '\n') == r->err + strlen(r->err) - 1;
        if (!r->hung && r->status != -1 && WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGABRT && one_line &&
            strstr(r->err, "double free") != NULL) {
            good++;
        } else if (!bad++) {
            snprintf(first_bad, sizeof first_bad, "%s; stderr: %.300s", ending(r, why, sizeof why), r->err);
        }
    }
    diag("racing-double-free: %d of 100 runs ended with one line", good);
    check(bad == 0, "a double free by two threads at the same moment: one line, SIGABRT (100 runs)",
          "%d bad runs, the first: %s", bad, first_bad);
}

static void first_malloc_signals_case(struct run *r)
{
    signals_case("first-malloc-signals", 150,
                 "a signal handler's malloc during the first malloc: no hang, no fault (150 fresh processes)", r);
    signals_case("handler-allocs", 10,
                 "a signal handler's allocations inside its thread's, one thread: one line or none, no fault (10 runs)", r);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        if (strcmp(argv[1], "calloc-after-purge") == 0)
            return child_calloc_after_purge(0);
        if (strcmp(argv[1], "calloc-after-purge-mapped") == 0)
            return child_calloc_after_purge(1);
        if (strcmp(argv[1], "huge-requests") == 0)
            return child_huge_requests();
        if (strcmp(argv[1], "harden-big-align") == 0)
            return child_harden_big_align();
        if (strcmp(argv[1], "harden-big-align-overflow") == 0)
            return child_harden_big_align_overflow();
        if (strcmp(argv[1], "data-after-closing") == 0)
            return child_data_after_closing();
        if (strcmp(argv[1], "stats-plain") == 0)
            return child_stats_plain();
        if (strcmp(argv[1], "options") == 0)
            return child_options();
        if (strcmp(argv[1], "malloc-stats-stream") == 0)
            return child_malloc_stats_stream();
        if (strcmp(argv[1], "fork-stdio") == 0)
            return child_fork_stdio();
        if (strcmp(argv[1], "glibc-knobs") == 0)
            return child_glibc_knobs();
        if (strcmp(argv[1], "first-malloc-signals") == 0)
            return child_first_malloc_signals();
        if (strcmp(argv[1], "handler-allocs") == 0)
            return child_handler_allocs();
        if (strcmp(argv[1], "racing-double-free") == 0)
            return child_racing_double_free();
        fprintf(stderr, "unknown case %s\n", argv[1]);
        return 2;
    }
    struct run *r = malloc(sizeof *r);

    const char *no_cache[] = {"FITALLOC_TCACHE=0", NULL};
    run_case("calloc-after-purge", no_cache, 30, r);
    report("calloc after a purged top", r);
    run_case("calloc-after-purge-mapped", no_cache, 30, r);
    report("calloc after a purged top, mapped region", r);

    run_case("huge-requests", NULL, 30, r);
    report("requests beyond memory", r);

    const char *harden[] = {"FITALLOC_HARDEN=1", NULL};
    run_case("harden-big-align", harden, 60, r);
    report("hardened memalign with a big alignment", r);
    run_case("harden-big-align-overflow", harden, 60, r);
    check_death("hardened memalign(1 GiB, 16), one byte overflowed", r);

    diagnostics_cases(r);

    options_cases(r);

    malloc_stats_case(r, "freopen");
    malloc_stats_case(r, "assign");

    fork_stdio_case(r);

    const char *knobs[] = {"MALLOC_PERTURB_=165", "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=300000", NULL};
    run_case("glibc-knobs", knobs, 30, r);
    report("glibc's knobs", r);

    first_malloc_signals_case(r);
    racing_double_free_case(r);

    free(r);
    return tap_done("test_promises");
}
