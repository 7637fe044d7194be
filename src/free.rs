//! The free path.
//!
//! - A heap block of at most 1 KiB on a thread with a cache: checked (page
//!   map, tag, cache mark), then pushed on the cache ([`free`], inline). A
//!   full list first moves half of itself to the heap
//!   ([`free_heap_block`]).
//! - Everything else: [`free_slow`] resolves the pointer
//!   ([`crate::pointer`]), then gives a heap block to the heap under its
//!   lock, or unmaps a large block.

use crate::block::Block;
use crate::config::{MAX_HEAP_REQUEST, MIN_UNITS, TCACHE_MAX_UNITS};
use crate::diag;
use crate::options::OPT;
use crate::pagemap::interior_region_entry;
use crate::pointer::{self, Held, Ptr};
use crate::process::{heap, large, PAGEMAP};
use crate::registry::{count, my_cache};
use crate::tcache::{self, Call, Tcache};
use core::sync::atomic::Ordering::Relaxed;

/// Frees `p` (non-null) for C function `func`.
#[inline(always)]
pub fn free(p: *mut u8, func: &'static str) {
    let b = Block::from_payload(p);
    if let Some(t) = my_cache()
        && Block::is_header_position(b.addr())
        && interior_region_entry(PAGEMAP.entry(b.addr()))
    {
        tcache::add(&t.counters.calls[Call::Free as usize], 1);
        // SAFETY: `b` is a header position on a page wholly inside a heap
        // region; the payload words are read only for a block of a valid
        // used header and a cacheable size (so not the epilogue, whose
        // size is 0).
        unsafe {
            let h = b.header();
            let units = crate::block::used_units(h);
            let cacheable = units.wrapping_sub(MIN_UNITS) <= TCACHE_MAX_UNITS - MIN_UNITS;
            let checked = if cfg!(feature = "unchecked-fast-path") {
                h & crate::block::USED != 0
            } else {
                crate::block::is_used_header(b.addr(), h) && cacheable && !tcache::is_marked(b)
            };
            if checked && cacheable && t.has_room(units) {
                t.push(b, units);
                return;
            }
        }
        return free_heap_block(pointer::held(b, func), Some(t), func);
    }
    free_slow(p, func)
}

#[cold]
#[inline(never)]
fn free_slow(p: *mut u8, func: &'static str) {
    let t = my_cache();
    if t.is_none() {
        count(None, Call::Free, 0);
    }
    match pointer::resolve(p, func) {
        Ptr::Heap(b) => free_heap_block(b, t, func),
        Ptr::Large(_) => free_large(p as usize, func),
    }
}

/// Frees held heap block `b` that did not fit in the cache.
#[inline(never)]
fn free_heap_block(b: Held, t: Option<&Tcache>, func: &'static str) {
    let b = b.block();
    // SAFETY: a held block's header is valid. Its size field, not its size:
    // a big block (crate::block's big form) shrunk below the caches' limit
    // keeps a marker above it there, and must go back to the heap.
    let units = crate::block::used_units(unsafe { b.header() });
    let mut h = heap(func);
    if let Some(t) = t
        && units <= TCACHE_MAX_UNITS
    {
        // The list for this size is full: move half of it to the heap
        // under this one lock, then cache the block.
        let half = t.count(units).div_ceil(2);
        // SAFETY: this thread's cache, whose blocks are held heap blocks.
        let r = unsafe { t.drain(units, half, |c| h.free(c)) };
        if let Err(tcache::CacheFault::Corrupted(a)) = r {
            drop(h);
            diag::fatal(func, "corrupted thread cache at", a);
        }
        if t.has_room(units) {
            drop(h);
            // SAFETY: this thread's cache, with room; `b` is held.
            unsafe { t.push(b, units) };
            return;
        }
    }
    // SAFETY: `b` is a held block of this heap.
    unsafe { h.free(b) };
    drop(h);
    crate::trim::maybe_decay();
}

/// Frees the large block whose payload is `a` (resolved by the caller; a
/// racing second free is caught here, under the table's lock).
pub fn free_large(a: usize, func: &'static str) {
    let now = crate::os::now_ms();
    let (evicted, size) = {
        let mut l = large();
        let Some(m) = l.remove(a) else {
            drop(l);
            diag::fatal(func, pointer::double_free_text(func), a)
        };
        (l.retain(m, now), m.base + m.len - a)
    };
    evicted.unmap();
    raise_mmap_threshold(size);
    crate::trim::maybe_decay();
}

/// glibc's dynamic threshold: after a mapped block of `size` is freed,
/// blocks up to that size come from the heap (unless the program chose
/// thresholds itself).
fn raise_mmap_threshold(size: usize) {
    if OPT.dynamic_threshold.load(Relaxed)
        && size > OPT.mmap_threshold.load(Relaxed)
        && size <= MAX_HEAP_REQUEST
    {
        OPT.mmap_threshold.store(size, Relaxed);
        OPT.trim_threshold.store(2 * size, Relaxed);
        crate::process::sync_params();
    }
}
