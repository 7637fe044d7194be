//! Fork: every lock is held across `fork()` (taken in rank order, see
//! [`crate::sync::Rank`]) so that the child finds consistent state; the
//! child then gives the caches of threads it does not have back to the
//! heap.
//!
//! glibc's fork takes its stdio list lock only after the prepare handlers
//! have run. A thread in `fflush(NULL)` holds that lock and waits for a
//! stream whose owner (in `getline`) waits for our heap lock: if we held the
//! heap lock then, fork would wait for fflush forever. So the prepare
//! handler takes the list lock first (it is recursive; glibc takes it again),
//! which makes the order "stdio list, then ours" for every thread.

unsafe extern "C" {
    fn _IO_list_lock();
    fn _IO_list_unlock();
    fn _IO_list_resetlock();
}

/// Installs the handlers (once, at start-up; may allocate).
pub fn install() {
    // SAFETY: the handlers are `extern "C"` functions that live as long as
    // the library.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

extern "C" fn prepare() {
    // SAFETY: glibc's exported stdio list lock; released in `parent`,
    // reset in `child`.
    unsafe { _IO_list_lock() };
    crate::trace::hold_for_fork();
    crate::harden::hold_for_fork();
    crate::profile::hold_for_fork();
    crate::registry::hold_for_fork();
    crate::process::hold_for_fork();
    // Until `parent` or `child`, a handler of the program's that runs in
    // this thread (one registered before ours) allocates as the locks'
    // holder (`crate::sync::Locked::lock`).
    crate::sync::begin_fork_hold();
}

fn release() {
    crate::process::release_after_fork();
    crate::registry::release_after_fork();
    crate::harden::release_after_fork();
}

extern "C" fn parent() {
    crate::sync::end_fork_hold();
    release();
    crate::trace::fork_parent();
    crate::profile::fork_parent();
    // SAFETY: taken by `prepare` in this thread (glibc has released its own
    // hold before running the parent handlers).
    unsafe { _IO_list_unlock() };
}

extern "C" fn child() {
    // SAFETY: the child has one thread; the lock `prepare` took goes back
    // to its initial state (glibc may have done so already).
    unsafe { _IO_list_resetlock() };
    crate::sync::end_fork_hold();
    release();
    crate::trace::fork_child();
    crate::profile::fork_child();
    crate::registry::adopt_orphans();
}
