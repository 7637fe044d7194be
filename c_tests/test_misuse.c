/* test_misuse.c - death tests: misuse of the allocator must end in SIGABRT
 * with one clear message, never in a crash, a silent corruption or a forged
 * pointer handed back (issue 4, "Never corrupt silently").
 *
 * Each case runs in a forked child whose stderr goes to a pipe; the parent
 * waits for it with a deadline. With fitalloc a case passes when the child
 * died by SIGABRT and its stderr holds exactly one line starting with
 * "fitalloc: ", which names the expected C function ("fitalloc: free(): ...")
 * and the address involved in hex. Before the misuse the child tells the
 * parent, through a second pipe written with write(2), which address the
 * message must name (the pointer given to the function), whether malloc
 * returned the forged address of a use-after-free case (a failure), and
 * where fitalloc held the block (from fitalloc_heap_walk) when that
 * matters. In the use-after-free cases the corruption is found at whatever
 * link the allocator follows, so any address is accepted there; the table
 * notes when it is not the block. The child uses no stdio.
 *
 * The same child code runs a second time against glibc's own malloc for
 * comparison: the functions are looked up in libc.so.6 itself with dlsym, so
 * in that child every call the case makes goes to glibc's allocator (libc's
 * own internal allocations, e.g. for a thread, still go to fitalloc). Those
 * runs only report: a table at the end shows, for every
 * case, what fitalloc and glibc did. Built with -DMISUSE_GLIBC_ONLY and
 * without -lfitalloc, this file gives a program that runs every case against
 * glibc alone (to check that the in-process comparison is faithful):
 *   cc -std=c11 -O1 -g -fno-builtin -Iinclude -DMISUSE_GLIBC_ONLY \
 *      -o c_tests/bin/test_misuse_glibc c_tests/test_misuse.c -ldl -pthread
 *
 * Sizes: small = 40 bytes (thread cache), medium = 4000 bytes (heap,
 * exact-size lists), large = 2 MiB (a mapping of its own).
 *
 * Environment: MISUSE_ONLY=substring runs only the cases whose name
 * contains it; MISUSE_VERBOSE=1 prints every child's stderr.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef MISUSE_GLIBC_ONLY
#include <stddef.h>
size_t fitalloc_check_heap(void);
size_t fitalloc_check_heap(void) { return 0; }
#endif
#include "common.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

#define SMALL ((size_t)40)
#define MEDIUM ((size_t)4000)
#define LARGE (2 * MiB)

#define CHILD_DEADLINE_S 5.0

/* ---- the allocator under test: fitalloc (the program's malloc) or glibc ---- */

struct api {
    const char *name;
    int is_fitalloc;
    void *(*f_malloc)(size_t);
    void (*f_free)(void *);
    void *(*f_realloc)(void *, size_t);
    size_t (*f_usable)(void *);
    int (*f_trim)(size_t);
};

static struct api fit_api = {"fitalloc", 1, malloc, free, realloc, malloc_usable_size, malloc_trim};
static struct api glibc_api = {"glibc", 0, NULL, NULL, NULL, NULL, NULL};
static int have_glibc;

/* glibc's allocator: the definitions in libc.so.6 itself, not the ones the
 * program's symbol lookup finds (fitalloc's). */
static void find_glibc(void)
{
#ifdef MISUSE_GLIBC_ONLY
    glibc_api.f_malloc = malloc;
    glibc_api.f_free = free;
    glibc_api.f_realloc = realloc;
    glibc_api.f_usable = malloc_usable_size;
    glibc_api.f_trim = malloc_trim;
    have_glibc = 1;
#else
    void *h = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    if (h == NULL)
        return;
    glibc_api.f_malloc = (void *(*)(size_t))dlsym(h, "malloc");
    glibc_api.f_free = (void (*)(void *))dlsym(h, "free");
    glibc_api.f_realloc = (void *(*)(void *, size_t))dlsym(h, "realloc");
    glibc_api.f_usable = (size_t(*)(void *))dlsym(h, "malloc_usable_size");
    glibc_api.f_trim = (int (*)(size_t))dlsym(h, "malloc_trim");
    have_glibc = glibc_api.f_malloc && glibc_api.f_free && glibc_api.f_realloc && glibc_api.f_usable &&
                 glibc_api.f_trim && (void *)glibc_api.f_malloc != (void *)malloc &&
                 (void *)glibc_api.f_free != (void *)free;
#endif
}

/* ---- child side: no stdio, reports through write(2) ---------------------- */

struct ctx {
    const struct api *A;
    int info_fd;
};

/* "0x" and lowercase hex digits without leading zeros, as fitalloc prints. */
static void fmt_hex(char *out, uintptr_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v != 0);
    *out++ = '0';
    *out++ = 'x';
    while (n > 0)
        *out++ = tmp[--n];
    *out = 0;
}

static void info_line(struct ctx *c, char tag, const char *text)
{
    char line[160];
    size_t n = strlen(text);
    if (n > sizeof line - 4)
        n = sizeof line - 4;
    line[0] = tag;
    line[1] = ' ';
    memcpy(line + 2, text, n);
    line[n + 2] = '\n';
    line[n + 3] = 0;
    write_all(c->info_fd, line, strlen(line));
}

/* An address the message may name. */
static void expect_addr(struct ctx *c, const void *p)
{
    char h[24];
    fmt_hex(h, (uintptr_t)p);
    info_line(c, 'A', h);
}

static void note(struct ctx *c, const char *text)
{
    info_line(c, 'N', text);
}

__attribute__((noreturn)) static void setup_failed(struct ctx *c, const char *why)
{
    info_line(c, 'S', why);
    _exit(4);
}

__attribute__((noreturn)) static void forged_returned(struct ctx *c, const void *q)
{
    char h[24];
    fmt_hex(h, (uintptr_t)q);
    info_line(c, 'F', h);
    _exit(3);
}

static void *c_malloc(struct ctx *c, size_t n)
{
    void *p = c->A->f_malloc(hide_size(n));
    if (p == NULL)
        setup_failed(c, "malloc returned NULL");
    memset(p, 0x5A, n);
    return p;
}

static volatile size_t sink;

/* The misuse itself: func(p). Returns if the allocator let it pass. */
static void misuse(struct ctx *c, const char *func, void *p)
{
    p = hide_ptr(p);
    if (strcmp(func, "free") == 0) {
        c->A->f_free(p);
    } else if (strcmp(func, "realloc") == 0) {
        void *q = c->A->f_realloc(p, hide_size(200));
        sink = (size_t)(uintptr_t)q;
    } else if (strcmp(func, "realloc-grow") == 0) {
        void *q = c->A->f_realloc(p, hide_size(3 * MEDIUM));
        sink = (size_t)(uintptr_t)q;
    } else if (strcmp(func, "malloc_usable_size") == 0) {
        sink = c->A->f_usable(p);
    } else {
        setup_failed(c, "unknown function");
    }
}

/* Where fitalloc holds the block whose payload is p (fitalloc runs only). */
struct where {
    uintptr_t hdr;
    int kind;         /* FITALLOC_WALK_* of the block starting at hdr, or -1 */
    uint64_t size;
    int inside_kind;  /* kind of the block that contains hdr, if no block starts there */
    uintptr_t inside;
};

#ifndef MISUSE_GLIBC_ONLY
static void where_cb(void *ctx, uintptr_t addr, uint64_t size, uint32_t kind)
{
    struct where *w = ctx;
    if (kind == FITALLOC_WALK_REGION || kind == FITALLOC_WALK_MAPPED)
        return;
    if (addr == w->hdr) {
        w->kind = (int)kind;
        w->size = size;
    } else if (addr < w->hdr && w->hdr < addr + size) {
        w->inside_kind = (int)kind;
        w->inside = addr;
    }
}
#endif

static const char *kind_name(int k)
{
    switch (k) {
    case 1: return "held";
    case 2: return "free";
    case 3: return "cached";
    default: return "?";
    }
}

/* Describes (in a note) where fitalloc keeps p's block; returns its kind. */
static int fit_where(struct ctx *c, const void *p, int send_note)
{
    if (!c->A->is_fitalloc)
        return -1;
    struct where w = {(uintptr_t)p - 4, -1, 0, -1, 0};
#ifndef MISUSE_GLIBC_ONLY
    fitalloc_heap_walk(where_cb, &w);
#endif
    if (send_note) {
        char text[120], h[24];
        if (w.kind >= 0) {
            strcpy(text, "block was ");
            strcat(text, kind_name(w.kind));
            if (w.kind == FITALLOC_WALK_FREE) {
                char num[24];
                int n = 0;
                uint64_t v = w.size;
                do {
                    num[n++] = (char)('0' + v % 10);
                    v /= 10;
                } while (v);
                strcat(text, " (");
                size_t l = strlen(text);
                while (n > 0)
                    text[l++] = num[--n];
                text[l] = 0;
                strcat(text, " B)");
            }
        } else if (w.inside_kind >= 0) {
            fmt_hex(h, w.inside + 4);
            strcpy(text, "block merged into a ");
            strcat(text, kind_name(w.inside_kind));
            strcat(text, " block at ");
            strcat(text, h);
        } else {
            strcpy(text, "block not in the heap");
        }
        note(c, text);
    }
    return w.kind;
}

/* ---- the cases -------------------------------------------------------------- */

struct mcase;
typedef void (*case_fn)(struct ctx *, const struct mcase *);

enum { ADDR_EXACT, ADDR_ANY };

struct mcase {
    const char *name;
    const char *func;     /* the misused call (and the function the message must name) */
    const char *msg_func; /* when the message names another function (malloc for UAF) */
    size_t size;
    long arg;
    case_fn run;
    int addr_policy;
    const char *fit_na; /* non-NULL: does not apply to fitalloc (why); reported only */
    const char *cause;  /* non-NULL: fitalloc's message must contain this (the real cause) */
};

static const char *expected_func(const struct mcase *k)
{
    if (k->msg_func)
        return k->msg_func;
    if (strcmp(k->func, "realloc-grow") == 0)
        return "realloc";
    return k->func;
}

/* func(p) on a freed block, right after the free; arg 1: with a held block
 * on each side, so the freed block stays a free block of its own (else a
 * medium block may merge into the top of the heap). */
static void run_freed(struct ctx *c, const struct mcase *k)
{
    void *g0 = k->arg ? c_malloc(c, k->size) : NULL;
    void *p = c_malloc(c, k->size);
    void *g1 = k->arg ? c_malloc(c, k->size) : NULL;
    c->A->f_free(p);
    fit_where(c, p, 1);
    expect_addr(c, p);
    misuse(c, k->func, p);
    sink = (size_t)(uintptr_t)g0 + (size_t)(uintptr_t)g1;
}

/* A run of RUN blocks of one size, sorted by address, so that a case can
 * find blocks that are neighbours in memory whatever order the allocator
 * hands them out in. */
enum { RUN = 12 };

static void alloc_run(struct ctx *c, size_t size, char **run)
{
    for (int i = 0; i < RUN; i++)
        run[i] = c_malloc(c, size);
    for (int i = 1; i < RUN; i++) /* insertion sort: no allocation */
        for (int j = i; j > 0 && run[j - 1] > run[j]; j--) {
            char *x = run[j];
            run[j] = run[j - 1];
            run[j - 1] = x;
        }
}

/* The index of the first of `count` blocks of the run that follow each
 * other in memory (each block's payload size + 4..32 bytes after the one
 * before), or -1. */
static int find_neighbours(char **run, size_t size, int count)
{
    for (int i = 0; i + count <= RUN; i++) {
        int ok = 1;
        for (int j = i; j + 1 < i + count; j++) {
            size_t d = (size_t)(run[j + 1] - run[j]);
            if (d < size + 4 || d > size + 32)
                ok = 0;
        }
        if (ok)
            return i;
    }
    return -1;
}

/* Three neighbours a t b (the rest of the run stays held); free t, then a
 * and b, so t is merged into one free block; arg 1: then drain the thread
 * cache (malloc_trim), so small blocks reach the heap and merge there. Then
 * free t again. */
static void run_df_merged(struct ctx *c, const struct mcase *k)
{
    char *run[RUN];
    alloc_run(c, k->size, run);
    int i = find_neighbours(run, k->size, 3);
    if (i < 0)
        setup_failed(c, "no three blocks of the run are neighbours");
    char *a = run[i], *t = run[i + 1], *b = run[i + 2];
    c->A->f_free(t);
    c->A->f_free(a);
    c->A->f_free(b);
    if (k->arg)
        c->A->f_trim(0);
    fit_where(c, t, 1);
    expect_addr(c, t);
    misuse(c, k->func, t);
}

/* The target is freed, then 200 other blocks of the same size (all
 * allocated before the first free, so no address is reused), then the
 * target again. */
static void run_df_after_many(struct ctx *c, const struct mcase *k)
{
    enum { OTHERS = 200 };
    static void *others[OTHERS];
    void *t = c_malloc(c, k->size);
    for (int i = 0; i < OTHERS; i++)
        others[i] = c->A->f_malloc(hide_size(k->size));
    for (int i = 0; i < OTHERS; i++)
        if (others[i] == NULL)
            setup_failed(c, "malloc returned NULL");
    c->A->f_free(t);
    for (int i = 0; i < OTHERS; i++)
        c->A->f_free(others[i]);
    fit_where(c, t, 1);
    expect_addr(c, t);
    misuse(c, k->func, t);
}

/* The target is freed by another thread, which then exits (so its cache
 * goes back to the heap), then freed again by the main thread. */
struct thread_free {
    const struct api *A;
    void *p;
};

static void *free_in_thread(void *arg)
{
    struct thread_free *tf = arg;
    tf->A->f_free(tf->p);
    return NULL;
}

static void run_df_thread_exit(struct ctx *c, const struct mcase *k)
{
    void *g0 = c_malloc(c, k->size);
    void *t = c_malloc(c, k->size);
    void *g1 = c_malloc(c, k->size);
    struct thread_free tf = {c->A, t};
    pthread_t th;
    if (pthread_create(&th, NULL, free_in_thread, &tf) != 0)
        setup_failed(c, "pthread_create failed");
    pthread_join(th, NULL);
    fit_where(c, t, 1);
    expect_addr(c, t);
    misuse(c, k->func, t);
    sink = (size_t)(uintptr_t)g0 + (size_t)(uintptr_t)g1;
}

/* Pointers that never came from the allocator. */
enum { FOREIGN_STACK, FOREIGN_STATIC, FOREIGN_MMAP, FOREIGN_LOW, FOREIGN_LIBC, FOREIGN_HIGH };
static _Alignas(64) char static_area[512];

static void run_foreign(struct ctx *c, const struct mcase *k)
{
    _Alignas(64) char stack_area[256];
    memset(stack_area, 0x33, sizeof stack_area);
    memset(static_area, 0x33, sizeof static_area);
    void *p = NULL;
    switch (k->arg) {
    case FOREIGN_STACK:
        p = stack_area + 32;
        break;
    case FOREIGN_STATIC:
        p = static_area + 32;
        break;
    case FOREIGN_MMAP: {
        char *m = mmap(NULL, 64 * KiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            setup_failed(c, "mmap failed");
        p = m + 16;
        break;
    }
    case FOREIGN_LOW:
        p = (void *)(uintptr_t)0x10000;
        break;
    case FOREIGN_LIBC:
        p = (void *)stdout; /* _IO_2_1_stdout_, in libc's data */
        break;
    case FOREIGN_HIGH:
        /* Above user space (the kernel's half): outside the page map. */
        p = (void *)(uintptr_t)0xffff800000001000ull;
        break;
    }
    expect_addr(c, p);
    misuse(c, k->func, p);
    sink = (size_t)stack_area[7];
}

/* func(p + arg) for a block p. */
static void run_interior(struct ctx *c, const struct mcase *k)
{
    char *p = c_malloc(c, k->size);
    char *q = p + k->arg;
    expect_addr(c, q);
    misuse(c, k->func, q);
}

/* The 8 bytes before the payload overwritten (arg 0: with 0x41; arg 1: the
 * 32-bit word just before the payload gets 16 added to bits 20.., i.e. a
 * fitalloc header keeps its tag but claims 16 more units), then func(p). */
static void run_underflow(struct ctx *c, const struct mcase *k)
{
    char *g = c_malloc(c, k->size);
    char *p = c_malloc(c, k->size);
    char *h = hide_ptr(p);
    if (k->arg == 0) {
        memset(h - 8, 0x41, 8);
    } else {
        uint32_t w;
        memcpy(&w, h - 4, 4);
        w += 16u << 16;
        memcpy(h - 4, &w, 4);
    }
    expect_addr(c, p);
    misuse(c, k->func, p);
    sink = (size_t)g[0];
}

/* Neighbours A and B (B right after A: found by address); A overflows by
 * writing the 8 bytes before B's payload (fitalloc: the end of A and B's
 * header; glibc: B's size field). arg selects what meets the damage:
 * 0 free(A), 1 func(B), 2 realloc(A) growing (which looks at B). */
static void run_overflow(struct ctx *c, const struct mcase *k)
{
    char *run[RUN];
    alloc_run(c, k->size, run);
    int i = find_neighbours(run, k->size, 2);
    if (i < 0)
        setup_failed(c, "no two blocks of the run are neighbours");
    char *a = run[i], *b = run[i + 1];
    if (c->A->f_usable(a) + 8 < (size_t)(b - a))
        setup_failed(c, "A's usable size does not reach B");
    memset(hide_ptr(b) - 8, 0x41, 8);
    char *victim = k->arg == 1 ? b : a;
    expect_addr(c, victim);
    misuse(c, k->func, victim);
}

/* Use after free: the first 16 bytes of a freed block (the cache's link and
 * mark, or a free block's two list links) overwritten; then malloc of the
 * same size several times, writing into each block it returns. arg bits:
 * 1 = forge with a stack address (else 0x4141414141414141); 2 = keep the
 * second word (forge the link only); 4 = drain the cache first (the block
 * is in the heap's small bins); 8 = held neighbours around the block, and
 * another block freed after it (so the block is in the heap's lists);
 * 16 = but no block freed after it. */
#define UAF_STACK 1
#define UAF_LINK_ONLY 2
#define UAF_DRAIN 4
#define UAF_GUARDS 8
#define UAF_NO_LATER_FREE 16

static void run_uaf(struct ctx *c, const struct mcase *k)
{
    _Alignas(16) char stack_var[64];
    memset(stack_var, 0, sizeof stack_var);
    char *p, *d = NULL;
    if (k->arg & UAF_GUARDS) {
        /* p between two held neighbours, and a block d elsewhere */
        char *run[RUN];
        alloc_run(c, k->size, run);
        int i = find_neighbours(run, k->size, 3);
        if (i < 0)
            setup_failed(c, "no three blocks of the run are neighbours");
        p = run[i + 1];
        /* bigger than p, with a held block after it (never merged into
         * the top of the heap) */
        if (!(k->arg & UAF_NO_LATER_FREE)) {
            d = c_malloc(c, 3 * k->size + 2000);
            sink = (size_t)(uintptr_t)c_malloc(c, 64);
        }
    } else {
        p = c_malloc(c, k->size);
    }
    c->A->f_free(p);
    if (k->arg & UAF_DRAIN)
        c->A->f_trim(0);
    /* A free after p's: an allocator that keeps the latest freed block
     * aside (out of its lists) files p in its lists now; d is larger, so
     * p stays the best fit. */
    if (d)
        c->A->f_free(d);
    /* fitalloc: check the block is where the case says it is. */
    int kind = fit_where(c, p, 1);
    if (c->A->is_fitalloc) {
        int want = (k->size <= 1000 && !(k->arg & UAF_DRAIN)) ? FITALLOC_WALK_CACHED : FITALLOC_WALK_FREE;
        if (kind != want)
            setup_failed(c, want == FITALLOC_WALK_CACHED ? "freed block not in the thread cache"
                                                          : "freed block not a free block of its own");
    }
    uintptr_t forged = (k->arg & UAF_STACK) ? (uintptr_t)(stack_var + 16) : (uintptr_t)0x4141414141414141ull;
    uintptr_t *w = hide_ptr(p);
    w[0] = forged;
    if (!(k->arg & UAF_LINK_ONLY))
        w[1] = forged;
    /* The message may name the block (payload or header) or, when the
     * corruption is found at the next link, the forged value it holds. */
    expect_addr(c, p);
    expect_addr(c, p - 4);
    expect_addr(c, (void *)forged);
    for (int i = 0; i < 8; i++) {
        char *q = c->A->f_malloc(hide_size(k->size));
        if (q == NULL)
            continue;
        uintptr_t d = (uintptr_t)q - forged;
        if (d + 64 <= 128) /* |q - forged| < 64 */
            forged_returned(c, q);
        memset(q, 0x77, 16);
    }
    sink = (size_t)stack_var[3];
}

#define CASE(nm, fn, sz, a, run, pol, na) {nm, fn, NULL, sz, a, run, pol, na, NULL}
#define CASE_C(nm, fn, sz, a, run, pol, cause) {nm, fn, NULL, sz, a, run, pol, NULL, cause}

static const struct mcase cases[] = {
    /* double free */
    CASE_C("double free right after free", "free", SMALL, 0, run_freed, ADDR_EXACT, "double free of"),
    CASE_C("double free right after free", "free", MEDIUM, 0, run_freed, ADDR_EXACT, "double free of"),
    CASE_C("double free right after free", "free", LARGE, 0, run_freed, ADDR_EXACT, "double free of"),
    CASE_C("double free right after free, held blocks around", "free", SMALL, 1, run_freed, ADDR_EXACT, "double free of"),
    CASE_C("double free right after free, held blocks around", "free", MEDIUM, 1, run_freed, ADDR_EXACT, "double free of"),
    CASE_C("double free after neighbours freed + cache drained (merged)", "free", SMALL, 1, run_df_merged, ADDR_EXACT, "double free of"),
    CASE_C("double free after neighbours freed (merged)", "free", MEDIUM, 0, run_df_merged, ADDR_EXACT, "double free of"),
    CASE_C("double free after 200 frees of the same size", "free", SMALL, 0, run_df_after_many, ADDR_EXACT, "double free of"),
    CASE_C("double free after the freeing thread exited", "free", SMALL, 0, run_df_thread_exit, ADDR_EXACT, "double free of"),
    CASE_C("double free after 200 frees of the same size", "free", MEDIUM, 0, run_df_after_many, ADDR_EXACT, "double free of"),
    CASE_C("double free after 200 frees of the same size", "free", LARGE, 0, run_df_after_many, ADDR_EXACT, "double free of"),
    /* pointers never ours */
    CASE_C("free of a stack address", "free", 0, FOREIGN_STACK, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("free of a static array", "free", 0, FOREIGN_STATIC, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("free of a foreign mmap", "free", 0, FOREIGN_MMAP, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("free of (void *)0x10000", "free", 0, FOREIGN_LOW, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("free of libc's data (stdout)", "free", 0, FOREIGN_LIBC, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("free of a kernel address", "free", 0, FOREIGN_HIGH, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("realloc of a stack address", "realloc", 0, FOREIGN_STACK, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("realloc of a static array", "realloc", 0, FOREIGN_STATIC, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("realloc of a foreign mmap", "realloc", 0, FOREIGN_MMAP, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("realloc of (void *)0x10000", "realloc", 0, FOREIGN_LOW, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("realloc of libc's data (stdout)", "realloc", 0, FOREIGN_LIBC, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("realloc of a kernel address", "realloc", 0, FOREIGN_HIGH, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("malloc_usable_size of a stack address", "malloc_usable_size", 0, FOREIGN_STACK, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("malloc_usable_size of a static array", "malloc_usable_size", 0, FOREIGN_STATIC, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("malloc_usable_size of a foreign mmap", "malloc_usable_size", 0, FOREIGN_MMAP, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("malloc_usable_size of (void *)0x10000", "malloc_usable_size", 0, FOREIGN_LOW, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    CASE_C("malloc_usable_size of libc's data (stdout)", "malloc_usable_size", 0, FOREIGN_LIBC, run_foreign, ADDR_EXACT, "not allocated by fitalloc"),
    /* interior pointers */
    CASE("free(p+16)", "free", SMALL, 16, run_interior, ADDR_EXACT, NULL),
    CASE("free(p+16)", "free", MEDIUM, 16, run_interior, ADDR_EXACT, NULL),
    CASE_C("free(p+16)", "free", LARGE, 16, run_interior, ADDR_EXACT, "inside a large block"),
    CASE("free(p+64)", "free", SMALL, 64, run_interior, ADDR_EXACT, NULL),
    CASE("free(p+64)", "free", MEDIUM, 64, run_interior, ADDR_EXACT, NULL),
    CASE_C("free(p+64)", "free", LARGE, 64, run_interior, ADDR_EXACT, "inside a large block"),
    CASE("free(p+1)", "free", SMALL, 1, run_interior, ADDR_EXACT, NULL),
    CASE("free(p+1)", "free", MEDIUM, 1, run_interior, ADDR_EXACT, NULL),
    CASE_C("free(p+1)", "free", LARGE, 1, run_interior, ADDR_EXACT, "inside a large block"),
    CASE("free(p+8)", "free", SMALL, 8, run_interior, ADDR_EXACT, NULL),
    CASE("free(p+8)", "free", MEDIUM, 8, run_interior, ADDR_EXACT, NULL),
    CASE_C("free(p+8)", "free", LARGE, 8, run_interior, ADDR_EXACT, "inside a large block"),
    CASE("realloc(p+16)", "realloc", SMALL, 16, run_interior, ADDR_EXACT, NULL),
    CASE("realloc(p+16)", "realloc", MEDIUM, 16, run_interior, ADDR_EXACT, NULL),
    CASE_C("realloc(p+16)", "realloc", LARGE, 16, run_interior, ADDR_EXACT, "inside a large block"),
    CASE("malloc_usable_size(p+16)", "malloc_usable_size", SMALL, 16, run_interior, ADDR_EXACT, NULL),
    CASE("malloc_usable_size(p+16)", "malloc_usable_size", MEDIUM, 16, run_interior, ADDR_EXACT, NULL),
    CASE_C("malloc_usable_size(p+16)", "malloc_usable_size", LARGE, 16, run_interior, ADDR_EXACT, "inside a large block"),
    /* freed blocks */
    CASE_C("realloc of a freed block", "realloc", SMALL, 0, run_freed, ADDR_EXACT, "realloc of a freed block"),
    CASE_C("realloc of a freed block", "realloc", MEDIUM, 0, run_freed, ADDR_EXACT, "realloc of a freed block"),
    CASE_C("realloc of a freed block", "realloc", LARGE, 0, run_freed, ADDR_EXACT, "realloc of a freed block"),
    CASE_C("realloc of a freed block, held blocks around", "realloc", MEDIUM, 1, run_freed, ADDR_EXACT, "realloc of a freed block"),
    CASE_C("malloc_usable_size of a freed block", "malloc_usable_size", SMALL, 0, run_freed, ADDR_EXACT, "pointer to a freed block"),
    CASE_C("malloc_usable_size of a freed block", "malloc_usable_size", MEDIUM, 0, run_freed, ADDR_EXACT, "pointer to a freed block"),
    CASE_C("malloc_usable_size of a freed block", "malloc_usable_size", LARGE, 0, run_freed, ADDR_EXACT, "pointer to a freed block"),
    /* header underflow */
    CASE("underflow (8 bytes before p), then free", "free", SMALL, 0, run_underflow, ADDR_EXACT, NULL),
    CASE("underflow (8 bytes before p), then free", "free", MEDIUM, 0, run_underflow, ADDR_EXACT, NULL),
    CASE("underflow (8 bytes before p), then free", "free", LARGE, 0, run_underflow, ADDR_EXACT,
         "a large block's 16-byte lead holds nothing fitalloc reads (its table is outside the mapping)"),
    CASE("underflow (8 bytes before p), then realloc", "realloc", SMALL, 0, run_underflow, ADDR_EXACT, NULL),
    CASE("underflow (8 bytes before p), then realloc", "realloc", MEDIUM, 0, run_underflow, ADDR_EXACT, NULL),
    CASE("underflow (8 bytes before p), then realloc", "realloc", LARGE, 0, run_underflow, ADDR_EXACT,
         "a large block's 16-byte lead holds nothing fitalloc reads (its table is outside the mapping)"),
    CASE("header size bits +16 units, then free", "free", SMALL, 1, run_underflow, ADDR_EXACT, NULL),
    CASE("header size bits +16 units, then free", "free", MEDIUM, 1, run_underflow, ADDR_EXACT, NULL),
    /* overflow from A into B's header */
    CASE("overflow A into B's header, then free(A)", "free", MEDIUM, 0, run_overflow, ADDR_EXACT, NULL),
    CASE("overflow A into B's header, then free(B)", "free", MEDIUM, 1, run_overflow, ADDR_EXACT, NULL),
    CASE("overflow A into B's header, then realloc(B)", "realloc", MEDIUM, 1, run_overflow, ADDR_EXACT, NULL),
    CASE("overflow A into B's header, then malloc_usable_size(B)", "malloc_usable_size", MEDIUM, 1, run_overflow,
         ADDR_EXACT, NULL),
    CASE("overflow A into B's header, then realloc(A) growing", "realloc-grow", MEDIUM, 2, run_overflow, ADDR_EXACT,
         NULL),
    CASE("overflow A into B's header, then free(B)", "free", SMALL, 1, run_overflow, ADDR_EXACT, NULL),
    CASE("overflow A into B's header, then realloc(B)", "realloc", SMALL, 1, run_overflow, ADDR_EXACT, NULL),
    /* use after free, then malloc */
    {"UAF: cache link+mark = 0x4141.., then malloc x8", "malloc", "malloc", SMALL, 0, run_uaf, ADDR_ANY, NULL, NULL},
    {"UAF: cache link+mark = &stack, then malloc x8", "malloc", "malloc", SMALL, UAF_STACK, run_uaf, ADDR_ANY, NULL, NULL},
    {"UAF: cache link only = &stack, then malloc x8", "malloc", "malloc", SMALL, UAF_STACK | UAF_LINK_ONLY, run_uaf,
     ADDR_ANY, NULL, NULL},
    {"UAF: small-bin links = 0x4141.., then malloc x8", "malloc", "malloc", SMALL, UAF_DRAIN | UAF_GUARDS, run_uaf,
     ADDR_ANY, NULL, NULL},
    {"UAF: small-bin links = &stack, then malloc x8", "malloc", "malloc", SMALL, UAF_DRAIN | UAF_GUARDS | UAF_STACK,
     run_uaf, ADDR_ANY, NULL, NULL},
    {"UAF: free-list links = 0x4141.., then malloc x8", "malloc", "malloc", MEDIUM, UAF_GUARDS, run_uaf, ADDR_ANY,
     NULL, NULL},
    {"UAF: free-list links = &stack, then malloc x8", "malloc", "malloc", MEDIUM, UAF_GUARDS | UAF_STACK, run_uaf,
     ADDR_ANY, NULL, NULL},
    {"UAF: first free-list link only = &stack, then malloc x8", "malloc", "malloc", MEDIUM,
     UAF_GUARDS | UAF_STACK | UAF_LINK_ONLY, run_uaf, ADDR_ANY, NULL, NULL},
    {"UAF: latest freed block's first 16 B = 0x4141.., then malloc x8", "malloc", "malloc", MEDIUM,
     UAF_GUARDS | UAF_NO_LATER_FREE, run_uaf, ADDR_ANY,
     "if the heap keeps the latest freed block out of its lists, those 16 bytes are no links", NULL},
};
#define N_CASES (sizeof cases / sizeof cases[0])

/* ---- parent side --------------------------------------------------------- */

enum outcome_kind {
    O_ABORT_MSG,   /* SIGABRT with a message (fitalloc: the right one) */
    O_ABORT_BAD,   /* SIGABRT, fitalloc message missing or wrong */
    O_ABORT_SILENT,
    O_SIGNAL,
    O_CONTINUED,
    O_FORGED,
    O_SETUP,
    O_EXIT,
    O_HUNG,
    O_NA,
};

struct outcome {
    enum outcome_kind kind;
    int sig;
    int status;
    char err[2048]; /* the child's stderr */
    char msg[160];  /* its first line, or what was wrong */
    char note[128];
    char addr_note[128];
    char setup[128];
    char forged[32];
    char addrs[4][24];
    int naddr;
};

static void parse_info(struct outcome *o, char *info)
{
    char *save = NULL;
    for (char *line = strtok_r(info, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strlen(line) < 2)
            continue;
        const char *v = line + 2;
        switch (line[0]) {
        case 'A':
            if (o->naddr < 4)
                snprintf(o->addrs[o->naddr++], sizeof o->addrs[0], "%s", v);
            break;
        case 'N':
            snprintf(o->note, sizeof o->note, "%s", v);
            break;
        case 'S':
            snprintf(o->setup, sizeof o->setup, "%s", v);
            break;
        case 'F':
            snprintf(o->forged, sizeof o->forged, "%s", v);
            break;
        }
    }
}

/* Whether text contains hex address a (not as a prefix of a longer number). */
static int has_addr(const char *text, const char *a)
{
    size_t n = strlen(a);
    for (const char *s = strstr(text, a); s; s = strstr(s + 1, a)) {
        char after = s[n];
        int hex_after = (after >= '0' && after <= '9') || (after >= 'a' && after <= 'f');
        if (!hex_after)
            return 1;
    }
    return 0;
}

/* Runs case k against api A in a child; fills o. */
static void run_case(const struct api *A, const struct mcase *k, struct outcome *o)
{
    memset(o, 0, sizeof *o);
    int errp[2], infop[2];
    if (pipe(errp) != 0 || pipe(infop) != 0) {
        o->kind = O_SETUP;
        snprintf(o->msg, sizeof o->msg, "pipe: %s", strerror(errno));
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        o->kind = O_SETUP;
        snprintf(o->msg, sizeof o->msg, "fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        close(errp[0]);
        close(infop[0]);
        dup2(errp[1], 2);
        close(errp[1]);
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        struct ctx c = {A, infop[1]};
        k->run(&c, k);
        _exit(0);
    }
    close(errp[1]);
    close(infop[1]);
    char info[1024];
    size_t elen = 0, ilen = 0;
    int open_fds = 2;
    double deadline = now_s() + CHILD_DEADLINE_S;
    struct pollfd pf[2] = {{errp[0], POLLIN, 0}, {infop[0], POLLIN, 0}};
    while (open_fds > 0) {
        int left_ms = (int)((deadline - now_s()) * 1000);
        if (left_ms <= 0)
            break;
        int r = poll(pf, 2, left_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char *buf = i == 0 ? o->err : info;
            size_t cap = i == 0 ? sizeof o->err : sizeof info;
            size_t *len = i == 0 ? &elen : &ilen;
            char tmp[512];
            ssize_t n = read(pf[i].fd, tmp, sizeof tmp);
            if (n <= 0) {
                close(pf[i].fd);
                pf[i].fd = -1;
                open_fds--;
                continue;
            }
            size_t take = (size_t)n;
            if (take > cap - 1 - *len)
                take = cap - 1 - *len;
            memcpy(buf + *len, tmp, take);
            *len += take;
            buf[*len] = 0;
        }
    }
    for (int i = 0; i < 2; i++)
        if (pf[i].fd >= 0)
            close(pf[i].fd);
    o->err[elen] = 0;
    info[ilen] = 0;
    int status = 0;
    int hung = !wait_child_until(pid, deadline, 1, &status);
    o->status = status;
    parse_info(o, info);
    /* first line of stderr */
    {
        const char *e = o->err;
        size_t n = strcspn(e, "\n");
        snprintf(o->msg, sizeof o->msg, "%.*s", (int)n, e);
    }
    if (hung) {
        o->kind = O_HUNG;
    } else if (o->setup[0]) {
        o->kind = O_SETUP;
    } else if (o->forged[0]) {
        o->kind = O_FORGED;
    } else if (status != -1 && WIFSIGNALED(status)) {
        o->sig = WTERMSIG(status);
        if (o->sig != SIGABRT)
            o->kind = O_SIGNAL;
        else if (o->err[0] == 0)
            o->kind = O_ABORT_SILENT;
        else
            o->kind = O_ABORT_MSG;
    } else if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        o->kind = O_CONTINUED;
    } else {
        o->kind = O_EXIT;
    }
}

/* For fitalloc: checks the message; downgrades O_ABORT_MSG to O_ABORT_BAD
 * with the reason in *why. */
static void judge_fitalloc(const struct mcase *k, struct outcome *o, char *why, size_t why_len)
{
    why[0] = 0;
    if (o->kind != O_ABORT_MSG)
        return;
    int lines = 0;
    const char *line = NULL;
    for (const char *s = o->err; *s;) {
        if (strncmp(s, "fitalloc: ", 10) == 0) {
            lines++;
            if (!line)
                line = s;
        }
        const char *nl = strchr(s, '\n');
        if (!nl)
            break;
        s = nl + 1;
    }
    if (lines != 1) {
        snprintf(why, why_len, "%d lines start with \"fitalloc: \"", lines);
        o->kind = O_ABORT_BAD;
        return;
    }
    char the_line[256];
    snprintf(the_line, sizeof the_line, "%.*s", (int)strcspn(line, "\n"), line);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "fitalloc: %s(): ", expected_func(k));
    if (strncmp(the_line, prefix, strlen(prefix)) != 0) {
        snprintf(why, why_len, "message does not start with \"%s\": %s", prefix, the_line);
        o->kind = O_ABORT_BAD;
        return;
    }
    if (k->addr_policy == ADDR_ANY) {
        if (!strstr(the_line, "0x")) {
            snprintf(why, why_len, "no hex address in: %s", the_line);
            o->kind = O_ABORT_BAD;
            return;
        }
        /* Not a failure: say whether the message names the block. */
        for (int i = 0; i < o->naddr; i++)
            if (has_addr(the_line, o->addrs[i]))
                return;
        const char *a = strrchr(the_line, ' ');
        snprintf(o->addr_note, sizeof o->addr_note, "; the message names %s, not the block %s", a ? a + 1 : "?",
                 o->naddr > 0 ? o->addrs[0] : "?");
        return;
    }
    if (k->cause && !strstr(the_line, k->cause)) {
        snprintf(why, why_len, "message does not name the cause \"%s\": %s", k->cause, the_line);
        o->kind = O_ABORT_BAD;
        return;
    }
    for (int i = 0; i < o->naddr; i++)
        if (has_addr(the_line, o->addrs[i]))
            return;
    snprintf(why, why_len, "message names none of the addresses %s %s: %s", o->naddr > 0 ? o->addrs[0] : "?",
             o->naddr > 1 ? o->addrs[1] : "", the_line);
    o->kind = O_ABORT_BAD;
}

/* Short text for the table. */
static void describe(const struct outcome *o, char *buf, size_t len)
{
    /* the message without "fitalloc: " and without a trailing address */
    char m[160];
    snprintf(m, sizeof m, "%s", o->msg);
    if (strncmp(m, "fitalloc: ", 10) == 0)
        memmove(m, m + 10, strlen(m + 10) + 1);
    char *sp = strrchr(m, ' ');
    if (sp && strncmp(sp + 1, "0x", 2) == 0)
        *sp = 0;
    switch (o->kind) {
    case O_ABORT_MSG:
        snprintf(buf, len, "SIGABRT + msg \"%s\"", m);
        break;
    case O_ABORT_BAD:
        snprintf(buf, len, "SIGABRT, WRONG msg \"%s\"", m);
        break;
    case O_ABORT_SILENT:
        snprintf(buf, len, "SIGABRT, no message");
        break;
    case O_SIGNAL:
        snprintf(buf, len, "%s%s%s", sigabbrev_np(o->sig) ? "SIG" : "signal ",
                 sigabbrev_np(o->sig) ? sigabbrev_np(o->sig) : "?", m[0] ? " (with msg)" : "");
        break;
    case O_CONTINUED:
        snprintf(buf, len, "silently continued");
        break;
    case O_FORGED:
        snprintf(buf, len, "RETURNED FORGED POINTER %s", o->forged);
        break;
    case O_SETUP:
        snprintf(buf, len, "setup failed: %s", o->setup[0] ? o->setup : o->msg);
        break;
    case O_EXIT:
        snprintf(buf, len, "exit status %d", WIFEXITED(o->status) ? WEXITSTATUS(o->status) : -1);
        break;
    case O_HUNG:
        snprintf(buf, len, "hung (killed after %.0f s)", CHILD_DEADLINE_S);
        break;
    case O_NA:
        snprintf(buf, len, "n/a");
        break;
    }
}

static const char *size_label(size_t n)
{
    switch (n) {
    case SMALL: return "small";
    case MEDIUM: return "medium";
    case LARGE: return "large";
    default: return "-";
    }
}

struct row {
    char name[112];
    char fit[192];
    char glibc[192];
    char fit_note[256];
    int fit_bug; /* the case failed with fitalloc */
    int fit_na;
};

static struct row rows[N_CASES];

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    find_glibc();
    const char *only = getenv("MISUSE_ONLY");
    const char *v = getenv("MISUSE_VERBOSE");
    int verbose = v && strcmp(v, "1") == 0;
#ifdef MISUSE_GLIBC_ONLY
    const int run_fit = 0;
    diag("test_misuse (glibc only build): %zu cases, each in a child, against glibc's malloc", N_CASES);
#else
    const int run_fit = 1;
    diag("test_misuse: %zu cases, each in a child; glibc comparison %s", N_CASES,
         have_glibc ? "through dlsym(libc.so.6)" : "unavailable");
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at start", " ");
#endif
    size_t nrows = 0;
    static struct outcome o;
    for (size_t i = 0; i < N_CASES; i++) {
        const struct mcase *k = &cases[i];
        char label[112];
        if (k->size)
            snprintf(label, sizeof label, "%s [%s %zu B]", k->name, size_label(k->size), k->size);
        else
            snprintf(label, sizeof label, "%s", k->name);
        if (only && !strstr(label, only))
            continue;
        struct row *r = &rows[nrows++];
        snprintf(r->name, sizeof r->name, "%s", label);
        if (run_fit) {
            run_case(&fit_api, k, &o);
            char why[320];
            judge_fitalloc(k, &o, why, sizeof why);
            describe(&o, r->fit, sizeof r->fit);
            snprintf(r->fit_note, sizeof r->fit_note, "%s%s", o.note, o.addr_note);
            if (verbose)
                diag("fitalloc child stderr: %s", o.err);
            if (k->fit_na) {
                r->fit_na = 1;
                if (o.kind != O_ABORT_MSG)
                    strncat(r->fit, " (n/a)", sizeof r->fit - strlen(r->fit) - 1);
                if (o.kind == O_ABORT_MSG)
                    check(1, label, " ");
                else
                    skip(label, k->fit_na);
            } else {
                int pass = o.kind == O_ABORT_MSG;
                r->fit_bug = !pass;
                char detail[700];
                snprintf(detail, sizeof detail, "%s%s%s; stderr: \"%s\"", r->fit, why[0] ? "; " : "", why,
                         o.err[0] ? o.msg : "(empty)");
                check(pass, label, "%s", detail);
            }
        }
        if (have_glibc) {
            run_case(&glibc_api, k, &o);
            describe(&o, r->glibc, sizeof r->glibc);
            if (verbose)
                diag("glibc child stderr: %s", o.err);
        } else {
            snprintf(r->glibc, sizeof r->glibc, "n/a");
        }
    }

    /* the table */
    printf("#\n# %-66s | %-62s | %s\n", "case", "fitalloc", "glibc (same child code, glibc's malloc)");
    printf("# %.66s-+-%.62s-+-%.40s\n", "------------------------------------------------------------------------",
           "------------------------------------------------------------------------",
           "----------------------------------------");
    for (size_t i = 0; i < nrows; i++) {
        const struct row *r = &rows[i];
        printf("# %-66s | %-62s | %s\n", r->name, run_fit ? r->fit : "-", r->glibc);
    }
    if (run_fit) {
        printf("#\n# where fitalloc held the block before the misuse (from fitalloc_heap_walk), and which\n"
               "# address the message named when it was not the block (use-after-free cases):\n");
        for (size_t i = 0; i < nrows; i++)
            if (rows[i].fit_note[0])
                printf("#   %-66s %s\n", rows[i].name, rows[i].fit_note);
        int bugs = 0;
        for (size_t i = 0; i < nrows; i++)
            bugs += rows[i].fit_bug;
        printf("#\n# fitalloc: %d of %zu cases did not end in SIGABRT with one correct fitalloc: message\n", bugs,
               nrows);
        for (size_t i = 0; i < nrows; i++)
            if (rows[i].fit_na)
                printf("# not applicable to fitalloc (reported only): %s (%s)\n", rows[i].name, rows[i].fit);
        check(heap_problems() == 0, "fitalloc_check_heap() == 0 at the end", " ");
    }
    fflush(stdout);
    return run_fit ? tap_done("test_misuse") : 0;
}
