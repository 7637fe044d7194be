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
//! As the page map's ([`crate::pagemap`]): one pointer per GiB of address
//! space, to a leaf of 2^26 bits (8 MiB) mapped (reserved, not touched)
//! the first time a heap region in that GiB is recorded; only the pages of
//! a leaf whose units the heap files blocks at become resident: 1/128 of
//! the heap's memory at most. The pointers (1 MiB) and the leaves lie in
//! the metadata zone ([`crate::os`]), far from any block: a write at an
//! offset from a block (mimalloc-bench's 1 MiB underflow) must not reach
//! them, nor make a forged free block look filed.
//!
//! ```text
//!   address:  | 17 bits: top index | 26 bits: unit in the GiB | 4 bits |
//!   top ──► [top index] ──► leaf (2^20 words) ──► bit
//! ```
//!
//! Bits are written under the lock of the heap whose region holds the
//! block, and read under it: regions start and end on page boundaries, and
//! a word covers 1 KiB, so no word holds bits of two heaps.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};

const ADDRESS_BITS: u32 = 47;
const UNIT_SHIFT: u32 = crate::config::UNIT_SHIFT;
const GIB_SHIFT: u32 = 30;
const TOP_ENTRIES: usize = 1 << (ADDRESS_BITS - GIB_SHIFT);
const LEAF_WORDS: usize = 1 << (GIB_SHIFT - UNIT_SHIFT - 6);
const LEAF_BYTES: usize = LEAF_WORDS * 8;

type Leaf = [AtomicU64; LEAF_WORDS];
type Top = [AtomicPtr<Leaf>; TOP_ENTRIES];

pub struct FiledMap {
    /// Mapped by the first [`FiledMap::reserve`].
    top: AtomicPtr<Top>,
}

impl Default for FiledMap {
    fn default() -> Self {
        Self::new()
    }
}

/// The top index, word and bit of header position `h`.
#[inline(always)]
const fn split(h: usize) -> (usize, usize, u32) {
    let unit = h >> UNIT_SHIFT;
    let in_gib = unit & ((1 << (GIB_SHIFT - UNIT_SHIFT)) - 1);
    (h >> GIB_SHIFT, in_gib >> 6, (in_gib & 63) as u32)
}

impl FiledMap {
    pub const fn new() -> Self {
        FiledMap { top: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// The top level, once mapped.
    #[inline(always)]
    fn top(&self) -> Option<&Top> {
        let top = self.top.load(Acquire);
        // SAFETY: a published top level is never unmapped.
        (!top.is_null()).then(|| unsafe { &*top })
    }

    /// The word holding `h`'s bit, if its leaf exists.
    #[inline(always)]
    fn word(&self, h: usize) -> Option<(&AtomicU64, u64)> {
        let (t, w, bit) = split(h);
        let leaf = self.top()?.get(t)?.load(Acquire);
        if leaf.is_null() {
            return None;
        }
        // SAFETY: a published leaf is never unmapped; `w` is masked to it.
        Some((unsafe { &(*leaf)[w] }, 1 << bit))
    }

    /// Whether a block filed in a heap's bins begins at header position `h`.
    #[inline(always)]
    pub fn is_filed(&self, h: usize) -> bool {
        self.word(h).is_some_and(|(w, m)| w.load(Relaxed) & m != 0)
    }

    /// Records that the block at `h` (in a reserved range) is filed, or is
    /// filed no more.
    ///
    /// # Panics
    /// If `h`'s range was not [`FiledMap::reserve`]d (an allocator bug).
    #[inline(always)]
    pub fn set(&self, h: usize, filed: bool) {
        let (w, m) = self.word(h).expect("filed map range not reserved");
        // A plain load and store: the heap's lock serialises every writer
        // of the word (see the module's notes).
        let v = w.load(Relaxed);
        w.store(if filed { v | m } else { v & !m }, Relaxed);
    }

    /// Makes sure every address of `[lo, hi)` has a leaf. False when the
    /// system has no memory for one (or the range is outside the map).
    pub fn reserve(&self, lo: usize, hi: usize) -> bool {
        if hi <= lo {
            return true;
        }
        let (first, last) = (lo >> GIB_SHIFT, (hi - 1) >> GIB_SHIFT);
        if last >= TOP_ENTRIES {
            return false;
        }
        let top = crate::os::table_in(&self.top, core::mem::size_of::<Top>(), crate::os::map_table);
        // SAFETY: a published top level is never unmapped.
        !top.is_null() && (first..=last).all(|t| !crate::os::table_in(unsafe { &(*top)[t] }, LEAF_BYTES, crate::os::map_table).is_null())
    }

    /// How many bits are set for the units of `[lo, hi)` (16-aligned, a
    /// reserved range; for the heap checker, which compares the count with
    /// the blocks it finds in the bins).
    pub fn count(&self, lo: usize, hi: usize) -> usize {
        let (mut u, end) = (lo >> UNIT_SHIFT, hi >> UNIT_SHIFT);
        let mut n = 0;
        while u < end {
            let (t, w, bit) = split(u << UNIT_SHIFT);
            let leaf = self.top().map_or(core::ptr::null_mut(), |top| top[t].load(Acquire));
            assert!(!leaf.is_null(), "filed map range not reserved");
            // The bits of this word from `u`'s on, up to `end`.
            let span = (64 - bit as usize).min(end - u);
            let mask = if span == 64 { u64::MAX } else { ((1u64 << span) - 1) << bit };
            // SAFETY: a published leaf; `w` is masked to it.
            n += (unsafe { &(*leaf)[w] }.load(Relaxed) & mask).count_ones() as usize;
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
