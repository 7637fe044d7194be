//! Giving memory back to the system: on request (`malloc_trim`) and on its
//! own, after it stayed unused for a while (the decay).
//!
//! There is no background thread. The slow paths (a free that reaches the
//! heap or unmaps a large block) call [`maybe_decay`], which looks at the
//! clock every [`CHECK_EVERY`] calls (the coarse monotonic clock, a few
//! nanoseconds); once `FITALLOC_PURGE_MS` (default 1000) have passed since
//! the last decay it gives back:
//!
//! - the kept mappings of freed large blocks that were freed before the
//!   last decay ([`crate::large`]);
//! - the chains of cached blocks in the depot ([`crate::depot`]);
//! - when at least [`PURGE_MIN`] bytes reached the heap's free space since
//!   the last decay, and at least as many written bytes of it stayed free
//!   through the whole period ([`crate::heap::Heap::idle_dirty`]): the
//!   whole pages inside its large free blocks (madvise, as `malloc_trim`
//!   does), and the top beyond `M_TOP_PAD`. A program whose use swings
//!   within a period, freeing a lot and then allocating as much again,
//!   keeps its pages: giving back all the free space at whatever trough
//!   the decay fell on cost mimalloc-bench's rptest a fifth of its
//!   throughput in page faults (1.68 against 2.11 M operations a CPU
//!   second; 10,000-15,600 faults a run against 6,200-9,600:
//!   `bench/published/2026-12-03-threads-decay/rptest-decay.txt`).
//!
//! So memory freed and not reused comes back between one and two decay
//! periods later, whatever the program does next, as long as it keeps
//! calling the allocator. With `FITALLOC_PURGE_MS=0` every such call
//! decays at once.

use crate::options::OPT;
use crate::process::{each_heap, large};
use crate::registry::{drain_cache, my_cache};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Slow-path calls between two looks at the clock.
const CHECK_EVERY: usize = 64;
/// Bytes freed into the heap since the last decay below which the heap is
/// not walked for pages to give back.
const PURGE_MIN: usize = 1 << 20;

static CALLS: AtomicUsize = AtomicUsize::new(0);
/// When the last decay ran (ms), 0 before the first.
static LAST: AtomicU64 = AtomicU64::new(0);

/// malloc_trim: gives back the top beyond `pad`, the pages inside large
/// free blocks, and every kept mapping. True if anything was released.
pub fn trim(pad: usize) -> bool {
    let mut released = give_back_space("malloc_trim", pad);
    each_heap("malloc_trim", |h| {
        h.freed_since_purge = 0;
        // SAFETY: the heap is consistent between calls.
        released |= unsafe { h.purge_free_blocks() } > 0;
    });
    released
}

/// Gives back address space: this thread's cached blocks and the depot's
/// go home (they may sit between free blocks, or keep the top from
/// shrinking), empty
/// slabs go back to the heap, the kept mappings are unmapped, and the top
/// beyond `pad` is released. True
/// if any address space went back, so that a mapping that failed may now
/// succeed.
pub fn give_back_space(op: &'static str, pad: usize) -> bool {
    if let Some(t) = my_cache() {
        // SAFETY: this thread's own cache.
        unsafe { drain_cache(t, op) };
    }
    let chains = crate::process::flush_depot(op);
    let slabs = crate::process::release_empty_slabs(op);
    let any_kept = release_kept();
    let mut top = 0;
    // SAFETY: the heaps are consistent between calls.
    each_heap(op, |h| top += unsafe { h.trim_top(pad) });
    chains || any_kept || top > 0 || slabs > 0
}

/// Unmaps every mapping kept for reuse; true if there was one.
pub fn release_kept() -> bool {
    let mut l = large();
    if l.retained_bytes == 0 {
        return false;
    }
    let kept = l.expire(u64::MAX);
    drop(l);
    kept.unmap();
    true
}

/// Gives back memory that stayed unused for the decay time, if it is due.
/// Called by slow paths of C function `op`, with no lock held.
#[inline]
pub fn maybe_decay(op: &'static str) {
    let purge_ms = OPT.purge_ms.load(Relaxed);
    if purge_ms != 0 {
        // A plain load and store: a lost count between threads only delays
        // the next look at the clock.
        let n = CALLS.load(Relaxed).wrapping_add(1);
        CALLS.store(n, Relaxed);
        if !n.is_multiple_of(CHECK_EVERY) {
            return;
        }
    }
    let now = crate::os::now_ms();
    let last = LAST.load(Relaxed);
    if now.saturating_sub(last) < purge_ms as u64 || LAST.compare_exchange(last, now, Relaxed, Relaxed).is_err() {
        return;
    }
    decay(op, last, purge_ms == 0);
}

#[cold]
#[inline(never)]
fn decay(op: &'static str, last: u64, at_once: bool) {
    // Kept mappings freed before the previous decay have been unused for a
    // whole period at least.
    large().expire(if at_once { u64::MAX } else { last }).unmap();
    // The depot's chains go home: a thread that still wants them refills
    // from its slabs or the heap, which then hold them.
    crate::process::flush_depot(op);
    each_heap(op, |h| {
        let due = if at_once {
            h.freed_since_purge >= 1
        } else {
            h.freed_since_purge >= PURGE_MIN && h.idle_dirty() >= PURGE_MIN
        };
        if due {
            h.freed_since_purge = 0;
            let pad = h.params.top_pad;
            // SAFETY: the heap is consistent between calls.
            unsafe {
                h.trim_top(pad);
                h.purge_free_blocks();
            }
        }
        h.new_period(due);
    });
}
