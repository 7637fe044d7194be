//! The process's singletons: the page map, the heap's region table, the
//! slabs, the heap, and the large-block table, each behind its lock (ranks
//! in [`crate::sync::Rank`]). Every other module reaches them through here,
//! and gives held blocks back to where they came from (a slab or the heap)
//! through [`release_blocks`].

use crate::config;
use crate::block::Block;
use crate::heap::{Heap, HeapParams};
use crate::large::MapTable;
use crate::options::OPT;
use crate::os::Os;
use crate::pagemap::{slab_units, PageMap};
use crate::region::RegionTable;
use crate::slab::{GiveFault, Slabs, CONTAINER_UNITS, SLAB_BYTES};
use crate::tcache::Tcache;
use crate::sync::{Guard, Locked, Rank};
use core::sync::atomic::Ordering::Relaxed;

/// Who owns every address: heap regions and large mappings.
pub static PAGEMAP: PageMap = PageMap::new();

pub static REGIONS: RegionTable = RegionTable::new(&PAGEMAP);

static HEAP: Locked<Heap<Os>> = Locked::new(
    Rank::Heap,
    Heap::new(
        Os,
        &REGIONS,
        HeapParams { trim_threshold: config::DEFAULT_TRIM_THRESHOLD, top_pad: config::DEFAULT_TOP_PAD, page: config::PAGE },
    ),
);

static SLABS: Locked<Slabs> = Locked::new(Rank::Slab, Slabs::new(&PAGEMAP));

static LARGE: Locked<MapTable> = Locked::new(Rank::Large, MapTable::new(&PAGEMAP));

/// Locks the heap for C function `op` (named in its messages).
#[inline]
pub fn heap(op: &'static str) -> Guard<'static, Heap<Os>> {
    let mut h = HEAP.lock();
    h.op = op;
    h
}

/// Locks the slabs.
#[inline]
pub fn slabs() -> Guard<'static, Slabs> {
    SLABS.lock()
}

/// Takes up to `out.len()` blocks of `units` from the slabs thread cache
/// `t` takes from, for C function `op`, making slabs from heap blocks as
/// needed. Returns how many, and
/// whether the heap grew.
pub fn slab_take(t: &Tcache, units: u32, out: &mut [Block], op: &'static str) -> (usize, bool) {
    let mut grew = false;
    let mut s = SLABS.lock();
    // SAFETY: the containers are page-aligned heap blocks of at least
    // CONTAINER_UNITS that the heap hands over for good (region pages are
    // reserved in the page map when the region is added).
    let r = unsafe {
        s.take(units, out, t as *const Tcache as usize, t.slab_cur(units), || {
            let mut h = heap(op);
            let growths = h.growths;
            let c = h.alloc_aligned(SLAB_BYTES, CONTAINER_UNITS);
            grew |= h.growths != growths;
            c
        })
    };
    match r {
        Ok(k) => (k, grew),
        Err(b) => {
            drop(s);
            crate::diag::fatal(op, "corrupted free block (written after free) at", b.payload() as usize)
        }
    }
}

/// Whether held block `b` lies in a slab (looked up by its payload: the
/// header of the block after a slab's container is on the slab's page).
#[inline]
pub fn in_slab(b: Block) -> bool {
    slab_units(PAGEMAP.entry(b.payload() as usize)) != 0
}

/// Gives blocks the program and the caches no longer hold back to where
/// they came from: slab blocks to their slabs (an emptied slab's page back
/// to the heap), the others to the heap. At most 64 at once.
///
/// # Safety
/// Each block must be a used block, held by nobody now, that passed the
/// ownership and tag checks (a block given twice is reported).
pub unsafe fn release_blocks(op: &'static str, blocks: &[Block]) {
    debug_assert!(blocks.len() <= 64);
    // Sorted once: a slab emptied below changes its page's entry.
    let mut slab = 0u64;
    for (i, &b) in blocks.iter().enumerate() {
        slab |= (in_slab(b) as u64) << i;
    }
    if slab != 0 {
        let mut s = SLABS.lock();
        for (i, &b) in blocks.iter().enumerate() {
            if slab & (1 << i) != 0 {
                // SAFETY: forwarded; an emptied slab's container is a used
                // heap block that nothing else holds.
                let r = unsafe { s.give(b, |c| heap(op).free(c)) };
                match r {
                    Ok(()) => {}
                    Err(GiveFault::AlreadyFree) => {
                        drop(s);
                        crate::diag::fatal(op, "double free of", b.payload() as usize)
                    }
                    Err(GiveFault::NotABlock) => {
                        drop(s);
                        crate::diag::fatal(op, "corrupted block (not in its slab) at", b.payload() as usize)
                    }
                }
            }
        }
    }
    if slab.count_ones() as usize != blocks.len() {
        let mut h = heap(op);
        for (i, &b) in blocks.iter().enumerate() {
            if slab & (1 << i) == 0 {
                // SAFETY: forwarded.
                unsafe { h.free(b) };
            }
        }
    }
}

/// Gives up the slabs thread cache `t` takes blocks from (its thread is
/// gone).
pub fn disown_slabs(t: &Tcache) {
    SLABS.lock().disown(t as *const Tcache as usize, t.slab_curs());
}

/// Gives every empty slab's page back to the heap; how many went.
pub fn release_empty_slabs(op: &'static str) -> usize {
    // SAFETY: an empty slab's container is a used heap block nothing holds.
    SLABS.lock().release_empty(|c| unsafe { heap(op).free(c) })
}

/// Locks the large-block table.
#[inline]
pub fn large() -> Guard<'static, MapTable> {
    LARGE.lock()
}

/// Copies the run-time options the heap obeys into it.
pub fn sync_params() {
    let mut h = HEAP.lock();
    h.params.trim_threshold = OPT.trim_threshold.load(Relaxed);
    h.params.top_pad = OPT.top_pad.load(Relaxed);
    h.params.page = OPT.page.load(Relaxed);
}

/// Fork, before: holds the slab, heap and large-block locks (in rank
/// order).
pub fn hold_for_fork() {
    SLABS.hold();
    HEAP.hold();
    LARGE.hold();
}

/// Fork, after: releases them in reverse.
pub fn release_after_fork() {
    LARGE.release_held();
    HEAP.release_held();
    SLABS.release_held();
}
