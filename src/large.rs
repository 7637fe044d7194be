//! Large blocks, each in its own mapping, and the table that owns them.
//!
//! A request too big for the heap (or above the mmap threshold when the
//! heap has no free block for it) gets a private anonymous mapping with the
//! payload 16 bytes in (or at the requested alignment). Nothing is stored in
//! the mapping itself: a hash table keyed by payload address records each
//! mapping's base and length, so `free` of a pointer that is not ours is
//! recognised by a failed look-up, never by reading memory that might not be
//! there. A freed entry leaves a tombstone ([`crate::addrmap`]), so a second
//! free of a recently freed large block is reported as a double free.

use crate::addrmap::{AddrMap, Found};
use crate::os;

/// What the table knows about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A live large block: its mapping (which ends with an inaccessible
    /// guard page when `guarded`).
    Live { base: usize, len: usize, guarded: bool },
    /// A large block that was freed.
    Freed,
    Unknown,
}

#[derive(Default)]
pub struct MapTable {
    /// payload → (base, length, guarded).
    map: AddrMap<(usize, usize, bool)>,
    /// Bytes of all live mappings.
    pub bytes: usize,
    pub peak_bytes: usize,
    pub peak_count: usize,
}

impl MapTable {
    pub const fn new() -> Self {
        MapTable { map: AddrMap::new(), bytes: 0, peak_bytes: 0, peak_count: 0 }
    }

    pub fn count(&self) -> usize {
        self.map.len()
    }

    pub fn lookup(&self, key: usize) -> Lookup {
        match self.map.get(key) {
            Found::Live((base, len, guarded)) => Lookup::Live { base, len, guarded },
            Found::Removed => Lookup::Freed,
            Found::Absent => Lookup::Unknown,
        }
    }

    /// Makes room for one more mapping before it is made, so that recording
    /// it cannot fail afterwards. False if the table cannot grow.
    pub fn reserve(&mut self) -> bool {
        self.map.reserve(1)
    }

    /// Records a live mapping; false if the table cannot grow.
    pub fn insert(&mut self, key: usize, base: usize, len: usize, guarded: bool) -> bool {
        if !self.map.insert(key, (base, len, guarded)) {
            return false;
        }
        self.bytes += len;
        self.peak_bytes = self.peak_bytes.max(self.bytes);
        self.peak_count = self.peak_count.max(self.map.len());
        true
    }

    /// Marks a live mapping freed, keeping its key as a tombstone.
    pub fn remove(&mut self, key: usize) {
        if let Some((_, len, _)) = self.map.remove(key) {
            self.bytes -= len;
        }
    }

    /// Visits every live mapping as `(payload, base, len)`.
    pub fn for_each(&self, mut f: impl FnMut(usize, usize, usize)) {
        self.map.for_each(|key, (base, len, _)| f(key, base, len));
    }

    /// Live entries and bytes counted by a walk (for the checker).
    pub fn walk_count(&self) -> (usize, usize) {
        let (mut n, mut bytes) = (0, 0);
        self.for_each(|_, _, len| {
            n += 1;
            bytes += len;
        });
        (n, bytes)
    }
}

/// A mapping for a large block of `size` bytes aligned to `align`, ending
/// with an inaccessible guard page, the block placed as close to it as the
/// alignment allows (so an overflow faults at once): `(payload, base, len)`,
/// `len` including the guard page.
///
/// The slack between the block and the guard page is less than
/// `max(align, page)`: it holds the hardened mode's canary, so its cost must
/// not grow with the alignment. Up to a page of alignment the block ends at
/// the guard page, rounded down to the alignment; above a page the block
/// starts at an aligned address and the guard page follows the block's
/// last page, the pages around them given back.
pub fn map_guarded(size: usize, align: usize, page: usize) -> Option<(usize, usize, usize)> {
    // A block of 0 bytes still owns a byte, so its address is its own.
    let size = size.max(1);
    let align = align.max(16);
    let body = crate::config::checked_round_up(size.checked_add(align)?, page)?;
    let len = body.checked_add(page)?;
    if len > isize::MAX as usize {
        return None;
    }
    let base = os::map_accounted(len)?;
    let (payload, first, guard) = if align <= page {
        let guard = base + body;
        (((guard - size) & !(align - 1)), base, guard)
    } else {
        let payload = crate::config::round_up(base, align);
        (payload, payload, crate::config::round_up(payload + size, page))
    };
    // SAFETY: the trimmed ranges are parts of our fresh mapping outside
    // `[first, guard + page)`; the guard page lies inside the mapping
    // (`guard + page <= base + len`) and nothing lives there.
    unsafe {
        if first > base {
            os::unmap(base, first - base);
        }
        if base + len > guard + page {
            os::unmap(guard + page, base + len - guard - page);
        }
        if libc::mprotect(guard as *mut libc::c_void, page, libc::PROT_NONE) != 0 {
            os::unmap(first, guard + page - first);
            return None;
        }
    }
    Some((payload, first, guard + page - first))
}

/// The mapping for a large block of `size` bytes aligned to `align` (a
/// power of two): `(payload, base, len)`. Excess pages from alignment are
/// unmapped.
pub fn map_block(size: usize, align: usize, page: usize) -> Option<(usize, usize, usize)> {
    // A block of 0 bytes still owns a byte, so its address is its own.
    let size = size.max(1);
    let lead = if align <= 16 { 16 } else { align + 16 };
    let len = crate::config::checked_round_up(size.checked_add(lead)?, page)?;
    if len > isize::MAX as usize {
        return None;
    }
    let base = os::map_accounted(len)?;
    if align <= 16 {
        return Some((base + 16, base, len));
    }
    // Aligned: the payload goes at the first aligned address at least 16
    // bytes in (or at the base itself when the base is already aligned and
    // the alignment is a page or more); whole pages before and after the
    // block are returned.
    let payload = if align >= page && base % align == 0 { base } else { crate::config::round_up(base + 16, align) };
    let first = (payload - if payload == base { 0 } else { 16 }) & !(page - 1);
    let end = crate::config::round_up(payload + size, page);
    // SAFETY: the trimmed ranges are parts of our fresh mapping that the
    // block does not use.
    unsafe {
        if first > base {
            os::unmap(base, first - base);
        }
        if base + len > end {
            os::unmap(end, base + len - end);
        }
    }
    Some((payload, first, end - first))
}
