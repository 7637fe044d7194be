//! The address → owner map: for any address, in two loads, which part of
//! the allocator owns its page (a heap region, a large block's mapping, a
//! large block freed from that page) or that nothing of ours is there.
//!
//! Every pointer the program hands us is looked up here before any of our
//! metadata in its neighbourhood is read, so a wild pointer ends in a clear
//! message instead of a fault, however many regions and mappings exist.
//!
//! # Shape
//!
//! A two-level radix tree over the 47-bit user address space at page
//! (4 KiB) granularity: the top level is an array in this structure, one
//! pointer per GiB; a leaf holds one 32-bit entry per page of its GiB and
//! is mapped from the system (never from the heap) the first time a range
//! in it is recorded. Leaves are never unmapped: 1 MiB of address space
//! per GiB the program ever used, and only the pages of it that hold
//! entries become resident (4 bytes per 4 KiB recorded: 0.1%).
//!
//! ```text
//!   address:  | 17 bits: top index | 18 bits: leaf index | 12 bits: in page |
//!   top[i] ──► leaf ──► entry (u32)
//! ```
//!
//! # Entries
//!
//! ```text
//!   | kind (3) | EDGE (1) | 0 (5) | id (23) |
//!   | SLAB (3) | 0 | units (5) | slab id (23) |
//! ```
//!
//! Bits 23..28 are 0 in every entry but a slab page's, where they hold
//! its block size (at least 2): so `free`'s fast path finds whether a
//! page is a slab's, and its size, with one shift and one mask.
//!
//! - `NONE` (0): nothing of ours.
//! - `REGION`: a page of heap region `id`. `EDGE` is set on a first or last
//!   page that the region covers only in part; the region's own bounds
//!   answer for those ([`crate::region`]). Other pages answer at once.
//! - `LARGE`: the page of the payload of large block slot `id`
//!   ([`crate::large`]; its other pages are not recorded).
//! - `FREED`: the page where the payload of large block slot `id` started
//!   before it was freed (a tombstone: a second free is a double free).
//! - `SLAB`: a page of blocks of one size, `units`, inside a heap region
//!   ([`crate::slab`]): the entry itself gives `free` the size, so it need
//!   not wait for the block's header to know where the block goes.
//!
//! Entries are written by the owner of the range under that owner's lock
//! and read without a lock (relaxed atomics): an entry for a block the
//! program holds never changes while it holds it.

use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering::*};

/// Bits of the address space the map covers (x86_64 and aarch64 user space).
const ADDRESS_BITS: u32 = 47;
/// Granularity of the map.
pub(crate) const PAGE_SHIFT: u32 = 12;
const LEAF_BITS: u32 = 18;
const TOP_BITS: u32 = ADDRESS_BITS - PAGE_SHIFT - LEAF_BITS;
const LEAF_ENTRIES: usize = 1 << LEAF_BITS;
const TOP_ENTRIES: usize = 1 << TOP_BITS;
const LEAF_BYTES: usize = LEAF_ENTRIES * 4;
/// The bits an address the map covers has clear.
pub(crate) const OUTSIDE: usize = !((1 << ADDRESS_BITS) - 1);

const KIND_SHIFT: u32 = 29;
const EDGE: u32 = 1 << 28;
const SLAB_UNITS_SHIFT: u32 = 23;
const SLAB_UNITS_MASK: u32 = 0x1F;
const ID_MASK: u32 = (1 << SLAB_UNITS_SHIFT) - 1;
/// Largest id an entry can name.
pub(crate) const MAX_ID: u32 = ID_MASK;
const SLAB_ID_MASK: u32 = ID_MASK;
/// Largest slab id an entry can name.
pub(crate) const MAX_SLAB_ID: u32 = SLAB_ID_MASK;

const K_REGION: u32 = 1;
const K_LARGE: u32 = 2;
const K_FREED: u32 = 3;
const K_SLAB: u32 = 4;

/// What the map says about a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    None,
    /// Heap region `id`; `edge`: its first or last page.
    Region { id: u32, edge: bool },
    /// Large block slot `id`.
    Large { id: u32 },
    /// The payload page of large block slot `id`, since freed.
    Freed { id: u32 },
    /// Slab `id`, whose blocks have `units` units.
    Slab { id: u32, units: u32 },
}

impl Owner {
    /// The entry that records `self`.
    pub const fn entry(self) -> u32 {
        match self {
            Owner::None => 0,
            Owner::Region { id, edge } => (K_REGION << KIND_SHIFT) | if edge { EDGE } else { 0 } | id,
            Owner::Large { id } => (K_LARGE << KIND_SHIFT) | id,
            Owner::Freed { id } => (K_FREED << KIND_SHIFT) | id,
            Owner::Slab { id, units } => (K_SLAB << KIND_SHIFT) | (units << SLAB_UNITS_SHIFT) | id,
        }
    }

    #[inline(always)]
    pub const fn decode(e: u32) -> Owner {
        let id = e & ID_MASK;
        match e >> KIND_SHIFT {
            K_REGION => Owner::Region { id, edge: e & EDGE != 0 },
            K_LARGE => Owner::Large { id },
            K_FREED => Owner::Freed { id },
            K_SLAB => Owner::Slab { id: slab_id(e), units: slab_units(e) },
            _ => Owner::None,
        }
    }
}

/// The entry of a heap region's interior page: the fast path's test.
#[inline(always)]
pub const fn interior_region_entry(e: u32) -> bool {
    // The kind and the EDGE bit at once (EDGE is the bit below the kind).
    const _: () = assert!(EDGE == 1 << (KIND_SHIFT - 1));
    e >> (KIND_SHIFT - 1) == K_REGION << 1
}

/// The block size in units of a slab page's entry, 0 for any other entry:
/// the fast path's test.
#[inline(always)]
pub const fn slab_units(e: u32) -> u32 {
    (e >> SLAB_UNITS_SHIFT) & SLAB_UNITS_MASK
}

/// The slab id of a slab page's entry (meaningful only where
/// [`slab_units`] is not 0).
#[inline(always)]
pub const fn slab_id(e: u32) -> u32 {
    e & SLAB_ID_MASK
}

type Leaf = [AtomicU32; LEAF_ENTRIES];

pub struct PageMap {
    top: [AtomicPtr<Leaf>; TOP_ENTRIES],
}

impl Default for PageMap {
    fn default() -> Self {
        Self::new()
    }
}

#[inline(always)]
const fn split(addr: usize) -> (usize, usize) {
    (addr >> (PAGE_SHIFT + LEAF_BITS), (addr >> PAGE_SHIFT) & (LEAF_ENTRIES - 1))
}

impl PageMap {
    pub const fn new() -> Self {
        PageMap { top: [const { AtomicPtr::new(core::ptr::null_mut()) }; TOP_ENTRIES] }
    }

    /// The raw entry for the page holding `addr` (0 outside the map).
    #[inline(always)]
    pub fn entry(&self, addr: usize) -> u32 {
        let (t, l) = split(addr);
        let Some(leaf) = self.top.get(t) else { return 0 };
        let leaf = leaf.load(Acquire);
        if leaf.is_null() {
            return 0;
        }
        // SAFETY: a non-null top entry is a leaf that is never unmapped;
        // `l` is masked to the leaf's length.
        unsafe { (*leaf)[l].load(Relaxed) }
    }

    /// [`PageMap::entry`] for an address inside the map's range
    /// (`addr & OUTSIDE == 0`): the fast paths test that together with
    /// alignment, in one instruction.
    #[inline(always)]
    pub fn entry_within(&self, addr: usize) -> u32 {
        debug_assert!(addr & OUTSIDE == 0);
        let (t, l) = split(addr);
        // SAFETY: `addr` is below 2^ADDRESS_BITS, so `t` is below
        // TOP_ENTRIES.
        let leaf = unsafe { self.top.get_unchecked(t) }.load(Acquire);
        if leaf.is_null() {
            return 0;
        }
        // SAFETY: as in `entry`.
        unsafe { (*leaf)[l].load(Relaxed) }
    }

    /// What owns the page holding `addr`.
    #[inline(always)]
    pub fn owner(&self, addr: usize) -> Owner {
        Owner::decode(self.entry(addr))
    }

    /// Makes sure every page of `[lo, hi)` has a leaf, so that recording
    /// the range cannot fail. False when the system has no memory for one
    /// (or the range is outside the map).
    pub fn reserve(&self, lo: usize, hi: usize) -> bool {
        if hi <= lo {
            return true;
        }
        let (first, _) = split(lo);
        let (last, _) = split(hi - 1);
        if last >= TOP_ENTRIES {
            return false;
        }
        (first..=last).all(|t| !self.leaf(t).is_null())
    }

    /// The leaf for top index `t`, mapped if it is missing (null when the
    /// system refuses).
    fn leaf(&self, t: usize) -> *mut Leaf {
        crate::os::table_in(&self.top[t], LEAF_BYTES, crate::os::map_table)
    }

    /// Writes `e` for every page that meets `[lo, hi)`.
    ///
    /// # Panics
    /// If the range was not [`PageMap::reserve`]d (an allocator bug).
    pub fn fill(&self, lo: usize, hi: usize, e: u32) {
        if hi <= lo {
            return;
        }
        let mut page = lo >> PAGE_SHIFT;
        let end = ((hi - 1) >> PAGE_SHIFT) + 1;
        while page < end {
            let (t, l) = split(page << PAGE_SHIFT);
            let leaf = self.top[t].load(Acquire);
            assert!(!leaf.is_null(), "page map range not reserved");
            let n = (LEAF_ENTRIES - l).min(end - page);
            // SAFETY: a published leaf, never unmapped; `l + n` stays
            // within it.
            let leaf: &Leaf = unsafe { &*leaf };
            for s in &leaf[l..l + n] {
                s.store(e, Relaxed);
            }
            page += n;
        }
    }

    /// Sets the entry of the single page holding `addr` (reserved).
    pub fn set(&self, addr: usize, e: u32) {
        self.fill(addr, addr + 1, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaked() -> &'static PageMap {
        // SAFETY: an all-zero PageMap is valid (null leaves).
        unsafe { &*(std::alloc::alloc_zeroed(std::alloc::Layout::new::<PageMap>()) as *const PageMap) }
    }

    #[test]
    fn entries_round_trip_every_kind() {
        for o in [
            Owner::None,
            Owner::Region { id: 0, edge: false },
            Owner::Region { id: MAX_ID, edge: true },
            Owner::Large { id: 7 },
            Owner::Freed { id: 12345 },
            Owner::Slab { id: 0, units: 2 },
            Owner::Slab { id: MAX_SLAB_ID, units: 31 },
        ] {
            assert_eq!(Owner::decode(o.entry()), o);
        }
        assert!(interior_region_entry(Owner::Region { id: 3, edge: false }.entry()));
        assert!(!interior_region_entry(Owner::Region { id: 3, edge: true }.entry()));
        assert!(!interior_region_entry(Owner::Large { id: 3 }.entry()));
        assert!(!interior_region_entry(Owner::Slab { id: 3, units: 2 }.entry()));
        assert_eq!(slab_units(Owner::Slab { id: 77, units: 17 }.entry()), 17);
        assert_eq!(slab_units(Owner::Region { id: MAX_ID, edge: true }.entry()), 0);
    }

    #[test]
    fn unrecorded_and_out_of_range_addresses_have_no_owner() {
        let m = leaked();
        assert_eq!(m.owner(0), Owner::None);
        assert_eq!(m.owner(usize::MAX), Owner::None);
        assert_eq!(m.owner(0x7fff_0000_0000), Owner::None);
        assert!(!m.reserve(1 << 50, (1 << 50) + 4096));
    }

    #[test]
    fn fill_covers_exactly_the_pages_met_across_leaves() {
        let m = leaked();
        // A range crossing a GiB (leaf) boundary, not page-aligned.
        let lo = (5usize << 30) - 3 * 4096 + 100;
        let hi = (5usize << 30) + 2 * 4096 + 1;
        assert!(m.reserve(lo, hi));
        let e = Owner::Large { id: 9 }.entry();
        m.fill(lo, hi, e);
        assert_eq!(m.owner(lo & !4095), Owner::Large { id: 9 });
        assert_eq!(m.owner(hi - 1), Owner::Large { id: 9 });
        assert_eq!(m.owner((5usize << 30) + 2 * 4096), Owner::Large { id: 9 });
        assert_eq!(m.owner((lo & !4095) - 1), Owner::None);
        assert_eq!(m.owner((hi & !4095) + 4096), Owner::None);
        m.fill(lo, hi, 0);
        assert_eq!(m.owner(lo), Owner::None);
    }
}
