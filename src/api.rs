//! The C allocation API's semantics, one layer below the exports: errno,
//! overflow, zero sizes, alignment rules and realloc's edge cases, as glibc
//! (2.36) defines them, and the per-call hooks ([`crate::modes`]). The
//! algorithms live in [`crate::alloc`], [`crate::free`] and
//! [`crate::realloc`].
//!
//! Sizes above `PTRDIFF_MAX` fail with `ENOMEM` before any arithmetic, so
//! no rounding below can wrap.

use crate::modes::{self, hardened, hooked};
use crate::tcache::Call;
use crate::trace::Event;

const PTRDIFF_MAX: usize = isize::MAX as usize;

/// Runs one API call with the hooks on: start-up on the process's first
/// calls; under the trace recorder's lock for the whole call (so the trace
/// is a valid serial order), recording what `f` reports; the heap
/// profiler's count of the bytes allocated; then the heap checker when it
/// is due. (A call that frees tells the profiler itself, before the block
/// can be reused: [`crate::profile::forget`].)
#[cold]
#[inline(never)]
fn with_hooks<R>(f: impl FnOnce() -> (R, Event)) -> R {
    if modes::hooks() & modes::START != 0 && crate::init::ensure_init() {
        modes::set(modes::START, false);
    }
    let on = modes::hooks();
    let (result, e) = if on & modes::TRACE != 0 {
        let _serial = crate::trace::lock();
        let (r, e) = f();
        crate::trace::record(e);
        (r, e)
    } else {
        f()
    };
    if on & modes::PROFILE != 0 {
        crate::profile::record(e);
    }
    if on & modes::CHECK != 0 {
        static COUNT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
        if COUNT.fetch_add(1, core::sync::atomic::Ordering::Relaxed).is_multiple_of(modes::check_every()) {
            let problems = crate::check::check_heap(true);
            if problems != 0 {
                crate::diag::fatal("check", "heap checker found problems; count:", problems);
            }
        }
    }
    result
}

/// glibc's `M_PERTURB` (`MALLOC_PERTURB_`), on the hooked route: the byte
/// freed blocks are filled with, 0 when off.
fn perturb_byte() -> u8 {
    if modes::hooks() & modes::PERTURB == 0 {
        return 0;
    }
    crate::options::OPT.perturb.load(core::sync::atomic::Ordering::Relaxed) as u8
}

/// A block handed out for `n` bytes (calloc's excepted): its bytes filled
/// with the complement of the perturb byte, as glibc does, so that a
/// program reading memory it never wrote sees it. Passes `p` through.
fn perturbed(p: *mut u8, n: usize) -> *mut u8 {
    let byte = perturb_byte();
    if byte != 0 && !p.is_null() {
        // SAFETY: a block just handed out for at least `n` bytes.
        unsafe { core::ptr::write_bytes(p, !byte, n) };
    }
    p
}

/// Before `p` (non-null) is freed: its usable bytes filled with the
/// perturb byte. The pointer is resolved first, so misuse is reported
/// before anything is written.
fn perturb_freed(p: *mut u8, func: &'static str) {
    let byte = perturb_byte();
    if byte != 0 {
        let n = crate::pointer::usable_size(p, func);
        // SAFETY: `n` usable bytes of a block the program holds.
        unsafe { core::ptr::write_bytes(p, byte, n) };
    }
}

#[inline]
fn set_errno(e: i32) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

#[inline]
fn enomem() -> *mut u8 {
    set_errno(libc::ENOMEM);
    core::ptr::null_mut()
}

/// Null with errno `ENOMEM` when `p` is null.
#[inline(always)]
fn or_enomem(p: *mut u8) -> *mut u8 {
    if p.is_null() { enomem() } else { p }
}

#[inline(always)]
pub fn malloc(n: usize) -> *mut u8 {
    // One load of the hooks decides both tests.
    let hooks = modes::hooks();
    if hooks != 0 {
        if hooks == modes::PROFILE {
            return malloc_profiled(n);
        }
        return with_hooks(move || {
            let p = if hardened() { sized(n, |n| crate::harden::malloc(n, 16, false)) } else { perturbed(malloc_plain(n), n) };
            (p, Event::Malloc { size: n, ptr: p })
        });
    }
    malloc_plain(n)
}

/// The heap profiler alone takes a route of its own rather than the
/// general (cold, serialising) [`with_hooks`]: the countdown before the
/// call, then the plain call, inlined here; the one call in many that is
/// sampled, and the free of a block that may have been, leave through
/// cold functions. So these bodies are the plain ones plus a few
/// instructions.
#[inline(never)]
fn malloc_profiled(n: usize) -> *mut u8 {
    if crate::profile::due(n) {
        return crate::profile::sampled(n, || malloc_plain(n));
    }
    malloc_plain(n)
}

#[inline(never)]
fn free_profiled(p: *mut u8, func: &'static str, size: usize) {
    if crate::profile::maybe_sampled_nonnull(p) {
        return free_sampled(p, func, size);
    }
    crate::free::free_sized(p, func, size);
}

#[cold]
#[inline(never)]
fn free_sampled(p: *mut u8, func: &'static str, size: usize) {
    crate::profile::forget_sampled(p);
    crate::free::free_sized(p, func, size);
}

#[inline(never)]
fn calloc_profiled(nmemb: usize, size: usize) -> *mut u8 {
    if crate::profile::due(nmemb.saturating_mul(size)) {
        return crate::profile::sampled(nmemb.saturating_mul(size), || calloc_plain(nmemb, size));
    }
    calloc_plain(nmemb, size)
}

#[inline(never)]
fn realloc_profiled(p: *mut u8, n: usize) -> *mut u8 {
    crate::profile::forget(p);
    if crate::profile::due(n) {
        return crate::profile::sampled(n, || realloc_plain(p, n));
    }
    realloc_plain(p, n)
}

/// `alloc` fails sizes above `PTRDIFF_MAX` itself, on its slow path.
#[inline(always)]
fn malloc_plain(n: usize) -> *mut u8 {
    crate::alloc::alloc(n, Call::Malloc, false)
}

#[inline(always)]
pub fn free(p: *mut u8) {
    free_named(p, "free", 0)
}

/// [`free`] for C function `func` (the one its messages name: `free`, or
/// a C++ `operator delete`), of a block the program says holds `size`
/// bytes (0: it does not say; see [`crate::free::free_sized`]).
#[inline(always)]
fn free_named(p: *mut u8, func: &'static str, size: usize) {
    if p.is_null() {
        return;
    }
    // One load of the hooks decides both tests.
    let hooks = modes::hooks();
    if hooks != 0 {
        if hooks == modes::PROFILE {
            return free_profiled(p, func, size);
        }
        return free_hooked(p, func, size);
    }
    crate::free::free_sized(p, func, size);
}

/// [`free_named`] with hooks other than the profiler's. Out of line, so
/// that `free` reaches it by a tail call: built in place, its closure
/// (three words) gave `free`'s hit path a stack frame.
#[cold]
#[inline(never)]
fn free_hooked(p: *mut u8, func: &'static str, size: usize) {
    with_hooks(move || {
        crate::profile::forget(p);
        if hardened() {
            crate::harden::free(p, func);
        } else {
            perturb_freed(p, func);
            crate::free::free_sized(p, func, size);
        }
        ((), Event::Free { ptr: p })
    })
}

pub fn calloc(nmemb: usize, size: usize) -> *mut u8 {
    // One load of the hooks decides both tests.
    let hooks = modes::hooks();
    if hooks != 0 {
        if hooks == modes::PROFILE {
            return calloc_profiled(nmemb, size);
        }
        return with_hooks(|| {
            let p = if hardened() {
                match nmemb.checked_mul(size) {
                    Some(n) => sized(n, |n| crate::harden::malloc(n, 16, true)),
                    None => enomem(),
                }
            } else {
                calloc_plain(nmemb, size)
            };
            (p, Event::Calloc { nmemb, size, ptr: p })
        });
    }
    calloc_plain(nmemb, size)
}

fn calloc_plain(nmemb: usize, size: usize) -> *mut u8 {
    match nmemb.checked_mul(size).filter(|&n| n <= PTRDIFF_MAX) {
        Some(n) => crate::alloc::alloc(n, Call::Calloc, true),
        None => enomem(),
    }
}

/// glibc: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and
/// returns NULL; on failure `p` is untouched.
pub fn realloc(p: *mut u8, n: usize) -> *mut u8 {
    // One load of the hooks decides both tests.
    let hooks = modes::hooks();
    if hooks != 0 {
        if hooks == modes::PROFILE {
            return realloc_profiled(p, n);
        }
        return with_hooks(|| {
            crate::profile::forget(p);
            let q = if hardened() {
                realloc_hardened(p, n)
            } else {
                // realloc(p, 0) frees p: perturbed like a free.
                if n == 0 && !p.is_null() {
                    perturb_freed(p, "realloc");
                }
                realloc_plain(p, n)
            };
            (q, Event::Realloc { old: p, size: n, ptr: q })
        });
    }
    realloc_plain(p, n)
}

/// `f(n)` with C's size rules: `ENOMEM` above `PTRDIFF_MAX` or on failure.
fn sized(n: usize, f: impl FnOnce(usize) -> *mut u8) -> *mut u8 {
    if n > PTRDIFF_MAX { enomem() } else { or_enomem(f(n)) }
}

fn realloc_hardened(p: *mut u8, n: usize) -> *mut u8 {
    if p.is_null() {
        return sized(n, |n| crate::harden::malloc(n, 16, false));
    }
    if n == 0 {
        crate::harden::free(p, "realloc");
        return core::ptr::null_mut();
    }
    sized(n, |n| crate::harden::realloc(p, n))
}

fn realloc_plain(p: *mut u8, n: usize) -> *mut u8 {
    if n > PTRDIFF_MAX {
        return enomem();
    }
    if p.is_null() {
        return crate::alloc::alloc(n, Call::Realloc, false);
    }
    if n == 0 {
        crate::free::free(p, "realloc");
        return core::ptr::null_mut();
    }
    or_enomem(crate::realloc::realloc(p, n))
}

pub fn reallocarray(p: *mut u8, nmemb: usize, size: usize) -> *mut u8 {
    match nmemb.checked_mul(size) {
        Some(n) => realloc(p, n),
        None => enomem(),
    }
}

/// The alignment a request of `n` bytes aligned to `align` (above 16) is
/// served with: rounded up to a power of two; `EINVAL` above
/// `SIZE_MAX / 2 + 1`, `ENOMEM` when the size could not fit with it (the
/// error is the null pointer to return, errno set).
fn aligned_request(align: usize, n: usize) -> Result<usize, *mut u8> {
    if align > usize::MAX / 2 + 1 {
        set_errno(libc::EINVAL);
        return Err(core::ptr::null_mut());
    }
    let align = align.next_power_of_two();
    // As glibc: `n` plus the alignment plus a minimal chunk must stay
    // within PTRDIFF_MAX. Checked, not subtracted: `align` may be 2^63,
    // above PTRDIFF_MAX (a wrap here let such requests through to the
    // allocator, and panicked in debug builds).
    if n.checked_add(align + 32).is_none_or(|total| total > PTRDIFF_MAX) {
        return Err(enomem());
    }
    Ok(align)
}

/// glibc's memalign: alignments up to 16 are malloc; others are rounded up
/// to a power of two; above `SIZE_MAX / 2 + 1` is `EINVAL`.
pub fn memalign(align: usize, n: usize) -> *mut u8 {
    if align <= 16 {
        return malloc(n);
    }
    let align = match aligned_request(align, n) {
        Ok(a) => a,
        Err(null) => return null,
    };
    if hooked() {
        return with_hooks(|| {
            let p = if hardened() {
                or_enomem(crate::harden::malloc(n, align, false))
            } else {
                perturbed(or_enomem(crate::alloc::memalign(align, n)), n)
            };
            (p, Event::Memalign { align, size: n, ptr: p })
        });
    }
    or_enomem(crate::alloc::memalign(align, n))
}

#[cfg(not(any(test, feature = "rust-global")))]
/// C++ `new` (`align == 0`) and `new` with `align_val_t`: `malloc` and
/// `memalign`, except that in the hardened mode the block records that it
/// came from `new` or `new[]` (`kind`), for [`cxx_delete`] to check.
#[inline(always)]
pub fn cxx_new(n: usize, align: usize, kind: crate::harden::Kind) -> *mut u8 {
    // Initialised, with no hooks, hardening or profiler: malloc's own
    // path, with one load of the hooks (through `malloc` and its
    // checks again it took 59 more instructions a `new`/`delete` pair
    // than a `malloc`/`free` pair).
    if modes::hooks() == 0 && align == 0 {
        return malloc_plain(n);
    }
    cxx_new_slow(n, align, kind)
}

#[cfg(not(any(test, feature = "rust-global")))]
/// The first try of a throwing `operator new(size_t)` (and `new[]`):
/// malloc's own path when no hooks are set; null otherwise, or when out of
/// memory, and the caller goes on to the general path with its
/// `new_handler` loop ([`crate::cxxapi::new_loop`]).
pub extern "C" fn cxx_new_plain(n: usize) -> *mut u8 {
    if modes::hooks() == 0 { malloc_plain(n) } else { core::ptr::null_mut() }
}

#[cfg(not(any(test, feature = "rust-global")))]
/// [`cxx_new`] with hooks, an alignment, or before the first call.
#[cold]
#[inline(never)]
fn cxx_new_slow(n: usize, align: usize, kind: crate::harden::Kind) -> *mut u8 {
    // The process's first call reads the environment first, so that a
    // `new[]` that is the first allocation is recorded as one (found by a
    // hostile review: it was sealed as a malloc).
    if modes::hooks() & modes::START != 0 && crate::init::ensure_init() {
        modes::set(modes::START, false);
    }
    if !hardened() {
        return if align == 0 { malloc(n) } else { memalign(align, n) };
    }
    let align = match aligned_request(align.max(16), n) {
        Ok(a) => a,
        Err(null) => return null,
    };
    with_hooks(|| {
        let p = or_enomem(crate::harden::malloc_as(n, align, false, kind));
        let e = if align > 16 { Event::Memalign { align, size: n, ptr: p } } else { Event::Malloc { size: n, ptr: p } };
        (p, e)
    })
}

/// C23's `free_sized(p, size)`: `free`, `size` being what the block was
/// allocated with (anything else is undefined). The hardened mode checks
/// it against the requested size it keeps; otherwise it is not looked at
/// (glibc's `free_sized` ignores it too).
pub fn free_sized(p: *mut u8, size: usize) {
    free_with_size(p, "free_sized", size)
}

/// C23's `free_aligned_sized(p, align, size)`, for a block from
/// `aligned_alloc(align, size)`: as [`free_sized`], and an alignment that
/// is not a power of two, or that `p` does not have, is reported.
pub fn free_aligned_sized(p: *mut u8, align: usize, size: usize) {
    if !p.is_null() && (!align.is_power_of_two() || !(p as usize).is_multiple_of(align)) {
        // The pointer first: one that is not a block of ours, or a freed
        // one, is named as such, not as a wrong alignment.
        if hardened() {
            crate::harden::check_freeable(p, "free_aligned_sized");
        } else {
            crate::pointer::resolve(p, "free_aligned_sized");
        }
        crate::diag::fatal("free_aligned_sized", "an alignment the block does not have, for the block at", p as usize);
    }
    free_with_size(p, "free_aligned_sized", size)
}

fn free_with_size(p: *mut u8, func: &'static str, size: usize) {
    if p.is_null() {
        return;
    }
    if !hardened() {
        return free_named(p, func, size);
    }
    with_hooks(|| {
        crate::profile::forget(p);
        crate::harden::free_sized(p, func, size);
        ((), Event::Free { ptr: p })
    })
}

#[cfg(not(any(test, feature = "rust-global")))]
/// C++ `delete` of `kind` (`New` for `delete`, `NewArray` for `delete[]`),
/// with the size the sized forms pass (0 otherwise): `free`, except that
/// the hardened mode checks both against how the block was allocated.
#[inline(always)]
pub fn cxx_delete(p: *mut u8, kind: crate::harden::Kind, size: Option<usize>) {
    if p.is_null() {
        return;
    }
    let func = if kind == crate::harden::Kind::NewArray { "operator delete[]" } else { "operator delete" };
    // No hooks: free's own path, inlined (as `free` has it).
    if modes::hooks() == 0 {
        return crate::free::free_sized(p, func, size.unwrap_or(0));
    }
    cxx_delete_hooked(p, kind, size, func)
}

#[cfg(not(any(test, feature = "rust-global")))]
/// [`cxx_delete`] with hooks (the hardened mode checks how the block was
/// allocated).
#[cold]
#[inline(never)]
fn cxx_delete_hooked(p: *mut u8, kind: crate::harden::Kind, size: Option<usize>, func: &'static str) {
    if !hardened() {
        return free_named(p, func, size.unwrap_or(0));
    }
    with_hooks(|| {
        crate::profile::forget(p);
        crate::harden::delete(p, func, kind, size);
        ((), Event::Free { ptr: p })
    })
}

/// Returns `EINVAL` (leaving `*out` and errno alone) unless `align` is a
/// power-of-two multiple of `sizeof(void *)`; `ENOMEM` (errno too, as in
/// glibc) when out of memory, leaving `*out` alone.
///
/// # Safety
/// `out` must be valid for a pointer write.
pub unsafe fn posix_memalign(out: *mut *mut u8, align: usize, n: usize) -> i32 {
    let word = core::mem::size_of::<usize>();
    if align == 0 || !align.is_multiple_of(word) || !(align / word).is_power_of_two() {
        return libc::EINVAL;
    }
    let p = memalign(align, n);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller provides a writable `out`.
    unsafe { *out = p };
    0
}

/// glibc 2.36's aligned_alloc is memalign.
pub fn aligned_alloc(align: usize, n: usize) -> *mut u8 {
    memalign(align, n)
}

fn page() -> usize {
    crate::init::ensure_init();
    crate::options::OPT.page.load(core::sync::atomic::Ordering::Relaxed)
}

pub fn valloc(n: usize) -> *mut u8 {
    memalign(page(), n)
}

/// pvalloc rounds the size up to whole pages (one page for 0).
pub fn pvalloc(n: usize) -> *mut u8 {
    let page = page();
    match crate::config::checked_round_up(n, page) {
        Some(r) => memalign(page, r.max(page)),
        None => enomem(),
    }
}

pub fn malloc_usable_size(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    if hardened() {
        return crate::harden::usable_size(p);
    }
    crate::pointer::usable_size(p, "malloc_usable_size")
}

// glibc's mallopt parameter numbers.
pub(crate) const M_MXFAST: i32 = 1;
pub(crate) const M_TRIM_THRESHOLD: i32 = -1;
pub(crate) const M_TOP_PAD: i32 = -2;
pub(crate) const M_MMAP_THRESHOLD: i32 = -3;
pub(crate) const M_MMAP_MAX: i32 = -4;
pub(crate) const M_PERTURB: i32 = -6;

/// mallopt: 1 on success, 0 when glibc would refuse the value.
pub fn mallopt(param: i32, value: i32) -> i32 {
    use crate::options::{set_fixed, set_mmap_threshold, OPT};
    crate::init::ensure_init();
    let v = value as usize;
    let ok = match param {
        M_MXFAST => {
            let ok = (0..=crate::config::MAX_MXFAST as i32).contains(&value);
            if ok {
                OPT.mxfast.store(v, core::sync::atomic::Ordering::Relaxed);
            }
            ok
        }
        M_TRIM_THRESHOLD => {
            set_fixed(&OPT.trim_threshold, v);
            true
        }
        M_TOP_PAD => {
            set_fixed(&OPT.top_pad, v);
            true
        }
        M_MMAP_THRESHOLD => set_mmap_threshold(v),
        M_MMAP_MAX => {
            set_fixed(&OPT.mmap_max, v);
            true
        }
        M_PERTURB => {
            OPT.perturb.store(v & 0xff, core::sync::atomic::Ordering::Relaxed);
            modes::set(modes::PERTURB, v & 0xff != 0);
            true
        }
        // M_CHECK_ACTION (-5), M_ARENA_TEST (-7), M_ARENA_MAX (-8) and
        // unknown numbers: accepted, as glibc does, and without effect here
        // (checks are always on; arenas are chosen at start-up).
        _ => true,
    };
    crate::process::sync_params();
    ok as i32
}

pub fn malloc_trim(pad: usize) -> i32 {
    crate::init::ensure_init();
    crate::trim::trim(pad) as i32
}
