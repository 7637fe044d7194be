// test_cxx: the C++ allocation operators exported by libfitalloc.so.
//
// Linked with -lfitalloc before libstdc++ (g++ adds -lstdc++ last), so the
// program's operator new/delete resolve to fitalloc's. Checks that every
// one of the 20 operators is fitalloc's (dladdr of the symbol the program
// binds to), that calls through each form are served by it (call counters,
// heap walk), alignment of the align_val_t forms, new(0), nothrow forms
// returning NULL, std::bad_alloc thrown and caught, the new-handler loop,
// and an exception thrown by a new-handler reaching the program.
// TAP output, like the C tests.
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "fitalloc.h"

static int tap_count, tap_failures;

static bool check(bool cond, const char *name, const std::string &detail = "")
{
    size_t problems = fitalloc_check_heap();
    bool pass = cond && problems == 0;
    tap_count++;
    if (pass) {
        std::printf("ok %d - %s\n", tap_count, name);
    } else {
        tap_failures++;
        std::printf("not ok %d - %s: %s%s\n", tap_count, name, cond ? "" : detail.c_str(),
                    problems ? " (fitalloc_check_heap reported problems)" : "");
    }
    std::fflush(stdout);
    return pass;
}

// Keeps sizes and pointers opaque to the optimizer (it may elide a
// new/delete pair, or warn about a constant absurd size).
static size_t hide(size_t n)
{
    __asm__ volatile("" : "+r"(n));
    return n;
}

static void *hide_ptr(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

static struct fitalloc_stats stats()
{
    struct fitalloc_stats s;
    fitalloc_stats(&s);
    return s;
}

// The library a function address belongs to.
static std::string owner(void *addr)
{
    Dl_info info;
    if (!dladdr(addr, &info) || !info.dli_fname)
        return "(unknown)";
    return info.dli_fname;
}

static bool is_fitalloc(void *addr) { return owner(addr).find("libfitalloc") != std::string::npos; }

// Is p inside a block the heap walk reports as held by the program?
struct walk_find {
    uintptr_t p;
    bool found;
};

static void walk_cb(void *ctx, uintptr_t addr, uint64_t size, uint32_t kind)
{
    auto *w = static_cast<walk_find *>(ctx);
    if ((kind == FITALLOC_WALK_USED || kind == FITALLOC_WALK_MAPPED) && w->p >= addr && w->p < addr + size)
        w->found = true;
}

static bool held_by_fitalloc(void *p)
{
    walk_find w{reinterpret_cast<uintptr_t>(p), false};
    fitalloc_heap_walk(walk_cb, &w);
    return w.found;
}

static void test_symbols()
{
    // Every operator, by the exact overload: the address the program binds to.
    struct {
        const char *name;
        void *addr;
    } ops[] = {
        {"_Znwm", (void *)static_cast<void *(*)(size_t)>(&::operator new)},
        {"_Znam", (void *)static_cast<void *(*)(size_t)>(&::operator new[])},
        {"_ZnwmRKSt9nothrow_t", (void *)static_cast<void *(*)(size_t, const std::nothrow_t &) noexcept>(&::operator new)},
        {"_ZnamRKSt9nothrow_t", (void *)static_cast<void *(*)(size_t, const std::nothrow_t &) noexcept>(&::operator new[])},
        {"_ZnwmSt11align_val_t", (void *)static_cast<void *(*)(size_t, std::align_val_t)>(&::operator new)},
        {"_ZnamSt11align_val_t", (void *)static_cast<void *(*)(size_t, std::align_val_t)>(&::operator new[])},
        {"_ZnwmSt11align_val_tRKSt9nothrow_t",
         (void *)static_cast<void *(*)(size_t, std::align_val_t, const std::nothrow_t &) noexcept>(&::operator new)},
        {"_ZnamSt11align_val_tRKSt9nothrow_t",
         (void *)static_cast<void *(*)(size_t, std::align_val_t, const std::nothrow_t &) noexcept>(&::operator new[])},
        {"_ZdlPv", (void *)static_cast<void (*)(void *) noexcept>(&::operator delete)},
        {"_ZdaPv", (void *)static_cast<void (*)(void *) noexcept>(&::operator delete[])},
        {"_ZdlPvm", (void *)static_cast<void (*)(void *, size_t) noexcept>(&::operator delete)},
        {"_ZdaPvm", (void *)static_cast<void (*)(void *, size_t) noexcept>(&::operator delete[])},
        {"_ZdlPvSt11align_val_t", (void *)static_cast<void (*)(void *, std::align_val_t) noexcept>(&::operator delete)},
        {"_ZdaPvSt11align_val_t", (void *)static_cast<void (*)(void *, std::align_val_t) noexcept>(&::operator delete[])},
        {"_ZdlPvmSt11align_val_t",
         (void *)static_cast<void (*)(void *, size_t, std::align_val_t) noexcept>(&::operator delete)},
        {"_ZdaPvmSt11align_val_t",
         (void *)static_cast<void (*)(void *, size_t, std::align_val_t) noexcept>(&::operator delete[])},
        {"_ZdlPvRKSt9nothrow_t", (void *)static_cast<void (*)(void *, const std::nothrow_t &) noexcept>(&::operator delete)},
        {"_ZdaPvRKSt9nothrow_t",
         (void *)static_cast<void (*)(void *, const std::nothrow_t &) noexcept>(&::operator delete[])},
        {"_ZdlPvSt11align_val_tRKSt9nothrow_t",
         (void *)static_cast<void (*)(void *, std::align_val_t, const std::nothrow_t &) noexcept>(&::operator delete)},
        {"_ZdaPvSt11align_val_tRKSt9nothrow_t",
         (void *)static_cast<void (*)(void *, std::align_val_t, const std::nothrow_t &) noexcept>(&::operator delete[])},
    };
    std::string wrong;
    for (auto &op : ops) {
        void *sym = dlsym(RTLD_DEFAULT, op.name);
        if (!is_fitalloc(op.addr) || sym != op.addr)
            wrong += std::string(" ") + op.name + " -> " + owner(op.addr);
    }
    check(wrong.empty(), "all 20 operators the program calls are fitalloc's", "not fitalloc's:" + wrong);
}

// Each new form: served by fitalloc (one malloc or memalign call, a block
// the heap walk reports as held), freed by the matching delete (one free).
static void test_forms()
{
    const size_t n = hide(200);
    const std::align_val_t al{64};
    struct form {
        const char *name;
        bool aligned;
        void *(*make)(size_t);
        void (*drop)(void *, size_t);
    } forms[] = {
        {"new / delete", false, [](size_t s) { return ::operator new(s); }, [](void *p, size_t) { ::operator delete(p); }},
        {"new[] / delete[]", false, [](size_t s) { return ::operator new[](s); },
         [](void *p, size_t) { ::operator delete[](p); }},
        {"new / sized delete", false, [](size_t s) { return ::operator new(s); },
         [](void *p, size_t s) { ::operator delete(p, s); }},
        {"new[] / sized delete[]", false, [](size_t s) { return ::operator new[](s); },
         [](void *p, size_t s) { ::operator delete[](p, s); }},
        {"nothrow new / nothrow delete", false, [](size_t s) { return ::operator new(s, std::nothrow); },
         [](void *p, size_t) { ::operator delete(p, std::nothrow); }},
        {"nothrow new[] / nothrow delete[]", false, [](size_t s) { return ::operator new[](s, std::nothrow); },
         [](void *p, size_t) { ::operator delete[](p, std::nothrow); }},
        {"aligned new / aligned delete", true, [](size_t s) { return ::operator new(s, std::align_val_t{64}); },
         [](void *p, size_t) { ::operator delete(p, std::align_val_t{64}); }},
        {"aligned new[] / aligned delete[]", true, [](size_t s) { return ::operator new[](s, std::align_val_t{64}); },
         [](void *p, size_t) { ::operator delete[](p, std::align_val_t{64}); }},
        {"aligned new / sized aligned delete", true, [](size_t s) { return ::operator new(s, std::align_val_t{64}); },
         [](void *p, size_t s) { ::operator delete(p, s, std::align_val_t{64}); }},
        {"aligned new[] / sized aligned delete[]", true,
         [](size_t s) { return ::operator new[](s, std::align_val_t{64}); },
         [](void *p, size_t s) { ::operator delete[](p, s, std::align_val_t{64}); }},
        {"aligned nothrow new / aligned nothrow delete", true,
         [](size_t s) { return ::operator new(s, std::align_val_t{64}, std::nothrow); },
         [](void *p, size_t) { ::operator delete(p, std::align_val_t{64}, std::nothrow); }},
        {"aligned nothrow new[] / aligned nothrow delete[]", true,
         [](size_t s) { return ::operator new[](s, std::align_val_t{64}, std::nothrow); },
         [](void *p, size_t) { ::operator delete[](p, std::align_val_t{64}, std::nothrow); }},
    };
    (void)al;
    for (auto &f : forms) {
        auto before = stats();
        void *p = hide_ptr(f.make(n));
        auto mid = stats();
        bool held = p && held_by_fitalloc(p);
        bool usable = p && fitalloc_malloc_usable_size(p) >= n;
        std::memset(p, 0x5a, n);
        f.drop(p, n);
        auto after = stats();
        uint64_t allocs = (mid.malloc_calls - before.malloc_calls) + (mid.memalign_calls - before.memalign_calls);
        uint64_t counted = f.aligned ? mid.memalign_calls - before.memalign_calls : mid.malloc_calls - before.malloc_calls;
        uint64_t frees = after.free_calls - mid.free_calls;
        bool aligned_ok = !f.aligned || reinterpret_cast<uintptr_t>(p) % 64 == 0;
        check(held && usable && allocs == 1 && counted == 1 && frees == 1 && aligned_ok, f.name,
              "held " + std::to_string(held) + ", usable " + std::to_string(usable) + ", allocation calls " +
                  std::to_string(allocs) + " (of the expected kind " + std::to_string(counted) + "), free calls " +
                  std::to_string(frees) + ", aligned " + std::to_string(aligned_ok));
    }
}

struct alignas(256) Wide {
    char bytes[300];
};

static void test_alignment()
{
    std::string bad;
    for (size_t align = 1; align <= (size_t(1) << 20); align <<= 1) {
        for (size_t n : {size_t(1), size_t(100), size_t(5000), size_t(300000)}) {
            void *p = ::operator new(hide(n), std::align_val_t(align));
            void *q = ::operator new[](hide(n), std::align_val_t(align), std::nothrow);
            if (reinterpret_cast<uintptr_t>(p) % align || reinterpret_cast<uintptr_t>(q) % align || !q)
                bad += " " + std::to_string(align) + "/" + std::to_string(n);
            std::memset(p, 1, n);
            std::memset(q, 2, n);
            ::operator delete(p, n, std::align_val_t(align));
            ::operator delete[](q, std::align_val_t(align), std::nothrow);
        }
    }
    check(bad.empty(), "align_val_t forms: alignments 1 .. 1 MiB, sizes 1 .. 300000", "misaligned:" + bad);

    Wide *w = new Wide[3];
    Wide *one = new Wide;
    bool ok = reinterpret_cast<uintptr_t>(w) % 256 == 0 && reinterpret_cast<uintptr_t>(one) % 256 == 0 &&
              held_by_fitalloc(w) && held_by_fitalloc(one);
    delete one;
    delete[] w;
    check(ok, "new of an alignas(256) type: aligned, served by fitalloc");

    std::vector<std::string> v;
    for (int i = 0; i < 1000; i++)
        v.push_back(std::string(size_t(i % 97 + 20), char('a' + i % 26)));
    check(held_by_fitalloc(v.data()) && held_by_fitalloc(&v[500][0]) && v[999].size() == 999 % 97 + 20,
          "std::vector of std::string (libstdc++'s own calls) served by fitalloc");
}

static void test_zero()
{
    void *a = ::operator new(hide(0));
    void *b = ::operator new(hide(0));
    void *c = ::operator new[](hide(0));
    check(a && b && c && a != b && a != c && b != c && held_by_fitalloc(a), "new(0): unique non-null pointers");
    ::operator delete(a);
    ::operator delete(b);
    ::operator delete[](c);
}

static int handler_calls;

static void counting_handler()
{
    // Gives up on the third call: the next failure throws bad_alloc.
    if (++handler_calls == 3)
        std::set_new_handler(nullptr);
}

struct handler_error : std::bad_alloc {
    const char *what() const noexcept override { return "thrown by the new-handler"; }
};

static void throwing_handler() { throw handler_error(); }

static void test_failure()
{
    const size_t absurd = hide(size_t(1) << 62);

    std::set_new_handler(nullptr);
    bool threw = false;
    try {
        void *p = ::operator new(absurd);
        ::operator delete(hide_ptr(p));
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw, "new of 2^62 bytes throws std::bad_alloc, caught by the program");

    threw = false;
    try {
        int *p = new int[hide(size_t(1) << 60)];
        delete[] static_cast<int *>(hide_ptr(p));
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw, "new int[2^60] throws std::bad_alloc");

    threw = false;
    try {
        void *p = ::operator new[](absurd, std::align_val_t(128));
        ::operator delete[](hide_ptr(p), std::align_val_t(128));
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw, "aligned new[] of 2^62 bytes throws std::bad_alloc");

    handler_calls = 0;
    std::set_new_handler(counting_handler);
    threw = false;
    try {
        void *p = ::operator new(absurd);
        ::operator delete(hide_ptr(p));
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw && handler_calls == 3, "the new-handler is called until it gives up, then bad_alloc",
          "handler calls " + std::to_string(handler_calls) + ", threw " + std::to_string(threw));

    std::set_new_handler(throwing_handler);
    std::string what;
    try {
        void *p = ::operator new(absurd, std::align_val_t(64));
        ::operator delete(hide_ptr(p), std::align_val_t(64));
    } catch (const handler_error &e) {
        what = e.what();
    } catch (...) {
        what = "another exception";
    }
    check(what == "thrown by the new-handler", "an exception thrown by the new-handler reaches the program", what);

    // nothrow forms: the new-handler is called until it gives up (three
    // calls, in the first of them), then NULL, as libstdc++ does.
    handler_calls = 0;
    std::set_new_handler(counting_handler);
    void *a = ::operator new(absurd, std::nothrow);
    void *b = ::operator new[](absurd, std::nothrow);
    void *c = ::operator new(absurd, std::align_val_t(64), std::nothrow);
    void *d = ::operator new[](absurd, std::align_val_t(64), std::nothrow);
    check(!a && !b && !c && !d && handler_calls == 3,
          "nothrow forms of 2^62 bytes: the new-handler until it gives up, then NULL",
          "handler calls " + std::to_string(handler_calls));
    // A new-handler that throws: the nothrow forms still return NULL.
    std::set_new_handler(throwing_handler);
    void *e = ::operator new(absurd, std::nothrow);
    void *f = ::operator new[](absurd, std::align_val_t(64), std::nothrow);
    std::set_new_handler(nullptr);
    check(!e && !f, "nothrow forms return NULL when the new-handler throws");
    // An alignment that is not a power of two: bad_alloc at once (no
    // handler call), NULL from the nothrow form.
    handler_calls = 0;
    std::set_new_handler(counting_handler);
    bool odd_threw = false;
    try {
        void *p = ::operator new(16, std::align_val_t(48));
        ::operator delete(hide_ptr(p), std::align_val_t(48));
    } catch (const std::bad_alloc &) {
        odd_threw = true;
    }
    void *g = ::operator new(16, std::align_val_t(48), std::nothrow);
    std::set_new_handler(nullptr);
    check(odd_threw && !g && handler_calls == 0, "an alignment of 48: bad_alloc, or NULL, without the new-handler",
          "threw " + std::to_string(odd_threw) + ", handler calls " + std::to_string(handler_calls));
    // align_val_t(0) is no power of two either (libstdc++ refuses it).
    handler_calls = 0;
    std::set_new_handler(counting_handler);
    bool zero_threw = false, zero_array_threw = false;
    try {
        void *p = ::operator new(16, std::align_val_t(0));
        ::operator delete(hide_ptr(p));
    } catch (const std::bad_alloc &) {
        zero_threw = true;
    }
    try {
        void *p = ::operator new[](16, std::align_val_t(0));
        ::operator delete[](hide_ptr(p));
    } catch (const std::bad_alloc &) {
        zero_array_threw = true;
    }
    void *z = ::operator new(16, std::align_val_t(0), std::nothrow);
    void *za = ::operator new[](16, std::align_val_t(0), std::nothrow);
    std::set_new_handler(nullptr);
    check(zero_threw && zero_array_threw && !z && !za && handler_calls == 0,
          "an alignment of 0: bad_alloc, or NULL, without the new-handler",
          "threw " + std::to_string(zero_threw) + "/" + std::to_string(zero_array_threw) + ", handler calls " +
              std::to_string(handler_calls));
    std::set_new_handler(nullptr);

    // The heap is usable afterwards.
    auto *s = new std::string(1000, 'x');
    check(held_by_fitalloc(&(*s)[0]) && (*s)[999] == 'x', "allocation works after the failures");
    delete s;
}

int main()
{
    test_symbols();
    test_forms();
    test_alignment();
    test_zero();
    test_failure();
    std::printf("1..%d\n# test_cxx: %d passed, %d failed\n", tap_count, tap_count - tap_failures, tap_failures);
    return tap_failures == 0 ? 0 : 1;
}
