//! The process's singletons: the page map, the heap's region table, the
//! heap, and the large-block table, each behind its lock (ranks in
//! [`crate::sync::Rank`]). Every other module reaches them through here.

use crate::config;
use crate::heap::{Heap, HeapParams};
use crate::large::MapTable;
use crate::options::OPT;
use crate::os::Os;
use crate::pagemap::PageMap;
use crate::region::RegionTable;
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

static LARGE: Locked<MapTable> = Locked::new(Rank::Large, MapTable::new(&PAGEMAP));

/// Locks the heap for C function `op` (named in its messages).
#[inline]
pub fn heap(op: &'static str) -> Guard<'static, Heap<Os>> {
    let mut h = HEAP.lock();
    h.op = op;
    h
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

/// Fork, before: holds the heap and large-block locks (in rank order).
pub fn hold_for_fork() {
    HEAP.hold();
    LARGE.hold();
}

/// Fork, after: releases them in reverse.
pub fn release_after_fork() {
    LARGE.release_held();
    HEAP.release_held();
}
