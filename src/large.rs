//! Large blocks, each in its own mapping, and the table that owns them.
//!
//! A request too big for the heap (or above the mmap threshold when the
//! heap has no free block for it) gets a private anonymous mapping with the
//! payload 16 bytes in (or at the requested alignment). Nothing is stored in
//! the mapping itself: an open-addressing hash table keyed by payload
//! address records each mapping's base and length, so `free` of a pointer
//! that is not ours is recognised by a failed look-up, never by reading
//! memory that might not be there.
//!
//! A freed entry leaves a tombstone that remembers its key until the table
//! is rebuilt, so a second free of a recently freed large block is reported
//! as a double free rather than as an unknown pointer.

use crate::os;

/// One mapping. `key == 0`: empty slot. `len == 0`: tombstone.
#[derive(Clone, Copy, Default)]
struct Entry {
    key: usize,
    base: usize,
    len: usize,
}

/// What the table knows about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A live large block: its mapping.
    Live { base: usize, len: usize },
    /// A large block that was freed.
    Freed,
    Unknown,
}

pub struct MapTable {
    slots: *mut Entry,
    cap: usize,
    live: usize,
    /// Live entries plus tombstones.
    used: usize,
    /// Bytes of all live mappings.
    pub bytes: usize,
    pub peak_bytes: usize,
    pub peak_count: usize,
}

// SAFETY: the table owns its slot array; access is serialised by a lock.
unsafe impl Send for MapTable {}

const INITIAL_CAP: usize = 256;

impl Default for MapTable {
    fn default() -> Self {
        Self::new()
    }
}

impl MapTable {
    pub const fn new() -> Self {
        MapTable { slots: core::ptr::null_mut(), cap: 0, live: 0, used: 0, bytes: 0, peak_bytes: 0, peak_count: 0 }
    }

    pub fn count(&self) -> usize {
        self.live
    }

    #[inline]
    fn home(&self, key: usize) -> usize {
        ((key >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) & (self.cap - 1)
    }

    fn slot(&self, i: usize) -> Entry {
        debug_assert!(i < self.cap);
        // SAFETY: `i < cap` and `slots` holds `cap` entries.
        unsafe { *self.slots.add(i) }
    }

    fn set(&mut self, i: usize, e: Entry) {
        debug_assert!(i < self.cap);
        // SAFETY: as for `slot`; the table is borrowed mutably.
        unsafe { *self.slots.add(i) = e }
    }

    /// The slot holding `key` (live or tombstone).
    fn find(&self, key: usize) -> Option<usize> {
        if self.cap == 0 {
            return None;
        }
        let mut i = self.home(key);
        loop {
            let e = self.slot(i);
            if e.key == key {
                return Some(i);
            }
            if e.key == 0 {
                return None;
            }
            i = (i + 1) & (self.cap - 1);
        }
    }

    pub fn lookup(&self, key: usize) -> Lookup {
        match self.find(key) {
            Some(i) if self.slot(i).len != 0 => {
                let e = self.slot(i);
                Lookup::Live { base: e.base, len: e.len }
            }
            Some(_) => Lookup::Freed,
            None => Lookup::Unknown,
        }
    }

    /// Rebuilds the table with room for twice the live entries, dropping
    /// tombstones. False if no memory could be mapped for it.
    fn rebuild(&mut self) -> bool {
        let cap = (self.live * 4).max(INITIAL_CAP).next_power_of_two();
        let bytes = cap * core::mem::size_of::<Entry>();
        let Some(mem) = os::map(bytes) else { return false };
        let old = (self.slots, self.cap);
        self.slots = mem as *mut Entry;
        self.cap = cap;
        self.used = 0;
        self.live = 0;
        for i in 0..old.1 {
            // SAFETY: the old array holds `old.1` entries and is still mapped.
            let e = unsafe { *old.0.add(i) };
            if e.key != 0 && e.len != 0 {
                self.place(e);
            }
        }
        if !old.0.is_null() {
            // SAFETY: the old array is ours and no longer referenced.
            unsafe { os::unmap(old.0 as usize, old.1 * core::mem::size_of::<Entry>()) };
        }
        true
    }

    fn place(&mut self, e: Entry) {
        let mut i = self.home(e.key);
        let mut reuse = None;
        loop {
            let s = self.slot(i);
            if s.key == e.key {
                // A tombstone of the same address (the system reused it).
                reuse = Some(i);
                break;
            }
            if s.key == 0 {
                break;
            }
            if s.len == 0 && reuse.is_none() {
                reuse = Some(i);
            }
            i = (i + 1) & (self.cap - 1);
        }
        let j = match reuse {
            Some(j) => {
                // Drop any other tombstone of the same key further along.
                if self.slot(j).key != e.key
                    && let Some(k) = self.find(e.key)
                {
                    self.set(k, Entry { key: usize::MAX, base: 0, len: 0 });
                }
                j
            }
            None => {
                self.used += 1;
                i
            }
        };
        self.set(j, e);
        self.live += 1;
    }

    /// Records a live mapping; false if the table cannot grow.
    pub fn insert(&mut self, key: usize, base: usize, len: usize) -> bool {
        if (self.used + 1) * 2 > self.cap && !self.rebuild() {
            return false;
        }
        self.place(Entry { key, base, len });
        self.bytes += len;
        self.peak_bytes = self.peak_bytes.max(self.bytes);
        self.peak_count = self.peak_count.max(self.live);
        true
    }

    /// Marks a live mapping freed, keeping its key as a tombstone.
    pub fn remove(&mut self, key: usize) {
        if let Some(i) = self.find(key) {
            let e = self.slot(i);
            if e.len != 0 {
                self.bytes -= e.len;
                self.set(i, Entry { len: 0, ..e });
                self.live -= 1;
            }
        }
    }

    /// Updates a live mapping after it moved or changed size.
    pub fn replace(&mut self, old_key: usize, key: usize, base: usize, len: usize) -> bool {
        self.remove(old_key);
        self.insert(key, base, len)
    }

    /// Visits every live mapping as `(payload, base, len)`.
    pub fn for_each(&self, mut f: impl FnMut(usize, usize, usize)) {
        for i in 0..self.cap {
            let e = self.slot(i);
            if e.key != 0 && e.key != usize::MAX && e.len != 0 {
                f(e.key, e.base, e.len);
            }
        }
    }

    /// Live entries counted by a walk (for the checker).
    pub fn walk_count(&self) -> (usize, usize) {
        let (mut n, mut bytes) = (0, 0);
        self.for_each(|_, _, len| {
            n += 1;
            bytes += len;
        });
        (n, bytes)
    }
}

/// The mapping for a large block of `size` bytes aligned to `align` (a
/// power of two): `(payload, base, len)`. Excess pages from alignment are
/// unmapped.
pub fn map_block(size: usize, align: usize, page: usize) -> Option<(usize, usize, usize)> {
    let lead = if align <= 16 { 16 } else { align + 16 };
    let len = crate::config::checked_round_up(size.checked_add(lead)?, page)?;
    if len > isize::MAX as usize {
        return None;
    }
    let base = os::map(len)?;
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
