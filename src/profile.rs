//! The heap profiler: `FITALLOC_PROFILE=path` samples allocations, keeps
//! the call stack of every sampled block that is still live, and writes
//! them at exit (and on demand, [`dump_to_path`]) with, for each block, the
//! free bytes on its heap pages that cannot go back to the system because
//! the block is there: its *pinned free space*. `fitalloc profile`
//! (`scripts/fitalloc`) symbolises the file into folded stacks.
//!
//! - **Sampling.** Allocated bytes are a Poisson process of mean interval
//!   `FITALLOC_PROFILE_RATE` (512 KiB): each thread counts down an
//!   exponentially distributed number of bytes ([`crate::tls::PROFILE`]);
//!   the call whose bytes cross zero is sampled, so a block of `n` bytes is
//!   sampled with probability `1 - exp(-n / rate)`, and a random interval
//!   cannot alias with a periodic allocation pattern. The deciding step is
//!   one subtraction per call; everything else is on the sampled call.
//!   Profiling is a hook ([`crate::modes::PROFILE`]): off, it adds nothing
//!   to any path.
//! - **Stacks.** [`crate::stack::capture`]: the DWARF call-frame rules of
//!   each return address, worked out once and cached, with libgcc's
//!   `_Unwind_Backtrace` for what the cache does not cover; nothing
//!   allocates, and it is exact for programs built without frame pointers.
//!   fitalloc's own frames are skipped by address (the text of the shared
//!   object this code is in: with the static library they stay at the leaf
//!   end of each stack).
//! - **The sample table.** The samples sit densely in a pool (a freed
//!   one's entry is the next one reused), found by block address through
//!   an open-addressing table (linear probing, backward-shift deletion)
//!   that starts small and doubles when half full: both in metadata
//!   memory ([`crate::os::map_metadata`]), so a profile of a few hundred
//!   samples touches a few dozen pages. At most [`MAX_LIVE`] samples
//!   live, more are dropped and counted. A free must remove its block's
//!   sample: a counting filter of 32 KiB says in one load that a pointer
//!   was never sampled, so most frees do not take the table's lock.
//! - **Pinned free space.** At a dump the heap is walked in address order
//!   ([`crate::check::walk`]); on every page that holds both free bytes
//!   (free or thread-cached blocks) and bytes of live blocks, the free
//!   bytes cannot be returned, and are shared among the page's live blocks
//!   in proportion to the bytes each has on it. A sampled block's pinned
//!   bytes are the sum of its shares. Whole free pages (purgeable) and
//!   large blocks' own mappings pin nothing.
//!
//! The file (text, version 1): a header of `key value` lines, `maps` and a
//! copy of `/proc/self/maps` (so addresses can be symbolised after the
//! process is gone), `samples`, then one line per live sample
//! `s SIZE PINNED IP...` (hex return addresses, innermost first), and
//! `end`. Weights (size / probability) are computed when symbolising.
//!
//! Nothing here allocates; the file is opened at start-up like the trace
//! recorder's (the first process takes `path`, a forked child or a program
//! that finds it held takes `path.<pid>`; `%p` is the pid).

use crate::config::HEADER;
use crate::diag::OwnFd;
use crate::sync::{Locked, Rank};
use crate::trace::{Event, Path};
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::stack::MAX_FRAMES;
/// Slots of the address table at most, and at first (powers of two).
const SLOTS: usize = 1 << 16;
const FIRST_SLOTS: usize = 1 << 10;
/// Live samples at most: the table stays at most half full.
pub(crate) const MAX_LIVE: usize = SLOTS / 2;
/// No pool entry (the end of the pool's free chain).
const NONE: u32 = u32::MAX;
/// Counters of the filter (a power of two).
const FILTER: usize = 1 << 15;
const OUT_BUF: usize = 64 * 1024;
const PATH_MAX: usize = 600;

#[derive(Clone, Copy)]
#[repr(C)]
struct Sample {
    /// The sampled block's address; 0 for a free pool entry, whose `size`
    /// is then the next free entry's index (or [`NONE`]).
    addr: usize,
    size: usize,
    /// Pinned free bytes found by the last walk.
    pinned: u64,
    depth: u32,
    frames: [usize; MAX_FRAMES],
}

/// One slot of the address table.
#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    /// A live sample's block address; 0: an empty slot.
    addr: usize,
    /// Its index in the pool.
    sample: u32,
}

struct Profiler {
    /// The address table: `cap` slots (a power of two; 0 before start).
    slots: *mut Slot,
    cap: usize,
    /// `MAX_LIVE` samples; entries below `used` have been handed out, and
    /// the free ones among them are chained from `free`.
    pool: *mut Sample,
    used: u32,
    free: u32,
    out: *mut u8,
    out_len: usize,
    live: usize,
    dropped: u64,
    taken: u64,
    fd: OwnFd,
    /// The path as given (for a forked child's own file).
    path: [u8; PATH_MAX],
}

// SAFETY: the pointers are to this profiler's own mapping, used only under
// its lock.
unsafe impl Send for Profiler {}

static ON: AtomicBool = AtomicBool::new(false);
static PROF: Locked<Profiler> = Locked::new(Rank::Profile, Profiler {
    slots: core::ptr::null_mut(),
    cap: 0,
    pool: core::ptr::null_mut(),
    used: 0,
    free: NONE,
    out: core::ptr::null_mut(),
    out_len: 0,
    live: 0,
    dropped: 0,
    taken: 0,
    fd: OwnFd::none(),
    path: [0; PATH_MAX],
});
/// Counting filter: `FILTER_COUNTS[i]` = live samples whose address hashes
/// to `i` (255: saturated, never decremented again). Zero means the
/// address was not sampled.
static FILTER_COUNTS: [AtomicU8; FILTER] = [const { AtomicU8::new(0) }; FILTER];
/// State of the random number generator (splitmix64), seeded at start-up.
static SEED: AtomicU64 = AtomicU64::new(0);
static RATE: AtomicUsize = AtomicUsize::new(512 * 1024);
/// The text of the object this code is in: frames there are ours.
static OWN_LO: AtomicUsize = AtomicUsize::new(0);
static OWN_HI: AtomicUsize = AtomicUsize::new(0);

/// Set by the snapshot signal's handler; the next sampled call (which the
/// handler makes the interrupted thread's next allocation) writes the
/// snapshot, outside the handler, where locks may be taken.
static SNAPSHOT: AtomicBool = AtomicBool::new(false);
/// Snapshots written so far.
static SNAPSHOTS: AtomicU64 = AtomicU64::new(0);

/// The snapshot signal's handler: async-signal-safe (an atomic store and
/// this thread's profile countdown, a plain TLS word).
extern "C" fn on_snapshot_signal(_sig: i32) {
    SNAPSHOT.store(true, Relaxed);
    crate::tls::set::<{ crate::tls::PROFILE }>(0);
}

/// Sets the handler of `FITALLOC_PROFILE_SIGNAL`, if one was given.
fn catch_snapshot_signal() {
    let sig = crate::options::OPT.profile_signal.load(Relaxed);
    if sig == 0 {
        return;
    }
    // SAFETY: a zeroed sigaction with a handler of the C signature; the
    // calls do not allocate.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_snapshot_signal as extern "C" fn(i32) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig as i32, &sa, core::ptr::null_mut()) != 0 {
            crate::diag::write_all(2, b"fitalloc: cannot catch FITALLOC_PROFILE_SIGNAL; no snapshots\n");
        }
    }
}

/// Writes the snapshot asked for by the signal: `PATH.PID.N` (the path
/// as given, `%p` expanded; `N` counts from 1).
fn snapshot() {
    let n = SNAPSHOTS.fetch_add(1, Relaxed) + 1;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let mut path = Path::new();
    {
        let p = PROF.lock();
        path.push_expanding(p.path_bytes(), pid);
    }
    path.push(b".");
    path.push_num(pid);
    path.push(b".");
    path.push_num(n);
    // SAFETY: a NUL-terminated path.
    if unsafe { dump_to_path(path.c_str()) } != 0 {
        crate::diag::write_all(2, b"fitalloc: cannot write a heap-profile snapshot\n");
    }
}

/// Whether this process is profiling.
#[inline]
pub fn on() -> bool {
    ON.load(Relaxed)
}

pub fn set_seed(s: u64) {
    SEED.store(s, Relaxed);
}

#[inline]
fn hash(p: usize) -> u64 {
    ((p >> 4) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// `p`'s first slot in a table of `cap` slots.
#[inline]
fn home(p: usize, cap: usize) -> usize {
    (hash(p) >> (64 - cap.trailing_zeros())) as usize
}

/// The filter is indexed by address bits 4 to 18 (blocks are 16-aligned):
/// no multiply on the path every free takes.
#[inline(always)]
fn filter_slot(p: usize) -> &'static AtomicU8 {
    &FILTER_COUNTS[(p >> 4) & (FILTER - 1)]
}

/// Starts profiling if `FITALLOC_PROFILE` is set (once, at start-up; may
/// be called where allocating is allowed, it does not allocate). True when on.
pub fn start() -> bool {
    let Some(path) = crate::options::profile_path() else { return false };
    let mut p = PROF.lock();
    if p.fd.fd >= 0 {
        return true;
    }
    if p.slots.is_null() && !p.map_tables() {
        crate::diag::write_all(2, b"fitalloc: no memory for the heap profile; profiling is off\n");
        return false;
    }
    let bytes = path.to_bytes();
    let n = bytes.len().min(PATH_MAX - 1);
    p.path[..n].copy_from_slice(&bytes[..n]);
    p.path[n] = 0;
    if !p.open(false) {
        return false;
    }
    RATE.store(crate::options::OPT.profile_rate.load(Relaxed).max(1), Relaxed);
    find_own_text();
    crate::stack::init();
    ON.store(true, Relaxed);
    catch_snapshot_signal();
    true
}

impl Profiler {
    fn path_bytes(&self) -> &[u8] {
        let n = self.path.iter().position(|&c| c == 0).unwrap_or(0);
        &self.path[..n]
    }

    /// Opens this process's file: the path itself unless another live
    /// process holds it (or `child`), else `path.<pid>`.
    fn open(&mut self, child: bool) -> bool {
        let mut base = [0u8; PATH_MAX];
        let b = self.path_bytes();
        let n = b.len();
        base[..n].copy_from_slice(b);
        let base = &base[..n];
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u64;
        let pattern = base.windows(2).any(|w| w == b"%p");
        let mut p = Path::new();
        p.push_expanding(base, pid);
        if !pattern && !child && self.try_open(&p, true) {
            return true;
        }
        if !pattern {
            p.push(b".");
            p.push_num(pid);
        }
        if self.try_open(&p, false) {
            return true;
        }
        // SAFETY: this thread's errno, as the failed open left it.
        let err = unsafe { *libc::__errno_location() };
        let mut m = crate::diag::Buf::<800>::new();
        m.push_bytes(b"fitalloc: cannot open FITALLOC_PROFILE=");
        m.push_bytes(p.as_bytes());
        m.push_bytes(b" for writing (");
        m.push_bytes(match crate::diag::errno_text(err) {
            "" => "error",
            t => t,
        }.as_bytes());
        m.push_bytes(b"); profiling is off\n");
        m.write_to(2);
        false
    }

    fn try_open(&mut self, p: &Path, need_lock: bool) -> bool {
        // SAFETY: `p` is NUL-terminated; the calls do not allocate.
        unsafe {
            let fd = libc::open(p.c_str(), libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
            if fd < 0 {
                return false;
            }
            if libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) != 0 && need_lock {
                libc::close(fd);
                return false;
            }
            // A file left by an earlier run must not look like this one's
            // (a character device such as /dev/null refuses: harmless).
            libc::ftruncate(fd, 0);
            self.fd = OwnFd::adopt(fd, false);
        }
        self.fd.fd >= 0
    }
}

// ---- sampling ----------------------------------------------------------

/// After an allocation call through [`crate::api`]'s general hooked
/// route: see [`allocated`].
#[inline]
pub fn record(e: Event) {
    match e {
        Event::Malloc { size, ptr } | Event::Memalign { size, ptr, .. } | Event::Realloc { size, ptr, .. } => allocated(ptr, size),
        // A non-null result means the product did not overflow.
        Event::Calloc { nmemb, size, ptr } => allocated(ptr, nmemb.wrapping_mul(size)),
        Event::Free { .. } => {}
    }
}

/// After a call that returned `ptr` for `n` bytes (the general hooked
/// route): counts the bytes down and samples the call that crosses zero.
#[inline]
pub fn allocated(ptr: *mut u8, n: usize) {
    if ptr.is_null() {
        return;
    }
    let left = crate::tls::get::<{ crate::tls::PROFILE }>();
    if due(n) {
        sample(ptr as usize, n, left == 0);
    }
}

/// Counts `n` bytes down before an allocation call (the profiler's own
/// route, [`crate::api`]): false, and nothing else to do, for all but
/// the call that crosses zero (or a thread's first call), which the caller
/// then makes through [`sampled`]. This is the whole cost of deciding.
#[inline(always)]
pub fn due(n: usize) -> bool {
    let left = crate::tls::get::<{ crate::tls::PROFILE }>();
    // A thread's first call finds 0; a request above PTRDIFF_MAX (which
    // fails) is at least any count, so it is due too (and not sampled).
    if n < left {
        crate::tls::set::<{ crate::tls::PROFILE }>(left - n);
        return false;
    }
    true
}

/// An allocation call that [`due`] picked: makes it (`alloc`), then
/// samples the block it returned.
#[cold]
#[inline(never)]
pub fn sampled(n: usize, alloc: impl FnOnce() -> *mut u8) -> *mut u8 {
    let fresh = crate::tls::get::<{ crate::tls::PROFILE }>() == 0;
    let p = alloc();
    if !p.is_null() {
        sample(p as usize, n, fresh);
    }
    p
}

/// The sampled call (or a thread's first call: `fresh`).
#[cold]
#[inline(never)]
fn sample(ptr: usize, n: usize, fresh: bool) {
    if !on() {
        return;
    }
    if SNAPSHOT.load(Relaxed) && SNAPSHOT.swap(false, Relaxed) {
        snapshot();
    }
    // Nothing this thread allocates meanwhile is sampled.
    crate::tls::set::<{ crate::tls::PROFILE }>(isize::MAX as usize);
    if fresh {
        // A thread's first call: draw its first interval. The exponential
        // is memoryless, so starting the count here is as good as anywhere.
        let x = next_interval();
        if n < x {
            crate::tls::set::<{ crate::tls::PROFILE }>(x - n);
            return;
        }
    }
    let mut frames = [0; MAX_FRAMES];
    let depth = crate::stack::capture(&mut frames, OWN_LO.load(Relaxed)..OWN_HI.load(Relaxed));
    {
        let mut p = PROF.lock();
        p.taken += 1;
        p.insert(ptr, Sample { addr: ptr, size: n, pinned: 0, depth: depth as u32, frames });
    }
    crate::tls::set::<{ crate::tls::PROFILE }>(next_interval());
}

/// Before a block is freed or reallocated: its sample, if any, is no
/// longer live.
#[inline(always)]
pub fn forget(ptr: *mut u8) {
    if maybe_sampled(ptr) {
        forget_sampled(ptr);
    }
}

/// Whether `ptr` may have been sampled: false (one load of the filter)
/// for nearly every block.
#[inline(always)]
pub fn maybe_sampled(ptr: *mut u8) -> bool {
    !ptr.is_null() && maybe_sampled_nonnull(ptr)
}

/// [`maybe_sampled`] of a pointer known not to be null.
#[inline(always)]
pub fn maybe_sampled_nonnull(ptr: *mut u8) -> bool {
    filter_slot(ptr as usize).load(Relaxed) != 0
}

/// Removes `ptr`'s sample if it has one.
#[cold]
#[inline(never)]
pub fn forget_sampled(ptr: *mut u8) {
    if on() {
        PROF.lock().remove(ptr as usize);
    }
}

impl Profiler {
    /// Maps the pool, the output buffer and a first address table.
    fn map_tables(&mut self) -> bool {
        let pool = MAX_LIVE * core::mem::size_of::<Sample>();
        let Some(base) = crate::os::map_metadata(pool + OUT_BUF) else { return false };
        let Some(slots) = crate::os::map_metadata(FIRST_SLOTS * core::mem::size_of::<Slot>()) else {
            // SAFETY: the mapping made above, used by nothing.
            unsafe { crate::os::unmap_metadata(base, pool + OUT_BUF) };
            return false;
        };
        self.pool = base as *mut Sample;
        self.out = (base + pool) as *mut u8;
        self.slots = slots as *mut Slot;
        self.cap = FIRST_SLOTS;
        true
    }

    /// Slot `i` of the address table.
    fn slot(&mut self, i: usize) -> &mut Slot {
        assert!(i < self.cap);
        // SAFETY: `i < cap`, inside the mapped table, which only the holder
        // of the profiler (`&mut self`) touches.
        unsafe { &mut *self.slots.add(i) }
    }

    fn slot_at(&self, i: usize) -> Slot {
        assert!(i < self.cap);
        // SAFETY: as in `slot`.
        unsafe { *self.slots.add(i) }
    }

    /// Pool entry `i`.
    fn sample(&mut self, i: u32) -> &mut Sample {
        assert!(i < self.used);
        // SAFETY: `i < used <= MAX_LIVE`, inside the mapped pool, which
        // only the holder of the profiler (`&mut self`) touches.
        unsafe { &mut *self.pool.add(i as usize) }
    }

    /// The slot holding `key`, if any.
    fn find(&self, key: usize) -> Option<usize> {
        if self.slots.is_null() {
            return None;
        }
        let mut i = home(key, self.cap);
        loop {
            match self.slot_at(i).addr {
                k if k == key => return Some(i),
                0 => return None,
                _ => i = (i + 1) & (self.cap - 1),
            }
        }
    }

    /// Puts `key` (not in the table) in an empty slot.
    fn place(&mut self, key: usize, sample: u32) {
        let mut i = home(key, self.cap);
        while self.slot(i).addr != 0 {
            i = (i + 1) & (self.cap - 1);
        }
        *self.slot(i) = Slot { addr: key, sample };
    }

    /// Doubles the address table (false when it is at its largest or no
    /// memory is left).
    fn grow(&mut self) -> bool {
        let (old, old_cap) = (self.slots, self.cap);
        if old_cap >= SLOTS {
            return false;
        }
        let Some(new) = crate::os::map_metadata(2 * old_cap * core::mem::size_of::<Slot>()) else { return false };
        self.slots = new as *mut Slot;
        self.cap = 2 * old_cap;
        for i in 0..old_cap {
            // SAFETY: `i < old_cap`, inside the old table, still mapped.
            let s = unsafe { *old.add(i) };
            if s.addr != 0 {
                self.place(s.addr, s.sample);
            }
        }
        // SAFETY: the old table, no longer referenced.
        unsafe { crate::os::unmap_metadata(old as usize, old_cap * core::mem::size_of::<Slot>()) };
        true
    }

    fn insert(&mut self, key: usize, mut s: Sample) {
        if self.slots.is_null() {
            return;
        }
        s.addr = key;
        if let Some(i) = self.find(key) {
            // A block we missed the free of (the table is not serialised
            // with the heap): the new sample replaces it.
            let e = self.slot_at(i).sample;
            *self.sample(e) = s;
            return;
        }
        if self.live >= MAX_LIVE || (2 * (self.live + 1) > self.cap && !self.grow()) {
            self.dropped += 1;
            return;
        }
        let e = if self.free != NONE {
            let e = self.free;
            self.free = self.sample(e).size as u32;
            e
        } else {
            self.used += 1;
            self.used - 1
        };
        *self.sample(e) = s;
        self.place(key, e);
        self.live += 1;
        let f = filter_slot(key);
        let c = f.load(Relaxed);
        if c != u8::MAX {
            f.store(c + 1, Relaxed);
        }
    }

    /// Removes `key`'s sample; later entries of its probe run move back so
    /// that every key stays reachable from its home slot.
    fn remove(&mut self, key: usize) {
        let Some(mut hole) = self.find(key) else { return };
        self.live -= 1;
        let e = self.slot_at(hole).sample;
        *self.sample(e) = Sample { addr: 0, size: self.free as usize, pinned: 0, depth: 0, frames: [0; MAX_FRAMES] };
        self.free = e;
        let f = filter_slot(key);
        let c = f.load(Relaxed);
        if c != u8::MAX && c != 0 {
            f.store(c - 1, Relaxed);
        }
        let mask = self.cap - 1;
        let mut j = hole;
        loop {
            self.slot(hole).addr = 0;
            loop {
                j = (j + 1) & mask;
                let k = self.slot_at(j);
                if k.addr == 0 {
                    return;
                }
                // The entry at j stays unless its home is cyclically
                // outside (hole, j].
                let h = home(k.addr, self.cap);
                let stays = if hole <= j { hole < h && h <= j } else { hole < h || h <= j };
                if !stays {
                    *self.slot(hole) = k;
                    hole = j;
                    break;
                }
            }
        }
    }

    /// The live samples, in pool order.
    fn each_live(&mut self, mut f: impl FnMut(&mut Sample)) {
        for i in 0..self.used {
            let s = self.sample(i);
            if s.addr != 0 {
                f(s);
            }
        }
    }
}

/// The next interval: exponential with mean `rate`, at least 1.
fn next_interval() -> usize {
    let x = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // u in (0, 1], 53 random bits.
    let u = ((z >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    let rate = RATE.load(Relaxed) as f64;
    let v = neg_ln(u) * rate;
    if v >= (isize::MAX / 2) as f64 { (isize::MAX / 2) as usize } else { (v as usize).max(1) }
}

/// `-ln(u)` for `u` in `(0, 1]`, without libm: `u = m * 2^e` with `m` in
/// `[1, 2)`, and `ln m = 2 atanh((m - 1) / (m + 1))` by its series (the
/// argument is below 1/3: relative error under 1e-7).
fn neg_ln(u: f64) -> f64 {
    let bits = u.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0)))));
    -(e as f64 * core::f64::consts::LN_2 + 2.0 * s * series)
}

// ---- stacks -------------------------------------------------------------

/// Finds the loaded segments of the object this code is in.
fn find_own_text() {
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> i32 {
        // SAFETY: the loader passes a valid `info` with `dlpi_phnum`
        // program headers; `data` is `here`, below.
        unsafe {
            let here = *(data as *const usize);
            let info = &*info;
            let (mut lo, mut hi) = (usize::MAX, 0);
            for i in 0..info.dlpi_phnum as usize {
                let ph = &*info.dlpi_phdr.add(i);
                if ph.p_type == libc::PT_LOAD {
                    let s = info.dlpi_addr as usize + ph.p_vaddr as usize;
                    lo = lo.min(s);
                    hi = hi.max(s + ph.p_memsz as usize);
                }
            }
            if lo <= here && here < hi {
                OWN_LO.store(lo, Relaxed);
                OWN_HI.store(hi, Relaxed);
                return 1;
            }
            0
        }
    }
    let mut here = find_own_text as *const () as usize;
    // SAFETY: `each` only reads what the loader passes and `here`.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut here as *mut usize as *mut c_void) };
}

// ---- the file -------------------------------------------------------------

/// Where a heap walk is, page by page, finding pinned free space.
struct Pages<'a> {
    p: &'a mut Profiler,
    page: usize,
    /// The page being added up (its number), and its free and used bytes.
    cur: usize,
    free: usize,
    used: usize,
    /// Sampled blocks on the current page: (pool entry, bytes on the page).
    pending: [(u32, u32); 256],
    n_pending: usize,
    heap_bytes: u64,
    free_bytes: u64,
    pinned_bytes: u64,
}

impl Pages<'_> {
    fn segment(&mut self, addr: usize, len: usize, kind: u32) {
        use crate::check::{WALK_CACHED, WALK_FREE, WALK_MAPPED, WALK_REGION};
        match kind {
            WALK_REGION => {
                self.finish();
                self.cur = usize::MAX;
                self.heap_bytes += len as u64;
                return;
            }
            WALK_MAPPED => return,
            _ => {}
        }
        if len == 0 {
            return;
        }
        let free = kind == WALK_FREE || kind == WALK_CACHED;
        if free {
            self.free_bytes += len as u64;
        }
        let slot = if free { None } else { self.p.find(addr + HEADER).map(|i| self.p.slot_at(i).sample) };
        let end = addr + len;
        let (first, last) = (addr / self.page, (end - 1) / self.page);
        self.piece(first, (end.min((first + 1) * self.page) - addr) as u32, free, slot);
        // Pages wholly inside the block have nothing to share; the last
        // page starts a new count.
        if last > first {
            self.piece(last, (end - last * self.page) as u32, free, slot);
        }
    }

    fn piece(&mut self, page: usize, bytes: u32, free: bool, slot: Option<u32>) {
        if page != self.cur {
            self.finish();
            self.cur = page;
        }
        if free {
            self.free += bytes as usize;
        } else {
            self.used += bytes as usize;
            if let Some(s) = slot
                && self.n_pending < self.pending.len()
            {
                self.pending[self.n_pending] = (s, bytes);
                self.n_pending += 1;
            }
        }
    }

    /// The current page is complete: its free bytes are pinned when live
    /// bytes share it, in proportion to each block's bytes there.
    fn finish(&mut self) {
        if self.free > 0 && self.used > 0 {
            self.pinned_bytes += self.free as u64;
            for &(s, b) in &self.pending[..self.n_pending] {
                self.p.sample(s).pinned += (self.free as u64 * b as u64) / self.used as u64;
            }
        }
        self.free = 0;
        self.used = 0;
        self.n_pending = 0;
    }
}

impl Profiler {
    fn put(&mut self, fd: i32, bytes: &[u8]) {
        if self.out_len + bytes.len() > OUT_BUF {
            self.flush(fd);
        }
        if bytes.len() > OUT_BUF {
            crate::diag::write_all(fd, bytes);
            return;
        }
        // SAFETY: the buffer has room (checked above); it is this
        // profiler's own mapping.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.out.add(self.out_len), bytes.len()) };
        self.out_len += bytes.len();
    }

    fn put_num(&mut self, fd: i32, v: u64, hex: bool) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let (mut v, base) = (v, if hex { 16 } else { 10 });
        loop {
            i -= 1;
            buf[i] = b"0123456789abcdef"[(v % base) as usize];
            v /= base;
            if v == 0 {
                break;
            }
        }
        self.put(fd, &buf[i..]);
    }

    fn put_kv(&mut self, fd: i32, key: &[u8], v: u64) {
        self.put(fd, key);
        self.put(fd, b" ");
        self.put_num(fd, v, false);
        self.put(fd, b"\n");
    }

    fn flush(&mut self, fd: i32) {
        // SAFETY: `out_len` bytes of the buffer are written.
        crate::diag::write_all(fd, unsafe { core::slice::from_raw_parts(self.out, self.out_len) });
        self.out_len = 0;
    }

    /// Walks the heap for pinned space, then writes the profile to `fd`.
    fn write(&mut self, fd: i32) {
        if self.slots.is_null() {
            return;
        }
        self.each_live(|s| s.pinned = 0);
        let page = crate::options::OPT.page.load(Relaxed).max(1);
        let mut pages = Pages {
            p: self,
            page,
            cur: usize::MAX,
            free: 0,
            used: 0,
            pending: [(0, 0); 256],
            n_pending: 0,
            heap_bytes: 0,
            free_bytes: 0,
            pinned_bytes: 0,
        };
        crate::check::walk(|addr, size, kind| pages.segment(addr, size as usize, kind));
        pages.finish();
        let (heap, free, pinned) = (pages.heap_bytes, pages.free_bytes, pages.pinned_bytes);
        self.out_len = 0;
        self.put(fd, b"fitalloc heap profile 1\n");
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u64;
        self.put_kv(fd, b"pid", pid);
        self.put_kv(fd, b"rate", RATE.load(Relaxed) as u64);
        self.put_kv(fd, b"page", page as u64);
        self.put_kv(fd, b"max_frames", MAX_FRAMES as u64);
        self.put_kv(fd, b"live_samples", self.live as u64);
        self.put_kv(fd, b"samples_taken", self.taken);
        self.put_kv(fd, b"samples_dropped", self.dropped);
        self.put_kv(fd, b"stacks_by_libgcc", crate::stack::handed_over());
        self.put_kv(fd, b"max_live_samples", MAX_LIVE as u64);
        self.put_kv(fd, b"heap_bytes", heap);
        self.put_kv(fd, b"free_bytes", free);
        self.put_kv(fd, b"pinned_free_bytes", pinned);
        self.put(fd, b"maps\n");
        self.copy_maps(fd);
        self.put(fd, b"samples\n");
        for i in 0..self.used {
            let s = *self.sample(i);
            if s.addr == 0 {
                continue;
            }
            self.put(fd, b"s ");
            self.put_num(fd, s.size as u64, false);
            self.put(fd, b" ");
            self.put_num(fd, s.pinned, false);
            for &ip in &s.frames[..s.depth as usize] {
                self.put(fd, b" ");
                self.put_num(fd, ip as u64, true);
            }
            self.put(fd, b"\n");
        }
        self.put(fd, b"end\n");
        self.flush(fd);
    }

    /// Copies `/proc/self/maps` into the file.
    fn copy_maps(&mut self, fd: i32) {
        // SAFETY: a NUL-terminated path; read into a stack buffer.
        unsafe {
            let m = libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if m < 0 {
                return;
            }
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(m, buf.as_mut_ptr() as *mut c_void, buf.len());
                if n <= 0 {
                    break;
                }
                self.put(fd, &buf[..n as usize]);
            }
            libc::close(m);
        }
    }

    /// Rewrites this process's profile file.
    fn write_own(&mut self) -> bool {
        if self.fd.fd < 0 || !self.fd.still_ours() {
            return false;
        }
        let fd = self.fd.fd;
        // SAFETY: our descriptor (checked above).
        unsafe {
            libc::ftruncate(fd, 0);
            libc::lseek(fd, 0, libc::SEEK_SET);
        }
        self.write(fd);
        true
    }
}

/// Writes the profile now: to `path` (NUL-terminated), or to this
/// process's profile file when `path` is null. 0 on success, -1 when not
/// profiling or the file cannot be written.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
pub unsafe fn dump_to_path(path: *const libc::c_char) -> i32 {
    if !on() {
        return -1;
    }
    let mut p = PROF.lock();
    if path.is_null() {
        return if p.write_own() { 0 } else { -1 };
    }
    // SAFETY: the caller passes a NUL-terminated path.
    let fd = unsafe { libc::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return -1;
    }
    p.write(fd);
    // SAFETY: the descriptor opened above.
    unsafe { libc::close(fd) };
    0
}

/// At exit: the final profile.
pub fn finish() {
    if !on() {
        return;
    }
    let mut p = PROF.lock();
    p.write_own();
}

/// Fork, before: holds the profiler's lock.
pub fn hold_for_fork() {
    if on() {
        PROF.hold();
    }
}

pub fn fork_parent() {
    if on() {
        PROF.release_held();
    }
}

/// A forked child keeps the samples it inherited (its blocks are the
/// parent's copies) and writes its own file, `path.<pid>`.
pub fn fork_child() {
    if !on() {
        return;
    }
    PROF.release_held();
    let mut p = PROF.lock();
    if p.fd.still_ours() {
        // SAFETY: our copy of the parent's descriptor; the parent keeps its own.
        unsafe { libc::close(p.fd.fd) };
    }
    p.fd = OwnFd::none();
    if !p.open(true) {
        ON.store(false, Relaxed);
        crate::modes::set(crate::modes::PROFILE, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neg_ln_matches_std() {
        for &u in &[1.0, 0.5, 0.25, 0.1, 0.9999, 1e-9, 3.7e-16, 0.73] {
            let got = neg_ln(u);
            let want = -f64::ln(u);
            assert!((got - want).abs() <= 1e-6 * want.max(1.0), "u {u}: {got} vs {want}");
        }
    }

    #[test]
    fn intervals_average_the_rate() {
        RATE.store(1000, Relaxed);
        SEED.store(12345, Relaxed);
        let n = 200_000;
        let sum: usize = (0..n).map(|_| next_interval()).sum();
        let mean = sum as f64 / n as f64;
        assert!((mean - 1000.0).abs() < 15.0, "mean interval {mean}");
    }

    fn table() -> Profiler {
        let mut p = Profiler {
            slots: core::ptr::null_mut(),
            cap: 0,
            pool: core::ptr::null_mut(),
            used: 0,
            free: NONE,
            out: core::ptr::null_mut(),
            out_len: 0,
            live: 0,
            dropped: 0,
            taken: 0,
            fd: OwnFd::none(),
            path: [0; PATH_MAX],
        };
        assert!(p.map_tables());
        p
    }

    fn s(size: usize) -> Sample {
        Sample { addr: 0, size, pinned: 0, depth: 0, frames: [0; MAX_FRAMES] }
    }

    #[test]
    fn table_removal_keeps_colliding_keys_reachable() {
        let mut t = table();
        // Keys that share a home slot, and their neighbours.
        let base = 0x1000_0000usize;
        let mut keys = std::vec::Vec::new();
        let h0 = home(base, FIRST_SLOTS);
        let mut a = base;
        while keys.len() < 40 {
            a += 16;
            if home(a, FIRST_SLOTS).wrapping_sub(h0) & (FIRST_SLOTS - 1) < 4 {
                keys.push(a);
            }
        }
        for (i, &k) in keys.iter().enumerate() {
            t.insert(k, s(i + 1));
            assert_ne!(filter_slot(k).load(Relaxed), 0);
        }
        assert_eq!(t.live, 40);
        for &k in keys.iter().step_by(3) {
            t.remove(k);
        }
        for (i, &k) in keys.iter().enumerate() {
            let found = t.find(k);
            if i % 3 == 0 {
                assert!(found.is_none());
            } else {
                assert_eq!(t.sample(t.slot_at(found.unwrap()).sample).size, i + 1);
            }
        }
        for &k in &keys {
            t.remove(k);
        }
        assert_eq!(t.live, 0);
        assert_eq!(t.cap, FIRST_SLOTS);
    }

    #[test]
    fn table_grows_and_reuses_pool_entries() {
        let mut t = table();
        let key = |i: usize| 0x2000_0000 + i * 48;
        for i in 0..3000 {
            t.insert(key(i), s(i + 1));
        }
        assert_eq!(t.cap, 8192);
        assert_eq!(t.used, 3000);
        for i in (0..3000).step_by(2) {
            t.remove(key(i));
        }
        for i in 3000..4500 {
            t.insert(key(i), s(i + 1));
        }
        // The 1,500 freed entries were reused: the pool stayed dense.
        assert_eq!((t.live, t.used), (3000, 3000));
        for i in 0..4500 {
            let found = t.find(key(i)).map(|j| t.slot_at(j).sample).map(|e| t.sample(e).size);
            let live = i >= 3000 || i % 2 == 1;
            assert_eq!(found, live.then_some(i + 1), "key {i}");
        }
        let mut n = 0;
        t.each_live(|_| n += 1);
        assert_eq!(n, 3000);
    }

    #[test]
    fn full_table_drops_and_counts() {
        let mut t = table();
        for i in 0..MAX_LIVE + 10 {
            t.insert(0x10_0000 + i * 16, s(16));
        }
        assert_eq!(t.live, MAX_LIVE);
        assert_eq!(t.dropped, 10);
        for i in 0..MAX_LIVE + 10 {
            t.remove(0x10_0000 + i * 16);
        }
        assert_eq!(t.live, 0);
    }
}
