// test_cxx_replaced: a program that replaces only the global
// operator new(size_t) and operator delete(void*) (here with a pool of its
// own) must see every delete of its blocks reach its own delete, as with
// the C++ runtime's operators: the compiler emits the sized
// delete(void*, size_t) for `delete p`, and fitalloc's sized form (and its
// nothrow form) call the program's delete(void*) then, not free() (which
// ended in "not allocated by fitalloc": found by a hostile review).
#include <cstdio>
#include <cstdlib>
#include <new>

// What this test is about: a program that does not define the sized form
// (g++ warns that it should).
#pragma GCC diagnostic ignored "-Wsized-deallocation"

alignas(16) static unsigned char pool[1 << 20];
static std::size_t pool_used;
static int news, deletes;

void *operator new(std::size_t n)
{
    void *p = pool + pool_used;
    pool_used += (n + 15) & ~std::size_t(15);
    if (pool_used > sizeof pool)
        std::abort();
    news++;
    return p;
}

void operator delete(void *p) noexcept
{
    if (p != nullptr) {
        if (static_cast<unsigned char *>(p) < pool || static_cast<unsigned char *>(p) >= pool + sizeof pool)
            std::abort();
        deletes++;
    }
}

struct Base {
    virtual ~Base() {}
    int a[10];
};
struct Derived : Base {
    double b[5];
};

static int tap_count, tap_failures;
static void check(bool ok, const char *name)
{
    tap_count++;
    if (!ok)
        tap_failures++;
    std::printf("%sok %d - %s\n", ok ? "" : "not ", tap_count, name);
}

int main()
{
    std::printf("1..4\n");
    for (int i = 0; i < 100; i++) {
        Base *b = i % 2 ? new Derived : new Base;
        delete b; // a sized delete through the virtual destructor
    }
    check(news == 100 && deletes == 100, "delete of the program's blocks (sized, by the compiler) reaches its delete");
    void *p = ::operator new(40);
    ::operator delete(p, 40);
    check(deletes == 101, "an explicit sized delete reaches the program's delete");
    p = ::operator new(40);
    ::operator delete(p, std::nothrow);
    check(deletes == 102, "a nothrow delete reaches the program's delete");
    // malloc is still fitalloc's, and free too.
    void *m = std::malloc(100);
    std::free(m);
    check(m != nullptr, "malloc and free beside the replaced operators");
    std::printf("# test_cxx_replaced: %d passed, %d failed\n", tap_count - tap_failures, tap_failures);
    return tap_failures != 0;
}
