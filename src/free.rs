//! The free path.
//!
//! - A block of at most 1 KiB (of a slab or the heap) on a thread with a
//!   cache: checked (page map, header tag; for a slab block the header's
//!   cached form, for a heap block its cache mark), then pushed on the cache
//!   ([`free`], inline). A full list first moves half of itself home
//!   ([`free_heap_block`]: slab blocks to their slabs, others to the heap).
//! - Everything else: [`free_slow`] resolves the pointer
//!   ([`crate::pointer`]), then gives a block back home, or unmaps a large
//!   block.

use crate::block::Block;
use crate::config::{MAX_HEAP_REQUEST, MIN_UNITS, TCACHE_MAX_UNITS};
use crate::diag;
use crate::large::Mapping;
use crate::options::OPT;
use crate::pointer::{self, held_cacheable, Held, Ptr};
use crate::process::{depot_put, large, release_blocks, release_heap_block, send_home};
use crate::registry::{count, my_cache, my_cache_for_free};
use crate::tcache::{self, Call, Chain, Tcache};
use core::sync::atomic::Ordering::Relaxed;

/// Frees `p` (non-null) for C function `func`.
#[inline(always)]
pub fn free(p: *mut u8, func: &'static str) {
    free_sized(p, func, 0)
}

/// Frees `p` (non-null) for C function `func`, which the program says
/// holds `size` bytes (C23's `free_sized`, C++'s sized `delete`; 0 for
/// `free`): a size larger than the block's usable size is reported (a
/// `delete` through a pointer to a larger type than the object's, for
/// one), not freed. (The hardened mode, which records the size asked for,
/// checks it exactly.)
///
/// The hit path checks the block ([`held_cacheable`]) and pushes it on
/// the thread cache; every other case leaves by a tail call to
/// [`free_slow`], so the hit path needs no stack frame.
#[inline(always)]
pub fn free_sized(p: *mut u8, func: &'static str, size: usize) {
    if let Some(t) = my_cache() {
        let b = Block::from_payload(p);
        // SAFETY: `held_cacheable` reads only memory the page map says is
        // ours; `push_freed` reads and writes the payload words of the
        // held block it found.
        unsafe {
            if let Some((units, h, _)) = held_cacheable(p, crate::sync::single_threaded())
                // (`size == 0 ||` spelled out: the comparison alone, with
                // `free`'s constant 0, cost its hit path a saved register.)
                && (size == 0 || size <= Block::payload_bytes(units))
                && t.push_freed(b, units, h)
            {
                tcache::add(&t.counters.calls[Call::Free as usize], 1);
                return;
            }
        }
    }
    free_slow(p, func, size)
}

/// Every free the hit path did not finish: the pointer is resolved (and
/// misuse reported) by [`crate::pointer`].
#[cold]
#[inline(never)]
fn free_slow(p: *mut u8, func: &'static str, size: usize) {
    // A thread that only frees (a consumer) gets a cache too: its frees
    // then go home in batches, or to the depot, not one by one.
    let t = my_cache_for_free();
    count(t, Call::Free, 0);
    let ptr = pointer::resolve(p, func);
    // (`size != 0 &&` spelled out: `free`'s 0 then skips the size's look-up.)
    if size != 0 && size > pointer::usable_bytes(ptr) {
        let what = if func.starts_with("operator") {
            "sized delete with a size larger than the block's at"
        } else {
            "a size larger than the block's at"
        };
        diag::fatal(func, what, p as usize);
    }
    match ptr {
        Ptr::Heap(b) => free_heap_block(b, t, func),
        Ptr::Large(_) => free_large(p as usize, func),
    }
}

/// Frees block `b`, which realloc has just moved out of, into cache `t`
/// when its list has room; otherwise, or when its header or cache mark is
/// no longer that of a held block, as [`free`] does (which reports the
/// misuse). realloc checked the block when it began; once the process has
/// a second thread, the header and the mark are checked again here, as
/// free's fast path would, because another thread may have freed the same
/// pointer during the copy (a race the program made): the block may be
/// free in the heap, or in a cache, by now, and must not be cached a second
/// time. With one thread nothing can have changed them (perl-hash: 2.7%
/// fewer allocator instructions per operation).
///
/// The old block's size counts as churning ([`Tcache::churning`]): a block
/// realloc moves out of is one such size's block going back while another
/// size's comes out, as a string or an array grows. Measured: perl-hash
/// 2.9% and py-json 2.0% fewer allocator instructions per operation,
/// utilization 0.903 -> 0.905 and 0.836 -> 0.838, and python3 with
/// `PYTHONMALLOC=malloc` at 64.7 MiB in 4 runs of 4 (64.6-66.1 without).
pub fn free_moved(b: Held, t: Option<&Tcache>, func: &'static str) {
    let blk = b.block();
    if let Some(t) = t {
        // SAFETY: `b` was a held block when realloc began, so its header
        // lies in a heap region; the payload words are read (by
        // `push_freed`) only once the header is a valid used header of a
        // cacheable size.
        unsafe {
            let h = blk.header();
            let units = crate::block::used_units(h);
            let cacheable = units.wrapping_sub(MIN_UNITS) <= TCACHE_MAX_UNITS - MIN_UNITS;
            if cacheable && crate::sync::single_threaded() {
                // No other thread exists to have freed the block since
                // realloc checked it: its header and mark are as they were.
                t.note_overflow(units);
                if t.has_room(units) {
                    t.push_header(blk, units, h);
                    return;
                }
            } else if cacheable && crate::block::is_used_header(blk.addr(), h) {
                t.note_overflow(units);
                if t.push_freed(blk, units, h) {
                    return;
                }
            }
        }
    }
    free(blk.payload(), func)
}

/// Frees held block `b` (of a slab or the heap) that the fast path did
/// not cache: half of a cache list goes first (to the depot, for another
/// thread, once the process has several; else home: [`release_blocks`],
/// the size then counting as churning) and `b` is cached. Without a cache,
/// or for a size the caches do not keep, `b` goes home.
///
/// A full list of a slab size that overflowed before grows instead
/// ([`Tcache::grow_list`]), and `b` is cached.
///
/// The half is `b`'s own list's, which is usually full. When it is not
/// and the cache's byte budget is what has no room, the half is the
/// list's holding the most bytes ([`Tcache::fullest`]): the budget is
/// spent only when the cache holds 256 KiB over at most 63 lists, so that
/// half is at least 2 KiB, room for any cached block. When neither is
/// short, `b` missed the fast path for where it lies (its payload is a
/// page's first address: the block after a slab's container); sending
/// half of its list home then too is kept on measurement: without it
/// python3 with `PYTHONMALLOC=malloc` peaked at 67.7 MiB instead of 64.7
/// (medians of 5), and no trace was faster.
///
/// Inlined into its one caller, [`free_slow`]: a block above the caches'
/// sizes (1-16 KiB) goes to its heap through one frame less, and a heap
/// block straight to [`release_heap_block`], without the page map look-up
/// that sorts slab blocks from heap blocks ([`Held`] knows which it is).
#[inline(always)]
fn free_heap_block(held: Held, t: Option<&Tcache>, func: &'static str) {
    let b = held.block();
    // SAFETY: a held block's header is valid. Its size field, not its size:
    // a big block (crate::block's big form) shrunk below the caches' limit
    // keeps a marker above it there, and must go back to the heap.
    let units = crate::block::used_units(unsafe { b.header() });
    if let Some(t) = t
        && units <= TCACHE_MAX_UNITS
    {
        if t.list_full(units) && t.grow_list(units) && t.has_room(units) {
            // SAFETY: this thread's cache, with room; `b` is a used block of
            // `units` (checked by the caller), checked again as below.
            unsafe {
                let h = b.header();
                if crate::block::is_used_header(b.addr(), h) && crate::block::used_units(h) == units && t.push_freed(b, units, h) {
                    return;
                }
                rewritten_fatal(b, h, units, func)
            }
        }
        let own = t.list_full(units) || t.budget_has_room(units);
        let cut = if own { units } else { t.fullest().unwrap_or(units) };
        let half = t.count(cut).div_ceil(2).min(64);
        if !t.has_room(units) {
            // An overflow (not a free that only missed the fast path).
            tcache::add(&t.slow.overflows, 1);
            tcache::add(&t.slow.sent_away, half as u64);
        }
        if own {
            t.note_overflow(units);
        }
        if !crate::sync::single_threaded() {
            // The half is cut off, `b` cached, and only then the half passed
            // on: that may wait for a lock, while another thread's free of
            // `b` (a double free the program races) could give `b`'s
            // memory back to the system; `b` is written right after the
            // look-up that checked it (found by a hostile review: a fault
            // in the push after a wait).
            // Another thread may have cached `b` since it was checked (its
            // free took the fast path): `push_freed` looks at the mark again
            // and refuses it then.
            let chain = cut_chain(t, cut, half, func);
            let room = t.has_room(units);
            // SAFETY: this thread's cache; `b` is a used block of `units`
            // (checked by the caller) and `h` its header.
            // A header no longer in the used form: another thread cached
            // the block (or freed it) since it was checked.
            let cached = room && unsafe {
                let h = b.header();
                crate::block::is_used_header(b.addr(), h) && crate::block::used_units(h) == units && t.push_freed(b, units, h)
                    || rewritten_fatal(b, h, units, func)
            };
            if let Some(chain) = chain {
                pass_on(cut, chain, func);
            }
            if cached {
                return;
            }
        } else {
            drain_home(t, cut, half, func);
            if t.has_room(units) {
                // SAFETY: this thread's cache, with room; `b` is held. Its
                // header is read and checked again: a signal handler run
                // during the drain may have written over it, or freed `b`
                // (found by a hostile review).
                unsafe {
                    let h = b.header();
                    if crate::block::is_used_header(b.addr(), h) && crate::block::used_units(h) == units {
                        t.push_header(b, units, h);
                        return;
                    }
                    rewritten_fatal(b, h, units, func)
                }
            }
        }
    }
    // SAFETY: `b` is held, and the program gives it up.
    unsafe {
        if held.in_slab() {
            release_blocks(func, &[b]);
        } else {
            release_heap_block(func, b);
        }
    }
    crate::trim::maybe_decay(func);
}

/// Reports held block `b` of `units`, checked when its free began, whose
/// header `h` (as last read) is no longer a used header of `units` when
/// it is cached: freed meanwhile (a double free), or written over.
#[cold]
fn rewritten_fatal(b: Block, h: u32, units: u32, func: &'static str) -> ! {
    if crate::block::is_used_header(b.addr(), h) && crate::block::used_units(h) != units {
        diag::fatal(func, "heap overflow into the header of a held block (its header was overwritten) at", b.payload() as usize)
    }
    diag::fatal(func, pointer::double_free_text(func), b.payload() as usize)
}

/// Cuts the first `n` blocks off this thread's full list `units` as one
/// chain, if it has any.
fn cut_chain(t: &Tcache, units: u32, n: usize, func: &'static str) -> Option<Chain> {
    // SAFETY: this thread's cache.
    match unsafe { t.take_chain(units, n) } {
        Ok(chain) => chain,
        Err(tcache::CacheFault::Corrupted(a)) => diag::fatal(func, "corrupted thread cache at", a),
    }
}

/// Puts `chain` (of blocks of `units`, cut off a thread's list) in the
/// depot, for another thread's cache ([`crate::depot`]); home when the
/// depot has no room.
fn pass_on(units: u32, chain: Chain, func: &'static str) {
    if let Err(chain) = depot_put(units, chain) {
        send_home(func, units, chain);
    }
}

/// Gives the first `half` blocks of this thread's list `units` back home
/// (their slab or heap).
fn drain_home(t: &Tcache, units: u32, half: usize, func: &'static str) {
    let mut out = [Block::NULL; 64];
    let mut k = 0;
    // SAFETY: this thread's cache, whose blocks are held blocks.
    let r = unsafe {
        t.drain(units, half, &crate::process::REGIONS, |c| {
            out[k] = c;
            k += 1;
        })
    };
    if let Err(tcache::CacheFault::Corrupted(a)) = r {
        diag::fatal(func, "corrupted thread cache at", a);
    }
    // SAFETY: the drained blocks left the cache, checked.
    unsafe { release_blocks(func, &out[..k]) };
}

/// Frees the large block whose payload is `a` (resolved by the caller; a
/// racing second free is caught here, under the table's lock).
pub fn free_large(a: usize, func: &'static str) {
    let removed = large().remove(a);
    let Some(m) = removed else { diag::fatal(func, pointer::double_free_text(func), a) };
    release_large(m, func);
}

/// Gives back mapping `m` of a large block already out of the table: kept
/// for reuse ([`crate::large::keep`], outside the table's lock: it may
/// make a system call) or unmapped.
pub fn release_large(m: Mapping, func: &'static str) {
    if crate::large::keep(m) {
        let evicted = large().retain(m, crate::os::now_ms());
        evicted.unmap();
    } else {
        // SAFETY: the mapping is out of the table, and no block uses it.
        unsafe { crate::os::unmap(m.base, m.len) };
    }
    raise_mmap_threshold(m.base + m.len - m.payload);
    crate::trim::maybe_decay(func);
}

/// glibc's dynamic threshold: after a mapped block of `size` usable bytes
/// is freed, blocks up to that size come from the heap (unless the
/// program chose thresholds itself), as far as the heap's small form
/// holds them. A block asked for within a page of that limit has a usable
/// size above it (its mapping is whole pages): such a free raises the
/// threshold to the limit. Without that, a loop that mallocs, fills and
/// frees 1023 KiB kept a mapping, and closed and opened it every round
/// ([`crate::large::keep`]): 11.6 µs a round against glibc's 0.75.
fn raise_mmap_threshold(size: usize) {
    // The block bytes of the largest request the heap's small form holds.
    let heap_max = crate::block::units_to_bytes(crate::config::request_units(MAX_HEAP_REQUEST));
    let page = OPT.page.load(Relaxed);
    if OPT.dynamic_threshold.load(Relaxed) && size > OPT.mmap_threshold.load(Relaxed) && size <= heap_max + page {
        let t = size.min(heap_max + 1);
        OPT.mmap_threshold.store(t, Relaxed);
        OPT.trim_threshold.store(2 * t, Relaxed);
        crate::process::sync_params();
    }
}
