/*
 * replay.c - replay an allocation trace against the process's malloc.
 *
 * The allocator under test is whatever malloc the process ends up with:
 * glibc by default, or any library given with LD_PRELOAD.  fitalloc's
 * introspection functions (fitalloc_stats, fitalloc_heap_walk) are looked
 * up with dlsym at run time and used only when present.
 *
 * Design rules, because the replayer must not disturb what it measures:
 *   - the whole trace is parsed into a compact op array before anything is
 *     measured, so the replay loop does no parsing;
 *   - every table of the replayer is allocated with mmap (never malloc) and
 *     touched before the replay, so its own bookkeeping is part of the
 *     baseline RSS and not of the measured growth;
 *   - the footprint is taken on the first replay in a fresh process: later
 *     replays reuse memory the allocator already holds.
 *
 * Modes (see usage()):
 *   mem   one verifying replay: every block gets an id-derived pattern
 *         (first and last 8 bytes, the middle, and 8 bytes in every page;
 *         the whole block with --check) that is verified before free and
 *         realloc.  Peak RSS growth and utilization are taken on this pass.
 *   time  N timed replays that write one byte per block and only do cheap
 *         checks; reports the median ns/op.
 *   both  mem, then time, in the same process (the default).
 *
 * Exit status: 0 ok, 1 system error, 2 bad usage or malformed trace,
 * 3 a block failed a check (the allocator returned bad memory).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

_Static_assert(sizeof(size_t) == 8 && sizeof(void *) == 8,
               "replay assumes a 64-bit target");

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Requests above this cannot succeed on x86_64 (user address space is
 * 2^47); the pre-pass treats them as failing allocations so that a trace
 * with an absurd size does not produce an absurd "peak live". */
#define MAX_SANE_REQUEST (UINT64_C(1) << 47)
#define MAX_LINE 4096
#define READ_BUF_BYTES (1u << 20)
#define MAX_TIME_REPS 1000
/* Blocks from this size on get an RSS probe right after they are filled
 * and right before they are freed: they move RSS in big steps. */
#define BIG_BLOCK (64u << 10)

/* ------------------------------------------------------------------ */
/* Errors                                                              */

static void die(int status, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));
static void die(int status, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("replay: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(status);
}

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...)
{
    va_list ap;
    fputs("replay: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ------------------------------------------------------------------ */
/* Memory for the replayer's own tables: mmap only, never malloc.      */

static size_t page_size;

static size_t round_page(size_t n)
{
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX - page_size)
        die(1, "table size overflow");
    return (n + page_size - 1) & ~(page_size - 1);
}

static size_t mul_or_die(size_t a, size_t b)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        die(1, "table size overflow");
    return r;
}

static void *map_bytes(size_t bytes)
{
    void *p = mmap(NULL, round_page(bytes), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        die(1, "cannot map %zu bytes: %s", bytes, strerror(errno));
    return p;
}

static void *remap_bytes(void *old, size_t old_bytes, size_t new_bytes)
{
    void *p = mremap(old, round_page(old_bytes), round_page(new_bytes),
                     MREMAP_MAYMOVE);
    if (p == MAP_FAILED)
        die(1, "cannot grow a table to %zu bytes: %s", new_bytes,
            strerror(errno));
    return p;
}

static void unmap_bytes(void *p, size_t bytes)
{
    if (p)
        munmap(p, round_page(bytes));
}

/* Write every page so the table is resident before the baseline RSS is
 * read.  The tables are zero-initialised and must stay zero, so write 0. */
static void touch_pages(void *p, size_t bytes)
{
    volatile unsigned char *c = p;
    for (size_t off = 0; off < bytes; off += page_size)
        c[off] = 0;
}

/* ------------------------------------------------------------------ */
/* Trace reader: read(2) into an mmapped buffer; .xz through `xz -dc`. */

struct reader {
    const char *path;
    int fd;
    pid_t child; /* xz process, or 0 */
    char *buf;
    size_t pos, len;
    bool eof;
    uint64_t lineno; /* number of the line last returned */
};

static void parse_error(const struct reader *r, uint64_t line,
                        const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
static void parse_error(const struct reader *r, uint64_t line,
                        const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "replay: %s:%" PRIu64 ": ", r->path, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static void reader_open(struct reader *r, const char *path)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->buf = map_bytes(READ_BUF_BYTES);
    if (strcmp(path, "-") == 0) {
        r->fd = STDIN_FILENO; /* plain text only: we cannot peek a pipe */
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(2, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0)
        die(2, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        die(2, "%s: is a directory", path);

    /* Decide by content, not by name: an .xz stream starts with these six
     * bytes.  pread fails on pipes; those are read as plain text. */
    static const unsigned char xz_magic[6] = {0xFD, '7', 'z', 'X', 'Z', 0};
    unsigned char magic[6];
    if (pread(fd, magic, sizeof magic, 0) != (ssize_t)sizeof magic ||
        memcmp(magic, xz_magic, sizeof magic) != 0) {
        r->fd = fd;
        return;
    }

    /* fork + exec rather than popen: the file goes in as xz's stdin, so no
     * file name ever meets a shell and no quoting can go wrong. */
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        die(1, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        die(1, "fork: %s", strerror(errno));
    if (pid == 0) {
        if (dup2(fd, STDIN_FILENO) < 0 || dup2(pfd[1], STDOUT_FILENO) < 0)
            _exit(126);
        execlp("xz", "xz", "-dc", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    close(fd);
    r->fd = pfd[0];
    r->child = pid;
}

/* Called as soon as the input ends: a truncated .xz file must be reported
 * as such, not as a malformed last line. */
static void reap_child(struct reader *r)
{
    if (r->child) {
        int status;
        while (waitpid(r->child, &status, 0) < 0)
            if (errno != EINTR)
                die(1, "waitpid: %s", strerror(errno));
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
            die(2, "%s: cannot run xz to decompress it", r->path);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            die(2, "%s: xz -dc failed (corrupt or truncated .xz file)",
                r->path);
        r->child = 0;
    }
}

static void reader_close(struct reader *r)
{
    if (r->fd != STDIN_FILENO)
        close(r->fd);
    reap_child(r);
    unmap_bytes(r->buf, READ_BUF_BYTES);
    r->buf = NULL;
}

/* Returns the next line without its '\n' (possibly with a '\r'), or false
 * at the end of the input.  A last line without '\n' is returned too. */
static bool next_line(struct reader *r, const char **line, size_t *len)
{
    for (;;) {
        char *start = r->buf + r->pos;
        char *nl = memchr(start, '\n', r->len - r->pos);
        if (nl || (r->eof && r->pos < r->len)) {
            size_t n = nl ? (size_t)(nl - start) : r->len - r->pos;
            r->pos += n + (nl != NULL);
            r->lineno++;
            if (n > MAX_LINE)
                parse_error(r, r->lineno, "line too long (%zu bytes)", n);
            *line = start;
            *len = n;
            return true;
        }
        if (r->eof)
            return false;
        if (r->pos > 0) {
            memmove(r->buf, r->buf + r->pos, r->len - r->pos);
            r->len -= r->pos;
            r->pos = 0;
        }
        if (r->len == READ_BUF_BYTES)
            parse_error(r, r->lineno + 1, "line too long (no newline in %u "
                        "bytes)", READ_BUF_BYTES);
        ssize_t got = read(r->fd, r->buf + r->len, READ_BUF_BYTES - r->len);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            die(2, "%s: read: %s", r->path, strerror(errno));
        }
        if (got == 0) {
            r->eof = true;
            reap_child(r);
        }
        r->len += (size_t)got;
    }
}

/* ------------------------------------------------------------------ */
/* Parsed trace                                                        */

enum { OP_MALLOC, OP_CALLOC, OP_MEMALIGN, OP_REALLOC, OP_FREE };
static const char op_letter[] = "acmrf";

/* 16 bytes per op: py-json's 2.1M ops take 34 MB. */
struct op {
    uint64_t size;      /* bytes; for calloc nmemb*size, saturated */
    uint32_t id;        /* dense id, an index into the slot table */
    uint8_t kind;       /* OP_* */
    uint8_t align_log2; /* OP_MEMALIGN: log2 of the alignment */
    uint16_t unused;
};

/* Per dense id, the block the id names now is ptr[id]; its requested size
 * is size[id].  Two arrays, not one of structs: the timed loop touches
 * only ptr[], and its cache misses on that table are part of every op. */

/* Trace ids can be any number; they are mapped to dense indices with an
 * open-addressing hash table so that a lying or sparse id (say 4e9) costs
 * one table entry instead of a 4e9-entry array. */
struct idmap {
    uint64_t *keys; /* id + 1; 0 = empty */
    uint32_t *vals;
    size_t cap, count;
};

static size_t idmap_hash(uint64_t key, size_t cap)
{
    key ^= key >> 31;
    key *= UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(key >> 17) & (cap - 1);
}

static void idmap_init(struct idmap *m, size_t expect)
{
    size_t cap = 1024;
    while (cap < 2 * expect && cap < ((size_t)1 << 33))
        cap *= 2;
    m->cap = cap;
    m->count = 0;
    m->keys = map_bytes(mul_or_die(cap, sizeof *m->keys));
    m->vals = map_bytes(mul_or_die(cap, sizeof *m->vals));
}

static void idmap_free(struct idmap *m)
{
    unmap_bytes(m->keys, m->cap * sizeof *m->keys);
    unmap_bytes(m->vals, m->cap * sizeof *m->vals);
    m->keys = NULL;
    m->vals = NULL;
}

static void idmap_grow(struct idmap *m)
{
    struct idmap n;
    n.cap = mul_or_die(m->cap, 2);
    n.count = m->count;
    n.keys = map_bytes(mul_or_die(n.cap, sizeof *n.keys));
    n.vals = map_bytes(mul_or_die(n.cap, sizeof *n.vals));
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t h = idmap_hash(m->keys[i], n.cap);
        while (n.keys[h])
            h = (h + 1) & (n.cap - 1);
        n.keys[h] = m->keys[i];
        n.vals[h] = m->vals[i];
    }
    idmap_free(m);
    *m = n;
}

struct trace {
    const char *path;
    char name[128];
    struct op *ops;
    size_t nops, ops_cap;
    uint32_t nids;
    uint64_t *orig_ids; /* dense id -> id in the trace, for messages */
    size_t orig_cap;
    uint64_t hdr_ids, hdr_ops;
    uint64_t blank_lines;
};

static uint32_t dense_id(struct trace *t, struct idmap *m, uint64_t id,
                         const struct reader *r)
{
    if (id == UINT64_MAX)
        parse_error(r, r->lineno, "id is too large");
    uint64_t key = id + 1;
    size_t h = idmap_hash(key, m->cap);
    while (m->keys[h]) {
        if (m->keys[h] == key)
            return m->vals[h];
        h = (h + 1) & (m->cap - 1);
    }
    if (m->count >= UINT32_MAX - 1)
        parse_error(r, r->lineno, "too many distinct ids");
    uint32_t d = (uint32_t)m->count++;
    m->keys[h] = key;
    m->vals[h] = d;
    if (d >= t->orig_cap) {
        size_t ncap = t->orig_cap * 2;
        t->orig_ids = remap_bytes(t->orig_ids, t->orig_cap * sizeof(uint64_t),
                                  mul_or_die(ncap, sizeof(uint64_t)));
        t->orig_cap = ncap;
    }
    t->orig_ids[d] = id;
    t->nids = (uint32_t)m->count;
    if (m->count * 2 > m->cap)
        idmap_grow(m);
    return d;
}

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

static void describe_char(char c, char out[8])
{
    if (isprint((unsigned char)c))
        snprintf(out, 8, "'%c'", c);
    else
        snprintf(out, 8, "\\x%02x", (unsigned char)c);
}

/* Parses one unsigned decimal field; every way it can be wrong has its own
 * message, because "malformed line" alone does not help anyone. */
static uint64_t parse_field(const struct reader *r, const char **sp,
                            const char *end, const char *what)
{
    const char *s = *sp;
    while (s < end && is_blank(*s))
        s++;
    if (s == end || *s == '\r')
        parse_error(r, r->lineno, "missing %s", what);
    if (*s == '-')
        parse_error(r, r->lineno, "negative %s", what);
    if (*s < '0' || *s > '9') {
        char d[8];
        describe_char(*s, d);
        parse_error(r, r->lineno, "%s: expected a number, found %s", what, d);
    }
    uint64_t v = 0;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        unsigned digit = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - digit) / 10)
            parse_error(r, r->lineno, "%s is too large", what);
        v = v * 10 + digit;
    }
    if (s < end && !is_blank(*s) && *s != '\r') {
        char d[8];
        describe_char(*s, d);
        parse_error(r, r->lineno, "%s: unexpected %s after the number", what,
                    d);
    }
    *sp = s;
    return v;
}

static void parse_end(const struct reader *r, const char *s, const char *end,
                      const char *what)
{
    while (s < end && (is_blank(*s) || *s == '\r'))
        s++;
    if (s < end)
        parse_error(r, r->lineno, "unexpected text after the %s", what);
}

static void trace_name(struct trace *t, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(t->name, sizeof t->name, "%s", base);
    static const char *const suffixes[] = {".xz", ".rep", ".trace", ".txt"};
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        size_t n = strlen(t->name), k = strlen(suffixes[i]);
        if (n > k && strcmp(t->name + n - k, suffixes[i]) == 0)
            t->name[n - k] = '\0';
    }
}

static void parse_trace(struct trace *t, const char *path)
{
    struct reader r;
    const char *line, *s, *end;
    size_t len;
    static const char *const header[4] = {
        "suggested heap size", "number of ids", "number of operations",
        "weight"};
    uint64_t hv[4];

    memset(t, 0, sizeof *t);
    t->path = path;
    trace_name(t, path);
    reader_open(&r, path);
    for (int i = 0; i < 4; i++) {
        if (!next_line(&r, &line, &len))
            parse_error(&r, r.lineno + 1, "truncated header: missing the %s",
                        header[i]);
        s = line;
        end = line + len;
        hv[i] = parse_field(&r, &s, end, header[i]);
        parse_end(&r, s, end, header[i]);
    }
    t->hdr_ids = hv[1];
    t->hdr_ops = hv[2];

    /* The header counts are only a sizing hint: a lying header must cost
     * neither a crash nor a giant up-front mapping. */
    size_t cap_hint = (size_t)1 << 24;
    t->ops_cap = t->hdr_ops < cap_hint ? (size_t)t->hdr_ops + 16 : cap_hint;
    t->ops = map_bytes(mul_or_die(t->ops_cap, sizeof *t->ops));
    size_t ids_hint = t->hdr_ids < cap_hint ? (size_t)t->hdr_ids : cap_hint;
    t->orig_cap = ids_hint + 16;
    t->orig_ids = map_bytes(mul_or_die(t->orig_cap, sizeof(uint64_t)));
    struct idmap map;
    idmap_init(&map, ids_hint);

    while (next_line(&r, &line, &len)) {
        s = line;
        end = line + len;
        while (s < end && (is_blank(*s) || *s == '\r'))
            s++;
        if (s == end) {
            t->blank_lines++;
            continue;
        }
        char c = *s++;
        if (s < end && !is_blank(*s) && *s != '\r') {
            parse_error(&r, r.lineno, "unknown operation '%.*s'",
                        (int)((end - line) < 16 ? (end - line) : 16), line);
        }
        struct op o = {0};
        uint64_t id, a, b;
        switch (c) {
        case 'a':
            o.kind = OP_MALLOC;
            id = parse_field(&r, &s, end, "id");
            o.size = parse_field(&r, &s, end, "size");
            break;
        case 'c':
            o.kind = OP_CALLOC;
            id = parse_field(&r, &s, end, "id");
            a = parse_field(&r, &s, end, "nmemb");
            b = parse_field(&r, &s, end, "size");
            /* calloc(n, s) and calloc(1, n*s) differ only when n*s
             * overflows; saturating keeps that call failing. */
            if (__builtin_mul_overflow(a, b, &o.size))
                o.size = UINT64_MAX;
            break;
        case 'm':
            o.kind = OP_MEMALIGN;
            id = parse_field(&r, &s, end, "id");
            a = parse_field(&r, &s, end, "alignment");
            o.size = parse_field(&r, &s, end, "size");
            if (a == 0 || (a & (a - 1)) != 0)
                parse_error(&r, r.lineno,
                            "alignment %" PRIu64 " is not a power of two", a);
            o.align_log2 = (uint8_t)__builtin_ctzll(a);
            break;
        case 'r':
            o.kind = OP_REALLOC;
            id = parse_field(&r, &s, end, "id");
            o.size = parse_field(&r, &s, end, "size");
            break;
        case 'f':
            o.kind = OP_FREE;
            id = parse_field(&r, &s, end, "id");
            break;
        default: {
            char d[8];
            describe_char(c, d);
            parse_error(&r, r.lineno, "unknown operation %s", d);
        }
        }
        parse_end(&r, s, end, "operation");
        o.id = dense_id(t, &map, id, &r);
        if (t->nops == t->ops_cap) {
            size_t ncap = mul_or_die(t->ops_cap, 2);
            t->ops = remap_bytes(t->ops, t->ops_cap * sizeof *t->ops,
                                 mul_or_die(ncap, sizeof *t->ops));
            t->ops_cap = ncap;
        }
        t->ops[t->nops++] = o;
    }
    reader_close(&r);
    idmap_free(&map);
    if (t->nops == 0)
        die(2, "%s: the trace has no operations", path);
    if (t->hdr_ops != t->nops)
        warn("%s: header says %" PRIu64 " operations, the body has %zu",
             path, t->hdr_ops, t->nops);
    if (t->hdr_ids < t->nids)
        warn("%s: header says %" PRIu64 " ids, the body uses %" PRIu32, path,
             t->hdr_ids, t->nids);
}

/* ------------------------------------------------------------------ */
/* Pre-pass: the live-bytes curve, computed from the ops alone.         */

struct prepass {
    uint64_t peak_live;   /* peak live requested bytes */
    size_t peak_idx;      /* first op after which live bytes are at peak */
    uint64_t peak_blocks; /* live blocks at that op */
    uint64_t max_blocks;  /* most live blocks at any point */
    uint64_t end_blocks;  /* blocks still live at the end */
    uint64_t alloc_over_live, free_of_dead, realloc_of_dead, impossible;
    size_t sample_every, nsamples;
    uint64_t *live_samples; /* live bytes after op (j+1)*sample_every-1 */
};

#define NOT_LIVE UINT64_MAX

/* Mirrors the replay loop's semantics exactly: an allocation over a live
 * id frees the old block first; a free of a dead id is free(NULL); a
 * realloc of a dead id is realloc(NULL, n); requests that cannot succeed
 * leave the id dead (malloc) or unchanged (realloc); realloc(p, 0) leaves
 * a zero-byte entry (glibc frees, others return a minimum block). */
static void run_prepass(const struct trace *t, uint64_t *size,
                        struct prepass *pp, size_t target_samples)
{
    memset(pp, 0, sizeof *pp);
    for (uint32_t i = 0; i < t->nids; i++)
        size[i] = NOT_LIVE;
    pp->sample_every = t->nops / target_samples + 1;
    pp->nsamples = t->nops / pp->sample_every;
    pp->live_samples = map_bytes(mul_or_die(pp->nsamples + 1, 8));

    uint64_t live = 0, blocks = 0;
    for (size_t i = 0; i < t->nops; i++) {
        const struct op *o = &t->ops[i];
        uint64_t *s = &size[o->id];
        bool impossible = o->size > MAX_SANE_REQUEST ||
                          (o->kind == OP_MEMALIGN && o->align_log2 >= 47);
        switch (o->kind) {
        case OP_MALLOC:
        case OP_CALLOC:
        case OP_MEMALIGN:
            if (*s != NOT_LIVE) {
                pp->alloc_over_live++;
                live -= *s;
                blocks--;
                *s = NOT_LIVE;
            }
            if (impossible) {
                pp->impossible++;
            } else {
                *s = o->size;
                live += o->size;
                blocks++;
            }
            break;
        case OP_REALLOC:
            if (impossible) {
                pp->impossible++;
                break;
            }
            if (*s == NOT_LIVE) {
                pp->realloc_of_dead++;
                blocks++;
            } else {
                live -= *s;
            }
            *s = o->size;
            live += o->size;
            break;
        case OP_FREE:
            if (*s == NOT_LIVE) {
                pp->free_of_dead++;
            } else {
                live -= *s;
                blocks--;
                *s = NOT_LIVE;
            }
            break;
        }
        if (live > pp->peak_live || i == 0) {
            pp->peak_live = live;
            pp->peak_idx = i;
            pp->peak_blocks = blocks;
        }
        if (blocks > pp->max_blocks)
            pp->max_blocks = blocks;
        if ((i + 1) % pp->sample_every == 0 &&
            (i + 1) / pp->sample_every <= pp->nsamples)
            pp->live_samples[(i + 1) / pp->sample_every - 1] = live;
    }
    pp->end_blocks = blocks;
}

/* ------------------------------------------------------------------ */
/* fitalloc introspection, when the library is loaded.                  */

struct fit_stats { /* mirrors struct fitalloc_stats, version 1 */
    uint64_t size, version;
    uint64_t heap_bytes, peak_heap_bytes;
    uint64_t mapped_bytes, peak_mapped_bytes, mapped_blocks;
    uint64_t system_bytes, peak_system_bytes;
    uint64_t in_use_bytes, peak_in_use_bytes, in_use_blocks;
    uint64_t cached_bytes, cached_blocks;
    uint64_t free_bytes, free_blocks, largest_free_block;
    uint64_t requested_bytes;
    uint64_t malloc_calls, free_calls, calloc_calls, realloc_calls,
        memalign_calls;
    uint64_t sbrk_calls, mmap_calls, munmap_calls, mremap_calls,
        madvise_calls;
    uint64_t trimmed_bytes;
    uint64_t threads;
};

#define WALK_REGION 0
#define WALK_USED 1
#define WALK_FREE 2
#define WALK_CACHED 3
#define WALK_MAPPED 4

typedef void (*fit_stats_fn)(void *out);
typedef void (*fit_walk_cb)(void *ctx, uintptr_t addr, uint64_t size,
                            uint32_t kind);
typedef size_t (*fit_walk_fn)(fit_walk_cb fn, void *ctx);

static fit_stats_fn fit_stats_p;
static fit_walk_fn fit_walk_p;

static void find_fitalloc(void)
{
    /* ASan builds replace malloc; a preloaded fitalloc cannot be in play
     * and looking it up would only confuse the sanitizer run. */
#if defined(__SANITIZE_ADDRESS__)
    return;
#else
    fit_stats_p = (fit_stats_fn)(uintptr_t)dlsym(RTLD_DEFAULT,
                                                 "fitalloc_stats");
    fit_walk_p = (fit_walk_fn)(uintptr_t)dlsym(RTLD_DEFAULT,
                                               "fitalloc_heap_walk");
#endif
}

/* The library writes `size` bytes of its own idea of the struct; hand it a
 * generous buffer so a newer, larger struct cannot overrun ours. */
static bool read_fit_stats(struct fit_stats *out)
{
    static uint64_t buf[512];
    if (!fit_stats_p)
        return false;
    memset(buf, 0, sizeof buf);
    fit_stats_p(buf);
    memcpy(out, buf, sizeof *out);
    return out->version >= 1 && out->size >= 10 * sizeof(uint64_t);
}

struct walk_entry {
    uint64_t addr, size;
    uint32_t kind;
};

struct walk_buf {
    struct walk_entry *e;
    size_t n, cap;
    uint64_t dropped;
};

/* Runs with fitalloc's heap locked: must not call malloc.  Growing the
 * pre-mapped array with mremap is a system call, not an allocation. */
static void walk_collect(void *ctx, uintptr_t addr, uint64_t size,
                         uint32_t kind)
{
    struct walk_buf *w = ctx;
    if (w->n == w->cap) {
        size_t ncap = w->cap * 2;
        void *p = mremap(w->e, round_page(w->cap * sizeof *w->e),
                         round_page(ncap * sizeof *w->e), MREMAP_MAYMOVE);
        if (p == MAP_FAILED) {
            w->dropped++;
            return;
        }
        w->e = p;
        w->cap = ncap;
    }
    w->e[w->n++] = (struct walk_entry){addr, size, kind};
}

/* ------------------------------------------------------------------ */
/* /proc/self/status and clear_refs, without stdio (no malloc).         */

struct rss {
    uint64_t rss, hwm; /* bytes */
};

static uint64_t status_field(const char *buf, const char *key)
{
    const char *p = strstr(buf, key);
    if (!p)
        return 0;
    p += strlen(key);
    while (*p == ' ' || *p == '\t')
        p++;
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    return v * 1024; /* the file says kB */
}

static struct rss read_rss(void)
{
    char buf[8192];
    struct rss r = {0, 0};
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return r;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return r;
    buf[n] = '\0';
    r.rss = status_field(buf, "\nVmRSS:");
    r.hwm = status_field(buf, "\nVmHWM:");
    return r;
}

/* Exact current RSS, for frequent sampling.  /proc/self/statm is summed
 * exactly on read, unlike VmHWM (see the comment in main).  The file stays
 * open and is re-read with pread at offset 0: one system call a sample. */
struct rss_now {
    uint64_t total, anon; /* bytes: all resident pages; anonymous only */
};

static int statm_fd = -1;

static struct rss_now read_statm(void)
{
    char buf[256];
    struct rss_now r = {0, 0};
    if (statm_fd < 0)
        statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (statm_fd < 0)
        return r;
    ssize_t n = pread(statm_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return r;
    buf[n] = '\0';
    /* fields: size resident shared text lib data dt (pages) */
    uint64_t f[3] = {0, 0, 0};
    const char *p = buf;
    for (int k = 0; k < 3; k++) {
        while (*p == ' ')
            p++;
        while (*p >= '0' && *p <= '9')
            f[k] = f[k] * 10 + (uint64_t)(*p++ - '0');
    }
    r.total = f[1] * page_size;
    r.anon = f[1] > f[2] ? (f[1] - f[2]) * page_size : 0;
    return r;
}

static bool reset_hwm(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = write(fd, "5", 1) == 1;
    close(fd);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Block patterns                                                       */

enum fill { FILL_BYTE, FILL_SAMPLE, FILL_FULL };

static inline uint64_t id_seed(uint32_t id) { return bench_mix64(id); }

/* The pattern is a function of (id, offset) only, so a realloc'ed block
 * keeps a valid pattern in its preserved prefix whatever the new size. */
static inline uint64_t pat_word(uint64_t seed, uint64_t word)
{
    return seed ^ (word * UINT64_C(0xD6E8FEB86659FD93));
}

static inline unsigned char pat_byte(uint64_t seed, uint64_t off)
{
    return (unsigned char)(pat_word(seed, off >> 3) >> ((off & 7) * 8));
}

/* Sampled positions: 8 bytes at the start, the end, the middle, and at
 * every page boundary inside the block.  The last one makes the verifying
 * pass touch every page a program that uses its memory would touch. */
#define SAMPLE_STRIDE 4096u

struct sample_iter {
    uint64_t n, next_page;
    int state;
};

static bool sample_next(struct sample_iter *it, uint64_t *off, uint64_t *len)
{
    uint64_t n = it->n;
    if (n == 0)
        return false;
    for (;;) {
        uint64_t o;
        switch (it->state) {
        case 0:
            it->state = 1;
            o = 0;
            break;
        case 1:
            it->state = 2;
            if (n <= 8)
                continue;
            o = n - 8;
            break;
        case 2:
            it->state = 3;
            if (n <= 16)
                continue;
            o = (n / 2) & ~(uint64_t)7;
            break;
        default:
            if (it->next_page >= n)
                return false;
            o = it->next_page;
            it->next_page += SAMPLE_STRIDE;
            break;
        }
        *off = o;
        *len = n - o < 8 ? n - o : 8;
        return true;
    }
}

static void fill_sample(unsigned char *p, uint64_t n, uint64_t seed)
{
    struct sample_iter it = {n, SAMPLE_STRIDE, 0};
    uint64_t off, len;
    while (sample_next(&it, &off, &len))
        for (uint64_t k = off; k < off + len; k++)
            p[k] = pat_byte(seed, k);
}

/* Returns the first bad offset below `limit`, or UINT64_MAX. */
static uint64_t check_sample(const unsigned char *p, uint64_t n, uint64_t seed,
                             uint64_t limit, bool zero)
{
    struct sample_iter it = {n, SAMPLE_STRIDE, 0};
    uint64_t off, len;
    while (sample_next(&it, &off, &len))
        for (uint64_t k = off; k < off + len && k < limit; k++)
            if (p[k] != (zero ? 0 : pat_byte(seed, k)))
                return k;
    return UINT64_MAX;
}

static void fill_range(unsigned char *p, uint64_t from, uint64_t to,
                       uint64_t seed)
{
    uint64_t k = from;
    for (; k < to && (k & 7); k++)
        p[k] = pat_byte(seed, k);
    for (; k + 8 <= to; k += 8) {
        uint64_t w = pat_word(seed, k >> 3);
        memcpy(p + k, &w, 8); /* little-endian: matches pat_byte */
    }
    for (; k < to; k++)
        p[k] = pat_byte(seed, k);
}

static uint64_t check_range(const unsigned char *p, uint64_t from,
                            uint64_t to, uint64_t seed, bool zero)
{
    uint64_t k = from;
    for (; k < to && (k & 7); k++)
        if (p[k] != (zero ? 0 : pat_byte(seed, k)))
            return k;
    for (; k + 8 <= to; k += 8) {
        uint64_t w;
        memcpy(&w, p + k, 8);
        if (w != (zero ? 0 : pat_word(seed, k >> 3)))
            break; /* find the byte below */
    }
    for (; k < to; k++)
        if (p[k] != (zero ? 0 : pat_byte(seed, k)))
            return k;
    return UINT64_MAX;
}

/* ------------------------------------------------------------------ */
/* Replay                                                               */

struct sample_point {
    uint64_t sys_bytes; /* fitalloc heap_bytes + mapped_bytes */
};

struct ctx {
    const struct trace *t;
    const struct prepass *pp;
    unsigned char **ptr;
    uint64_t *size;
    uint64_t failures; /* allocations that returned NULL */
    /* events (verifying pass only) */
    size_t next_event, next_sample, sample_idx;
    bool peak_pending;
    bool sample_stats;
    struct sample_point *samples;
    /* exact RSS probes (verifying pass only) */
    size_t rss_mask;          /* probe after op i when (i & rss_mask) == 0 */
    uint64_t rss_probes;
    struct rss_now rss_peak;  /* largest values seen */
    /* at the peak op */
    bool have_peak_stats;
    struct fit_stats peak_stats;
    uint64_t rss_at_peak;
    struct walk_buf *walk; /* heap map requested and possible */
    size_t walk_calls;
};

static void check_failed(const struct ctx *c, size_t i, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
static void check_failed(const struct ctx *c, size_t i, const char *fmt, ...)
{
    va_list ap;
    const struct op *o = &c->t->ops[i];
    fflush(stdout);
    fprintf(stderr, "replay: %s: op %zu", c->t->path, i + 1);
    if (c->t->blank_lines == 0)
        fprintf(stderr, " (line %zu)", i + 5);
    fprintf(stderr, " '%c %" PRIu64 "': ", op_letter[o->kind],
            c->t->orig_ids[o->id]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(3);
}

/* Alignment malloc must give a block of n bytes: 16 for n >= 16, but
 * C11/C17 only promise the alignment of an object that fits, so a block
 * of 8 bytes may be 8-aligned (jemalloc, tcmalloc and mimalloc do that). */
static inline uint64_t required_align(uint64_t n)
{
    if (n >= 16)
        return 16;
    if (n == 0)
        return 1;
    return UINT64_C(1) << (63 - __builtin_clzll(n));
}

static __attribute__((noinline)) void rss_probe(struct ctx *c)
{
    struct rss_now r = read_statm();
    c->rss_probes++;
    if (r.total > c->rss_peak.total)
        c->rss_peak.total = r.total;
    if (r.anon > c->rss_peak.anon)
        c->rss_peak.anon = r.anon;
}

static void update_next_event(struct ctx *c)
{
    size_t e = c->next_sample;
    if (c->peak_pending && c->pp->peak_idx < e)
        e = c->pp->peak_idx;
    c->next_event = e;
}

static void on_event(struct ctx *c, size_t i)
{
    if (i == c->next_sample) {
        struct sample_point *sp = &c->samples[c->sample_idx];
        struct fit_stats st = {0};
        if (c->sample_stats && read_fit_stats(&st))
            sp->sys_bytes = st.heap_bytes + st.mapped_bytes;
        c->sample_idx++;
        c->next_sample = c->sample_idx < c->pp->nsamples
                             ? (c->sample_idx + 1) * c->pp->sample_every - 1
                             : SIZE_MAX;
    }
    if (c->peak_pending && i == c->pp->peak_idx) {
        c->peak_pending = false;
        c->have_peak_stats = read_fit_stats(&c->peak_stats);
        c->rss_at_peak = read_statm().total;
        if (c->walk && fit_walk_p)
            c->walk_calls = fit_walk_p(walk_collect, c->walk);
    }
    update_next_event(c);
}

static inline void verify_block(const struct ctx *c, size_t i,
                                uint32_t id, enum fill fill, const char *when)
{
    const unsigned char *p = c->ptr[id];
    uint64_t n = c->size[id], seed = id_seed(id), bad;
    if (fill == FILL_FULL)
        bad = check_range(p, 0, n, seed, false);
    else
        bad = check_sample(p, n, seed, n, false);
    if (bad != UINT64_MAX)
        check_failed(c, i, "block %p of %" PRIu64 " bytes was changed at "
                     "offset %" PRIu64 " (found before %s)", (const void *)p,
                     n, bad, when);
}

/* Shared tail of malloc, calloc and memalign. */
static inline void after_alloc(struct ctx *c, size_t i, const struct op *o,
                               unsigned char *p, enum fill fill)
{
    uint64_t n = o->size;
    c->ptr[o->id] = p;
    if (fill != FILL_BYTE)
        c->size[o->id] = p ? n : 0;
    if (unlikely(!p)) {
        if (n)
            c->failures++;
        return;
    }
    if (o->kind == OP_MEMALIGN) {
        if (unlikely((uintptr_t)p & ((UINT64_C(1) << o->align_log2) - 1)))
            check_failed(c, i, "memalign returned %p, not aligned to %llu",
                         (void *)p, 1ULL << o->align_log2);
    } else if (unlikely(((uintptr_t)p & 15) &&
                        ((uintptr_t)p & (required_align(n) - 1)))) {
        check_failed(c, i, "%s(%" PRIu64 ") returned %p, not aligned to "
                     "%" PRIu64, o->kind == OP_CALLOC ? "calloc" : "malloc",
                     n, (void *)p, required_align(n));
    }
    if (fill == FILL_BYTE) {
        if (n) {
            if (o->kind == OP_CALLOC && unlikely(p[0] != 0))
                check_failed(c, i, "calloc memory at %p is not zero",
                             (void *)p);
            p[0] = (unsigned char)o->id;
        }
    } else {
        uint64_t seed = id_seed(o->id);
        if (o->kind == OP_CALLOC) {
            uint64_t bad = fill == FILL_FULL
                               ? check_range(p, 0, n, 0, true)
                               : check_sample(p, n, 0, n, true);
            if (bad != UINT64_MAX)
                check_failed(c, i, "calloc memory at %p is not zero at "
                             "offset %" PRIu64, (void *)p, bad);
        }
        if (fill == FILL_FULL)
            fill_range(p, 0, n, seed);
        else
            fill_sample(p, n, seed);
    }
}

/* always_inline with constant `fill` and `events` gives one specialised
 * loop per mode: the timed loop carries no event or pattern code. */
static inline __attribute__((always_inline)) void
replay_loop(struct ctx *c, const enum fill fill, const bool events)
{
    const struct op *ops = c->t->ops;
    unsigned char **ptr = c->ptr;
    uint64_t *size = c->size;
    const size_t nops = c->t->nops;

    for (size_t i = 0; i < nops; i++) {
        const struct op *o = &ops[i];
        const uint32_t id = o->id;
        unsigned char *p;
        switch (o->kind) {
        case OP_MALLOC:
        case OP_CALLOC:
        case OP_MEMALIGN:
            if (unlikely(ptr[id] != NULL)) { /* trace reuses a live id */
                if (fill != FILL_BYTE) {
                    verify_block(c, i, id, fill, "free");
                    if (events && size[id] >= BIG_BLOCK)
                        rss_probe(c);
                }
                free(ptr[id]);
            }
            if (o->kind == OP_MALLOC)
                p = malloc(o->size);
            else if (o->kind == OP_CALLOC)
                p = calloc(1, o->size);
            else
                p = memalign((size_t)1 << o->align_log2, o->size);
            after_alloc(c, i, o, p, fill);
            if (events && o->size >= BIG_BLOCK)
                rss_probe(c);
            break;
        case OP_REALLOC: {
            uint64_t n = o->size;
            if (fill != FILL_BYTE && ptr[id]) {
                verify_block(c, i, id, fill, "realloc");
                if (events && size[id] >= BIG_BLOCK)
                    rss_probe(c);
            }
            p = realloc(ptr[id], n);
            if (unlikely(!p)) {
                if (n == 0) { /* glibc: realloc(p, 0) frees p */
                    ptr[id] = NULL;
                    if (fill != FILL_BYTE)
                        size[id] = 0;
                } else {
                    c->failures++; /* the old block stays valid */
                }
                break;
            }
            if (unlikely(((uintptr_t)p & 15) &&
                         ((uintptr_t)p & (required_align(n) - 1))))
                check_failed(c, i, "realloc(%" PRIu64 ") returned %p, not "
                             "aligned to %" PRIu64, n, (void *)p,
                             required_align(n));
            if (fill == FILL_BYTE) {
                /* No preservation check here: it would need the old size,
                 * i.e. a second table in the timed loop. */
                if (n)
                    p[0] = (unsigned char)id;
            } else {
                uint64_t old_n = ptr[id] ? size[id] : 0;
                uint64_t keep = old_n < n ? old_n : n;
                uint64_t seed = id_seed(id), bad;
                bad = fill == FILL_FULL
                          ? check_range(p, 0, keep, seed, false)
                          : check_sample(p, old_n, seed, keep, false);
                if (bad != UINT64_MAX)
                    check_failed(c, i, "realloc from %" PRIu64 " to %" PRIu64
                                 " bytes did not preserve offset %" PRIu64,
                                 old_n, n, bad);
                if (fill == FILL_FULL)
                    fill_range(p, keep, n, seed);
                else
                    fill_sample(p, n, seed);
                size[id] = n;
            }
            ptr[id] = p;
            if (events && n >= BIG_BLOCK)
                rss_probe(c);
            break;
        }
        case OP_FREE:
            if (fill != FILL_BYTE && ptr[id]) {
                verify_block(c, i, id, fill, "free");
                if (events && size[id] >= BIG_BLOCK)
                    rss_probe(c);
            }
            free(ptr[id]); /* free(NULL) for a dead id, as the program did */
            ptr[id] = NULL;
            break;
        }
        if (events) {
            if ((i & c->rss_mask) == 0)
                rss_probe(c);
            if (unlikely(i == c->next_event))
                on_event(c, i);
        }
    }
}

static __attribute__((noinline)) void replay_timed(struct ctx *c)
{
    replay_loop(c, FILL_BYTE, false);
}

static __attribute__((noinline)) void replay_verify(struct ctx *c, bool full)
{
    if (full)
        replay_loop(c, FILL_FULL, true);
    else
        replay_loop(c, FILL_SAMPLE, true);
}

static __attribute__((noinline)) void replay_byte_events(struct ctx *c)
{
    replay_loop(c, FILL_BYTE, true);
}

/* Blocks left live by an unbalanced trace are freed outside the timing,
 * so the next replay starts from an empty slot table. */
static void free_leftovers(struct ctx *c)
{
    for (uint32_t i = 0; i < c->t->nids; i++) {
        if (c->ptr[i]) {
            free(c->ptr[i]);
            c->ptr[i] = NULL;
        }
        c->size[i] = 0;
    }
}

/* ------------------------------------------------------------------ */
/* Heap map (SVG)                                                       */

static const char *fmt_bytes(uint64_t b, char *out, size_t n)
{
    if (b >= (UINT64_C(1) << 30))
        snprintf(out, n, "%.2f GiB", (double)b / (1 << 30));
    else if (b >= (UINT64_C(1) << 20))
        snprintf(out, n, "%.2f MiB", (double)b / (1 << 20));
    else if (b >= 1024)
        snprintf(out, n, "%.1f KiB", (double)b / 1024);
    else
        snprintf(out, n, "%" PRIu64 " B", b);
    return out;
}

static int cmp_walk_addr(const void *a, const void *b)
{
    const struct walk_entry *x = a, *y = b;
    return (x->addr > y->addr) - (x->addr < y->addr);
}

/* A "nice" axis step: 1, 2 or 5 times a power of ten, about max/5. */
static double nice_step(double max)
{
    if (max <= 0)
        return 1;
    double raw = max / 5, p = 1;
    while (p * 10 <= raw)
        p *= 10;
    while (p > raw)
        p /= 10;
    if (raw >= 5 * p)
        return 5 * p;
    if (raw >= 2 * p)
        return 2 * p;
    return p;
}

enum { PX_USED, PX_FREE, PX_CACHED, PX_KINDS };
static const char *const px_colour[PX_KINDS + 1] = {
    "#3a6fb0", /* used */
    "#b8e0b0", /* free */
    "#f0a030", /* cached */
    "#d0d0d0", /* neither: headers, padding, unaccounted */
};

static void write_heap_map(const char *svg_path, const struct ctx *c,
                           const struct walk_buf *w)
{
    FILE *f = fopen(svg_path, "w");
    if (!f)
        die(1, "%s: %s", svg_path, strerror(errno));

    /* Sort a copy by address; separate regions, blocks, mapped blocks. */
    size_t n = w->n;
    struct walk_entry *e = map_bytes(mul_or_die(n + 1, sizeof *e));
    memcpy(e, w->e, n * sizeof *e);
    qsort(e, n, sizeof *e, cmp_walk_addr);
    size_t nreg = 0, nmapped = 0;
    uint64_t heap = 0, used = 0, freeb = 0, cached = 0, largest = 0,
             mapped = 0, nused = 0, nfree = 0, ncached = 0;
    for (size_t i = 0; i < n; i++) {
        switch (e[i].kind) {
        case WALK_REGION: nreg++; heap += e[i].size; break;
        case WALK_USED: nused++; used += e[i].size; break;
        case WALK_FREE:
            nfree++;
            freeb += e[i].size;
            if (e[i].size > largest)
                largest = e[i].size;
            break;
        case WALK_CACHED: ncached++; cached += e[i].size; break;
        case WALK_MAPPED: nmapped++; mapped += e[i].size; break;
        }
    }
    struct walk_entry *reg = map_bytes(mul_or_die(nreg + 1, sizeof *reg));
    struct walk_entry *map = map_bytes(mul_or_die(nmapped + 1, sizeof *map));
    size_t r = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].kind == WALK_REGION)
            reg[r++] = e[i];
        else if (e[i].kind == WALK_MAPPED)
            map[m++] = e[i];
    }

    /* Choose bytes per pixel so that all regions fit in about 200 rows of
     * 1000 px; each region starts on its own row. */
    const unsigned width = 1000, max_rows = 200, row_h = 3;
    uint64_t bpp = 16;
    size_t rows;
    for (;;) {
        rows = 0;
        for (size_t i = 0; i < nreg; i++)
            rows += (size_t)((reg[i].size + bpp * width - 1) / (bpp * width));
        if (rows <= max_rows || bpp >= (UINT64_C(1) << 40))
            break;
        bpp *= 2;
    }
    /* Pixel accumulators: bytes of each kind under each pixel. */
    size_t npx = mul_or_die(rows + 1, width);
    uint64_t(*px)[PX_KINDS] = map_bytes(mul_or_die(npx, sizeof *px));
    size_t *row0 = map_bytes(mul_or_die(nreg + 1, sizeof *row0));
    for (size_t i = 0, acc = 0; i < nreg; i++) {
        row0[i] = acc;
        acc += (size_t)((reg[i].size + bpp * width - 1) / (bpp * width));
    }
    uint64_t outside = 0;
    for (size_t i = 0; i < n; i++) {
        int k;
        switch (e[i].kind) {
        case WALK_USED: k = PX_USED; break;
        case WALK_FREE: k = PX_FREE; break;
        case WALK_CACHED: k = PX_CACHED; break;
        default: continue;
        }
        /* Region containing the block: binary search on start address. */
        size_t lo = 0, hi = nreg;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (reg[mid].addr <= e[i].addr)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == 0 || e[i].addr - reg[lo - 1].addr >= reg[lo - 1].size) {
            outside++;
            continue;
        }
        const struct walk_entry *g = &reg[lo - 1];
        uint64_t a = e[i].addr - g->addr;
        uint64_t b = a + e[i].size;
        if (b > g->size)
            b = g->size;
        size_t base = row0[lo - 1] * width;
        while (a < b) {
            uint64_t pix = a / bpp, pend = (pix + 1) * bpp;
            uint64_t take = (b < pend ? b : pend) - a;
            px[base + pix][k] += take;
            a += take;
        }
    }

    const unsigned left = 20, top = 70;
    unsigned map_h = (unsigned)rows * row_h;
    unsigned mapped_y = top + map_h + 30;
    unsigned plot_y = mapped_y + (nmapped ? 60 : 0) + 60;
    unsigned plot_h = 220, total_h = plot_y + plot_h + 60;
    char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];

    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%u\" "
            "height=\"%u\" font-family=\"sans-serif\" font-size=\"12\">\n",
            width + 2 * left, total_h);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%u\" y=\"20\" font-size=\"15\" font-weight=\"bold\">"
            "fitalloc heap at op %zu of %s (peak live requested bytes)</text>\n",
            left, c->pp->peak_idx + 1, c->t->name);
    uint64_t system = heap + mapped;
    fprintf(f, "<text x=\"%u\" y=\"38\">heap %s in %zu region%s, used %s, "
            "free %s (largest %s), cached %s, mapped %s in %zu block%s"
            "</text>\n", left, fmt_bytes(heap, b1, 32), nreg,
            nreg == 1 ? "" : "s", fmt_bytes(used, b2, 32),
            fmt_bytes(freeb, b3, 32), fmt_bytes(largest, b4, 32),
            fmt_bytes(cached, b5, 32), fmt_bytes(mapped, b6, 32), nmapped,
            nmapped == 1 ? "" : "s");
    fprintf(f, "<text x=\"%u\" y=\"54\">live requested %s; utilization = "
            "live requested / (heap + mapped) = %.3f; %" PRIu64 " used, "
            "%" PRIu64 " free, %" PRIu64 " cached blocks; 1 px = %" PRIu64
            " bytes, %u px per row",
            left, fmt_bytes(c->pp->peak_live, b1, 32),
            system ? (double)c->pp->peak_live / (double)system : 0.0, nused,
            nfree, ncached, bpp, width);
    if (outside || w->dropped)
        fprintf(f, "; %" PRIu64 " blocks outside regions, %" PRIu64
                " not recorded", outside, w->dropped);
    fprintf(f, "</text>\n");

    /* Legend on the right of the title. */
    static const char *const names[PX_KINDS + 1] = {"allocated", "free",
                                                   "cached", "other"};
    for (int k = 0; k <= PX_KINDS; k++) {
        unsigned x = left + 640 + (unsigned)k * 90;
        fprintf(f, "<rect x=\"%u\" y=\"8\" width=\"12\" height=\"12\" "
                "fill=\"%s\"/><text x=\"%u\" y=\"19\">%s</text>\n", x,
                px_colour[k], x + 16, names[k]);
    }

    /* Heap rows: each pixel takes the colour of the kind that covers most
     * of its bytes; equal neighbours are merged into one rect. */
    fprintf(f, "<g shape-rendering=\"crispEdges\">\n");
    for (size_t i = 0; i < nreg; i++) {
        size_t nrows = (size_t)((reg[i].size + bpp * width - 1) /
                                (bpp * width));
        for (size_t rr = 0; rr < nrows; rr++) {
            size_t row = row0[i] + rr;
            uint64_t row_bytes = reg[i].size - (uint64_t)rr * bpp * width;
            unsigned row_px = row_bytes >= bpp * width
                                  ? width
                                  : (unsigned)((row_bytes + bpp - 1) / bpp);
            unsigned y = top + (unsigned)row * row_h;
            int run_k = -1;
            unsigned run_x = 0;
            for (unsigned x = 0; x <= row_px; x++) {
                int k = -1;
                if (x < row_px) {
                    const uint64_t *v = px[row * width + x];
                    uint64_t best = 0;
                    k = PX_KINDS;
                    for (int q = 0; q < PX_KINDS; q++)
                        if (v[q] > best) {
                            best = v[q];
                            k = q;
                        }
                    if (best * 4 < bpp) /* mostly unaccounted bytes */
                        k = PX_KINDS;
                }
                if (k != run_k) {
                    if (run_k >= 0)
                        fprintf(f, "<rect x=\"%u\" y=\"%u\" width=\"%u\" "
                                "height=\"%u\" fill=\"%s\"/>\n",
                                left + run_x, y, x - run_x, row_h - 1,
                                px_colour[run_k]);
                    run_k = k;
                    run_x = x;
                }
            }
        }
        if (i > 0)
            fprintf(f, "<line x1=\"%u\" x2=\"%u\" y1=\"%.1f\" y2=\"%.1f\" "
                    "stroke=\"black\"/>\n", left, left + width,
                    top + row0[i] * row_h - 0.5, top + row0[i] * row_h - 0.5);
    }
    fprintf(f, "</g>\n");

    /* Mapped blocks: one bar scaled to their total, one segment each. */
    if (nmapped) {
        fprintf(f, "<text x=\"%u\" y=\"%u\">large blocks in their own "
                "mappings: %zu, %s (bar scaled to their total)</text>\n",
                left, mapped_y - 6, nmapped, fmt_bytes(mapped, b1, 32));
        double x = left;
        for (size_t i = 0; i < nmapped; i++) {
            double wpx = (double)map[i].size / (double)mapped * width;
            fprintf(f, "<rect x=\"%.2f\" y=\"%u\" width=\"%.2f\" "
                    "height=\"24\" fill=\"%s\" stroke=\"white\" "
                    "stroke-width=\"0.5\"/>\n", x, mapped_y, wpx,
                    i % 2 ? "#7a4fb0" : "#9a6fd0");
            if (wpx > 70)
                fprintf(f, "<text x=\"%.1f\" y=\"%u\" fill=\"white\">%s"
                        "</text>\n", x + 4, mapped_y + 16,
                        fmt_bytes(map[i].size, b1, 32));
            x += wpx;
        }
    }

    /* Line plot: live requested bytes (from the trace) and fitalloc's
     * heap+mapped bytes (sampled) over the replay. */
    const struct prepass *pp = c->pp;
    uint64_t ymax = pp->peak_live;
    for (size_t j = 0; j < pp->nsamples; j++)
        if (c->samples[j].sys_bytes > ymax)
            ymax = c->samples[j].sys_bytes;
    /* Ticks at round numbers of MiB (or KiB, for tiny traces). */
    double unit = ymax >= (1u << 20) ? 1048576.0 : ymax >= 1024 ? 1024.0 : 1;
    const char *unit_name = unit > 1024 ? "MiB" : unit > 1 ? "KiB" : "B";
    double step = nice_step((double)ymax / unit) * unit;
    double ytop = step;
    while (ytop < (double)ymax)
        ytop += step;
    double xmax = (double)c->t->nops;
    fprintf(f, "<text x=\"%u\" y=\"%u\" font-weight=\"bold\">bytes over the "
            "replay (sampled every %zu ops)</text>\n", left, plot_y - 24,
            pp->sample_every);
    unsigned px0 = left + 70, pw = width - 80;
    fprintf(f, "<rect x=\"%u\" y=\"%u\" width=\"%u\" height=\"%u\" "
            "fill=\"none\" stroke=\"#888\"/>\n", px0, plot_y, pw, plot_h);
    for (double v = 0; v <= ytop + step / 2; v += step) {
        double y = plot_y + plot_h - v / ytop * plot_h;
        fprintf(f, "<line x1=\"%u\" x2=\"%u\" y1=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#ddd\"/><text x=\"%u\" y=\"%.1f\" "
                "text-anchor=\"end\">%g %s</text>\n", px0, px0 + pw, y, y,
                px0 - 4, y + 4, v / unit, unit_name);
    }
    double xstep = nice_step(xmax);
    for (double v = 0; v <= xmax; v += xstep) {
        double x = px0 + v / xmax * pw;
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%u\" y2=\"%u\" "
                "stroke=\"#888\"/><text x=\"%.1f\" y=\"%u\" "
                "text-anchor=\"middle\">%.0f</text>\n", x, x, plot_y + plot_h,
                plot_y + plot_h + 4, x, plot_y + plot_h + 16, v);
    }
    fprintf(f, "<text x=\"%u\" y=\"%u\" text-anchor=\"middle\">operation"
            "</text>\n", px0 + pw / 2, plot_y + plot_h + 32);
    double peak_x = px0 + (double)pp->peak_idx / xmax * pw;
    fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%u\" y2=\"%u\" "
            "stroke=\"#c00\" stroke-dasharray=\"4 3\"/>\n", peak_x, peak_x,
            plot_y, plot_y + plot_h);
    for (int series = 0; series < 2; series++) {
        if (series == 1 && !c->sample_stats)
            break;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" "
                "points=\"", series ? "#f0a030" : "#3a6fb0");
        for (size_t j = 0; j < pp->nsamples; j++) {
            double v = series ? (double)c->samples[j].sys_bytes
                              : (double)pp->live_samples[j];
            double x = px0 + (double)((j + 1) * pp->sample_every) / xmax * pw;
            double y = plot_y + plot_h - v / ytop * plot_h;
            fprintf(f, "%.1f,%.1f ", x, y);
        }
        fprintf(f, "\"/>\n");
    }
    unsigned ly = plot_y + plot_h + 48;
    fprintf(f, "<rect x=\"%u\" y=\"%u\" width=\"12\" height=\"3\" "
            "fill=\"#3a6fb0\"/><text x=\"%u\" y=\"%u\">live requested bytes"
            "</text>\n", px0, ly - 4, px0 + 16, ly);
    if (c->sample_stats)
        fprintf(f, "<rect x=\"%u\" y=\"%u\" width=\"12\" height=\"3\" "
                "fill=\"#f0a030\"/><text x=\"%u\" y=\"%u\">fitalloc heap_bytes"
                " + mapped_bytes</text>\n", px0 + 180, ly - 4, px0 + 196, ly);
    fprintf(f, "<text x=\"%u\" y=\"%u\" fill=\"#c00\">- - peak</text>\n",
            px0 + 460, ly);
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0)
        die(1, "%s: write failed", svg_path);
    unmap_bytes(e, (n + 1) * sizeof *e);
    unmap_bytes(reg, (nreg + 1) * sizeof *reg);
    unmap_bytes(map, (nmapped + 1) * sizeof *map);
    unmap_bytes(px, npx * sizeof *px);
    unmap_bytes(row0, (nreg + 1) * sizeof *row0);
}

/* ------------------------------------------------------------------ */
/* main                                                                 */

static void usage(FILE *f)
{
    fprintf(f,
"usage: replay [options] TRACE        (plain or .xz; '-' = stdin, plain)\n"
"       replay --csv --header         (print only the CSV header)\n"
"Replays an allocation trace against the process's malloc (use LD_PRELOAD\n"
"to pick the allocator).\n"
"  --mode=MODE      mem: one verifying replay, measures peak RSS growth\n"
"                   time: N timed replays (one byte written per block)\n"
"                   both: mem then time, same process (default)\n"
"  -n N             timed replays (default 5)\n"
"  --check          full patterns in the verifying pass (whole blocks)\n"
"  --touch=byte     verifying pass writes one byte per block instead of the\n"
"                   sampled pattern (for comparing footprint methods)\n"
"  --heap-map FILE  SVG heap map at the peak (needs fitalloc_heap_walk)\n"
"  --samples K      points in the heap-map plot (default 500)\n"
"  --rss-every K    exact RSS probe every K ops in the verifying pass\n"
"                   (power of two, default 16)\n"
"  --name NAME      allocator name to report (default: the library that\n"
"                   provides malloc)\n"
"  --csv            print one CSV line;  --header  print the header first\n"
"  --no-fitalloc    do not look up fitalloc's functions\n"
"Exit status: 0 ok, 1 system error, 2 usage/malformed trace, 3 bad memory.\n");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t parse_count(const char *s, const char *what, uint64_t lo,
                            uint64_t hi)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        die(2, "%s: expected a number, got '%s'", what, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        die(2, "%s: expected a number from %" PRIu64 " to %" PRIu64
            ", got '%s'", what, lo, hi, s);
    return v;
}

static void csv_field(const char *s)
{
    /* Names come from file names: quote anything CSV-special. */
    if (strpbrk(s, ",\"\n")) {
        putchar('"');
        for (; *s; s++) {
            if (*s == '"')
                putchar('"');
            putchar(*s);
        }
        putchar('"');
    } else {
        fputs(s, stdout);
    }
}

int main(int argc, char **argv)
{
    const char *path = NULL, *heap_map = NULL, *mode = "both";
    const char *name_opt = NULL;
    bool csv = false, header = false, full_check = false, touch_byte = false;
    bool no_fit = false;
    uint64_t reps = 5, target_samples = 500, rss_every = 16;

    page_size = (size_t)sysconf(_SC_PAGESIZE);
    for (int i = 1; i < argc; i++) {
        if (bench_output_option(argc, argv, &i, &name_opt, &csv, &header))
            continue;
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strncmp(a, "--mode=", 7) == 0) {
            mode = a + 7;
        } else if (strcmp(a, "--mode") == 0 && next) {
            mode = argv[++i];
        } else if (strcmp(a, "-n") == 0 && next) {
            reps = parse_count(argv[++i], "-n", 1, MAX_TIME_REPS);
        } else if (strcmp(a, "--check") == 0) {
            full_check = true;
        } else if (strcmp(a, "--touch=byte") == 0) {
            touch_byte = true;
        } else if (strcmp(a, "--touch=sample") == 0) {
            touch_byte = false;
        } else if (strcmp(a, "--heap-map") == 0 && next) {
            heap_map = argv[++i];
        } else if (strcmp(a, "--samples") == 0 && next) {
            target_samples = parse_count(argv[++i], "--samples", 2, 100000);
        } else if (strcmp(a, "--rss-every") == 0 && next) {
            rss_every = parse_count(argv[++i], "--rss-every", 1, 1u << 30);
            if (rss_every & (rss_every - 1))
                die(2, "--rss-every must be a power of two");
        } else if (strcmp(a, "--no-fitalloc") == 0) {
            no_fit = true;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "replay: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (path) {
            die(2, "only one trace, please (got '%s' and '%s')", path, a);
        } else {
            path = a;
        }
    }
    static const char *const csv_header =
        "trace,allocator,ops,peak_live,peak_op,rss_growth,util,rss_method,"
        "anon_growth,hwm_growth,"
        "ns_op,ns_op_min,ns_op_max,time_reps,fit_heap,fit_mapped,"
        "fit_peak_system,failures,anomalies,verified";
    if (csv && header && !path) {
        puts(csv_header);
        return 0;
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    bool do_mem = strcmp(mode, "mem") == 0 || strcmp(mode, "both") == 0;
    bool do_time = strcmp(mode, "time") == 0 || strcmp(mode, "both") == 0;
    if (!do_mem && !do_time)
        die(2, "--mode must be mem, time or both");
    if (heap_map && !do_mem)
        die(2, "--heap-map needs the verifying pass (--mode=mem or both)");
    if (full_check && touch_byte)
        die(2, "--check and --touch=byte exclude each other");
    if (!no_fit)
        find_fitalloc();
    /* Detect the name even when --name is given: dlsym/dladdr may call
     * malloc, and the heap must be in the same state before every replay
     * (glibc's footprint on sqlite moved by 2% with one allocation less). */
    char alloc_name[64];
    bench_allocator_name(alloc_name, sizeof alloc_name);
    if (name_opt)
        snprintf(alloc_name, sizeof alloc_name, "%s", name_opt);

    /* 1. Parse everything, 2. pre-pass, 3. touch the tables. */
    struct trace t;
    parse_trace(&t, path);
    size_t ptr_bytes = mul_or_die(t.nids, sizeof(unsigned char *));
    size_t size_bytes = mul_or_die(t.nids, sizeof(uint64_t));
    unsigned char **ptr = map_bytes(ptr_bytes);
    uint64_t *size = map_bytes(size_bytes);
    struct prepass pp;
    run_prepass(&t, size, &pp, target_samples);
    memset(size, 0, size_bytes);
    touch_pages(ptr, ptr_bytes);

    struct ctx c;
    memset(&c, 0, sizeof c);
    c.t = &t;
    c.pp = &pp;
    c.ptr = ptr;
    c.size = size;
    c.samples = map_bytes(mul_or_die(pp.nsamples + 1,
                                     sizeof(struct sample_point)));
    touch_pages(c.samples, (pp.nsamples + 1) * sizeof(struct sample_point));
    touch_pages(pp.live_samples, (pp.nsamples + 1) * sizeof(uint64_t));
    struct walk_buf walk = {0};
    if (heap_map && fit_walk_p) {
        /* Entries for the live blocks, as many free ones, regions. */
        walk.cap = (size_t)pp.peak_blocks * 2 + 65536;
        walk.e = map_bytes(mul_or_die(walk.cap, sizeof *walk.e));
        touch_pages(walk.e, walk.cap * sizeof *walk.e);
        c.walk = &walk;
    } else if (heap_map) {
        warn("fitalloc_heap_walk is not available in this process "
             "(allocator: %s): no heap map", alloc_name);
        heap_map = NULL;
    }
    c.sample_stats = heap_map && fit_stats_p;
    c.rss_mask = (size_t)rss_every - 1;

    /* Bring the allocator to its initialised state outside the
     * measurement: every real program has called malloc before its
     * workload, and one-off initialisation is not per-workload footprint. */
    {
        void *volatile w1 = malloc(24);
        void *volatile w2 = calloc(2, 24);
        w1 = realloc(w1, 48);
        void *volatile w3 = memalign(64, 64);
        free(w1);
        free(w2);
        free(w3);
    }

    /* ---- verifying pass: the first replay in this process ----
     *
     * Peak RSS growth = peak RSS during the replay - RSS just before it.
     * Two ways to see the peak:
     *  - VmHWM, reset to the current RSS by writing 5 to clear_refs.  It
     *    sees every spike, but since Linux 6.2 the kernel updates it from
     *    per-CPU approximations of the RSS counters: on this 2-core machine
     *    it was off by up to ~250 KB either way, run to run, which is
     *    5% of a 5 MB trace.
     *  - exact probes: /proc/self/statm is summed exactly on read; it is
     *    read every 16 ops (--rss-every), after a block >= 64 KiB is filled
     *    and before one is freed.  Between two probes RSS can only rise by
     *    what 16 small allocations touch, so the probed peak is within a
     *    few pages of the true one.
     * The exact probes give the reported figure; VmHWM is kept as a check:
     * if it exceeds the probes by more than its error, a spike fell
     * between probes and VmHWM is reported instead (method "hwm"). */
    struct rss_now base = {0, 0};
    struct rss before = {0, 0}, after = {0, 0};
    const char *rss_method = "";
    uint64_t growth = 0, anon_growth = 0, hwm_growth = 0;
    bool hwm_usable = false;
    struct fit_stats end_stats;
    bool have_end_stats = false;
    if (do_mem) {
        bool reset = reset_hwm();
        before = read_rss();
        base = read_statm();
        /* Without the reset, VmHWM still means something if nothing
         * before the replay pushed it above the current RSS. */
        hwm_usable = reset || before.hwm <= before.rss + page_size * 4;
        c.rss_peak = base;
        c.peak_pending = true;
        c.next_sample = pp.nsamples ? pp.sample_every - 1 : SIZE_MAX;
        c.sample_idx = 0;
        update_next_event(&c);
        if (touch_byte)
            replay_byte_events(&c);
        else
            replay_verify(&c, full_check);
        rss_probe(&c);
        after = read_rss();
        have_end_stats = read_fit_stats(&end_stats);
        growth = c.rss_peak.total - base.total;
        anon_growth = c.rss_peak.anon - base.anon;
        rss_method = "probes";
        if (hwm_usable) {
            hwm_growth = after.hwm > before.rss ? after.hwm - before.rss : 0;
            long cpus = sysconf(_SC_NPROCESSORS_ONLN);
            uint64_t tolerance = (uint64_t)(cpus > 0 ? cpus : 1) *
                                     (256u << 10) + growth / 100;
            if (hwm_growth > growth + tolerance) {
                growth = hwm_growth;
                rss_method = "hwm";
            }
        }
        free_leftovers(&c);
    }

    /* ---- timed passes ---- */
    uint64_t times[MAX_TIME_REPS];
    size_t ntimes = 0;
    uint64_t failures = c.failures; /* of the first replay: all are alike */
    if (do_time) {
        for (uint64_t k = 0; k < reps; k++) {
            c.failures = 0;
            uint64_t t0 = bench_now_ns();
            replay_timed(&c);
            uint64_t t1 = bench_now_ns();
            if (!do_mem && k == 0)
                failures = c.failures;
            times[ntimes++] = t1 - t0;
            free_leftovers(&c);
        }
        qsort(times, ntimes, sizeof times[0], cmp_u64);
    }

    /* ---- report ---- */
    double ns_med = 0, ns_min = 0, ns_max = 0;
    if (ntimes) {
        double med = ntimes % 2 ? (double)times[ntimes / 2]
                                : ((double)times[ntimes / 2 - 1] +
                                   (double)times[ntimes / 2]) / 2;
        ns_med = med / (double)t.nops;
        ns_min = (double)times[0] / (double)t.nops;
        ns_max = (double)times[ntimes - 1] / (double)t.nops;
    }
    double util = growth ? (double)pp.peak_live / (double)growth : 0;
    uint64_t anomalies = pp.alloc_over_live + pp.free_of_dead +
                         pp.realloc_of_dead + pp.impossible;
    /* Requests too large to ever succeed were left out of peak live by
     * the pre-pass; any other NULL means the machine ran out of memory. */
    if (failures > pp.impossible)
        warn("%s: %" PRIu64 " allocations returned NULL; peak live assumes "
             "they succeeded", path, failures - pp.impossible);
    if (pp.end_blocks)
        warn("%s: %" PRIu64 " blocks are still live at the end of the trace "
             "(freed after the replay)", path, pp.end_blocks);

    if (csv) {
        if (header)
            puts(csv_header);
        csv_field(t.name);
        putchar(',');
        csv_field(alloc_name);
        printf(",%zu,%" PRIu64 ",%zu,", t.nops, pp.peak_live,
               pp.peak_idx + 1);
        if (do_mem)
            printf("%" PRIu64 ",%.4f,%s,%" PRIu64 ",", growth,
                   growth ? util : 0.0, rss_method, anon_growth);
        else
            printf(",,,,");
        if (do_mem && hwm_usable)
            printf("%" PRIu64 ",", hwm_growth);
        else
            printf(",");
        if (ntimes)
            printf("%.2f,%.2f,%.2f,%zu,", ns_med, ns_min, ns_max, ntimes);
        else
            printf(",,,0,");
        if (c.have_peak_stats)
            printf("%" PRIu64 ",%" PRIu64 ",", c.peak_stats.heap_bytes,
                   c.peak_stats.mapped_bytes);
        else
            printf(",,");
        if (have_end_stats)
            printf("%" PRIu64, end_stats.peak_system_bytes);
        printf(",%" PRIu64 ",%" PRIu64 ",%s\n", failures, anomalies,
               !do_mem ? "no" : touch_byte ? "byte" : full_check ? "full"
                                                                 : "sampled");
    } else {
        char b1[32], b2[32];
        printf("trace        %s (%s)\n", t.name, path);
        printf("allocator    %s\n", alloc_name);
        printf("operations   %zu (%" PRIu32 " ids)\n", t.nops, t.nids);
        printf("peak live    %s (%" PRIu64 " bytes, %" PRIu64 " blocks) "
               "after op %zu\n", fmt_bytes(pp.peak_live, b1, 32),
               pp.peak_live, pp.peak_blocks, pp.peak_idx + 1);
        if (anomalies)
            printf("anomalies    %" PRIu64 " alloc over a live id, %" PRIu64
                   " free of a dead id, %" PRIu64 " realloc of a dead id, %"
                   PRIu64 " impossible requests\n", pp.alloc_over_live,
                   pp.free_of_dead, pp.realloc_of_dead, pp.impossible);
        if (do_mem) {
            printf("rss growth   %s over the first replay (%s, %" PRIu64
                   " probes; rss %s at start)\n", fmt_bytes(growth, b1, 32),
                   rss_method, c.rss_probes, fmt_bytes(base.total, b2, 32));
            printf("             anonymous %s", fmt_bytes(anon_growth, b1, 32));
            if (hwm_usable)
                printf(", VmHWM says %s", fmt_bytes(hwm_growth, b2, 32));
            if (c.rss_at_peak > base.total)
                printf(", %s at the peak-live op",
                       fmt_bytes(c.rss_at_peak - base.total, b2, 32));
            printf("\n");
            if (growth)
                printf("util         %.3f (peak live requested / peak RSS "
                       "growth)\n", util);
            else
                printf("util         n/a (no RSS growth: trace too small)\n");
            printf("verified     %s patterns: ok\n",
                   touch_byte ? "one-byte" : full_check ? "full" : "sampled");
        }
        if (ntimes)
            printf("ns/op        %.2f median of %zu replays (min %.2f, max "
                   "%.2f)\n", ns_med, ntimes, ns_min, ns_max);
        if (c.have_peak_stats) {
            const struct fit_stats *ps = &c.peak_stats;
            printf("fitalloc     at peak: heap %s, mapped %s; peak system "
                   "%s\n", fmt_bytes(ps->heap_bytes, b1, 32),
                   fmt_bytes(ps->mapped_bytes, b2, 32),
                   have_end_stats
                       ? fmt_bytes(end_stats.peak_system_bytes,
                                   (char[32]){0}, 32)
                       : "?");
            /* Where the bytes the allocator holds are, at the peak: the
             * blocks the program holds (block sizes), freed blocks waiting
             * in thread caches, free heap space (the top included; only
             * the part ever written is resident). */
            printf("             in use %s in %" PRIu64 " blocks, cached %s in %"
                   PRIu64 ", free %s in %" PRIu64 " (largest %s)\n",
                   fmt_bytes(ps->in_use_bytes, b1, 32), ps->in_use_blocks,
                   fmt_bytes(ps->cached_bytes, b2, 32), ps->cached_blocks,
                   fmt_bytes(ps->free_bytes, (char[32]){0}, 32), ps->free_blocks,
                   fmt_bytes(ps->largest_free_block, (char[32]){0}, 32));
        }
        if (failures)
            printf("failures     %" PRIu64 " allocations returned NULL (%"
                   PRIu64 " could never succeed)\n", failures, pp.impossible);
    }
    if (heap_map) {
        write_heap_map(heap_map, &c, &walk);
        if (!csv)
            printf("heap map     %s (%zu walk callbacks)\n", heap_map,
                   walk.n);
    }
    fflush(stdout);
    return 0;
}
