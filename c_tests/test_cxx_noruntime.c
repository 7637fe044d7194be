/* test_cxx_noruntime: fitalloc's C++ operators in a process without the C++
 * runtime (a C program). They work as malloc and free; a throwing new that
 * fails has no std::bad_alloc to throw, so it prints one "fitalloc:" line
 * and aborts, while the nothrow form returns NULL. */
#define _GNU_SOURCE
#include "common.h"

#include <dlfcn.h>

/* The operators by their mangled names, as a C++ compiler would call them. */
void *_Znwm(size_t n);
void *_ZnwmRKSt9nothrow_t(size_t n, const void *nothrow);
void *_ZnamSt11align_val_t(size_t n, size_t align);
void _ZdlPv(void *p);
void _ZdaPvSt11align_val_t(void *p, size_t align);

static void failed_new(void *arg)
{
    (void)arg;
    _Znwm(hide_size((size_t)1 << 62));
}

int main(void)
{
    check(dlsym(RTLD_DEFAULT, "_ZSt17__throw_bad_allocv") == NULL, "no C++ runtime in this process", "libstdc++ is loaded");

    struct fitalloc_stats before, after;
    fitalloc_stats(&before);
    void *p = _Znwm(hide_size(100));
    void *q = _ZnamSt11align_val_t(hide_size(100), 256);
    memset(p, 1, 100);
    memset(q, 2, 100);
    int aligned = ((uintptr_t)q % 256) == 0;
    _ZdlPv(p);
    _ZdaPvSt11align_val_t(q, 256);
    fitalloc_stats(&after);
    check(p && q && aligned && after.malloc_calls - before.malloc_calls == 1 &&
              after.memalign_calls - before.memalign_calls == 1 && after.free_calls - before.free_calls == 2,
          "new and delete work without the C++ runtime", "p %p q %p aligned %d", p, q, aligned);

    check(_ZnwmRKSt9nothrow_t(hide_size((size_t)1 << 62), NULL) == NULL, "nothrow new of 2^62 bytes: NULL", "not NULL");

    char err[512];
    int status = run_child_stderr(failed_new, NULL, err, sizeof err, 30);
    const char *want = "fitalloc: operator new(): out of memory for 4611686018427387904 bytes, and no C++ runtime";
    check(aborted_with_one_line(status, err, want, NULL, NULL),
          "failed throwing new without a C++ runtime: one fitalloc: line, then SIGABRT", "status %#x, stderr: %s",
          status, err);
    return tap_done("test_cxx_noruntime");
}
