//! Start-up: process secrets, the page size, the environment, the thread
//! exit key and the fork handlers; and the one place modes (hardened,
//! tracing, profiling, checking) are switched on.
//!
//! [`ensure_init`] runs from [`crate::api`] on a process's first calls (the
//! `START` hook, [`crate::modes`]); nothing below the API starts anything.

use crate::modes;
use crate::options::OPT;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering::*};

const UNINIT: u8 = 0;
const STARTING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static ENV_PENDING: AtomicBool = AtomicBool::new(true);

/// Makes sure start-up has run and the environment was read (when it can
/// be). Cheap after the first call. Returns true once both are done.
pub fn ensure_init() -> bool {
    if STATE.load(Acquire) != READY {
        init_slow();
    }
    if ENV_PENDING.load(Relaxed) {
        read_env_late();
    }
    !ENV_PENDING.load(Relaxed)
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
    crate::os::FAIL_EVERY.store(OPT.fail_every.load(Relaxed), Relaxed);
    crate::process::sync_params();
    if OPT.harden.load(Relaxed) {
        // Every block goes through the checks: no thread caches.
        OPT.tcache.store(false, Relaxed);
        crate::harden::enable(at_start);
        modes::set(modes::HARDEN, true);
    }
    modes::set_check_every(OPT.check_every.load(Relaxed));
    crate::stats::keep_stderr();
    if crate::trace::start() {
        modes::set(modes::TRACE, true);
    }
    if crate::profile::start() {
        modes::set(modes::PROFILE, true);
    }
    modes::set(modes::PERTURB, OPT.perturb.load(Relaxed) != 0);
}

/// This thread's signals, blocked while start-up runs on it and delivered
/// when it is done: a handler that allocates would otherwise wait for the
/// start-up it interrupted, which cannot go on under it (found by a
/// hostile review: a `SIGALRM` handler that mallocs, the timer firing
/// during the process's first malloc, spun forever). One system call each
/// way, once per process.
struct SignalsHeld(libc::sigset_t);

impl SignalsHeld {
    fn hold() -> SignalsHeld {
        // SAFETY: both sets are ours and written by the calls; glibc leaves
        // its own internal signals out of the set it blocks.
        unsafe {
            let mut all: libc::sigset_t = core::mem::zeroed();
            let mut old: libc::sigset_t = core::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            SignalsHeld(old)
        }
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        // SAFETY: the mask this thread had before `hold`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, core::ptr::null_mut()) };
    }
}

#[cold]
#[inline(never)]
fn init_slow() {
    let held = SignalsHeld::hold();
    if STATE.compare_exchange(UNINIT, STARTING, Acquire, Acquire).is_err() {
        drop(held);
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
    // Independent keys for each use, expanded from the 128 random bits.
    let mut state = k ^ m.rotate_left(32);
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state ^ m;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    crate::block::set_secrets((next(), next()), (next(), next()));
    crate::tcache::set_secrets(next(), next());
    crate::harden::set_secret(next(), next());
    crate::profile::set_seed(next());
    OPT.page.store(crate::os::page_size(), Relaxed);
    let env_read = crate::options::read_environment();
    crate::os::FAIL_EVERY.store(OPT.fail_every.load(Relaxed), Relaxed);
    crate::registry::create_exit_key();
    crate::process::set_arenas(OPT.arenas.load(Relaxed));
    crate::process::sync_params();
    STATE.store(READY, Release);
    drop(held);
    // From here on allocation works; these may allocate.
    crate::fork::install();
    if env_read {
        ENV_PENDING.store(false, Relaxed);
        apply_env_effects(true);
    }
}
