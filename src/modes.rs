//! Which optional per-call hooks are on: one load on every API call.
//!
//! A leaf: [`crate::init`] switches modes on (from the environment, once)
//! and [`crate::trace`] switches tracing off in a child that cannot record;
//! [`crate::api`] reads them. A mode that is off costs nothing beyond
//! this one load: the fast paths run only when no bit is set. The process's first call finds `START` and
//! starts the allocator before choosing how to serve itself, so that a mode
//! read from the environment applies to the very first block too; `START`
//! stays set until the environment could be read.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

static HOOKS: AtomicU8 = AtomicU8::new(START);
/// Run the heap checker every [`check_every`] calls.
pub(crate) const CHECK: u8 = 1;
/// Record every call ([`crate::trace`]).
pub(crate) const TRACE: u8 = 2;
/// Serve every call through the hardened mode ([`crate::harden`]).
pub(crate) const HARDEN: u8 = 4;
/// Start-up has not finished (or the environment is not readable yet).
pub(crate) const START: u8 = 8;
/// Sample allocations for the heap profile ([`crate::profile`]).
pub(crate) const PROFILE: u8 = 16;
/// Fill blocks handed out and freed with a byte (glibc's `M_PERTURB`,
/// `MALLOC_PERTURB_`; [`crate::api`]).
pub(crate) const PERTURB: u8 = 32;

static CHECK_EVERY: AtomicUsize = AtomicUsize::new(0);

/// The hooks that are on.
#[inline(always)]
pub fn hooks() -> u8 {
    HOOKS.load(Relaxed)
}

/// Whether any hook is on.
#[inline(always)]
pub fn hooked() -> bool {
    hooks() != 0
}

#[inline]
pub fn hardened() -> bool {
    hooks() & HARDEN != 0
}

pub fn set(bit: u8, on: bool) {
    if on {
        HOOKS.fetch_or(bit, Relaxed);
    } else {
        HOOKS.fetch_and(!bit, Relaxed);
    }
}

/// Runs the heap checker every `n` calls (0: never).
pub fn set_check_every(n: usize) {
    CHECK_EVERY.store(n, Relaxed);
    set(CHECK, n != 0 || cfg!(feature = "check-every-call"));
}

pub fn check_every() -> usize {
    CHECK_EVERY.load(Relaxed).max(1)
}
