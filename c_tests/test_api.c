/* test_api.c - semantics of the C allocation API, through the standard names
 * (which resolve to fitalloc when the program is linked with -lfitalloc) and
 * through the fitalloc_* prefixed API; then 100,000 random operations.
 *
 * glibc 2.36 (Debian 2.36-9+deb12u14, x86_64) behaviour, measured on this
 * machine; the allocator copies it and this file asserts it:
 *
 *  - malloc(0) returns a unique, non-NULL, 16-byte aligned block
 *    (malloc_usable_size 24). malloc_usable_size(NULL) == 0.
 *  - malloc_usable_size rounding: heap blocks have usable size
 *    max(24, round_up(n + 8, 16) - 8), i.e. 24, 40, 56, 72, ... (a reused
 *    free chunk can be one step bigger); mmapped blocks (>= the mmap
 *    threshold, 128 KiB initially, raised dynamically by frees of mmapped
 *    blocks up to 32 MiB) have round_up(round_up(n + 8, 16) + 8, 4096) - 16
 *    (1 MiB -> 1052656). Only usable >= requested is asserted here.
 *  - Sizes that cannot be served (SIZE_MAX, SIZE_MAX-15, PTRDIFF_MAX,
 *    PTRDIFF_MAX+1, 1<<48, ...) give NULL with errno ENOMEM, for malloc,
 *    calloc, realloc, reallocarray, memalign, aligned_alloc, valloc, pvalloc.
 *    calloc and reallocarray with nmemb*size overflowing: NULL, ENOMEM.
 *    calloc(0, SIZE_MAX) and calloc(SIZE_MAX, 0) succeed (0 bytes).
 *  - realloc(NULL, n) is malloc(n) (realloc(NULL, 0) is non-NULL).
 *    realloc(p, 0) frees p and returns NULL, errno unchanged; the same for
 *    reallocarray(p, 0, n). A failed realloc leaves p allocated and intact.
 *  - free never changes errno (also for mmapped blocks); free(NULL) no-op.
 *  - aligned_alloc is the same function as memalign (same address in
 *    libc.so.6): any alignment is accepted, the size need not be a
 *    multiple of it. Alignment 0..16: plain malloc (16-byte aligned).
 *    17..31: raised to 32. Not a power of two: rounded up to the next power
 *    of two (24 -> 32, 48 -> 64, 3000 -> 4096). Alignment greater than
 *    SIZE_MAX/2+1 (not a power of two, e.g. SIZE_MAX): NULL, errno EINVAL.
 *    Huge power-of-two alignment (1<<48, 1<<62, 1<<63): NULL, errno ENOMEM
 *    (1<<40 also fails with ENOMEM here, but only because the 1 TiB mapping
 *    is refused by overcommit heuristics, so it is not asserted).
 *  - posix_memalign: alignment not a power-of-two multiple of sizeof(void*)
 *    (0, 1, 2, 3, 4, 24, 48, SIZE_MAX, ...) returns EINVAL, *out and errno
 *    unchanged. Impossible size or alignment (1<<48, 1<<63): returns ENOMEM,
 *    *out unchanged, and errno IS set to ENOMEM.
 *  - valloc(n): page-aligned, valloc(0) non-NULL (usable 24).
 *  - pvalloc(n): page-aligned; glibc 2.36 asks memalign(4096, m) with
 *    m = (n + 4095) & -(4095) (sic: & ~0xFFE, not & ~0xFFF), i.e. the page
 *    multiple plus bit 0 of n + 4095: pvalloc(10) and pvalloc(4096) ask
 *    4097 bytes (usable 4104), pvalloc(1) asks 4096. So for n >= 1,
 *    usable >= round_up(n, 4096); pvalloc(0) asks 1 byte: a page-aligned
 *    block with usable size 24 (NOT a page). n + 4095 overflowing
 *    (pvalloc(SIZE_MAX)): NULL, ENOMEM.
 *  - mallopt returns 1 for every parameter, including unknown ones
 *    (12345, -100, 0) and any value (negative, 0, INT_MAX), except M_MXFAST
 *    with a value < 0 or > 160 (80 * sizeof(size_t) / 4), which returns 0.
 *    In particular M_MMAP_THRESHOLD has NO upper limit in 2.36: 64 MiB and
 *    -1 return 1 (and take effect), unlike older glibc's HEAP_MAX_SIZE/2
 *    (32 MiB) check. errno is not touched.
 *  - malloc_trim(pad) returns 1 when it released memory (also by madvise of
 *    whole free pages inside the heap, so freeing every other 20000-byte
 *    block and trimming returns 1, repeatedly), else 0.
 *  - mallinfo2: arena == uordblks + fordblks; a 64 MiB block adds 1 to hblks
 *    and >= 64 MiB to hblkhd; mallinfo() carries the same values in ints.
 *  - malloc_stats prints to stderr "Arena 0:", "system bytes     = %10u",
 *    "in use bytes     = %10u", "Total (incl. mmap):", "system bytes ...",
 *    "in use bytes ...", "max mmap regions = %10u", "max mmap bytes   = %10lu".
 *  - malloc_info(0, fp) writes XML starting '<malloc version="1">' and
 *    ending "</malloc>\n", returns 0; malloc_info(1, fp) returns EINVAL
 *    (22) without writing, errno unchanged.
 *  - __libc_malloc, __libc_free, __libc_calloc, __libc_realloc,
 *    __libc_memalign, __libc_valloc, __libc_pvalloc are found by dlsym.
 *    cfree is only a compat symbol in glibc (dlsym finds nothing).
 *
 * Environment: FITALLOC_EXPECT=1 adds the checks that only hold with the real
 * library (exported names resolve into libfitalloc). FITALLOC_SEED=N changes
 * the seed of the random section.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

/* ---- the two APIs under test ------------------------------------------- */

struct api {
    const char *name;
    void *(*f_malloc)(size_t);
    void (*f_free)(void *);
    void *(*f_calloc)(size_t, size_t);
    void *(*f_realloc)(void *, size_t);
    void *(*f_reallocarray)(void *, size_t, size_t);
    void *(*f_memalign)(size_t, size_t);
    int (*f_posix_memalign)(void **, size_t, size_t);
    void *(*f_aligned_alloc)(size_t, size_t);
    void *(*f_valloc)(size_t);
    void *(*f_pvalloc)(size_t);
    size_t (*f_usable)(void *);
};

static const struct api apis[2] = {
    {"std", malloc, free, calloc, realloc, reallocarray, memalign, posix_memalign,
     aligned_alloc, valloc, pvalloc, malloc_usable_size},
    {"fitalloc", fitalloc_malloc, fitalloc_free, fitalloc_calloc, fitalloc_realloc,
     fitalloc_reallocarray, fitalloc_memalign, fitalloc_posix_memalign, fitalloc_aligned_alloc,
     fitalloc_valloc, fitalloc_pvalloc, fitalloc_malloc_usable_size},
};

static size_t page_size;
static int expect_fitalloc;

static char name_buf[256];
__attribute__((format(printf, 1, 2)))
static const char *nm(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name_buf, sizeof name_buf, fmt, ap);
    va_end(ap);
    return name_buf;
}

static int is_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

/* The alignment glibc's memalign/aligned_alloc actually gives for a request. */
static size_t glibc_alignment(size_t a)
{
    if (a <= 16)
        return 16;
    size_t r = 32;
    while (r < a)
        r <<= 1;
    return r;
}

/* Sizes that no allocator can serve on x86_64 (more than the address space). */
static const size_t huge_sizes[] = {
    SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 15, SIZE_MAX - 16, SIZE_MAX - 4095, SIZE_MAX - 8192,
    SIZE_MAX - 65536, (size_t)PTRDIFF_MAX + 1, (size_t)PTRDIFF_MAX, (size_t)PTRDIFF_MAX - 4096,
    (size_t)1 << 62, (size_t)1 << 48,
};
#define N_HUGE (sizeof huge_sizes / sizeof huge_sizes[0])

static const size_t large_sizes[] = {
    4097, 8000, 65536, 100000, 131071, 131072, 131073, 200000, 1 * MiB, 1 * MiB + 1, 3 * MiB + 5,
    16 * MiB, 64 * MiB,
};
#define N_LARGE (sizeof large_sizes / sizeof large_sizes[0])

/* ---- malloc: alignment, usable size, malloc(0), free ----------------------- */

static void test_malloc_basic(const struct api *A)
{
    enum { N = 4097 };
    static void *blocks[N];
    struct first_err align = {0}, usable = {0};

    for (size_t n = 0; n < N; n++) {
        void *p = A->f_malloc(hide_size(n));
        blocks[n] = p;
        if (p == NULL) {
            note_err(&align, "malloc(%zu) returned NULL", n);
            continue;
        }
        if (!is_aligned(p, 16))
            note_err(&align, "malloc(%zu) = %p is not 16-byte aligned", n, p);
        size_t u = A->f_usable(p);
        if (u < n)
            note_err(&usable, "usable size %zu < %zu", u, n);
        memset(p, 0xC5, u);
    }
    check(align.count == 0, nm("%s: malloc(0..4096) non-NULL and 16-byte aligned", A->name), "%s (%d errors)",
          align.msg, align.count);
    check(usable.count == 0, nm("%s: malloc_usable_size >= request and all usable bytes writable, sizes 0..4096", A->name),
          "%s (%d errors)", usable.msg, usable.count);
    for (size_t n = 0; n < N; n++)
        A->f_free(blocks[n]);
    check(1, nm("%s: free of 4097 blocks", A->name), " ");

    struct first_err large = {0};
    for (size_t i = 0; i < N_LARGE; i++) {
        size_t n = large_sizes[i];
        unsigned char *p = A->f_malloc(hide_size(n));
        if (p == NULL) {
            note_err(&large, "malloc(%zu) returned NULL", n);
            continue;
        }
        if (!is_aligned(p, 16))
            note_err(&large, "malloc(%zu) = %p not 16-byte aligned", n, (void *)p);
        size_t u = A->f_usable(p);
        if (u < n)
            note_err(&large, "malloc(%zu): usable size %zu", n, u);
        memset(p, 0x5C, u);
        if (heap_problems() != 0)
            note_err(&large, "check_heap failed after writing %zu usable bytes of malloc(%zu)", u, n);
        A->f_free(p);
    }
    check(large.count == 0, nm("%s: large malloc aligned, usable >= request, usable bytes writable", A->name),
          "%s", large.msg);

    /* malloc(0) gives distinct pointers. */
    enum { Z = 100 };
    void *z[Z];
    int bad = 0;
    for (int i = 0; i < Z; i++) {
        z[i] = A->f_malloc(hide_size(0));
        if (z[i] == NULL)
            bad++;
    }
    for (int i = 0; i < Z && !bad; i++)
        for (int j = i + 1; j < Z; j++)
            if (z[i] == z[j])
                bad++;
    for (int i = 0; i < Z; i++)
        A->f_free(z[i]);
    check(bad == 0, nm("%s: malloc(0) returns unique non-NULL pointers that free accepts", A->name),
          "%d NULL or duplicate", bad);

    A->f_free(hide_ptr(NULL));
    check(1, nm("%s: free(NULL) is a no-op", A->name), " ");
    check(A->f_usable(hide_ptr(NULL)) == 0, nm("%s: malloc_usable_size(NULL) == 0", A->name), "got %zu",
          A->f_usable(hide_ptr(NULL)));
}

static void test_free_errno(const struct api *A)
{
    struct first_err e = {0};
    const size_t sizes[] = {0, 1, 24, 100, 1000, 5000, 70000, 131072, 200000, 4 * MiB, 64 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *blocks[4];
        blocks[0] = A->f_malloc(hide_size(sizes[i]));
        blocks[1] = A->f_calloc(1, hide_size(sizes[i]));
        blocks[2] = A->f_memalign(hide_size(256), hide_size(sizes[i]));
        blocks[3] = A->f_realloc(A->f_malloc(hide_size(10)), hide_size(sizes[i] ? sizes[i] : 1));
        for (int k = 0; k < 4; k++) {
            if (blocks[k] == NULL) {
                note_err(&e, "allocation %d of %zu failed", k, sizes[i]);
                continue;
            }
            errno = 1234;
            A->f_free(blocks[k]);
            if (errno != 1234)
                note_err(&e, "free of a %zu-byte block (kind %d) changed errno to %d", sizes[i], k, errno);
        }
    }
    errno = 1234;
    A->f_free(hide_ptr(NULL));
    if (errno != 1234)
        note_err(&e, "free(NULL) changed errno to %d", errno);
    check(e.count == 0, nm("%s: free never changes errno (small, large, mmapped, aligned, NULL)", A->name), "%s",
          e.msg);
}

/* ---- failures: NULL + ENOMEM ---------------------------------------------- */

static void test_enomem(const struct api *A)
{
    struct first_err e = {0};
    for (size_t i = 0; i < N_HUGE; i++) {
        size_t n = huge_sizes[i];
        errno = 0;
        void *p = A->f_malloc(hide_size(n));
        int err = errno;
        if (p != NULL || err != ENOMEM) {
            note_err(&e, "malloc(%#zx) = %p errno %d", n, p, err);
            A->f_free(p);
        }
    }
    check(e.count == 0, nm("%s: malloc of impossible sizes returns NULL, errno ENOMEM (no wrap in rounding)", A->name),
          "%s", e.msg);

    struct { size_t a, b; } ov[] = {
        {SIZE_MAX, 2}, {2, SIZE_MAX}, {(size_t)1 << 32, (size_t)1 << 32}, {SIZE_MAX / 2 + 1, 2},
        {((size_t)1 << 33) + 1, (size_t)1 << 31}, {SIZE_MAX, SIZE_MAX}, {65537, SIZE_MAX / 65536},
    };
    memset(&e, 0, sizeof e);
    for (size_t i = 0; i < sizeof ov / sizeof ov[0]; i++) {
        errno = 0;
        void *p = A->f_calloc(hide_size(ov[i].a), hide_size(ov[i].b));
        int err = errno;
        if (p != NULL || err != ENOMEM) {
            note_err(&e, "calloc(%#zx, %#zx) = %p errno %d", ov[i].a, ov[i].b, p, err);
            A->f_free(p);
        }
        errno = 0;
        p = A->f_reallocarray(NULL, hide_size(ov[i].a), hide_size(ov[i].b));
        err = errno;
        if (p != NULL || err != ENOMEM) {
            note_err(&e, "reallocarray(NULL, %#zx, %#zx) = %p errno %d", ov[i].a, ov[i].b, p, err);
            A->f_free(p);
        }
    }
    check(e.count == 0, nm("%s: calloc/reallocarray with nmemb*size overflow return NULL, errno ENOMEM", A->name),
          "%s", e.msg);

    memset(&e, 0, sizeof e);
    for (size_t i = 0; i < N_HUGE; i++) {
        size_t n = huge_sizes[i];
        errno = 0;
        void *p = A->f_calloc(hide_size(n), 1);
        int err = errno;
        if (p != NULL || err != ENOMEM) {
            note_err(&e, "calloc(%#zx, 1) = %p errno %d", n, p, err);
            A->f_free(p);
        }
        errno = 0;
        p = A->f_calloc(1, hide_size(n));
        err = errno;
        if (p != NULL || err != ENOMEM) {
            note_err(&e, "calloc(1, %#zx) = %p errno %d", n, p, err);
            A->f_free(p);
        }
    }
    check(e.count == 0, nm("%s: calloc(huge, 1) and calloc(1, huge) return NULL, errno ENOMEM", A->name), "%s",
          e.msg);

    void *p1 = A->f_calloc(0, hide_size(SIZE_MAX));
    void *p2 = A->f_calloc(hide_size(SIZE_MAX), 0);
    check(p1 != NULL && p2 != NULL && p1 != p2, nm("%s: calloc(0, SIZE_MAX) and calloc(SIZE_MAX, 0) succeed", A->name),
          "got %p, %p", p1, p2);
    A->f_free(p1);
    A->f_free(p2);

    memset(&e, 0, sizeof e);
    for (size_t i = 0; i < N_HUGE; i++) {
        size_t n = huge_sizes[i];
        void *p;
        errno = 0;
        p = A->f_valloc(hide_size(n));
        if (p != NULL || errno != ENOMEM) {
            note_err(&e, "valloc(%#zx) = %p errno %d", n, p, errno);
            A->f_free(p);
        }
        errno = 0;
        p = A->f_pvalloc(hide_size(n));
        if (p != NULL || errno != ENOMEM) {
            note_err(&e, "pvalloc(%#zx) = %p errno %d", n, p, errno);
            A->f_free(p);
        }
        errno = 0;
        p = A->f_memalign(hide_size(64), hide_size(n));
        if (p != NULL || errno != ENOMEM) {
            note_err(&e, "memalign(64, %#zx) = %p errno %d", n, p, errno);
            A->f_free(p);
        }
        errno = 0;
        p = A->f_memalign(hide_size(4096), hide_size(n));
        if (p != NULL || errno != ENOMEM) {
            note_err(&e, "memalign(4096, %#zx) = %p errno %d", n, p, errno);
            A->f_free(p);
        }
        errno = 0;
        p = A->f_aligned_alloc(hide_size(32), hide_size(n));
        if (p != NULL || errno != ENOMEM) {
            note_err(&e, "aligned_alloc(32, %#zx) = %p errno %d", n, p, errno);
            A->f_free(p);
        }
    }
    check(e.count == 0, nm("%s: valloc/pvalloc/memalign/aligned_alloc of impossible sizes: NULL, ENOMEM", A->name),
          "%s", e.msg);
}

/* ---- realloc / reallocarray ------------------------------------------------ */

static void test_realloc(const struct api *A)
{
    struct first_err e = {0};

    /* realloc(NULL, n) behaves as malloc(n). */
    const size_t sizes[] = {0, 1, 17, 100, 4096, 200000, 2 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *p = A->f_realloc(NULL, hide_size(n));
        if (p == NULL || !is_aligned(p, 16) || A->f_usable(p) < n) {
            note_err(&e, "realloc(NULL, %zu) = %p usable %zu", n, (void *)p, p ? A->f_usable(p) : 0);
        } else {
            pat_fill(p, n, 77);
        }
        A->f_free(p);
    }
    errno = 0;
    void *q = A->f_realloc(NULL, hide_size(SIZE_MAX));
    if (q != NULL || errno != ENOMEM)
        note_err(&e, "realloc(NULL, SIZE_MAX) = %p errno %d", q, errno);
    check(e.count == 0, nm("%s: realloc(NULL, n) behaves as malloc(n)", A->name), "%s", e.msg);

    /* realloc(p, 0) frees p and returns NULL (glibc), errno untouched. */
    memset(&e, 0, sizeof e);
    const size_t zs[] = {1, 100, 5000, 200000, 8 * MiB};
    for (size_t i = 0; i < sizeof zs / sizeof zs[0]; i++) {
        void *p = A->f_malloc(hide_size(zs[i]));
        errno = 1234;
        void *r = A->f_realloc(p, 0);
        if (r != NULL || errno != 1234)
            note_err(&e, "realloc(malloc(%zu), 0) = %p errno %d", zs[i], r, errno);
        if (r != NULL)
            A->f_free(r);
        p = A->f_malloc(hide_size(zs[i]));
        errno = 1234;
        r = A->f_reallocarray(p, 0, hide_size(16));
        if (r != NULL || errno != 1234)
            note_err(&e, "reallocarray(malloc(%zu), 0, 16) = %p errno %d", zs[i], r, errno);
        if (r != NULL)
            A->f_free(r);
    }
    check(e.count == 0, nm("%s: realloc(p, 0) and reallocarray(p, 0, n) free p and return NULL", A->name), "%s",
          e.msg);

    /* Contents survive every kind of move. */
    struct { size_t from, to; } tr[] = {
        {1, 2}, {24, 25}, {100, 200}, {200, 100}, {100, 100}, {1000, 4000}, {4000, 1000}, {0, 100},
        {100, 200000}, {1000, 1 * MiB}, {200000, 1 * MiB}, {1 * MiB, 4 * MiB}, {4 * MiB, 1 * MiB},
        {1 * MiB, 100}, {200000, 1000}, {131072, 131073}, {1 * MiB, 1 * MiB}, {5 * MiB, 5 * MiB + 4096},
        {300000, 140000}, {64, 70000}, {70000, 64},
    };
    memset(&e, 0, sizeof e);
    for (size_t i = 0; i < sizeof tr / sizeof tr[0]; i++) {
        size_t from = tr[i].from, to = tr[i].to;
        unsigned char *p = A->f_malloc(hide_size(from));
        if (p == NULL) {
            note_err(&e, "malloc(%zu) failed", from);
            continue;
        }
        pat_fill(p, from, 1000 + i);
        unsigned char *r = A->f_realloc(p, hide_size(to));
        if (r == NULL) {
            note_err(&e, "realloc(%zu -> %zu) returned NULL", from, to);
            A->f_free(p);
            continue;
        }
        size_t keep = from < to ? from : to;
        size_t bad = pat_check(r, keep, 1000 + i);
        if (bad != SIZE_MAX)
            note_err(&e, "realloc(%zu -> %zu): byte %zu changed", from, to, bad);
        if (!is_aligned(r, 16) || A->f_usable(r) < to)
            note_err(&e, "realloc(%zu -> %zu) = %p usable %zu", from, to, (void *)r, A->f_usable(r));
        else
            memset(r, 0x3D, A->f_usable(r));
        A->f_free(r);
    }
    check(e.count == 0, nm("%s: realloc keeps contents: small<->small, small->large, large->larger, large->small",
                           A->name), "%s", e.msg);

    /* Shrinking when a block of the smaller size was just freed (fitalloc
     * moves the block to it then, as it does when growing): the first
     * bytes, where a cache keeps its link and seal, come along too. */
    struct { size_t from, to; } sh[] = {{160, 60}, {1000, 40}, {500, 200}, {48, 20}, {1000, 900}, {300, 17}};
    memset(&e, 0, sizeof e);
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        size_t from = sh[i].from, to = sh[i].to;
        A->f_free(A->f_malloc(hide_size(to)));
        unsigned char *p = A->f_malloc(hide_size(from));
        if (p == NULL) {
            note_err(&e, "malloc(%zu) failed", from);
            continue;
        }
        pat_fill(p, from, 3000 + i);
        unsigned char *r = A->f_realloc(p, hide_size(to));
        if (r == NULL) {
            note_err(&e, "realloc(%zu -> %zu) returned NULL", from, to);
            A->f_free(p);
            continue;
        }
        size_t bad = pat_check(r, to, 3000 + i);
        if (bad != SIZE_MAX)
            note_err(&e, "realloc(%zu -> %zu): byte %zu changed", from, to, bad);
        if (A->f_usable(r) < to)
            note_err(&e, "realloc(%zu -> %zu) = %p usable %zu", from, to, (void *)r, A->f_usable(r));
        A->f_free(r);
    }
    check(e.count == 0 && heap_problems() == 0,
          nm("%s: realloc shrinking to a size just freed keeps the contents; the heap checks clean", A->name), "%s",
          e.msg);

    /* Growing one byte at a time and shrinking back (in-place paths). */
    memset(&e, 0, sizeof e);
    unsigned char *p = A->f_malloc(1);
    pat_fill(p, 1, 4242);
    for (size_t n = 2; n <= 3000 && p; n++) {
        unsigned char *r = A->f_realloc(p, hide_size(n));
        if (r == NULL) {
            note_err(&e, "realloc to %zu failed", n);
            break;
        }
        p = r;
        if (pat_check(p, n - 1, 4242) != SIZE_MAX) {
            note_err(&e, "grow to %zu lost contents", n);
            break;
        }
        pat_fill_range(p, n - 1, n, 4242);
    }
    for (size_t n = 3000; n >= 1 && p; n -= 7) {
        unsigned char *r = A->f_realloc(p, hide_size(n));
        if (r == NULL) {
            note_err(&e, "realloc to %zu failed", n);
            break;
        }
        p = r;
        if (pat_check(p, n, 4242) != SIZE_MAX) {
            note_err(&e, "shrink to %zu lost contents", n);
            break;
        }
        if (n < 8)
            break;
    }
    A->f_free(p);
    check(e.count == 0, nm("%s: realloc grow by 1 byte to 3000 and shrink back keeps contents", A->name), "%s",
          e.msg);

    /* A failed realloc/reallocarray leaves the block intact and usable. */
    memset(&e, 0, sizeof e);
    const size_t olds[] = {10, 1000, 100000, 200000, 2 * MiB};
    for (size_t i = 0; i < sizeof olds / sizeof olds[0]; i++) {
        size_t n = olds[i];
        unsigned char *blk = A->f_malloc(hide_size(n));
        if (blk == NULL) {
            note_err(&e, "malloc(%zu) failed", n);
            continue;
        }
        pat_fill(blk, n, 99 + i);
        for (size_t k = 0; k < N_HUGE; k++) {
            errno = 0;
            void *r = A->f_realloc(hide_ptr(blk), hide_size(huge_sizes[k]));
            int err = errno;
            if (r != NULL || err != ENOMEM) {
                note_err(&e, "realloc(%zu-byte block, %#zx) = %p errno %d", n, huge_sizes[k], r, err);
                if (r != NULL) {
                    blk = r;
                    continue;
                }
            }
            if (pat_check(hide_ptr(blk), n, 99 + i) != SIZE_MAX)
                note_err(&e, "failed realloc(%zu-byte block, %#zx) damaged the block", n, huge_sizes[k]);
        }
        struct { size_t a, b; } ov[] = {{SIZE_MAX, 2}, {(size_t)1 << 32, (size_t)1 << 32}, {(size_t)1 << 47, 4}};
        for (size_t k = 0; k < sizeof ov / sizeof ov[0]; k++) {
            errno = 0;
            void *r = A->f_reallocarray(hide_ptr(blk), hide_size(ov[k].a), hide_size(ov[k].b));
            int err = errno;
            if (r != NULL || err != ENOMEM) {
                note_err(&e, "reallocarray(%zu-byte block, %#zx, %#zx) = %p errno %d", n, ov[k].a, ov[k].b, r, err);
                if (r != NULL) {
                    blk = r;
                    continue;
                }
            }
            if (pat_check(hide_ptr(blk), n, 99 + i) != SIZE_MAX)
                note_err(&e, "failed reallocarray on a %zu-byte block damaged it", n);
        }
        /* still usable: write all of it, grow it a little, free it */
        blk = hide_ptr(blk);
        memset(blk, 0x11, A->f_usable(blk));
        unsigned char *g = A->f_reallocarray(blk, hide_size(n + 100), 1);
        if (g == NULL) {
            note_err(&e, "reallocarray(%zu-byte block, %zu, 1) failed after the failures", n, n + 100);
            A->f_free(blk);
        } else {
            A->f_free(g);
        }
    }
    check(e.count == 0,
          nm("%s: realloc(p, huge) and reallocarray overflow return NULL/ENOMEM, p intact, usable, freeable", A->name),
          "%s", e.msg);

    /* reallocarray(p, n, m) == realloc(p, n*m) */
    memset(&e, 0, sizeof e);
    unsigned char *ra = A->f_reallocarray(NULL, hide_size(10), hide_size(20));
    if (ra == NULL || A->f_usable(ra) < 200) {
        note_err(&e, "reallocarray(NULL, 10, 20) = %p", (void *)ra);
    } else {
        pat_fill(ra, 200, 5);
        unsigned char *rb = A->f_reallocarray(ra, hide_size(1000), hide_size(300));
        if (rb == NULL || A->f_usable(rb) < 300000 || pat_check(rb, 200, 5) != SIZE_MAX)
            note_err(&e, "reallocarray(p, 1000, 300) = %p", (void *)rb);
        ra = rb ? rb : ra;
    }
    A->f_free(ra);
    check(e.count == 0, nm("%s: reallocarray(p, n, m) resizes to n*m and keeps contents", A->name), "%s", e.msg);
}

/* ---- aligned allocation ------------------------------------------------------ */

static void test_posix_memalign(const struct api *A)
{
    struct first_err e = {0};
    const size_t bad_align[] = {0, 1, 2, 3, 4, 5, 7, 12, 24, 40, 48, 96, 1000, 4095, 4097, 3 * 4096,
                                SIZE_MAX, SIZE_MAX - 7, SIZE_MAX / 2 + 2};
    for (size_t i = 0; i < sizeof bad_align / sizeof bad_align[0]; i++) {
        void *out = (void *)0x1234;
        errno = 4321;
        int rc = A->f_posix_memalign(&out, hide_size(bad_align[i]), hide_size(16));
        if (rc != EINVAL || out != (void *)0x1234 || errno != 4321)
            note_err(&e, "posix_memalign(al=%#zx) = %d, out %p, errno %d", bad_align[i], rc, out, errno);
        if (rc == 0)
            A->f_free(out);
    }
    check(e.count == 0, nm("%s: posix_memalign with invalid alignment returns EINVAL, *out and errno unchanged",
                           A->name), "%s", e.msg);

    memset(&e, 0, sizeof e);
    const size_t sizes[] = {0, 1, 100, 5000, 200000};
    for (size_t a = 8; a <= 1 * MiB; a <<= 1) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            void *out = NULL;
            int rc = A->f_posix_memalign(&out, hide_size(a), hide_size(sizes[i]));
            if (rc != 0 || out == NULL || !is_aligned(out, a) || A->f_usable(out) < sizes[i]) {
                note_err(&e, "posix_memalign(%zu, %zu) = %d, %p", a, sizes[i], rc, out);
            } else {
                memset(out, 0x77, A->f_usable(out));
            }
            if (rc == 0)
                A->f_free(out);
        }
    }
    check(e.count == 0, nm("%s: posix_memalign with powers of two 8..1MiB: aligned, usable >= size", A->name), "%s",
          e.msg);

    memset(&e, 0, sizeof e);
    struct { size_t a, n; } nm_cases[] = {
        {16, SIZE_MAX}, {4096, SIZE_MAX - 100}, {64, (size_t)PTRDIFF_MAX + 1}, {8, (size_t)1 << 48},
        {(size_t)1 << 48, 10}, {(size_t)1 << 62, 10}, {SIZE_MAX / 2 + 1, 10},
    };
    for (size_t i = 0; i < sizeof nm_cases / sizeof nm_cases[0]; i++) {
        void *out = (void *)0x1234;
        errno = 0;
        int rc = A->f_posix_memalign(&out, hide_size(nm_cases[i].a), hide_size(nm_cases[i].n));
        if (rc != ENOMEM || out != (void *)0x1234 || errno != ENOMEM)
            note_err(&e, "posix_memalign(%#zx, %#zx) = %d, out %p, errno %d (want ENOMEM, out unchanged, errno ENOMEM)",
                     nm_cases[i].a, nm_cases[i].n, rc, out, errno);
        if (rc == 0)
            A->f_free(out);
    }
    check(e.count == 0, nm("%s: posix_memalign with impossible size/alignment returns ENOMEM, *out unchanged",
                           A->name), "%s", e.msg);
}

static void test_memalign(const struct api *A)
{
    struct first_err e = {0};
    size_t aligns[400];
    size_t na = 0;
    for (size_t a = 0; a <= 300; a++)
        aligns[na++] = a;
    const size_t extra[] = {1000, 3000, 4095, 4096, 4097, 10000, 65536, 65537, 1 * MiB, 1 * MiB + 1};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        aligns[na++] = extra[i];
    const size_t sizes[] = {1, 100, 5000};

    for (int which = 0; which < 2; which++) {
        for (size_t i = 0; i < na; i++) {
            for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
                size_t a = aligns[i], n = sizes[k];
                errno = 0;
                void *p = which == 0 ? A->f_memalign(hide_size(a), hide_size(n))
                                     : A->f_aligned_alloc(hide_size(a), hide_size(n));
                size_t want = glibc_alignment(a);
                if (p == NULL || !is_aligned(p, want) || A->f_usable(p) < n) {
                    note_err(&e, "%s(%zu, %zu) = %p errno %d, want alignment %zu",
                             which == 0 ? "memalign" : "aligned_alloc", a, n, p, errno, want);
                } else {
                    memset(p, 0x42, A->f_usable(p));
                }
                A->f_free(p);
            }
        }
        check(e.count == 0,
              nm("%s: %s: alignment 0..16 -> 16, else next power of two >= 32 (non-powers of two rounded up)",
                 A->name, which == 0 ? "memalign" : "aligned_alloc"),
              "%s (%d errors)", e.msg, e.count);
        memset(&e, 0, sizeof e);
    }

    /* Alignment above SIZE_MAX/2+1: EINVAL. */
    const size_t inval[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX / 2 + 2, (size_t)3 << 62};
    for (int which = 0; which < 2; which++) {
        for (size_t i = 0; i < sizeof inval / sizeof inval[0]; i++) {
            errno = 0;
            void *p = which == 0 ? A->f_memalign(hide_size(inval[i]), 10) : A->f_aligned_alloc(hide_size(inval[i]), 10);
            if (p != NULL || errno != EINVAL) {
                note_err(&e, "%s(%#zx, 10) = %p errno %d", which == 0 ? "memalign" : "aligned_alloc", inval[i], p,
                         errno);
                A->f_free(p);
            }
        }
    }
    check(e.count == 0, nm("%s: memalign/aligned_alloc with alignment > SIZE_MAX/2+1 return NULL, errno EINVAL",
                           A->name), "%s", e.msg);

    memset(&e, 0, sizeof e);
    const size_t hugea[] = {(size_t)1 << 48, (size_t)1 << 62, SIZE_MAX / 2 + 1};
    for (int which = 0; which < 2; which++) {
        for (size_t i = 0; i < sizeof hugea / sizeof hugea[0]; i++) {
            errno = 0;
            void *p = which == 0 ? A->f_memalign(hide_size(hugea[i]), 10) : A->f_aligned_alloc(hide_size(hugea[i]), 10);
            if (p != NULL || errno != ENOMEM) {
                note_err(&e, "%s(%#zx, 10) = %p errno %d", which == 0 ? "memalign" : "aligned_alloc", hugea[i], p,
                         errno);
                A->f_free(p);
            }
        }
    }
    check(e.count == 0, nm("%s: memalign/aligned_alloc with huge power-of-two alignment return NULL, errno ENOMEM",
                           A->name), "%s", e.msg);

    /* valloc / pvalloc */
    memset(&e, 0, sizeof e);
    const size_t vs[] = {0, 1, 100, 4095, 4096, 4097, 5000, 8191, 200000, 1 * MiB};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        size_t n = vs[i];
        void *p = A->f_valloc(hide_size(n));
        if (p == NULL || !is_aligned(p, page_size) || A->f_usable(p) < n)
            note_err(&e, "valloc(%zu) = %p usable %zu", n, p, p ? A->f_usable(p) : 0);
        else
            memset(p, 0x21, A->f_usable(p));
        A->f_free(p);
    }
    check(e.count == 0, nm("%s: valloc is page-aligned (valloc(0) too), usable >= size", A->name), "%s", e.msg);

    memset(&e, 0, sizeof e);
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        size_t n = vs[i];
        size_t rounded = (n + page_size - 1) / page_size * page_size;
        void *p = A->f_pvalloc(hide_size(n));
        if (p == NULL || !is_aligned(p, page_size) || A->f_usable(p) < rounded)
            note_err(&e, "pvalloc(%zu) = %p usable %zu (want >= %zu)", n, p, p ? A->f_usable(p) : 0, rounded);
        else
            memset(p, 0x22, A->f_usable(p));
        A->f_free(p);
    }
    check(e.count == 0, nm("%s: pvalloc is page-aligned and usable size >= size rounded up to a page", A->name), "%s",
          e.msg);
}

/* ---- calloc zeroes recycled memory ------------------------------------------ */

static void test_calloc_dirty(const struct api *A)
{
    struct first_err e = {0};
    const size_t sizes[] = {1, 16, 24, 100, 500, 1000, 4000, 10000, 65536, 100000, 131072, 200000, 1 * MiB, 4 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        int rounds = n >= MiB ? 8 : 40;
        for (int r = 0; r < rounds; r++) {
            unsigned char *d = A->f_malloc(hide_size(n));
            if (d == NULL) {
                note_err(&e, "malloc(%zu) failed", n);
                break;
            }
            memset(d, 0xAB, A->f_usable(d));
            A->f_free(d);
            /* vary the nmemb/size split */
            size_t nm_ = (r % 3 == 0) ? n : (r % 3 == 1) ? 1 : (n % 8 == 0 ? n / 8 : n);
            size_t sz = (r % 3 == 0) ? 1 : (r % 3 == 1) ? n : (n % 8 == 0 ? 8 : 1);
            unsigned char *c = A->f_calloc(hide_size(nm_), hide_size(sz));
            if (c == NULL) {
                note_err(&e, "calloc(%zu, %zu) failed", nm_, sz);
                break;
            }
            size_t bad = zero_check(c, n);
            if (bad != SIZE_MAX)
                note_err(&e, "calloc(%zu, %zu) round %d: byte %zu is %#x", nm_, sz, r, bad, c[bad]);
            memset(c, 0xAB, A->f_usable(c));
            A->f_free(c);
        }
    }
    check(e.count == 0, nm("%s: calloc zeroes a reused dirty block (small, medium, large)", A->name), "%s", e.msg);

    /* Many dirty blocks freed at once (they coalesce), then many callocs. */
    memset(&e, 0, sizeof e);
    enum { M = 2000 };
    static void *blocks[M];
    struct rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < M; i++) {
        size_t n = rng_range(&r, 1, 3000);
        blocks[i] = A->f_malloc(hide_size(n));
        if (blocks[i])
            memset(blocks[i], 0xCD, A->f_usable(blocks[i]));
    }
    for (int i = 0; i < M; i += 2)
        A->f_free(blocks[i]);
    for (int i = 1; i < M; i += 2)
        A->f_free(blocks[i]);
    for (int i = 0; i < M; i++) {
        size_t n = rng_range(&r, 1, 6000);
        unsigned char *c = A->f_calloc(hide_size(n), 1);
        blocks[i] = c;
        if (c == NULL) {
            note_err(&e, "calloc(%zu, 1) failed", n);
            continue;
        }
        size_t bad = zero_check(c, n);
        if (bad != SIZE_MAX)
            note_err(&e, "calloc(%zu, 1) #%d: byte %zu is %#x", n, i, bad, c[bad]);
    }
    for (int i = 0; i < M; i++)
        A->f_free(blocks[i]);
    /* A shrunk block's dirty tail goes back to the heap. */
    for (int i = 0; i < 200; i++) {
        unsigned char *d = A->f_malloc(hide_size(8192));
        memset(d, 0xEE, 8192);
        unsigned char *s = A->f_realloc(d, hide_size(64));
        unsigned char *c = A->f_calloc(hide_size(4000), 1);
        if (s == NULL || c == NULL)
            note_err(&e, "realloc/calloc failed");
        else if (zero_check(c, 4000) != SIZE_MAX)
            note_err(&e, "calloc(4000, 1) after a shrinking realloc is not zeroed at %zu", zero_check(c, 4000));
        A->f_free(c);
        A->f_free(s);
    }
    check(e.count == 0, nm("%s: calloc zeroes blocks carved from coalesced and split dirty memory", A->name), "%s",
          e.msg);
}

/* ---- the two APIs are one allocator ------------------------------------------ */

/* An aligned block allocated and freed in a loop comes back: glibc 2.36
 * reuses it from its tcache; fitalloc takes the head of its thread cache's
 * list when that is aligned, instead of a trip to the heap each time. */
/* glibc's tst-memalign-2 pattern, on a new thread: 1 when memalign(64,
 * 256) returns one of ten freed 256-byte blocks (one of them 64-aligned),
 * 0 when it returns another block, 2 when its block is misaligned. */
static void *ten_freed_then_memalign(void *out) {
    void *ten[10];
    for (int i = 0; i < 10; i++)
        ten[i] = i == 4 ? memalign(64, hide_size(256)) : malloc(hide_size(256));
    for (int i = 0; i < 10; i++)
        free(ten[i]);
    void *p = memalign(64, hide_size(256));
    int found = 0;
    for (int i = 0; i < 10; i++)
        found += ten[i] == p;
    *(int *)out = !p || ((uintptr_t)p & 63) != 0 ? 2 : found == 1;
    free(p);
    return NULL;
}

/* Runs ten_freed_then_memalign on a thread of a child process; its
 * result, or -1 when the child failed. */
static int ten_freed_then_memalign_in_child(void) {
    pid_t pid = fork();
    if (pid == 0) {
        int r = -1;
        pthread_t th;
        if (pthread_create(&th, NULL, ten_freed_then_memalign, &r) != 0 || pthread_join(th, NULL) != 0)
            _exit(100);
        _exit(r);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st) == 100 ? -1 : WEXITSTATUS(st);
}

static void test_aligned_reuse(void)
{
    size_t aligns[] = {32, 64, 4096};
    for (int a = 0; a < 3; a++) {
        void *seen[4] = {0};
        int distinct = 0, misaligned = 0, failed = 0;
        for (int i = 0; i < 10000; i++) {
            void *p = NULL;
            if (posix_memalign(&p, aligns[a], hide_size(256)) != 0) {
                failed++;
                continue;
            }
            misaligned += ((uintptr_t)p & (aligns[a] - 1)) != 0;
            memset(p, i, 256);
            int known = 0;
            for (int k = 0; k < distinct && k < 4; k++)
                known |= seen[k] == p;
            if (!known) {
                if (distinct < 4)
                    seen[distinct] = p;
                distinct++;
            }
            free(p);
        }
        check(failed == 0 && misaligned == 0 && distinct <= 2,
              aligns[a] == 32 ? "posix_memalign(32, 256) and free, 10,000 times: aligned, the same block back"
              : aligns[a] == 64 ? "posix_memalign(64, 256) and free, 10,000 times: aligned, the same block back"
                                : "posix_memalign(4096, 256) and free, 10,000 times: aligned, the same block back",
              "%d failed, %d misaligned, %d distinct blocks", failed, misaligned, distinct);
    }
    /* Not only the last block freed (glibc's tst-memalign-2, which glibc
     * 2.38 passes): ten blocks of 256 bytes, one of them 64-aligned, all
     * freed; memalign(64, 256) returns one of them. On a new thread (in a
     * child, so that this process stays single-threaded), whose cache is
     * empty: here the checks above leave blocks of that size cached, and
     * with them the ten can overflow the cache's list, whose overflow an
     * allocator may send home. */
    int ten_status = ten_freed_then_memalign_in_child();
    check(ten_status == 1, "memalign(64, 256) after ten 256-byte blocks freed (one 64-aligned, not the last): one of them",
          "child reported %d (1: found among the ten; 0: not found; 2: misaligned; else failed)", ten_status);
    /* Heap blocks too (glibc's tst-memalign-3): eight aligned blocks of
     * 23-33 KB, kept apart by 512-byte blocks, freed; the same requests
     * again get most of them back (the freed block fits as it is, with no
     * room for a lead: it must not need any). */
    size_t sizes[8] = {23450, 23450, 23550, 23550, 23650, 23650, 33650, 33650};
    void *first[8], *second[8], *apart[8];
    for (int i = 0; i < 8; i++) {
        first[i] = memalign(64, hide_size(sizes[i]));
        apart[i] = malloc(hide_size(512));
    }
    for (int i = 0; i < 8; i++)
        free(first[i]);
    void *big = malloc(hide_size(60000));
    int again = 0, aligned = 1;
    for (int i = 0; i < 8; i++) {
        second[i] = memalign(64, hide_size(sizes[i]));
        aligned &= second[i] != NULL && ((uintptr_t)second[i] & 63) == 0;
        for (int j = 0; j < 8; j++)
            again += second[i] == first[j];
    }
    check(aligned && again > 4, "eight freed 64-aligned blocks of 23-33 KB: memalign gets most of them back",
          "%d of 8 again", again);
    for (int i = 0; i < 8; i++) {
        free(second[i]);
        free(apart[i]);
    }
    free(big);
}

static void test_cross_api(void)
{
    struct first_err e = {0};
    for (int i = 0; i < 200; i++) {
        size_t n = (size_t)(i * 997) % 300000;
        void *a = fitalloc_malloc(hide_size(n));
        void *b = malloc(hide_size(n));
        if (a == NULL || b == NULL) {
            note_err(&e, "allocation of %zu failed", n);
        } else {
            if (fitalloc_malloc_usable_size(b) != malloc_usable_size(b) ||
                fitalloc_malloc_usable_size(a) != malloc_usable_size(a))
                note_err(&e, "usable sizes differ between the APIs for %zu bytes", n);
            pat_fill(a, n, (uint64_t)i);
            void *c = realloc(a, hide_size(n + 5000));
            if (c == NULL) {
                note_err(&e, "realloc of a fitalloc_malloc block failed");
            } else {
                if (pat_check(c, n, (uint64_t)i) != SIZE_MAX)
                    note_err(&e, "realloc of a fitalloc_malloc block lost data");
                a = c;
            }
            void *d = fitalloc_realloc(b, hide_size(n / 2 + 1));
            if (d == NULL)
                note_err(&e, "fitalloc_realloc of a malloc block failed");
            else
                b = d;
        }
        free(a);
        fitalloc_free(b);
    }
    void *m = fitalloc_memalign(4096, 100);
    void *pm = NULL;
    if (posix_memalign(&pm, 256, 1000) != 0)
        note_err(&e, "posix_memalign failed");
    free(m);
    fitalloc_free(pm);
    check(e.count == 0, "cross-API: blocks from one API are resized/freed by the other, same usable size", "%s",
          e.msg);
}

/* ---- mallopt, mallinfo, malloc_trim, malloc_stats, malloc_info -------------- */

static void test_mallopt(void)
{
    struct first_err e = {0};
    struct { int param; int value; int want; const char *name; } cases[] = {
        {M_MMAP_THRESHOLD, 128 * 1024, 1, "M_MMAP_THRESHOLD=128KiB"},
        {M_MMAP_THRESHOLD, 64 << 20, 1, "M_MMAP_THRESHOLD=64MiB"},
        {M_MMAP_THRESHOLD, -1, 1, "M_MMAP_THRESHOLD=-1"},
        {M_MMAP_THRESHOLD, 128 * 1024, 1, "M_MMAP_THRESHOLD=128KiB"},
        {M_TRIM_THRESHOLD, 256 * 1024, 1, "M_TRIM_THRESHOLD=256KiB"},
        {M_TRIM_THRESHOLD, -1, 1, "M_TRIM_THRESHOLD=-1"},
        {M_TRIM_THRESHOLD, 128 * 1024, 1, "M_TRIM_THRESHOLD=128KiB"},
        {M_TOP_PAD, 0, 1, "M_TOP_PAD=0"},
        {M_TOP_PAD, 128 * 1024, 1, "M_TOP_PAD=128KiB"},
        {M_MMAP_MAX, 0, 1, "M_MMAP_MAX=0"},
        {M_MMAP_MAX, 65536, 1, "M_MMAP_MAX=65536"},
        {M_ARENA_MAX, 8, 1, "M_ARENA_MAX=8"},
        {M_ARENA_MAX, 0, 1, "M_ARENA_MAX=0"},
        {M_ARENA_TEST, 8, 1, "M_ARENA_TEST=8"},
        {M_PERTURB, 0, 1, "M_PERTURB=0"},
        {M_CHECK_ACTION, 3, 1, "M_CHECK_ACTION=3"},
        {M_MXFAST, 0, 1, "M_MXFAST=0"},
        {M_MXFAST, 160, 1, "M_MXFAST=160"},
        {M_MXFAST, 161, 0, "M_MXFAST=161"},
        {M_MXFAST, 1000, 0, "M_MXFAST=1000"},
        {M_MXFAST, -1, 0, "M_MXFAST=-1"},
        {M_MXFAST, 128, 1, "M_MXFAST=128"},
        {M_NLBLKS, 10, 1, "M_NLBLKS=10"},
        {M_GRAIN, 10, 1, "M_GRAIN=10"},
        {M_KEEP, 10, 1, "M_KEEP=10"},
        {12345, 1, 1, "unknown param 12345"},
        {-100, 1, 1, "unknown param -100"},
        {0, 1, 1, "unknown param 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errno = 4321;
        int got = mallopt(cases[i].param, cases[i].value);
        if (got != cases[i].want || errno != 4321)
            note_err(&e, "mallopt(%s) = %d errno %d, want %d", cases[i].name, got, errno, cases[i].want);
    }
    check(e.count == 0, "mallopt returns 1 for every parameter (unknown too), 0 only for M_MXFAST outside 0..160",
          "%s (%d wrong)", e.msg, e.count);

    /* still allocating fine after all that */
    void *p = malloc(hide_size(300000)), *q = malloc(hide_size(100));
    check(p != NULL && q != NULL, "allocation works after mallopt calls", "malloc returned NULL");
    free(p);
    free(q);
}

static void test_mallinfo(void)
{
    struct mallinfo2 a = mallinfo2();
    check(a.arena == a.uordblks + a.fordblks, "mallinfo2: arena == uordblks + fordblks",
          "arena %zu uordblks %zu fordblks %zu", a.arena, a.uordblks, a.fordblks);

    enum { N = 1000 };
    static void *blocks[N];
    for (int i = 0; i < N; i++)
        blocks[i] = malloc(hide_size(100));
    struct mallinfo2 b = mallinfo2();
    check(b.uordblks >= a.uordblks + N * 100 / 2, "mallinfo2: uordblks grows after 1000 x malloc(100)",
          "uordblks %zu -> %zu", a.uordblks, b.uordblks);
    check(b.arena == b.uordblks + b.fordblks, "mallinfo2: arena == uordblks + fordblks with blocks held",
          "arena %zu uordblks %zu fordblks %zu", b.arena, b.uordblks, b.fordblks);
    for (int i = 0; i < N; i++)
        free(blocks[i]);
    struct mallinfo2 c = mallinfo2();
    check(c.uordblks < b.uordblks, "mallinfo2: uordblks shrinks after freeing them", "uordblks %zu -> %zu",
          b.uordblks, c.uordblks);

    void *big = malloc(hide_size(64 * MiB));
    struct mallinfo2 d = mallinfo2();
    check(big != NULL && d.hblks == c.hblks + 1 && d.hblkhd >= c.hblkhd + 64 * MiB,
          "mallinfo2: a 64 MiB block adds 1 to hblks and >= 64 MiB to hblkhd", "hblks %zu -> %zu, hblkhd %zu -> %zu",
          c.hblks, d.hblks, c.hblkhd, d.hblkhd);
    struct mallinfo old = mallinfo();
    check(old.hblks == (int)d.hblks && old.hblkhd == (int)d.hblkhd && old.arena == (int)d.arena,
          "mallinfo (int version) agrees with mallinfo2", "hblks %d/%zu hblkhd %d/%zu arena %d/%zu", old.hblks,
          d.hblks, old.hblkhd, d.hblkhd, old.arena, d.arena);
    free(big);
    struct mallinfo2 f = mallinfo2();
    check(f.hblks == c.hblks && f.hblkhd == c.hblkhd, "mallinfo2: hblks/hblkhd back after freeing the 64 MiB block",
          "hblks %zu, hblkhd %zu (were %zu, %zu)", f.hblks, f.hblkhd, c.hblks, c.hblkhd);
}

static void test_trim(void)
{
    int r0 = malloc_trim(0);
    check(r0 == 0 || r0 == 1, "malloc_trim(0) returns 0 or 1", "got %d", r0);

    enum { N = 600 };
    static void *keep[N], *drop[N];
    for (int i = 0; i < N; i++) {
        drop[i] = malloc(hide_size(20000));
        keep[i] = malloc(hide_size(20000));
        if (drop[i])
            memset(drop[i], 1, 20000);
        if (keep[i])
            pat_fill(keep[i], 20000, (uint64_t)i);
    }
    for (int i = 0; i < N; i++)
        free(drop[i]);
    int r1 = malloc_trim(0);
    check(r1 == 1, "malloc_trim(0) returns 1 after freeing every other 20000-byte block (whole free pages)",
          "got %d", r1);
    int r2 = malloc_trim(1 << 20);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        if (keep[i] == NULL || pat_check(keep[i], 20000, (uint64_t)i) != SIZE_MAX)
            bad++;
        free(keep[i]);
    }
    check((r2 == 0 || r2 == 1) && bad == 0, "malloc_trim keeps live blocks intact", "trim returned %d, %d damaged",
          r2, bad);
    int r3 = malloc_trim(0);
    void *p = malloc(hide_size(50000));
    check((r3 == 0 || r3 == 1) && p != NULL, "heap works after malloc_trim", "trim %d, malloc %p", r3, p);
    free(p);
}

/* Runs fn with fd 2 redirected to a temporary file; returns what it wrote. */
static char *capture_stderr(void (*fn)(void))
{
    FILE *tmp = tmpfile();
    if (tmp == NULL)
        return NULL;
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    long len = lseek(fileno(tmp), 0, SEEK_END);
    char *buf = malloc(len > 0 ? (size_t)len + 1 : 1);
    if (buf == NULL) {
        fclose(tmp);
        return NULL;
    }
    ssize_t got = len > 0 ? pread(fileno(tmp), buf, (size_t)len, 0) : 0;
    buf[got > 0 ? got : 0] = '\0';
    fclose(tmp);
    return buf;
}

static int line_value(const char *text, const char *label, int nth, unsigned long *out)
{
    const char *s = text;
    for (int i = 0; i <= nth; i++) {
        s = strstr(s, label);
        if (s == NULL)
            return 0;
        if (s != text && s[-1] != '\n')
            return 0;
        if (i < nth)
            s += strlen(label);
    }
    s += strlen(label);
    char *end;
    *out = strtoul(s, &end, 10);
    return end != s && *end == '\n';
}

static void test_malloc_stats(void)
{
    void *held = malloc(hide_size(100000));
    char *out = capture_stderr(malloc_stats);
    free(held);
    if (out == NULL) {
        check(0, "malloc_stats output captured", "could not capture stderr");
        return;
    }
    const char *labels[] = {"Arena 0:\n", "system bytes     = ", "in use bytes     = ", "Total (incl. mmap):\n",
                            "max mmap regions = ", "max mmap bytes   = "};
    int missing = -1;
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++)
        if (strstr(out, labels[i]) == NULL)
            missing = (int)i;
    check(missing < 0 && strncmp(out, "Arena 0:\n", 9) == 0,
          "malloc_stats prints glibc's layout on stderr (Arena 0:, system bytes, in use bytes, Total, max mmap)",
          "missing %s in output:\n%s", missing >= 0 ? labels[missing] : "'Arena 0:' at the start", out);
    unsigned long sys0 = 0, use0 = 0, sys_t = 0, use_t = 0, regions = 0, mbytes = 0;
    int parsed = line_value(out, "system bytes     = ", 0, &sys0) && line_value(out, "in use bytes     = ", 0, &use0) &&
                 line_value(out, "system bytes     = ", 1, &sys_t) && line_value(out, "in use bytes     = ", 1, &use_t) &&
                 line_value(out, "max mmap regions = ", 0, &regions) &&
                 line_value(out, "max mmap bytes   = ", 0, &mbytes);
    check(parsed && use0 <= sys0 && use_t >= 100000 && sys_t >= sys0 && use_t >= use0 && use_t <= sys_t,
          "malloc_stats numbers are consistent (in use <= system, totals >= arena 0, held block counted)",
          "parsed %d: arena0 %lu/%lu total %lu/%lu", parsed, use0, sys0, use_t, sys_t);
    check(parsed && regions >= 1 && mbytes >= 64 * MiB,
          "malloc_stats max mmap regions >= 1 and max mmap bytes >= 64 MiB after the 64 MiB block",
          "regions %lu bytes %lu", regions, mbytes);
    free(out);
}

static void test_malloc_info(void)
{
    FILE *tmp = tmpfile();
    if (tmp == NULL) {
        check(0, "malloc_info", "tmpfile failed");
        return;
    }
    int rc = malloc_info(0, tmp);
    fflush(tmp);
    long len = ftell(tmp);
    char *buf = malloc(len > 0 ? (size_t)len + 1 : 1);
    rewind(tmp);
    size_t got = len > 0 ? fread(buf, 1, (size_t)len, tmp) : 0;
    buf[got] = '\0';
    const char *end = "</malloc>\n";
    int ends = got >= strlen(end) && strcmp(buf + got - strlen(end), end) == 0;
    check(rc == 0 && strncmp(buf, "<malloc version=", 16) == 0 && ends,
          "malloc_info(0, fp) returns 0 and writes <malloc version=...>...</malloc>", "rc %d, output:\n%.300s", rc, buf);
    free(buf);

    /* The closing totals are the heaps' (glibc sums its arenas there);
     * a large block's mapping counts only in the "mmap" line. */
    void *big = malloc(hide_size(600000));
    rewind(tmp);
    rc = malloc_info(0, tmp);
    fflush(tmp);
    len = ftell(tmp);
    buf = malloc((size_t)len + 1);
    rewind(tmp);
    got = fread(buf, 1, (size_t)len, tmp);
    buf[got] = '\0';
    unsigned long long heap_cur = 0, total_cur = 0, mmap_size = 0;
    const char *h = strstr(buf, "<system type=\"current\" size=\"");
    const char *m = strstr(buf, "<total type=\"mmap\"");
    const char *t = m ? strstr(m, "<system type=\"current\" size=\"") : NULL;
    if (h)
        heap_cur = strtoull(h + strlen("<system type=\"current\" size=\""), NULL, 10);
    if (t)
        total_cur = strtoull(t + strlen("<system type=\"current\" size=\""), NULL, 10);
    if (m && (m = strstr(m, "size=\"")))
        mmap_size = strtoull(m + strlen("size=\""), NULL, 10);
    check(rc == 0 && big && h && t && mmap_size >= 600000 && total_cur == heap_cur,
          "malloc_info's closing system total is the heap's, the 600000-byte mapping only in <total type=\"mmap\">",
          "heap %llu total %llu mmap %llu", heap_cur, total_cur, mmap_size);
    free(buf);
    free(big);

    rewind(tmp);
    errno = 4321;
    long before = ftell(tmp);
    rc = malloc_info(1, tmp);
    fflush(tmp);
    check(rc == EINVAL && errno == 4321 && ftell(tmp) == before,
          "malloc_info(1, fp) returns EINVAL without writing, errno unchanged", "rc %d errno %d", rc, errno);
    fclose(tmp);
}

/* ---- exported symbols ---------------------------------------------------------- */

static void test_symbols(void)
{
    typedef void *(*malloc_fn)(size_t);
    typedef void (*free_fn)(void *);
    typedef void *(*calloc_fn)(size_t, size_t);
    typedef void *(*realloc_fn)(void *, size_t);
    typedef void *(*memalign_fn)(size_t, size_t);
    union { void *obj; malloc_fn f; } m, vv, pv;
    union { void *obj; free_fn f; } f;
    union { void *obj; calloc_fn f; } c;
    union { void *obj; realloc_fn f; } r;
    union { void *obj; memalign_fn f; } ma;
    m.obj = dlsym(RTLD_DEFAULT, "__libc_malloc");
    f.obj = dlsym(RTLD_DEFAULT, "__libc_free");
    c.obj = dlsym(RTLD_DEFAULT, "__libc_calloc");
    r.obj = dlsym(RTLD_DEFAULT, "__libc_realloc");
    ma.obj = dlsym(RTLD_DEFAULT, "__libc_memalign");
    vv.obj = dlsym(RTLD_DEFAULT, "__libc_valloc");
    pv.obj = dlsym(RTLD_DEFAULT, "__libc_pvalloc");
    int found = m.obj && f.obj && c.obj && r.obj && ma.obj && vv.obj && pv.obj;
    check(found, "__libc_malloc/free/calloc/realloc/memalign/valloc/pvalloc exist (dlsym RTLD_DEFAULT)",
          "malloc %p free %p calloc %p realloc %p memalign %p valloc %p pvalloc %p", m.obj, f.obj, c.obj, r.obj,
          ma.obj, vv.obj, pv.obj);
    if (found) {
        struct first_err e = {0};
        unsigned char *a = m.f(hide_size(100));
        unsigned char *b = c.f(hide_size(50), 2);
        unsigned char *al = ma.f(hide_size(256), hide_size(100));
        unsigned char *v = vv.f(hide_size(100));
        unsigned char *pp = pv.f(hide_size(100));
        if (!a || !b || !al || !v || !pp)
            note_err(&e, "an allocation returned NULL");
        if (b && zero_check(b, 100) != SIZE_MAX)
            note_err(&e, "__libc_calloc did not zero");
        if (al && !is_aligned(al, 256))
            note_err(&e, "__libc_memalign(256) gave %p", (void *)al);
        if (v && !is_aligned(v, page_size))
            note_err(&e, "__libc_valloc gave %p", (void *)v);
        if (pp && (!is_aligned(pp, page_size) || malloc_usable_size(pp) < page_size))
            note_err(&e, "__libc_pvalloc gave %p", (void *)pp);
        if (a) {
            pat_fill(a, 100, 3);
            unsigned char *g = r.f(a, hide_size(300000));
            if (g == NULL) {
                note_err(&e, "__libc_realloc failed");
            } else {
                if (pat_check(g, 100, 3) != SIZE_MAX)
                    note_err(&e, "__libc_realloc lost data");
                a = g;
            }
        }
        free(a);           /* __libc_* blocks freed by free ... */
        fitalloc_free(b);  /* ... and by fitalloc_free */
        f.f(al);
        f.f(v);
        f.f(pp);
        f.f(malloc(hide_size(10))); /* malloc blocks freed by __libc_free */
        check(e.count == 0, "__libc_* functions work and share the heap with malloc/free", "%s", e.msg);
    }

    if (!expect_fitalloc) {
        skip("exported names resolve into libfitalloc (dlsym + dladdr)", "FITALLOC_EXPECT is not 1");
        return;
    }
    const char *names[] = {
        "malloc", "free", "calloc", "realloc", "reallocarray", "memalign", "posix_memalign", "aligned_alloc",
        "valloc", "pvalloc", "malloc_usable_size", "mallopt", "mallinfo", "mallinfo2", "malloc_trim",
        "malloc_stats", "malloc_info", "cfree", "__libc_malloc", "__libc_free", "__libc_calloc",
        "__libc_realloc", "__libc_memalign", "__libc_valloc", "__libc_pvalloc", "fitalloc_malloc",
        "fitalloc_free", "fitalloc_check_heap", "fitalloc_stats", "fitalloc_heap_walk",
    };
    struct first_err e = {0};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        Dl_info info = {0};
        if (sym == NULL) {
            note_err(&e, "%s not found by dlsym", names[i]);
            continue;
        }
        if (dladdr(sym, &info) == 0 || info.dli_fname == NULL || strstr(info.dli_fname, "libfitalloc") == NULL)
            note_err(&e, "%s resolves into %s, not libfitalloc", names[i],
                     info.dli_fname ? info.dli_fname : "(unknown)");
    }
    check(e.count == 0, "exported names resolve into libfitalloc (dlsym RTLD_DEFAULT + dladdr)", "%s (%d wrong)",
          e.msg, e.count);
}

/* ---- randomized operations --------------------------------------------------- */

struct live {
    uintptr_t addr;
    size_t size;
    size_t usable;
    uint64_t seed;
};

#define MAX_LIVE 3000
static struct live live[MAX_LIVE];
static size_t n_live;

static size_t live_find(uintptr_t addr)
{
    size_t lo = 0, hi = n_live;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (live[mid].addr < addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Inserts in address order; returns 0 if the block overlaps a neighbour. */
static int live_insert(struct live b, struct first_err *e)
{
    size_t at = live_find(b.addr);
    int okay = 1;
    size_t span = b.usable ? b.usable : 1;
    if (at > 0) {
        struct live *p = &live[at - 1];
        if (p->addr + (p->usable ? p->usable : 1) > b.addr) {
            note_err(e, "new block %#lx+%zu overlaps %#lx+%zu", (unsigned long)b.addr, span,
                     (unsigned long)p->addr, p->usable);
            okay = 0;
        }
    }
    if (at < n_live) {
        struct live *n = &live[at];
        if (b.addr + span > n->addr) {
            note_err(e, "new block %#lx+%zu overlaps %#lx+%zu", (unsigned long)b.addr, span,
                     (unsigned long)n->addr, n->usable);
            okay = 0;
        }
    }
    memmove(&live[at + 1], &live[at], (n_live - at) * sizeof live[0]);
    live[at] = b;
    n_live++;
    return okay;
}

static void live_remove(size_t i)
{
    memmove(&live[i], &live[i + 1], (n_live - i - 1) * sizeof live[0]);
    n_live--;
}

static size_t random_size(struct rng *r)
{
    uint64_t k = rng_next(r) % 1000;
    if (k < 700)
        return rng_range(r, 0, 256);
    if (k < 920)
        return rng_range(r, 257, 4096);
    if (k < 990)
        return rng_range(r, 4097, 65536);
    return rng_range(r, 65537, 1 * MiB);
}

static void test_random(uint64_t seed)
{
    struct rng r;
    rng_seed(&r, seed);
    struct first_err fail = {0}, pat = {0}, overlap = {0}, align = {0}, zero = {0}, heap = {0}, errs = {0};
    const long OPS = 100000;
    uint64_t next_seed = 1;
    size_t target = 1000;

    for (long op = 1; op <= OPS; op++) {
        const struct api *A = &apis[rng_next(&r) & 1];
        if (op % 5000 == 0)
            target = rng_range(&r, 100, MAX_LIVE - 1);
        uint64_t k = rng_next(&r) % 100;
        int want_free = n_live >= MAX_LIVE - 1 || (n_live > target ? k < 60 : k < 30);

        if (want_free && n_live > 0) {
            size_t i = (size_t)(rng_next(&r) % n_live);
            struct live b = live[i];
            size_t bad = pat_check((void *)b.addr, b.size, b.seed);
            if (bad != SIZE_MAX)
                note_err(&pat, "op %ld: block %#lx (%zu bytes) byte %zu changed before free", op,
                         (unsigned long)b.addr, b.size, bad);
            live_remove(i);
            errno = 1234;
            A->f_free((void *)b.addr);
            if (errno != 1234)
                note_err(&errs, "op %ld: free of a %zu-byte block changed errno to %d", op, b.size, errno);
        } else if (k < 55 || n_live == 0) {
            /* malloc / calloc / memalign family */
            size_t n = random_size(&r);
            size_t want_align = 16;
            int is_calloc = 0;
            void *p;
            uint64_t kind = rng_next(&r) % 10;
            if (kind < 6) {
                p = A->f_malloc(hide_size(n));
            } else if (kind < 8) {
                is_calloc = 1;
                if (n > 0 && n % 4 == 0)
                    p = A->f_calloc(hide_size(n / 4), 4);
                else
                    p = A->f_calloc(1, hide_size(n));
            } else {
                size_t a = (size_t)1 << rng_range(&r, 4, rng_next(&r) % 8 == 0 ? 16 : 12);
                want_align = a;
                if (kind == 8)
                    p = A->f_memalign(hide_size(a), hide_size(n));
                else if (rng_next(&r) & 1)
                    p = A->f_aligned_alloc(hide_size(a), hide_size(n));
                else if (A->f_posix_memalign(&p, hide_size(a), hide_size(n)) != 0)
                    p = NULL;
            }
            if (p == NULL) {
                note_err(&fail, "op %ld: allocation of %zu bytes failed", op, n);
                continue;
            }
            if (!is_aligned(p, want_align))
                note_err(&align, "op %ld: %p not aligned to %zu", op, p, want_align);
            if (is_calloc) {
                size_t bad = zero_check(p, n);
                if (bad != SIZE_MAX)
                    note_err(&zero, "op %ld: calloc(%zu) byte %zu not zero", op, n, bad);
            }
            struct live b = {(uintptr_t)p, n, A->f_usable(p), next_seed++};
            if (b.usable < n)
                note_err(&fail, "op %ld: usable %zu < %zu", op, b.usable, n);
            pat_fill(p, n, b.seed);
            live_insert(b, &overlap);
        } else {
            /* realloc of a live block (or of NULL) */
            size_t n = random_size(&r);
            if (n == 0)
                n = 1; /* realloc(p, 0) frees; tested above */
            if (n_live == 0 || rng_next(&r) % 20 == 0) {
                void *p = A->f_realloc(NULL, hide_size(n));
                if (p == NULL) {
                    note_err(&fail, "op %ld: realloc(NULL, %zu) failed", op, n);
                    continue;
                }
                struct live b = {(uintptr_t)p, n, A->f_usable(p), next_seed++};
                pat_fill(p, n, b.seed);
                if (!is_aligned(p, 16))
                    note_err(&align, "op %ld: %p not aligned", op, p);
                live_insert(b, &overlap);
                continue;
            }
            size_t i = (size_t)(rng_next(&r) % n_live);
            struct live b = live[i];
            size_t bad = pat_check((void *)b.addr, b.size, b.seed);
            if (bad != SIZE_MAX)
                note_err(&pat, "op %ld: block %#lx byte %zu changed before realloc", op, (unsigned long)b.addr, bad);
            void *q = A->f_realloc((void *)b.addr, hide_size(n));
            if (q == NULL) {
                note_err(&fail, "op %ld: realloc(%zu -> %zu) failed", op, b.size, n);
                continue;
            }
            live_remove(i);
            size_t keep = b.size < n ? b.size : n;
            bad = pat_check(q, keep, b.seed);
            if (bad != SIZE_MAX)
                note_err(&pat, "op %ld: realloc(%zu -> %zu) byte %zu not kept", op, b.size, n, bad);
            if (!is_aligned(q, 16))
                note_err(&align, "op %ld: realloc gave %p", op, q);
            if (n > b.size)
                pat_fill_range(q, b.size, n, b.seed);
            b.addr = (uintptr_t)q;
            b.size = n;
            b.usable = A->f_usable(q);
            if (b.usable < n)
                note_err(&fail, "op %ld: usable %zu < %zu after realloc", op, b.usable, n);
            live_insert(b, &overlap);
        }

        if (op % 1000 == 0) {
            size_t h = heap_problems();
            if (h != 0)
                note_err(&heap, "op %ld: fitalloc_check_heap() = %zu", op, h);
        }
    }

    /* free everything, checking every pattern */
    while (n_live > 0) {
        struct live b = live[n_live - 1];
        size_t bad = pat_check((void *)b.addr, b.size, b.seed);
        if (bad != SIZE_MAX)
            note_err(&pat, "final: block %#lx byte %zu changed", (unsigned long)b.addr, bad);
        n_live--;
        free((void *)b.addr);
    }
    check(fail.count == 0, "random: 100000 operations, no allocation failure, usable >= size", "%s", fail.msg);
    check(pat.count == 0, "random: every block keeps its byte pattern until free/realloc", "%s (%d errors)", pat.msg,
          pat.count);
    check(overlap.count == 0, "random: no two live blocks overlap (usable ranges)", "%s (%d)", overlap.msg,
          overlap.count);
    check(align.count == 0, "random: every block has its alignment", "%s", align.msg);
    check(zero.count == 0, "random: calloc blocks are zeroed", "%s", zero.msg);
    check(heap.count == 0, "random: fitalloc_check_heap() == 0 every 1000 operations", "%s", heap.msg);
    check(errs.count == 0, "random: no free changed errno", "%s (%d)", errs.msg, errs.count);
}

/* C23's free_sized and free_aligned_sized (glibc 2.36's headers do not
 * declare them): free, the size and alignment the block was allocated
 * with passed along. */
void free_sized(void *, size_t);
void free_aligned_sized(void *, size_t, size_t);

static void test_free_sized(void)
{
    struct first_err e = {0};
    for (size_t n = 0; n < 3000; n += 7) {
        void *p = malloc(hide_size(n));
        errno = 1234;
        free_sized(p, n);
        void *q = aligned_alloc(64, hide_size(n * 8 + 64));
        free_aligned_sized(q, 64, n * 8 + 64);
        if (errno != 1234)
            note_err(&e, "errno changed to %d at n=%zu", errno, n);
    }
    void *big = malloc(hide_size(1 << 20));
    free_sized(big, 1 << 20);
    free_sized(NULL, 10);
    free_aligned_sized(NULL, 64, 10);
    void *p = malloc(hide_size(100));
    free_sized(p, 100);
    void *q = malloc(hide_size(100));
    if (q != p)
        note_err(&e, "a block freed by free_sized did not come back (%p, then %p)", p, q);
    free(q);
    check(e.count == 0 && heap_problems() == 0,
          "free_sized and free_aligned_sized free (small, aligned, large, NULL), errno unchanged", "%s", e.msg);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    const char *ex = getenv("FITALLOC_EXPECT");
    expect_fitalloc = ex != NULL && strcmp(ex, "1") == 0;
    uint64_t seed = 20240611;
    const char *s = getenv("FITALLOC_SEED");
    if (s != NULL && *s)
        seed = strtoull(s, NULL, 0);
    diag("test_api: page size %zu, FITALLOC_EXPECT=%d, seed %llu", page_size, expect_fitalloc,
         (unsigned long long)seed);

    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at start", " ");
    for (int i = 0; i < 2; i++) {
        const struct api *A = &apis[i];
        test_malloc_basic(A);
        test_free_errno(A);
        test_enomem(A);
        test_realloc(A);
        test_posix_memalign(A);
        test_memalign(A);
        test_calloc_dirty(A);
    }
    test_aligned_reuse();
    test_cross_api();
    test_free_sized();
    test_mallopt();
    test_mallinfo();
    test_trim();
    test_malloc_stats();
    test_malloc_info();
    test_symbols();
    test_random(seed);
    check(heap_problems() == 0, "fitalloc_check_heap() == 0 at the end", " ");
    return tap_done("test_api");
}
