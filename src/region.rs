//! The table of heap regions: which address ranges hold boundary-tagged
//! blocks, as many as the heap needs.
//!
//! Every pointer from the program, and every free-list link read from heap
//! memory, is checked here before any header is read: a header may sit only
//! between a region's first block and its epilogue, inclusive
//! ([`RegionTable::holds_header`]). The page map answers that in two loads
//! for every page wholly inside a region (regions start on a page
//! boundary, so with a page-aligned end that is every page); a page the
//! region only partly covers is an edge, where the region's bounds answer.
//! The epilogue is a header position too: its used header of size 0 is
//! refused by every reader, which checks a block's size before reading its
//! payload.
//!
//! Regions are added under their heap's lock and the table's own adding
//! lock (heaps of several arenas add regions concurrently), their ends
//! moved only under their heap's lock, and read without either by `free`
//! on any thread: the fields are atomics, and a
//! region, once recorded, is never unmapped (only trimmed at its end, which
//! never moves below a block the program holds).
//!
//! Descriptors live in chunks mapped from the system on demand, so the
//! number of regions has no fixed limit (up to [`MAX_REGIONS`]).

use crate::block::Block;
use crate::filed::FiledMap;
use crate::pagemap::{interior_region_entry, Owner, PageMap, MAX_ID};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering::*};

/// Where a region's memory came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RegionKind {
    Brk,
    Mapped,
}

/// One region: `[start, end)`, and its fresh mark (no byte at or above
/// `fresh`, below the epilogue, was written since the system gave it).
struct Desc {
    start: AtomicUsize,
    end: AtomicUsize,
    /// The highest `end` the region ever had (the break moves back down
    /// when the top is trimmed).
    peak_end: AtomicUsize,
    fresh: AtomicUsize,
    kind: AtomicU8,
    /// The heap (arena) whose blocks tile the region.
    arena: AtomicU8,
}

const CHUNK_SHIFT: u32 = 12;
const CHUNK: usize = 1 << CHUNK_SHIFT;
const CHUNKS: usize = 1024;
/// How many regions the table can hold (4 Mi: far beyond any address
/// space a 47-bit machine can hand out in regions of a page or more).
pub(crate) const MAX_REGIONS: usize = CHUNK * CHUNKS;
const _: () = assert!(MAX_REGIONS as u64 <= MAX_ID as u64 + 1);

/// Whether header position `h`, on a slab's page, is the page's last
/// header position: the header of the heap block after the slab's
/// container, never one of the slab's blocks.
#[inline(always)]
pub const fn is_after_slab(h: usize) -> bool {
    h & ((1 << crate::pagemap::PAGE_SHIFT) - 1) == (1 << crate::pagemap::PAGE_SHIFT) - crate::config::HEADER
}

pub struct RegionTable {
    map: &'static PageMap,
    /// The heaps' record of their filed free blocks ([`crate::filed`]),
    /// reserved over every region.
    filed: &'static FiledMap,
    chunks: [AtomicPtr<Desc>; CHUNKS],
    count: AtomicUsize,
    /// Serialises [`RegionTable::add`].
    adding: crate::sync::RawLock,
}

/// Waits for the adding lock (no rank: nothing is locked inside it).
static ADDING: crate::sync::Contention = crate::sync::Contention::new();

impl RegionTable {
    pub const fn new(map: &'static PageMap, filed: &'static FiledMap) -> Self {
        RegionTable {
            map,
            filed,
            chunks: [const { AtomicPtr::new(core::ptr::null_mut()) }; CHUNKS],
            count: AtomicUsize::new(0),
            adding: crate::sync::RawLock::new(),
        }
    }

    /// The page map this table records its regions in.
    pub fn map(&self) -> &'static PageMap {
        self.map
    }

    /// The filed map over this table's regions.
    #[inline(always)]
    pub fn filed(&self) -> &'static FiledMap {
        self.filed
    }

    fn desc(&self, i: usize) -> &Desc {
        debug_assert!(i < self.count.load(Relaxed) || i < MAX_REGIONS);
        let c = self.chunks[i >> CHUNK_SHIFT].load(Acquire);
        assert!(!c.is_null(), "region {i} has no descriptor");
        // SAFETY: a published chunk holds CHUNK descriptors and is never
        // unmapped; the index is masked to it.
        unsafe { &*c.add(i & (CHUNK - 1)) }
    }

    /// Whether `h` is a header position (≡ 12 mod 16) inside a region, from
    /// its first block to its epilogue.
    #[inline(always)]
    pub fn holds_header(&self, h: usize) -> bool {
        if !Block::is_header_position(h) {
            return false;
        }
        let e = self.map.entry(h);
        interior_region_entry(e) || self.holds_header_at_edge(h, e)
    }

    /// Whether a block whose header is at `h` can lie there: in a heap
    /// region, or on a slab's page (a slab block's payload page names its
    /// slab). For a cached block that a racing double free may have given
    /// back to the system.
    pub fn holds_block(&self, h: usize) -> bool {
        self.holds_header(h) || crate::pagemap::slab_units(self.map.entry(h + crate::config::HEADER)) != 0
    }

    #[cold]
    #[inline(never)]
    fn holds_header_at_edge(&self, h: usize, e: u32) -> bool {
        match Owner::decode(e) {
            Owner::Region { id, .. } => {
                let (lo, hi) = self.block_span(id as usize);
                h >= lo && h <= hi
            }
            // A slab's page lies wholly inside a region; its last header
            // position is the heap's (the block after the slab's container).
            Owner::Slab { .. } => is_after_slab(h),
            _ => false,
        }
    }

    /// The region whose memory (not only its block span) holds `addr`.
    pub fn find(&self, addr: usize) -> Option<usize> {
        match self.map.owner(addr) {
            Owner::Region { id, .. } => {
                let i = id as usize;
                (addr >= self.start(i) && addr < self.end(i)).then_some(i)
            }
            // A slab's page: its entry names the slab, not the region
            // (rarely asked: for the block after a slab's container).
            Owner::Slab { .. } => (0..self.len()).find(|&i| addr >= self.start(i) && addr < self.end(i)),
            _ => None,
        }
    }

    /// Where headers of region `i` may be: from its first block's header
    /// to its epilogue (excluded).
    #[inline]
    pub fn block_span(&self, i: usize) -> (usize, usize) {
        (Block::first_in_region(self.start(i)).addr(), Block::epilogue_of(self.end(i)).addr())
    }

    /// Records region `[start, end)` (both page-aligned, fresh memory) of
    /// heap `arena`; `None` when the table or the map cannot grow.
    pub fn add(&self, start: usize, end: usize, kind: RegionKind, arena: usize) -> Option<usize> {
        self.adding.lock(&ADDING);
        let r = self.add_locked(start, end, kind, arena);
        self.adding.unlock();
        r
    }

    fn add_locked(&self, start: usize, end: usize, kind: RegionKind, arena: usize) -> Option<usize> {
        let i = self.count.load(Relaxed);
        if i == MAX_REGIONS || !self.map.reserve(start, end) || !self.filed.reserve(start, end) {
            return None;
        }
        let slot = &self.chunks[i >> CHUNK_SHIFT];
        if slot.load(Acquire).is_null() {
            let m = crate::os::map_table(CHUNK * core::mem::size_of::<Desc>())?;
            slot.store(m as *mut Desc, Release);
        }
        let d = self.desc(i);
        d.start.store(start, Relaxed);
        d.end.store(end, Relaxed);
        d.peak_end.store(end, Relaxed);
        d.fresh.store(Block::first_in_region(start).payload() as usize, Relaxed);
        d.kind.store(kind as u8, Relaxed);
        d.arena.store(arena as u8, Relaxed);
        self.count.store(i + 1, Release);
        self.record(i, start, end);
        Some(i)
    }

    /// Writes the map entries of region `i` over `[lo, hi)` of it, marking
    /// its first and last page as edges when the region covers them only
    /// in part.
    fn record(&self, i: usize, lo: usize, hi: usize) {
        let (start, end) = (self.start(i), self.end(i));
        self.map.fill(lo, hi, Owner::Region { id: i as u32, edge: false }.entry());
        let edge = Owner::Region { id: i as u32, edge: true }.entry();
        let page = 1usize << crate::pagemap::PAGE_SHIFT;
        if !start.is_multiple_of(page) {
            self.map.set(start, edge);
        }
        if !end.is_multiple_of(page) {
            self.map.set(end - 1, edge);
        }
    }

    /// Makes sure region `i` can grow to `end` (the map has room for it).
    pub fn reserve_end(&self, i: usize, end: usize) -> bool {
        self.map.reserve(self.end(i), end) && self.filed.reserve(self.end(i), end)
    }

    /// Moves the end of region `i` (up: after [`RegionTable::reserve_end`];
    /// down: the pages above the new end leave the map).
    ///
    /// Only pages the move changes are written: a page the region covered
    /// wholly before and after keeps its entry, which may be a slab's
    /// ([`crate::slab`]).
    pub fn set_end(&self, i: usize, end: usize) {
        let old = self.end(i);
        let d = self.desc(i);
        let page = 1usize << crate::pagemap::PAGE_SHIFT;
        if end >= old {
            d.end.store(end, Relaxed);
            d.peak_end.store(d.peak_end.load(Relaxed).max(end), Relaxed);
            // From the old last page if the region covered it in part.
            self.record(i, old & !(page - 1), end);
        } else {
            // Clear the pages wholly above the new end first, then shrink.
            self.map.fill(crate::config::round_up(end, page), old, 0);
            d.end.store(end, Relaxed);
            if !end.is_multiple_of(page) {
                self.map.set(end - 1, Owner::Region { id: i as u32, edge: true }.entry());
            }
        }
    }

    /// Whether `addr` lies where a region's memory was and is no longer
    /// (above its end, below the highest end it had), and nothing has
    /// mapped it since (the program may move the break itself): heap
    /// memory given back to the system. For misuse reports only (a look at
    /// every region, and a system call).
    #[cold]
    pub fn gave_back(&self, addr: usize) -> bool {
        (0..self.len()).any(|i| addr >= self.end(i) && addr < self.desc(i).peak_end.load(Relaxed))
            && !crate::os::is_mapped(addr)
    }

    pub fn len(&self) -> usize {
        self.count.load(Acquire)
    }

    pub fn start(&self, i: usize) -> usize {
        self.desc(i).start.load(Relaxed)
    }

    pub fn end(&self, i: usize) -> usize {
        self.desc(i).end.load(Relaxed)
    }

    /// The heap (arena) region `i` belongs to.
    pub fn arena(&self, i: usize) -> usize {
        self.desc(i).arena.load(Relaxed) as usize
    }

    pub fn kind(&self, i: usize) -> RegionKind {
        if self.desc(i).kind.load(Relaxed) == RegionKind::Mapped as u8 { RegionKind::Mapped } else { RegionKind::Brk }
    }

    /// Region `i`'s fresh mark (see [`Desc`]).
    pub fn fresh(&self, i: usize) -> usize {
        self.desc(i).fresh.load(Relaxed)
    }

    pub fn set_fresh(&self, i: usize, fresh: usize) {
        self.desc(i).fresh.store(fresh, Relaxed);
    }
}
