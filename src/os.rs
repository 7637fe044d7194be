//! Where memory comes from: the only module that makes memory system calls.
//!
//! The heap is generic over [`Source`], so tests can run it on a plain
//! buffer; [`Os`] is the real thing (sbrk, mmap, mremap, munmap, madvise).
//! Every call here leaves `errno` as it found it: `free` must never change
//! errno, and the C layer sets `ENOMEM` itself when a request fails.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::{AcqRel, Acquire, Relaxed}};

/// A supplier of memory for heap regions.
pub trait Source {
    /// Moves the program break up by `len` bytes; returns the old break
    /// (where the new memory starts) or `None`.
    fn brk_grow(&mut self, len: usize) -> Option<usize>;
    /// Moves the program break down by `len` bytes.
    fn brk_shrink(&mut self, len: usize) -> bool;
    /// A fresh zeroed mapping of `len` bytes (a multiple of the page size),
    /// counted against the overcommit limit ([`map_accounted`]).
    fn map(&mut self, len: usize) -> Option<usize>;
    /// Gives back a mapping made by [`Source::map`] that was never used.
    ///
    /// # Safety
    /// `[addr, addr + len)` must be such a mapping.
    unsafe fn unmap(&mut self, addr: usize, len: usize);
    /// Tells the system the pages of `[addr, addr + len)` are no longer
    /// needed; they read as zero afterwards.
    ///
    /// # Safety
    /// The range must be page-aligned, mapped, and hold nothing anyone needs.
    unsafe fn purge(&mut self, addr: usize, len: usize) -> bool;
}

/// Counters of system calls, for statistics.
pub struct SysCounters {
    pub sbrk: AtomicU64,
    pub mmap: AtomicU64,
    pub munmap: AtomicU64,
    pub mremap: AtomicU64,
    pub madvise: AtomicU64,
}

pub static SYSCALLS: SysCounters = SysCounters {
    sbrk: AtomicU64::new(0),
    mmap: AtomicU64::new(0),
    munmap: AtomicU64::new(0),
    mremap: AtomicU64::new(0),
    madvise: AtomicU64::new(0),
};

/// Failure injection for tests: when non-zero, the n-th next system call
/// that obtains memory fails (and the count restarts from the setting).
pub static FAIL_EVERY: AtomicUsize = AtomicUsize::new(0);
static FAIL_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn injected_failure() -> bool {
    let every = FAIL_EVERY.load(Relaxed);
    every != 0 && FAIL_COUNTER.fetch_add(1, Relaxed) % every == every - 1
}

/// Runs `f` and puts errno back as it was.
#[inline]
fn keep_errno<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: __errno_location returns this thread's errno slot, valid for
    // the thread's lifetime.
    unsafe {
        let e = libc::__errno_location();
        let saved = *e;
        let r = f();
        *e = saved;
        r
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// The operating system as a memory source.
#[derive(Default)]
pub struct Os;

impl Source for Os {
    fn brk_grow(&mut self, len: usize) -> Option<usize> {
        if len == 0 {
            // A query: glibc answers it from its cached break.
            // SAFETY: sbrk(0) moves nothing.
            return keep_errno(|| Some(unsafe { libc::sbrk(0) } as usize)).filter(|&b| b as isize != -1);
        }
        if injected_failure() || len > isize::MAX as usize {
            return None;
        }
        bump(&SYSCALLS.sbrk);
        keep_errno(|| {
            // SAFETY: sbrk only moves the break; memory above the old break
            // belongs to no one else.
            let old = unsafe { libc::sbrk(len as libc::intptr_t) };
            (old as isize != -1).then_some(old as usize)
        })
    }

    fn brk_shrink(&mut self, len: usize) -> bool {
        bump(&SYSCALLS.sbrk);
        keep_errno(|| {
            // SAFETY: the caller gives back only the top of its own sbrk
            // region, which holds no live block.
            unsafe { libc::sbrk(-(len as libc::intptr_t)) as isize != -1 }
        })
    }

    fn map(&mut self, len: usize) -> Option<usize> {
        map_accounted(len)
    }

    unsafe fn unmap(&mut self, addr: usize, len: usize) {
        // SAFETY: forwarded to the caller.
        unsafe { unmap(addr, len) }
    }

    unsafe fn purge(&mut self, addr: usize, len: usize) -> bool {
        bump(&SYSCALLS.madvise);
        keep_errno(|| {
            // SAFETY: the caller owns the range and needs none of its bytes.
            unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0 }
        })
    }
}

/// A fresh private anonymous mapping of `len` bytes for memory the program
/// uses (large blocks, mapped heap regions). It counts against the
/// system's overcommit accounting, as glibc's mappings do: under the
/// default heuristic a request far beyond RAM and swap fails here, rather
/// than succeeding and faulting later.
pub fn map_accounted(len: usize) -> Option<usize> {
    map_with(len, 0)
}

/// A fresh private anonymous mapping of `len` bytes for the allocator's own
/// metadata (address tables, the thread registry, the trace recorder, the
/// quarantine ring): reserved with `MAP_NORESERVE`, since most of it is
/// never touched and it must not count against the program's commit limit,
/// and between two inaccessible guard pages, so that no overflow of a
/// program's block mapped next to it (below or above) can reach it: it
/// faults instead. Given back with [`unmap_metadata`].
pub fn map_metadata(len: usize) -> Option<usize> {
    if injected_failure() {
        return None;
    }
    map_guarded_metadata(len)
}

fn map_guarded_metadata(len: usize) -> Option<usize> {
    let g = page_size();
    let body = round_up_page(len);
    if let Some(a) = zone_take(body) {
        return Some(a);
    }
    let base = mmap_anon(body + 2 * g, libc::MAP_NORESERVE)?;
    // SAFETY: the two ends of the mapping just made, used by nothing.
    let guarded = unsafe {
        libc::mprotect(base as *mut libc::c_void, g, libc::PROT_NONE) == 0
            && libc::mprotect((base + g + body) as *mut libc::c_void, g, libc::PROT_NONE) == 0
    };
    if !guarded {
        // SAFETY: as above.
        unsafe { unmap(base, body + 2 * g) };
        return None;
    }
    Some(base + g)
}

/// The metadata zone: one reservation of [`ZONE_BYTES`] of address space,
/// inaccessible but for the tables placed in its middle part, so that
/// [`ZONE_MARGIN`] of inaccessible memory lies between any table and any
/// mapping of the program's blocks. (Its size is a compromise: a program
/// that lowers its own `RLIMIT_AS` after start-up finds the reservation
/// counted against it, as it finds glibc's 64 MiB reservations for the
/// arenas of its threads.) A guard page on each side of a table
/// stops a linear overflow; the margin also stops a write at an offset
/// (a 1 MiB underflow from a large block reached the page map's leaf
/// mapped next to it before). Tables are placed one after the other with
/// an inaccessible page between them; a table given back is made
/// inaccessible again and its place not reused (the tables that grow do
/// so by doubling, so the places given up add up to less than the last
/// size). When the zone is full, or cannot be had (a limit on the
/// process's address space, `RLIMIT_AS`, which the reservation would eat
/// into), tables get guarded mappings of their own.
const ZONE_BYTES: usize = 64 << 20;
const ZONE_MARGIN: usize = 16 << 20;
/// The zone's base: 0 until the first table asks, [`NO_ZONE`] when there
/// is none.
static ZONE_BASE: AtomicUsize = AtomicUsize::new(0);
const NO_ZONE: usize = 1;
/// Bytes of the zone's middle part handed out (tables and their gaps).
static ZONE_USED: AtomicUsize = AtomicUsize::new(0);

/// `body` bytes (whole pages) of the zone, readable and writable; `None`
/// when the zone has no room or does not exist.
fn zone_take(body: usize) -> Option<usize> {
    let base = zone()?;
    let step = body + page_size();
    let off = ZONE_USED.fetch_add(step, Relaxed);
    if off + step > ZONE_BYTES - 2 * ZONE_MARGIN {
        return None;
    }
    let a = base + ZONE_MARGIN + off;
    // SAFETY: pages of the zone that no one else was given (the bump above).
    let open = keep_errno(|| unsafe {
        libc::mprotect(a as *mut libc::c_void, body, libc::PROT_READ | libc::PROT_WRITE) == 0
    });
    open.then_some(a)
}

/// Whether `[addr, addr + len)` lies in the zone.
fn in_zone(addr: usize, len: usize) -> bool {
    let base = ZONE_BASE.load(Relaxed);
    base > NO_ZONE && addr >= base && addr + len <= base + ZONE_BYTES
}

fn zone() -> Option<usize> {
    match ZONE_BASE.load(Acquire) {
        0 => reserve_zone(),
        NO_ZONE => None,
        base => Some(base),
    }
}

/// Reserves the zone (once; a thread that loses the race gives its
/// reservation back).
#[cold]
fn reserve_zone() -> Option<usize> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit to fill.
    let unlimited = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } == 0 && lim.rlim_cur == libc::RLIM_INFINITY;
    let got = if unlimited {
        bump(&SYSCALLS.mmap);
        keep_errno(|| {
            // SAFETY: a new anonymous mapping aliases nothing.
            let p = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    ZONE_BYTES,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            (p != libc::MAP_FAILED).then_some(p as usize)
        })
    } else {
        None
    };
    match ZONE_BASE.compare_exchange(0, got.unwrap_or(NO_ZONE), AcqRel, Acquire) {
        Ok(_) => got,
        Err(won) => {
            if let Some(g) = got {
                // SAFETY: our reservation lost the race and was never used.
                unsafe { unmap(g, ZONE_BYTES) };
            }
            (won != NO_ZONE).then_some(won)
        }
    }
}

fn round_up_page(len: usize) -> usize {
    let g = page_size();
    (len + g - 1) & !(g - 1)
}

/// Gives back a mapping made by [`map_metadata`] or [`map_table`].
///
/// # Safety
/// `[addr, addr + len)` must be such a mapping, used by nothing.
pub unsafe fn unmap_metadata(addr: usize, len: usize) {
    let g = page_size();
    if in_zone(addr, round_up_page(len)) {
        // Its pages go back, and it is inaccessible again, as the zone.
        keep_errno(|| {
            // SAFETY: a table of the zone that nothing uses any more
            // (caller); the new mapping replaces exactly its pages.
            unsafe {
                libc::mmap(
                    addr as *mut libc::c_void,
                    round_up_page(len),
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                    -1,
                    0,
                )
            }
        });
        return;
    }
    // SAFETY: forwarded; the guard pages are part of the mapping.
    unsafe { unmap(addr - g, round_up_page(len) + 2 * g) };
}

fn map_with(len: usize, extra_flags: i32) -> Option<usize> {
    if injected_failure() {
        return None;
    }
    mmap_anon(len, extra_flags)
}

/// The table `slot` points to, `len` bytes mapped by `map` if `slot` is
/// still null (null when the system refuses). Threads racing here each
/// map one; one publishes its own, the others give theirs back.
pub fn table_in<T>(slot: &core::sync::atomic::AtomicPtr<T>, len: usize, map: fn(usize) -> Option<usize>) -> *mut T {
    use core::sync::atomic::Ordering::{AcqRel, Acquire};
    let cur = slot.load(Acquire);
    if !cur.is_null() {
        return cur;
    }
    let Some(m) = map(len) else { return core::ptr::null_mut() };
    match slot.compare_exchange(core::ptr::null_mut(), m as *mut T, AcqRel, Acquire) {
        Ok(_) => m as *mut T,
        Err(won) => {
            // SAFETY: our mapping lost the race and was never published.
            unsafe { unmap_metadata(m, len) };
            won
        }
    }
}

/// A fresh mapping for the allocator's own tables (the page map, region
/// and large-block descriptors): as [`map_metadata`], but exempt from
/// failure injection, which tests how the program's requests fail.
pub fn map_table(len: usize) -> Option<usize> {
    map_guarded_metadata(len)
}

fn mmap_anon(len: usize, extra_flags: i32) -> Option<usize> {
    bump(&SYSCALLS.mmap);
    keep_errno(|| {
        // SAFETY: a new anonymous mapping aliases nothing.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then_some(p as usize)
    })
}

/// Makes `[addr, addr + len)` inaccessible (`accessible` false) or
/// readable and writable again, keeping its pages; false when the system
/// refuses (it may have no room for the split of the mapping).
///
/// # Safety
/// The range must be page-aligned memory of ours that no block in use
/// covers when it is made inaccessible.
pub unsafe fn protect(addr: usize, len: usize, accessible: bool) -> bool {
    let prot = if accessible { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_NONE };
    // SAFETY: forwarded to the caller.
    keep_errno(|| unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) == 0 })
}

/// Unmaps `[addr, addr + len)`.
///
/// # Safety
/// The range must be a mapping (or part of one) that nothing uses any more.
pub unsafe fn unmap(addr: usize, len: usize) {
    bump(&SYSCALLS.munmap);
    keep_errno(|| {
        // SAFETY: forwarded to the caller.
        unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    })
}

/// Resizes the mapping at `addr` from `old` to `new` bytes, moving it if
/// `may_move`. Returns the (possibly new) address.
///
/// # Safety
/// `[addr, addr + old)` must be a whole mapping owned by the caller.
pub unsafe fn remap(addr: usize, old: usize, new: usize, may_move: bool) -> Option<usize> {
    if new > old && injected_failure() {
        return None;
    }
    bump(&SYSCALLS.mremap);
    keep_errno(|| {
        let flags = if may_move { libc::MREMAP_MAYMOVE } else { 0 };
        // SAFETY: forwarded to the caller.
        let p = unsafe { libc::mremap(addr as *mut libc::c_void, old, new, flags) };
        (p != libc::MAP_FAILED).then_some(p as usize)
    })
}

/// Moves the mapping at `addr` (of `old` bytes) to `to`, resized to `new`
/// bytes, replacing the mapping at `to`. Returns `to`.
///
/// # Safety
/// `[addr, addr + old)` must be a whole mapping owned by the caller, and
/// `[to, to + new)` a mapping of the caller's that nothing uses.
pub unsafe fn remap_to(addr: usize, old: usize, new: usize, to: usize) -> Option<usize> {
    bump(&SYSCALLS.mremap);
    keep_errno(|| {
        // SAFETY: forwarded to the caller.
        let p = unsafe {
            libc::mremap(addr as *mut libc::c_void, old, new, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to as *mut libc::c_void)
        };
        (p != libc::MAP_FAILED).then_some(p as usize)
    })
}

/// A monotonic clock in milliseconds (the coarse clock: a few ns through
/// the vDSO, no system call).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Whether the page holding `addr` is mapped in this process (by anyone):
/// for misuse reports only (a system call).
pub fn is_mapped(addr: usize) -> bool {
    let page = addr & !(page_size() - 1);
    let mut resident = 0u8;
    // SAFETY: mincore reads the page tables only, and writes one byte into
    // `resident` for the one page asked about; it fails with ENOMEM when
    // the page is not mapped.
    unsafe { libc::mincore(page as *mut libc::c_void, 1, &mut resident) == 0 }
}

/// Whether the 8 bytes at `addr` can be read, asked of the kernel (a
/// system call): a copy of them to this process itself, which fails on a
/// page that is not mapped or not readable (a thread stack's guard page is
/// mapped, with no access; `is_mapped` says yes to it). False too when the
/// system refuses the call.
pub fn is_readable(addr: usize) -> bool {
    let mut word = 0usize;
    let local = libc::iovec { iov_base: (&raw mut word).cast(), iov_len: 8 };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: 8 };
    // SAFETY: the kernel writes at most 8 bytes into `word`; it reads the
    // remote range through the page tables and fails (EFAULT) rather than
    // faulting. errno is saved and put back: no caller expects it changed.
    unsafe {
        let saved = *libc::__errno_location();
        let n = libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0);
        *libc::__errno_location() = saved;
        n == 8
    }
}

/// The CPUs this process may run on (1 when the system will not say).
pub fn cpus() -> usize {
    // SAFETY: a zeroed set, filled by the kernel; no allocation.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        if libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 1;
        }
        (libc::CPU_COUNT(&set) as usize).max(1)
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: getauxval reads the auxiliary vector; it never allocates.
    let p = unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize;
    if p.is_power_of_two() { p } else { crate::config::PAGE }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping holding `addr`: its bounds and permissions ("rw-p",
    /// "---p", ...).
    fn mapping_at(addr: usize) -> Option<(usize, usize, String)> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().find_map(|l| {
            let (range, rest) = l.split_once(' ')?;
            let (lo, hi) = range.split_once('-')?;
            let (lo, hi) = (usize::from_str_radix(lo, 16).ok()?, usize::from_str_radix(hi, 16).ok()?);
            (lo <= addr && addr < hi).then(|| (lo, hi, rest[..4].to_string()))
        })
    }

    fn perms_at(addr: usize) -> Option<String> {
        mapping_at(addr).map(|m| m.2)
    }

    /// A table lies in the zone's middle part, between inaccessible pages,
    /// away from any mapping made for blocks; given back, it is
    /// inaccessible again. (Without the zone, under an address-space limit,
    /// it has guard pages of its own.)
    #[test]
    fn tables_lie_in_the_zone_far_from_blocks() {
        let len = 3 * page_size() + 100;
        let a = map_table(len).unwrap();
        let body = round_up_page(len);
        assert_eq!(perms_at(a).as_deref(), Some("rw-p"));
        assert_eq!(perms_at(a - 1).as_deref(), Some("---p"));
        assert_eq!(perms_at(a + body).as_deref(), Some("---p"));
        let base = ZONE_BASE.load(Relaxed);
        if base == NO_ZONE {
            return;
        }
        assert!(a >= base + ZONE_MARGIN && a + body <= base + ZONE_BYTES - ZONE_MARGIN);
        // The margins: each one inaccessible mapping (at least; the
        // system may merge it with a neighbour of the same kind).
        let (lo, hi, p) = mapping_at(base).unwrap();
        assert!(lo <= base && hi >= base + ZONE_MARGIN && p == "---p", "the zone's lower margin");
        let top = base + ZONE_BYTES - ZONE_MARGIN;
        let (lo, hi, p) = mapping_at(top).unwrap();
        assert!(lo <= top && hi >= base + ZONE_BYTES && p == "---p", "the zone's upper margin");
        let b = map_accounted(1 << 20).unwrap();
        assert!(b + (1 << 20) <= base || b >= base + ZONE_BYTES, "a block's mapping inside the zone");
        // SAFETY: our own mappings, unused.
        unsafe {
            unmap(b, 1 << 20);
            unmap_metadata(a, len);
        }
        assert_eq!(perms_at(a).as_deref(), Some("---p"));
    }
}
