//! Statistics in the shapes programs expect: `struct fitalloc_stats`,
//! glibc's `mallinfo`/`mallinfo2`, `malloc_stats` and `malloc_info`, and
//! the report `FITALLOC_STATS=1` prints at exit. Derived figures are
//! computed here from the counters, never stored.

use crate::block::units_to_bytes;
use crate::diag::Buf;
use crate::heap::{Heap, HeapCounters};
use crate::os::{Source, SYSCALLS};
use crate::process::{each_heap, large, REGIONS};
use crate::registry::{totals, Totals};
use crate::sync::{Rank, CONTENTION, HEAP_RANKS, RANKS};
use core::fmt::Write;
use core::sync::atomic::Ordering::Relaxed;

/// Everything the statistics report, gathered under each lock in turn.
#[derive(Default, Clone, Copy, Debug)]
pub struct Snapshot {
    pub heap: HeapCounters,
    pub top_bytes: usize,
    pub largest_free: usize,
    pub mapped_bytes: usize,
    pub mapped_blocks: usize,
    pub peak_mapped_bytes: usize,
    pub peak_mapped_blocks: usize,
    pub kept_mapped_bytes: usize,
    pub threads: Totals,
    pub quarantined_bytes: usize,
    pub quarantined_blocks: usize,
    pub slabs: crate::slab::SlabCounters,
    /// `(waits, sleeps)` of each lock, by rank.
    pub locks: [(u64, u64); RANKS],
    pub arenas: usize,
    pub arenas_with_memory: usize,
}

pub fn snapshot() -> Snapshot {
    let mut s = Snapshot { slabs: crate::process::slabs().counters, ..Default::default() };
    // The arenas' figures added up (their peaks too: an upper bound of the
    // peak of the sum, exact with one arena).
    s.arenas = crate::process::arenas();
    each_heap("malloc_stats", |h| {
        s.arenas_with_memory += (h.counters.heap_bytes > 0) as usize;
        s.heap.add(&h.counters);
        let top = units_to_bytes(h.top().1);
        s.top_bytes += top;
        s.largest_free = s.largest_free.max(largest_free(h)).max(top);
    });
    {
        let l = large();
        s.mapped_bytes = l.bytes;
        s.mapped_blocks = l.count();
        s.peak_mapped_bytes = l.peak_bytes;
        s.peak_mapped_blocks = l.peak_count;
        s.kept_mapped_bytes = l.retained_bytes;
    }
    s.threads = totals();
    (s.quarantined_bytes, s.quarantined_blocks) = crate::harden::held();
    for (i, l) in s.locks.iter_mut().enumerate() {
        let c = &CONTENTION[i];
        *l = (c.waits.load(Relaxed), c.sleeps.load(Relaxed));
    }
    s
}

/// The largest free block in the bins (or parked).
fn largest_free<S: Source>(h: &Heap<S>) -> usize {
    let mut best = units_to_bytes(h.bins.small.largest().unwrap_or(0));
    best = best.max(units_to_bytes(h.parked().1));
    for i in (0..crate::config::TREE_BINS).rev() {
        if h.bins.tree_map_bit(i) {
            let mut m = 0;
            // SAFETY: tree nodes are free blocks of the heap.
            let _ = unsafe { h.bins.tree(i).for_each(&REGIONS, |b| m = m.max(b.units())) };
            best = best.max(units_to_bytes(m));
            break;
        }
    }
    best
}

/// Version of [`FitallocStats`]'s layout.
pub const FITALLOC_STATS_VERSION: u64 = 4;

/// `struct fitalloc_stats`: every figure the allocator keeps. Starts with its
/// own size and version so that callers built against another layout can
/// tell.
#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
pub struct FitallocStats {
    /// `sizeof(struct fitalloc_stats)` as the library knows it.
    pub size: u64,
    /// `FITALLOC_STATS_VERSION`.
    pub version: u64,
    /// Bytes the heap regions (sbrk and mmap'ed regions) hold now.
    pub heap_bytes: u64,
    pub peak_heap_bytes: u64,
    /// Bytes in large blocks' own mappings now.
    pub mapped_bytes: u64,
    pub peak_mapped_bytes: u64,
    /// Large blocks with their own mapping.
    pub mapped_blocks: u64,
    /// `heap_bytes + mapped_bytes`.
    pub system_bytes: u64,
    /// Peak of heap bytes plus peak of mapped bytes (an upper bound of the
    /// peak of their sum).
    pub peak_system_bytes: u64,
    /// Bytes of blocks the program holds (block sizes, heap and mapped).
    pub in_use_bytes: u64,
    /// Peak of the bytes of held heap blocks (thread-cached ones included)
    /// plus the peak of mapped bytes.
    pub peak_in_use_bytes: u64,
    pub in_use_blocks: u64,
    /// Bytes of freed blocks waiting in thread caches (and in the depot,
    /// between two threads' caches).
    pub cached_bytes: u64,
    pub cached_blocks: u64,
    /// Bytes of free heap blocks, the top of the heap included.
    pub free_bytes: u64,
    pub free_blocks: u64,
    pub largest_free_block: u64,
    /// Bytes requested since start (cumulative).
    pub requested_bytes: u64,
    pub malloc_calls: u64,
    pub free_calls: u64,
    pub calloc_calls: u64,
    pub realloc_calls: u64,
    /// Every aligned entry point.
    pub memalign_calls: u64,
    pub sbrk_calls: u64,
    pub mmap_calls: u64,
    pub munmap_calls: u64,
    pub mremap_calls: u64,
    pub madvise_calls: u64,
    /// Bytes given back to the system since start.
    pub trimmed_bytes: u64,
    /// Thread caches alive now.
    pub threads: u64,
    /// Small mallocs served by a thread cache, and those that found it
    /// empty (and went to the heap).
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Freed blocks waiting in the hardened mode's quarantine.
    pub quarantined_bytes: u64,
    pub quarantined_blocks: u64,
    /// Mappings of freed large blocks kept for reuse (version 2): part of
    /// `system_bytes`, given back after `FITALLOC_PURGE_MS` unused.
    pub kept_mapped_bytes: u64,
    /// Lock contention since start (version 3): acquisitions of each lock
    /// that found it held (`*_lock_waits`: the thread spun, and may then
    /// have slept), and the futex sleeps among them (`*_lock_sleeps`). The
    /// heap lock serves every request the thread caches cannot; the large
    /// lock, blocks with their own mapping; the registry lock, thread
    /// start and exit and these statistics; the slab lock, small blocks'
    /// refills and drains; `other` adds up the trace, quarantine, profile,
    /// depot and report locks.
    pub heap_lock_waits: u64,
    pub heap_lock_sleeps: u64,
    pub large_lock_waits: u64,
    pub large_lock_sleeps: u64,
    pub registry_lock_waits: u64,
    pub registry_lock_sleeps: u64,
    pub other_lock_waits: u64,
    pub other_lock_sleeps: u64,
    pub slab_lock_waits: u64,
    pub slab_lock_sleeps: u64,
    /// Slabs (version 3): bytes of slab pages now (part of `heap_bytes`),
    /// and of the blocks free in them.
    pub slab_bytes: u64,
    pub slab_free_bytes: u64,
    /// Arenas (version 4): heaps with a lock of their own in use, and how
    /// many of them hold memory (have a region).
    pub arenas: u64,
    pub arenas_with_memory: u64,
}

/// The locks whose contention [`FitallocStats`] adds up as `other`.
const OTHER_LOCKS: [Rank; 5] = [Rank::Trace, Rank::Quarantine, Rank::Profile, Rank::Depot, Rank::Report];

impl FitallocStats {
    pub fn from_snapshot(s: &Snapshot) -> Self {
        let h = &s.heap;
        let top = s.top_bytes as u64;
        // Blocks in thread caches and in quarantine are free to the program
        // but held as far as the heap is concerned.
        let t = &s.threads;
        // So are the blocks free in slabs, and the slabs' containers are
        // not the program's: their blocks in use are.
        let sl = &s.slabs;
        let waiting =
            t.cached_bytes + s.quarantined_bytes as u64 + (sl.free_bytes + sl.slack_bytes()) as u64;
        let in_use_heap = h.used_bytes as u64 - waiting.min(h.used_bytes as u64);
        let used_blocks = (h.used_blocks + sl.blocks - sl.slabs - sl.free_blocks) as u64;
        FitallocStats {
            size: core::mem::size_of::<FitallocStats>() as u64,
            version: FITALLOC_STATS_VERSION,
            heap_bytes: h.heap_bytes as u64,
            peak_heap_bytes: h.peak_heap_bytes as u64,
            mapped_bytes: s.mapped_bytes as u64,
            peak_mapped_bytes: s.peak_mapped_bytes as u64,
            mapped_blocks: s.mapped_blocks as u64,
            system_bytes: (h.heap_bytes + s.mapped_bytes + s.kept_mapped_bytes) as u64,
            peak_system_bytes: (h.peak_heap_bytes + s.peak_mapped_bytes) as u64,
            in_use_bytes: in_use_heap + s.mapped_bytes as u64,
            peak_in_use_bytes: (h.peak_used_bytes + s.peak_mapped_bytes) as u64,
            in_use_blocks: used_blocks.saturating_sub(t.cached_blocks + s.quarantined_blocks as u64)
                + s.mapped_blocks as u64,
            cached_bytes: t.cached_bytes,
            cached_blocks: t.cached_blocks,
            free_bytes: h.free_bytes as u64 + top,
            free_blocks: h.free_blocks as u64 + (top > 0) as u64,
            largest_free_block: s.largest_free as u64,
            requested_bytes: t.requested,
            malloc_calls: t.calls[0],
            free_calls: t.calls[1],
            calloc_calls: t.calls[2],
            realloc_calls: t.calls[3],
            memalign_calls: t.calls[4],
            sbrk_calls: SYSCALLS.sbrk.load(Relaxed),
            mmap_calls: SYSCALLS.mmap.load(Relaxed),
            munmap_calls: SYSCALLS.munmap.load(Relaxed),
            mremap_calls: SYSCALLS.mremap.load(Relaxed),
            madvise_calls: SYSCALLS.madvise.load(Relaxed),
            trimmed_bytes: h.released_bytes as u64,
            threads: t.threads as u64,
            cache_hits: t.cache_hits,
            cache_misses: t.cache_misses,
            quarantined_bytes: s.quarantined_bytes as u64,
            quarantined_blocks: s.quarantined_blocks as u64,
            kept_mapped_bytes: s.kept_mapped_bytes as u64,
            heap_lock_waits: HEAP_RANKS.iter().map(|&r| s.locks[r as usize].0).sum(),
            heap_lock_sleeps: HEAP_RANKS.iter().map(|&r| s.locks[r as usize].1).sum(),
            large_lock_waits: s.locks[Rank::Large as usize].0,
            large_lock_sleeps: s.locks[Rank::Large as usize].1,
            registry_lock_waits: s.locks[Rank::Registry as usize].0,
            registry_lock_sleeps: s.locks[Rank::Registry as usize].1,
            other_lock_waits: OTHER_LOCKS.iter().map(|&r| s.locks[r as usize].0).sum(),
            other_lock_sleeps: OTHER_LOCKS.iter().map(|&r| s.locks[r as usize].1).sum(),
            slab_lock_waits: s.locks[Rank::Slab as usize].0,
            slab_lock_sleeps: s.locks[Rank::Slab as usize].1,
            slab_bytes: (s.slabs.slabs * crate::slab::SLAB_BYTES) as u64,
            slab_free_bytes: s.slabs.free_bytes as u64,
            arenas: s.arenas as u64,
            arenas_with_memory: s.arenas_with_memory as u64,
        }
    }

    pub fn current() -> Self {
        Self::from_snapshot(&snapshot())
    }
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct Mallinfo2 {
    pub arena: usize,
    pub ordblks: usize,
    pub smblks: usize,
    pub hblks: usize,
    pub hblkhd: usize,
    pub usmblks: usize,
    pub fsmblks: usize,
    pub uordblks: usize,
    pub fordblks: usize,
    pub keepcost: usize,
}

/// glibc's `struct mallinfo` (int fields, which wrap like glibc's).
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct Mallinfo {
    pub arena: i32,
    pub ordblks: i32,
    pub smblks: i32,
    pub hblks: i32,
    pub hblkhd: i32,
    pub usmblks: i32,
    pub fsmblks: i32,
    pub uordblks: i32,
    pub fordblks: i32,
    pub keepcost: i32,
}

pub fn mallinfo2() -> Mallinfo2 {
    let s = snapshot();
    let st = FitallocStats::from_snapshot(&s);
    Mallinfo2 {
        arena: s.heap.heap_bytes,
        // glibc always counts its top chunk.
        ordblks: (st.free_blocks as usize).max(1),
        // Blocks of at most `M_MXFAST` bytes waiting in a thread cache or
        // the depot, whose bytes are `fsmblks` below: free to the program,
        // and in glibc they would be fastbin chunks (its own thread cache
        // it counts as in use, but fitalloc's caches are its only
        // fastbins). `mallopt(M_MXFAST, 0)` makes both 0, as in glibc.
        smblks: s.threads.fast_blocks as usize,
        hblks: s.mapped_blocks,
        hblkhd: s.mapped_bytes,
        usmblks: 0,
        fsmblks: s.threads.fast_bytes as usize,
        uordblks: (st.in_use_bytes - st.mapped_bytes) as usize,
        // As in glibc, arena == uordblks + fordblks: the bytes that frame
        // each region (16) count as free.
        fordblks: s.heap.heap_bytes - (st.in_use_bytes - st.mapped_bytes) as usize,
        keepcost: s.top_bytes,
    }
}

pub fn mallinfo() -> Mallinfo {
    let m = mallinfo2();
    Mallinfo {
        arena: m.arena as i32,
        ordblks: m.ordblks as i32,
        smblks: m.smblks as i32,
        hblks: m.hblks as i32,
        hblkhd: m.hblkhd as i32,
        usmblks: m.usmblks as i32,
        fsmblks: m.fsmblks as i32,
        uordblks: m.uordblks as i32,
        fordblks: m.fordblks as i32,
        keepcost: m.keepcost as i32,
    }
}

unsafe extern "C" {
    /// The C library's `stderr` stream (a program may reopen it, or point
    /// it at another stream).
    static mut stderr: *mut libc::FILE;
    fn pthread_setcancelstate(state: i32, old: *mut i32) -> i32;
}

/// glibc's `PTHREAD_CANCEL_DISABLE`.
const PTHREAD_CANCEL_DISABLE: i32 = 1;

/// glibc's `malloc_stats()` layout, through the program's `stderr` stream
/// as glibc writes it. The figures are gathered first (each lock taken
/// and released in turn); the stream is written with no lock of ours
/// held, since stdio may allocate its buffer.
pub fn malloc_stats() {
    let snap = snapshot();
    let st = FitallocStats::from_snapshot(&snap);
    let mut b = Buf::<512>::new();
    let heap_in_use = st.in_use_bytes - st.mapped_bytes;
    let _ = writeln!(b, "Arena 0:");
    let _ = writeln!(b, "system bytes     = {:>10}", st.heap_bytes);
    let _ = writeln!(b, "in use bytes     = {:>10}", heap_in_use);
    let _ = writeln!(b, "Total (incl. mmap):");
    let _ = writeln!(b, "system bytes     = {:>10}", st.system_bytes);
    let _ = writeln!(b, "in use bytes     = {:>10}", st.in_use_bytes);
    let _ = writeln!(b, "max mmap regions = {:>10}", snap.peak_mapped_blocks);
    let _ = writeln!(b, "max mmap bytes   = {:>10}", st.peak_mapped_bytes);
    // SAFETY: `stderr` is the C library's, valid while the program runs
    // (read once, as glibc does); the buffer is ours.
    unsafe {
        let fp = (&raw const stderr).read();
        // Not a cancellation point, as in glibc (which marks the stream so):
        // a thread with a pending cancel request still writes it all.
        let mut old = 0;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut old);
        if fp.is_null() {
            b.write_to(2);
        } else {
            libc::fwrite(b.as_bytes().as_ptr() as *const libc::c_void, 1, b.as_bytes().len(), fp);
        }
        pthread_setcancelstate(old, &mut old);
    }
}

/// Writes a human-readable report of every figure to `fd`.
pub fn print_report(fd: i32) {
    let s = FitallocStats::current();
    let mut b = Buf::<2048>::new();
    let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 * 100.0 / b as f64 };
    let _ = writeln!(
        b,
        "fitalloc: heap {} B in {} of {} arenas (peak {}), mapped {} B in {} blocks (peak {}), in use {} B in {} blocks (peak {}), {:.1}% of system bytes",
        s.heap_bytes,
        s.arenas_with_memory,
        s.arenas,
        s.peak_heap_bytes,
        s.mapped_bytes,
        s.mapped_blocks,
        s.peak_mapped_bytes,
        s.in_use_bytes,
        s.in_use_blocks,
        s.peak_in_use_bytes,
        pct(s.in_use_bytes, s.system_bytes)
    );
    let _ = writeln!(
        b,
        "fitalloc: free {} B in {} blocks (largest {}), thread caches {} B in {} blocks ({} threads, {:.1}% of small mallocs served)",
        s.free_bytes,
        s.free_blocks,
        s.largest_free_block,
        s.cached_bytes,
        s.cached_blocks,
        s.threads,
        pct(s.cache_hits, s.cache_hits + s.cache_misses)
    );
    let t = crate::registry::totals();
    let each = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    let _ = writeln!(
        b,
        "fitalloc: thread cache trips: refills {} ({:.1} blocks each), overflows {} ({:.1} blocks each sent away)",
        s.cache_misses,
        // The block each refill handed out, and those it left cached.
        if s.cache_misses == 0 { 0.0 } else { 1.0 + each(t.refilled, s.cache_misses) },
        t.overflows,
        each(t.sent_away, t.overflows)
    );
    let sl = crate::process::slabs().counters;
    let _ = writeln!(
        b,
        "fitalloc: slabs {} ({} B), {} B free in them in {} blocks, {} B of them unusable",
        sl.slabs,
        sl.slabs * crate::slab::SLAB_BYTES,
        sl.free_bytes,
        sl.free_blocks,
        sl.slack_bytes()
    );
    let _ = writeln!(
        b,
        "fitalloc: calls: malloc {} free {} calloc {} realloc {} memalign {}; requested {} B",
        s.malloc_calls, s.free_calls, s.calloc_calls, s.realloc_calls, s.memalign_calls, s.requested_bytes
    );
    let _ = writeln!(
        b,
        "fitalloc: system calls: sbrk {} mmap {} munmap {} mremap {} madvise {}; {} B given back",
        s.sbrk_calls, s.mmap_calls, s.munmap_calls, s.mremap_calls, s.madvise_calls, s.trimmed_bytes
    );
    let _ = writeln!(
        b,
        "fitalloc: lock waits (futex sleeps): heap {} ({}) slab {} ({}) large {} ({}) registry {} ({}) other {} ({})",
        s.heap_lock_waits,
        s.heap_lock_sleeps,
        s.slab_lock_waits,
        s.slab_lock_sleeps,
        s.large_lock_waits,
        s.large_lock_sleeps,
        s.registry_lock_waits,
        s.registry_lock_sleeps,
        s.other_lock_waits,
        s.other_lock_sleeps
    );
    b.write_to(fd);
}

/// `malloc_info(0, fp)`: glibc's XML shape, one heap.
///
/// # Safety
/// `fp` must be a valid `FILE *` open for writing.
pub unsafe fn malloc_info(options: i32, fp: *mut libc::FILE) -> i32 {
    if options != 0 {
        // glibc returns the error number and leaves errno alone.
        return libc::EINVAL;
    }
    let snap = snapshot();
    let s = FitallocStats::from_snapshot(&snap);
    // glibc's fastbins: as mallinfo2's smblks and fsmblks.
    let (fast_blocks, fast_bytes) = (snap.threads.fast_blocks, snap.threads.fast_bytes);
    let mut b = Buf::<1024>::new();
    let _ = writeln!(b, "<malloc version=\"1\">");
    let _ = writeln!(b, "<heap nr=\"0\">");
    let _ = writeln!(b, "<sizes>\n</sizes>");
    let _ = writeln!(b, "<total type=\"fast\" count=\"{}\" size=\"{}\"/>", fast_blocks, fast_bytes);
    let _ = writeln!(b, "<total type=\"rest\" count=\"{}\" size=\"{}\"/>", s.free_blocks, s.free_bytes);
    let _ = writeln!(b, "<system type=\"current\" size=\"{}\"/>", s.heap_bytes);
    let _ = writeln!(b, "<system type=\"max\" size=\"{}\"/>", s.peak_heap_bytes);
    let _ = writeln!(b, "<aspace type=\"total\" size=\"{}\"/>", s.heap_bytes);
    let _ = writeln!(b, "<aspace type=\"mprotect\" size=\"{}\"/>", s.heap_bytes);
    let _ = writeln!(b, "</heap>");
    let _ = writeln!(b, "<total type=\"fast\" count=\"{}\" size=\"{}\"/>", fast_blocks, fast_bytes);
    let _ = writeln!(b, "<total type=\"rest\" count=\"{}\" size=\"{}\"/>", s.free_blocks, s.free_bytes);
    let _ = writeln!(b, "<total type=\"mmap\" count=\"{}\" size=\"{}\"/>", s.mapped_blocks, s.mapped_bytes);
    // As glibc's: the totals over the heaps, the large blocks' mappings
    // not included (they have their line above).
    let _ = writeln!(b, "<system type=\"current\" size=\"{}\"/>", s.heap_bytes);
    let _ = writeln!(b, "<system type=\"max\" size=\"{}\"/>", s.peak_heap_bytes);
    let _ = writeln!(b, "<aspace type=\"total\" size=\"{}\"/>", s.heap_bytes);
    let _ = writeln!(b, "<aspace type=\"mprotect\" size=\"{}\"/>", s.heap_bytes);
    let _ = writeln!(b, "</malloc>");
    // The text is NUL-free; fwrite may allocate the stream's buffer, which
    // is fine: no lock of ours is held here.
    // SAFETY: `fp` is valid (caller) and the buffer is ours.
    let n = unsafe { libc::fwrite(b.as_bytes().as_ptr() as *const libc::c_void, 1, b.as_bytes().len(), fp) };
    if n == b.as_bytes().len() { 0 } else { -1 }
}

/// Where the exit report goes: the `FITALLOC_STATS_FILE` file, or a copy
/// of stderr taken at start-up (many programs close stderr before the
/// library's destructors run), each on a high descriptor of ours.
static REPORT: crate::sync::Locked<crate::diag::OwnFd> = crate::sync::Locked::new(crate::sync::Rank::Report, crate::diag::OwnFd::none());

/// Keeps a descriptor for the exit report (when it is asked for).
pub fn keep_stderr() {
    if crate::options::OPT.stats_at_exit.load(Relaxed) {
        let own = match crate::options::stats_path() {
            Some(path) => match open_report_file(path) {
                fd if fd >= 0 => crate::diag::OwnFd::adopt(fd, false),
                _ => {
                    let mut b = crate::diag::Buf::<700>::new();
                    b.push_bytes(b"fitalloc: cannot open FITALLOC_STATS_FILE=");
                    b.push_bytes(path.to_bytes());
                    b.push_bytes(b"; the report goes to stderr\n");
                    b.write_to(2);
                    crate::diag::OwnFd::adopt(2, true)
                }
            },
            None => crate::diag::OwnFd::adopt(2, true),
        };
        *REPORT.lock() = own;
    }
}

/// Opens the `FITALLOC_STATS_FILE` file for appending; -1 on failure.
fn open_report_file(path: &core::ffi::CStr) -> i32 {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC;
    // SAFETY: `path` is NUL-terminated; open does not allocate.
    unsafe { libc::open(path.as_ptr(), flags, 0o644) }
}

/// Runs at exit (from `.fini_array`): the report, when asked for. It is
/// written only to a descriptor that still refers to the file it was
/// opened for: a program that closed it may have reused its number for a
/// file of its own. The stats file is opened again if the program closed
/// ours.
pub fn at_exit() {
    if crate::options::OPT.stats_at_exit.load(Relaxed) {
        let own = *REPORT.lock();
        if own.still_ours() {
            print_report(own.fd);
        } else if let Some(path) = crate::options::stats_path() {
            let fd = open_report_file(path);
            if fd >= 0 {
                print_report(fd);
                // SAFETY: the descriptor was opened just above.
                unsafe { libc::close(fd) };
            }
        }
    }
}
