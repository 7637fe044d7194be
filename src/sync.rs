//! The locks around shared allocator state, and the one table of their
//! ranks.
//!
//! A lock word with a brief spin, then a sleep on a futex: a holder is
//! usually done within a few hundred nanoseconds, and a waiter whose holder
//! was preempted sleeps instead of burning its time slice (spinning, or
//! yielding in a loop, cost threads whole 10 ms slices). While the process
//! has a single thread (glibc's `__libc_single_threaded`) no lock is taken
//! at all: there is no one to exclude, the atomic operations are saved,
//! and a fork from a signal handler that interrupted malloc cannot deadlock
//! on our own lock. Each lock counts, on its slow path only, the
//! acquisitions that found it held and the futex sleeps ([`CONTENTION`]),
//! which the statistics report.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

/// A mutex word: 0 free, 1 held, 2 held with (possibly) sleeping waiters.
pub struct RawLock {
    state: AtomicU32,
    /// The holder's `pthread_self()`, 0 when free: written after each
    /// acquisition, cleared before each release. Only a thread that holds
    /// the lock writes its own value here, so a thread that finds it there
    /// holds the lock, and would wait for itself forever.
    owner: AtomicUsize,
}

const FREE: u32 = 0;
const HELD: u32 = 1;
const WAITED: u32 = 2;
/// Spins before a waiter sleeps.
const SPINS: u32 = 100;

impl RawLock {
    pub const fn new() -> Self {
        RawLock { state: AtomicU32::new(FREE), owner: AtomicUsize::new(0) }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.state.compare_exchange(FREE, HELD, Acquire, Relaxed).is_ok()
    }

    /// Takes the lock; an acquisition that finds it held is counted in
    /// `c` (the uncontended one touches nothing but the lock's line).
    #[inline]
    pub fn lock(&self, c: &Contention) {
        if !self.try_acquire() {
            self.wait_and_acquire(c);
        }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let got = self.try_lock();
        if got {
            self.owner.store(crate::tls::thread_id(), Relaxed);
        }
        got
    }

    /// Takes the lock, waiting for it (counted in `c`).
    #[cold]
    pub fn wait_and_acquire(&self, c: &Contention) {
        if self.held_here() || single_threaded() {
            // Only a lock taken directly (not through `Locked`, which
            // reports its rank first): the region table's, which heap
            // growth takes even while the process has one thread. With
            // one thread, a lock found held can only be held by that
            // thread, even before it recorded itself as the holder.
            self_deadlock_unranked(self);
        }
        self.lock_slow(c);
        self.owner.store(crate::tls::thread_id(), Relaxed);
    }

    /// Whether this thread holds the lock.
    pub fn held_here(&self) -> bool {
        self.owner.load(Relaxed) == crate::tls::thread_id()
    }

    #[cold]
    #[inline(never)]
    fn lock_slow(&self, c: &Contention) {
        c.waits.fetch_add(1, Relaxed);
        for _ in 0..SPINS {
            if self.state.load(Relaxed) == FREE && self.try_lock() {
                return;
            }
            core::hint::spin_loop();
        }
        // Say there is a waiter, and sleep until the word changes.
        while self.state.swap(WAITED, Acquire) != FREE {
            c.sleeps.fetch_add(1, Relaxed);
            futex(&self.state, libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, WAITED);
        }
    }

    #[inline]
    pub fn unlock(&self) {
        self.owner.store(0, Relaxed);
        if self.state.swap(FREE, Release) == WAITED {
            futex(&self.state, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1);
        }
    }
}

impl Default for RawLock {
    fn default() -> Self {
        Self::new()
    }
}

/// `futex(word, op, val)`, leaving errno as it was (`free` must not change
/// it); a wait that returns early (EAGAIN, EINTR) is retried by the caller.
fn futex(word: &AtomicU32, op: i32, val: u32) {
    // SAFETY: errno is this thread's; the futex word is a live atomic that
    // outlives the call; a null timeout waits without limit.
    unsafe {
        let e = libc::__errno_location();
        let saved = *e;
        libc::syscall(libc::SYS_futex, word.as_ptr(), op, val, core::ptr::null::<libc::timespec>(), 0usize, 0u32);
        *e = saved;
    }
}

unsafe extern "C" {
    /// glibc (2.32+): non-zero while the process has never had a second
    /// thread. It turns false before the second thread starts and never
    /// turns back.
    static __libc_single_threaded: libc::c_char;
}

/// Whether the process has only ever had one thread.
#[inline(always)]
pub fn single_threaded() -> bool {
    // SAFETY: a byte that glibc defines and only the thread calling
    // pthread_create writes, before the new thread exists.
    unsafe { core::ptr::read_volatile(&raw const __libc_single_threaded) != 0 }
}

/// Every lock of the allocator, by rank. A thread that holds a lock takes
/// only locks of a higher rank, so no two threads can wait on each other;
/// the fork handlers take them all in this order and release them in
/// reverse. Builds with debug assertions (or the `lock-check` feature)
/// check the rule on every acquisition.
///
/// | rank | lock | held while |
/// |---|---|---|
/// | 0 | `Trace` | one whole API call, while tracing ([`crate::trace`]) |
/// | 1 | `Quarantine` | the hardened mode's FIFO moves blocks to the heap |
/// | 2 | `Profile` | the heap profiler's sample table is changed, or written out with a heap walk ([`crate::profile`]) |
/// | 3 | `Registry` | thread caches are created, retired or visited |
/// | 4 | `Depot` | a chain of cached blocks is put into or taken from the depot ([`crate::depot`]) |
/// | 5 | `Slab` | blocks are taken from or given back to slabs ([`crate::slab`]); a slab takes its page from the heap |
/// | 6-13 | `Heap`, `Heap1` ... `Heap7` | any operation on the heap of arena 0 ... 7 ([`crate::process`]); the checker and fork take them all, in order |
/// | 14 | `Large` | the large-block table is read or changed |
/// | 15 | `Report` | the statistics report's descriptor is read or set |
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Rank {
    Trace = 0,
    Quarantine = 1,
    Profile = 2,
    Registry = 3,
    Depot = 4,
    Slab = 5,
    Heap = 6,
    Heap1 = 7,
    Heap2 = 8,
    Heap3 = 9,
    Heap4 = 10,
    Heap5 = 11,
    Heap6 = 12,
    Heap7 = 13,
    Large = 14,
    Report = 15,
}

/// The ranks of the arenas' heap locks, by arena.
pub(crate) const HEAP_RANKS: [Rank; 8] =
    [Rank::Heap, Rank::Heap1, Rank::Heap2, Rank::Heap3, Rank::Heap4, Rank::Heap5, Rank::Heap6, Rank::Heap7];

/// Number of [`Rank`]s.
pub(crate) const RANKS: usize = 16;

/// How often a lock was found held: `waits` counts acquisitions that found
/// it held (each spun, and may then have slept), `sleeps` every futex wait
/// among them (a waiter woken to find the lock taken again sleeps again).
/// Written only on the contended path, so the counters cost nothing when
/// there is no contention; read by the statistics.
pub struct Contention {
    pub waits: AtomicU64,
    pub sleeps: AtomicU64,
}

impl Contention {
    pub const fn new() -> Self {
        Contention { waits: AtomicU64::new(0), sleeps: AtomicU64::new(0) }
    }
}

impl Default for Contention {
    fn default() -> Self {
        Self::new()
    }
}

/// One [`Contention`] per lock, indexed by rank: each lock of the table
/// above exists once, so its rank names it.
pub static CONTENTION: [Contention; RANKS] = [const { Contention::new() }; RANKS];
const _: () = assert!(RANKS == Rank::Report as usize + 1);

const CHECK_ORDER: bool = cfg!(any(debug_assertions, feature = "lock-check"));

/// The thread inside fork's window, which holds every lock for it
/// ([`Locked::hold`]), by its `pthread_self()`; 0 outside the window. The
/// same in a forked child, whose one thread is the one that called fork.
static FORK_HOLDER: AtomicUsize = AtomicUsize::new(0);

/// Fork, before the locks are held: this thread is the holder.
pub fn begin_fork_hold() {
    FORK_HOLDER.store(crate::tls::thread_id(), Relaxed);
}

/// Fork, after every lock was released (in the parent and in the child).
pub fn end_fork_hold() {
    FORK_HOLDER.store(0, Relaxed);
}

/// Whether this thread holds the locks for fork.
fn is_fork_holder() -> bool {
    let h = FORK_HOLDER.load(Relaxed);
    h != 0 && h == crate::tls::thread_id()
}

/// Notes that this thread takes a lock of `rank`; aborts if it already
/// holds one of the same or a higher rank (unless it holds them all for
/// fork: see [`Locked::lock_contended`]).
#[inline(always)]
fn note_acquire(rank: Rank, lock: &RawLock) {
    if CHECK_ORDER {
        let held = crate::tls::get::<{ crate::tls::LOCKS }>();
        let bit = 1usize << rank as u8;
        // A lock this thread holds is reported by `Locked::lock` itself
        // (held for fork, or a self-deadlock).
        if held & !(bit - 1) != 0 && !is_fork_holder() && !lock.held_here() {
            crate::diag::fatal("lock order", "a lock was taken while holding one of equal or higher rank; rank", rank as usize);
        }
        crate::tls::set::<{ crate::tls::LOCKS }>(held | bit);
    }
}

#[inline(always)]
fn note_release(rank: Rank) {
    if CHECK_ORDER {
        let held = crate::tls::get::<{ crate::tls::LOCKS }>();
        crate::tls::set::<{ crate::tls::LOCKS }>(held & !(1usize << rank as u8));
    }
}

/// This thread waits for a lock of `rank` it holds itself: a SIGABRT
/// handler of the program's that allocates (or forks) after a misuse
/// report made under the lock (found by a hostile review: the process
/// hung), or an allocation in a signal handler that interrupted one. The
/// process ends with one line and SIGABRT; the program's SIGABRT handler
/// does not run again (it could only wait again).
#[cold]
#[inline(never)]
fn self_deadlock(rank: Rank) -> ! {
    crate::diag::report(
        "lock",
        "this thread waits for an allocator lock it holds (an allocation in a signal handler that interrupted one?); rank",
        rank as usize,
    );
    crate::diag::abort_default()
}

/// [`self_deadlock`] for a lock without a rank, named by its address.
#[cold]
#[inline(never)]
fn self_deadlock_unranked(lock: &RawLock) -> ! {
    crate::diag::report(
        "lock",
        "this thread waits for an allocator lock it holds (an allocation in a signal handler that interrupted one?); lock at",
        lock as *const RawLock as usize,
    );
    crate::diag::abort_default()
}

/// A value behind a lock that is elided while the process is single-threaded.
pub struct Locked<T> {
    lock: RawLock,
    rank: Rank,
    /// Whether [`Locked::hold`] took the lock (for the fork handlers).
    held_for_fork: core::sync::atomic::AtomicBool,
    /// Whether a guard taken while the process has one thread is alive: no
    /// lock is taken then, but a second `lock` before the guard is dropped
    /// can only be a signal handler's allocation inside the thread's own
    /// (see [`Locked::lock`]).
    held_alone: core::sync::atomic::AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` goes through `lock`, or happens while only one
// thread exists.
unsafe impl<T: Send> Sync for Locked<T> {}

/// Exclusive access to a [`Locked`] value.
pub struct Guard<'a, T> {
    /// The lock this guard releases (none while single-threaded).
    held: Option<&'a RawLock>,
    /// The mark this guard clears, taken while single-threaded.
    alone: Option<&'a core::sync::atomic::AtomicBool>,
    rank: Rank,
    value: &'a mut T,
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        if let Some(l) = self.held {
            l.unlock();
        }
        if let Some(a) = self.alone {
            // The value's last use before the mark goes (for this thread's
            // signal handlers: a compiler fence suffices).
            core::sync::atomic::compiler_fence(Release);
            a.store(false, Relaxed);
        }
        note_release(self.rank);
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

impl<T> Locked<T> {
    pub const fn new(rank: Rank, value: T) -> Self {
        Locked {
            lock: RawLock::new(),
            rank,
            held_for_fork: core::sync::atomic::AtomicBool::new(false),
            held_alone: core::sync::atomic::AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Locks the value. While the process has one thread nothing is
    /// taken, so that a fork from a signal handler that interrupted an
    /// allocation cannot wait; a guard alive then is only marked, and a
    /// second `lock` meanwhile (a signal handler's allocation that
    /// interrupted one of its thread's, working on what the interrupted one
    /// is changing: a hostile review saw a fault in the heap's growth and
    /// reports of corruption that had not happened) ends with the
    /// self-deadlock line instead.
    #[inline]
    pub fn lock(&self) -> Guard<'_, T> {
        note_acquire(self.rank, &self.lock);
        let (held, alone) = if single_threaded() {
            if self.held_alone.load(Relaxed) {
                self_deadlock(self.rank);
            }
            self.held_alone.store(true, Relaxed);
            // The mark before the value's first use (see `Guard::drop`).
            core::sync::atomic::compiler_fence(Acquire);
            (None, Some(&self.held_alone))
        } else if self.lock.try_acquire() {
            (Some(&self.lock), None)
        } else {
            (self.lock_contended(), None)
        };
        // SAFETY: we hold the lock (or this thread holds it for fork), or
        // no other thread exists.
        Guard { held, alone, rank: self.rank, value: unsafe { &mut *self.value.get() } }
    }

    /// Fork, in the child: forgets a mark left by a single-threaded
    /// parent's guard (a fork from a signal handler that interrupted an
    /// allocation), as the lock it stands for was never taken.
    fn forget_alone_mark(&self) {
        self.held_alone.store(false, Relaxed);
    }

    /// [`Locked::lock`] when the lock is held: waits for it, unless this
    /// thread holds it.
    ///
    /// - For fork ([`Locked::hold`]): the caller is a fork handler of the
    ///   program's that runs inside fork's window and allocates (one
    ///   registered before ours, whose prepare handler runs after ours and
    ///   whose parent and child handlers before ours). It uses the value as
    ///   the holder, and its guard releases nothing: the value is
    ///   consistent, since the lock was taken between two calls. Waiting
    ///   deadlocked (found by a hostile review).
    /// - Otherwise the wait would last forever: see [`self_deadlock`].
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) -> Option<&RawLock> {
        if self.lock.held_here() {
            if self.held_for_fork.load(Relaxed) && is_fork_holder() {
                return None;
            }
            self_deadlock(self.rank);
        }
        self.lock.wait_and_acquire(&CONTENTION[self.rank as usize]);
        Some(&self.lock)
    }

    /// Fork, before: takes the lock and keeps it held until
    /// [`Locked::release_held`], so the child sees consistent state. Takes
    /// nothing while single-threaded.
    ///
    /// The fork handlers take every lock in rank order by construction;
    /// the order is not checked here, because fork may run in a signal
    /// handler that interrupted this thread while it held a lock (possible
    /// only while single-threaded, when no lock is really taken).
    pub fn hold(&self) {
        if CHECK_ORDER {
            let held = crate::tls::get::<{ crate::tls::LOCKS }>();
            crate::tls::set::<{ crate::tls::LOCKS }>(held | 1 << self.rank as u8);
        }
        if !single_threaded() {
            if !self.lock.try_acquire() {
                if self.lock.held_here() {
                    self_deadlock(self.rank);
                }
                self.lock.wait_and_acquire(&CONTENTION[self.rank as usize]);
            }
            self.held_for_fork.store(true, Relaxed);
        }
    }

    /// Fork, after (in the parent and in the child): releases what
    /// [`Locked::hold`] took.
    pub fn release_held(&self) {
        if self.held_for_fork.swap(false, Relaxed) {
            // `hold` took the lock in this process; this releases it once.
            // In a forked child nobody waits on it (its word is the
            // child's own copy).
            self.lock.unlock();
        }
        // A single-threaded process forked from a signal handler that
        // interrupted an allocation under this value's guard: the mark that
        // guard left stands for no lock, and the fork handlers (and what
        // the child does next) use the value as before.
        self.forget_alone_mark();
        note_release(self.rank);
    }

    /// Access without the lock.
    ///
    /// # Safety
    /// No other thread may be using the value (e.g. in a fork child, or
    /// while holding the lock through [`Locked::hold`]).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_unlocked(&self) -> &mut T {
        // SAFETY: forwarded to the caller.
        unsafe { &mut *self.value.get() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn uncontended_lock_counts_nothing() {
        let (lock, c) = (RawLock::new(), Contention::new());
        for _ in 0..1000 {
            lock.lock(&c);
            lock.unlock();
        }
        assert_eq!((c.waits.load(Relaxed), c.sleeps.load(Relaxed)), (0, 0));
    }

    #[test]
    fn contended_lock_counts_a_wait_and_a_sleep() {
        let (lock, c) = (RawLock::new(), Contention::new());
        lock.lock(&c);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                lock.lock(&c);
                lock.unlock();
            });
            // The holder keeps the lock until the waiter has gone to sleep.
            let start = Instant::now();
            while c.sleeps.load(Relaxed) == 0 && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
            lock.unlock();
            waiter.join().unwrap();
        });
        assert_eq!(c.waits.load(Relaxed), 1);
        assert!(c.sleeps.load(Relaxed) >= 1);
    }
}
