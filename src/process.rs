//! The process's singletons: the page map, the heaps' region table, the
//! slabs, the heaps, and the large-block table, each behind its lock (ranks
//! in [`crate::sync::Rank`]). Every other module reaches them through here,
//! and gives held blocks back to where they came from (a slab or their
//! heap) through [`release_blocks`].
//!
//! # Arenas
//!
//! There is one heap per arena, each with its own lock, regions and bins,
//! up to [`MAX_ARENAS`]: `FITALLOC_ARENAS=n` (0: as many as the CPUs the
//! process may run on), so that threads on different cores rarely want
//! the same heap lock, while the footprint does not grow with the number
//! of threads. The default is one arena: on the 2-core machine this was
//! measured on, two arenas halved the heap lock's waits but not the time
//! (the waits were not what the threads spent their time on), and every
//! arena keeping free space of its own cost footprint (README, *Threads*). A thread takes its memory from
//! one arena ([`my_arena`]: its cache's, given round-robin when the cache
//! is made); a block goes back to the heap whose region holds it
//! ([`arena_of`]), whichever thread frees it. Only arena 0 takes memory
//! from the break; the others map their regions. A single-threaded
//! program uses arena 0 alone.

use crate::config::{self, MIN_UNITS, TCACHE_MAX_UNITS};
use crate::block::Block;
use crate::heap::{Heap, HeapParams};
use crate::large::MapTable;
use crate::options::OPT;
use crate::os::Os;
use crate::pagemap::{slab_id, slab_units, PageMap};
use crate::filed::FiledMap;
use crate::region::RegionTable;
use crate::slab::{GiveFault, Slabs, CONTAINER_UNITS, SLAB_BYTES};
use crate::depot::Depot;
use crate::tcache::{self, Chain, Tcache, CLASSES};
use crate::sync::{Guard, Locked, Rank, HEAP_RANKS};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

/// Who owns every address: heap regions and large mappings.
pub static PAGEMAP: PageMap = PageMap::new();

/// The heaps' record of the free blocks filed in their bins.
pub static FILED: FiledMap = FiledMap::new();
pub static REGIONS: RegionTable = RegionTable::new(&PAGEMAP, &FILED);

pub(crate) use crate::config::MAX_ARENAS;
const _: () = assert!(MAX_ARENAS == HEAP_RANKS.len(), "one heap lock rank per arena");

const PARAMS: HeapParams =
    HeapParams { trim_threshold: config::DEFAULT_TRIM_THRESHOLD, top_pad: config::DEFAULT_TOP_PAD, page: config::PAGE };

const fn arena_heap(i: usize) -> Locked<Heap<Os>> {
    Locked::new(HEAP_RANKS[i], Heap::new(Os, &REGIONS, PARAMS, i))
}

static HEAPS: [Locked<Heap<Os>>; MAX_ARENAS] =
    [arena_heap(0), arena_heap(1), arena_heap(2), arena_heap(3), arena_heap(4), arena_heap(5), arena_heap(6), arena_heap(7)];

/// Arenas in use (1 until start-up sets it: [`set_arenas`]).
static ARENAS: AtomicUsize = AtomicUsize::new(1);
/// The arena the next thread cache takes.
static NEXT_ARENA: AtomicUsize = AtomicUsize::new(0);

static SLABS: Locked<Slabs> = Locked::new(Rank::Slab, Slabs::new(&PAGEMAP));

static LARGE: Locked<MapTable> = Locked::new(Rank::Large, MapTable::new(&PAGEMAP));

static DEPOT: Locked<Depot> = Locked::new(Rank::Depot, Depot::new());
/// Chains the depot holds of each size, written under its lock: a hint
/// read without it, so that a refill looks into the depot only when it
/// may find something.
static DEPOT_STOCK: [AtomicU8; CLASSES] = [const { AtomicU8::new(0) }; CLASSES];

/// Sets the number of arenas (at start-up, before a second thread can
/// allocate): `n`, or with 0 the CPUs this process may run on; at most
/// [`MAX_ARENAS`].
pub fn set_arenas(n: usize) {
    let n = if n == 0 { crate::os::cpus() } else { n };
    ARENAS.store(n.clamp(1, MAX_ARENAS), Relaxed);
}

/// Arenas in use.
#[inline]
pub fn arenas() -> usize {
    ARENAS.load(Relaxed)
}

/// The arena for a new thread cache: round-robin.
pub fn next_arena() -> usize {
    NEXT_ARENA.fetch_add(1, Relaxed) % arenas()
}

/// The arena this thread takes memory from: its cache's, or, for a
/// thread without one, arena 0 while the process has one thread, else one
/// picked by its thread pointer.
#[inline]
pub fn my_arena(t: Option<&Tcache>) -> usize {
    match t {
        Some(t) => t.arena(),
        None if crate::sync::single_threaded() => 0,
        None => {
            // SAFETY: pthread_self has no preconditions.
            let me = unsafe { libc::pthread_self() } as usize;
            (me >> 12) % arenas()
        }
    }
}

/// The arena whose heap holds the block at `addr` (an address in a heap
/// region; 0 for any other).
#[inline]
pub fn arena_of(addr: usize) -> usize {
    if arenas() == 1 {
        return 0;
    }
    REGIONS.find(addr).map_or(0, |r| REGIONS.arena(r))
}

/// Locks the heap of `arena` for C function `op` (named in its messages).
#[inline]
pub fn heap(arena: usize, op: &'static str) -> Guard<'static, Heap<Os>> {
    let mut h = HEAPS[arena].lock();
    h.begin(op);
    h
}

/// Locks the heap holding `b` (a block of a heap region).
#[inline]
pub fn heap_of(b: Block, op: &'static str) -> Guard<'static, Heap<Os>> {
    heap(arena_of(b.addr()), op)
}

/// Runs `f` on every arena's heap in turn (one lock at a time).
pub fn each_heap(op: &'static str, mut f: impl FnMut(&mut Heap<Os>)) {
    for i in 0..arenas() {
        f(&mut heap(i, op));
    }
}

/// Locks every arena's heap, in rank order, for the checker: the guards of
/// arenas `0..arenas()`.
pub fn all_heaps(op: &'static str) -> [Option<Guard<'static, Heap<Os>>>; MAX_ARENAS] {
    let mut g = [const { None }; MAX_ARENAS];
    for (i, slot) in g.iter_mut().enumerate().take(arenas()) {
        *slot = Some(heap(i, op));
    }
    g
}

/// Locks the slabs.
#[inline]
pub fn slabs() -> Guard<'static, Slabs> {
    SLABS.lock()
}

/// Takes up to `out.len()` blocks of `units` from the slabs thread cache
/// `t` takes from, for C function `op`, making slabs from heap blocks as
/// needed. Returns how many, and
/// whether the heap grew.
pub fn slab_take(t: &Tcache, units: u32, out: &mut [Block], op: &'static str) -> (usize, bool) {
    let mut grew = false;
    let mut s = SLABS.lock();
    // SAFETY: the containers are page-aligned heap blocks of at least
    // CONTAINER_UNITS that the heap hands over for good (region pages are
    // reserved in the page map when the region is added).
    let r = unsafe {
        s.take(units, out, t as *const Tcache as usize, t.slab_cur(units), || {
            let mut h = heap(t.arena(), op);
            let growths = h.growths;
            let c = h.alloc_aligned(SLAB_BYTES, CONTAINER_UNITS);
            grew |= h.growths != growths;
            c
        })
    };
    match r {
        Ok(k) => (k, grew),
        Err(b) => {
            drop(s);
            crate::diag::fatal(op, "corrupted free block (written after free) at", b.payload() as usize)
        }
    }
}

/// Whether held block `b` lies in a slab (looked up by its payload: the
/// header of the block after a slab's container is on the slab's page).
#[inline]
pub fn in_slab(b: Block) -> bool {
    slab_units(PAGEMAP.entry(b.payload() as usize)) != 0
}

/// Gives blocks the program and the caches no longer hold back to where
/// they came from: slab blocks to their slabs (an emptied slab's page back
/// to the heap), the others to the heap. At most 64 at once.
///
/// # Safety
/// Each block must be a used block, held by nobody now, that passed the
/// ownership and tag checks (a block given twice is reported).
pub unsafe fn release_blocks(op: &'static str, blocks: &[Block]) {
    debug_assert!(blocks.len() <= 64);
    if let [b] = *blocks
        && slab_units(PAGEMAP.entry(b.payload() as usize)) == 0
    {
        // One heap block (a free the caches did not take): nothing to sort.
        // SAFETY: forwarded.
        unsafe { release_heap_block(op, b) };
        return;
    }
    // Sorted once, by the entries of their pages before any is given: a
    // slab emptied below changes its page's entry.
    let mut slab = 0u64;
    let mut entries = [0u32; 64];
    for (i, &b) in blocks.iter().enumerate() {
        entries[i] = PAGEMAP.entry(b.payload() as usize);
        slab |= ((slab_units(entries[i]) != 0) as u64) << i;
    }
    if slab != 0 {
        let mut s = SLABS.lock();
        for (i, &b) in blocks.iter().enumerate() {
            if slab & (1 << i) != 0 {
                let (id, units) = (slab_id(entries[i]), slab_units(entries[i]));
                // SAFETY: forwarded; an emptied slab's container is a used
                // heap block that nothing else holds.
                let r = unsafe { s.give_to(b, id, units, |c| free_container(c, op)) };
                match r {
                    Ok(()) => {}
                    Err(GiveFault::AlreadyFree) => {
                        drop(s);
                        crate::diag::fatal(op, "double free of", b.payload() as usize)
                    }
                    Err(GiveFault::NotABlock) => {
                        drop(s);
                        crate::diag::fatal(op, "corrupted block (not in its slab) at", b.payload() as usize)
                    }
                }
            }
        }
    }
    // The others to their heaps, one lock per arena.
    let all = if blocks.len() == 64 { u64::MAX } else { (1u64 << blocks.len()) - 1 };
    let mut heap_blocks = all & !slab;
    let mut arena = [0u8; 64];
    if arenas() > 1 {
        for (i, &b) in blocks.iter().enumerate() {
            if heap_blocks & (1 << i) != 0 {
                arena[i] = arena_of(b.addr()) as u8;
            }
        }
    }
    while heap_blocks != 0 {
        let a = arena[heap_blocks.trailing_zeros() as usize];
        let mut h = heap(a as usize, op);
        let mut left = heap_blocks;
        while left != 0 {
            let i = left.trailing_zeros() as usize;
            left &= left - 1;
            if arena[i] == a {
                heap_blocks &= !(1 << i);
                if cached_meanwhile(blocks[i]) {
                    drop(h);
                    cached_meanwhile_fatal(op, blocks[i])
                }
                // SAFETY: forwarded; block `i` lies in this heap's region.
                unsafe { h.free(blocks[i]) };
            }
        }
    }
}

/// [`release_blocks`] of one block known to be a heap block, not a
/// slab's (a free the caches did not take).
///
/// # Safety
/// As for [`release_blocks`]; `b` lies in no slab.
#[inline(always)]
pub unsafe fn release_heap_block(op: &'static str, b: Block) {
    let mut h = heap_of(b, op);
    if cached_meanwhile(b) {
        drop(h);
        cached_meanwhile_fatal(op, b)
    }
    // SAFETY: forwarded; `b` lies in this heap's region.
    unsafe { h.free(b) };
}

/// Reports block `b`, found cached by another thread while it was on its
/// way home ([`cached_meanwhile`]): a double free the program raced.
#[cold]
fn cached_meanwhile_fatal(op: &'static str, b: Block) -> ! {
    crate::diag::fatal(op, crate::diag::double_free_text(op), b.payload() as usize)
}

/// Whether heap block `b`, checked by its caller before the heap's lock
/// (now held) was taken, has been cached by another thread since: a free
/// of it there (a double free the program races) took the fast path. The
/// heap must not take it too: it could give the memory back to the system
/// under that cache, which faults when it takes the block (found by a
/// hostile review). With one thread nothing can have changed.
pub fn cached_meanwhile(b: Block) -> bool {
    // SAFETY: the header is read only where a region still holds it, and
    // the payload words only for a valid used header.
    !crate::sync::single_threaded()
        && REGIONS.holds_header(b.addr())
        && unsafe {
            let h = b.header();
            crate::block::is_cached_header(b.addr(), h)
                || crate::block::is_block_header(b.addr(), h) && crate::tcache::is_marked(b, h ^ crate::block::CACHED_FLIP)
        }
}

/// Gives an emptied slab's container back to its heap, once its header is
/// checked: nothing reads it while the slab lives, so an overflow of the
/// heap block before it could have rewritten it (a larger size would hand
/// the heap live memory after it).
///
/// # Safety
/// `c` must be the container of a slab just unmade, held by nothing.
unsafe fn free_container(c: Block, op: &'static str) {
    // SAFETY: the container is a used heap block (the caller).
    let h = unsafe { c.header() };
    let units = crate::block::used_units(h);
    if !crate::block::is_used_header(c.addr(), h) || !(CONTAINER_UNITS..=CONTAINER_UNITS + 1).contains(&units) {
        crate::diag::fatal(op, "corrupted heap block header (a slab's page, overwritten by an overflow) at", c.payload() as usize);
    }
    // SAFETY: as above.
    unsafe { heap_of(c, op).free(c) }
}

/// Gives up the slabs thread cache `t` takes blocks from (its thread is
/// gone).
pub fn disown_slabs(t: &Tcache) {
    SLABS.lock().disown(t as *const Tcache as usize, t.slab_curs());
}

/// Gives every empty slab's page back to the heap; how many went.
pub fn release_empty_slabs(op: &'static str) -> usize {
    // SAFETY: an empty slab's container is a used heap block nothing holds.
    SLABS.lock().release_empty(|c| unsafe { free_container(c, op) })
}

/// Locks the large-block table.
#[inline]
pub fn large() -> Guard<'static, MapTable> {
    LARGE.lock()
}

/// Copies the run-time options the heaps obey into every arena's (all of
/// them, used or not, so that an arena is never behind).
pub fn sync_params() {
    for heap in &HEAPS {
        let mut h = heap.lock();
        h.params.trim_threshold = OPT.trim_threshold.load(Relaxed);
        h.params.top_pad = OPT.top_pad.load(Relaxed);
        h.params.page = OPT.page.load(Relaxed);
    }
}

// ----- the depot ---------------------------------------------------------------

/// Keeps `chain` of blocks of `units` in the depot for another thread's
/// cache; gives it back when the depot is full.
pub fn depot_put(units: u32, chain: Chain) -> Result<(), Chain> {
    let mut d = DEPOT.lock();
    d.put(units, chain, OPT.depot_bytes.load(Relaxed))?;
    DEPOT_STOCK[units as usize].store(d.chains(units).len() as u8, Relaxed);
    Ok(())
}

/// Hands the lists of cache `t`, whose thread is exiting, to the depot,
/// one chain a list, as far as the depot has room: the threads that go
/// on, or come next, take them whole, where sending them home would merge
/// each block into the heap (under its lock) to split it off again for the
/// next thread. What does not fit goes home with the rest of the cache
/// ([`crate::registry`]'s exit).
///
/// No block is walked under the depot's lock, which other threads' refills
/// take: which lists fit is decided under it, the chains are cut (each
/// block checked, up to 64 a list) without it, and put under it again. A
/// chain that finds the depot filled meanwhile by another thread goes
/// home. (Cut under the lock, the walks of an exiting thread made the
/// threads that came next wait: 10,000 short-lived threads, 4 at a time,
/// slept on the depot's lock 3,218 times.)
///
/// # Safety
/// `t` must be the calling thread's cache.
pub unsafe fn depot_put_lists(t: &Tcache, op: &'static str) {
    let max = OPT.depot_bytes.load(Relaxed);
    if max == 0 {
        return;
    }
    // Blocks to cut off each list.
    let mut plan = [0u8; CLASSES];
    {
        let d = DEPOT.lock();
        let mut planned = 0;
        for units in MIN_UNITS..=TCACHE_MAX_UNITS {
            let n = t.count(units).min(64);
            if n != 0 && d.has_room(units, n, max.saturating_sub(planned)) {
                plan[units as usize] = n as u8;
                planned += crate::block::units_to_bytes(units) * n;
            }
        }
    }
    let mut chains = [None; CLASSES];
    for units in MIN_UNITS..=TCACHE_MAX_UNITS {
        let n = plan[units as usize] as usize;
        if n == 0 {
            continue;
        }
        // SAFETY: the calling thread's cache (caller).
        match unsafe { t.take_chain(units, n) } {
            Ok(chain) => chains[units as usize] = chain,
            Err(tcache::CacheFault::Corrupted(a)) => crate::diag::fatal(op, "corrupted thread cache at", a),
        }
    }
    let mut d = DEPOT.lock();
    for units in MIN_UNITS..=TCACHE_MAX_UNITS {
        if let Some(chain) = chains[units as usize].take() {
            match d.put(units, chain, max) {
                Ok(()) => DEPOT_STOCK[units as usize].store(d.chains(units).len() as u8, Relaxed),
                // Filled meanwhile: home, once the lock is given back.
                Err(chain) => chains[units as usize] = Some(chain),
            }
        }
    }
    drop(d);
    for units in MIN_UNITS..=TCACHE_MAX_UNITS {
        if let Some(chain) = chains[units as usize] {
            send_home(op, units, chain);
        }
    }
}

/// A chain of blocks of `units` of at most `max_len` blocks from the
/// depot, if it has one.
#[inline]
pub fn depot_take(units: u32, max_len: u32) -> Option<Chain> {
    if DEPOT_STOCK[units as usize].load(Relaxed) == 0 {
        return None;
    }
    let mut d = DEPOT.lock();
    let c = d.take(units, max_len);
    DEPOT_STOCK[units as usize].store(d.chains(units).len() as u8, Relaxed);
    c
}

/// Bytes and blocks in the depot.
pub fn depot_held() -> (u64, u64) {
    DEPOT.lock().held()
}

/// [`depot_held`] of the chains of blocks of at most `max_units`.
pub fn depot_held_up_to(max_units: u32) -> (u64, u64) {
    DEPOT.lock().held_up_to(max_units)
}

/// Locks the depot (for the checker).
pub fn depot() -> Guard<'static, Depot> {
    DEPOT.lock()
}

/// Sends the blocks of `chain` (of blocks of `units`, at most 64, held by
/// the caller alone) home: to their slab or heap.
pub fn send_home(op: &'static str, units: u32, chain: Chain) {
    let mut out = [Block::NULL; 64];
    let mut k = 0;
    // SAFETY: the caller holds the chain; its blocks are cached blocks,
    // checked as they leave it.
    let r = unsafe {
        tcache::unchain(chain, units, |b| {
            if k < out.len() {
                out[k] = b;
                k += 1;
            }
        })
    };
    // SAFETY: the blocks left the chain checked, and nothing holds them.
    unsafe { release_blocks(op, &out[..k]) };
    if let Err(tcache::CacheFault::Corrupted(a)) = r {
        crate::diag::fatal(op, "corrupted thread cache at", a);
    }
}

/// Sends every chain of the depot home; true if there was one.
pub fn flush_depot(op: &'static str) -> bool {
    let mut any = false;
    loop {
        let taken = {
            let mut d = DEPOT.lock();
            let t = d.take_any();
            if let Some((u, _)) = t {
                DEPOT_STOCK[u as usize].store(d.chains(u).len() as u8, Relaxed);
            }
            t
        };
        let Some((units, chain)) = taken else { return any };
        send_home(op, units, chain);
        any = true;
    }
}

/// Fork, before: holds the depot, slab, heap and large-block locks (in
/// rank order).
pub fn hold_for_fork() {
    DEPOT.hold();
    SLABS.hold();
    for h in &HEAPS {
        h.hold();
    }
    LARGE.hold();
}

/// Fork, after: releases them in reverse.
pub fn release_after_fork() {
    LARGE.release_held();
    for h in HEAPS.iter().rev() {
        h.release_held();
    }
    SLABS.release_held();
    DEPOT.release_held();
}
