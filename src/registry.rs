//! The thread registry: every thread's cache, its creation on a thread's
//! first small request, its return to the heap at thread exit (and, in a
//! forked child, for threads that do not exist there), and the per-thread
//! call counters that statistics add up.
//!
//! A thread finds its cache through one TLS word ([`crate::tls::CACHE`]):
//! 0 until it has one, 1 while it has none (being built, thread exiting, or
//! caches off), 2 to [`TLS_LAST_COUNT`] while a thread that has not
//! allocated counts the frees that missed a cache (see [`my_cache_for_free`]),
//! otherwise the cache's address.

use crate::config;
use crate::diag;
use crate::options::OPT;
use crate::block::Block;
use crate::process::release_blocks;
use crate::sync::{Locked, Rank};
use crate::tcache::{self, Call, Tcache, ThreadCounters, CALLS};
use crate::tls;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

/// TLS word: no cache yet.
pub(crate) const TLS_NONE: usize = 0;
/// TLS word: no cache now (being built, thread exiting, or caches off).
pub(crate) const TLS_OFF: usize = 1;
/// TLS word: the last value that counts frees of a thread without a cache
/// (from 2, one more per free): the next one makes its cache. Well below
/// any cache's address.
pub(crate) const TLS_LAST_COUNT: usize = 2 + FREES_BEFORE_CACHE;
/// Frees a thread that has not allocated makes before it gets a cache: so
/// that a thread freeing a block or two (or freeing in a late thread-exit
/// destructor, after which nothing would retire its cache) gets none.
const FREES_BEFORE_CACHE: usize = 16;

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
    retired_refilled: u64,
    retired_overflows: u64,
    retired_sent_away: u64,
    pub threads: usize,
}

// SAFETY: the raw pointers are owned by the registry; access is locked.
unsafe impl Send for Registry {}

static REGISTRY: Locked<Registry> = Locked::new(
    Rank::Registry,
    Registry {
        live: core::ptr::null_mut(),
        spare: core::ptr::null_mut(),
        carve: 0,
        carve_end: 0,
        retired_calls: [0; CALLS],
        retired_requested: 0,
        retired_hits: 0,
        retired_misses: 0,
        retired_refilled: 0,
        retired_overflows: 0,
        retired_sent_away: 0,
        threads: 0,
    },
);

/// Calls counted on threads without a cache (or before it exists).
static SHARED: ThreadCounters = ThreadCounters {
    calls: [const { AtomicU64::new(0) }; CALLS],
    requested: AtomicU64::new(0),
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
};

/// The pthread key whose destructor returns a cache at thread exit.
static TSD_KEY: AtomicU32 = AtomicU32::new(u32::MAX);

/// Creates the thread-exit key (once, at start-up; creating it does not
/// allocate in glibc).
pub fn create_exit_key() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `cache_exit` lives as long as the library.
    if unsafe { libc::pthread_key_create(&mut key, Some(cache_exit)) } == 0 {
        TSD_KEY.store(key as u32, Relaxed);
    }
}

impl Registry {
    /// Memory for one cache.
    fn take(&mut self) -> *mut Tcache {
        if !self.spare.is_null() {
            let t = self.spare;
            // SAFETY: spare caches are ours and unused.
            self.spare = unsafe { (*t).next.load(Relaxed) };
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
            (*t).prev.store(core::ptr::null_mut(), Relaxed);
            (*t).next.store(self.live, Relaxed);
            if !self.live.is_null() {
                (*self.live).prev.store(t, Relaxed);
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
            let w = &(*t).slow;
            self.retired_refilled = self.retired_refilled.wrapping_add(w.refilled.load(Relaxed));
            self.retired_overflows = self.retired_overflows.wrapping_add(w.overflows.load(Relaxed));
            self.retired_sent_away = self.retired_sent_away.wrapping_add(w.sent_away.load(Relaxed));
            let (p, n) = ((*t).prev.load(Relaxed), (*t).next.load(Relaxed));
            if p.is_null() {
                self.live = n;
            } else {
                (*p).next.store(n, Relaxed);
            }
            if !n.is_null() {
                (*n).prev.store(p, Relaxed);
            }
            (*t).next.store(self.spare, Relaxed);
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
                t = (*t).next.load(Relaxed);
            }
        }
    }
}

/// The calling thread's cache, if it has one.
#[inline(always)]
pub fn my_cache() -> Option<&'static Tcache> {
    let t = tls::get::<{ tls::CACHE }>();
    // SAFETY: a TLS word above TLS_LAST_COUNT is this thread's live cache,
    // which stays allocated until the thread's exit destructor retires it.
    (t > TLS_LAST_COUNT).then(|| unsafe { &*(t as *const Tcache) })
}

/// The calling thread's cache, created on the thread's first request.
pub fn my_cache_or_new() -> Option<&'static Tcache> {
    match tls::get::<{ tls::CACHE }>() {
        TLS_NONE | 2..=TLS_LAST_COUNT => make_cache(OPT.tcache_bytes.load(Relaxed)),
        _ => my_cache(),
    }
}

/// The calling thread's cache for a free that missed it: a thread that has
/// not allocated gets one at its `FREES_BEFORE_CACHE`-th such free, so that
/// a thread that only frees (a consumer) passes blocks on in chains
/// ([`crate::depot`]), not to the heap one by one. Its budget is any
/// cache's: with a quarter of it (64 KiB), producer/consumer ran at 10.6
/// Mops/s instead of 18 (its lists stayed a block or two long, and so did
/// the chains it passed on).
pub fn my_cache_for_free() -> Option<&'static Tcache> {
    match tls::get::<{ tls::CACHE }>() {
        TLS_LAST_COUNT => make_cache(OPT.tcache_bytes.load(Relaxed)),
        TLS_NONE => {
            tls::set::<{ tls::CACHE }>(2);
            None
        }
        n @ 2..TLS_LAST_COUNT => {
            tls::set::<{ tls::CACHE }>(n + 1);
            None
        }
        _ => my_cache(),
    }
}

/// This thread's cache of `max` bytes, creating it. None when the thread
/// has none (caches off, exiting, or no memory).
#[cold]
#[inline(never)]
fn make_cache(max: usize) -> Option<&'static Tcache> {
    tls::set::<{ tls::CACHE }>(TLS_OFF);
    let key = TSD_KEY.load(Relaxed);
    if !OPT.tcache.load(Relaxed) || key == u32::MAX {
        return None;
    }
    let t = {
        let mut r = REGISTRY.lock();
        let t = r.take();
        if t.is_null() {
            return None;
        }
        let max = max as u64;
        // SAFETY: `t` is memory for one cache, owned by the registry.
        unsafe {
            t.write(Tcache::new(max, (max as usize / 16).max(64), OPT.tcache_count.load(Relaxed), crate::process::next_arena()));
            r.link(t);
        }
        t
    };
    // May allocate (keys above 31): our TLS word says "no cache" meanwhile.
    // SAFETY: a valid key; the value is the cache the destructor drains.
    unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, t as *const libc::c_void) };
    tls::set::<{ tls::CACHE }>(t as usize);
    my_cache()
}

/// The thread-exit destructor: hands the cache's lists to the depot as far
/// as it has room, and gives the rest of its blocks back home.
unsafe extern "C" fn cache_exit(arg: *mut libc::c_void) {
    tls::set::<{ tls::CACHE }>(TLS_OFF);
    let t = arg as *mut Tcache;
    // SAFETY: `arg` is the cache this thread registered; from here on no
    // thread uses it but this one, which retires it.
    unsafe {
        // Named for the call that runs this destructor: a corrupted cache
        // found here is reported as `pthread_exit()`'s, not a `free()` the
        // program did not make.
        crate::process::depot_put_lists(&*t, "pthread_exit");
        drain_cache(&*t, "pthread_exit");
        REGISTRY.lock().retire(t);
    }
}

/// Gives every block of cache `t` back to the heap.
///
/// # Safety
/// `t` must be the calling thread's cache, or one no thread uses.
pub unsafe fn drain_cache(t: &Tcache, op: &'static str) {
    // SAFETY: the caller owns `t`.
    let r = unsafe { release_all(t, op) };
    crate::process::disown_slabs(t);
    if let Err(tcache::CacheFault::Corrupted(a)) = r {
        diag::fatal(op, "corrupted thread cache at", a);
    }
}

/// Takes every block out of cache `t` and gives it back home (a slab or
/// the heap), 64 at a time.
///
/// # Safety
/// `t` must be the calling thread's cache, or one no thread uses.
unsafe fn release_all(t: &Tcache, op: &'static str) -> Result<(), tcache::CacheFault> {
    let mut out = [Block::NULL; 64];
    let mut k = 0;
    // SAFETY: the caller owns `t`; cached blocks are held blocks, checked
    // as they leave the cache.
    let r = unsafe {
        t.drain_all(&crate::process::REGIONS, |b| {
            if k == out.len() {
                release_blocks(op, &out);
                k = 0;
            }
            out[k] = b;
            k += 1;
        })
    };
    // SAFETY: as above.
    unsafe { release_blocks(op, &out[..k]) };
    r
}

/// Fork, in the child: the other threads' caches belong to threads that do
/// not exist here; their blocks go back to the heap. A cache caught
/// mid-update keeps what cannot be checked (a leak in the child, never a
/// corruption).
pub fn adopt_orphans() {
    let mine = tls::get::<{ tls::CACHE }>();
    loop {
        let orphan = {
            let r = REGISTRY.lock();
            let mut t = r.live;
            while !t.is_null() && t as usize == mine {
                // SAFETY: live caches stay allocated while the registry is locked.
                t = unsafe { (*t).next.load(Relaxed) };
            }
            t
        };
        if orphan.is_null() {
            break;
        }
        // SAFETY: the orphan's thread is gone; its blocks are held blocks.
        let _ = unsafe { release_all(&*orphan, "fork") };
        // SAFETY: as above.
        crate::process::disown_slabs(unsafe { &*orphan });
        // SAFETY: the orphan is live, drained (or abandoned), and unused.
        unsafe { REGISTRY.lock().retire(orphan) };
    }
}

pub fn hold_for_fork() {
    REGISTRY.hold();
}

pub fn release_after_fork() {
    REGISTRY.release_held();
}

// ----- accounting -------------------------------------------------------------

/// Counts a call and the bytes it asked for. Fast paths count small
/// requests before serving them; slow paths pass 0 and count the bytes
/// with [`served`] once the request succeeded, so a failed huge request
/// does not distort the figure.
#[inline(always)]
pub fn count(t: Option<&Tcache>, call: Call, requested: usize) {
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
pub fn served(n: usize, p: *mut u8) -> *mut u8 {
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

/// Every thread's counters added up, with what the caches hold.
#[derive(Default, Clone, Copy, Debug)]
pub struct Totals {
    pub calls: [u64; CALLS],
    pub requested: u64,
    pub cached_bytes: u64,
    pub cached_blocks: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Blocks refills left in the caches (beside the one each handed
    /// out); overflows, and the blocks they sent away.
    pub refilled: u64,
    pub overflows: u64,
    pub sent_away: u64,
    /// Of the cached bytes and blocks, those of blocks of at most
    /// `M_MXFAST` bytes (`mallinfo`'s fastbin figures).
    pub fast_bytes: u64,
    pub fast_blocks: u64,
    pub threads: usize,
}

pub fn totals() -> Totals {
    let r = REGISTRY.lock();
    let mut s = Totals::default();
    for i in 0..CALLS {
        s.calls[i] = r.retired_calls[i].wrapping_add(SHARED.calls[i].load(Relaxed));
    }
    s.requested = r.retired_requested.wrapping_add(SHARED.requested.load(Relaxed));
    s.cache_hits = r.retired_hits;
    s.cache_misses = r.retired_misses;
    s.refilled = r.retired_refilled;
    s.overflows = r.retired_overflows;
    s.sent_away = r.retired_sent_away;
    let fast = fastbin_units(OPT.mxfast.load(Relaxed));
    r.for_each(|t| {
        for i in 0..CALLS {
            s.calls[i] = s.calls[i].wrapping_add(t.counters.calls[i].load(Relaxed));
        }
        s.requested = s.requested.wrapping_add(t.counters.requested.load(Relaxed));
        let (bytes, blocks) = t.held();
        s.cached_bytes += bytes;
        s.cached_blocks += blocks;
        let (bytes, blocks) = t.held_up_to(fast);
        s.fast_bytes += bytes;
        s.fast_blocks += blocks;
        s.cache_hits += t.counters.hits.load(Relaxed);
        s.cache_misses += t.counters.misses.load(Relaxed);
        s.refilled += t.slow.refilled.load(Relaxed);
        s.overflows += t.slow.overflows.load(Relaxed);
        s.sent_away += t.slow.sent_away.load(Relaxed);
    });
    s.threads = r.threads;
    // The depot's chains are cached blocks between two caches.
    let (bytes, blocks) = crate::process::depot_held();
    s.cached_bytes += bytes;
    s.cached_blocks += blocks;
    let (bytes, blocks) = crate::process::depot_held_up_to(fast);
    s.fast_bytes += bytes;
    s.fast_blocks += blocks;
    s
}

/// The largest block, in units, that glibc would keep in a fastbin with
/// `M_MXFAST` at `mxfast` bytes: chunks up to `(mxfast + 8) & !15` bytes
/// (a chunk's size is the request's plus 8, rounded to 16; a block's is
/// the request's plus 4, rounded to 16); none for 0.
fn fastbin_units(mxfast: usize) -> u32 {
    if mxfast == 0 {
        return 0;
    }
    ((mxfast + core::mem::size_of::<usize>()) >> crate::config::UNIT_SHIFT) as u32
}

/// Runs `f` with the registry locked (the checker and heap walks).
pub fn with_registry<R>(f: impl FnOnce(&Registry) -> R) -> R {
    f(&REGISTRY.lock())
}
