//! `FitAlloc`: fitalloc as a Rust program's `#[global_allocator]`, over
//! [`crate::api`], so the C functions' semantics, hooks (trace, checks,
//! hardened mode) and statistics are shared.
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: fitalloc::FitAlloc = fitalloc::FitAlloc;
//! ```
//!
//! with `fitalloc = { ..., default-features = false, features = ["rust-global"] }`:
//! that feature keeps the C names (`malloc`, `free`, ..., the C++
//! operators) out of the program, so its C code and the C library go on
//! using the C library's malloc, and fitalloc serves only Rust's
//! allocations. (Both allocators can share the program: fitalloc's heap
//! moves to mapped regions when another allocator moves the break.)

use crate::api;
use core::alloc::{GlobalAlloc, Layout};

/// The allocator. Alignments up to 16 are `malloc`, `calloc` and
/// `realloc`; larger ones are `memalign` (and a copy to grow).
#[derive(Clone, Copy, Debug, Default)]
pub struct FitAlloc;

/// Alignment every `malloc` block has.
const MALLOC_ALIGN: usize = 16;

// SAFETY: every method returns memory from fitalloc's heap with the
// layout's size and alignment, or null; `dealloc` and `realloc` receive
// only pointers this allocator returned (GlobalAlloc's contract), which
// is what `free` and `realloc` require.
unsafe impl GlobalAlloc for FitAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            api::malloc(layout.size())
        } else {
            api::memalign(layout.align(), layout.size())
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        api::free(ptr)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            return api::calloc(1, layout.size());
        }
        let p = api::memalign(layout.align(), layout.size());
        if !p.is_null() {
            // SAFETY: `p` holds at least `layout.size()` bytes.
            unsafe { p.write_bytes(0, layout.size()) };
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // new_size is non-zero (the caller's contract), so this never
            // takes realloc's free-on-zero path.
            return api::realloc(ptr, new_size);
        }
        let q = api::memalign(layout.align(), new_size);
        if !q.is_null() {
            // SAFETY: `ptr` holds `layout.size()` bytes and `q` at least
            // `new_size`; they are distinct blocks.
            unsafe { core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size)) };
            api::free(ptr);
        }
        q
    }
}

/// Every statistic now (`struct fitalloc_stats`); never allocates.
pub fn stats() -> crate::stats::FitallocStats {
    crate::stats::FitallocStats::current()
}

/// Walks every block and free list and checks every invariant; prints each
/// problem on stderr and returns their number (0: the heap is sound).
pub fn check_heap() -> usize {
    crate::check::check_heap(true)
}
