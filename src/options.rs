//! Run-time options: `mallopt`, and the environment read once at start-up.
//!
//! The environment is read from `environ` directly: `getenv` may not be
//! usable while the library is being preloaded, and nothing here may
//! allocate. Recognised variables:
//!
//! | variable | meaning |
//! |---|---|
//! | `FITALLOC_STATS=1` | print statistics on stderr at exit (only if descriptor 2 is still the stderr the program started with) |
//! | `FITALLOC_STATS_FILE=path` | print statistics at exit, appended to `path` instead of stderr |
//! | `FITALLOC_CHECK=N` | run the heap checker every N calls (1: every call) |
//! | `FITALLOC_HARDEN=1` | hardened mode (canaries, quarantine, guard pages) |
//! | `FITALLOC_QUARANTINE=n` | bytes the hardened mode's quarantine holds (default 4m) |
//! | `FITALLOC_PURGE_MS=n` | free memory that stayed unused this many milliseconds goes back to the system (default 1000; 0: at once) |
//! | `FITALLOC_TRACE=path` | record every allocation call to `path` |
//! | `FITALLOC_PROFILE=path` | sample allocations and write a heap profile to `path` at exit ([`crate::profile`]) |
//! | `FITALLOC_PROFILE_RATE=n` | mean bytes allocated between two samples (default 512k) |
//! | `FITALLOC_ARENAS=n` | heaps with a lock of their own (default 1; 0: one per CPU the process may run on; at most 8; read at start-up) |
//! | `FITALLOC_PROFILE_SIGNAL=sig` | on signal `sig` (`USR1`, `USR2` or a number), write a numbered snapshot of the heap profile |
//! | `FITALLOC_TCACHE=0` | no thread caches |
//! | `FITALLOC_TCACHE_BYTES=n` | bytes a thread cache may hold (default 256k) |
//! | `FITALLOC_TCACHE_COUNT=n` | blocks a thread cache may hold of each size, at least (default 16; more for small sizes: 16 KiB worth of each, a sixteenth of `FITALLOC_TCACHE_BYTES`, and up to half of it for a slab size whose list keeps overflowing) |
//! | `FITALLOC_DEPOT_BYTES=n` | bytes of cached blocks the depot may hold between threads (default 64k; 0: no depot; [`crate::depot`]) |
//! | `FITALLOC_MMAP_THRESHOLD=n` | as `mallopt(M_MMAP_THRESHOLD, n)` |
//! | `FITALLOC_TRIM_THRESHOLD=n` | as `mallopt(M_TRIM_THRESHOLD, n)` |
//! | `FITALLOC_TOP_PAD=n` | as `mallopt(M_TOP_PAD, n)` |
//! | `FITALLOC_MMAP_MAX=n` | as `mallopt(M_MMAP_MAX, n)` |
//! | `FITALLOC_FAIL_EVERY=n` | testing: every n-th request for memory from the system fails |
//!
//! glibc's `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
//! `MALLOC_TOP_PAD_` and `MALLOC_MMAP_MAX_` are honoured too. Sizes take a
//! `k`, `m` or `g` suffix; flags are `0`/`1` (or `no`/`yes`, `off`/`on`,
//! `false`/`true`).
//!
//! Every value is validated: one that is not a size (or number, or flag)
//! is ignored, and a size above what works is clamped ([`MAX_TOP_PAD`],
//! [`MAX_TCACHE_COUNT`]), each with one line on stderr:
//! `fitalloc: FITALLOC_TOP_PAD=64g is too large; using 1g`.

use crate::config;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

pub struct Options {
    pub mmap_threshold: AtomicUsize,
    pub trim_threshold: AtomicUsize,
    pub top_pad: AtomicUsize,
    pub mmap_max: AtomicUsize,
    /// glibc raises the mmap threshold to the size of freed mapped blocks
    /// until the program sets any of the thresholds itself.
    pub dynamic_threshold: AtomicBool,
    pub stats_at_exit: AtomicBool,
    pub check_every: AtomicUsize,
    pub harden: AtomicBool,
    pub tcache: AtomicBool,
    pub tcache_bytes: AtomicUsize,
    /// Milliseconds free memory may stay unused before it goes back to the
    /// system ([`crate::trim`]).
    pub purge_ms: AtomicUsize,
    pub tcache_count: AtomicUsize,
    /// Bytes the depot may hold ([`crate::depot`]).
    pub depot_bytes: AtomicUsize,
    /// Bytes the hardened mode's quarantine may hold.
    pub quarantine_bytes: AtomicUsize,
    /// Testing: every n-th request for memory from the system fails.
    pub fail_every: AtomicUsize,
    pub page: AtomicUsize,
    /// Mean bytes allocated between two heap-profile samples.
    pub profile_rate: AtomicUsize,
    /// The signal that asks for a heap-profile snapshot (0: none).
    pub profile_signal: AtomicUsize,
    /// glibc's perturb byte (`M_PERTURB`, `MALLOC_PERTURB_`): 0 off, else
    /// the byte freed blocks are filled with (its complement fills blocks
    /// handed out, calloc's excepted).
    pub perturb: AtomicUsize,
    /// `M_MXFAST` (bytes): the largest block `mallinfo` counts in
    /// `smblks` and `fsmblks` when it waits in a thread cache or the depot,
    /// as glibc counts its fastbins' chunks there (see
    /// [`crate::stats::mallinfo2`]). It changes nothing else.
    pub mxfast: AtomicUsize,
    /// Arenas (0: one per CPU the process may run on; read at start-up).
    /// One by default: see `crate::process` on what several measured.
    pub arenas: AtomicUsize,
}

pub static OPT: Options = Options {
    mmap_threshold: AtomicUsize::new(config::DEFAULT_MMAP_THRESHOLD),
    trim_threshold: AtomicUsize::new(config::DEFAULT_TRIM_THRESHOLD),
    top_pad: AtomicUsize::new(config::DEFAULT_TOP_PAD),
    mmap_max: AtomicUsize::new(config::DEFAULT_MMAP_MAX),
    dynamic_threshold: AtomicBool::new(true),
    stats_at_exit: AtomicBool::new(false),
    check_every: AtomicUsize::new(0),
    harden: AtomicBool::new(false),
    tcache: AtomicBool::new(true),
    tcache_bytes: AtomicUsize::new(256 * 1024),
    purge_ms: AtomicUsize::new(1000),
    tcache_count: AtomicUsize::new(16),
    depot_bytes: AtomicUsize::new(crate::config::DEPOT_BYTES),
    quarantine_bytes: AtomicUsize::new(4 << 20),
    fail_every: AtomicUsize::new(0),
    page: AtomicUsize::new(config::PAGE),
    profile_rate: AtomicUsize::new(512 * 1024),
    profile_signal: AtomicUsize::new(0),
    perturb: AtomicUsize::new(0),
    mxfast: AtomicUsize::new(config::DEFAULT_MXFAST),
    arenas: AtomicUsize::new(1),
};

/// A path from the environment, NUL-terminated (empty: none). Written
/// once while the environment is read, read-only afterwards.
struct PathCell(core::cell::UnsafeCell<[u8; 512]>);

// SAFETY: written only while reading the environment (once, before tracing
// starts), read afterwards.
unsafe impl Sync for PathCell {}

/// `FITALLOC_TRACE`'s value.
static TRACE_PATH: PathCell = PathCell(core::cell::UnsafeCell::new([0; 512]));
/// `FITALLOC_PROFILE`'s value.
static PROFILE_PATH: PathCell = PathCell(core::cell::UnsafeCell::new([0; 512]));
/// `FITALLOC_STATS_FILE`'s value.
static STATS_PATH: PathCell = PathCell(core::cell::UnsafeCell::new([0; 512]));

impl PathCell {
    /// Keeps `value`; false (keeping nothing) if it does not fit.
    fn store(&self, value: &[u8]) -> bool {
        // SAFETY: written once, at start-up, before any reader.
        let path = unsafe { &mut *self.0.get() };
        if value.len() >= path.len() || value.contains(&0) {
            path[0] = 0;
            return false;
        }
        path[..value.len()].copy_from_slice(value);
        path[value.len()] = 0;
        true
    }

    fn get(&self) -> Option<&core::ffi::CStr> {
        // SAFETY: written only at start-up; NUL-terminated by construction.
        let p = unsafe { &*self.0.get() };
        if p[0] == 0 { None } else { core::ffi::CStr::from_bytes_until_nul(p).ok() }
    }
}

unsafe extern "C" {
    static environ: *const *const libc::c_char;
}

/// Parses a size with an optional k/m/g suffix.
pub fn parse_size(s: &[u8]) -> Option<usize> {
    // Hexadecimal, as glibc's tunables (and so its MALLOC_*_ variables)
    // accept it.
    if let Some(hex) = s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X")) {
        if hex.is_empty() {
            return None;
        }
        let mut v: usize = 0;
        for &d in hex {
            v = v.checked_mul(16)?.checked_add((d as char).to_digit(16)? as usize)?;
        }
        return Some(v);
    }
    let (digits, shift) = match s.last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: usize = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((d - b'0') as usize)?;
    }
    v.checked_mul(1 << shift)
}

/// Largest top pad: each heap growth asks for the request plus the pad,
/// and a region must stay below [`config::MAX_REGION_BYTES`] (4 GiB).
pub(crate) const MAX_TOP_PAD: usize = 1 << 30;
/// Largest per-size minimum of a thread cache.
pub(crate) const MAX_TCACHE_COUNT: usize = 64;

/// A flag's value, or `None` when it is not one.
fn parse_flag(v: &[u8]) -> Option<bool> {
    match v {
        b"" | b"0" | b"no" | b"off" | b"false" => Some(false),
        b"yes" | b"on" | b"true" => Some(true),
        _ => parse_size(v).filter(|_| v.iter().all(u8::is_ascii_digit)).map(|n| n != 0),
    }
}

/// Prints `fitalloc: NAME=value <what>` on stderr, in one write and
/// without allocating.
fn warn(name: &[u8], value: &[u8], what: &str) {
    let mut b = crate::diag::Buf::<400>::new();
    b.push_bytes(b"fitalloc: ");
    b.push_bytes(name);
    b.push_bytes(b"=");
    b.push_bytes(&value[..value.len().min(200)]);
    b.push_bytes(b" ");
    b.push_bytes(what.as_bytes());
    b.push_bytes(b"\n");
    b.write_to(2);
}

/// A flag option, or `None` (with one line on stderr) when it is not one.
fn flag(name: &[u8], value: &[u8]) -> Option<bool> {
    let f = parse_flag(value);
    if f.is_none() {
        warn(name, value, "is not 0 or 1; ignored");
    }
    f
}

/// A size option, or `None` (with one line on stderr) when it is not one.
fn size(name: &[u8], value: &[u8]) -> Option<usize> {
    let n = parse_size(value);
    if n.is_none() {
        warn(name, value, "is not a size (a number with an optional k, m or g suffix); ignored");
    }
    n
}

/// A size option clamped to `max` (one line on stderr when it was above).
fn size_at_most(name: &[u8], value: &[u8], max: usize) -> Option<usize> {
    let n = size(name, value)?;
    if n > max {
        let mut what = crate::diag::Buf::<64>::new();
        let _ = match max {
            m if m >= 1 << 30 && m % (1 << 30) == 0 => write!(what, "is too large; using {}g", m >> 30),
            m => write!(what, "is too large; using {m}"),
        };
        warn(name, value, core::str::from_utf8(what.as_bytes()).unwrap_or("is too large"));
        return Some(max);
    }
    Some(n)
}

/// A signal given as `USR1`, `SIGUSR1`, `USR2`, `SIGUSR2` or a number a
/// handler may be set for (not `KILL` or `STOP`).
fn signal_number(value: &[u8]) -> Option<usize> {
    let name = value.strip_prefix(b"SIG").unwrap_or(value);
    let n = match name {
        b"USR1" => libc::SIGUSR1 as usize,
        b"USR2" => libc::SIGUSR2 as usize,
        _ => parse_size(value)?,
    };
    let catchable = (1..=64).contains(&n) && n != libc::SIGKILL as usize && n != libc::SIGSTOP as usize;
    catchable.then_some(n)
}

/// Applies one `NAME=value` entry of the environment. Names this library
/// does not know are left alone (glibc reads its own `MALLOC_*`).
fn apply(name: &[u8], value: &[u8]) {
    match name {
        b"FITALLOC_STATS" => {
            if let Some(on) = flag(name, value) {
                OPT.stats_at_exit.store(on, Relaxed);
            }
        }
        b"FITALLOC_CHECK" => match parse_size(value) {
            Some(n) => OPT.check_every.store(n, Relaxed),
            None => warn(name, value, "is not a number; ignored"),
        },
        b"FITALLOC_HARDEN" => {
            if let Some(on) = flag(name, value) {
                OPT.harden.store(on, Relaxed);
            }
        }
        b"FITALLOC_TCACHE" => {
            if let Some(on) = flag(name, value) {
                OPT.tcache.store(on, Relaxed);
            }
        }
        b"FITALLOC_TCACHE_COUNT" => {
            if let Some(n) = size_at_most(name, value, MAX_TCACHE_COUNT) {
                OPT.tcache_count.store(n, Relaxed);
            }
        }
        b"FITALLOC_PURGE_MS" => {
            if let Some(n) = size(name, value) {
                OPT.purge_ms.store(n, Relaxed);
            }
        }
        b"FITALLOC_TCACHE_BYTES" => {
            if let Some(n) = size(name, value) {
                OPT.tcache_bytes.store(n, Relaxed);
            }
        }
        b"FITALLOC_DEPOT_BYTES" => {
            if let Some(n) = size(name, value) {
                OPT.depot_bytes.store(n, Relaxed);
            }
        }
        b"FITALLOC_QUARANTINE" => {
            if let Some(n) = size(name, value) {
                OPT.quarantine_bytes.store(n, Relaxed);
            }
        }
        b"FITALLOC_FAIL_EVERY" => {
            if let Some(n) = size(name, value) {
                OPT.fail_every.store(n, Relaxed);
            }
        }
        b"FITALLOC_TRACE" => {
            let kept = TRACE_PATH.store(value);
            if !kept {
                warn(name, b"...", "is too long a path; tracing is off");
            }
        }
        b"FITALLOC_PROFILE" => {
            let kept = PROFILE_PATH.store(value);
            if !kept {
                warn(name, b"...", "is too long a path; profiling is off");
            }
        }
        b"FITALLOC_PROFILE_SIGNAL" => match signal_number(value) {
            Some(n) => OPT.profile_signal.store(n, Relaxed),
            None => warn(name, value, "is not USR1, USR2 or a signal number from 1 to 64 that may be caught; ignored"),
        },
        b"FITALLOC_ARENAS" => {
            if let Some(n) = size_at_most(name, value, crate::config::MAX_ARENAS) {
                OPT.arenas.store(n, Relaxed);
            }
        }
        b"FITALLOC_PROFILE_RATE" => {
            if let Some(n) = size(name, value) {
                OPT.profile_rate.store(n.max(1), Relaxed);
            }
        }
        b"FITALLOC_STATS_FILE" if !value.is_empty() => {
            if STATS_PATH.store(value) {
                OPT.stats_at_exit.store(true, Relaxed);
            } else {
                warn(name, b"...", "is too long a path; ignored");
            }
        }
        b"FITALLOC_MMAP_THRESHOLD" | b"MALLOC_MMAP_THRESHOLD_" => {
            if let Some(n) = size(name, value) {
                set_mmap_threshold(n);
            }
        }
        b"FITALLOC_TRIM_THRESHOLD" | b"MALLOC_TRIM_THRESHOLD_" => {
            if let Some(n) = size(name, value) {
                set_fixed(&OPT.trim_threshold, n);
            }
        }
        b"FITALLOC_TOP_PAD" | b"MALLOC_TOP_PAD_" => {
            if let Some(n) = size_at_most(name, value, MAX_TOP_PAD) {
                set_fixed(&OPT.top_pad, n);
            }
        }
        b"FITALLOC_MMAP_MAX" | b"MALLOC_MMAP_MAX_" => {
            if let Some(n) = size(name, value) {
                set_fixed(&OPT.mmap_max, n);
            }
        }
        b"FITALLOC_PERTURB" | b"MALLOC_PERTURB_" => match parse_size(value) {
            Some(n) => OPT.perturb.store(n & 0xff, Relaxed),
            None => warn(name, value, "is not a number; ignored"),
        },
        b"GLIBC_TUNABLES" => tunables(value),
        _ => {}
    }
}

/// glibc's `GLIBC_TUNABLES=name=value:name=value...`: the malloc tunables
/// that have a meaning here (`glibc.malloc.mmap_threshold`,
/// `trim_threshold`, `top_pad`, `mmap_max`, `perturb`, `mxfast`); the
/// others are glibc's own and left alone.
fn tunables(value: &[u8]) {
    for item in value.split(|&c| c == b':') {
        let Some(eq) = item.iter().position(|&c| c == b'=') else { continue };
        let (name, v) = (&item[..eq], &item[eq + 1..]);
        let ours: &[u8] = match name {
            b"glibc.malloc.mmap_threshold" => b"MALLOC_MMAP_THRESHOLD_",
            b"glibc.malloc.trim_threshold" => b"MALLOC_TRIM_THRESHOLD_",
            b"glibc.malloc.top_pad" => b"MALLOC_TOP_PAD_",
            b"glibc.malloc.mmap_max" => b"MALLOC_MMAP_MAX_",
            b"glibc.malloc.perturb" => b"MALLOC_PERTURB_",
            b"glibc.malloc.mxfast" => {
                // As glibc: a value above its limit is ignored.
                match parse_size(v).filter(|&n| n <= config::MAX_MXFAST) {
                    Some(n) => OPT.mxfast.store(n, Relaxed),
                    None => warn(b"glibc.malloc.mxfast", v, "is not a number up to 160; ignored"),
                }
                continue;
            }
            _ => continue,
        };
        apply(ours, v);
    }
}

/// Sets a threshold chosen by the user; like glibc, this ends the dynamic
/// adjustment of the mmap threshold.
pub fn set_fixed(o: &AtomicUsize, v: usize) {
    o.store(v, Relaxed);
    OPT.dynamic_threshold.store(false, Relaxed);
}

/// `M_MMAP_THRESHOLD`: glibc 2.36 accepts any value (blocks too large for
/// the heap still get their own mapping).
pub fn set_mmap_threshold(v: usize) -> bool {
    set_fixed(&OPT.mmap_threshold, v);
    true
}

/// Reads the `FITALLOC_*` environment. Returns false when `environ` is not
/// set up yet (the caller tries again later).
pub fn read_environment() -> bool {
    // SAFETY: `environ` is the C library's; each entry is a NUL-terminated
    // string, and the array ends with a null pointer.
    unsafe {
        let mut e = environ;
        if e.is_null() {
            return false;
        }
        while !(*e).is_null() {
            let s = core::ffi::CStr::from_ptr(*e).to_bytes();
            if (s.starts_with(b"FITALLOC_") || s.starts_with(b"MALLOC_") || s.starts_with(b"GLIBC_TUNABLES="))
                && let Some(eq) = s.iter().position(|&c| c == b'=')
            {
                apply(&s[..eq], &s[eq + 1..]);
            }
            e = e.add(1);
        }
    }
    true
}

/// The trace path, if one was given.
pub fn trace_path() -> Option<&'static core::ffi::CStr> {
    TRACE_PATH.get()
}

/// The heap profile's path, if one was given.
pub fn profile_path() -> Option<&'static core::ffi::CStr> {
    PROFILE_PATH.get()
}

/// Where the exit report goes instead of stderr, if a path was given.
pub fn stats_path() -> Option<&'static core::ffi::CStr> {
    STATS_PATH.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_size_accepts_suffixes_and_rejects_garbage() {
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"64k"), Some(65536));
        assert_eq!(parse_size(b"2M"), Some(2 << 20));
        assert_eq!(parse_size(b"1g"), Some(1 << 30));
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"k"), None);
        assert_eq!(parse_size(b"12x"), None);
        assert_eq!(parse_size(b"99999999999999999999999"), None);
    }

    #[test]
    fn parse_flag_knows_flags_and_refuses_the_rest() {
        assert_eq!(parse_flag(b"1"), Some(true));
        assert_eq!(parse_flag(b"yes"), Some(true));
        assert_eq!(parse_flag(b"0"), Some(false));
        assert_eq!(parse_flag(b""), Some(false));
        assert_eq!(parse_flag(b"off"), Some(false));
        assert_eq!(parse_flag(b"abc"), None);
        assert_eq!(parse_flag(b"1k"), None);
    }
}
