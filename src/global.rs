//! The process-wide allocator: one heap, the large-block table, the thread
//! caches, lazy start-up and fork handling.
//!
//! # Paths
//!
//! - malloc of at most 1020 bytes on a thread with a cache: pop from the
//!   cache ([`malloc`], inline). Otherwise [`malloc_slow`]: start-up, cache
//!   creation, then the heap under its lock, or a mapping of its own.
//! - free of a heap block of at most 1 KiB: checked (region, tag, cache
//!   mark), then pushed on the cache ([`free`], inline). Otherwise
//!   [`free_slow`]: the heap under its lock, or the large-block table.
//!
//! Every pointer from the program is looked up in the region table or the
//! large-block table before any header is read.
//!
//! # Locks
//!
//! Three spin locks, never nested except in the fork handlers, which take
//! them in the order registry → heap → large and release them in reverse.

use crate::block::Block;
use crate::config::{self, MAX_HEAP_REQUEST, MIN_UNITS, TCACHE_MAX_UNITS, UNIT_SHIFT};
use crate::diag;
use crate::heap::{Heap, HeapParams};
use crate::large::{self, Lookup, MapTable};
use crate::options::OPT;
use crate::os::Os;
use crate::region::RegionTable;
use crate::sync::{Guard, Locked};
use crate::tcache::{self, Call, Tcache, ThreadCounters, CALLS};
use crate::tls;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::*};

pub static REGIONS: RegionTable = RegionTable::new();

pub static HEAP: Locked<Heap<Os>> = Locked::new(Heap::new(
    Os,
    &REGIONS,
    HeapParams { trim_threshold: config::DEFAULT_TRIM_THRESHOLD, top_pad: config::DEFAULT_TOP_PAD, page: config::PAGE },
));

pub static LARGE: Locked<MapTable> = Locked::new(MapTable::new());

static REGISTRY: Locked<Registry> = Locked::new(Registry::new());

/// Calls counted on threads without a cache (or before it exists).
static SHARED: ThreadCounters = ThreadCounters {
    calls: [const { AtomicU64::new(0) }; CALLS],
    requested: AtomicU64::new(0),
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
};

/// TLS word: no cache yet.
const TLS_NONE: usize = 0;
/// TLS word: no cache now (being built, thread exiting, or caches off).
const TLS_OFF: usize = 1;

/// Largest request served from a thread cache.
pub(crate) const TCACHE_MAX_REQUEST: usize = Block::payload_bytes(TCACHE_MAX_UNITS);

// ----- start-up ----------------------------------------------------------------

const UNINIT: u8 = 0;
const STARTING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static ENV_PENDING: AtomicBool = AtomicBool::new(true);
static TSD_KEY: AtomicU32 = AtomicU32::new(u32::MAX);

/// Makes sure start-up has run. Cheap after the first call.
#[inline(always)]
pub fn ensure_init() {
    if STATE.load(Acquire) != READY {
        init_slow();
    }
    if ENV_PENDING.load(Relaxed) {
        read_env_late();
    }
}

#[cold]
fn read_env_late() {
    if crate::options::read_environment() {
        ENV_PENDING.store(false, Relaxed);
        apply_env_effects(false);
    }
}

/// Options that take effect once, when the environment has been read
/// (`at_start`: before any block was handed out).
fn apply_env_effects(at_start: bool) {
    if OPT.harden.load(Relaxed) {
        // Every block goes through the checks: no thread caches.
        OPT.tcache.store(false, Relaxed);
        crate::harden::enable(at_start);
        crate::api::set_hardened(true);
    }
    crate::api::set_check_every(OPT.check_every.load(Relaxed));
    crate::stats::keep_stderr();
    crate::trace::start();
}

#[cold]
#[inline(never)]
fn init_slow() {
    if STATE.compare_exchange(UNINIT, STARTING, Acquire, Acquire).is_err() {
        // Another thread is starting us; it allocates nothing meanwhile.
        while STATE.load(Acquire) != READY {
            core::hint::spin_loop();
        }
        return;
    }
    // Nothing here may allocate.
    // SAFETY: AT_RANDOM points at 16 random bytes the kernel gave the process.
    let (k, m) = unsafe {
        let r = libc::getauxval(libc::AT_RANDOM) as *const u64;
        if r.is_null() {
            let t = &r as *const _ as u64;
            (t.rotate_left(32) ^ 0x6a09_e667_f3bc_c908, t ^ 0xbb67_ae85_84ca_a73b)
        } else {
            (r.read_unaligned(), r.add(1).read_unaligned())
        }
    };
    crate::block::set_tag_secret(k, m);
    tcache::set_secret((k ^ m.rotate_left(17)) as usize);
    crate::harden::set_secret(k.rotate_left(29) ^ m);
    OPT.page.store(crate::os::page_size(), Relaxed);
    let env_read = crate::options::read_environment();
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: key creation does not allocate in glibc.
    if unsafe { libc::pthread_key_create(&mut key, Some(cache_exit)) } == 0 {
        TSD_KEY.store(key as u32, Relaxed);
    }
    sync_params(&mut HEAP.lock());
    STATE.store(READY, Release);
    // From here on allocation works; these may allocate.
    // SAFETY: the handlers are `extern "C"` functions that live as long as
    // the library.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    if env_read {
        ENV_PENDING.store(false, Relaxed);
        apply_env_effects(true);
    }
}

/// Copies the run-time options the heap obeys into it.
fn sync_params(h: &mut Heap<Os>) {
    h.params.trim_threshold = OPT.trim_threshold.load(Relaxed);
    h.params.top_pad = OPT.top_pad.load(Relaxed);
    h.params.page = OPT.page.load(Relaxed);
}

/// Locks the heap for C function `op`.
#[inline]
pub fn heap(op: &'static str) -> Guard<'static, Heap<Os>> {
    let mut h = HEAP.lock();
    h.op = op;
    h
}

// ----- thread caches ----------------------------------------------------------------

/// Live caches (a doubly-linked list), recycled ones, and where new ones
/// are carved from.
pub struct Registry {
    live: *mut Tcache,
    spare: *mut Tcache,
    carve: usize,
    carve_end: usize,
    /// Counters of caches whose thread has exited.
    retired_calls: [u64; CALLS],
    retired_requested: u64,
    retired_hits: u64,
    retired_misses: u64,
    pub threads: usize,
}

// SAFETY: the raw pointers are owned by the registry; access is locked.
unsafe impl Send for Registry {}

impl Registry {
    const fn new() -> Self {
        Registry {
            live: core::ptr::null_mut(),
            spare: core::ptr::null_mut(),
            carve: 0,
            carve_end: 0,
            retired_calls: [0; CALLS],
            retired_requested: 0,
            retired_hits: 0,
            retired_misses: 0,
            threads: 0,
        }
    }

    /// Memory for one cache.
    fn take(&mut self) -> *mut Tcache {
        if !self.spare.is_null() {
            let t = self.spare;
            // SAFETY: spare caches are ours and unused.
            self.spare = unsafe { (*t).next };
            return t;
        }
        let size = config::round_up(core::mem::size_of::<Tcache>(), 64);
        if self.carve + size > self.carve_end {
            let chunk = 64 * 1024;
            let Some(m) = crate::os::map_metadata(chunk) else { return core::ptr::null_mut() };
            self.carve = m;
            self.carve_end = m + chunk;
        }
        let t = self.carve as *mut Tcache;
        self.carve += size;
        t
    }

    /// Links a new cache into the live list.
    ///
    /// # Safety
    /// `t` must be an initialised cache on no list.
    unsafe fn link(&mut self, t: *mut Tcache) {
        // SAFETY: `t` and the live list head are caches we own.
        unsafe {
            (*t).prev = core::ptr::null_mut();
            (*t).next = self.live;
            if !self.live.is_null() {
                (*self.live).prev = t;
            }
        }
        self.live = t;
        self.threads += 1;
    }

    /// Unlinks an empty cache, keeps its counters, and recycles it.
    ///
    /// # Safety
    /// `t` must be a live, drained cache that no thread uses any more.
    unsafe fn retire(&mut self, t: *mut Tcache) {
        // SAFETY: `t` is on the live list.
        unsafe {
            let c = &(*t).counters;
            // Counters wrap rather than trap (the sums are statistics).
            for i in 0..CALLS {
                self.retired_calls[i] = self.retired_calls[i].wrapping_add(c.calls[i].load(Relaxed));
            }
            self.retired_requested = self.retired_requested.wrapping_add(c.requested.load(Relaxed));
            self.retired_hits = self.retired_hits.wrapping_add(c.hits.load(Relaxed));
            self.retired_misses = self.retired_misses.wrapping_add(c.misses.load(Relaxed));
            let (p, n) = ((*t).prev, (*t).next);
            if p.is_null() {
                self.live = n;
            } else {
                (*p).next = n;
            }
            if !n.is_null() {
                (*n).prev = p;
            }
            (*t).next = self.spare;
        }
        self.spare = t;
        self.threads -= 1;
    }

    /// Visits every live cache.
    pub fn for_each(&self, mut f: impl FnMut(&Tcache)) {
        let mut t = self.live;
        while !t.is_null() {
            // SAFETY: live caches stay allocated while the registry is locked.
            unsafe {
                f(&*t);
                t = (*t).next;
            }
        }
    }
}

/// This thread's cache, creating it on first use. Null when the thread has
/// none (caches off, exiting, or no memory).
#[cold]
#[inline(never)]
fn make_cache() -> *mut Tcache {
    tls::set(TLS_OFF);
    let key = TSD_KEY.load(Relaxed);
    if !OPT.tcache.load(Relaxed) || key == u32::MAX {
        return core::ptr::null_mut();
    }
    let t = {
        let mut r = REGISTRY.lock();
        let t = r.take();
        if t.is_null() {
            return t;
        }
        let max = OPT.tcache_bytes.load(Relaxed) as u64;
        // SAFETY: `t` is memory for one cache, owned by the registry.
        unsafe {
            t.write(Tcache::new(max, (max as usize / 16).max(64), OPT.tcache_count.load(Relaxed)));
            r.link(t);
        }
        t
    };
    // May allocate (keys above 31): our TLS word says "no cache" meanwhile.
    // SAFETY: a valid key; the value is the cache the destructor drains.
    unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, t as *const libc::c_void) };
    tls::set(t as usize);
    t
}

/// The calling thread's cache, if it has one.
#[inline(always)]
fn my_cache() -> Option<&'static mut Tcache> {
    let t = tls::get();
    // SAFETY: a TLS word above TLS_OFF is this thread's live cache, which
    // only this thread mutates.
    (t > TLS_OFF).then(|| unsafe { &mut *(t as *mut Tcache) })
}

/// The thread-exit destructor: gives the cache's blocks back to the heap.
unsafe extern "C" fn cache_exit(arg: *mut libc::c_void) {
    tls::set(TLS_OFF);
    let t = arg as *mut Tcache;
    // SAFETY: `arg` is the cache this thread registered; no one else uses it.
    unsafe {
        drain_cache(&mut *t, "free");
        REGISTRY.lock().retire(t);
    }
}

/// Gives every block of cache `t` back to the heap.
fn drain_cache(t: &mut Tcache, op: &'static str) {
    let mut h = heap(op);
    // SAFETY: cached blocks are held blocks of the heap.
    let r = unsafe { t.drain_all(&REGIONS, |b| h.free(b)) };
    if let Err(tcache::CacheFault::Corrupted(a)) = r {
        drop(h);
        diag::fatal(op, "corrupted thread cache at", a);
    }
}

/// Counts a call and the bytes it asked for. Fast paths count small
/// requests before serving them; slow paths pass 0 and count the bytes
/// with [`served`] once the request succeeded, so a failed huge request
/// does not distort the figure.
#[inline(always)]
fn count(t: Option<&Tcache>, call: Call, requested: usize) {
    match t {
        Some(t) => {
            tcache::add(&t.counters.calls[call as usize], 1);
            tcache::add(&t.counters.requested, requested as u64);
        }
        None => {
            SHARED.calls[call as usize].fetch_add(1, Relaxed);
            SHARED.requested.fetch_add(requested as u64, Relaxed);
        }
    }
}

/// Counts the bytes of a request a slow path served; passes `p` through.
fn served(n: usize, p: *mut u8) -> *mut u8 {
    if !p.is_null() {
        match my_cache() {
            Some(t) => tcache::add(&t.counters.requested, n as u64),
            None => {
                SHARED.requested.fetch_add(n as u64, Relaxed);
            }
        }
    }
    p
}

// ----- fork ------------------------------------------------------------------

static FORK_HELD: AtomicU8 = AtomicU8::new(0);

extern "C" fn fork_prepare() {
    // glibc's fork takes the stdio list lock only after the prepare
    // handlers have run. A thread in fflush(NULL) holds that lock and waits
    // for a stream whose owner (in getline) waits for our heap lock: if we
    // held the heap lock then, fork would wait for fflush forever. Taking
    // the list lock first (it is recursive; glibc takes it again) makes the
    // order list -> ours for every thread.
    unsafe extern "C" {
        fn _IO_list_lock();
    }
    // SAFETY: glibc's exported stdio list lock; released in `fork_parent`,
    // reset in `fork_child`.
    unsafe { _IO_list_lock() };
    crate::trace::fork_prepare();
    crate::harden::fork_prepare();
    let mut held = 0;
    if REGISTRY.hold() {
        held |= 1;
    }
    if HEAP.hold() {
        held |= 2;
    }
    if LARGE.hold() {
        held |= 4;
    }
    FORK_HELD.store(held, Relaxed);
}

fn release_fork_locks() {
    let held = FORK_HELD.load(Relaxed);
    // SAFETY: each lock is released once, only if `fork_prepare` took it.
    unsafe {
        if held & 4 != 0 {
            LARGE.force_unlock();
        }
        if held & 2 != 0 {
            HEAP.force_unlock();
        }
        if held & 1 != 0 {
            REGISTRY.force_unlock();
        }
    }
}

extern "C" fn fork_parent() {
    release_fork_locks();
    crate::harden::fork_release();
    crate::trace::fork_parent();
    unsafe extern "C" {
        fn _IO_list_unlock();
    }
    // SAFETY: taken by `fork_prepare` in this thread (glibc has released
    // its own hold before running the parent handlers).
    unsafe { _IO_list_unlock() };
}

extern "C" fn fork_child() {
    unsafe extern "C" {
        fn _IO_list_resetlock();
    }
    // SAFETY: the child has one thread; the lock `fork_prepare` took is
    // put back to its initial state (glibc may have done so already).
    unsafe { _IO_list_resetlock() };
    release_fork_locks();
    crate::harden::fork_release();
    crate::trace::fork_child();
    // The other threads' caches belong to threads that do not exist here:
    // give their blocks back. A cache caught mid-update keeps what cannot
    // be checked (a leak in the child, never a corruption).
    let mine = tls::get();
    loop {
        let orphan = {
            let r = REGISTRY.lock();
            let mut t = r.live;
            while !t.is_null() && t as usize == mine {
                // SAFETY: live caches stay allocated while the registry is locked.
                t = unsafe { (*t).next };
            }
            t
        };
        if orphan.is_null() {
            break;
        }
        {
            let mut h = heap("fork");
            // SAFETY: the orphan's thread is gone; its blocks are held blocks.
            let _ = unsafe { (*orphan).drain_all(&REGIONS, |b| h.free(b)) };
        }
        // SAFETY: the orphan is live, drained (or abandoned), and unused.
        unsafe { REGISTRY.lock().retire(orphan) };
    }
}

// ----- malloc ------------------------------------------------------------------

/// Allocates `n` bytes for C function `call`; null when out of memory.
#[inline(always)]
pub fn malloc(n: usize, call: Call) -> *mut u8 {
    if let Some(t) = my_cache()
        && n <= TCACHE_MAX_REQUEST
    {
        count(Some(t), call, n);
        let units = config::request_units(n);
        // SAFETY: the cache holds blocks of our heap.
        match unsafe { t.pop(&REGIONS, units) } {
            Ok(Some(b)) => return b.payload(),
            Ok(None) => return refill(t, n, false),
            Err(tcache::CacheFault::Corrupted(a)) => diag::fatal(call_name(call), "corrupted thread cache at", a),
        }
    }
    malloc_slow(n, call)
}

pub fn call_name(call: Call) -> &'static str {
    match call {
        Call::Malloc => "malloc",
        Call::Free => "free",
        Call::Calloc => "calloc",
        Call::Realloc => "realloc",
        Call::Memalign => "memalign",
    }
}

#[cold]
#[inline(never)]
fn malloc_slow(n: usize, call: Call) -> *mut u8 {
    ensure_init();
    let t = match tls::get() {
        TLS_NONE => make_cache(),
        TLS_OFF => core::ptr::null_mut(),
        t => t as *mut Tcache,
    };
    // SAFETY: a non-null `t` is this thread's cache.
    let t = unsafe { t.as_mut() };
    count(t.as_deref(), call, 0);
    if let Some(t) = t
        && n <= TCACHE_MAX_REQUEST
    {
        // SAFETY: as in `malloc`.
        if let Ok(Some(b)) = unsafe { t.pop(&REGIONS, config::request_units(n)) } {
            return served(n, b.payload());
        }
    }
    served(n, heap_malloc(n, false))
}

/// Blocks a thread cache takes from the heap at once when it runs dry.
const REFILL: usize = 8;

/// A small malloc that found its cache list empty: the best fit from the
/// heap, plus up to `REFILL - 1` more blocks of the same size for the cache
/// (free blocks of exactly that size, or, in an allocation burst, pieces of
/// the top), all under one lock.
#[inline(never)]
fn refill(t: &mut Tcache, n: usize, zero: bool) -> *mut u8 {
    let units = config::request_units(n);
    if ((units as usize) << UNIT_SHIFT) >= OPT.mmap_threshold.load(Relaxed) {
        return heap_malloc(n, zero);
    }
    let mut extra = [Block::NULL; REFILL - 1];
    let mut k = 0;
    let grant = {
        let mut h = heap(if zero { "calloc" } else { "malloc" });
        // SAFETY: the heap is consistent between calls.
        let g = unsafe { h.alloc(units) };
        if let Some(g) = g {
            let room = t.room_for(units).min(extra.len());
            while k < room {
                // SAFETY: as above.
                match unsafe { h.take_exact(units, g.from_top) } {
                    Some(b) => {
                        extra[k] = b;
                        k += 1;
                    }
                    None => break,
                }
            }
        }
        g
    };
    for &b in &extra[..k] {
        // SAFETY: `b` is a block of `units` the heap just handed out.
        unsafe { t.push(b, units) };
    }
    match grant {
        Some(g) => {
            if zero && g.dirty > 0 {
                // SAFETY: the payload is ours and at least `dirty` bytes long.
                unsafe { core::ptr::write_bytes(g.block.payload(), 0, g.dirty) };
            }
            g.block.payload()
        }
        None => core::ptr::null_mut(),
    }
}

/// Allocates `n` bytes from the heap or a mapping, zeroed if `zero`.
#[inline(never)]
pub fn heap_malloc(n: usize, zero: bool) -> *mut u8 {
    if n <= MAX_HEAP_REQUEST {
        let units = config::request_units(n);
        let big = ((units as usize) << UNIT_SHIFT) >= OPT.mmap_threshold.load(Relaxed)
            && LARGE.lock().count() < OPT.mmap_max.load(Relaxed);
        let grant = {
            let mut h = heap(if zero { "calloc" } else { "malloc" });
            // SAFETY: the heap is consistent between calls.
            unsafe { if big { h.alloc_no_grow(units) } else { h.alloc(units) } }
        };
        if let Some(g) = grant {
            if zero && g.dirty > 0 {
                // SAFETY: the payload is ours and at least `dirty` bytes long.
                unsafe { core::ptr::write_bytes(g.block.payload(), 0, g.dirty) };
            }
            return g.block.payload();
        }
        if !big {
            return core::ptr::null_mut();
        }
        if let Some(p) = map_large(n, 16) {
            return p;
        }
        // No mapping: a heap block after all.
        // SAFETY: as above.
        return match unsafe { heap(if zero { "calloc" } else { "malloc" }).alloc(units) } {
            Some(g) => {
                if zero && g.dirty > 0 {
                    // SAFETY: as above.
                    unsafe { core::ptr::write_bytes(g.block.payload(), 0, g.dirty) };
                }
                g.block.payload()
            }
            None => core::ptr::null_mut(),
        };
    }
    map_large(n, 16).unwrap_or(core::ptr::null_mut())
}

/// A block for the hardened mode: from the heap (never a thread cache) or,
/// when large, a mapping of its own that ends with a guard page.
pub(crate) fn checked_block(n: usize, align: usize, zero: bool) -> *mut u8 {
    served(n, checked_block_inner(n, align, zero))
}

fn checked_block_inner(n: usize, align: usize, zero: bool) -> *mut u8 {
    ensure_init();
    count(None, if align > 16 { Call::Memalign } else if zero { Call::Calloc } else { Call::Malloc }, 0);
    let page = OPT.page.load(Relaxed);
    if n <= MAX_HEAP_REQUEST && align < page * 16 {
        let units = config::request_units(n);
        let extra = if align > 16 { align } else { 0 };
        if ((units as usize) << UNIT_SHIFT) + extra < OPT.mmap_threshold.load(Relaxed) {
            let mut h = heap("malloc");
            // SAFETY: the heap is consistent between calls.
            unsafe {
                if align <= 16 {
                    if let Some(g) = h.alloc(units) {
                        drop(h);
                        if zero && g.dirty > 0 {
                            core::ptr::write_bytes(g.block.payload(), 0, g.dirty);
                        }
                        return g.block.payload();
                    }
                } else if let Some(b) = h.alloc_aligned(align, units) {
                    drop(h);
                    if zero {
                        core::ptr::write_bytes(b.payload(), 0, n);
                    }
                    return b.payload();
                }
            }
        }
    }
    if !LARGE.lock().reserve() {
        return core::ptr::null_mut();
    }
    let Some((payload, base, len)) = large::map_guarded(n, align, page) else { return core::ptr::null_mut() };
    if !LARGE.lock().insert(payload, base, len, true) {
        // SAFETY: the mapping is ours and unused.
        unsafe { crate::os::unmap(base, len) };
        return core::ptr::null_mut();
    }
    payload as *mut u8
}

/// A large block in its own mapping (fresh memory reads as zero).
fn map_large(n: usize, align: usize) -> Option<*mut u8> {
    let page = OPT.page.load(Relaxed);
    // Room in the table first: a mapping we could not record would be lost.
    if !LARGE.lock().reserve() {
        return None;
    }
    let (payload, base, len) = large::map_block(n, align, page)?;
    if !LARGE.lock().insert(payload, base, len, false) {
        // SAFETY: the mapping is ours and unused.
        unsafe { crate::os::unmap(base, len) };
        return None;
    }
    Some(payload as *mut u8)
}

/// Allocates `n` zeroed bytes.
#[inline]
pub fn calloc(n: usize) -> *mut u8 {
    if let Some(t) = my_cache()
        && n <= TCACHE_MAX_REQUEST
    {
        count(Some(t), Call::Calloc, n);
        // SAFETY: as in `malloc`.
        match unsafe { t.pop(&REGIONS, config::request_units(n)) } {
            Ok(Some(b)) => {
                // SAFETY: the whole payload is ours.
                unsafe { core::ptr::write_bytes(b.payload(), 0, Block::payload_bytes(b.units())) };
                return b.payload();
            }
            Ok(None) => return refill(t, n, true),
            Err(tcache::CacheFault::Corrupted(a)) => diag::fatal("calloc", "corrupted thread cache at", a),
        }
    }
    ensure_init();
    if tls::get() == TLS_NONE {
        make_cache();
    }
    count(my_cache().map(|t| &*t), Call::Calloc, 0);
    served(n, heap_malloc(n, true))
}

/// Allocates `n` bytes aligned to `align` (a power of two above 16).
pub fn memalign(align: usize, n: usize) -> *mut u8 {
    served(n, memalign_block(align, n))
}

fn memalign_block(align: usize, n: usize) -> *mut u8 {
    ensure_init();
    count(my_cache().map(|t| &*t), Call::Memalign, 0);
    let page = OPT.page.load(Relaxed);
    if n <= MAX_HEAP_REQUEST && align < page * 16 {
        let units = config::request_units(n);
        let small = (((units as usize) << UNIT_SHIFT) + align) < OPT.mmap_threshold.load(Relaxed);
        if small {
            // SAFETY: the heap is consistent between calls.
            if let Some(b) = unsafe { heap("memalign").alloc_aligned(align, units) } {
                return b.payload();
            }
        }
    }
    if let Some(p) = map_large(n, align) {
        return p;
    }
    // No mapping: the heap may still hold it (as malloc does).
    if n <= MAX_HEAP_REQUEST && align < page * 16 {
        // SAFETY: as above.
        if let Some(b) = unsafe { heap("memalign").alloc_aligned(align, config::request_units(n)) } {
            return b.payload();
        }
    }
    core::ptr::null_mut()
}

// ----- free ------------------------------------------------------------------------

/// Frees `p` (non-null) for C function `func`.
#[inline(always)]
pub fn free(p: *mut u8, func: &'static str) {
    let a = p as usize;
    if let Some(t) = my_cache()
        && a.is_multiple_of(16)
        && REGIONS.contains(a)
    {
        tcache::add(&t.counters.calls[Call::Free as usize], 1);
        let b = Block::from_payload(p);
        // SAFETY: `b` is a header position inside a heap region; the payload
        // words are read only for a block with a valid used header.
        unsafe {
            let h = b.header();
            let units = crate::block::used_units(h);
            let checked = if cfg!(feature = "unchecked-fast-path") {
                h & crate::block::USED != 0
            } else {
                crate::block::is_used_header(b.addr(), h) && b.cache_key() != tcache::mark(b)
            };
            if checked
                && units <= TCACHE_MAX_UNITS
                && t.has_room(units)
            {
                t.push(b, units);
                return;
            }
        }
        return free_heap_block(b, Some(t), func);
    }
    free_slow(p, func)
}

#[cold]
#[inline(never)]
fn free_slow(p: *mut u8, func: &'static str) {
    let a = p as usize;
    if STATE.load(Acquire) != READY {
        diag::fatal(func, "invalid pointer (the allocator has not handed out anything yet)", a);
    }
    let t = my_cache();
    if t.is_none() {
        count(None, Call::Free, 0);
    }
    if REGIONS.contains(a) {
        if !a.is_multiple_of(16) {
            diag::fatal(func, "invalid pointer (inside the heap, not a block start)", a);
        }
        return free_heap_block(Block::from_payload(p), t, func);
    }
    free_large(a, func);
}

/// Frees heap block `b` that did not fit in the cache (or is not valid).
#[inline(never)]
fn free_heap_block(b: Block, t: Option<&mut Tcache>, func: &'static str) {
    // SAFETY: `b` lies in a heap region (checked by the callers).
    unsafe {
        check_held(b, func);
        let units = b.units();
        let mut h = heap(func);
        if let Some(t) = t
            && units <= TCACHE_MAX_UNITS
        {
            // The list for this size is full: move half of it to the heap
            // under this one lock, then cache the block.
            let half = t.count(units).div_ceil(2);
            let r = t.drain(&REGIONS, units, half, |c| h.free(c));
            if let Err(tcache::CacheFault::Corrupted(a)) = r {
                drop(h);
                diag::fatal(func, "corrupted thread cache at", a);
            }
            if t.has_room(units) {
                drop(h);
                t.push(b, units);
                return;
            }
        }
        h.free(b);
    }
}

/// Aborts (with the reason) unless heap block `b` is held by the program:
/// a valid used header, and not waiting in a thread cache.
///
/// # Safety
/// `b` must be a header position inside a heap region.
#[inline]
unsafe fn check_held(b: Block, func: &'static str) {
    // SAFETY: forwarded; the payload word is read only for a valid header.
    unsafe {
        if !b.is_valid_used() || b.cache_key() == tcache::mark(b) {
            bad_heap_pointer(b, func);
        }
    }
}

/// Explains why heap pointer `b`'s payload cannot be freed, and aborts.
#[cold]
pub(crate) fn bad_heap_pointer(b: Block, func: &'static str) -> ! {
    let p = b.payload() as usize;
    let h = heap(func);
    // SAFETY: `b` is a header position inside a heap region (callers).
    unsafe {
        if b.is_valid_used() && b.cache_key() == tcache::mark(b) {
            drop(h);
            diag::fatal(func, double_free_text(func), p);
        }
        let hd = b.header();
        // A block merged into the top has the top's header (no footer) or
        // lies inside the top.
        let (top, top_units) = h.top();
        let in_top = top_units > 0 && b.addr() >= top.addr() && b.addr() < top.offset(top_units).addr();
        if hd == crate::block::MERGED || in_top {
            drop(h);
            diag::fatal(func, double_free_text(func), p);
        }
        if hd & crate::block::USED == 0 {
            // A genuine free block has a sane size and a matching footer.
            let units = crate::block::header_units(hd);
            let end = REGIONS.find(b.addr()).map(|r| REGIONS.end(r)).unwrap_or(0);
            if units >= MIN_UNITS && b.addr() + ((units as usize) << UNIT_SHIFT) < end && b.footer(units) == hd {
                drop(h);
                diag::fatal(func, double_free_text(func), p);
            }
        }
    }
    drop(h);
    diag::fatal(func, "invalid pointer (not a block start, or its header was overwritten)", p)
}

fn double_free_text(func: &str) -> &'static str {
    match func {
        "free" => "double free of",
        "realloc" => "realloc of a freed block",
        _ => "pointer to a freed block",
    }
}

/// Frees a pointer outside the heap regions: a large block, or not ours.
fn free_large(a: usize, func: &'static str) {
    let found = {
        let mut l = LARGE.lock();
        let r = l.lookup(a);
        if let Lookup::Live { .. } = r {
            l.remove(a);
        }
        r
    };
    match found {
        Lookup::Live { base, len, .. } => {
            // SAFETY: the mapping was the block's and is no longer recorded.
            unsafe { crate::os::unmap(base, len) };
            raise_mmap_threshold(base + len - a);
        }
        Lookup::Freed => diag::fatal(func, double_free_text(func), a),
        Lookup::Unknown => diag::fatal(func, "invalid pointer (not allocated by fitalloc)", a),
    }
}

/// glibc's dynamic threshold: after a mapped block of `size` is freed,
/// blocks up to that size come from the heap (unless the program chose
/// thresholds itself).
fn raise_mmap_threshold(size: usize) {
    if OPT.dynamic_threshold.load(Relaxed)
        && size > OPT.mmap_threshold.load(Relaxed)
        && size <= MAX_HEAP_REQUEST
    {
        OPT.mmap_threshold.store(size, Relaxed);
        OPT.trim_threshold.store(2 * size, Relaxed);
        sync_params(&mut HEAP.lock());
    }
}

// ----- realloc, sizes ---------------------------------------------------------------

/// Resizes `p` (non-null) to `n` (non-zero) bytes; null (with `p` intact)
/// when out of memory.
pub fn realloc(p: *mut u8, n: usize) -> *mut u8 {
    let a = p as usize;
    let t = my_cache();
    if t.is_none() {
        ensure_init();
    }
    count(t.map(|t| &*t), Call::Realloc, 0);
    served(n, realloc_block(a, n))
}

fn realloc_block(a: usize, n: usize) -> *mut u8 {
    let p = a as *mut u8;
    if REGIONS.contains(a) {
        if !a.is_multiple_of(16) {
            diag::fatal("realloc", "invalid pointer (inside the heap, not a block start)", a);
        }
        let b = Block::from_payload(p);
        // SAFETY: `b` lies in a heap region; its header is checked first.
        unsafe {
            check_held(b, "realloc");
            let have = b.units();
            let old_bytes = Block::payload_bytes(have);
            if n <= MAX_HEAP_REQUEST {
                let want = config::request_units(n);
                if want <= have && have - want < MIN_UNITS {
                    return p;
                }
                let moved = heap("realloc").resize(b, want, old_bytes.min(n));
                if let Some(nb) = moved {
                    return nb.payload();
                }
            }
            return move_block(a, old_bytes.min(n), n, || free(p, "realloc"));
        }
    }
    let found = LARGE.lock().lookup(a);
    match found {
        Lookup::Live { base, len, .. } => realloc_large(a, base, len, n),
        Lookup::Freed => diag::fatal("realloc", double_free_text("realloc"), a),
        Lookup::Unknown => diag::fatal("realloc", "invalid pointer (not allocated by fitalloc)", a),
    }
}

/// realloc by moving: a new block of `n` bytes, the first `keep` bytes of
/// the block at `a` copied, then `release` frees the old one. Null (the old
/// block untouched) when no memory.
fn move_block(a: usize, keep: usize, n: usize, release: impl FnOnce()) -> *mut u8 {
    let q = heap_malloc(n, false);
    if !q.is_null() {
        // SAFETY: both blocks are live and ours; `keep` fits in each.
        unsafe { core::ptr::copy_nonoverlapping(a as *const u8, q, keep) };
        release();
    }
    q
}

fn realloc_large(a: usize, base: usize, len: usize, n: usize) -> *mut u8 {
    let page = OPT.page.load(Relaxed);
    let usable = base + len - a;
    let offset = a - base;
    // Small enough for the heap: move there, so the mapping can go.
    if n <= MAX_HEAP_REQUEST
        && ((config::request_units(n) as usize) << UNIT_SHIFT) < OPT.mmap_threshold.load(Relaxed)
        && n < usable
    {
        let q = move_block(a, n, n, || free_large(a, "realloc"));
        if !q.is_null() {
            return q;
        }
    }
    let Some(new_len) = n.checked_add(offset).and_then(|v| config::checked_round_up(v, page)) else {
        return core::ptr::null_mut();
    };
    if new_len > isize::MAX as usize {
        return core::ptr::null_mut();
    }
    if new_len == len {
        return a as *mut u8;
    }
    // The block leaves the table while its mapping moves: as soon as
    // mremap returns, the old range may be another thread's new mapping,
    // with the same key, whose entry must not be taken for ours. Room for
    // our entry's return is made first, so recording it cannot fail.
    {
        let mut l = LARGE.lock();
        if !l.reserve() {
            return core::ptr::null_mut();
        }
        l.remove(a);
    }
    // SAFETY: `[base, base + len)` is the block's whole mapping.
    let moved = unsafe { crate::os::remap(base, len, new_len, true) };
    let (key, b, l) = match moved {
        Some(nb) => (nb + offset, nb, new_len),
        None => (a, base, len),
    };
    let recorded = LARGE.lock().insert(key, b, l, false);
    debug_assert!(recorded, "room was reserved");
    match moved {
        Some(nb) => (nb + offset) as *mut u8,
        None if new_len < len => a as *mut u8,
        // mremap failed; a fresh block and a copy may still work.
        None => move_block(a, usable.min(n), n, || free_large(a, "realloc")),
    }
}

/// The usable size of block `p` (non-null).
pub fn usable_size(p: *mut u8, func: &'static str) -> usize {
    let a = p as usize;
    if REGIONS.contains(a) {
        if !a.is_multiple_of(16) {
            diag::fatal(func, "invalid pointer (inside the heap, not a block start)", a);
        }
        let b = Block::from_payload(p);
        // SAFETY: `b` lies in a heap region; its header is checked first.
        unsafe {
            check_held(b, func);
            return Block::payload_bytes(b.units());
        }
    }
    match LARGE.lock().lookup(a) {
        Lookup::Live { base, len, guarded } => base + len - a - if guarded { OPT.page.load(Relaxed) } else { 0 },
        Lookup::Freed => diag::fatal(func, double_free_text(func), a),
        Lookup::Unknown => diag::fatal(func, "invalid pointer (not allocated by fitalloc)", a),
    }
}

// ----- trimming, statistics, walks ---------------------------------------------------

/// malloc_trim: gives back the top beyond `pad` and the pages inside large
/// free blocks. True if anything was released.
pub fn trim(pad: usize) -> bool {
    ensure_init();
    // Our own cache's blocks may sit between free blocks: return them first.
    if let Some(t) = my_cache() {
        drain_cache(t, "malloc_trim");
    }
    let mut h = heap("malloc_trim");
    // SAFETY: the heap is consistent between calls.
    unsafe { h.trim_top(pad) + h.purge_free_blocks() > 0 }
}

/// Everything the statistics report, gathered under each lock in turn.
#[derive(Default, Clone, Copy, Debug)]
pub struct Snapshot {
    pub heap: crate::heap::HeapCounters,
    pub top_bytes: usize,
    pub largest_free: usize,
    pub mapped_bytes: usize,
    pub mapped_blocks: usize,
    pub peak_mapped_bytes: usize,
    pub peak_mapped_blocks: usize,
    pub calls: [u64; CALLS],
    pub requested: u64,
    pub cached_bytes: u64,
    pub cached_blocks: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub threads: usize,
    pub quarantined_bytes: usize,
    pub quarantined_blocks: usize,
}

pub fn snapshot() -> Snapshot {
    ensure_init();
    let mut s = Snapshot::default();
    {
        let h = HEAP.lock();
        s.heap = h.counters;
        s.top_bytes = (h.top().1 as usize) << UNIT_SHIFT;
        s.largest_free = largest_free(&h).max(s.top_bytes);
    }
    {
        let l = LARGE.lock();
        s.mapped_bytes = l.bytes;
        s.mapped_blocks = l.count();
        s.peak_mapped_bytes = l.peak_bytes;
        s.peak_mapped_blocks = l.peak_count;
    }
    let r = REGISTRY.lock();
    for i in 0..CALLS {
        s.calls[i] = r.retired_calls[i].wrapping_add(SHARED.calls[i].load(Relaxed));
    }
    s.requested = r.retired_requested.wrapping_add(SHARED.requested.load(Relaxed));
    s.cache_hits = r.retired_hits;
    s.cache_misses = r.retired_misses;
    r.for_each(|t| {
        for i in 0..CALLS {
            s.calls[i] = s.calls[i].wrapping_add(t.counters.calls[i].load(Relaxed));
        }
        s.requested = s.requested.wrapping_add(t.counters.requested.load(Relaxed));
        let (bytes, blocks) = t.held();
        s.cached_bytes += bytes;
        s.cached_blocks += blocks;
        s.cache_hits += t.counters.hits.load(Relaxed);
        s.cache_misses += t.counters.misses.load(Relaxed);
    });
    s.threads = r.threads;
    drop(r);
    (s.quarantined_bytes, s.quarantined_blocks) = crate::harden::held();
    s
}

/// The largest free block in the bins (or parked).
fn largest_free(h: &Heap<Os>) -> usize {
    let mut best = (h.bins.small.largest().unwrap_or(0) as usize) << UNIT_SHIFT;
    best = best.max((h.parked().1 as usize) << UNIT_SHIFT);
    for i in (0..config::TREE_BINS).rev() {
        if h.bins.tree_map_bit(i) {
            let mut m = 0;
            // SAFETY: tree nodes are free blocks of the heap.
            let _ = unsafe { h.bins.tree(i).for_each(&REGIONS, |b| m = m.max(b.units())) };
            best = best.max((m as usize) << UNIT_SHIFT);
            break;
        }
    }
    best
}

/// Applies mallopt-style changes to the heap's parameters.
pub fn params_changed() {
    ensure_init();
    sync_params(&mut HEAP.lock());
}

/// Runs `f` with the heap, large table and registry locked (for the
/// checker and heap walks). `f` must not allocate.
pub fn with_everything<R>(f: impl FnOnce(&Heap<Os>, &MapTable, &Registry) -> R) -> R {
    ensure_init();
    let r = REGISTRY.lock();
    let h = heap("check");
    let l = LARGE.lock();
    f(&h, &l, &r)
}
