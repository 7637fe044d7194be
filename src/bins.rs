//! The free blocks of a heap, segregated by size, with best-fit search.
//!
//! - Small blocks (< 1,024 units, 16 KiB) sit in exact-size lists
//!   ([`crate::freelist`]): the first non-empty list at or above a request is
//!   its best fit, found with two bit scans.
//! - Larger blocks sit in tree bins ([`crate::tree`]): 32 bins per power of
//!   two of units, each a treap ordered by (size, address). The best fit is
//!   the lower bound in the request's own bin or, failing that, the leftmost
//!   block of the next non-empty bin.
//!
//! Invariant: bit `i` of `tree_map` is set iff tree bin `i` is non-empty
//! (and likewise for the small lists' bitmap). Every free block except the
//! top of the current region is in exactly one bin, the one its size maps to.

use crate::block::{BadLink, Block};
use crate::config::{SMALL_LIMIT_SHIFT, SMALL_LIMIT_UNITS, TREE_BINS, TREE_SUB_BITS};
use crate::freelist::SmallBins;
use crate::region::RegionTable;
use crate::tree::Treap;

const MAP_WORDS: usize = TREE_BINS.div_ceil(64);

/// The tree bin for a free block (or request) of `units >= SMALL_LIMIT_UNITS`.
#[inline]
pub fn tree_index(units: u32) -> usize {
    debug_assert!(units >= SMALL_LIMIT_UNITS);
    let fl = 31 - units.leading_zeros();
    let sl = (units >> (fl - TREE_SUB_BITS)) & ((1 << TREE_SUB_BITS) - 1);
    (((fl - SMALL_LIMIT_SHIFT) << TREE_SUB_BITS) + sl) as usize
}

pub struct Bins {
    pub small: SmallBins,
    trees: [Treap; TREE_BINS],
    tree_map: [u64; MAP_WORDS],
}

impl Default for Bins {
    fn default() -> Self {
        Self::new()
    }
}

impl Bins {
    pub const fn new() -> Self {
        Bins { small: SmallBins::new(), trees: [Treap::new(); TREE_BINS], tree_map: [0; MAP_WORDS] }
    }

    pub fn tree(&self, i: usize) -> &Treap {
        &self.trees[i]
    }

    pub fn tree_map_bit(&self, i: usize) -> bool {
        self.tree_map[i / 64] & (1 << (i % 64)) != 0
    }

    fn mark(&mut self, i: usize, on: bool) {
        if on {
            self.tree_map[i / 64] |= 1 << (i % 64);
        } else {
            self.tree_map[i / 64] &= !(1 << (i % 64));
        }
    }

    /// The first non-empty tree bin at or after `i`.
    fn next_tree(&self, i: usize) -> Option<usize> {
        let mut w = i / 64;
        let mut bits = self.tree_map.get(w)? & (u64::MAX << (i % 64));
        loop {
            if bits != 0 {
                return Some(w * 64 + bits.trailing_zeros() as usize);
            }
            w += 1;
            bits = *self.tree_map.get(w)?;
        }
    }

    /// Files free block `b` of `units` (header and footer written).
    ///
    /// # Safety
    /// `b` must be a free block of `units` in a heap region, in no bin.
    pub unsafe fn insert(&mut self, regions: &RegionTable, b: Block, units: u32) -> Result<(), BadLink> {
        if units < SMALL_LIMIT_UNITS {
            // SAFETY: forwarded to the caller.
            unsafe { self.small.push(regions, b, units) };
            Ok(())
        } else {
            let i = tree_index(units);
            // SAFETY: forwarded; tree blocks have room for three links.
            unsafe { self.trees[i].insert(regions, b)? };
            self.mark(i, true);
            Ok(())
        }
    }

    /// Takes free block `b` of `units` out of its bin.
    ///
    /// # Safety
    /// `b` must be a free block of `units` in a heap region.
    pub unsafe fn remove(&mut self, regions: &RegionTable, b: Block, units: u32) -> Result<(), BadLink> {
        if units < SMALL_LIMIT_UNITS {
            // SAFETY: forwarded to the caller.
            unsafe { self.small.unlink(regions, b, units) }
        } else {
            let i = tree_index(units);
            // SAFETY: forwarded to the caller.
            unsafe { self.trees[i].remove(regions, b)? };
            if self.trees[i].is_empty() {
                self.mark(i, false);
            }
            Ok(())
        }
    }

    /// Removes and returns the best fit for `units` among blocks smaller
    /// than `below` units: the smallest free block of at least `units`
    /// (lowest address among equal large blocks). `below` lets the heap
    /// weigh one more candidate kept outside the bins.
    ///
    /// # Safety
    /// The bins must hold only free blocks of the heap described by `regions`.
    pub unsafe fn take_best(
        &mut self,
        regions: &RegionTable,
        units: u32,
        below: u32,
    ) -> Result<Option<(Block, u32)>, BadLink> {
        if units < SMALL_LIMIT_UNITS
            && let Some(u) = self.small.smallest_at_least(units)
        {
            if u >= below {
                return Ok(None);
            }
            // SAFETY: list `u` is non-empty.
            return unsafe { self.small.pop(regions, u) }.map(|b| Some((b, u)));
        }
        if below <= SMALL_LIMIT_UNITS {
            return Ok(None);
        }
        let start = if units < SMALL_LIMIT_UNITS { 0 } else { tree_index(units) };
        let Some(mut i) = self.next_tree(start) else { return Ok(None) };
        // SAFETY: tree roots are free blocks of this heap.
        unsafe {
            let mut found = self.trees[i].lower_bound(regions, units)?;
            if found.is_none() && i == start {
                // Nothing large enough in the request's own bin: the next
                // non-empty bin holds only larger blocks; its least is best.
                if let Some(j) = self.next_tree(i + 1) {
                    i = j;
                    found = self.trees[i].lower_bound(regions, units)?;
                }
            }
            match found {
                Some(b) if b.units() < below => {
                    let u = b.units();
                    self.remove(regions, b, u)?;
                    Ok(Some((b, u)))
                }
                _ => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_index_is_monotonic_and_in_range() {
        let mut last = 0;
        for u in SMALL_LIMIT_UNITS..(1 << 20) {
            let i = tree_index(u);
            assert!(i >= last && i < TREE_BINS);
            last = i;
        }
        assert_eq!(tree_index(SMALL_LIMIT_UNITS), 0);
        assert_eq!(tree_index((1 << 30) - 1), TREE_BINS - 1);
    }
}
