/* test_oom.c - out of memory and failing system calls: every failure must be
 * a clean NULL with errno ENOMEM (posix_memalign: the return value ENOMEM),
 * never a crash, an abort or a damaged heap, and memory must be usable again
 * once some is freed.
 *
 * Part 1, under a real setrlimit(RLIMIT_AS) of the current VmSize plus
 * 48 MiB, one forked child per phase: allocate until the first failure with
 * small, medium, 200 KiB and large malloc, calloc, memalign, posix_memalign,
 * aligned_alloc; then check that the failure was NULL/ENOMEM, that more
 * calls of every kind also fail cleanly (or succeed), that
 * fitalloc_check_heap() finds nothing and every block kept its contents;
 * free half the blocks and allocate again (must succeed). A realloc phase
 * grows a block until realloc fails and checks that the old block is intact
 * and still usable (written, shrunk, freed); another fills the heap, then
 * asks realloc for more.
 *
 * Part 2, failure injection: the program re-executes itself with
 * FITALLOC_FAIL_EVERY=n (n = 1, 2, 3, 7; the library reads it at start-up:
 * every n-th request for memory from the system fails) and runs 4000 random
 * operations of every kind and size (heap growth, large mappings, realloc
 * growth through mremap). Every failed call must return NULL/ENOMEM,
 * a failed realloc must leave its block intact, all contents must survive,
 * and fitalloc_check_heap() must find nothing (every 250 operations and at
 * the end). With n = 1 every allocation must fail; with n >= 2 large
 * allocations must fail sometimes, and the heap must have fallen back to
 * mmap'ed regions when the program break could not grow; with n >= 3 large
 * allocations must also succeed sometimes and large blocks must have been
 * resized (mremap). A second child per n = 3 and 7 resizes 126 large blocks
 * 12 times each, so that the large-block table keeps recording new
 * addresses and has to grow while requests fail.
 *
 * Children report through a pipe with write(2) only (no stdio: stdio may
 * need memory); the parent turns their reports into TAP checks and also
 * checks that each child exited with status 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

#define HEADROOM (48 * MiB)
#define CHILD_DEADLINE_S 30.0

/* ---- child reports ---------------------------------------------------------- */

static int res_fd = -1;

/* "R <pass> <name>\t<detail>": one check for the parent. */
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

/* "D <text>": a diagnostic line. */
__attribute__((format(printf, 1, 2)))
static void rdiag(const char *fmt, ...)
{
    char line[400] = "D ";
    va_list ap;
    va_start(ap, fmt);
    int n = 2 + vsnprintf(line + 2, sizeof line - 3, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    write_all(res_fd, line, (size_t)n);
}

/* ---- parent: run a child and turn its reports into checks ------------------- */

static void handle_line(const char *label, char *line)
{
    if (line[0] == 'R' && line[1] == ' ' && (line[2] == '0' || line[2] == '1') && line[3] == ' ') {
        int pass = line[2] == '1';
        char *name = line + 4;
        char *tab = strchr(name, '\t');
        const char *detail = "";
        if (tab) {
            *tab = 0;
            detail = tab + 1;
        }
        char full[400];
        snprintf(full, sizeof full, "%s: %s", label, name);
        check(pass, full, "%s", detail);
    } else if (line[0] == 'D' && line[1] == ' ') {
        diag("%s: %s", label, line + 2);
    } else if (line[0]) {
        diag("%s: (unexpected output) %s", label, line);
    }
}

/* Reads the child's reports from fd until EOF or the deadline, then reaps
 * it; checks that it exited with status 0. */
static void collect(const char *label, pid_t pid, int fd)
{
    static char buf[1 << 16];
    size_t len = 0;
    double deadline = now_s() + CHILD_DEADLINE_S;
    for (;;) {
        int left_ms = (int)((deadline - now_s()) * 1000);
        if (left_ms <= 0)
            break;
        struct pollfd pf = {fd, POLLIN, 0};
        int r = poll(&pf, 1, left_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        char *nl;
        while ((nl = memchr(buf, '\n', len)) != NULL) {
            *nl = 0;
            handle_line(label, buf);
            size_t used = (size_t)(nl - buf) + 1;
            memmove(buf, nl + 1, len - used);
            len -= used;
            buf[len] = 0;
        }
        if (len == sizeof buf - 1) { /* an overlong line: drop it */
            len = 0;
        }
    }
    close(fd);
    int status = 0;
    int hung = !wait_child_until(pid, deadline, 2, &status);
    char why[120];
    if (hung)
        snprintf(why, sizeof why, "timed out after %.0f s (killed)", CHILD_DEADLINE_S);
    else if (status == -1)
        snprintf(why, sizeof why, "waitpid failed");
    else if (WIFSIGNALED(status))
        snprintf(why, sizeof why, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(why, sizeof why, "exit status %d", WEXITSTATUS(status));
    char name[300];
    snprintf(name, sizeof name, "%s: child ran to the end (no crash, no abort)", label);
    check(!hung && status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, name, "%s", why);
}

/* ---- blocks with their own bookkeeping ---------------------------------------
 * Each block starts with a node linking it to the previously allocated one;
 * the rest carries the pattern of its seed. No memory outside the blocks is
 * needed, however many there are. */

struct node {
    struct node *prev;
    size_t size;
    uint64_t seed;
};

static void fill_block(struct node *b, size_t size, uint64_t seed)
{
    b->size = size;
    b->seed = seed;
    pat_fill_range(b, sizeof *b, size, seed);
}

static int block_ok(const struct node *b)
{
    const unsigned char *p = (const unsigned char *)b;
    size_t n = b->size;
    for (size_t i = sizeof *b; i < n; i++) {
        if (i % 8 == 0 && i + 8 <= n) {
            if (*(const u64_alias *)(const void *)(p + i) != pat_word(b->seed, i / 8))
                return 0;
            i += 7;
            continue;
        }
        if (p[i] != (unsigned char)(pat_word(b->seed, i / 8) >> (8 * (i % 8))))
            return 0;
    }
    return 1;
}

enum akind { K_MALLOC, K_CALLOC, K_MEMALIGN, K_POSIX_MEMALIGN, K_ALIGNED_ALLOC };

static const char *kind_name(enum akind k)
{
    switch (k) {
    case K_MALLOC: return "malloc";
    case K_CALLOC: return "calloc";
    case K_MEMALIGN: return "memalign";
    case K_POSIX_MEMALIGN: return "posix_memalign";
    case K_ALIGNED_ALLOC: return "aligned_alloc";
    }
    return "?";
}

/* One allocation of kind k; NULL on failure. *clean is cleared when a
 * failure is not the documented one (NULL + errno ENOMEM; posix_memalign:
 * returns ENOMEM, *out untouched). */
static void *alloc_kind(enum akind k, size_t size, size_t align, int *clean, char *why, size_t why_len)
{
    void *p = NULL;
    errno = 0;
    switch (k) {
    case K_MALLOC:
        p = malloc(hide_size(size));
        break;
    case K_CALLOC:
        p = calloc(1, hide_size(size));
        break;
    case K_MEMALIGN:
        p = memalign(hide_size(align), hide_size(size));
        break;
    case K_ALIGNED_ALLOC:
        p = aligned_alloc(hide_size(align), hide_size(size));
        break;
    case K_POSIX_MEMALIGN: {
        void *out = (void *)(uintptr_t)0x1234;
        int r = posix_memalign(&out, hide_size(align), hide_size(size));
        if (r == 0) {
            p = out;
        } else if (r != ENOMEM || out != (void *)(uintptr_t)0x1234) {
            *clean = 0;
            snprintf(why, why_len, "posix_memalign(%zu, %zu) returned %d, *out %p", align, size, r, out);
        }
        return p;
    }
    }
    if (p == NULL && errno != ENOMEM) {
        *clean = 0;
        snprintf(why, why_len, "%s(%zu) returned NULL with errno %d", kind_name(k), size, errno);
    }
    if (p != NULL && align > 16 && ((uintptr_t)p & (align - 1)) != 0) {
        *clean = 0;
        snprintf(why, why_len, "%s(%zu, %zu) = %p is not aligned", kind_name(k), align, size, p);
    }
    if (p != NULL && k == K_CALLOC && zero_check(p, size) != SIZE_MAX) {
        *clean = 0;
        snprintf(why, why_len, "calloc(1, %zu) = %p is not zeroed", size, p);
    }
    return p;
}

/* ---- part 1: RLIMIT_AS -------------------------------------------------------- */

static size_t vm_size_bytes(void)
{
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *s = strstr(buf, "VmSize:");
    if (!s)
        return 0;
    return (size_t)strtoull(s + 7, NULL, 10) * 1024;
}

static int set_as_limit(void)
{
    size_t vm = vm_size_bytes();
    if (vm == 0) {
        res(0, "read VmSize", "cannot read /proc/self/status");
        return 0;
    }
    struct rlimit rl = {vm + HEADROOM, vm + HEADROOM};
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        res(0, "setrlimit(RLIMIT_AS)", "errno %d", errno);
        return 0;
    }
    return 1;
}

struct phase {
    const char *name;
    enum akind kind;
    size_t size;
    size_t align;
};

static const struct phase phases[] = {
    {"malloc 48 B", K_MALLOC, 48, 0},
    {"malloc 4000 B", K_MALLOC, 4000, 0},
    {"malloc 200 KiB", K_MALLOC, 200 * KiB, 0},
    {"malloc 3 MiB", K_MALLOC, 3 * MiB, 0},
    {"calloc 100 B", K_CALLOC, 100, 0},
    {"calloc 20000 B", K_CALLOC, 20000, 0},
    {"calloc 2 MiB", K_CALLOC, 2 * MiB, 0},
    {"memalign(64, 1000)", K_MEMALIGN, 1000, 64},
    {"posix_memalign(4096, 10000)", K_POSIX_MEMALIGN, 10000, 4096},
    {"aligned_alloc(256, 2 MiB)", K_ALIGNED_ALLOC, 2 * MiB, 256},
    {"posix_memalign(64, 1 MiB + 1)", K_POSIX_MEMALIGN, MiB + 1, 64},
};
#define N_PHASES (sizeof phases / sizeof phases[0])

/* Calls of every kind and size while memory is exhausted: each must fail
 * cleanly or succeed (successes are freed at once). */
static void try_everything(int *clean, char *why, size_t why_len, int *failed)
{
    static const size_t sizes[] = {1, 48, 1000, 4000, 70000, 200 * KiB, 3 * MiB, 64 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int k = K_MALLOC; k <= K_ALIGNED_ALLOC; k++) {
            void *p = alloc_kind((enum akind)k, sizes[i], k == K_MALLOC || k == K_CALLOC ? 0 : 128, clean, why,
                                 why_len);
            if (p == NULL)
                (*failed)++;
            free(p);
        }
    }
}

static void rlimit_phase(const struct phase *ph)
{
    if (!set_as_limit())
        return;
    char why[200] = "";
    int clean = 1;
    struct node *list = NULL;
    size_t count = 0;
    uint64_t seed = 1;
    size_t cap_count = 8 * 1000 * 1000;
    void *p;
    /* 1. allocate until the first failure */
    while ((p = alloc_kind(ph->kind, ph->size, ph->align, &clean, why, sizeof why)) != NULL) {
        struct node *b = p;
        fill_block(b, ph->size, seed++);
        b->prev = list;
        list = b;
        if (++count == cap_count)
            break;
    }
    res(count < cap_count, "allocation fails once the address space limit is reached", "%zu allocations never failed",
        count);
    res(clean, "the failure is NULL with errno ENOMEM", "%s", why);
    rdiag("%s: %zu blocks (%zu MiB) before the first failure", ph->name, count, count * ph->size / MiB);
    /* 2. more calls of every kind while exhausted */
    int failed = 0, clean2 = 1;
    char why2[200] = "";
    for (int i = 0; i < 20; i++) {
        void *q = alloc_kind(ph->kind, ph->size, ph->align, &clean2, why2, sizeof why2);
        if (q != NULL) {
            struct node *b = q;
            fill_block(b, ph->size, seed++);
            b->prev = list;
            list = b;
            count++;
        } else {
            failed++;
        }
    }
    try_everything(&clean2, why2, sizeof why2, &failed);
    res(clean2, "further calls of every kind and size fail cleanly (NULL/ENOMEM) or succeed", "%s", why2);
    rdiag("%s: %d of the further calls failed", ph->name, failed);
    res(heap_problems() == 0, "fitalloc_check_heap() == 0 after the failures", " ");
    /* 3. contents */
    size_t bad = 0;
    for (struct node *b = list; b; b = b->prev)
        if (!block_ok(b))
            bad++;
    res(bad == 0, "every block kept its contents", "%zu damaged blocks", bad);
    /* 4. free the newer half, allocate again */
    size_t half = count / 2;
    for (size_t i = 0; i < half && list; i++) {
        struct node *prev = list->prev;
        free(list);
        list = prev;
    }
    count -= half;
    res(heap_problems() == 0, "fitalloc_check_heap() == 0 after freeing half", " ");
    size_t again = half / 2 < 1000 ? half / 2 : 1000;
    if (again == 0 && half > 0)
        again = 1;
    size_t got = 0;
    int clean3 = 1;
    char why3[200] = "";
    for (size_t i = 0; i < again; i++) {
        void *q = alloc_kind(ph->kind, ph->size, ph->align, &clean3, why3, sizeof why3);
        if (q == NULL)
            break;
        struct node *b = q;
        fill_block(b, ph->size, seed++);
        b->prev = list;
        list = b;
        count++;
        got++;
    }
    res(half > 0 && got == again && clean3, "after freeing half the blocks, allocation succeeds again",
        "%zu of %zu succeeded (%zu freed) %s", got, again, half, why3);
    /* 5. everything still intact; free it all */
    bad = 0;
    for (struct node *b = list; b; b = b->prev)
        if (!block_ok(b))
            bad++;
    res(bad == 0, "all remaining blocks kept their contents", "%zu damaged blocks", bad);
    while (list) {
        struct node *prev = list->prev;
        free(list);
        list = prev;
    }
    res(heap_problems() == 0, "fitalloc_check_heap() == 0 after freeing everything", " ");
    void *last = malloc(hide_size(ph->size));
    res(last != NULL, "one more allocation after freeing everything succeeds", "NULL, errno %d", errno);
    free(last);
}

/* Checks that a realloc failure left block p (n bytes, pattern seed) intact
 * and usable: contents, rewrite, shrink (which must succeed and keep the
 * prefix), free. */
static void realloc_failed_check(const char *what, unsigned char *p, size_t n, uint64_t seed, int err)
{
    char name[200];
    snprintf(name, sizeof name, "%s: NULL with errno ENOMEM", what);
    res(err == ENOMEM, name, "errno %d", err);
    snprintf(name, sizeof name, "%s: the old block is intact", what);
    size_t off = pat_check(p, n, seed);
    res(off == SIZE_MAX, name, "first wrong byte at offset %zu of %zu", off, n);
    snprintf(name, sizeof name, "%s: the old block is usable (written, shrunk, freed)", what);
    pat_fill(p, n, seed + 1);
    size_t small = n / 2 > 16 ? n / 2 : 16;
    unsigned char *q = realloc(p, hide_size(small));
    int ok = q != NULL && pat_check(q, small, seed + 1) == SIZE_MAX && heap_problems() == 0;
    res(ok, name, "realloc to %zu gave %p", small, (void *)q);
    free(q ? q : p);
}

static void rlimit_realloc(void)
{
    if (!set_as_limit())
        return;
    /* a. one block grows until realloc fails (heap, then its own mapping, mremap) */
    size_t n = 1000;
    uint64_t seed = 77;
    unsigned char *p = malloc(hide_size(n));
    if (p == NULL) {
        res(0, "realloc growth: first malloc", "NULL");
        return;
    }
    pat_fill(p, n, seed);
    int steps = 0, lost = 0;
    for (;;) {
        size_t m = n * 2;
        if (m > 4096 * MiB)
            break;
        errno = 0;
        unsigned char *q = realloc(p, hide_size(m));
        if (q == NULL) {
            int err = errno;
            rdiag("realloc growth: failed growing %zu -> %zu after %d steps", n, m, steps);
            realloc_failed_check("realloc growth", p, n, seed, err);
            p = NULL;
            break;
        }
        if (pat_check(q, n, seed) != SIZE_MAX)
            lost++;
        pat_fill_range(q, n, m, seed);
        p = q;
        n = m;
        steps++;
    }
    res(p == NULL, "realloc growth eventually fails under the limit", "grew to %zu without failing", n);
    res(lost == 0, "realloc growth kept the contents at every step", "%d steps lost contents", lost);
    free(p);
    res(heap_problems() == 0, "fitalloc_check_heap() == 0 after realloc growth", " ");

    /* b. the heap is full of 4000-byte blocks; realloc one of them (and a
     * small one) to more */
    struct node *list = NULL;
    size_t count = 0;
    void *b;
    unsigned char *s = malloc(hide_size(100));
    if (s == NULL) {
        res(0, "realloc in a full heap: setup", "malloc(100) failed");
        return;
    }
    pat_fill(s, 100, 5);
    while ((b = malloc(hide_size(4000))) != NULL) {
        struct node *x = b;
        fill_block(x, 4000, 1000 + count);
        x->prev = list;
        list = x;
        count++;
    }
    rdiag("realloc in a full heap: %zu blocks of 4000 B", count);
    static const size_t targets[] = {8000, 100000, 200 * KiB, 3 * MiB, 256 * MiB};
    int fails = 0;
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        /* the oldest-but-one 4000-byte block (not next to the top) */
        struct node *victim = list ? list->prev : NULL;
        if (victim == NULL)
            break;
        size_t vs = victim->size;
        uint64_t vseed = victim->seed;
        errno = 0;
        void *q = realloc(victim, hide_size(targets[i]));
        int err = errno;
        char what[120];
        if (q == NULL) {
            fails++;
            snprintf(what, sizeof what, "realloc in a full heap, 4000 B -> %zu", targets[i]);
            res(err == ENOMEM, what, "errno %d", err);
            snprintf(what, sizeof what, "realloc in a full heap, 4000 B -> %zu: block intact", targets[i]);
            res(block_ok(victim) && victim->size == vs && victim->seed == vseed, what, "contents changed");
        } else {
            struct node *nb = q;
            snprintf(what, sizeof what, "realloc in a full heap, 4000 B -> %zu succeeded, contents kept", targets[i]);
            res(block_ok(nb), what, "contents changed");
            list->prev = nb->prev;
            free(nb);
            count--;
        }
        errno = 0;
        unsigned char *t = realloc(s, hide_size(targets[i]));
        err = errno;
        if (t == NULL) {
            fails++;
            snprintf(what, sizeof what, "realloc in a full heap, 100 B -> %zu", targets[i]);
            res(err == ENOMEM && pat_check(s, 100, 5) == SIZE_MAX, what, "errno %d, contents %s", err,
                pat_check(s, 100, 5) == SIZE_MAX ? "kept" : "changed");
        } else {
            if (pat_check(t, 100, 5) != SIZE_MAX)
                res(0, "realloc in a full heap, small block grown: contents kept", "changed");
            unsigned char *u = realloc(t, hide_size(100));
            s = u ? u : t;
        }
    }
    res(fails > 0, "realloc in a full heap: some growth requests fail", "none failed");
    res(heap_problems() == 0, "fitalloc_check_heap() == 0 after realloc in a full heap", " ");
    size_t bad = 0;
    while (list) {
        struct node *prev = list->prev;
        if (!block_ok(list))
            bad++;
        free(list);
        list = prev;
    }
    free(s);
    res(bad == 0, "realloc in a full heap: the other blocks kept their contents", "%zu damaged", bad);
    res(heap_problems() == 0, "fitalloc_check_heap() == 0 at the end", " ");
}

/* Runs fn(arg) in a forked child whose reports (res_fd) go through a pipe to
 * collect(). */
static void run_forked(const char *label, void (*fn)(const void *), const void *arg)
{
    int fds[2];
    if (pipe(fds) != 0) {
        check(0, label, "pipe: %s", strerror(errno));
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        check(0, label, "fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        res_fd = fds[1];
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    collect(label, pid, fds[0]);
}

static void phase_entry(const void *arg)
{
    rlimit_phase(arg);
}

static void realloc_entry(const void *arg)
{
    (void)arg;
    rlimit_realloc();
}

/* ---- part 2: failure injection (in a re-executed child) ----------------------- */

enum { K_SLOTS = 96, INJECT_OPS = 4000 };
#define LIVE_CAP (48 * MiB)

struct slot {
    unsigned char *p;
    size_t size;
    uint64_t seed;
};

struct inj_counts {
    long calls[8], fails[8];
};

enum { C_SMALL, C_MEDIUM, C_BIG, C_LARGE, C_CALLOC, C_ALIGNED, C_REALLOC_GROW, C_REALLOC_LARGE };
static const char *cat_name[8] = {"malloc <= 1 KiB", "malloc <= 120 KiB", "malloc 128 KiB..1 MiB",
                                  "malloc > 1 MiB", "calloc", "aligned", "realloc growth",
                                  "realloc growth of a large block"};

static size_t pick_size(struct rng *r, int *cat)
{
    uint64_t x = rng_next(r) % 100;
    if (x < 45) {
        *cat = C_SMALL;
        return rng_range(r, 0, 1024);
    }
    if (x < 75) {
        *cat = C_MEDIUM;
        return rng_range(r, 1025, 120 * KiB);
    }
    if (x < 87) {
        *cat = C_BIG;
        return rng_range(r, 128 * KiB, MiB);
    }
    *cat = C_LARGE;
    return rng_range(r, MiB + 1, 4 * MiB);
}

struct region_count {
    int regions;
    int far;
    uintptr_t brk;
};

static void region_cb(void *ctx, size_t addr, uint64_t size, uint32_t kind)
{
    struct region_count *rc = ctx;
    (void)size;
    if (kind != FITALLOC_WALK_REGION)
        return;
    rc->regions++;
    /* not an sbrk region: far above the program break */
    if (addr > rc->brk + 1024 * MiB)
        rc->far++;
}

/* Keeps the first problem seen, in the local buffer "first". */
#define NOTE(...)                                                                                                  \
    do {                                                                                                           \
        if (!first[0])                                                                                             \
            snprintf(first, sizeof first, __VA_ARGS__);                                                            \
    } while (0)

static int inject_main(int n)
{
    res_fd = 1;
    uintptr_t brk0 = (uintptr_t)sbrk(0);
    struct rng r;
    rng_seed(&r, 4242 + (uint64_t)n);
    static struct slot s[K_SLOTS];
    struct inj_counts c;
    memset(&c, 0, sizeof c);
    int unclean = 0, realloc_damage = 0, content_damage = 0, heap_bad = 0, pm_bad = 0, align_bad = 0;
    long successes = 0, failures = 0;
    size_t live = 0;
    char first[200] = "";
    for (int op = 0; op < INJECT_OPS; op++) {
        int i = (int)(rng_next(&r) % K_SLOTS);
        struct slot *sl = &s[i];
        if (sl->p != NULL) {
            if (pat_check(sl->p, sl->size, sl->seed) != SIZE_MAX) {
                content_damage++;
                NOTE("slot %d (%zu B) lost its contents", i, sl->size);
            }
            uint64_t what = rng_next(&r) % 10;
            if (what < 4 && live < LIVE_CAP) {
                /* realloc: mostly growth */
                size_t old = sl->size;
                int large = old > MiB;
                size_t m = (rng_next(&r) % 4 == 0) ? rng_range(&r, 1, old + 1) : old + rng_range(&r, 1, old + 2 * MiB);
                int cat = large ? C_REALLOC_LARGE : C_REALLOC_GROW;
                if (m > old)
                    c.calls[cat]++;
                errno = 0;
                unsigned char *q = realloc(sl->p, hide_size(m));
                if (q == NULL) {
                    failures++;
                    if (m > old)
                        c.fails[cat]++;
                    if (errno != ENOMEM) {
                        unclean++;
                        NOTE("realloc(%zu -> %zu) NULL with errno %d", old, m, errno);
                    }
                    if (pat_check(sl->p, old, sl->seed) != SIZE_MAX) {
                        realloc_damage++;
                        NOTE("failed realloc(%zu -> %zu) damaged the block", old, m);
                    }
                } else {
                    successes++;
                    size_t keep = old < m ? old : m;
                    if (pat_check(q, keep, sl->seed) != SIZE_MAX) {
                        content_damage++;
                        NOTE("realloc(%zu -> %zu) lost contents", old, m);
                    }
                    pat_fill(q, m, sl->seed);
                    live = live - old + m;
                    sl->p = q;
                    sl->size = m;
                }
            } else {
                free(sl->p);
                live -= sl->size;
                sl->p = NULL;
            }
        } else {
            int cat;
            size_t n_bytes = pick_size(&r, &cat);
            if (live + n_bytes > LIVE_CAP)
                continue;
            uint64_t how = rng_next(&r) % 10;
            unsigned char *p = NULL;
            int err = 0;
            errno = 0;
            if (how < 5) {
                p = malloc(hide_size(n_bytes));
                err = errno;
            } else if (how < 7) {
                c.calls[C_CALLOC]++;
                p = calloc(1, hide_size(n_bytes));
                err = errno;
                if (p == NULL)
                    c.fails[C_CALLOC]++;
                else if (zero_check(p, n_bytes) != SIZE_MAX) {
                    content_damage++;
                    NOTE("calloc(%zu) not zeroed", n_bytes);
                }
            } else {
                c.calls[C_ALIGNED]++;
                size_t align = (size_t)32 << (rng_next(&r) % 9); /* 32 .. 8192 */
                if (how == 7) {
                    p = memalign(hide_size(align), hide_size(n_bytes));
                    err = errno;
                } else if (how == 8) {
                    p = aligned_alloc(hide_size(align), hide_size(n_bytes));
                    err = errno;
                } else {
                    void *out = (void *)(uintptr_t)0x1234;
                    int rv = posix_memalign(&out, hide_size(align), hide_size(n_bytes));
                    if (rv == 0) {
                        p = out;
                    } else {
                        err = ENOMEM;
                        if (rv != ENOMEM || out != (void *)(uintptr_t)0x1234) {
                            pm_bad++;
                            NOTE("posix_memalign(%zu, %zu) returned %d, *out %p", align, n_bytes, rv, out);
                        }
                    }
                }
                if (p == NULL)
                    c.fails[C_ALIGNED]++;
                else if (((uintptr_t)p & (align - 1)) != 0) {
                    align_bad++;
                    NOTE("aligned allocation %p not aligned to %zu", (void *)p, align);
                }
            }
            c.calls[cat]++;
            if (p == NULL) {
                c.fails[cat]++;
                failures++;
                if (err != ENOMEM) {
                    unclean++;
                    NOTE("allocation of %zu returned NULL with errno %d", n_bytes, err);
                }
            } else {
                successes++;
                sl->p = p;
                sl->size = n_bytes;
                sl->seed = rng_next(&r);
                pat_fill(p, n_bytes, sl->seed);
                live += n_bytes;
            }
        }
        if (op % 250 == 249 && heap_problems() != 0) {
            heap_bad++;
            NOTE("fitalloc_check_heap() found problems after op %d", op);
        }
    }
    for (int i = 0; i < K_SLOTS; i++) {
        if (s[i].p && pat_check(s[i].p, s[i].size, s[i].seed) != SIZE_MAX) {
            content_damage++;
            NOTE("slot %d lost its contents (final check)", i);
        }
    }
    struct region_count rc = {0, 0, brk0};
    fitalloc_heap_walk(region_cb, &rc);
    for (int i = 0; i < K_SLOTS; i++)
        free(s[i].p);
    if (heap_problems() != 0)
        heap_bad++;

    for (int k = 0; k < 8; k++)
        rdiag("%-32s %5ld calls, %5ld failed", cat_name[k], c.calls[k], c.fails[k]);
    struct fitalloc_stats st;
    memset(&st, 0, sizeof st);
    fitalloc_stats(&st);
    rdiag("%ld allocations succeeded, %ld failed; heap regions %d (%d mmap'ed); sbrk %llu, mmap %llu, mremap %llu calls",
          successes, failures, rc.regions, rc.far, (unsigned long long)st.sbrk_calls,
          (unsigned long long)st.mmap_calls, (unsigned long long)st.mremap_calls);

    res(unclean == 0, "every failed call returned NULL with errno ENOMEM", "%d unclean; first problem: %s", unclean,
        first);
    res(pm_bad == 0, "posix_memalign failures return ENOMEM and leave *out alone", "%d bad; %s", pm_bad, first);
    res(realloc_damage == 0, "failed realloc left the block intact", "%d damaged; %s", realloc_damage, first);
    res(content_damage == 0 && align_bad == 0, "every block kept its contents (calloc zeroed, alignment kept)",
        "%d damaged, %d misaligned; %s", content_damage, align_bad, first);
    res(heap_bad == 0, "fitalloc_check_heap() == 0 every 250 operations and at the end", "%d times: %s", heap_bad,
        first);
    if (n == 1) {
        res(successes == 0 && failures > 100, "every allocation fails", "%ld succeeded, %ld failed", successes,
            failures);
    } else {
        /* Large requests meet the injected failures, but freed mappings are
         * kept for reuse, and a refused mapping is retried once address
         * space was given back: they may all succeed (each failure that
         * remains is checked for ENOMEM above). */
        rdiag("large mallocs: %ld, %ld failed", c.calls[C_LARGE], c.fails[C_LARGE]);
        res(c.calls[C_LARGE] > 0, "large mappings were requested under failure injection", "none requested");
        res(successes > failures, "most allocations succeed (the allocator retries other sources)",
            "%ld succeeded, %ld failed", successes, failures);
        res(rc.far > 0, "heap growth hit failures: the heap fell back to mmap'ed regions",
            "%d regions, none mmap'ed", rc.regions);
        if (n == 2) {
            /* The first large block needs two requests (its mapping, then
             * the large-block table's); when the table's is always the
             * failing one, no large block is ever made. Reported only. */
            if (c.fails[C_LARGE] == c.calls[C_LARGE])
                rdiag("with n = 2 no large block could be created (all %ld large mallocs failed), so realloc "
                      "growth through mremap is exercised only with n >= 3",
                      c.calls[C_LARGE]);
        } else {
            res(c.fails[C_LARGE] < c.calls[C_LARGE], "some large mappings succeed", "all %ld failed",
                c.calls[C_LARGE]);
            res(c.calls[C_REALLOC_LARGE] > 20, "realloc growth of large blocks (mremap) was exercised",
                "only %ld calls", c.calls[C_REALLOC_LARGE]);
        }
    }
    return 0;
}

/* Large blocks resized again and again (mremap, which often moves them),
 * so that the large-block table keeps recording new addresses and must
 * grow now and then, while every n-th request for memory fails. Only the
 * first and last 64 bytes of each block are written (the rest stays
 * untouched, costing no memory). */
static void mark_ends(unsigned char *p, size_t size, uint64_t seed)
{
    pat_fill(p, 64, seed);
    pat_fill(p + size - 64, 64, seed + 1);
}

static int churn_main(int n)
{
    res_fd = 1;
    enum { NB = 126, ROUNDS = 12 };
    static struct {
        unsigned char *p;
        size_t size;
        uint64_t seed;
    } b[NB];
    int created = 0, unclean = 0, damaged = 0, moves = 0, fails = 0, calls = 0;
    char first[200] = "";
    for (int i = 0; i < NB; i++) {
        size_t size = 3 * MiB / 2 + (size_t)i * 4096;
        for (int t = 0; t < 4 && b[i].p == NULL; t++) {
            errno = 0;
            unsigned char *p = malloc(hide_size(size));
            if (p == NULL && errno != ENOMEM) {
                unclean++;
                NOTE("malloc(%zu) NULL with errno %d", size, errno);
            }
            if (p) {
                b[i].p = p;
                b[i].size = size;
                b[i].seed = 1000 + (uint64_t)i * 10;
                mark_ends(p, size, b[i].seed);
                created++;
            }
        }
    }
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < NB; i++) {
            if (b[i].p == NULL)
                continue;
            size_t old = b[i].size;
            size_t m = (r % 2 == 0) ? old * 2 + (size_t)r * 4096 : old / 2 + (size_t)(r + 1) * 8192;
            if (m < 3 * MiB / 2)
                m = 3 * MiB / 2 + (size_t)r * 4096;
            calls++;
            errno = 0;
            unsigned char *q = realloc(b[i].p, hide_size(m));
            if (q == NULL) {
                fails++;
                if (errno != ENOMEM) {
                    unclean++;
                    NOTE("realloc(%zu -> %zu) NULL with errno %d", old, m, errno);
                }
                if (pat_check(b[i].p, 64, b[i].seed) != SIZE_MAX ||
                    pat_check(b[i].p + old - 64, 64, b[i].seed + 1) != SIZE_MAX) {
                    damaged++;
                    NOTE("failed realloc(%zu -> %zu) damaged the block", old, m);
                }
                continue;
            }
            if (q != b[i].p)
                moves++;
            int kept = pat_check(q, 64, b[i].seed) == SIZE_MAX &&
                       (m < old || pat_check(q + old - 64, 64, b[i].seed + 1) == SIZE_MAX);
            if (!kept) {
                damaged++;
                NOTE("realloc(%zu -> %zu) lost contents", old, m);
            }
            b[i].p = q;
            b[i].size = m;
            b[i].seed += 2;
            mark_ends(q, m, b[i].seed);
        }
    }
    int heap_bad = heap_problems() != 0;
    for (int i = 0; i < NB; i++)
        free(b[i].p);
    heap_bad += heap_problems() != 0;
    rdiag("n = %d: %d large blocks created; %d reallocs, %d moved, %d failed", n, created, calls, moves, fails);
    res(created > NB / 2, "most large blocks could be created", "only %d of %d", created, NB);
    res(unclean == 0, "every failed call returned NULL with errno ENOMEM", "%d unclean; %s", unclean, first);
    res(damaged == 0, "every block kept its contents, also after a failed realloc", "%d damaged; %s", damaged, first);
    res(heap_bad == 0, "fitalloc_check_heap() == 0", " ");
    return 0;
}

struct inject_args {
    int n;
    int churn;
};

/* In the child: re-executes this program with FITALLOC_FAIL_EVERY=n and the
 * report pipe as its stdout. */
static void inject_entry(const void *arg)
{
    const struct inject_args *a = arg;
    dup2(res_fd, 1);
    close(res_fd);
    char num[16];
    snprintf(num, sizeof num, "%d", a->n);
    setenv("FITALLOC_FAIL_EVERY", num, 1);
    char *argv[] = {(char *)"test_oom", (char *)(a->churn ? "--inject-churn" : "--inject"), num, NULL};
    execv("/proc/self/exe", argv);
    _exit(127);
}

static void run_inject(int n, int churn)
{
    char label[64];
    snprintf(label, sizeof label, "FITALLOC_FAIL_EVERY=%d%s", n, churn ? ", large realloc churn" : "");
    struct inject_args a = {n, churn};
    run_forked(label, inject_entry, &a);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--inject") == 0)
        return inject_main(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "--inject-churn") == 0)
        return churn_main(atoi(argv[2]));
    setvbuf(stdout, NULL, _IOLBF, 0);
    diag("test_oom: RLIMIT_AS = VmSize + %zu MiB in each child; then FITALLOC_FAIL_EVERY = 1, 2, 3, 7",
         HEADROOM / MiB);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at start", " ");
    for (size_t i = 0; i < N_PHASES; i++) {
        char label[96];
        snprintf(label, sizeof label, "RLIMIT_AS, %s", phases[i].name);
        run_forked(label, phase_entry, &phases[i]);
    }
    run_forked("RLIMIT_AS, realloc", realloc_entry, NULL);
    static const int every[] = {1, 2, 3, 7};
    for (size_t i = 0; i < sizeof every / sizeof every[0]; i++)
        run_inject(every[i], 0);
    run_inject(3, 1);
    run_inject(7, 1);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at the end", " ");
    return tap_done("test_oom");
}
