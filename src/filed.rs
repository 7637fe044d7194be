//! The filed map: which header positions begin a free block that a heap
//! has filed in its bins (an exact-size list or a tree), kept outside the
//! heap's memory, one bit per 16-byte unit.
//!
//! A free block's links, header and footer lie in memory the program
//! could have written after a free. The bins check every block they reach
//! through a link (its header, its neighbours' links back to it), but
//! values that were once right pass those checks: a program that read a
//! free block's words while it was free, and writes them back once the
//! block's memory is part of a live block, with one neighbour's link
//! rewritten to name it again, made malloc hand out memory inside the live
//! block (found by a hostile review). Here the heap records what it filed,
//! where the program cannot write, and a block reached through a link is
//! followed only if a filed block begins there, and taken only if the
//! map agrees with its size: a stale copy of a block's words has no
//! marks (they were cleared when the block left its bin), and a larger
//! block's old header written over a smaller one filed at the same
//! address claims an end the map does not mark (found by a review).
//!
//! # Marks
//!
//! A filed block of `n` units marks its first two units and its last
//! (two marks for a block of two units). Free blocks are never adjacent,
//! so a filed block's first unit is the only marked unit whose next unit
//! is marked and whose previous one is not ([`FiledMap::is_filed`]), and
//! its last is marked with the next one clear ([`FiledMap::holds`]). A
//! block of the exact-size lists (below 16 KiB) is checked whole: no mark
//! between its second unit and its last, so no other filed block lies
//! inside the size it claims; a tree block at its ends only.
//!
//! # Shape
//!
//! A three-level radix tree: a top level of 2,048 pointers (16 KiB), one
//! per 64 GiB of address space, to middle levels of 1,024 pointers
//! (8 KiB), one per 64 MiB, to leaves of 2^22 bits (512 KiB), one per 16
//! bytes. Each level is mapped (reserved, not touched) the first time a
//! heap region in its range is recorded; only the pages of a leaf whose
//! units the heap files blocks at become resident: 1/128 of the heap's
//! memory at most. A leaf per 64 MiB (not per GiB) keeps what the map
//! reserves small where address space is scarce: under an `RLIMIT_AS`
//! limit each table is a mapping of its own that counts against it (a GiB
//! leaf took 8 MiB of a 32 MiB limit for a heap of a few KiB: found by a
//! review). Every level lies in the metadata zone ([`crate::os`]) while it
//! has room, far from any block: a write at an offset from a block
//! (mimalloc-bench's 1 MiB underflow) must not reach the map, nor make a
//! forged free block look filed.
//!
//! ```text
//!   address:  | 11 bits: top | 10 bits: middle | 22 bits: unit in 64 MiB | 4 bits |
//!   top ──► [top] ──► middle ──► [middle] ──► leaf (2^16 words) ──► bit
//! ```
//!
//! Bits are written under the lock of the heap whose region holds the
//! block, and read under it: regions start and end on page boundaries, and
//! a word covers 1 KiB, so no word holds bits of two heaps.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};

const ADDRESS_BITS: u32 = 47;
const UNIT_SHIFT: u32 = crate::config::UNIT_SHIFT;
/// Units of one leaf, as a shift: 2^22 units, 64 MiB.
const LEAF_SHIFT: u32 = 22;
const MID_BITS: u32 = 10;
const TOP_BITS: u32 = ADDRESS_BITS - UNIT_SHIFT - LEAF_SHIFT - MID_BITS;
const LEAF_WORDS: usize = 1 << (LEAF_SHIFT - 6);
const LEAF_BYTES: usize = LEAF_WORDS * 8;

/// Blocks below this many units (the exact-size lists') are checked
/// whole by [`FiledMap::holds`]; larger ones at their ends.
pub const EXACT_UNITS: u32 = crate::config::SMALL_LIMIT_UNITS;

type Leaf = [AtomicU64; LEAF_WORDS];
type Mid = [AtomicPtr<Leaf>; 1 << MID_BITS];
type Top = [AtomicPtr<Mid>; 1 << TOP_BITS];

pub struct FiledMap {
    /// Mapped by the first [`FiledMap::reserve`].
    top: AtomicPtr<Top>,
}

impl Default for FiledMap {
    fn default() -> Self {
        Self::new()
    }
}

/// The top and middle indexes of unit `u`'s leaf, and the word and bit
/// of `u` in it.
#[inline(always)]
const fn split(u: usize) -> (usize, usize, usize, u32) {
    let leaf = u >> LEAF_SHIFT;
    let in_leaf = u & ((1 << LEAF_SHIFT) - 1);
    (leaf >> MID_BITS, leaf & ((1 << MID_BITS) - 1), in_leaf >> 6, (in_leaf & 63) as u32)
}

impl FiledMap {
    pub const fn new() -> Self {
        FiledMap { top: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// The leaf holding unit `u`'s bit, if it exists, with the word and
    /// bit of `u` in it.
    #[inline(always)]
    fn leaf(&self, u: usize) -> Option<(&Leaf, usize, u32)> {
        let (t, m, w, bit) = split(u);
        let top = self.top.load(Acquire);
        if top.is_null() {
            return None;
        }
        // SAFETY: published levels are never unmapped; `m` and `w` are
        // masked to their level, and `t` is checked.
        unsafe {
            let mid = (*top).get(t)?.load(Acquire);
            if mid.is_null() {
                return None;
            }
            let leaf = (*mid)[m].load(Acquire);
            (!leaf.is_null()).then(|| (&*leaf, w, bit))
        }
    }

    /// Whether unit `u`'s bit is set (false where no leaf is).
    #[inline(always)]
    fn bit(&self, u: usize) -> bool {
        self.leaf(u).is_some_and(|(l, w, bit)| l[w].load(Relaxed) & (1 << bit) != 0)
    }

    /// Sets or clears unit `u`'s bit (in a reserved range).
    ///
    /// # Panics
    /// If `u`'s range was not [`FiledMap::reserve`]d (an allocator bug).
    #[inline(always)]
    fn set_bit(&self, u: usize, on: bool) {
        let (l, w, bit) = self.leaf(u).expect("filed map range not reserved");
        // A plain load and store: the heap's lock serialises every writer
        // of the word (see the module's notes).
        let v = l[w].load(Relaxed);
        l[w].store(if on { v | 1 << bit } else { v & !(1 << bit) }, Relaxed);
    }

    /// The units a filed block of `units` at unit `u` marks: its first two
    /// and its last (the second is the last for a block of two units).
    #[inline(always)]
    fn marks(u: usize, units: u32) -> [usize; 3] {
        [u, u + 1, u + units as usize - 1]
    }

    /// Records free block `h` of `units` as filed (`on`), or as filed no
    /// more.
    #[inline]
    pub fn file(&self, h: usize, units: u32, on: bool) {
        for m in Self::marks(h >> UNIT_SHIFT, units) {
            self.set_bit(m, on);
        }
    }

    /// Whether a filed block begins at header position `h`: its first two
    /// units are marked and the unit before it is not (so neither the
    /// second unit of a filed block nor the last one reads as a start:
    /// the unit before a last one is not marked, unless it is the second,
    /// whose own predecessor is).
    #[inline(always)]
    pub fn is_filed(&self, h: usize) -> bool {
        let u = h >> UNIT_SHIFT;
        self.bit(u) && self.bit(u + 1) && !self.bit(u - 1)
    }

    /// Whether the block filed at `h` has `units` units, as far as marks
    /// tell: a filed block begins there, its last unit is marked and the
    /// unit after it is not, and (below [`EXACT_UNITS`]) no unit between
    /// its second and its last is marked. So a header rewritten with
    /// another size (a larger free block's, written back over a smaller
    /// one filed at the same address: found by a review) is refused: the
    /// marks of the block really filed there, or of the blocks after it,
    /// lie inside or at the claimed end. Larger blocks (trees) are checked
    /// at their ends only (a scan over their whole span would cost a word
    /// per KiB of the block).
    #[inline]
    pub fn holds(&self, h: usize, units: u32) -> bool {
        let u = h >> UNIT_SHIFT;
        let last = u + units as usize - 1;
        if !self.is_filed(h) || !self.bit(last) || self.bit(last + 1) {
            return false;
        }
        units >= EXACT_UNITS || !self.any_in(u + 2, last)
    }

    /// Whether any unit of `[lo, hi)` is marked (a reserved range).
    fn any_in(&self, mut lo: usize, hi: usize) -> bool {
        while lo < hi {
            let Some((l, w, bit)) = self.leaf(lo) else { return false };
            let span = (64 - bit as usize).min(hi - lo);
            let mask = if span == 64 { u64::MAX } else { ((1u64 << span) - 1) << bit };
            if l[w].load(Relaxed) & mask != 0 {
                return true;
            }
            lo += span;
        }
        false
    }

    /// Makes sure every address of `[lo, hi)` has a leaf. False when the
    /// system has no memory for one (or the range is outside the map).
    pub fn reserve(&self, lo: usize, hi: usize) -> bool {
        use crate::os::{map_table, table_in};
        if hi <= lo {
            return true;
        }
        let (first, last) = (lo >> (UNIT_SHIFT + LEAF_SHIFT), (hi - 1) >> (UNIT_SHIFT + LEAF_SHIFT));
        if last >> MID_BITS >= 1 << TOP_BITS {
            return false;
        }
        let top = table_in(&self.top, core::mem::size_of::<Top>(), map_table);
        // SAFETY: published levels are never unmapped; the indexes are
        // masked to their level (the top one checked above).
        !top.is_null()
            && (first..=last).all(|leaf| unsafe {
                let mid = table_in(&(*top)[leaf >> MID_BITS], core::mem::size_of::<Mid>(), map_table);
                !mid.is_null()
                    && !table_in(&(*mid)[leaf & ((1 << MID_BITS) - 1)], LEAF_BYTES, map_table).is_null()
            })
    }

    /// How many bits are set for the units of `[lo, hi)` (16-aligned, a
    /// reserved range; for the heap checker, which compares the count with
    /// the blocks it finds in the bins).
    pub fn count(&self, lo: usize, hi: usize) -> usize {
        let (mut u, end) = (lo >> UNIT_SHIFT, hi >> UNIT_SHIFT);
        let mut n = 0;
        while u < end {
            let (l, w, bit) = self.leaf(u).expect("filed map range not reserved");
            // The bits of this word from `u`'s on, up to `end`.
            let span = (64 - bit as usize).min(end - u);
            let mask = if span == 64 { u64::MAX } else { ((1u64 << span) - 1) << bit };
            n += (l[w].load(Relaxed) & mask).count_ones() as usize;
            u += span;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaked() -> &'static FiledMap {
        // SAFETY: an all-zero FiledMap is valid (null leaves).
        unsafe { &*(std::alloc::alloc_zeroed(std::alloc::Layout::new::<FiledMap>()) as *const FiledMap) }
    }

    #[test]
    fn marks_tell_a_filed_block_and_its_size() {
        let m = leaked();
        let lo = (3usize << 30) - 8192;
        let hi = (3usize << 30) + 8192;
        assert!(m.reserve(lo, hi));
        // Header positions (≡ 12 mod 16); blocks of 2, 3 and 40 units, one
        // across the 64 MiB (leaf) boundary at 3 GiB, with used blocks
        // between them.
        let (a, b, c) = (lo + 12, lo + 12 + 16 * 6, (3usize << 30) - 16 * 20 + 12);
        assert!(!m.is_filed(a));
        m.file(a, 2, true);
        m.file(b, 3, true);
        m.file(c, 40, true);
        assert!(m.is_filed(a) && m.is_filed(b) && m.is_filed(c));
        assert!(m.holds(a, 2) && m.holds(b, 3) && m.holds(c, 40));
        // Another size at the same address: refused, larger or smaller.
        assert!(!m.holds(a, 3) && !m.holds(a, 6) && !m.holds(b, 2) && !m.holds(b, 4));
        assert!(!m.holds(c, 39) && !m.holds(c, 41) && !m.holds(c, 60));
        // A larger size whose end lands on a later block's mark: refused.
        assert!(!m.holds(a, 6) && !m.holds(a, 7) && !m.holds(a, 9));
        // The second and the last unit of a block are not starts.
        assert!(!m.is_filed(a + 16) && !m.is_filed(b + 16) && !m.is_filed(b + 32));
        assert!(!m.is_filed(c + 16) && !m.is_filed(c + 16 * 39) && !m.is_filed(c + 16 * 2));
        assert_eq!(m.count(lo, hi), 2 + 3 + 3);
        assert_eq!(m.count(lo + 16, hi), 1 + 3 + 3);
        m.file(b, 3, false);
        assert!(!m.is_filed(b) && !m.holds(b, 3));
        assert_eq!(m.count(lo, hi), 2 + 3);
        m.file(c, 40, false);
        m.file(a, 2, false);
        assert_eq!(m.count(lo, hi), 0);
        // Nothing reserved there: not filed, and no leaf made by asking.
        assert!(!m.is_filed(1 << 40));
        assert!(!m.reserve(1 << 50, (1 << 50) + 16));
    }
}
