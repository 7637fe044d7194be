//! Exact-size free lists for small blocks.
//!
//! List `u` holds free blocks of exactly `u` units (32 .. 16,368 bytes), doubly
//! linked through links 0 (next) and 1 (prev) so that a block merged with a
//! neighbour leaves its list in O(1). Invariant: bit `u` of `bitmap` is set
//! iff list `u` is non-empty, and bit `w` of `summary` iff word `w` of
//! `bitmap` is non-zero. Since every block in a list has the same size,
//! the first non-empty list at or above a request is its best fit.
//!
//! The head's prev link is not kept (the head is recognised by `heads[u]`),
//! so popping the head never touches the next block: one cache miss less
//! per pop. Every other block's prev link is exact.
//!
//! Links live in memory the program could write after a free (a use after
//! free), so every block is checked before it is used or its links are
//! followed: it must lie in a heap region, carry the free header of this
//! list's size, and (when not the head) be pointed at by its neighbours.

use crate::block::{free_header, BadLink, Block};
use crate::config::SMALL_LIMIT_UNITS;
use crate::region::RegionTable;

const NEXT: usize = 0;
const PREV: usize = 1;

const WORDS: usize = SMALL_LIMIT_UNITS as usize / 64;

pub struct SmallBins {
    heads: [Block; SMALL_LIMIT_UNITS as usize],
    /// Bit `u` (of word `u / 64`) set iff `heads[u]` is non-empty.
    bitmap: [u64; WORDS],
    /// Bit `w` set iff `bitmap[w]` is non-zero: the search for the first
    /// non-empty list at or above a size takes two bit scans, however far
    /// it lies.
    summary: u64,
}

const _: () = assert!(WORDS <= 64, "one summary word covers the bitmap");

impl Default for SmallBins {
    fn default() -> Self {
        Self::new()
    }
}

impl SmallBins {
    pub const fn new() -> Self {
        SmallBins { heads: [Block::NULL; SMALL_LIMIT_UNITS as usize], bitmap: [0; WORDS], summary: 0 }
    }

    /// Whether list `units` is marked non-empty.
    pub fn marked(&self, units: u32) -> bool {
        self.bitmap[units as usize / 64] & (1 << (units % 64)) != 0
    }

    fn mark(&mut self, units: u32) {
        let w = units as usize / 64;
        self.bitmap[w] |= 1 << (units % 64);
        self.summary |= 1 << w;
    }

    fn unmark(&mut self, units: u32) {
        let w = units as usize / 64;
        self.bitmap[w] &= !(1 << (units % 64));
        if self.bitmap[w] == 0 {
            self.summary &= !(1 << w);
        }
    }

    /// Whether each summary bit tells whether its bitmap word is non-zero
    /// (for the heap checker).
    pub fn summary_agrees(&self) -> bool {
        (0..WORDS).all(|w| (self.summary >> w & 1 != 0) == (self.bitmap[w] != 0))
    }

    /// The largest non-empty list.
    pub fn largest(&self) -> Option<u32> {
        let w = (self.summary != 0).then(|| 63 - self.summary.leading_zeros() as usize)?;
        Some((w * 64) as u32 + 63 - self.bitmap[w].leading_zeros())
    }

    pub fn head(&self, units: u32) -> Block {
        self.heads[units as usize]
    }

    /// The smallest non-empty list of at least `units`, if any.
    #[inline]
    pub fn smallest_at_least(&self, units: u32) -> Option<u32> {
        let w = units as usize / 64;
        let bits = *self.bitmap.get(w)? & (u64::MAX << (units % 64));
        if bits != 0 {
            return Some((w * 64) as u32 + bits.trailing_zeros());
        }
        // The first non-empty word after `w`.
        let later = self.summary & (u64::MAX << w << 1);
        let w = (later != 0).then(|| later.trailing_zeros() as usize)?;
        Some((w * 64) as u32 + self.bitmap[w].trailing_zeros())
    }

    /// Pushes free block `b` of `units` (its header and footer written),
    /// and records it in the filed map.
    ///
    /// # Safety
    /// `b` must be a free block of `units < SMALL_LIMIT_UNITS` in a heap
    /// region, on no list.
    pub unsafe fn push(&mut self, regions: &RegionTable, b: Block, units: u32) {
        regions.filed().set(b.addr(), true);
        let head = self.heads[units as usize];
        // SAFETY: `b` is a free block of at least 2 units (room for two
        // links); `head`, when set, is a block on this list.
        unsafe {
            b.set_link(NEXT, head);
            if !head.is_null() {
                head.set_link(PREV, b);
            }
        }
        self.heads[units as usize] = b;
        self.mark(units);
    }

    /// Whether `n` is a free block of this list: at a header position,
    /// filed ([`crate::filed`]: not a stale copy of a block's words), with
    /// the free header of `units`. A filed header position is the start of
    /// a block some heap holds in its bins, so it lies in a heap region
    /// (asked of the page map here before the filed map existed: 2.5% of
    /// the 1-16 KiB path's instructions, and perl-hash's replay 4.6%).
    ///
    /// # Safety
    /// `regions` must describe the heap's mapped regions.
    #[inline]
    unsafe fn is_member(regions: &RegionTable, n: Block, units: u32) -> bool {
        Block::is_header_position(n.addr())
            && regions.filed().is_filed(n.addr())
            // SAFETY: `n` begins a filed block: it lies in a mapped heap
            // region, and is 4-aligned.
            && unsafe { n.header() == free_header(units) }
    }

    /// Whether `next`, read from `b`'s next link, may become the list's
    /// head: null, or a member of the list whose prev link is `b`.
    ///
    /// # Safety
    /// `b` must be a checked member of list `units`.
    #[inline]
    unsafe fn follows(regions: &RegionTable, b: Block, next: Block, units: u32) -> bool {
        // SAFETY: `next` is dereferenced only after `is_member`. A block
        // does not follow itself (a list looped on one block would hand it
        // out and keep it at the head).
        next.is_null() || (next != b && unsafe { Self::is_member(regions, next, units) && next.link(PREV) == b })
    }

    /// Removes `b` (of `units`) from its list after checking it and its
    /// neighbours' links to it.
    ///
    /// # Safety
    /// `b` must be a free block of `units` in a heap region, believed to be
    /// on list `units`.
    pub unsafe fn unlink(&mut self, regions: &RegionTable, b: Block, units: u32) -> Result<(), BadLink> {
        // SAFETY: `b` is a free small block in a heap region (caller);
        // neighbours are dereferenced only after `is_member`.
        unsafe {
            if b.header() != free_header(units) || !regions.filed().is_filed(b.addr()) {
                return Err(BadLink(b.addr()));
            }
            let next = b.link(NEXT);
            if self.heads[units as usize] == b {
                // The new head's prev link goes stale: it is not kept. The
                // next push writes through it: check it first.
                if !Self::follows(regions, b, next, units) {
                    return Err(BadLink(b.addr()));
                }
                self.heads[units as usize] = next;
                if next.is_null() {
                    self.unmark(units);
                }
                regions.filed().set(b.addr(), false);
                return Ok(());
            }
            let prev = b.link(PREV);
            if !Self::is_member(regions, prev, units) || prev.link(NEXT) != b {
                return Err(BadLink(b.addr()));
            }
            if !next.is_null() {
                if !Self::is_member(regions, next, units) || next.link(PREV) != b {
                    return Err(BadLink(b.addr()));
                }
                next.set_link(PREV, prev);
            }
            prev.set_link(NEXT, next);
        }
        regions.filed().set(b.addr(), false);
        Ok(())
    }

    /// Pops the most recently freed block of exactly `units`, checking it
    /// first: it was reached through a link a use after free could forge.
    ///
    /// # Safety
    /// List `units` must be non-empty.
    pub unsafe fn pop(&mut self, regions: &RegionTable, units: u32) -> Result<Block, BadLink> {
        let b = self.heads[units as usize];
        debug_assert!(!b.is_null());
        // SAFETY: `b` is checked before it is used.
        unsafe {
            let next = b.link(NEXT);
            if !Self::is_member(regions, b, units) || !Self::follows(regions, b, next, units) {
                return Err(BadLink(b.addr()));
            }
            self.heads[units as usize] = next;
        }
        if self.heads[units as usize].is_null() {
            self.unmark(units);
        }
        regions.filed().set(b.addr(), false);
        Ok(b)
    }
}
