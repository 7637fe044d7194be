//! Per-thread caches of freed small blocks: the fast path.
//!
//! A freed block of at most [`TCACHE_MAX_UNITS`] goes onto its thread's list
//! for its exact size instead of into the heap; the next malloc of that size
//! on that thread pops it. Neither touches the heap lock, the bins or the
//! neighbours. A cached block stays *used* as far as the heap is concerned
//! (its used header keeps its size and tag), so the heap never merges it
//! away.
//!
//! A cached block's payload holds three words: the link to the next cached
//! block of its size, a keyed mark that says "cached", which `free` checks
//! to report a double free (a 2^-64 chance of a false alarm), and the mark
//! of the block the link names. The mark seals the block's address, its
//! header, its link and that mark below it, and the cache keeps each
//! list head's mark: so each list is checked as a whole, as the cache last
//! wrote it, and words copied from a freed block and written back later
//! are refused ([`seal`]). The block's header is also put in its cached form
//! (byte 1 inverted: see [`crate::block`]) as it is cached, and back as it
//! leaves, so a double free is found even when a write after free wiped
//! the mark, and one whose header an overflow put back in the used form
//! still meets the mark. A link overwritten after free decodes to an
//! arbitrary address,
//! which fails the region, tag and mark checks before anything is handed
//! out.
//!
//! Caches are bounded (a count per size and bytes per thread, both checked
//! by every push), go back to the heap when their thread exits (a pthread
//! key destructor), and when a
//! forked child finds caches of threads that do not exist in it.

use crate::block::{keyed, units_to_bytes, Block};
use crate::region::RegionTable;
use crate::config::TCACHE_MAX_UNITS;
use core::cell::UnsafeCell;
use crate::slab::SLAB_MAX_UNITS;
use core::sync::atomic::{AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// Lists of a cache, indexed by block size in units (those below
/// `MIN_UNITS` stay empty).
pub(crate) const CLASSES: usize = TCACHE_MAX_UNITS as usize + 1;

/// Blocks of a list that `memalign` looks at for one aligned by chance
/// ([`Tcache::pop_aligned`]).
const ALIGNED_SCAN: usize = 16;

/// Keys of the cache marks.
static MARK_KEY: AtomicU64 = AtomicU64::new(0x5bd1_e995_2f7a_3c61);
static MARK_MUL: AtomicU64 = AtomicU64::new(0xc2b2_ae3d_27d4_eb4f);

/// Keys the marks with process-specific randomness (once, at start-up,
/// before any block is cached).
pub fn set_secrets(key: u64, mul: u64) {
    MARK_KEY.store(key, Relaxed);
    MARK_MUL.store(mul | 1, Relaxed);
}

/// The mark of a cached block at `at` whose link is `link` and whose
/// header is `header`: a keyed value ([`crate::block::keyed`]) of all
/// three, so that it proves the link is the one the cache wrote and the
/// header is the one the block had when it was cached (checked then by
/// `free`, or written by the heap), and one read of it reveals no key.
///
/// The header and the address enter through a multiplication by the
/// secret multiplier, not a plain XOR with the link: otherwise an overflow
/// that changed the header could redirect the link by the same bits and
/// keep the mark valid, and a mark read after free from one block would
/// also be the mark of any block with the same header (14-bit tags
/// collide) and the link shifted by the two addresses' difference (found
/// by a hostile review: a forged link sent malloc to unmapped memory). The
/// header's `PREV_USED` bit is left out: the heap changes it in a cached
/// block when the block before it is freed or taken. The header sealed is
/// the one the block has while cached, its cached form.
///
/// The mark also covers the mark of the block the link names (`below`,
/// kept in payload word 2), and the cache keeps the mark of each list's
/// head: a pop takes the head only if its mark is the one the cache
/// expects, and then expects the `below` it found. So a list is sound
/// only as a whole, as the cache last wrote it: words read from a freed
/// block and written back once it is cached again (with a header put
/// back in the cached form) no longer pass, since the mark they carry is
/// not the one the cache now expects of that block (found by a hostile
/// review: such a replay handed out a block the program held, or one
/// inside a live block).
#[inline(always)]
fn seal(at: usize, link: usize, below: usize, header: u32) -> usize {
    Sealer::new(at, header).seal(link, below)
}

/// The part of [`seal`] that does not depend on the link, computed once
/// when a call checks one link of a block and seals another (the keys are
/// loaded, and the address and header multiplied, once).
#[derive(Clone, Copy)]
struct Sealer {
    key: u64,
    mul: u64,
    base: usize,
}

impl Sealer {
    #[inline(always)]
    fn new(at: usize, header: u32) -> Self {
        let mul = MARK_MUL.load(Relaxed);
        // Without the bit that changes while the block is cached: the
        // heap's `PREV_USED` (a heap block's).
        let header = ((header & !crate::block::PREV_USED) as u64).wrapping_mul(mul);
        let base = ((at as u64).wrapping_mul(mul) ^ header) as usize;
        Sealer { key: MARK_KEY.load(Relaxed), mul, base }
    }

    /// The mark of the block with link `link`, whose target's mark is
    /// `below`. `below` enters through the secret multiplier (rotated, so
    /// that it and the address do not enter alike): a change to the link
    /// cannot be offset by one to `below`.
    #[inline(always)]
    fn seal(self, link: usize, below: usize) -> usize {
        let below = (below.rotate_left(32) as u64).wrapping_mul(self.mul) as usize;
        keyed(self.base ^ link ^ below, self.key, self.mul)
    }
}

/// Whether `mark`, read from the block at `at` beside `link` and `below`,
/// is the cache's mark of that block with header `header` (for the heap
/// walk, which reads the words itself).
pub fn seals(at: usize, link: usize, below: usize, header: u32, mark: usize) -> bool {
    mark == seal(at, link, below, header)
}

/// Whether held block `b`, whose header is `header`, carries the cache's
/// mark: it waits in a thread cache (a 2^-64 chance of a false alarm for a
/// live block).
///
/// # Safety
/// `b` must be a used block of at least `MIN_UNITS` in a heap region.
#[inline(always)]
pub unsafe fn is_marked(b: Block, header: u32) -> bool {
    // SAFETY: forwarded; the payload holds the three words.
    unsafe { b.cache_key() == seal(b.addr(), b.cache_link(), b.cache_below(), header) }
}

/// Whether `at`, the head of list `units`, is a block this cache put there
/// intact: its mark seals its link and its header as they were when it
/// was cached, so the header is still a used header of `units` units
/// with its keyed tag right (checked when the block was cached). Only the
/// cache writes heads, and it writes one only from a link whose seal
/// held, so `at` itself needs no look-up; a link or a header the program
/// overwrote after a free fails the seal before it is followed.
///
/// # Safety
/// `at` must be a head this cache wrote.
#[inline(always)]
unsafe fn is_cached(at: usize) -> bool {
    if cfg!(feature = "unchecked-fast-path") {
        return true;
    }
    let b = Block::at(at as *mut u8);
    // SAFETY: a cached block is a held block of the heap (caller).
    unsafe { is_marked(b, b.header()) }
}

/// The header a block whose used header is `header` has while it is
/// cached, which its seal covers: its cached form.
#[inline(always)]
const fn while_cached(header: u32) -> u32 {
    header ^ crate::block::CACHED_FLIP
}

/// Takes the cache's marks off block `b`, whose header is `h`, as it
/// leaves a cache (its link was read): the mark word, and the header's
/// cached form.
///
/// # Safety
/// `b` is a cached block the caller has just taken out of its cache or
/// chain.
#[inline(always)]
unsafe fn uncache(b: Block, h: u32) {
    // SAFETY: forwarded; the payload holds the mark word.
    unsafe {
        b.set_cache_key(0);
        b.toggle_cached(h, crate::sync::single_threaded());
    }
}

/// Links and seals again cached blocks `blocks` (from the top down, each
/// linked to the next) so that the last links to `link`, whose mark is
/// `below`: returns the first's address and mark (`(link, below)` for
/// none), for whatever links to it.
///
/// # Safety
/// `blocks` are cached blocks of one list (headers in the cached form),
/// checked, which the caller holds alone.
unsafe fn reseal(blocks: &[usize], mut link: usize, mut below: usize) -> (usize, usize) {
    for &at in blocks.iter().rev() {
        let p = Block::at(at as *mut u8);
        // SAFETY: forwarded; a cached block's header is readable.
        let mark = seal(at, link, below, unsafe { p.header() });
        // SAFETY: forwarded; a cached block's payload holds the three words.
        unsafe {
            p.set_cache_link(link);
            p.set_cache_below(below);
            p.set_cache_key(mark);
        }
        (link, below) = (at, mark);
    }
    (link, below)
}

/// Blocks a [`Chain`] holds at most.
const MAX_CHAIN: usize = 64;

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
    /// Small mallocs served by the cache, and those that found it empty.
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// Statistics of a cache's slow paths, apart from [`ThreadCounters`]
/// (which the hit paths write): for `FITALLOC_STATS`, how much one trip
/// to the heap, a slab or the depot does. Owner writes, others read.
#[derive(Default)]
pub struct SlowCounters {
    /// Blocks refills left in the cache, beside the one each handed out.
    pub refilled: AtomicU64,
    /// Times a full list, or a spent byte budget, sent blocks away (to
    /// the depot or home), and the blocks sent.
    pub overflows: AtomicU64,
    pub sent_away: AtomicU64,
}

/// Adds `n` to a counter only its owner writes (a plain load and store: no
/// atomic read-modify-write on the fast path).
#[inline(always)]
pub fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Why a cache operation could not complete.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheFault {
    /// A list link or a cached block's header is not what the cache wrote.
    Corrupted(usize),
}

/// A run of cached blocks of one size cut off a cache's list: linked and
/// sealed as the list linked them, its last link 0. A chain moves between
/// caches whole ([`crate::depot`]): its blocks stay cached all the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The first block's header address.
    pub head: usize,
    /// Its blocks (at least 1).
    pub len: u32,
    /// The first block's mark: the one a cache taking the chain expects.
    pub mark: usize,
}

/// Takes every block out of `chain` (of blocks of `units`), checked as
/// [`Tcache::pop`] checks a list's head and unmarked, and hands each to
/// `f`. A link that fails its check stops the walk with the blocks after
/// it left where they are (a leak, never a corruption).
///
/// # Safety
/// `chain` came from [`Tcache::take_chain`] for `units`, and the caller
/// now holds it alone.
pub unsafe fn unchain(chain: Chain, units: u32, mut f: impl FnMut(Block)) -> Result<(), CacheFault> {
    // SAFETY: forwarded; a block's mark is cleared only once its link was
    // read, and the walk checks each block before it reads its payload.
    unsafe {
        walk_chain(chain, units, |b| {
            uncache(b, b.header());
            f(b)
        })
    }
}

/// Visits every block of `chain` (of blocks of `units`) without changing
/// it, stopping at a block that fails its checks (a used header of `units`
/// with its tag right, and the cache's seal), or when the chain is not
/// `chain.len` blocks long.
///
/// # Safety
/// `chain` came from [`Tcache::take_chain`] for `units`, and does not
/// change meanwhile (except through `f`, which may change the block it is
/// given, after its link was read).
pub unsafe fn walk_chain(chain: Chain, units: u32, mut f: impl FnMut(Block)) -> Result<(), CacheFault> {
    let mut at = chain.head;
    let mut expect = chain.mark;
    for _ in 0..chain.len {
        if at == 0 {
            return Err(CacheFault::Corrupted(chain.head));
        }
        let b = Block::at(at as *mut u8);
        // SAFETY: each block is checked before its payload is read.
        unsafe {
            let h = b.header();
            if !crate::block::is_cached_header(at, h)
                || crate::block::used_units(h) != units
                || !is_cached(at)
                || b.cache_key() != expect
            {
                return Err(CacheFault::Corrupted(at));
            }
            expect = b.cache_below();
            at = b.cache_link();
        }
        f(b);
    }
    if at != 0 {
        return Err(CacheFault::Corrupted(chain.head));
    }
    Ok(())
}

/// One thread's cache. Other threads see it only through `&Tcache` and
/// read only its atomics (statistics, the registry links under the
/// registry's lock); the list heads are the owner's alone, behind an
/// `UnsafeCell` that only the owner's `unsafe` calls open.
pub struct Tcache {
    /// Head of list `u`: the last block of `u` units cached (0: empty).
    /// Owner only.
    heads: UnsafeCell<[usize; CLASSES]>,
    /// The mark of the head of list `u` (0: empty), which a pop expects
    /// (see [`seal`]). Owner only.
    marks: UnsafeCell<[usize; CLASSES]>,
    /// How many more blocks list `u` may take. Only the owner writes; other
    /// threads read it for statistics.
    room: [AtomicU16; CLASSES],
    /// How many blocks list `u` may hold: what `new` gave it, or more once
    /// it churns ([`Tcache::grow_list`]). Only the owner writes.
    limits: [AtomicU16; CLASSES],
    /// How many more units (16 bytes each) the whole cache may take: its
    /// byte budget, checked by every push beside the list's count. Only
    /// the owner writes; other threads read it for statistics.
    room_units: AtomicU32,
    /// The budget, in units.
    max_units: u32,
    /// The slab this cache takes blocks of each size from (a hint the slab
    /// lock's holder checks: [`crate::slab::Slabs::take`]).
    slab_cur: [AtomicU32; SLAB_MAX_UNITS as usize + 1],
    /// Bit `u` set: list `u` (a slab size) has overflowed home (owner
    /// only): see [`Tcache::churning`].
    overflowed: AtomicU32,
    /// Per slab size: how many times in a row its list ran dry and was
    /// refilled from slabs since it last overflowed (owner only; at most
    /// [`MAX_STREAK`]): see [`Tcache::slab_batch`].
    streak: [AtomicU8; SLAB_MAX_UNITS as usize + 1],
    /// The arena whose heap refills this cache ([`crate::process`]).
    arena: usize,
    pub counters: ThreadCounters,
    pub slow: SlowCounters,
    /// Registry links (see [`crate::registry`]), changed under its lock.
    pub next: AtomicPtr<Tcache>,
    pub prev: AtomicPtr<Tcache>,
}

// SAFETY: the heads are touched only by the owning thread (every method
// that does is `unsafe` with that contract); everything else is atomic or
// immutable after creation.
unsafe impl Sync for Tcache {}

/// Blocks a cache list that ran dry takes from slabs at first
/// ([`Tcache::slab_batch`]).
pub(crate) const SLAB_BATCH: usize = 8;
/// Doublings of [`SLAB_BATCH`] a list that keeps running dry reaches.
const MAX_STREAK: u8 = 2;
/// The most blocks a list takes from slabs at once.
pub(crate) const MAX_SLAB_BATCH: usize = SLAB_BATCH << MAX_STREAK;

/// Moves an owner-written counter by `d` (wrapping).
#[inline(always)]
fn bump16(c: &AtomicU16, d: u16) {
    c.store(c.load(Relaxed).wrapping_add(d), Relaxed);
}

/// [`bump16`] for a 32-bit counter.
#[inline(always)]
fn bump32(c: &AtomicU32, d: u32) {
    c.store(c.load(Relaxed).wrapping_add(d), Relaxed);
}

impl Tcache {
    /// A cache whose list for each size holds `per_class_bytes` worth of
    /// blocks, but at least `min_count`, and whose total stays below
    /// `max_bytes` (when a free finds it full, half of the list holding the
    /// most bytes goes away: [`Tcache::fullest`]).
    /// (Measured on the shared traces and the mt benchmark: 256 KiB and 16
    /// cost 1% of footprint and halve the time of random-size workloads
    /// against 64 KiB and byte-proportional counts. Capping every list at
    /// 64 blocks, as before 2026-12-02, held the sizes below 256 bytes to
    /// 2-12 KiB each: a program that mallocs and frees 400 blocks of 32
    /// bytes in turn overflowed its list every round, 34-47 ns a block
    /// against 20-22 without the cap, and ls-R's replay took 10% more allocator
    /// instructions per operation, at the same utilization:
    /// `bench/published/2026-12-02-realloc/lists.txt`.)
    pub fn new(max_bytes: u64, per_class_bytes: usize, min_count: usize, arena: usize) -> Self {
        let max_units = (max_bytes >> crate::config::UNIT_SHIFT).min(u32::MAX as u64) as u32;
        let mut limits = [0u16; CLASSES];
        for (u, l) in limits.iter_mut().enumerate().skip(crate::config::MIN_UNITS as usize) {
            *l = (per_class_bytes / units_to_bytes(u as u32)).max(min_count).clamp(2, u16::MAX as usize) as u16;
        }
        Tcache {
            heads: UnsafeCell::new([0; CLASSES]),
            marks: UnsafeCell::new([0; CLASSES]),
            room: core::array::from_fn(|u| AtomicU16::new(limits[u])),
            limits: core::array::from_fn(|u| AtomicU16::new(limits[u])),
            room_units: AtomicU32::new(max_units),
            max_units,
            slab_cur: [const { AtomicU32::new(crate::slab::NIL) }; SLAB_MAX_UNITS as usize + 1],
            overflowed: AtomicU32::new(0),
            streak: [const { AtomicU8::new(0) }; SLAB_MAX_UNITS as usize + 1],
            arena,
            counters: ThreadCounters::default(),
            slow: SlowCounters::default(),
            next: AtomicPtr::new(core::ptr::null_mut()),
            prev: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The arena whose heap refills this cache.
    #[inline]
    pub fn arena(&self) -> usize {
        self.arena
    }

    /// The slab this cache takes blocks of `units` from.
    pub fn slab_cur(&self, units: u32) -> &AtomicU32 {
        &self.slab_cur[units as usize]
    }

    /// Notes that list `units` overflowed: half of it went home (or, once
    /// the process has threads, to the depot; only [`Tcache::grow_list`]
    /// looks at the mark then).
    pub fn note_overflow(&self, units: u32) {
        if units <= SLAB_MAX_UNITS {
            self.overflowed.store(self.overflowed.load(Relaxed) | 1 << units, Relaxed);
            self.streak[units as usize].store(0, Relaxed);
        }
    }

    /// How many blocks list `units` (a slab size) that ran dry takes from
    /// slabs at once: [`SLAB_BATCH`], doubled for each time in a row it ran
    /// dry since it last overflowed, up to [`MAX_SLAB_BATCH`] (tcmalloc's
    /// slow start). A thread that allocates a size and does not free it
    /// (the producer of a producer and consumer, a program building a large
    /// structure) then takes the lock once per 32 blocks, not per 8; a size
    /// that goes both ways, which overflows as often as it runs dry, keeps
    /// the small batch and holds no more blocks than before. Counts the
    /// refill.
    pub fn slab_batch(&self, units: u32) -> usize {
        let s = &self.streak[units as usize];
        let n = s.load(Relaxed);
        s.store((n + 1).min(MAX_STREAK), Relaxed);
        SLAB_BATCH << n
    }

    /// Whether list `units` (a slab size) has overflowed home: its blocks
    /// go back and forth between the cache and their home, and slabs,
    /// where each way is a bit in a map, serve it better than the heap's
    /// fragments, where each way is a best-fit search or a coalescing.
    ///
    /// Measured (`bench/micro`'s batch cases, the shared traces, python3
    /// with `PYTHONMALLOC=malloc`): batches of 400 and 1,600 blocks of 32
    /// bytes went from 52 and 51 ns a block to 32 and 35, ls-R's replay
    /// from 17 to 13 ns an operation, python3 7% faster at 1.4% more peak
    /// RSS; utilization within 0.01 on every trace. Counting overflows
    /// per decay period instead (a size churning after 4 in one, fragments
    /// again in the next) was faster on python3 (15%) but cost it 5% of
    /// peak RSS: a size's blocks then alternate between slabs and the
    /// heap, and half-used slabs pin their pages.
    pub fn churning(&self, units: u32) -> bool {
        self.overflowed.load(Relaxed) & 1 << units != 0
    }

    /// Blocks list `u` holds, by its counters (approximate when read by
    /// another thread).
    fn held_in(&self, u: usize) -> u16 {
        let limit = self.limits[u].load(Relaxed);
        limit - self.room[u].load(Relaxed).min(limit)
    }

    /// Lets full list `units` hold twice as many blocks, up to half the
    /// cache's byte budget, when it is a slab size that has overflowed
    /// before ([`Tcache::note_overflow`]): true if it grew. A program
    /// that mallocs a batch of blocks of one size and frees them all, in
    /// rounds, otherwise sends the part of each batch beyond the list home
    /// and takes it back every round, a slab's bit and a keyed mark each
    /// way (glibc's bench-malloc-simple, which mimalloc-bench runs as
    /// glibc-simple: batches of up to 1,600 blocks of 16 to 64 bytes).
    /// The byte budget bounds the cache as before; other lists keep the
    /// size `new` gave them, so that sizes that do not churn hold no more.
    pub fn grow_list(&self, units: u32) -> bool {
        if units > SLAB_MAX_UNITS || !self.churning(units) {
            return false;
        }
        let u = units as usize;
        let old = self.limits[u].load(Relaxed);
        let cap = (self.max_units / 2 / units).min(u16::MAX as u32) as u16;
        let new = old.saturating_mul(2).min(cap);
        if new <= old {
            return false;
        }
        self.limits[u].store(new, Relaxed);
        bump16(&self.room[u], new - old);
        true
    }

    /// Every size's current slab.
    pub fn slab_curs(&self) -> &[AtomicU32] {
        &self.slab_cur
    }

    /// The list heads.
    ///
    /// # Safety
    /// Only the thread that owns the cache may call this, and must not hold
    /// two of the returned borrows at once.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn heads(&self) -> &mut [usize; CLASSES] {
        // SAFETY: forwarded to the caller: one thread, one borrow at a time.
        unsafe { &mut *self.heads.get() }
    }

    /// The marks of the list heads, as for [`Tcache::heads`].
    ///
    /// # Safety
    /// As for [`Tcache::heads`].
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn marks(&self) -> &mut [usize; CLASSES] {
        // SAFETY: forwarded to the caller: one thread, one borrow at a time.
        unsafe { &mut *self.marks.get() }
    }

    /// Unlinks the head of list `units` after checking it, clearing its mark.
    ///
    /// # Safety
    /// Only the owner may call this.
    #[inline(always)]
    unsafe fn take_head(&self, units: u32) -> Result<Option<Block>, CacheFault> {
        // SAFETY: the owner's call (caller).
        let heads = unsafe { self.heads() };
        let head = heads[units as usize];
        if head == 0 {
            return Ok(None);
        }
        let b = Block::at(head as *mut u8);
        // SAFETY: `b` is checked before its payload is read.
        unsafe {
            // The header's used form written back first (one byte store,
            // which no branch on the header waits for), the seal checked
            // then (fewer registers live across the seal): the seal covers
            // the header as read, so one an overflow changed fails it, and
            // the process ends below before anything acts on the header
            // written.
            let alone = crate::sync::single_threaded();
            let h = b.header_hot(alone);
            b.toggle_cached(h, alone);
            let marks = self.marks();
            if !cfg!(feature = "unchecked-fast-path") && (!is_marked(b, h) || b.cache_key() != marks[units as usize]) {
                return Err(CacheFault::Corrupted(head));
            }
            heads[units as usize] = b.cache_link();
            marks[units as usize] = b.cache_below();
            b.set_cache_key(0);
        }
        bump16(&self.room[units as usize], 1);
        bump32(&self.room_units, units);
        Ok(Some(b))
    }

    /// Pops a cached block of exactly `units` for the program. `Ok(None)`
    /// when the list is empty.
    ///
    /// # Safety
    /// As for [`Tcache::take_head`].
    #[inline(always)]
    pub unsafe fn pop(&self, units: u32) -> Result<Option<Block>, CacheFault> {
        // SAFETY: forwarded.
        let r = unsafe { self.take_head(units) };
        match r {
            Ok(Some(_)) => add(&self.counters.hits, 1),
            Ok(None) => add(&self.counters.misses, 1),
            Err(_) => {}
        }
        r
    }

    /// A block of list `units` whose payload is aligned to `align` (a
    /// power of two), among the first [`ALIGNED_SCAN`] of the list (each
    /// checked as [`Tcache::pop`] checks a head before its link is
    /// followed), unlinked (the block before it sealed again with its new
    /// link); `Ok(None)` when there is none, the list unchanged.
    ///
    /// # Safety
    /// As for [`Tcache::take_head`].
    pub unsafe fn pop_aligned(&self, units: u32, align: usize) -> Result<Option<Block>, CacheFault> {
        // SAFETY: the owner's call (caller); each block is checked before
        // its payload is read or its link followed.
        unsafe {
            let heads = self.heads();
            let marks = self.marks();
            // The blocks above the one looked at, from the head down.
            let mut above = [0usize; ALIGNED_SCAN];
            let mut at = heads[units as usize];
            let mut expect = marks[units as usize];
            for i in 0..ALIGNED_SCAN {
                if at == 0 {
                    return Ok(None);
                }
                let b = Block::at(at as *mut u8);
                if !is_cached(at) || b.cache_key() != expect {
                    return Err(CacheFault::Corrupted(at));
                }
                let next = b.cache_link();
                let below = b.cache_below();
                if (b.payload() as usize).is_multiple_of(align) {
                    // The block above links past `b`, and every block
                    // above is sealed again, up to the head: each mark
                    // covers the one below it.
                    let (link, mark) = reseal(&above[..i], next, below);
                    heads[units as usize] = link;
                    marks[units as usize] = mark;
                    uncache(b, b.header());
                    bump16(&self.room[units as usize], 1);
                    bump32(&self.room_units, units);
                    add(&self.counters.hits, 1);
                    return Ok(Some(b));
                }
                above[i] = at;
                expect = below;
                at = next;
            }
            Ok(None)
        }
    }

    /// How many more blocks of `units` the cache may take: as its list's
    /// count and its byte budget allow.
    #[inline]
    pub fn room_for(&self, units: u32) -> usize {
        let by_budget = self.room_units.load(Relaxed) / units;
        (self.room[units as usize].load(Relaxed) as u32).min(by_budget) as usize
    }

    /// Whether list `units` has room for one more block: its count, and
    /// the whole cache's byte budget.
    #[inline(always)]
    pub fn has_room(&self, units: u32) -> bool {
        self.room[units as usize].load(Relaxed) != 0 && self.room_units.load(Relaxed) >= units
    }

    /// Whether list `units` is full (by its count; the budget aside).
    #[inline]
    pub fn list_full(&self, units: u32) -> bool {
        self.room[units as usize].load(Relaxed) == 0
    }

    /// Whether the byte budget has room for a block of `units`.
    #[inline]
    pub fn budget_has_room(&self, units: u32) -> bool {
        self.room_units.load(Relaxed) >= units
    }

    /// Bytes the cache holds (approximate when read by another thread).
    pub fn held_bytes(&self) -> u64 {
        units_to_bytes(self.max_units.saturating_sub(self.room_units.load(Relaxed))) as u64
    }

    /// The list holding the most bytes (`None` when the cache is empty):
    /// the one that gives half of itself away when a free finds the
    /// budget spent.
    pub fn fullest(&self) -> Option<u32> {
        (crate::config::MIN_UNITS..CLASSES as u32)
            .rev()
            .max_by_key(|&u| self.count(u) * units_to_bytes(u))
            .filter(|&u| self.count(u) > 0)
    }


    /// Caches block `b` of `units` (of a slab or the heap) that the
    /// allocator has just taken for the cache, reading its header. False,
    /// leaving the cache as it was, when the header does not say used and
    /// `units`: an overflow (or a signal handler) wrote over it since it
    /// was written. A seal is made only over a header of its list's size:
    /// a seal over another size's header would carry that header past
    /// every later check, pops and frees alike, and the block out at the
    /// wrong size (found by a hostile review: a handler run during a
    /// cache's overflow rewrote the header of the block being freed, and
    /// a malloc later handed out memory over 13 live blocks). The tag is
    /// left to the checks of the block's free: the program has never held
    /// the block, so it cannot have cached it already.
    ///
    /// # Safety
    /// Only the owner may call this. `b` must be a block of `units` in a
    /// slab or a heap region that nothing else holds, with
    /// `units <= TCACHE_MAX_UNITS`, and `has_room(units)`.
    #[inline(always)]
    #[must_use]
    pub unsafe fn push(&self, b: Block, units: u32) -> bool {
        // SAFETY: forwarded; the header of a block of a region is readable.
        let h = unsafe { b.header() };
        if h & crate::block::USED == 0 || crate::block::used_units(h) != units {
            return false;
        }
        // SAFETY: forwarded; `h` is a used header of `units`.
        unsafe { self.push_header(b, units, h) };
        true
    }

    /// [`Tcache::push`] for a caller that has read `b`'s header, `header`.
    ///
    /// # Safety
    /// As for [`Tcache::push`], and `header` is `b`'s header.
    #[inline(always)]
    pub unsafe fn push_header(&self, b: Block, units: u32, header: u32) {
        let sealer = Sealer::new(b.addr(), while_cached(header));
        // SAFETY: forwarded.
        unsafe { self.push_sealed(b, units, header, sealer) }
    }

    /// Caches block `b` that the program frees, whose header `header` the
    /// caller found to be a correct used header of `units` (not the cached
    /// form, which every cache gives a block it takes). False, leaving the
    /// cache as it was, when list `units` has no room, or `b` carries the
    /// cache's mark all the same: a double free (up to a 2^-64 chance)
    /// whose first free's cached header an overflow put back in the used
    /// form (the form is a fixed function of the header, so a program that
    /// can read and write the header can undo it; it would then have to
    /// wipe the mark too: found by a hostile review). The mark shares the
    /// header's cache line unless the payload starts one, and the push
    /// writes that line anyway.
    ///
    /// # Safety
    /// Only the owner may call this; `b` is a used block of `units` (at
    /// least `MIN_UNITS`, at most `TCACHE_MAX_UNITS`) of a slab or a heap
    /// region, and `header` is its header.
    #[inline(always)]
    pub unsafe fn push_freed(&self, b: Block, units: u32, header: u32) -> bool {
        let sealer = Sealer::new(b.addr(), while_cached(header));
        // SAFETY: the payload holds both words (caller).
        let marked = unsafe { b.cache_key() == sealer.seal(b.cache_link(), b.cache_below()) };
        if marked && !cfg!(feature = "unchecked-fast-path") || !self.has_room(units) {
            return false;
        }
        // SAFETY: forwarded; the block is held and checked (caller).
        unsafe { self.push_sealed(b, units, header, sealer) };
        true
    }

    /// Links held block `b` (header `header`; `sealer` made of its address
    /// and [`while_cached`] of its header) into list `units` and marks it:
    /// its seal, and its header's cached form.
    #[inline(always)]
    unsafe fn push_sealed(&self, b: Block, units: u32, header: u32, sealer: Sealer) {
        // SAFETY: the owner's call; `b` is a held block whose payload is at
        // least 28 bytes (caller).
        unsafe {
            let heads = self.heads();
            let marks = self.marks();
            let next = heads[units as usize];
            let below = marks[units as usize];
            let mark = sealer.seal(next, below);
            b.set_cache_link(next);
            b.set_cache_below(below);
            b.set_cache_key(mark);
            heads[units as usize] = b.addr();
            marks[units as usize] = mark;
            b.toggle_cached(header, crate::sync::single_threaded());
        }
        bump16(&self.room[units as usize], u16::MAX);
        bump32(&self.room_units, units.wrapping_neg());
    }

    /// Takes up to `max` blocks off list `units` (checked as [`Tcache::pop`]
    /// does, and, once the process has had a second thread, first looked
    /// up in `regions`: a block freed twice at one instant by two threads
    /// can sit in two caches, and its memory go back to the system once one
    /// of them gives it home) and hands each to `f`. A process that has
    /// only ever had one thread skips the look-up: each of its cached
    /// blocks was checked as it was cached, and nothing else gives them
    /// home (perl's hash benchmark: 2.7% fewer instructions in all).
    ///
    /// # Safety
    /// As for [`Tcache::pop`].
    pub unsafe fn drain(
        &self,
        units: u32,
        max: usize,
        regions: &RegionTable,
        mut f: impl FnMut(Block),
    ) -> Result<(), CacheFault> {
        let alone = crate::sync::single_threaded();
        for _ in 0..max {
            // SAFETY: the owner's call (caller).
            let head = unsafe { self.heads()[units as usize] };
            if head != 0 && !alone && !regions.holds_block(head) {
                return Err(CacheFault::Corrupted(head));
            }
            // SAFETY: forwarded.
            match unsafe { self.take_head(units)? } {
                Some(b) => f(b),
                None => break,
            }
        }
        Ok(())
    }

    /// Bytes and blocks the cache holds (derived from the room counters;
    /// approximate when read by another thread).
    /// Bytes and blocks of the cache's lists of at most `max_units` (for
    /// `mallinfo`'s fastbin figures).
    pub fn held_up_to(&self, max_units: u32) -> (u64, u64) {
        let last = (max_units as usize).min(CLASSES - 1);
        (crate::config::MIN_UNITS as usize..=last).fold((0, 0), |(bytes, blocks), u| {
            let n = self.held_in(u) as u64;
            (bytes + n * units_to_bytes(u as u32) as u64, blocks + n)
        })
    }

    pub fn held(&self) -> (u64, u64) {
        let bytes = self.held_bytes();
        let blocks = (crate::config::MIN_UNITS as usize..CLASSES)
            .map(|u| self.held_in(u) as u64)
            .sum();
        (bytes, blocks)
    }

    /// Takes every block out of the cache, handing each to `f`.
    ///
    /// # Safety
    /// As for [`Tcache::pop`].
    pub unsafe fn drain_all(&self, regions: &RegionTable, mut f: impl FnMut(Block)) -> Result<(), CacheFault> {
        for u in crate::config::MIN_UNITS..=TCACHE_MAX_UNITS {
            // SAFETY: forwarded.
            unsafe { self.drain(u, usize::MAX, regions, &mut f)? };
        }
        Ok(())
    }

    /// Cuts the first `max` (at least 1) blocks off list `units` as one
    /// [`Chain`], each checked as [`Tcache::pop`] checks it; the chain's
    /// last link becomes 0, sealed again. `Ok(None)` when the list is
    /// empty.
    ///
    /// # Safety
    /// As for [`Tcache::pop`].
    pub unsafe fn take_chain(&self, units: u32, max: usize) -> Result<Option<Chain>, CacheFault> {
        // SAFETY: the owner's call (caller).
        let heads = unsafe { self.heads() };
        // SAFETY: the owner's call (caller).
        let marks = unsafe { self.marks() };
        let head = heads[units as usize];
        if head == 0 {
            return Ok(None);
        }
        let mut blocks = [0usize; MAX_CHAIN];
        let max = max.clamp(1, MAX_CHAIN);
        let mut at = head;
        let mut expect = marks[units as usize];
        let mut len = 0;
        // SAFETY: each block is checked before its link is followed.
        let (rest, rest_mark) = unsafe {
            loop {
                let b = Block::at(at as *mut u8);
                if !is_cached(at) || b.cache_key() != expect {
                    return Err(CacheFault::Corrupted(at));
                }
                blocks[len] = at;
                len += 1;
                let next = b.cache_link();
                expect = b.cache_below();
                if len == max || next == 0 {
                    break (next, expect);
                }
                at = next;
            }
        };
        // The chain ends at its last block (link 0), so every block of it
        // is sealed again (each mark covers the one below).
        // SAFETY: the chain's blocks are cached blocks, checked above.
        let (_, mark) = unsafe { reseal(&blocks[..len], 0, 0) };
        heads[units as usize] = rest;
        marks[units as usize] = rest_mark;
        bump16(&self.room[units as usize], len as u16);
        bump32(&self.room_units, units * len as u32);
        Ok(Some(Chain { head, len: len as u32, mark }))
    }

    /// Whether empty list `units` can take a chain of `len` blocks.
    pub fn can_take_chain(&self, units: u32, len: u32) -> bool {
        self.count(units) == 0 && self.room_for(units) as u32 >= len
    }

    /// Makes `chain` (of blocks of `units`) list `units`.
    ///
    /// # Safety
    /// Only the owner may call this, when [`Tcache::can_take_chain`] holds;
    /// `chain` came from [`Tcache::take_chain`] (of any cache) for `units`,
    /// and nothing else holds it.
    pub unsafe fn put_chain(&self, units: u32, chain: Chain) {
        // SAFETY: the owner's call (caller).
        unsafe {
            self.heads()[units as usize] = chain.head;
            self.marks()[units as usize] = chain.mark;
        }
        bump16(&self.room[units as usize], (chain.len as u16).wrapping_neg());
        bump32(&self.room_units, (units * chain.len).wrapping_neg());
    }

    /// How many blocks list `units` holds.
    pub fn count(&self, units: u32) -> usize {
        // Saturating: a corrupted count (a chain taken by a racing double
        // free) must not read as a huge one.
        self.held_in(units as usize) as usize
    }

    /// Visits every cached block without changing the cache, stopping at a
    /// link that fails its checks.
    ///
    /// # Safety
    /// As for [`Tcache::pop`]; the cache must not change meanwhile.
    pub unsafe fn for_each(&self, mut f: impl FnMut(Block, u32)) -> Result<(), CacheFault> {
        for u in crate::config::MIN_UNITS..=TCACHE_MAX_UNITS {
            // SAFETY: the owner's call (caller).
            let mut at = unsafe { self.heads()[u as usize] };
            // SAFETY: the owner's call (caller).
            let mut expect = unsafe { self.marks()[u as usize] };
            let mut n = 0;
            while at != 0 {
                let b = Block::at(at as *mut u8);
                // SAFETY: as in `pop`.
                unsafe {
                    let h = b.header();
                    let intact = crate::block::is_cached_header(at, h) && crate::block::used_units(h) == u;
                    if !intact || !is_cached(at) || b.cache_key() != expect {
                        return Err(CacheFault::Corrupted(at));
                    }
                    expect = b.cache_below();
                    f(b, u);
                    at = b.cache_link();
                }
                n += 1;
                if n > self.count(u) {
                    return Err(CacheFault::Corrupted(at));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of the default shape: 256 KiB, lists of 16 KiB (at least 16).
    fn cache() -> Tcache {
        Tcache::new(256 << 10, 16 << 10, 16, 0)
    }

    #[test]
    fn a_list_grows_only_once_it_churns() {
        let t = cache();
        assert_eq!(t.room_for(2), 512);
        assert!(!t.grow_list(2), "a size that never overflowed keeps its list");
        t.note_overflow(2);
        assert!(t.grow_list(2));
        assert_eq!(t.room_for(2), 1024);
        assert_eq!(t.count(2), 0, "growing adds room, not blocks");
    }

    #[test]
    fn a_list_grows_to_half_the_budget_at_most() {
        let t = cache();
        t.note_overflow(5);
        let mut rounds = 0;
        while t.grow_list(5) {
            rounds += 1;
        }
        // 16 KiB of 80-byte blocks (204), doubled thrice (1,632), then
        // up to 128 KiB of them.
        assert_eq!(rounds, 4);
        assert_eq!(t.room_for(5), (128 << 10) / 80);
    }

    #[test]
    fn a_list_that_keeps_running_dry_takes_bigger_batches_until_it_overflows() {
        let t = cache();
        let batches: [usize; 4] = core::array::from_fn(|_| t.slab_batch(3));
        assert_eq!(batches, [8, 16, 32, 32]);
        assert_eq!(t.slab_batch(4), 8, "each size keeps its own streak");
        t.note_overflow(3);
        assert_eq!(t.slab_batch(3), 8, "an overflow starts the streak again");
        assert_eq!(t.slab_batch(3), 16);
    }

    #[test]
    fn sizes_beyond_the_slabs_keep_their_lists() {
        let t = cache();
        let u = SLAB_MAX_UNITS + 1;
        t.note_overflow(u);
        assert!(!t.grow_list(u));
    }
}
