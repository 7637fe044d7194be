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
//! taken only if its bit is set: a stale copy of a block's words has no
//! bit, since the bit was cleared when the block left its bin.
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

    /// Whether a block filed in a heap's bins begins at header position `h`.
    #[inline(always)]
    pub fn is_filed(&self, h: usize) -> bool {
        self.leaf(h >> UNIT_SHIFT).is_some_and(|(l, w, bit)| l[w].load(Relaxed) & (1 << bit) != 0)
    }

    /// Records that the block at `h` (in a reserved range) is filed, or is
    /// filed no more.
    ///
    /// # Panics
    /// If `h`'s range was not [`FiledMap::reserve`]d (an allocator bug).
    #[inline(always)]
    pub fn set(&self, h: usize, filed: bool) {
        let (l, w, bit) = self.leaf(h >> UNIT_SHIFT).expect("filed map range not reserved");
        // A plain load and store: the heap's lock serialises every writer
        // of the word (see the module's notes).
        let v = l[w].load(Relaxed);
        l[w].store(if filed { v | 1 << bit } else { v & !(1 << bit) }, Relaxed);
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
    fn bits_are_per_unit_and_counted_across_words_and_leaves() {
        let m = leaked();
        let lo = (3usize << 30) - 8192;
        let hi = (3usize << 30) + 8192;
        assert!(m.reserve(lo, hi));
        assert!(!m.is_filed(lo + 12));
        let hs = [lo + 12, lo + 28, lo + 1036, (3usize << 30) - 4, (3usize << 30) + 12, hi - 4];
        for &h in &hs {
            m.set(h, true);
        }
        for &h in &hs {
            assert!(m.is_filed(h), "{h:#x}");
        }
        assert!(!m.is_filed(lo + 44));
        assert_eq!(m.count(lo, hi), hs.len());
        assert_eq!(m.count(lo + 16, hi), hs.len() - 1);
        assert_eq!(m.count(lo, (3usize << 30) + 12), hs.len() - 2);
        m.set(lo + 28, false);
        assert!(!m.is_filed(lo + 28));
        assert_eq!(m.count(lo, hi), hs.len() - 1);
        // Nothing reserved there: not filed, and no leaf made by asking.
        assert!(!m.is_filed(1 << 40));
        assert!(!m.reserve(1 << 50, (1 << 50) + 16));
    }
}
