//! The lock around shared allocator state.
//!
//! A spin lock (from the `spin` crate) with a bounded spin, then
//! `sched_yield`, so a preempted holder does not cost a waiter a whole time
//! slice of spinning. While the process has a single thread (glibc's
//! `__libc_single_threaded`) no lock is taken at all: there is no one to
//! exclude, the atomic operations are saved, and a fork from a signal
//! handler that interrupted malloc cannot deadlock on our own lock.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use spin::mutex::{SpinMutex, SpinMutexGuard};

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

/// A value behind a lock that is elided while the process is single-threaded.
pub struct Locked<T> {
    lock: SpinMutex<()>,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` goes through `lock`, or happens while only one
// thread exists.
unsafe impl<T: Send> Sync for Locked<T> {}

/// Exclusive access to a [`Locked`] value.
pub struct Guard<'a, T> {
    _held: Option<SpinMutexGuard<'a, ()>>,
    value: &'a mut T,
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
    pub const fn new(value: T) -> Self {
        Locked { lock: SpinMutex::new(()), value: UnsafeCell::new(value) }
    }

    #[inline]
    pub fn lock(&self) -> Guard<'_, T> {
        let held = if single_threaded() { None } else { Some(self.acquire()) };
        // SAFETY: we hold the lock, or no other thread exists.
        Guard { _held: held, value: unsafe { &mut *self.value.get() } }
    }

    #[cold]
    fn acquire(&self) -> SpinMutexGuard<'_, ()> {
        let mut round = 0u32;
        loop {
            if let Some(g) = self.lock.try_lock() {
                return g;
            }
            while self.lock.is_locked() {
                if round < 6 {
                    for _ in 0..(1 << round) * 8 {
                        core::hint::spin_loop();
                    }
                    round += 1;
                } else {
                    // SAFETY: sched_yield has no preconditions.
                    unsafe { libc::sched_yield() };
                }
            }
        }
    }

    /// Takes the lock and keeps it held until [`Locked::force_unlock`]
    /// (fork: held across `fork()` so the child sees consistent state).
    /// Returns false (taking nothing) while single-threaded.
    pub fn hold(&self) -> bool {
        if single_threaded() {
            return false;
        }
        core::mem::forget(self.acquire());
        true
    }

    /// Releases a lock taken by [`Locked::hold`].
    ///
    /// # Safety
    /// Only after `hold` returned true, once (in the parent and in the child
    /// of a fork).
    pub unsafe fn force_unlock(&self) {
        // SAFETY: forwarded to the caller.
        unsafe { self.lock.force_unlock() }
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
