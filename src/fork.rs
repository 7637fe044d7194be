//! Fork: every lock is held across `fork()` (taken in rank order, see
//! [`crate::sync::Rank`]) so that the child finds consistent state; the
//! child then gives the caches of threads it does not have back to the
//! heap.

/// Installs the handlers (once, at start-up; may allocate).
pub fn install() {
    // SAFETY: the handlers are `extern "C"` functions that live as long as
    // the library.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

extern "C" fn prepare() {
    crate::trace::hold_for_fork();
    crate::harden::hold_for_fork();
    crate::registry::hold_for_fork();
    crate::process::hold_for_fork();
}

fn release() {
    crate::process::release_after_fork();
    crate::registry::release_after_fork();
    crate::harden::release_after_fork();
}

extern "C" fn parent() {
    release();
    crate::trace::fork_parent();
}

extern "C" fn child() {
    release();
    crate::trace::fork_child();
    crate::registry::adopt_orphans();
}
