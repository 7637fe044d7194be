//! realloc: a hit path for the sizes the thread caches keep (in place
//! within a unit, or a move to a cached block, the old one cached); then in
//! place when the heap block's neighbours allow (shrink, grow into a free
//! neighbour or the top, slide into a free predecessor), with mremap for
//! large blocks, and by moving otherwise.

use crate::alloc::{after_growth, alloc_block, alloc_plain, alloc_plain_elsewhere, wants_mapping, TCACHE_MAX_REQUEST};
use crate::block::Block;
use crate::config::{self, ALIGN, MIN_UNITS, TCACHE_MAX_UNITS};
use crate::diag;
use crate::free::{free_moved, release_large};
use crate::large::Mapping;
use crate::options::OPT;
use crate::pointer::{self, held_cacheable, held_unmarked, Held, Ptr};
use crate::process::{heap_of, large};
use crate::registry::{count, my_cache, served};
use crate::tcache::{CacheFault, Call};
use core::sync::atomic::Ordering::Relaxed;

/// Resizes `p` (non-null) to `n` (non-zero) bytes; null (with `p` intact)
/// when out of memory.
///
/// The hit path: a block of a size the thread caches keep, checked as
/// `free`'s hit path checks it ([`held_cacheable`]), stays where it is when
/// its size is within a unit of the request, and otherwise, when it grows
/// or shrinks to a size the cache has a block of and its own size's list
/// has room, moves to that block and is cached itself: no lock, no look-up
/// beyond the page map, no neighbour read. (A shrink went to the heap,
/// which split the block and merged its tail under the lock: a realloc
/// that took a 160-byte block to 60 bytes and back took 568 instructions
/// a call, glibc's 386, mimalloc's 200. Shrinking by moving is what
/// jemalloc, mimalloc and tcmalloc do for a smaller size class.) A block it checked but could not
/// move goes on to the general path ([`realloc_checked`]) without being
/// looked up again; every other case leaves by a tail call to
/// [`realloc_slow`]. (perl-hash's replay, whose strings grow a few
/// bytes at a time, reallocs 281,000 times; it spent 58% of the
/// allocator's instructions there, 96 of them per call resolving the
/// pointer.)
#[inline(always)]
pub fn realloc(p: *mut u8, n: usize) -> *mut u8 {
    if n <= TCACHE_MAX_REQUEST
        && let Some(t) = my_cache()
    {
        let alone = crate::sync::single_threaded();
        // SAFETY: `held_cacheable` reads only memory the page map says is
        // ours; the cache's methods are its owner's calls.
        unsafe {
            if let Some((have, h, slab)) = held_cacheable(p, alone) {
                let want = config::request_units(n);
                let b = Block::from_payload(p);
                if want <= have && have - want < MIN_UNITS {
                    // A cached block whose header an overflow put back in
                    // the used form still carries the cache's mark.
                    held_unmarked(b, h, slab, "realloc");
                    count(Some(t), Call::Realloc, n);
                    return p;
                }
                if t.has_room(have)
                    && let Some(nb) = t.pop(want).unwrap_or_else(|CacheFault::Corrupted(a)| crate::alloc::cache_fault(Call::Realloc, a))
                {
                    let q = nb.payload();
                    // `p` is cached before it is copied, not after: from
                    // then on a free of it on another thread (a double free
                    // the program races) finds it cached and is reported,
                    // and no malloc hands it out, however long the copy
                    // takes. (Cached after the copy, a free and a malloc of
                    // it on another thread meanwhile left its header and
                    // mark as they were, and it was cached while that
                    // thread held it: found by a hostile review.) Its first
                    // three words, where the cache writes, are kept aside.
                    let (w0, w1, w2) = (b.payload_word(0), b.payload_word(1), b.payload_word(2));
                    // The mark found: it was cached already (freed). No
                    // room is not why: checked above.
                    if !t.push_freed(b, have, h) {
                        diag::fatal("realloc", pointer::double_free_text("realloc"), p as usize);
                    }
                    const KEPT: usize = 3 * core::mem::size_of::<usize>();
                    let keep = Block::payload_bytes(have.min(want));
                    core::ptr::copy_nonoverlapping(p.add(KEPT), q.add(KEPT), keep - KEPT);
                    nb.set_payload_word(0, w0);
                    nb.set_payload_word(1, w1);
                    nb.set_payload_word(2, w2);
                    count(Some(t), Call::Realloc, n);
                    return q;
                }
                // Checked already: the general path, without resolving
                // the pointer again.
                return realloc_checked(b, h, slab, n);
            }
        }
    }
    realloc_slow(p, n)
}

/// realloc of a block the hit path checked (used header `h`) but could not
/// finish.
#[inline(never)]
fn realloc_checked(b: Block, h: u32, slab: bool, n: usize) -> *mut u8 {
    count(my_cache(), Call::Realloc, 0);
    served(n, realloc_heap(held_unmarked(b, h, slab, "realloc"), n))
}

/// Every realloc the hit path did not finish: the pointer is resolved
/// (and misuse reported) by [`crate::pointer`].
#[cold]
#[inline(never)]
fn realloc_slow(p: *mut u8, n: usize) -> *mut u8 {
    count(my_cache(), Call::Realloc, 0);
    let q = match pointer::resolve(p, "realloc") {
        Ptr::Heap(b) => realloc_heap(b, n),
        Ptr::Large(m) => realloc_large(m, n),
    };
    served(n, q)
}

/// realloc of held heap block `b`: in place when its neighbours allow. A
/// small-form block does so up to [`config::MAX_HEAP_REQUEST`] (beyond, the
/// request wants a mapping: it moves); a big block, in the heap because no
/// mapping could be made, to any size the heap holds.
fn realloc_heap(held: Held, n: usize) -> *mut u8 {
    let b = held.block();
    let p = b.payload();
    // `resolve` checked the header; it is read again for the size, and,
    // once the process has a second thread, checked again, because another
    // thread may have freed the same pointer since (a race the program
    // made): a size read from a free header would send the copy below past
    // the heap.
    // SAFETY: the header of a block that was held lies in a heap region.
    if !crate::sync::single_threaded() && !crate::block::is_block_header(b.addr(), unsafe { b.header() }) {
        diag::fatal("realloc", pointer::double_free_text("realloc"), p as usize);
    }
    // SAFETY: a held block's header is valid (a big block's checked whole).
    let (have, big) = unsafe { (b.units(), b.held_span().2) };
    let old_bytes = Block::payload_bytes(have);
    let slab = held.in_slab();
    if n <= config::MAX_HEAP_REQUEST || (big && n <= config::MAX_BIG_REQUEST) {
        let want = config::request_units(n);
        // A slab block cannot be split: it keeps its size when it shrinks
        // to at least half of it, and moves otherwise (a string built in
        // a large buffer and shrunk to its length must not keep the
        // buffer: measured, py-json's utilization fell by 12% when every
        // shrink stayed in place).
        if want <= have && (have - want < MIN_UNITS || slab && 2 * want >= have) {
            return p;
        }
        // A small block the thread's cache has a block for moves there
        // without the heap's lock; the old block goes to the cache.
        if let Some(t) = my_cache()
            && n <= TCACHE_MAX_REQUEST
            && have <= TCACHE_MAX_UNITS
            && t.count(want) > 0
        {
            let claim = Claim::take(b);
            // SAFETY: this thread's cache, with a block of `want`.
            if let Some(nb) = unsafe { t.pop(want) }.unwrap_or_else(|CacheFault::Corrupted(a)| crate::alloc::cache_fault(Call::Realloc, a)) {
                let q = nb.payload();
                // SAFETY: both blocks are held (the old one claimed); the
                // kept bytes fit in each.
                unsafe { core::ptr::copy_nonoverlapping(p, q, old_bytes.min(n)) };
                claim.release();
                free_moved(held, Some(t), "realloc");
                return q;
            }
            claim.release();
        }
        if slab {
            return move_block(held, old_bytes.min(n), n);
        }
        let mut h = heap_of(b, "realloc");
        if crate::process::cached_meanwhile(b) {
            drop(h);
            diag::fatal("realloc", pointer::double_free_text("realloc"), p as usize);
        }
        let growths = h.growths;
        // SAFETY: `b` is a held heap block; the kept bytes fit in it.
        let resized = unsafe { h.resize(b, want, old_bytes.min(n)) };
        if let Some(nb) = resized {
            let grew = h.growths != growths;
            drop(h);
            after_growth(grew);
            return nb.payload();
        }
        // It moves. With one thread, the new block comes from the same heap
        // under the same lock (one lock round instead of two: perl-hash's
        // replay moves 74,000 blocks so), unless it wants a mapping (the
        // general path). When that heap has no room, the other arenas and
        // memory given back ([`alloc_plain_elsewhere`]). With threads the
        // old block is claimed first
        // ([`move_block`]), outside the lock: a double free that a claim
        // finds is reported with no lock held.
        let here = crate::sync::single_threaded() && !wants_mapping(n, ALIGN);
        // SAFETY: the heap is consistent between calls.
        let g = if here { unsafe { h.alloc(want) } } else { None };
        let grew = h.growths != growths;
        drop(h);
        after_growth(grew);
        if here {
            crate::trim::maybe_decay("realloc");
            let q = match g {
                Some(g) => g.block.payload(),
                // That heap, growth included, had no room: the rest of the
                // general path, without asking it again.
                None => alloc_plain_elsewhere(crate::process::arena_of(b.addr()), n, false, Call::Realloc),
            };
            if q.is_null() {
                return q;
            }
            // No other thread exists to claim the old block from.
            return finish_move(held, Claim(None), q, old_bytes.min(n));
        }
    }
    move_block(held, old_bytes.min(n), n)
}

/// realloc by moving held block `held`: a new block of `n` bytes, the
/// first `keep` bytes copied, then the old one freed. Null (the old block
/// untouched) when no memory. The old block is claimed ([`Claim`]) from
/// before the new one is sought until it is freed.
fn move_block(held: Held, keep: usize, n: usize) -> *mut u8 {
    let b = held.block();
    let claim = Claim::take(b);
    let q = alloc_plain(my_cache(), n, false, Call::Realloc);
    if q.is_null() {
        claim.release();
        return q;
    }
    finish_move(held, claim, q, keep)
}

/// The end of a move of held block `held`, claimed by `claim`, to the new
/// block at `q`: the first `keep` bytes copied, then the old block freed
/// (into its heap, or this thread's cache for a size it keeps). Returns `q`.
fn finish_move(held: Held, claim: Claim, q: *mut u8, keep: usize) -> *mut u8 {
    let b = held.block();
    // SAFETY: both blocks are held (the old one claimed); `keep` fits in
    // each.
    unsafe { core::ptr::copy_nonoverlapping(b.payload(), q, keep) };
    // SAFETY: a held block's header is valid (a big block's checked whole).
    if unsafe { b.units() } > TCACHE_MAX_UNITS {
        // Freed into its heap with the claim given back under the heap's
        // lock: a free of it on another thread then finds it claimed, or
        // waits for the lock and finds it freed. (Given back before, such a
        // free could pass its look-up in between and was named an invalid
        // pointer.)
        claim.release_into_heap(b);
        crate::trim::maybe_decay("realloc");
    } else {
        claim.release();
        free_moved(held, my_cache(), "realloc");
    }
    q
}

/// A held heap block that realloc moves, claimed for the time it takes
/// (with other threads; with one there is no one to claim it from): its
/// header in the cached form ([`Block::claim`]), so that a free or realloc
/// of it on another thread meanwhile (a double free the program races) is
/// reported. Unclaimed, the block's header and mark could return to what
/// they were when realloc checked them (that thread frees the block and
/// mallocs it back while this one waits to make the new block or copies
/// the old one) and realloc then freed the block the other thread held:
/// one block handed out twice (found by two hostile reviews, the waits
/// made with a signal). A big block (above 1 MiB in the heap, only where no
/// mapping could be made) is not claimed: its header has no cached form
/// the heap checker accepts.
struct Claim(Option<Block>);

impl Claim {
    /// Claims `b`, or reports a double free when another thread freed it
    /// since it was checked.
    fn take(b: Block) -> Claim {
        if crate::sync::single_threaded() {
            return Claim(None);
        }
        // SAFETY: `b` is a block of a heap region whose header was checked
        // (the caller's); once claimed, no other thread frees it.
        unsafe {
            let h = b.header();
            if crate::block::is_used_header(b.addr(), h) && !crate::block::is_big_body(h) {
                if b.claim(h) {
                    return Claim(Some(b));
                }
            } else if crate::block::is_block_header(b.addr(), h) {
                return Claim(None);
            }
        }
        diag::fatal("realloc", pointer::double_free_text("realloc"), b.payload() as usize)
    }

    /// Gives the claim back: the header's used form again, for the free
    /// that follows.
    fn release(self) {
        if let Some(b) = self.0 {
            // SAFETY: this thread claimed `b`.
            unsafe { b.unclaim() };
        }
    }

    /// Frees held block `b`, this claim's, into its heap: the claim is
    /// given back under the heap's lock, right before the free.
    fn release_into_heap(self, b: Block) {
        let mut h = heap_of(b, "realloc");
        // SAFETY: this thread claimed `b` (if anyone did) and holds it; the
        // heap's lock is held, so its memory stays in the heap.
        unsafe {
            if self.0.is_some() {
                b.unclaim();
            }
            h.free(b);
        }
    }
}

/// realloc of large block `m`: to the heap when it becomes small, else
/// mremap (in place or moving), else a fresh block and a copy.
fn realloc_large(m: Mapping, n: usize) -> *mut u8 {
    let a = m.payload;
    let page = OPT.page.load(Relaxed);
    let usable = m.usable(page);
    let offset = a - m.base;
    // Small enough for the heap: move there, so the mapping can go.
    if !wants_mapping(n, ALIGN) && n < usable {
        let q = move_large(m, n, n);
        if !q.is_null() {
            return q;
        }
    }
    let Some(new_len) = n.checked_add(offset).and_then(|v| config::checked_round_up(v, page)) else {
        return core::ptr::null_mut();
    };
    if new_len > isize::MAX as usize {
        return core::ptr::null_mut();
    }
    if new_len == m.len {
        return a as *mut u8;
    }
    match remap(m, new_len) {
        Some(nm) => nm.payload as *mut u8,
        // mremap failed; a fresh block and a copy may still work.
        None => move_large(m, usable.min(n), n),
    }
}

/// realloc of large block `m` by moving it: a new block of `n` bytes with
/// the first `keep` bytes copied; null (the block as it was) when no
/// memory. The block leaves the table before the copy, as [`remap`] makes
/// it: a free of it on another thread meanwhile (a double free the
/// program races) is then reported, instead of unmapping the memory being
/// copied (found by a hostile review: a fault in the copy).
fn move_large(m: Mapping, keep: usize, n: usize) -> *mut u8 {
    {
        let mut l = large();
        if !l.reserve() || l.remove(m.payload).is_none() {
            drop(l);
            diag::fatal("realloc", pointer::double_free_text("realloc"), m.payload);
        }
    }
    let q = alloc_block(n, ALIGN, false, false, Call::Realloc);
    if q.is_null() {
        let back = large().insert(m);
        assert!(back, "room was reserved");
        return q;
    }
    // SAFETY: the mapping is ours alone now (out of the table), and `q` a
    // new block; `keep` fits in each.
    unsafe { core::ptr::copy_nonoverlapping(m.payload as *const u8, q, keep) };
    release_large(m, "realloc");
    q
}

/// Grows mapping `m` to `new_len` bytes in place, into the kept mapping
/// that begins where it ends: the tail left beside the block when a kept
/// mapping was split for it ([`crate::large::fit`]). No mremap (which
/// finds that range taken and moves the block), only the part taken
/// opened. A buffer grown step by step after a larger one was freed
/// (sqlite's replay: a block reallocated from 4 KiB to 2 MiB by
/// doubling, twice) otherwise moved at every step, and the tail it left
/// stayed resident beside each new mapping. `None` when no kept mapping
/// that long begins there, or the part could not be opened (it is gone
/// then) or recorded.
fn grow_into_kept(m: Mapping, new_len: usize) -> Option<Mapping> {
    let end = m.base + m.len;
    let part = {
        let mut l = large();
        if !l.reserve_range(m.base, m.base + new_len) {
            return None;
        }
        l.take_kept_at(end, new_len - m.len)?
    };
    if !crate::large::open(part) {
        return None;
    }
    let nm = Mapping { len: new_len, ..m };
    let mut l = large();
    if !l.reserve() || l.remove(m.payload).is_none() {
        drop(l);
        // SAFETY: the part is ours alone, out of the kept list.
        unsafe { crate::os::unmap(part.base, part.len) };
        diag::fatal("realloc", pointer::double_free_text("realloc"), m.payload);
    }
    let recorded = l.insert(nm);
    assert!(recorded, "room was reserved");
    Some(nm)
}

/// Resizes mapping `m` to `new_len` bytes, in place if possible, else by
/// moving it; `None` (with `m` unchanged) when neither works.
///
/// The block leaves the table while its mapping changes: as soon as mremap
/// returns, the old range may be another thread's new mapping, whose
/// entries must not be taken for ours. The page map's room for the new
/// range is made first (a moving remap goes to a place reserved for it),
/// so that recording the result cannot fail.
fn remap(m: Mapping, new_len: usize) -> Option<Mapping> {
    if new_len > m.len
        && !m.guarded
        && let Some(nm) = grow_into_kept(m, new_len)
    {
        return Some(nm);
    }
    let offset = m.payload - m.base;
    let in_place_ok = large().reserve_range(m.base, m.base + new_len.max(m.len));
    let target = if new_len > m.len {
        // Somewhere to move to, should growing in place fail.
        crate::os::map_accounted(new_len).filter(|&t| {
            let ok = large().reserve_range(t, t + new_len);
            if !ok {
                // SAFETY: our fresh mapping, unused.
                unsafe { crate::os::unmap(t, new_len) };
            }
            ok
        })
    } else {
        None
    };
    {
        let mut l = large();
        if !l.reserve() || l.remove(m.payload).is_none() {
            drop(l);
            if let Some(t) = target {
                // SAFETY: our fresh mapping, unused.
                unsafe { crate::os::unmap(t, new_len) };
            }
            diag::fatal("realloc", pointer::double_free_text("realloc"), m.payload);
        }
    }
    // SAFETY: `[base, base + len)` is the block's whole mapping, now ours
    // alone; `target` is our own reserved mapping of `new_len`.
    let moved = unsafe {
        let grown = if in_place_ok { crate::os::remap(m.base, m.len, new_len, false) } else { None };
        match (grown, target) {
            (Some(b), t) => {
                if let Some(t) = t {
                    crate::os::unmap(t, new_len);
                }
                Some(b)
            }
            (None, Some(t)) => {
                let r = crate::os::remap_to(m.base, m.len, new_len, t);
                if r.is_none() {
                    crate::os::unmap(t, new_len);
                }
                r
            }
            (None, None) => None,
        }
    };
    let nm = match moved {
        Some(b) => Mapping { payload: b + offset, base: b, len: new_len, guarded: m.guarded },
        None => m,
    };
    let recorded = large().insert(nm);
    assert!(recorded, "room was reserved");
    moved.map(|_| nm)
}
