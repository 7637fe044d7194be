//! The depot: chains of cached blocks that one thread's cache gave up,
//! for another thread's cache to take whole (tcmalloc's transfer cache).
//!
//! Why: when one thread frees what others allocate (a producer and its
//! consumer, a server's pool of workers), the freeing thread's cache
//! lists fill up while the allocating thread's run dry. Without the depot
//! both go through the heap: each block is merged into the free space
//! under the heap lock, then split off again, one at a time, for the other
//! thread. With it, a full list moves half of itself here as one
//! [`Chain`] (its links are the cache's own sealed links), and an empty
//! list of the same size takes a chain whole: one short lock per chain,
//! and no heap work. A thread that exits hands each of its lists over
//! the same way ([`crate::process::depot_put_lists`]).
//!
//! ```text
//!   thread B frees          depot (one lock)             thread A allocates
//!   list 3: full  --chain-->  size 3: [chain][chain]  --chain-->  list 3: empty
//! ```
//!
//! A block in the depot is a cached block: used as far as its heap or slab
//! is concerned, and sealed as a cache seals it, so freeing it again is a
//! double free, caught as for any cached block. The depot is bounded
//! ([`SLOTS`] chains of each size, and a number of bytes in all:
//! `FITALLOC_DEPOT_BYTES`, [`crate::config::DEPOT_BYTES`] by default); a
//! chain that does not fit goes home instead. It serves only a process with more than
//! one thread (a single thread's own cache already holds what it frees);
//! the decay and `malloc_trim` send every chain home.

use crate::block::units_to_bytes;
use crate::tcache::{Chain, CLASSES};

/// Chains kept of each size.
pub(crate) const SLOTS: usize = 4;

/// Chains of cached blocks, by size (see the module comment).
pub struct Depot {
    chains: [[Chain; SLOTS]; CLASSES],
    /// How many of `chains[u]` are in use (the first ones).
    count: [u8; CLASSES],
    bytes: usize,
    blocks: usize,
}

const NO_CHAIN: Chain = Chain { head: 0, len: 0, mark: 0 };

impl Depot {
    pub const fn new() -> Self {
        Depot { chains: [[NO_CHAIN; SLOTS]; CLASSES], count: [0; CLASSES], bytes: 0, blocks: 0 }
    }

    /// Keeps `chain` of blocks of `units`; gives it back when the depot
    /// would then hold more than `max_bytes`, or its slots of the size are
    /// taken.
    pub fn put(&mut self, units: u32, chain: Chain, max_bytes: usize) -> Result<(), Chain> {
        let u = units as usize;
        let bytes = units_to_bytes(units) * chain.len as usize;
        let n = self.count[u] as usize;
        if n == SLOTS || self.bytes + bytes > max_bytes {
            return Err(chain);
        }
        self.chains[u][n] = chain;
        self.count[u] += 1;
        self.bytes += bytes;
        self.blocks += chain.len as usize;
        Ok(())
    }

    /// Whether [`Depot::put`] would keep a chain of `len` blocks of
    /// `units`.
    pub fn has_room(&self, units: u32, len: usize, max_bytes: usize) -> bool {
        (self.count[units as usize] as usize) < SLOTS && self.bytes + units_to_bytes(units) * len <= max_bytes
    }

    /// The latest chain of blocks of `units` that has at most `max_len`
    /// blocks, taken out.
    pub fn take(&mut self, units: u32, max_len: u32) -> Option<Chain> {
        let u = units as usize;
        let n = self.count[u] as usize;
        let i = (0..n).rev().find(|&i| self.chains[u][i].len <= max_len)?;
        let chain = self.chains[u][i];
        self.chains[u].copy_within(i + 1..n, i);
        self.count[u] -= 1;
        self.bytes -= units_to_bytes(units) * chain.len as usize;
        self.blocks -= chain.len as usize;
        Some(chain)
    }

    /// Any chain, with the size of its blocks, taken out (to send it home).
    pub fn take_any(&mut self) -> Option<(u32, Chain)> {
        let u = (0..CLASSES).find(|&u| self.count[u] != 0)? as u32;
        let chain = self.chains[u as usize][self.count[u as usize] as usize - 1];
        self.take(u, chain.len).map(|c| (u, c))
    }

    /// Chains of blocks of `units` kept.
    pub fn chains(&self, units: u32) -> &[Chain] {
        &self.chains[units as usize][..self.count[units as usize] as usize]
    }

    /// Bytes and blocks kept.
    pub fn held(&self) -> (u64, u64) {
        (self.bytes as u64, self.blocks as u64)
    }

    /// Bytes and blocks of the chains of blocks of at most `max_units`.
    pub fn held_up_to(&self, max_units: u32) -> (u64, u64) {
        let last = (max_units as usize).min(CLASSES - 1);
        let mut held = (0, 0);
        for u in 0..=last {
            for c in &self.chains[u][..self.count[u] as usize] {
                held.0 += (units_to_bytes(u as u32) * c.len as usize) as u64;
                held.1 += c.len as u64;
            }
        }
        held
    }
}

impl Default for Depot {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(head: usize, len: u32) -> Chain {
        Chain { head, len, mark: 0 }
    }

    #[test]
    fn bounded_by_slots_and_bytes() {
        let mut d = Depot::new();
        const MAX: usize = 64 << 10;
        for i in 0..SLOTS {
            assert!(d.put(3, chain(0x1000 * (i + 1), 8), MAX).is_ok());
        }
        assert_eq!(d.put(3, chain(0x9000, 8), MAX), Err(chain(0x9000, 8)));
        assert_eq!(d.held(), ((SLOTS * 8 * 48) as u64, (SLOTS * 8) as u64));
        // Chains of 64 blocks: the byte bound stops the depot before the
        // slots of every size are taken.
        let mut kept = 0;
        for u in 4..CLASSES as u32 {
            while d.put(u, chain(0x1_0000 + u as usize, 64), MAX).is_ok() {
                kept += 1;
            }
        }
        assert!(d.held().0 as usize <= MAX);
        assert!(kept > 0);
        assert_eq!(Depot::new().put(2, chain(0x100, 1), 0), Err(chain(0x100, 1)));
    }

    #[test]
    fn takes_the_latest_chain_that_fits() {
        let mut d = Depot::new();
        d.put(5, chain(0x100, 4), 1 << 20).unwrap();
        d.put(5, chain(0x200, 16), 1 << 20).unwrap();
        d.put(5, chain(0x300, 2), 1 << 20).unwrap();
        assert_eq!(d.take(5, 8), Some(chain(0x300, 2)));
        assert_eq!(d.take(5, 8), Some(chain(0x100, 4)));
        assert_eq!(d.take(5, 8), None);
        assert_eq!(d.chains(5), &[chain(0x200, 16)]);
        assert_eq!(d.take_any(), Some((5, chain(0x200, 16))));
        assert_eq!(d.take_any(), None);
        assert_eq!(d.held(), (0, 0));
    }
}
