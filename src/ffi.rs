//! The only `#[no_mangle]` functions: the C API under its C names, glibc's
//! `__libc_*` aliases, the prefixed `fitalloc_*` API that C tests call
//! without preloading, and the introspection functions. Each forwards to
//! [`crate::api`], [`crate::stats`] or [`crate::check`]; no logic here.

use crate::api;
use crate::stats::{FitallocStats, Mallinfo, Mallinfo2};
use core::ffi::c_void;

/// Defines one C function under several exported names (not for
/// cbindgen: these names are declared by the C library's own headers).
/// Not exported in unit tests, nor with `rust-global` (a Rust program's
/// global allocator must not take over its C code's malloc).
macro_rules! export {
    ($($name:ident),+ => fn $args:tt -> $ret:ty $body:block) => {
        $(
            #[cfg_attr(not(any(test, feature = "rust-global")), unsafe(no_mangle))]
            #[cfg_attr(feature = "rust-global", allow(dead_code))]
            pub unsafe extern "C" fn $name $args -> $ret $body
        )+
    };
    ($($name:ident),+ => fn $args:tt $body:block) => {
        $(
            #[cfg_attr(not(any(test, feature = "rust-global")), unsafe(no_mangle))]
            #[cfg_attr(feature = "rust-global", allow(dead_code))]
            pub unsafe extern "C" fn $name $args $body
        )+
    };
}

export!(malloc, __libc_malloc => fn(size: usize) -> *mut c_void { api::malloc(size) as *mut c_void });
export!(free, cfree, __libc_free, __libc_cfree => fn(ptr: *mut c_void) { api::free(ptr as *mut u8) });
export!(free_sized => fn(ptr: *mut c_void, size: usize) { api::free_sized(ptr as *mut u8, size) });
export!(free_aligned_sized => fn(ptr: *mut c_void, alignment: usize, size: usize) {
    api::free_aligned_sized(ptr as *mut u8, alignment, size)
});
export!(calloc, __libc_calloc => fn(nmemb: usize, size: usize) -> *mut c_void { api::calloc(nmemb, size) as *mut c_void });
export!(realloc, __libc_realloc => fn(ptr: *mut c_void, size: usize) -> *mut c_void {
    api::realloc(ptr as *mut u8, size) as *mut c_void
});
export!(reallocarray => fn(ptr: *mut c_void, nmemb: usize, size: usize) -> *mut c_void {
    api::reallocarray(ptr as *mut u8, nmemb, size) as *mut c_void
});
export!(memalign, __libc_memalign => fn(alignment: usize, size: usize) -> *mut c_void {
    api::memalign(alignment, size) as *mut c_void
});
export!(posix_memalign => fn(out: *mut *mut c_void, alignment: usize, size: usize) -> i32 {
    // SAFETY: the C caller passes a writable pointer.
    unsafe { api::posix_memalign(out as *mut *mut u8, alignment, size) }
});
export!(aligned_alloc => fn(alignment: usize, size: usize) -> *mut c_void {
    api::aligned_alloc(alignment, size) as *mut c_void
});
export!(valloc, __libc_valloc => fn(size: usize) -> *mut c_void { api::valloc(size) as *mut c_void });
export!(pvalloc, __libc_pvalloc => fn(size: usize) -> *mut c_void { api::pvalloc(size) as *mut c_void });
export!(malloc_usable_size => fn(ptr: *mut c_void) -> usize { api::malloc_usable_size(ptr as *mut u8) });
export!(mallopt, __libc_mallopt => fn(param: i32, value: i32) -> i32 { api::mallopt(param, value) });
export!(malloc_trim => fn(pad: usize) -> i32 { api::malloc_trim(pad) });
export!(mallinfo, __libc_mallinfo => fn() -> Mallinfo { crate::stats::mallinfo() });
export!(mallinfo2 => fn() -> Mallinfo2 { crate::stats::mallinfo2() });
export!(malloc_stats => fn() { crate::stats::malloc_stats() });
export!(malloc_info => fn(options: i32, fp: *mut libc::FILE) -> i32 {
    // SAFETY: the C caller passes a valid stream.
    unsafe { crate::stats::malloc_info(options, fp) }
});

// The prefixed API, written out so that cbindgen declares it.

/// `malloc` without preloading.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_malloc(size: usize) -> *mut c_void {
    api::malloc(size) as *mut c_void
}

/// `free` without preloading.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_free(ptr: *mut c_void) {
    api::free(ptr as *mut u8)
}

/// C23's `free_sized` without preloading: `free`; the hardened mode checks
/// `size` against the block's requested size.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_free_sized(ptr: *mut c_void, size: usize) {
    api::free_sized(ptr as *mut u8, size)
}

/// C23's `free_aligned_sized` without preloading: as `fitalloc_free_sized`,
/// and an alignment `ptr` does not have is reported.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_free_aligned_sized(ptr: *mut c_void, alignment: usize, size: usize) {
    api::free_aligned_sized(ptr as *mut u8, alignment, size)
}

/// `calloc` without preloading.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_calloc(nmemb: usize, size: usize) -> *mut c_void {
    api::calloc(nmemb, size) as *mut c_void
}

/// `realloc` without preloading.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    api::realloc(ptr as *mut u8, size) as *mut c_void
}

/// `reallocarray` without preloading.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_reallocarray(ptr: *mut c_void, nmemb: usize, size: usize) -> *mut c_void {
    api::reallocarray(ptr as *mut u8, nmemb, size) as *mut c_void
}

/// `memalign` without preloading.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_memalign(alignment: usize, size: usize) -> *mut c_void {
    api::memalign(alignment, size) as *mut c_void
}

/// `posix_memalign` without preloading.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fitalloc_posix_memalign(out: *mut *mut c_void, alignment: usize, size: usize) -> i32 {
    // SAFETY: forwarded to the caller.
    unsafe { api::posix_memalign(out as *mut *mut u8, alignment, size) }
}

/// `aligned_alloc` without preloading.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_aligned_alloc(alignment: usize, size: usize) -> *mut c_void {
    api::aligned_alloc(alignment, size) as *mut c_void
}

/// `valloc` without preloading.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_valloc(size: usize) -> *mut c_void {
    api::valloc(size) as *mut c_void
}

/// `pvalloc` without preloading.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_pvalloc(size: usize) -> *mut c_void {
    api::pvalloc(size) as *mut c_void
}

/// `malloc_usable_size` without preloading.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_malloc_usable_size(ptr: *mut c_void) -> usize {
    api::malloc_usable_size(ptr as *mut u8)
}

/// Walks every block and free list and checks every invariant; prints each
/// problem on stderr and returns their number (0: the heap is sound).
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_check_heap() -> usize {
    crate::check::check_heap(true)
}

/// Fills `*out` with every statistic. Never allocates. Writes the whole
/// `struct fitalloc_stats` of this library's version (`out->size` says how
/// big): a program that may run with a newer library than the header it
/// was built with calls [`fitalloc_stats_sized`] instead.
///
/// # Safety
/// `out` must point to a writable `struct fitalloc_stats` of this version.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fitalloc_stats(out: *mut FitallocStats) {
    if !out.is_null() {
        // SAFETY: the caller passes a writable struct.
        unsafe { out.write(FitallocStats::current()) };
    }
}

/// Fills the first `size` bytes of `*out` (at most the whole struct) with
/// the statistics, for a caller built against any version's header: pass
/// `sizeof(struct fitalloc_stats)` as the caller knows it. Fields past
/// `size` are not written; `out->size` (when it fits) says how big the
/// library's struct is. Never allocates.
///
/// # Safety
/// `out` must point to `size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fitalloc_stats_sized(out: *mut FitallocStats, size: usize) {
    if out.is_null() {
        return;
    }
    let s = FitallocStats::current();
    let n = size.min(core::mem::size_of::<FitallocStats>());
    // SAFETY: the caller gives `size` writable bytes at `out`; `n` is at
    // most that and at most the struct's size.
    unsafe { core::ptr::copy_nonoverlapping(&s as *const FitallocStats as *const u8, out as *mut u8, n) };
}

/// Prints the statistics report on stderr.
#[unsafe(no_mangle)]
pub extern "C" fn fitalloc_print_stats() {
    crate::stats::print_report(2);
}

/// `fitalloc_heap_walk` kind: a heap region (`addr` = start, `size` = length).
pub const FITALLOC_WALK_REGION: u32 = 0;
/// `fitalloc_heap_walk` kind: a block the program holds (`addr` = block start).
pub const FITALLOC_WALK_USED: u32 = 1;
/// `fitalloc_heap_walk` kind: a free block (in the free lists, or the top).
pub const FITALLOC_WALK_FREE: u32 = 2;
/// `fitalloc_heap_walk` kind: a freed block waiting in a thread cache.
pub const FITALLOC_WALK_CACHED: u32 = 3;
/// `fitalloc_heap_walk` kind: a large block's own mapping (`addr` = mapping).
pub const FITALLOC_WALK_MAPPED: u32 = 4;

const _: () = assert!(
    FITALLOC_WALK_REGION == crate::check::WALK_REGION
        && FITALLOC_WALK_USED == crate::check::WALK_USED
        && FITALLOC_WALK_FREE == crate::check::WALK_FREE
        && FITALLOC_WALK_CACHED == crate::check::WALK_CACHED
        && FITALLOC_WALK_MAPPED == crate::check::WALK_MAPPED
);

/// Called for each region, block and mapping by [`fitalloc_heap_walk`].
pub type FitallocWalkFn = Option<unsafe extern "C" fn(ctx: *mut c_void, addr: usize, size: u64, kind: u32)>;

/// Calls `f(ctx, addr, size, kind)` for every region, block and mapping
/// (`kind` is one of `FITALLOC_WALK_*`). Runs with the heap locked: `f`
/// must not allocate or free. Returns the number of calls.
///
/// # Safety
/// `f` must be safe to call with `ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fitalloc_heap_walk(f: FitallocWalkFn, ctx: *mut c_void) -> usize {
    let Some(f) = f else { return 0 };
    // SAFETY: forwarded to the caller.
    crate::check::walk(|addr, size, kind| unsafe { f(ctx, addr, size, kind) })
}

/// Writes the heap profile now (`FITALLOC_PROFILE`): to `path`, or to the
/// profile's own file when `path` is NULL. Returns 0, or -1 when the
/// process is not profiling or the file cannot be written.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fitalloc_profile_dump(path: *const libc::c_char) -> i32 {
    // SAFETY: forwarded to the caller.
    unsafe { crate::profile::dump_to_path(path) }
}

/// Runs at exit: statistics when asked for, the heap profile, and the end
/// of a trace. The
/// heap itself is never torn down: other destructors may still free.
extern "C" fn at_exit() {
    crate::stats::at_exit();
    crate::profile::finish();
    crate::trace::finish();
}

#[used]
#[unsafe(link_section = ".fini_array")]
static AT_EXIT: extern "C" fn() = at_exit;
