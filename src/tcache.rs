//! Per-thread caches of freed small blocks: the fast path.
//!
//! A freed block of at most [`TCACHE_MAX_UNITS`] goes onto its thread's list
//! for its exact size instead of into the heap; the next malloc of that size
//! on that thread pops it. Neither touches the heap lock, the bins or the
//! neighbours. A cached block stays *used* as far as the heap is concerned
//! (its header is not touched: only the heap writes headers), so the heap
//! never merges it away.
//!
//! A cached block's payload holds two words: the link to the next cached
//! block of its size, masked with its own address and a secret (as glibc's
//! safe-linking does), and a keyed mark that says "cached", which `free`
//! checks to report a double free (a 2^-64 chance of a false alarm). A link
//! overwritten after free decodes to an arbitrary address, which fails the
//! region, tag and mark checks before anything is handed out.
//!
//! Caches are bounded (a count per size and bytes per thread), go back to
//! the heap when their thread exits (a pthread key destructor), and when a
//! forked child finds caches of threads that do not exist in it.

use crate::block::Block;
use crate::config::TCACHE_MAX_UNITS;
use crate::region::RegionTable;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

const CLASSES: usize = TCACHE_MAX_UNITS as usize + 1;

static SECRET: AtomicUsize = AtomicUsize::new(0x5bd1_e995_2f7a_3c61);

/// Keys the links and marks with process-specific randomness (once, at
/// start-up, before any block is cached).
pub fn set_secret(s: usize) {
    SECRET.store(s, Relaxed);
}

/// The mark a cached block carries in payload word 1.
#[inline(always)]
pub fn mark(b: Block) -> usize {
    b.addr().rotate_left(29) ^ SECRET.load(Relaxed)
}

#[inline(always)]
fn encode(next: usize, at: Block) -> usize {
    next ^ (at.addr() >> 12) ^ SECRET.load(Relaxed)
}

/// Whether `at` is a block of `units` that this or another cache put in a
/// list: a header position in a region, with a valid used header of that
/// size, carrying the cache mark.
///
/// # Safety
/// `regions` must be the heap's region table.
#[inline(always)]
unsafe fn is_cached(regions: &RegionTable, at: usize, units: u32) -> bool {
    let b = Block::at(at as *mut u8);
    // SAFETY: memory is read only once `at` is known to be a header position
    // inside a mapped heap region; a block with a valid used header of at
    // least 2 units has the two payload words.
    at % 16 == 12 && regions.contains(at) && unsafe { b.is_valid_used() && b.units() == units && b.cache_key() == mark(b) }
}

/// The C entry points counted in statistics.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Call {
    Malloc = 0,
    Free = 1,
    Calloc = 2,
    Realloc = 3,
    /// Every aligned entry point (memalign, posix_memalign, aligned_alloc,
    /// valloc, pvalloc).
    Memalign = 4,
}

pub(crate) const CALLS: usize = 5;

/// Statistics a thread keeps for itself; read by others with relaxed loads.
#[derive(Default)]
pub struct ThreadCounters {
    pub calls: [AtomicU64; CALLS],
    /// Bytes requested by malloc, calloc, realloc and the aligned calls.
    pub requested: AtomicU64,
    pub cached_bytes: AtomicU64,
    pub cached_blocks: AtomicU64,
    /// Small mallocs served by the cache, and those that found it empty.
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// Adds `n` to a counter only its owner writes (a plain load and store: no
/// atomic read-modify-write on the fast path).
#[inline(always)]
pub fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

#[inline(always)]
pub fn sub(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_sub(n), Relaxed);
}

/// Why a cache operation could not complete.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheFault {
    /// A list link or a cached block's header is not what the cache wrote.
    Corrupted(usize),
}

pub struct Tcache {
    heads: [usize; CLASSES],
    counts: [u16; CLASSES],
    limits: [u16; CLASSES],
    pub max_bytes: u64,
    pub counters: ThreadCounters,
    /// Registry links (see [`crate::global`]).
    pub next: *mut Tcache,
    pub prev: *mut Tcache,
}

impl Tcache {
    /// A cache whose list `u` holds at most `limit_for(u)` blocks and whose
    /// total stays below `max_bytes`.
    pub fn new(max_bytes: u64, per_class_bytes: usize) -> Self {
        let mut limits = [0u16; CLASSES];
        for (u, l) in limits.iter_mut().enumerate().skip(crate::config::MIN_UNITS as usize) {
            *l = (per_class_bytes / (u << 4)).clamp(2, 64) as u16;
        }
        Tcache {
            heads: [0; CLASSES],
            counts: [0; CLASSES],
            limits,
            max_bytes,
            counters: ThreadCounters::default(),
            next: core::ptr::null_mut(),
            prev: core::ptr::null_mut(),
        }
    }

    /// Pops a cached block of exactly `units`, re-tagged as held by the
    /// program. `Ok(None)` when the list is empty.
    ///
    /// # Safety
    /// `regions` must be the heap's region table.
    #[inline(always)]
    pub unsafe fn pop(&mut self, regions: &RegionTable, units: u32) -> Result<Option<Block>, CacheFault> {
        let head = self.heads[units as usize];
        if head == 0 {
            return Ok(None);
        }
        let b = Block::at(head as *mut u8);
        // SAFETY: `b` is checked before its payload is read.
        unsafe {
            if !is_cached(regions, head, units) {
                return Err(CacheFault::Corrupted(head));
            }
            self.heads[units as usize] = encode(b.cache_link(), b);
            b.set_cache_key(0);
        }
        self.counts[units as usize] -= 1;
        sub(&self.counters.cached_bytes, (units as u64) << 4);
        sub(&self.counters.cached_blocks, 1);
        Ok(Some(b))
    }

    /// Whether list `units` has room for one more block.
    #[inline(always)]
    pub fn has_room(&self, units: u32) -> bool {
        self.counts[units as usize] < self.limits[units as usize]
            && self.counters.cached_bytes.load(Relaxed) + ((units as u64) << 4) <= self.max_bytes
    }

    /// Caches held block `b` of `units`.
    ///
    /// # Safety
    /// `b` must be a block held by the program (header checked), with
    /// `units <= TCACHE_MAX_UNITS`, and `has_room(units)`.
    #[inline(always)]
    pub unsafe fn push(&mut self, b: Block, units: u32) {
        // SAFETY: `b` is a held block whose payload is at least 28 bytes.
        unsafe {
            b.set_cache_link(encode(self.heads[units as usize], b));
            b.set_cache_key(mark(b));
        }
        self.heads[units as usize] = b.addr();
        self.counts[units as usize] += 1;
        add(&self.counters.cached_bytes, (units as u64) << 4);
        add(&self.counters.cached_blocks, 1);
    }

    /// Takes up to `max` blocks off list `units` (checked as [`Tcache::pop`]
    /// does) and hands each to `f`.
    ///
    /// # Safety
    /// As for [`Tcache::pop`].
    pub unsafe fn drain(
        &mut self,
        regions: &RegionTable,
        units: u32,
        max: usize,
        mut f: impl FnMut(Block),
    ) -> Result<(), CacheFault> {
        for _ in 0..max {
            let head = self.heads[units as usize];
            if head == 0 {
                break;
            }
            let b = Block::at(head as *mut u8);
            // SAFETY: as in `pop`.
            unsafe {
                if !is_cached(regions, head, units) {
                    return Err(CacheFault::Corrupted(head));
                }
                self.heads[units as usize] = encode(b.cache_link(), b);
                b.set_cache_key(0);
            }
            self.counts[units as usize] -= 1;
            sub(&self.counters.cached_bytes, (units as u64) << 4);
            sub(&self.counters.cached_blocks, 1);
            f(b);
        }
        Ok(())
    }

    /// Takes every block out of the cache, handing each to `f`.
    ///
    /// # Safety
    /// As for [`Tcache::pop`].
    pub unsafe fn drain_all(&mut self, regions: &RegionTable, mut f: impl FnMut(Block)) -> Result<(), CacheFault> {
        for u in crate::config::MIN_UNITS..=TCACHE_MAX_UNITS {
            // SAFETY: forwarded.
            unsafe { self.drain(regions, u, usize::MAX, &mut f)? };
        }
        Ok(())
    }

    /// How many blocks list `units` holds.
    pub fn count(&self, units: u32) -> usize {
        self.counts[units as usize] as usize
    }

    pub fn limit(&self, units: u32) -> usize {
        self.limits[units as usize] as usize
    }

    /// Visits every cached block without changing the cache, stopping at a
    /// link that fails its checks.
    ///
    /// # Safety
    /// As for [`Tcache::pop`]; the cache must not change meanwhile.
    pub unsafe fn for_each(&self, regions: &RegionTable, mut f: impl FnMut(Block, u32)) -> Result<(), CacheFault> {
        for u in crate::config::MIN_UNITS..=TCACHE_MAX_UNITS {
            let mut at = self.heads[u as usize];
            let mut n = 0;
            while at != 0 {
                let b = Block::at(at as *mut u8);
                // SAFETY: as in `pop`.
                unsafe {
                    if !is_cached(regions, at, u) {
                        return Err(CacheFault::Corrupted(at));
                    }
                    f(b, u);
                    at = encode(b.cache_link(), b);
                }
                n += 1;
                if n > self.counts[u as usize] as usize {
                    return Err(CacheFault::Corrupted(at));
                }
            }
        }
        Ok(())
    }
}
