//! The table of heap regions: which address ranges hold boundary-tagged
//! blocks. Every pointer from the program, and every free-list link read
//! from heap memory, is looked up here before any header is read, so a wild
//! pointer ends in a clear message rather than a SIGSEGV.
//!
//! Regions are only added (and their ends moved) under the heap lock, but
//! the table is read without it by `free` on any thread: its fields are
//! atomics, and a region, once recorded, is never unmapped (only trimmed at
//! its end, which never moves below a block the program holds).

use crate::config::MAX_REGIONS;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct RegionTable {
    starts: [AtomicUsize; MAX_REGIONS],
    ends: [AtomicUsize; MAX_REGIONS],
    count: AtomicUsize,
}

impl Default for RegionTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RegionTable {
    pub const fn new() -> Self {
        RegionTable {
            starts: [const { AtomicUsize::new(0) }; MAX_REGIONS],
            ends: [const { AtomicUsize::new(0) }; MAX_REGIONS],
            count: AtomicUsize::new(0),
        }
    }

    /// Whether `addr` lies in a heap region. The first region (normally the
    /// sbrk heap) is checked inline; the rest out of line.
    #[inline(always)]
    pub fn contains(&self, addr: usize) -> bool {
        let s = self.starts[0].load(Relaxed);
        if addr.wrapping_sub(s) < self.ends[0].load(Relaxed).wrapping_sub(s) {
            return true;
        }
        self.contains_slow(addr)
    }

    #[cold]
    #[inline(never)]
    fn contains_slow(&self, addr: usize) -> bool {
        self.find(addr).is_some()
    }

    /// The index of the region holding `addr`.
    pub fn find(&self, addr: usize) -> Option<usize> {
        let n = self.count.load(Relaxed);
        (0..n).find(|&i| {
            let s = self.starts[i].load(Relaxed);
            addr.wrapping_sub(s) < self.ends[i].load(Relaxed).wrapping_sub(s)
        })
    }

    /// Records a new region; `None` when the table is full.
    pub fn add(&self, start: usize, end: usize) -> Option<usize> {
        let i = self.count.load(Relaxed);
        if i == MAX_REGIONS {
            return None;
        }
        self.starts[i].store(start, Relaxed);
        self.ends[i].store(end, Relaxed);
        self.count.store(i + 1, core::sync::atomic::Ordering::Release);
        Some(i)
    }

    pub fn set_end(&self, i: usize, end: usize) {
        self.ends[i].store(end, Relaxed);
    }

    pub fn len(&self) -> usize {
        self.count.load(Relaxed)
    }

    pub fn start(&self, i: usize) -> usize {
        self.starts[i].load(Relaxed)
    }

    pub fn end(&self, i: usize) -> usize {
        self.ends[i].load(Relaxed)
    }
}
