//! One heap: regions of boundary-tagged blocks, best-fit placement, split on
//! allocation, coalescing on free, growth in large steps and trimming.
//!
//! # Regions and the top
//!
//! A region is a contiguous, page-aligned range `[start, end)` obtained
//! from sbrk (the usual case) or mmap (when the break cannot move), recorded
//! in the [`RegionTable`] (and through it in the page map). Its first block
//! header sits just before the first 16-aligned payload
//! ([`Block::first_in_region`]), its epilogue (a used header of size 0) in
//! its last four bytes ([`Block::epilogue_of`]).
//! The free space at the end of the *current* region is the top: a free
//! block that is in no bin, has no footer, and is carved only when no bin
//! fits, so that the heap grows only when nothing free fits. The top is
//! either empty (then `top` is the epilogue) or at least [`MIN_UNITS`].
//!
//! # Fresh memory
//!
//! Memory from the system reads as zero, so calloc need not clear a block
//! carved from memory the heap took from the system in the same call: only
//! then can nothing have written there. Memory taken in an earlier call
//! and never handed out is not trusted, because a program's overflow past
//! its last block, or a stray write, can reach it: calloc clears it, as
//! glibc's does (found by a hostile review: an 8-byte overflow into the
//! top came back from calloc). [`Heap::begin`] forgets the trust at every
//! call; growth sets it ([`Heap::zero_from`]).
//!
//! Each region also remembers `fresh`, its high-water mark (no block was
//! ever handed out at or above it), for messages about pointers there.
//!
//! # Invariants (checked by [`crate::check`])
//!
//! - Blocks tile each region exactly, from its first block to the epilogue.
//! - No two free blocks are adjacent; `PREV_USED` of every block tells the
//!   truth; every free block's footer equals its header.
//! - Every free block but the top and the parked block is in the bin its
//!   size maps to.
//!
//! # The parked block
//!
//! The free block made by the latest free or split stays out of the bins
//! (`parked`), so that a run of frees of neighbouring blocks merges into it
//! without a bin removal and insertion each time; it is filed when another
//! block takes its place. Best fit stays exact: an allocation takes the best
//! fit from the bins among blocks smaller than the parked one, and the
//! parked block otherwise.
//! - `free_bytes`/`free_blocks` count the blocks in bins; `used_*` the held
//!   blocks (including thread-cached ones); sizes add up to the region sizes.
//!
//! # Big blocks
//!
//! A request of more than [`MAX_USED_UNITS`] - 1 units gets a block in the
//! big form ([`crate::block`]): one more unit, whose prefix keeps the size.
//! The heap's interface speaks of blocks as handed out (for a big block,
//! its body) and of request units (the body's); inside, splitting,
//! coalescing and the walks see the whole block from its head. A block
//! keeps its form while it lives: it shrinks and grows in place in that
//! form, and a small-form block never grows in place beyond its form's
//! limit (the caller moves it).

use core::cell::Cell;
use crate::bins::Bins;
use crate::block::{bytes_to_units, free_header, units_to_bytes, BadLink, Block, BIG_PREFIX_UNITS, MERGED, PREV_USED};
use crate::config::{MAX_REGION_BYTES, MAX_USED_UNITS, MIN_UNITS};
use crate::diag;
use crate::os::Source;
use crate::region::{RegionKind, RegionTable};

/// Counters kept by the heap (under its lock).
#[derive(Clone, Copy, Default, Debug)]
pub struct HeapCounters {
    /// Bytes and number of blocks held (by the program or a thread cache).
    pub used_bytes: usize,
    pub used_blocks: usize,
    pub peak_used_bytes: usize,
    /// Bytes and number of free blocks in the bins (the top is apart).
    pub free_bytes: usize,
    pub free_blocks: usize,
    /// Bytes of all regions.
    pub heap_bytes: usize,
    pub peak_heap_bytes: usize,
    /// Bytes given back to the system (trimmed or purged).
    pub released_bytes: usize,
}

impl HeapCounters {
    /// Adds another heap's counters to these.
    pub fn add(&mut self, o: &HeapCounters) {
        self.used_bytes += o.used_bytes;
        self.used_blocks += o.used_blocks;
        self.peak_used_bytes += o.peak_used_bytes;
        self.free_bytes += o.free_bytes;
        self.free_blocks += o.free_blocks;
        self.heap_bytes += o.heap_bytes;
        self.peak_heap_bytes += o.peak_heap_bytes;
        self.released_bytes += o.released_bytes;
    }
}

/// Tunables the heap obeys (set through mallopt and the environment).
#[derive(Clone, Copy, Debug)]
pub struct HeapParams {
    pub trim_threshold: usize,
    pub top_pad: usize,
    pub page: usize,
}

pub struct Heap<S: Source> {
    pub source: S,
    pub regions: &'static RegionTable,
    /// Which heap this is ([`crate::process`] has one per arena): its
    /// regions carry the number. Only heap 0 takes memory from the break;
    /// the others map their regions.
    pub arena: usize,
    /// The region holding the top.
    cur: usize,
    /// The top block (the epilogue when the top is empty), its size, and
    /// the current region's first header and epilogue (cached: read on
    /// every carve and merge).
    top: Block,
    top_units: u32,
    cur_lo: usize,
    top_end: usize,
    /// The first header and epilogue of the other region [`Heap::bounds`]
    /// found last (0, 0: none), so that a heap of several regions (mapped
    /// ones, where the break could not grow, or an arena's) looks a region
    /// up in the page map only when its blocks' region changes. Forgotten
    /// whenever the current region changes or moves its end
    /// ([`Heap::reframe`]): only the current region's end ever moves.
    other: Cell<(usize, usize)>,
    /// The parked free block (see the module notes), or null.
    parked: Block,
    /// The parked block's size when it was parked (its true size: the
    /// heap changes the block only by unparking it first).
    parked_units: u32,
    /// The top's memory at or above this address has not been handed out
    /// since it was purged or came from the system: purging the top
    /// (`madvise`, where the break cannot shrink) releases only what lies
    /// below it, so that a top that stays large in a mapped region is not
    /// purged again at every free that reaches it.
    clean_from: usize,
    /// Memory of the current region at or above this address, up to its
    /// epilogue, came from the system during this call (since
    /// [`Heap::begin`]) and has not been handed out since: it reads as
    /// zero. `usize::MAX`: none.
    zero_from: usize,
    pub bins: Bins,
    pub counters: HeapCounters,
    pub params: HeapParams,
    /// Bytes turned into free space since the last decay ([`crate::trim`]).
    pub freed_since_purge: usize,
    /// About how many bytes of the free space were written since it was
    /// last given back (freed blocks, less what was handed out again),
    /// and the least that figure was since the last decay: how much
    /// written free space the program did not need at any moment of the
    /// period ([`Heap::idle_dirty`]).
    dirty_free: usize,
    period_min_dirty: usize,
    /// How many times the heap grew (wrapping): callers compare it around
    /// an allocation to learn that it took new memory from the system.
    pub growths: u32,
    /// The C function being served, for messages.
    pub op: &'static str,
}

/// What growing the current region in place came to.
enum BrkGrowth {
    Grown,
    /// The break is not (or no longer) the region's end, or the region is
    /// full: a new region from the break may still serve.
    Moved,
    /// The system refused to move the break.
    Refused,
    /// The current region does not come from the break (or there is none).
    NotBrk,
}

/// A block handed out by the heap, and how much of its payload calloc must
/// clear.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    pub block: Block,
    pub dirty: usize,
    /// Carved from the top: no free block fitted (an allocation burst).
    pub from_top: bool,
}

impl<S: Source> Heap<S> {
    pub const fn new(source: S, regions: &'static RegionTable, params: HeapParams, arena: usize) -> Self {
        Heap {
            source,
            regions,
            arena,
            cur: 0,
            top: Block::NULL,
            top_units: 0,
            cur_lo: 0,
            top_end: 0,
            other: Cell::new((0, 0)),
            parked: Block::NULL,
            parked_units: 0,
            clean_from: 0,
            zero_from: usize::MAX,
            bins: Bins::new(),
            counters: HeapCounters {
                used_bytes: 0,
                used_blocks: 0,
                peak_used_bytes: 0,
                free_bytes: 0,
                free_blocks: 0,
                heap_bytes: 0,
                peak_heap_bytes: 0,
                released_bytes: 0,
            },
            params,
            freed_since_purge: 0,
            dirty_free: 0,
            period_min_dirty: 0,
            growths: 0,
            op: "malloc",
        }
    }

    /// Reports corruption found while serving `self.op` and aborts.
    #[cold]
    fn corrupt(&self, what: &str, addr: usize) -> ! {
        diag::fatal(self.op, what, addr)
    }

    /// Starts serving C function `op` (named in messages): called whenever
    /// the heap's lock is taken. Memory the heap took from the system
    /// before is no longer known to read as zero (see *Fresh memory*).
    #[inline]
    pub fn begin(&mut self, op: &'static str) {
        self.op = op;
        self.zero_from = usize::MAX;
    }

    fn ok<T>(&self, r: Result<T, BadLink>) -> T {
        match r {
            Ok(v) => v,
            Err(BadLink(a)) => self.corrupt("corrupted free list at", a),
        }
    }

    /// The top block and its size in units (0 when there is none).
    #[inline]
    pub fn top(&self) -> (Block, u32) {
        (self.top, self.top_units)
    }

    pub fn current_region(&self) -> usize {
        self.cur
    }

    fn epilogue(&self, region: usize) -> Block {
        Block::epilogue_of(self.regions.end(region))
    }

    /// Makes `b` the top of the current region: writes its free header. The
    /// epilogue's `PREV_USED` (set iff the top is empty) is written only
    /// when the top empties or stops being empty, so carving does not touch
    /// the far end of the region.
    ///
    /// # Safety
    /// `b` must be a block position in the current region with nothing but
    /// free space between it and the epilogue.
    #[inline]
    unsafe fn set_top(&mut self, b: Block) {
        let units = b.units_to(Block::at(self.top_end as *mut u8));
        let was_empty = self.top_units == 0;
        if b.addr() > self.top.addr() {
            // Carved: what was handed out below `b` is no longer clean.
            self.clean_from = self.clean_from.max(b.addr());
        }
        self.top = b;
        self.top_units = units;
        let epi = Block::at(self.top_end as *mut u8);
        // SAFETY: `b` and the epilogue lie in the current region.
        unsafe {
            if units > 0 {
                b.set_header(free_header(units));
                if was_empty {
                    epi.set_prev_used(false);
                }
            } else if !was_empty {
                epi.set_prev_used(true);
            }
        }
    }

    /// After the current region changed or its end moved: writes the
    /// epilogue and makes `top` the top.
    ///
    /// # Safety
    /// The current region must end in memory we own; `top` must be followed
    /// only by free space up to the new epilogue.
    unsafe fn reframe(&mut self, top: Block) {
        (self.cur_lo, self.top_end) = self.regions.block_span(self.cur);
        self.other.set((0, 0));
        let epi = Block::at(self.top_end as *mut u8);
        let units = top.units_to(epi);
        self.top = top;
        self.top_units = units;
        // SAFETY: the epilogue and `top` lie in the current region.
        unsafe {
            epi.set_header(crate::block::used_header(epi.addr(), 0) | if units == 0 { PREV_USED } else { 0 });
            if units > 0 {
                top.set_header(free_header(units));
            }
        }
    }

    /// The first header and the epilogue of the region holding `b`.
    #[inline(always)]
    fn bounds(&self, b: Block) -> (usize, usize) {
        if b.addr() >= self.cur_lo && b.addr() < self.top_end {
            return (self.cur_lo, self.top_end);
        }
        self.other_bounds(b)
    }

    /// [`Heap::bounds`] of a block outside the current region.
    #[inline(never)]
    fn other_bounds(&self, b: Block) -> (usize, usize) {
        let (lo, hi) = self.other.get();
        if b.addr() >= lo && b.addr() < hi {
            return (lo, hi);
        }
        let span = self.regions.block_span(self.region_of(b));
        self.other.set(span);
        span
    }

    fn account_used(&mut self, units: u32) {
        let c = &mut self.counters;
        c.used_bytes += units_to_bytes(units);
        c.used_blocks += 1;
        if c.used_bytes > c.peak_used_bytes {
            c.peak_used_bytes = c.used_bytes;
        }
    }

    /// Notes that `bytes` of written free space were handed out again.
    fn reused(&mut self, bytes: usize) {
        self.dirty_free = self.dirty_free.saturating_sub(bytes);
        self.period_min_dirty = self.period_min_dirty.min(self.dirty_free);
    }

    /// Bytes of written free space that the program did not need at any
    /// moment since the last decay ([`Heap::new_period`]): the decay gives
    /// memory back only when they are at least [`crate::trim`]'s minimum,
    /// so that a program whose use swings within a period (frees a lot,
    /// then allocates as much again) keeps the pages it will need at its
    /// next peak rather than having them taken at whatever trough the decay
    /// fell on, to fault them in again.
    pub fn idle_dirty(&self) -> usize {
        self.period_min_dirty
    }

    /// Begins a decay period; `purged`: all the free space was just given
    /// back.
    pub fn new_period(&mut self, purged: bool) {
        if purged {
            self.dirty_free = 0;
        }
        self.period_min_dirty = self.dirty_free;
    }

    fn account_released(&mut self, units: u32) {
        let c = &mut self.counters;
        c.used_bytes -= units_to_bytes(units);
        c.used_blocks -= 1;
    }

    /// Files free block `b` of `units` (header and footer written) in its bin.
    ///
    /// # Safety
    /// `b` must be a free block of the heap, in no bin, with used neighbours.
    unsafe fn file(&mut self, b: Block, units: u32) {
        // SAFETY: forwarded to the caller.
        let r = unsafe { self.bins.insert(self.regions, b, units) };
        self.ok(r);
        self.counters.free_bytes += units_to_bytes(units);
        self.counters.free_blocks += 1;
    }

    /// Takes free block `b` of `units` out of its bin, or unparks it.
    ///
    /// # Safety
    /// `b` must be a free block of the heap in a bin, or the parked block.
    unsafe fn unfile(&mut self, b: Block, units: u32) {
        if b == self.parked {
            // The parked block is in no list whose links would give a
            // forged size away: its size is the one recorded when it was
            // parked, or its header was rewritten (an overflow, or a write
            // after free with a footer forged to match).
            if units != self.parked_units {
                self.corrupt("corrupted free block at", b.payload() as usize);
            }
            self.parked = Block::NULL;
        } else {
            // SAFETY: forwarded to the caller.
            let r = unsafe { self.bins.remove(self.regions, b, units) };
            self.ok(r);
        }
        self.counters.free_bytes -= units_to_bytes(units);
        self.counters.free_blocks -= 1;
    }

    /// Parks free block `b` of `units` (header and footer written), filing
    /// the block parked before it.
    ///
    /// # Safety
    /// `b` must be a free block of the heap, in no bin, with used neighbours.
    unsafe fn park(&mut self, b: Block, units: u32) {
        let (old, u) = self.parked_claim();
        if !old.is_null() {
            // SAFETY: the parked block is a free block in no bin; if an
            // overflow rewrote its header, whoever takes it from the bin
            // finds out (`check_taken`).
            let r = unsafe { self.bins.insert(self.regions, old, u) };
            self.ok(r);
        }
        self.parked = b;
        self.parked_units = units;
        self.counters.free_bytes += units_to_bytes(units);
        self.counters.free_blocks += 1;
    }

    /// The parked block and its size (0 when none), checked: a program
    /// that wrote past its block may have reached the parked block's tags.
    pub fn parked(&self) -> (Block, u32) {
        let p = self.parked;
        if p.is_null() {
            return (p, 0);
        }
        let (_, hi) = self.bounds(p);
        // SAFETY: the parked block lies in a heap region.
        match unsafe { self.free_size(p, hi, p, "corrupted free block at") } {
            // Its size the one it was parked with (see `unfile`).
            Some(units) if units == self.parked_units => (p, units),
            _ => self.corrupt("corrupted free block at", p.payload() as usize),
        }
    }

    /// The parked block and its size (0 when none), checked only against
    /// the size it was parked with (its header must still claim it): for
    /// weighing it and filing it. Whoever takes it checks the rest
    /// ([`Heap::check_taken`]).
    fn parked_claim(&self) -> (Block, u32) {
        let p = self.parked;
        if p.is_null() {
            return (p, 0);
        }
        // SAFETY: the parked block lies in a heap region.
        let h = unsafe { p.header() };
        if h != free_header(self.parked_units) {
            // A header rewritten while the block waited (an overflow, or a
            // write after free): filed or taken at the size it claims, the
            // block would reach over live ones.
            self.corrupt("corrupted free block at", p.payload() as usize);
        }
        (p, self.parked_units)
    }

    /// Removes the best fit for `units` from the bins or the parked block.
    ///
    /// # Safety
    /// The heap must be consistent.
    unsafe fn take_best(&mut self, units: u32) -> Option<(Block, u32)> {
        // SAFETY: forwarded.
        unsafe { self.take_best_below(units, u32::MAX) }
    }

    /// [`Heap::take_best`] among the free blocks smaller than `below` units.
    ///
    /// # Safety
    /// The heap must be consistent.
    #[inline(always)]
    unsafe fn take_best_below(&mut self, units: u32, below: u32) -> Option<(Block, u32)> {
        let (p, pu) = self.parked_claim();
        let parked = pu >= units && pu < below;
        let below = if parked { pu } else { below };
        // SAFETY: bins hold free blocks of this heap.
        let r = unsafe { self.bins.take_best(self.regions, units, below) };
        let found = match self.ok(r) {
            Some((b, u)) => {
                // SAFETY: bins hold blocks of this heap's regions.
                unsafe { self.check_taken(b, u) };
                Some((b, u))
            }
            None if parked => {
                // SAFETY: the parked block lies in a heap region.
                unsafe { self.check_taken(p, pu) };
                if pu != self.parked_units {
                    // Header and footer forged alike (see `unfile`).
                    self.corrupt("corrupted free block at", p.payload() as usize);
                }
                self.parked = Block::NULL;
                Some((p, pu))
            }
            None => None,
        };
        if let Some((_, have)) = found {
            self.counters.free_bytes -= units_to_bytes(have);
            self.counters.free_blocks -= 1;
        }
        found
    }

    // ----- allocation -------------------------------------------------------

    /// Allocates a block of at least `units` (at most `units + 1`, or the
    /// whole top when only 16 bytes would remain).
    ///
    /// # Safety
    /// The heap must be consistent (it is, between calls).
    pub unsafe fn alloc(&mut self, units: u32) -> Option<Grant> {
        // SAFETY: forwarded.
        unsafe { self.alloc_in(units, true) }
    }

    /// A block of `units` from the best-fitting free block smaller than
    /// `below` units, never from the top: the heap's fragments, which only
    /// small requests can use, serve them before slabs take new pages.
    ///
    /// # Safety
    /// The heap must be consistent.
    pub unsafe fn alloc_fragment(&mut self, units: u32, below: u32) -> Option<Grant> {
        // SAFETY: the heap is consistent (caller).
        unsafe {
            let (b, have) = self.take_best_below(units, below)?;
            let held = self.use_free(b, have, units, false);
            Some(Grant { block: held, dirty: Block::payload_bytes(held.units()), from_top: false })
        }
    }

    /// Like [`Heap::alloc`] but never grows the heap: for large requests
    /// that may use free heap space but should otherwise get a mapping.
    ///
    /// # Safety
    /// As for [`Heap::alloc`].
    pub unsafe fn alloc_no_grow(&mut self, units: u32) -> Option<Grant> {
        // SAFETY: forwarded.
        unsafe { self.alloc_in(units, false) }
    }

    /// The best fit from the bins, else a piece of the top, growing the heap
    /// first when `may_grow`.
    ///
    /// # Safety
    /// As for [`Heap::alloc`].
    #[inline(always)]
    unsafe fn alloc_in(&mut self, units: u32, may_grow: bool) -> Option<Grant> {
        debug_assert!(units >= MIN_UNITS && units_to_bytes(units) <= crate::config::MAX_BIG_REQUEST + 32);
        let (span, big) = Self::span_for(units);
        // SAFETY: bins hold free blocks of this heap; `carve` and `grow` keep
        // the top consistent.
        unsafe {
            if let Some((b, have)) = self.take_best(span) {
                let held = self.use_free(b, have, span, big);
                return Some(Grant { block: held, dirty: Block::payload_bytes(held.units()), from_top: false });
            }
            if self.top().1 < span && !(may_grow && self.grow(span)) {
                return None;
            }
            Some(self.carve(span, big))
        }
    }

    /// The whole size in units of a block for a request of `units`, and
    /// whether it has the big form: a request the small form cannot hold
    /// (with the one unit a best fit may add) gets the big form's prefix.
    #[inline]
    fn span_for(units: u32) -> (u32, bool) {
        if units < MAX_USED_UNITS { (units, false) } else { (units + BIG_PREFIX_UNITS, true) }
    }

    /// Marks free block `b` of `have` units (already out of its bin) used
    /// for `want` (in the big form if `big`), splitting off the remainder
    /// (which is parked) when it can be a block. Returns the block to hand
    /// out.
    ///
    /// # Safety
    /// `b` must be a free block of `have >= want` units, in no bin.
    #[inline(always)]
    unsafe fn use_free(&mut self, b: Block, have: u32, want: u32, big: bool) -> Block {
        // SAFETY: `b .. b + have` is a free block of this heap.
        unsafe {
            let rest = have - want;
            self.reused(units_to_bytes(want.min(have)));
            if rest >= MIN_UNITS {
                let held = b.set_used_as(want, big);
                let r = b.offset(want);
                r.set_free(rest);
                self.park(r, rest);
                self.account_used(want);
                held
            } else {
                let held = b.set_used_as(have, big);
                let next = b.offset(have);
                next.set_prev_used(true);
                // The free block's footer, now the payload's last bytes:
                // cleared, so the program never reads a masked value (from
                // which it could forge a footer at that address).
                next.clear_footer_before();
                self.account_used(have);
                held
            }
        }
    }

    /// Carves `units` (in the big form if `big`) from the front of the top.
    ///
    /// # Safety
    /// The top must hold at least `units`.
    unsafe fn carve(&mut self, units: u32, big: bool) -> Grant {
        let (b, have) = self.top();
        debug_assert!(have >= units);
        // An overflow of the heap's last block lands in the top's header
        // (nothing else reads it): caught before the top is carved.
        // SAFETY: the top's header lies in the current region.
        if unsafe { b.header() } != free_header(have) {
            self.corrupt("heap overflow into the header of the free space at the heap's end, at", b.payload() as usize);
        }
        let units = if have - units == 1 { have } else { units };
        // SAFETY: `b` is the top, a free block of `have` units.
        let held = unsafe {
            let held = b.set_used_as(units, big);
            self.set_top(b.offset(units));
            held
        };
        self.account_used(units);
        let payload = held.payload() as usize;
        let next = b.offset(units);
        let dirty = self.zero_from.saturating_sub(payload).min(next.addr() - payload);
        self.reused(dirty);
        // The next header is written at `next`; everything after it is
        // still as the system gave it.
        self.zero_from = self.zero_from.max(next.payload() as usize);
        let fresh = self.regions.fresh(self.cur);
        self.regions.set_fresh(self.cur, fresh.max(next.payload() as usize));
        Grant { block: held, dirty, from_top: true }
    }

    /// One more block of exactly `units` for a thread-cache refill: a free
    /// block of exactly that size (no fit is better), or, when `from_top`
    /// (an allocation burst that found no free block), a piece of the top.
    /// Never grows the heap.
    ///
    /// # Safety
    /// The heap must be consistent.
    pub unsafe fn take_exact(&mut self, units: u32, from_top: bool) -> Option<Block> {
        // SAFETY: list blocks are free blocks of this heap; the top is ours.
        unsafe {
            if units < crate::config::SMALL_LIMIT_UNITS && !self.bins.small.head(units).is_null() {
                let r = self.bins.small.pop(self.regions, units);
                let b = self.ok(r);
                self.check_taken(b, units);
                self.counters.free_bytes -= units_to_bytes(units);
                self.counters.free_blocks -= 1;
                return Some(self.use_free(b, units, units, false));
            }
            // Keep the top from shrinking to a sliver the carve would absorb.
            (from_top && self.top().1 >= units + MIN_UNITS).then(|| self.carve(units, false).block)
        }
    }

    /// Grows the heap so that the top holds at least `units`: the current
    /// sbrk region grows in place while the break is still its end;
    /// otherwise a new region comes from the break, else from a mapping.
    ///
    /// # Safety
    /// The heap must be consistent.
    unsafe fn grow(&mut self, units: u32) -> bool {
        let page = self.params.page;
        let want = units_to_bytes(units);
        // A region must stay below MAX_REGION_BYTES whatever pad was set,
        // and whatever the request (a big block may take most of one).
        let pad = self.params.top_pad.min(MAX_REGION_BYTES / 4).min(MAX_REGION_BYTES.saturating_sub(want + 2 * page));
        // SAFETY: growth only adds memory at the end of a region or a new region.
        unsafe {
            let try_brk = self.arena == 0
                && match self.grow_in_place(units) {
                    BrkGrowth::Grown => return true,
                    BrkGrowth::Moved => true,
                    BrkGrowth::Refused => false,
                    // The first growth; or the current region is mapped
                    // because the break could not serve before.
                    BrkGrowth::NotBrk => self.top.is_null(),
                };
            let (_, top_units) = self.top();
            // A new region from the break, page-aligned at both ends.
            let body = crate::config::round_up(want + 16 + pad, page);
            if try_brk && let Some(brk) = self.source.brk_grow(0) {
                let lead = crate::config::round_up(brk, page) - brk;
                if let Some(got) = self.source.brk_grow(lead + body) {
                    if self.add_region(got, got + lead + body, RegionKind::Brk) {
                        if self.top().1 >= units {
                            return true;
                        }
                    } else if self.source.brk_grow(0) == Some(got + lead + body) {
                        // Unusable (no room to record it): give it back.
                        self.source.brk_shrink(lead + body);
                    }
                }
            }
            if self.top().1 != top_units && self.top().1 >= units {
                return true;
            }
            // The break cannot serve: map a region.
            let len = body.max(crate::config::MMAP_REGION_BYTES);
            let got = match self.source.map(len) {
                Some(a) => Some((a, len)),
                None if len > body => self.source.map(body).map(|a| (a, body)),
                None => None,
            };
            match got {
                Some((a, len)) => {
                    if self.add_region(a, a + len, RegionKind::Mapped) {
                        self.top().1 >= units
                    } else {
                        self.source.unmap(a, len);
                        false
                    }
                }
                None => false,
            }
        }
    }

    /// Extends the current region by `more` bytes just obtained after its end.
    ///
    /// # Safety
    /// `[end, end + more)` must be fresh memory adjoining the current region,
    /// reserved in the region table.
    unsafe fn extend_current(&mut self, more: usize) {
        let r = self.cur;
        let old_epi = self.epilogue(r);
        let top_was_empty = self.top().1 == 0;
        let old_end = self.regions.end(r);
        let new_end = old_end + more;
        self.regions.set_end(r, new_end);
        // Below the old end, the old epilogue and what the program may have
        // written: only the new memory reads as zero.
        self.zero_from = self.zero_from.min(old_end);
        self.growths = self.growths.wrapping_add(1);
        self.counters.heap_bytes += more;
        self.note_peak();
        // SAFETY: the region now extends to `new_end`.
        unsafe {
            if !top_was_empty && old_epi.addr() >= self.regions.fresh(r) {
                // The old epilogue is now inside the top: keep "fresh" honest.
                old_epi.set_header(0);
            }
            // An empty top becomes the old epilogue's place; its header says
            // the block before it is held, as every free header does.
            let top = if top_was_empty { old_epi } else { self.top };
            self.reframe(top);
        }
    }

    /// Starts a new region in `[lo, hi)` (fresh memory; the region starts
    /// at the first page boundary, so that no two regions share a page of
    /// the page map) and makes it current, filing the old top in the bins.
    /// Returns false if it cannot be used.
    ///
    /// # Safety
    /// The range must be fresh memory owned by the heap.
    unsafe fn add_region(&mut self, lo: usize, hi: usize, kind: RegionKind) -> bool {
        let start = crate::config::round_up(lo, self.params.page);
        let end = hi & !15;
        if end < start + 64 || end - start > MAX_REGION_BYTES {
            return false;
        }
        let Some(i) = self.regions.add(start, end, kind, self.arena) else { return false };
        self.growths = self.growths.wrapping_add(1);
        self.counters.heap_bytes += end - start;
        self.note_peak();
        // SAFETY: the old top (if any) is a free block of the old region;
        // the new region's memory is ours.
        unsafe {
            let (old_top, old_units) = self.top();
            if old_units > 0 {
                old_top.set_free(old_units);
                self.file(old_top, old_units);
            }
            self.cur = i;
            self.reframe(Block::first_in_region(start));
            self.clean_from = Block::first_in_region(start).addr();
            self.zero_from = Block::first_in_region(start).payload() as usize;
        }
        true
    }

    /// The size of `b` if it is a genuine free block ending at or before
    /// `hi` ([`Heap::is_genuine_free`]); `None` if `b` is held. Anything else
    /// is corruption and aborts, naming `near`.
    ///
    /// # Safety
    /// `b` must be a header position inside a heap region whose epilogue is
    /// at or after `hi`.
    unsafe fn free_size(&self, b: Block, hi: usize, near: Block, what: &str) -> Option<u32> {
        // SAFETY: forwarded.
        unsafe {
            let h = b.header();
            if h & crate::block::USED != 0 {
                return None;
            }
            let units = crate::block::header_units(h);
            if !Self::is_genuine_free(b, units, hi) {
                self.corrupt(what, near.payload() as usize);
            }
            Some(units)
        }
    }

    /// Whether `b` is a genuine free block of `units` ending at or before
    /// `hi`: its header is the free header of that size, its footer equals
    /// it, and the block after it (free blocks are never adjacent) carries a
    /// valid used header (either form), keyed and so unforgeable, whose `PREV_USED` is
    /// clear. A header an overflow enlarged, even with a forged footer to
    /// match, fails the last test: the enlarged block would end inside or at
    /// the end of a held block, where no such header is.
    ///
    /// # Safety
    /// `b` must be a header position inside a heap region whose epilogue is
    /// at or after `hi`.
    unsafe fn is_genuine_free(b: Block, units: u32, hi: usize) -> bool {
        // SAFETY: memory past the header is read only once the size keeps
        // it at or below `hi`, inside the region.
        unsafe {
            let h = b.header();
            if h != free_header(units) || units < MIN_UNITS || b.offset(units).addr() > hi || b.footer(units) != h {
                return false;
            }
            let next = b.offset(units);
            next.is_valid_held_or_cached() && !next.prev_used()
        }
    }

    /// Aborts unless `b`, just taken from a bin, is a genuine free block of
    /// `units`.
    ///
    /// # Safety
    /// `b` must be a header position inside a heap region.
    unsafe fn check_taken(&self, b: Block, units: u32) {
        let (_, hi) = self.bounds(b);
        // SAFETY: forwarded.
        if !unsafe { Self::is_genuine_free(b, units, hi) } {
            self.corrupt("corrupted free block at", b.payload() as usize);
        }
    }

    /// The free block just before `b` (whose `PREV_USED` is clear), checked:
    /// its footer must lead, inside the region, to a matching free header.
    ///
    /// # Safety
    /// `b` must be a block of the heap, `lo` its region's first header.
    unsafe fn free_before(&self, b: Block, lo: usize) -> (Block, u32) {
        // SAFETY: the previous header is read only once it is known to lie
        // between the region's first header and `b`.
        unsafe {
            let f = b.prev_footer();
            let pu = crate::block::header_units(f);
            let p = b.prev();
            if f & crate::block::USED != 0 || pu < MIN_UNITS || p.addr() < lo || p.addr() > b.addr() || p.header() != f {
                self.corrupt("corrupted block before", b.payload() as usize);
            }
            (p, pu)
        }
    }

    /// The region holding `b` (which the caller found in the table).
    fn region_of(&self, b: Block) -> usize {
        match self.regions.find(b.addr()) {
            Some(r) => r,
            None => self.corrupt("block outside the heap", b.payload() as usize),
        }
    }

    fn note_peak(&mut self) {
        let c = &mut self.counters;
        c.peak_heap_bytes = c.peak_heap_bytes.max(c.heap_bytes);
    }

    // ----- free -------------------------------------------------------------

    /// Returns block `b` to the heap, merging it with free neighbours.
    ///
    /// # Safety
    /// `b` must be a block of this heap held by the program or a thread cache
    /// (its header checked by the caller).
    pub unsafe fn free(&mut self, b: Block) {
        // SAFETY: `b` is a held block; neighbours are checked before use.
        unsafe {
            // Checked by the caller, but without this lock: a second free of
            // the same block by another thread at the same moment finds the
            // header freed here, or gone with the memory the first free gave
            // back to the system. With one thread, the caller's look-up and
            // check still hold (measured: 1.5% of the 1-16 KiB path's
            // instructions), unless the cache's checks were built out.
            if (!crate::sync::single_threaded() || cfg!(feature = "unchecked-fast-path"))
                && (!self.regions.holds_header(b.addr()) || !crate::block::is_block_header(b.addr(), b.header()))
            {
                self.corrupt("double free (two threads at once) of", b.payload() as usize);
            }
            // A block already free whose old header the program wrote back
            // passes that check; inside the top or the parked block (where
            // a block freed last usually is), it is caught here.
            let a = b.addr();
            let in_span = |s: Block, units: u32| units > 0 && a >= s.addr() && a < s.offset(units).addr();
            // The parked block's span only when its header and footer are
            // the ones it was parked with: an overflow into it is reported
            // by the checks below, as what it is. (Its span first, from the
            // size it was parked with: the footer, often a cold line, is
            // read only for a block inside it.)
            let in_parked = !self.parked.is_null() && in_span(self.parked, self.parked_units) && {
                let u = self.parked_units;
                let h = self.parked.header();
                h == free_header(u) && self.parked.footer(u) == h
            };
            if b == self.parked || in_span(self.top, self.top_units) || in_parked {
                self.corrupt("double free of", b.payload() as usize);
            }
            let (s, units, big) = b.held_span();
            // The block after a held block says its predecessor is held;
            // one after a free block, that it is free. So a held block
            // there that says otherwise means `b` was free already, its old
            // used header written back after the free (found by a hostile
            // review: the second free went through, and the block was in
            // two bins at once). Its header is read by the merge below
            // anyway, inside the region's bounds.
            let (_, hi) = self.bounds(s);
            let next = s.offset(units);
            if next.addr() <= hi && next != self.top && next.is_valid_held_or_cached() && !next.prev_used() {
                self.corrupt("double free of", b.payload() as usize);
            }
            if big {
                // A second free of the body is recognised as one.
                b.set_header(MERGED);
            }
            self.account_released(units);
            self.release_span(s, units);
        }
    }

    /// Turns the held span `b .. b + units` into free space: merges it with
    /// free neighbours, then files it or grows the top.
    ///
    /// # Safety
    /// `b .. b + units` must be a span of this heap that nothing holds, whose
    /// header `PREV_USED` bit is correct, inside region bounds.
    #[inline(always)]
    unsafe fn release_span(&mut self, b: Block, units: u32) {
        self.freed_since_purge += units_to_bytes(units);
        self.dirty_free += units_to_bytes(units);
        // SAFETY: every neighbour is checked against the region bounds and
        // its own tags before it is used.
        unsafe {
            let (lo, hi) = self.bounds(b);
            let mut start = b;
            let mut total = units;
            if !b.prev_used() {
                let (p, pu) = self.free_before(b, lo);
                self.unfile(p, pu);
                b.set_header(MERGED);
                // The predecessor's footer is inside the merged block now:
                // a footer left there would give its mask away to whoever
                // is handed this memory next.
                b.clear_footer_before();
                start = p;
                total += pu;
            }
            let next = b.offset(units);
            if next == self.top {
                // The top's old start is inside it now: marked, so that a
                // stale pointer to the block freed there before is still
                // named a double free (found by a hostile review). Not when
                // the top was empty: its start is then the epilogue.
                if !next.is_used() {
                    next.set_header(MERGED);
                }
                self.set_top(start);
                self.maybe_trim();
                return;
            }
            if let Some(nu) = self.free_size(next, hi, b, "corrupted block after") {
                self.unfile(next, nu);
                next.set_header(MERGED);
                total += nu;
            } else if !next.is_valid_held_or_cached() {
                self.corrupt("corrupted block after", b.payload() as usize);
            } else {
                next.set_prev_used(false);
            }
            start.set_free(total);
            self.park(start, total);
        }
    }

    /// [`Heap::release_span`] out of line, for the pieces that realloc and
    /// the aligned path cut off a block (free's call, the hot one, is
    /// inlined: 22 instructions fewer per 1-16 KiB malloc/free pair).
    ///
    /// # Safety
    /// As for [`Heap::release_span`].
    #[inline(never)]
    unsafe fn release_piece(&mut self, b: Block, units: u32) {
        // SAFETY: forwarded.
        unsafe { self.release_span(b, units) }
    }

    /// Gives back the top beyond `top_pad` when it exceeds the trim threshold.
    fn maybe_trim(&mut self) {
        let (top, units) = self.top();
        // Only the part of the top written since it was last purged counts
        // (all of it, unless the top was purged rather than cut).
        let dirty = self.clean_from.max(top.addr()) - top.addr();
        if units_to_bytes(units).min(dirty.max(1)) > self.params.trim_threshold {
            // SAFETY: the heap is consistent here.
            unsafe { self.trim_top(self.params.top_pad) };
        }
    }

    /// Gives back all but `pad` bytes of the top (rounded to pages). Returns
    /// the bytes released.
    ///
    /// # Safety
    /// The heap must be consistent.
    pub unsafe fn trim_top(&mut self, pad: usize) -> usize {
        let page = self.params.page;
        let (top, units) = self.top();
        let bytes = units_to_bytes(units);
        let keep = pad.saturating_add(32);
        if bytes < keep.saturating_add(page) {
            return 0;
        }
        let r = self.cur;
        let end = self.regions.end(r);
        let release = (bytes - keep) & !(page - 1);
        if release == 0 {
            return 0;
        }
        let new_end = end - release;
        // SAFETY: `[new_end, end)` lies inside the top, which holds nothing.
        unsafe {
            // The page map forgets the pages before the break gives them
            // back: a racing free of a block that lay there (a double free
            // another thread makes while this one holds the lock) finds
            // them gone before it could read them.
            let brk = self.regions.kind(r) == RegionKind::Brk && self.source.brk_grow(0) == Some(end);
            if brk {
                self.regions.set_end(r, new_end);
            }
            if brk && self.source.brk_shrink(release) {
                self.counters.heap_bytes -= release;
                self.regions.set_fresh(r, self.regions.fresh(r).min(Block::epilogue_of(new_end).addr()));
                self.reframe(top);
            } else {
                if brk {
                    self.regions.set_end(r, end);
                }
                // Keep the address range; let the system take the pages that
                // were written since the last purge. The epilogue's page is
                // kept so the frame stays intact.
                let lo = crate::config::round_up(top.addr() + 16, page);
                let clean = crate::config::round_up(self.clean_from.max(top.addr()), page);
                let hi = (Block::epilogue_of(end).addr() & !(page - 1)).min(clean);
                if hi <= lo || !self.source.purge(lo, hi - lo) {
                    return 0;
                }
                self.clean_from = lo;
                // The purged pages read as zero now, but they stay mapped: a
                // stale pointer of the program may write there before they
                // are handed out again, so they are not called fresh (calloc
                // clears them).
                self.counters.released_bytes += hi - lo;
                return hi - lo;
            }
        }
        self.counters.released_bytes += release;
        release
    }

    /// Gives the pages inside large free blocks back to the system
    /// (malloc_trim). Returns the bytes released.
    ///
    /// # Safety
    /// The heap must be consistent.
    pub unsafe fn purge_free_blocks(&mut self) -> usize {
        let page = self.params.page;
        let mut released = 0;
        // File the parked block so that the walk below sees every free block.
        let (p, pu) = self.parked();
        if !p.is_null() {
            // SAFETY: the parked block is a free block in no bin.
            unsafe {
                self.unfile(p, pu);
                self.file(p, pu);
            }
        }
        let regions = self.regions;
        let mut forged = None;
        for i in 0..crate::config::TREE_BINS {
            let tree = *self.bins.tree(i);
            let source = &mut self.source;
            // SAFETY: tree nodes are header positions of this heap's regions,
            // purged only once checked as genuine free blocks; the purged
            // range leaves the header, links and footer untouched.
            let r = unsafe {
                tree.for_each(regions, |b| {
                    let units = b.units();
                    let genuine = regions
                        .find(b.addr())
                        .is_some_and(|r| Self::is_genuine_free(b, units, regions.block_span(r).1));
                    if !genuine {
                        forged = forged.or(Some(b));
                        return;
                    }
                    let (lo, hi) = b.spare_span(units);
                    let (lo, hi) = (crate::config::round_up(lo, page), hi & !(page - 1));
                    if hi > lo && source.purge(lo, hi - lo) {
                        released += hi - lo;
                    }
                })
            };
            self.ok(r);
            if let Some(b) = forged {
                self.corrupt("corrupted free block at", b.payload() as usize);
            }
        }
        self.counters.released_bytes += released;
        released
    }

    // ----- resizing ------------------------------------------------------------

    /// Splits the tail of held block `b` (whole block at `s` of `have`
    /// units, in the big form if `big`) down to `want` units and frees the
    /// tail.
    ///
    /// # Safety
    /// `s` must be a held block of `have >= want + MIN_UNITS` units.
    unsafe fn shrink_held(&mut self, s: Block, have: u32, want: u32, big: bool) {
        // SAFETY: the tail `s + want .. s + have` belongs to `s`.
        unsafe {
            s.set_used_as(want, big);
            let tail = s.offset(want);
            tail.set_header(PREV_USED);
            self.counters.used_bytes -= units_to_bytes(have - want);
            self.release_piece(tail, have - want);
        }
    }

    /// Resizes held block `b` in place so that it holds a request of `want`
    /// units, if its neighbours allow; may also slide it down into a free
    /// predecessor, moving the first `keep` payload bytes. Returns the
    /// (possibly moved) block. The block keeps its form: a small-form block
    /// is not grown beyond that form's limit (`None`: the caller moves it).
    ///
    /// # Safety
    /// `b` must be a block held by the program; `keep` at most its payload.
    pub unsafe fn resize(&mut self, b: Block, want: u32, keep: usize) -> Option<Block> {
        // SAFETY: neighbours are checked as in `release_span`; data moves
        // stay inside the merged span.
        unsafe {
            // realloc checked the header, but without this lock: a free of
            // the same block by another thread at the same moment may have
            // freed it since, even merged it into the block before (its
            // header then holds no size at all), as in `free`. With one
            // thread nothing can have changed it. The memory itself may have
            // gone back to the system since.
            if !crate::sync::single_threaded()
                && (!self.regions.holds_header(b.addr()) || !crate::block::is_block_header(b.addr(), b.header()))
            {
                self.corrupt("realloc of a block freed at the same time by another thread (double free) at", b.payload() as usize);
            }
            let (s, have, big) = b.held_span();
            if !big && want >= MAX_USED_UNITS {
                return None;
            }
            let want = if big { want + BIG_PREFIX_UNITS } else { want };
            if want <= have {
                if have - want >= MIN_UNITS {
                    self.shrink_held(s, have, want, big);
                }
                return Some(b);
            }
            let next = s.offset(have);
            // Grow into the top, extending the heap if the top is short.
            if next == self.top {
                let need = want - have;
                if self.top().1 < need && !matches!(self.grow_in_place(need), BrkGrowth::Grown) {
                    return self.slide_down(s, have, want, keep, big);
                }
                let (_, top_units) = self.top();
                let total = have + top_units;
                let units = if total - want < MIN_UNITS { total } else { want };
                s.set_used_as(units, big);
                self.counters.used_bytes += units_to_bytes(units - have);
                self.counters.peak_used_bytes = self.counters.peak_used_bytes.max(self.counters.used_bytes);
                self.set_top(s.offset(units));
                let fresh = self.regions.fresh(self.cur).max(s.offset(units).payload() as usize);
                self.regions.set_fresh(self.cur, fresh);
                self.zero_from = self.zero_from.max(s.offset(units).payload() as usize);
                return Some(b);
            }
            let (_, hi) = self.bounds(s);
            if let Some(nu) = self.free_size(next, hi, b, "corrupted block after")
                && have + nu >= want
            {
                self.unfile(next, nu);
                next.set_header(MERGED);
                let total = have + nu;
                let units = if total - want < MIN_UNITS { total } else { want };
                s.set_used_as(units, big);
                self.counters.used_bytes += units_to_bytes(units - have);
                if units < total {
                    let tail = s.offset(units);
                    tail.set_header(PREV_USED);
                    self.release_piece(tail, total - units);
                } else {
                    let after = s.offset(total);
                    after.set_prev_used(true);
                    after.clear_footer_before();
                }
                self.counters.peak_used_bytes = self.counters.peak_used_bytes.max(self.counters.used_bytes);
                return Some(b);
            }
            self.slide_down(s, have, want, keep, big)
        }
    }

    /// Grows the current region so its top holds `units`, only if that keeps
    /// the top where it is: the region came from the break, and the break
    /// is still its end.
    ///
    /// # Safety
    /// The heap must be consistent.
    unsafe fn grow_in_place(&mut self, units: u32) -> BrkGrowth {
        let r = self.cur;
        if self.top.is_null() || self.regions.kind(r) != RegionKind::Brk {
            return BrkGrowth::NotBrk;
        }
        let (start, end) = (self.regions.start(r), self.regions.end(r));
        let (_, top_units) = self.top();
        let want = units_to_bytes(units.saturating_sub(top_units));
        let pad = self.params.top_pad.min(MAX_REGION_BYTES / 4);
        let more = crate::config::round_up(want + pad, self.params.page);
        if self.source.brk_grow(0) != Some(end) {
            return BrkGrowth::Moved;
        }
        if end - start + more > MAX_REGION_BYTES {
            return BrkGrowth::Moved;
        }
        if !self.regions.reserve_end(r, end + more) {
            return BrkGrowth::Refused;
        }
        match self.source.brk_grow(more) {
            Some(old) if old == end => {
                // SAFETY: the new memory adjoins the current region.
                unsafe { self.extend_current(more) };
                BrkGrowth::Grown
            }
            Some(old) => {
                // Someone moved the break meanwhile: keep what we got as a
                // region of its own (it becomes the current one).
                // SAFETY: `[old, old + more)` is fresh memory we own.
                unsafe { self.add_region(old, old + more, RegionKind::Brk) };
                BrkGrowth::Moved
            }
            None => BrkGrowth::Refused,
        }
    }

    /// Grows held block `s` (its whole block, of `have` units, in the big
    /// form if `big`) to `want` units by merging it with a free predecessor
    /// (and a free successor), moving its first `keep` payload bytes down.
    /// Returns the block to hand out.
    ///
    /// # Safety
    /// As for [`Heap::resize`].
    unsafe fn slide_down(&mut self, s: Block, have: u32, want: u32, keep: usize, big: bool) -> Option<Block> {
        // SAFETY: the predecessor and successor are checked before use; the
        // move stays inside the merged span.
        unsafe {
            if s.prev_used() {
                return None;
            }
            let (lo, hi) = self.bounds(s);
            let (p, pu) = self.free_before(s, lo);
            let next = s.offset(have);
            let nu = if next == self.top { 0 } else { self.free_size(next, hi, s, "corrupted block after").unwrap_or(0) };
            let total = pu + have + nu;
            if total < want || (!big && want > MAX_USED_UNITS - 1) {
                return None;
            }
            self.unfile(p, pu);
            if nu > 0 {
                self.unfile(next, nu);
            }
            // The payload moves down by the predecessor's size, in its form.
            // The old header(s) stop being block starts first: where the copy
            // does not overwrite them, a stale free of the old pointer would
            // otherwise find a valid used header inside the new block (or
            // inside the free tail) and hand it out again.
            let (from, to) = if big { (s.body(), p.body()) } else { (s, p) };
            s.set_header(MERGED);
            // The predecessor's footer, inside the new block (as in
            // `release_span`); cleared before the copy, which may cover it.
            s.clear_footer_before();
            if big {
                from.set_header(MERGED);
            }
            core::ptr::copy(from.payload(), to.payload(), keep);
            self.counters.used_bytes += units_to_bytes(pu + nu);
            let units = if total - want < MIN_UNITS { total } else { want };
            let held = p.set_used_as(units, big);
            if units < total {
                let tail = p.offset(units);
                tail.set_header(PREV_USED);
                self.counters.used_bytes -= units_to_bytes(total - units);
                self.release_piece(tail, total - units);
            } else {
                let after = p.offset(units);
                after.set_prev_used(true);
                after.clear_footer_before();
            }
            self.counters.peak_used_bytes = self.counters.peak_used_bytes.max(self.counters.used_bytes);
            Some(held)
        }
    }

    /// Allocates a block for a request of `units` whose payload is aligned
    /// to `align` (> 16, a power of two). Returns the block to hand out.
    ///
    /// # Safety
    /// As for [`Heap::alloc`].
    pub unsafe fn alloc_aligned(&mut self, align: usize, units: u32) -> Option<Block> {
        let align_units = bytes_to_units(align) as u32;
        let (want, big) = Self::span_for(units);
        let need = want.checked_add(align_units)?.checked_add(MIN_UNITS)?;
        if units_to_bytes(need) > crate::config::MAX_BIG_REQUEST {
            return None;
        }
        // The lead before an aligned payload in a span starting at `s`, in
        // the form wanted: none, or a whole free block.
        let lead_of = |s: Block| {
            let p = if big { s.body() } else { s }.payload() as usize;
            let mut at = crate::config::round_up(p, align);
            if at != p && bytes_to_units(at - p) < MIN_UNITS as usize {
                at += align;
            }
            (bytes_to_units(at - p) as u32, at)
        };
        // SAFETY: the block is ours; the lead and tail are carved from it.
        unsafe {
            // The best fit for the size, when it holds the aligned block
            // with its lead (a freed aligned block, merged with the lead
            // freed before it, is used again as it was); else a block with
            // room for any lead. For alignments above 256 bytes only when
            // it needs no lead: cutting slab containers (4 KiB-aligned) out
            // of free blocks with room for their leads left the leads as
            // small free blocks, and py-json's utilization fell from 0.838
            // to 0.83.
            let fit = match self.take_best(want) {
                Some((b, have)) => {
                    // Only the lead and the block are taken (the rest stays
                    // free), in a form that can hold them and what
                    // `use_free` may add.
                    let lead = lead_of(b).0;
                    let take = lead + want;
                    if (lead == 0 || align <= 256) && take <= have && (big || take + MIN_UNITS <= MAX_USED_UNITS) {
                        Some(self.use_free(b, have, take, big))
                    } else {
                        self.file(b, have);
                        None
                    }
                }
                None => None,
            };
            let block = match fit {
                Some(block) => block,
                None => self.alloc(need)?.block,
            };
            let (s, total, _) = block.held_span();
            let (lead, at) = lead_of(s);
            let a = s.offset(lead);
            let have = total - lead;
            let units = if have - want >= MIN_UNITS { want } else { have };
            if lead > 0 {
                // The lead becomes free before `a`.
                a.set_header(0);
            }
            let held = a.set_used_as(units, big);
            if units < have {
                let tail = a.offset(units);
                tail.set_header(PREV_USED);
                self.counters.used_bytes -= units_to_bytes(have - units);
                self.release_piece(tail, have - units);
            }
            if lead > 0 {
                // Free the lead; its predecessor is held (best fit never
                // leaves a free block before a free one).
                s.set_header(PREV_USED);
                self.counters.used_bytes -= units_to_bytes(lead);
                self.release_piece(s, lead);
            }
            debug_assert_eq!(held.payload() as usize, at);
            Some(held)
        }
    }
}
