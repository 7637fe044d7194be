//! An open-addressing hash map from addresses to small values, in memory
//! mapped straight from the system (it must never call malloc: it serves
//! the large-block table and the trace recorder).
//!
//! Linear probing; a removed entry leaves a tombstone that keeps its key,
//! so "was this address recorded and then removed?" can be answered until
//! the table is rebuilt (used to tell a double free from a wild pointer).
//! Keys are non-zero.

use crate::os;

#[derive(Clone, Copy)]
struct Slot<V> {
    /// 0: empty; otherwise the key (live, or a tombstone when `!live`).
    key: usize,
    live: bool,
    value: V,
}

const INITIAL_CAP: usize = 256;

/// What the map knows about a key (the recorder only inserts and removes;
/// look-ups serve the tests).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found<V> {
    Live(V),
    Removed,
    Absent,
}

pub struct AddrMap<V: Copy + Default> {
    slots: *mut Slot<V>,
    cap: usize,
    live: usize,
    /// Live entries plus tombstones.
    used: usize,
}

// SAFETY: the map owns its slot array; callers serialise access.
unsafe impl<V: Copy + Default + Send> Send for AddrMap<V> {}

impl<V: Copy + Default> Default for AddrMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Copy + Default> AddrMap<V> {
    pub const fn new() -> Self {
        AddrMap { slots: core::ptr::null_mut(), cap: 0, live: 0, used: 0 }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live
    }

    #[inline]
    fn home(&self, key: usize) -> usize {
        ((key >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) & (self.cap - 1)
    }

    #[inline]
    fn slot(&self, i: usize) -> Slot<V> {
        debug_assert!(i < self.cap);
        // SAFETY: `i < cap` and `slots` holds `cap` initialised slots.
        unsafe { *self.slots.add(i) }
    }

    #[inline]
    fn set(&mut self, i: usize, s: Slot<V>) {
        debug_assert!(i < self.cap);
        // SAFETY: as for `slot`; the map is borrowed mutably.
        unsafe { *self.slots.add(i) = s }
    }

    /// The slot holding `key` (live or tombstone).
    fn find(&self, key: usize) -> Option<usize> {
        if self.cap == 0 {
            return None;
        }
        let mut i = self.home(key);
        loop {
            let s = self.slot(i);
            if s.key == key {
                return Some(i);
            }
            if s.key == 0 {
                return None;
            }
            i = (i + 1) & (self.cap - 1);
        }
    }

    #[cfg(test)]
    pub fn get(&self, key: usize) -> Found<V> {
        match self.find(key) {
            Some(i) if self.slot(i).live => Found::Live(self.slot(i).value),
            Some(_) => Found::Removed,
            None => Found::Absent,
        }
    }

    /// Rebuilds with room for four times the live entries, dropping
    /// tombstones. False if no memory could be mapped.
    fn rebuild(&mut self) -> bool {
        let cap = (self.live * 4).max(INITIAL_CAP).next_power_of_two();
        let Some(mem) = os::map_metadata(cap * core::mem::size_of::<Slot<V>>()) else { return false };
        let (old, old_cap) = (self.slots, self.cap);
        // Fresh mappings are zero: every slot is empty (key 0).
        self.slots = mem as *mut Slot<V>;
        self.cap = cap;
        self.live = 0;
        self.used = 0;
        for i in 0..old_cap {
            // SAFETY: the old array holds `old_cap` slots and is still mapped.
            let s = unsafe { *old.add(i) };
            if s.live {
                self.place(s.key, s.value);
            }
        }
        if !old.is_null() {
            // SAFETY: the old array is ours and no longer referenced.
            unsafe { os::unmap_metadata(old as usize, old_cap * core::mem::size_of::<Slot<V>>()) };
        }
        true
    }

    fn place(&mut self, key: usize, value: V) {
        let mut i = self.home(key);
        let mut reuse = None;
        loop {
            let s = self.slot(i);
            if s.key == key {
                // Its own tombstone (or a live entry being replaced).
                if s.live {
                    self.live -= 1;
                }
                reuse = Some(i);
                break;
            }
            if s.key == 0 {
                break;
            }
            if !s.live && reuse.is_none() {
                reuse = Some(i);
            }
            i = (i + 1) & (self.cap - 1);
        }
        // The probe stopped at this key or at an empty slot, so no other slot
        // of the chain holds this key.
        let j = match reuse {
            Some(j) => j,
            None => {
                self.used += 1;
                i
            }
        };
        self.set(j, Slot { key, live: true, value });
        self.live += 1;
    }

    /// Makes sure `extra` more inserts will not need memory. False if the
    /// map cannot grow.
    pub fn reserve(&mut self, extra: usize) -> bool {
        (self.used + extra) * 2 <= self.cap || self.rebuild()
    }

    /// Records `key → value` (replacing a live entry). False if the map
    /// cannot grow.
    pub fn insert(&mut self, key: usize, value: V) -> bool {
        debug_assert!(key != 0);
        if !self.reserve(1) {
            return false;
        }
        self.place(key, value);
        true
    }

    /// Removes `key`, leaving a tombstone; returns its value if it was live.
    pub fn remove(&mut self, key: usize) -> Option<V> {
        let i = self.find(key)?;
        let s = self.slot(i);
        if !s.live {
            return None;
        }
        self.set(i, Slot { live: false, ..s });
        self.live -= 1;
        Some(s.value)
    }

    /// Visits every live entry.
    pub fn for_each(&self, mut f: impl FnMut(usize, V)) {
        for i in 0..self.cap {
            let s = self.slot(i);
            if s.live {
                f(s.key, s.value);
            }
        }
    }

    /// Forgets everything (the memory is kept).
    pub fn clear(&mut self) {
        if !self.slots.is_null() {
            // SAFETY: the slot array is ours; all-zero bytes are empty slots.
            unsafe { core::ptr::write_bytes(self.slots, 0, self.cap) };
        }
        self.live = 0;
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_and_tombstones() {
        let mut m: AddrMap<u64> = AddrMap::new();
        for k in 1..5000usize {
            assert!(m.insert(k * 16, k as u64));
        }
        assert_eq!(m.len(), 4999);
        assert_eq!(m.get(160), Found::Live(10));
        assert_eq!(m.remove(160), Some(10));
        assert_eq!(m.get(160), Found::Removed);
        assert_eq!(m.get(16 * 9999), Found::Absent);
        assert!(m.insert(160, 7));
        assert_eq!(m.get(160), Found::Live(7));
        assert_eq!(m.len(), 4999);
        let mut n = 0;
        m.for_each(|_, _| n += 1);
        assert_eq!(n, 4999);
    }
}
