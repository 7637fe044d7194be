//! The allocation path: malloc and calloc (one fast path, zeroing as a
//! parameter), the aligned calls, and the hardened mode's block source.
//!
//! - A small request on a thread with a cache pops the cache's list for its
//!   size ([`alloc`], inline). An empty list refills from the heap
//!   ([`refill`]): the best fit plus a few more blocks of the same size,
//!   under one lock.
//! - Everything else goes through [`alloc_slow`], which makes the thread's
//!   cache on its first call, then serves the request from the cache, the
//!   heap or a mapping of its own ([`alloc_block`]; the policy is
//!   [`wants_mapping`]).

use crate::block::{units_to_bytes, Block};
use crate::config::{self, ALIGN, MAX_BIG_REQUEST, MAX_HEAP_REQUEST, TCACHE_MAX_UNITS};
use crate::diag;
use crate::heap::Grant;
use crate::large;
use crate::options::OPT;
use crate::process::{arenas, depot_take, heap, large, my_arena, slab_take};
use crate::slab::SLAB_MAX_UNITS;
use crate::registry::{count, my_cache, my_cache_or_new, served};
use crate::tcache::{self, Call, Tcache};
use core::sync::atomic::Ordering::Relaxed;

/// Largest request served from a thread cache.
pub(crate) const TCACHE_MAX_REQUEST: usize = Block::payload_bytes(TCACHE_MAX_UNITS);

/// Blocks a thread cache takes from the heap at once when it runs dry.
const REFILL: usize = 8;

pub fn call_name(call: Call) -> &'static str {
    match call {
        Call::Malloc => "malloc",
        Call::Free => "free",
        Call::Calloc => "calloc",
        Call::Realloc => "realloc",
        Call::Memalign => "memalign",
    }
}

/// Allocates `n` bytes (zeroed if `zero`) for C function `call`; null with
/// errno `ENOMEM` when out of memory (`n` may be anything, even above
/// `PTRDIFF_MAX`).
///
/// The hit path pops the thread cache's list for the size and returns;
/// every other case leaves by a tail call, so the hit path needs no stack
/// frame.
#[inline(always)]
pub fn alloc(n: usize, call: Call, zero: bool) -> *mut u8 {
    if n <= TCACHE_MAX_REQUEST
        && let Some(t) = my_cache()
    {
        let units = config::request_units(n);
        // SAFETY: this thread's cache; it holds blocks of our heap.
        match unsafe { t.pop(units) } {
            Ok(Some(b)) => {
                count(Some(t), call, n);
                if zero {
                    clear(b.payload(), Block::payload_bytes(units));
                }
                return b.payload();
            }
            Ok(None) => return refill(t, n, call, zero),
            Err(tcache::CacheFault::Corrupted(a)) => cache_fault(call, a),
        }
    }
    alloc_slow(n, call, zero)
}

/// Ends the process on a cache list that failed its checks at `a`: every
/// caller of [`Tcache::pop`] must, because `pop` has already put the head's
/// header back in its used form when its seal fails (a caller that went on
/// would leave a double free of that block unseen).
#[cold]
#[inline(never)]
pub(crate) fn cache_fault(call: Call, a: usize) -> ! {
    diag::fatal(call_name(call), "corrupted thread cache at", a)
}

/// Reports block `b`, taken for this thread's cache, whose header was
/// written over between its taking and its caching ([`Tcache::push`]).
#[cold]
fn overwritten_fatal(call: Call, b: Block) -> ! {
    diag::fatal(call_name(call), "heap overflow into the header of a free block (its header was overwritten) at", b.payload() as usize)
}

/// `p`, or null with errno `ENOMEM` when `p` is null.
#[inline(always)]
fn or_enomem(p: *mut u8) -> *mut u8 {
    if p.is_null() {
        // SAFETY: this thread's errno slot.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
    }
    p
}

#[cold]
#[inline(never)]
fn alloc_slow(n: usize, call: Call, zero: bool) -> *mut u8 {
    if n > isize::MAX as usize {
        return or_enomem(core::ptr::null_mut());
    }
    let t = my_cache_or_new();
    count(t, call, 0);
    if let Some(t) = t
        && n <= TCACHE_MAX_REQUEST
    {
        // SAFETY: as in `alloc`.
        match unsafe { t.pop(config::request_units(n)) } {
            Ok(Some(b)) => {
                if zero {
                    clear(b.payload(), Block::payload_bytes(config::request_units(n)));
                }
                return served(n, b.payload());
            }
            Ok(None) => {}
            Err(tcache::CacheFault::Corrupted(a)) => cache_fault(call, a),
        }
        // A thread's first small block comes from its own slab, as the
        // ones after it will, not from the heap that all threads share (it
        // is the block a thread that allocates and frees one block keeps
        // reusing: beside another thread's, their cache line would bounce).
        return served(n, or_enomem(refill_block(t, n, call, zero)));
    }
    or_enomem(served(n, alloc_plain(t, n, zero, call)))
}

/// A block of `n` bytes (aligned to [`ALIGN`]) that no thread cache
/// serves: from this thread's arena's heap at once when the request wants
/// no mapping and that heap has room or can grow (a 1-16 KiB block, a
/// block realloc moves), else by the rest of the general path (the other
/// arenas, and memory given back: [`alloc_plain_elsewhere`]), or the
/// general path itself for a request that wants a mapping
/// ([`alloc_block`]).
/// One frame where the general path has three (with the heap's own
/// `alloc_in` inlined too): measured with the other cuts of its commit,
/// `bench/micro -m 400` 13% fewer instructions (callgrind).
#[inline]
pub fn alloc_plain(t: Option<&Tcache>, n: usize, zero: bool, call: Call) -> *mut u8 {
    if !wants_mapping(n, ALIGN) {
        crate::trim::maybe_decay(call_name(call));
        let mine = my_arena(t);
        let p = heap_block_in(mine, n, ALIGN, zero, true, call);
        if !p.is_null() {
            return p;
        }
        return alloc_plain_elsewhere(mine, n, zero, call);
    }
    alloc_block(n, ALIGN, zero, false, call)
}

/// A small request that found its cache list empty: the best fit from the
/// heap, plus up to `REFILL - 1` more blocks of the same size for the cache
/// (free blocks of exactly that size, or, in an allocation burst, pieces of
/// the top), all under one lock. Null with errno `ENOMEM` when out of
/// memory.
#[inline(never)]
fn refill(t: &Tcache, n: usize, call: Call, zero: bool) -> *mut u8 {
    count(Some(t), call, n);
    or_enomem(refill_block(t, n, call, zero))
}

/// [`fill_list`], counting the blocks it left in the cache
/// ([`tcache::SlowCounters`]).
fn refill_block(t: &Tcache, n: usize, call: Call, zero: bool) -> *mut u8 {
    let units = config::request_units(n);
    let before = t.count(units);
    let p = fill_list(t, n, call, zero);
    tcache::add(&t.slow.refilled, t.count(units).saturating_sub(before) as u64);
    p
}

/// A block for a small request that found its cache list empty, and more
/// of its size for the list: from the depot, the heap's fragments, a
/// slab or the heap.
fn fill_list(t: &Tcache, n: usize, call: Call, zero: bool) -> *mut u8 {
    let units = config::request_units(n);
    // Before the decay, which may send the depot's chains home.
    if let Some(p) = refill_from_depot(t, units, zero, call) {
        return p;
    }
    crate::trim::maybe_decay(call_name(call));
    if units <= SLAB_MAX_UNITS {
        // The heap's fragments are shared by every thread: blocks two
        // threads take from neighbouring fragments could share a cache
        // line. So they serve small requests only while the process has one
        // thread; after that each thread's small blocks come from slabs of
        // its own.
        //
        // A size that churns (its list overflowed home: its blocks go
        // back and forth) takes slabs even then: for it the heap is only
        // a slow cache.
        if crate::sync::single_threaded()
            && !t.churning(units)
            && let Some(p) = refill_from_fragments(t, units, zero, call)
        {
            return p;
        }
        if let Some(p) = refill_from_slabs(t, units, zero, call) {
            return p;
        }
    }
    if wants_mapping(n, ALIGN) {
        return alloc_block(n, ALIGN, zero, false, call);
    }
    let mut extra = [Block::NULL; REFILL - 1];
    let mut k = 0;
    let grew;
    let grant = {
        let mut h = heap(t.arena(), call_name(call));
        let growths = h.growths;
        // SAFETY: the heap is consistent between calls.
        let g = unsafe { h.alloc(units) };
        grew = h.growths != growths;
        if let Some(g) = g {
            let room = t.room_for(units).min(extra.len());
            while k < room {
                // SAFETY: as above.
                match unsafe { h.take_exact(units, g.from_top) } {
                    Some(b) => {
                        extra[k] = b;
                        k += 1;
                    }
                    None => break,
                }
            }
        }
        g
    };
    after_growth(grew);
    for &b in &extra[..k] {
        // SAFETY: this thread's cache; `b` is a block of `units` the heap
        // just handed out, and the cache had room for it.
        if !unsafe { t.push(b, units) } {
            overwritten_fatal(call, b);
        }
    }
    match grant {
        Some(g) => payload_of(g, zero),
        // The heap could not grow: the general path may free memory first.
        None => alloc_block(n, ALIGN, zero, false, call),
    }
}

/// A small request that found its cache list empty, served from the
/// heap's fragments (free blocks too small to hold a slab's page, which
/// nothing but small requests can use) when there is one: the best fit,
/// and free blocks of exactly the size for the cache. Measured on the
/// shared traces: without this, slabs left those fragments unused and cost
/// py-json 12% of its utilization.
fn refill_from_fragments(t: &Tcache, units: u32, zero: bool, call: Call) -> Option<*mut u8> {
    let mut extra = [Block::NULL; REFILL - 1];
    let mut k = 0;
    let g = {
        let mut h = heap(t.arena(), call_name(call));
        // SAFETY: the heap is consistent between calls.
        let g = unsafe { h.alloc_fragment(units, crate::slab::CONTAINER_UNITS + 1) }?;
        let room = t.room_for(units).min(extra.len());
        while k < room {
            // SAFETY: as above.
            match unsafe { h.take_exact(units, false) } {
                Some(b) => {
                    extra[k] = b;
                    k += 1;
                }
                None => break,
            }
        }
        g
    };
    for &b in &extra[..k] {
        // SAFETY: this thread's cache, with room; `b` is a heap block of
        // `units` just handed out.
        if !unsafe { t.push(b, units) } {
            overwritten_fatal(call, b);
        }
    }
    Some(payload_of(g, zero))
}

/// A small request that found its cache list empty, served from a chain
/// of the depot ([`crate::depot`]) that becomes the list. `None` when the
/// depot has no chain of the size that fits.
#[inline]
fn refill_from_depot(t: &Tcache, units: u32, zero: bool, call: Call) -> Option<*mut u8> {
    if !t.can_take_chain(units, 1) {
        return None;
    }
    let room = t.room_for(units) as u32;
    let chain = depot_take(units, room)?;
    // SAFETY: this thread's cache; its list is empty and has room for the
    // chain, which the depot gave to this thread alone.
    let b = unsafe {
        t.put_chain(units, chain);
        t.pop(units)
    };
    match b {
        Ok(Some(b)) => {
            if zero {
                clear(b.payload(), Block::payload_bytes(units));
            }
            Some(b.payload())
        }
        Ok(None) => None,
        Err(tcache::CacheFault::Corrupted(a)) => cache_fault(call, a),
    }
}

/// A small request that found its cache list empty, served from slabs: a
/// block for the program and more for the cache (7 at first, up to 31 for
/// a list that keeps running dry: [`Tcache::slab_batch`]), under the slab
/// lock. `None` when no slab block could be had (the heap then
/// serves the request).
fn refill_from_slabs(t: &Tcache, units: u32, zero: bool, call: Call) -> Option<*mut u8> {
    let mut got = [Block::NULL; tcache::MAX_SLAB_BATCH];
    let want = t.room_for(units).min(t.slab_batch(units) - 1) + 1;
    let (k, grew) = slab_take(t, units, &mut got[..want], call_name(call));
    after_growth(grew);
    if k == 0 {
        return None;
    }
    for &b in &got[1..k] {
        // SAFETY: this thread's cache, with room for `want - 1` blocks;
        // `b` is a block of `units` just taken from a slab.
        if !unsafe { t.push(b, units) } {
            overwritten_fatal(call, b);
        }
    }
    let b = got[0];
    if zero {
        clear(b.payload(), Block::payload_bytes(units));
    }
    Some(b.payload())
}

/// Whether a request of `n` bytes aligned to `align` should get a mapping
/// of its own rather than a heap block: when the heap cannot hold it, or
/// it reaches the mmap threshold (glibc's `M_MMAP_THRESHOLD`). The one
/// place this policy is written.
pub fn wants_mapping(n: usize, align: usize) -> bool {
    // An alignment of 16 pages or more costs a mapping only address space.
    if !heap_can_hold(n, align) || align >= OPT.page.load(Relaxed) * 16 {
        return true;
    }
    let extra = if align > ALIGN { align } else { 0 };
    units_to_bytes(config::request_units(n)) + extra >= OPT.mmap_threshold.load(Relaxed)
}

/// Whether the heap can hold a block of `n` bytes aligned to `align`: any
/// size and alignment a region can hold (above [`MAX_HEAP_REQUEST`] in the
/// big form).
fn heap_can_hold(n: usize, align: usize) -> bool {
    n <= MAX_BIG_REQUEST && align <= MAX_BIG_REQUEST - n
}

/// A block of `n` bytes aligned to `align` (a power of two, at least 16),
/// zeroed if `zero`, from the heap or a mapping of its own (ending with a
/// guard page when `guarded`); null when out of memory.
///
/// A request that [`wants_mapping`] first takes free heap space if some
/// fits and it is at most [`MAX_HEAP_REQUEST`] (never growing the heap for
/// it; not in guarded mode, whose large blocks always get their guard
/// page), then a mapping, then, if no mapping can be made, a heap block
/// after all, whatever its size (free heap space, or a growth of the heap
/// when the break can move): under an address-space limit, memory the
/// program freed into the heap serves any request.
///
/// When the system refuses memory and address space can be given back
/// ([`crate::trim::give_back_space`]: this thread's cache, whose blocks may
/// keep the heap's top from shrinking, the kept mappings, the top itself),
/// the request is tried once more; not for a request larger than the
/// address space ([`config::MAX_ADDRESS_SPACE`]), which nothing given back
/// could serve: trimming the heap for it only made the next small request
/// grow the heap again (two system calls and fresh pages per failure).
#[inline(never)]
pub fn alloc_block(n: usize, align: usize, zero: bool, guarded: bool, call: Call) -> *mut u8 {
    crate::trim::maybe_decay(call_name(call));
    let p = alloc_block_once(n, align, zero, guarded, call);
    if p.is_null() {
        return retry_given_back(n, align, zero, guarded, call);
    }
    p
}

/// [`alloc_block`]'s second try, once the system refused memory: only if
/// address space could be given back (and a request of that size could
/// use it).
fn retry_given_back(n: usize, align: usize, zero: bool, guarded: bool, call: Call) -> *mut u8 {
    let could_fit = n.checked_add(align).is_some_and(|total| total <= config::MAX_ADDRESS_SPACE);
    if could_fit && crate::trim::give_back_space(call_name(call), 0) {
        return alloc_block_once(n, align, zero, guarded, call);
    }
    core::ptr::null_mut()
}

/// [`alloc_block`] for a plain request (aligned to [`ALIGN`], wanting no
/// mapping) that arena `tried`'s heap, its growth included, has just
/// refused: the rest of the general path, without asking that heap (and
/// the system, for its growth) a second time (found by a review: a failing
/// malloc made twice the system calls, a failing realloc three times).
#[cold]
#[inline(never)]
pub fn alloc_plain_elsewhere(tried: usize, n: usize, zero: bool, call: Call) -> *mut u8 {
    let mine = my_arena(my_cache());
    for a in (0..arenas()).filter(|&a| a != tried) {
        // As `heap_block`: this thread's own arena may grow, others not.
        let p = heap_block_in(a, n, ALIGN, zero, a == mine, call);
        if !p.is_null() {
            return p;
        }
    }
    retry_given_back(n, ALIGN, zero, false, call)
}

fn alloc_block_once(n: usize, align: usize, zero: bool, guarded: bool, call: Call) -> *mut u8 {
    // A request that wants no mapping is one the heap can hold.
    if !wants_mapping(n, align) {
        return heap_block(n, align, zero, true, call);
    }
    alloc_wanting_mapping(n, align, zero, guarded, call)
}

/// [`alloc_block_once`] for a request that wants a mapping: kept out of
/// line, so that the heap requests' path does not pay for its frame.
#[inline(never)]
fn alloc_wanting_mapping(n: usize, align: usize, zero: bool, guarded: bool, call: Call) -> *mut u8 {
    let fits_heap = heap_can_hold(n, align);
    if fits_heap && !guarded && align <= ALIGN && n <= MAX_HEAP_REQUEST {
        let p = heap_block(n, align, zero, false, call);
        if !p.is_null() {
            return p;
        }
    }
    if let Some(p) = map_block(n, align, guarded, zero) {
        return p;
    }
    if fits_heap { heap_block(n, align, zero, true, call) } else { core::ptr::null_mut() }
}

/// A heap block for `n` bytes aligned to `align`, growing the heap only if
/// `may_grow`: from this thread's arena, or, when that has no memory for
/// it, from free space in another.
fn heap_block(n: usize, align: usize, zero: bool, may_grow: bool, call: Call) -> *mut u8 {
    let mine = my_arena(my_cache());
    let p = heap_block_in(mine, n, align, zero, may_grow, call);
    if !p.is_null() || align > ALIGN {
        return p;
    }
    for a in (0..arenas()).filter(|&a| a != mine) {
        let p = heap_block_in(a, n, align, zero, false, call);
        if !p.is_null() {
            return p;
        }
    }
    core::ptr::null_mut()
}

#[inline(always)]
fn heap_block_in(arena: usize, n: usize, align: usize, zero: bool, may_grow: bool, call: Call) -> *mut u8 {
    let units = config::request_units(n);
    let mut h = heap(arena, call_name(call));
    let growths = h.growths;
    if align <= ALIGN {
        // SAFETY: the heap is consistent between calls.
        let g = unsafe { if may_grow { h.alloc(units) } else { h.alloc_no_grow(units) } };
        let grew = h.growths != growths;
        drop(h);
        after_growth(grew);
        return g.map_or(core::ptr::null_mut(), |g| payload_of(g, zero));
    }
    // SAFETY: as above.
    let b = unsafe { h.alloc_aligned(align, units) };
    let grew = h.growths != growths;
    drop(h);
    after_growth(grew);
    match b {
        Some(b) => {
            if zero {
                clear(b.payload(), n);
            }
            b.payload()
        }
        None => core::ptr::null_mut(),
    }
}

/// After the heap took new memory from the system: the mappings kept for
/// reuse go back, so that they never add to a new peak of the footprint
/// (measured: keeping them through heap growth cost sqlite's replay 8% of
/// its utilization).
#[inline]
pub fn after_growth(grew: bool) {
    if grew {
        crate::trim::release_kept();
    }
}

/// The payload of a heap grant, its dirty part cleared if `zero`.
#[inline]
fn payload_of(g: Grant, zero: bool) -> *mut u8 {
    if zero {
        clear(g.block.payload(), g.dirty);
    }
    g.block.payload()
}

/// Zeroes the `n` bytes at `p`: the one place calloc's memory is cleared.
#[inline]
fn clear(p: *mut u8, n: usize) {
    // SAFETY: callers pass a block they just took, at least `n` bytes long.
    unsafe { core::ptr::write_bytes(p, 0, n) };
}

/// A large block in its own mapping, recorded in the large-block table:
/// a kept mapping of a freed block when one fits (cleared if `zero`), else
/// a fresh one (which reads as zero). `None` if no mapping can be made or
/// recorded, or `M_MMAP_MAX` mappings exist.
fn map_block(n: usize, align: usize, guarded: bool, zero: bool) -> Option<*mut u8> {
    let page = OPT.page.load(Relaxed);
    let plain = !guarded && align <= ALIGN;
    let want = config::checked_round_up(n.max(1).checked_add(ALIGN)?, page)?;
    // No mapping this large can be made: fail before the kept mappings are
    // touched (one would be taken, grown by a failing mremap and unmapped;
    // an aligned request would give back all of them).
    if want > config::MAX_ADDRESS_SPACE {
        return None;
    }
    let (kept, evicted) = {
        // Room in the table first: a mapping we could not record would be lost.
        let mut l = large();
        if l.count() >= OPT.mmap_max.load(Relaxed) || !l.reserve() {
            return None;
        }
        match if plain { l.reuse(want) } else { None } {
            Some(k) => (Some(k), large::Evicted::default()),
            // Kept mappings that this request cannot use go back before a
            // new one is made: keeping them would only add to the peak.
            None => (None, l.expire(u64::MAX)),
        }
    };
    evicted.unmap();
    // Resized outside the table's lock (a system call).
    if let Some(m) = kept.and_then(|k| reuse_kept(k, want)) {
        if zero {
            // Every byte the block's usable size shows that the mapping's
            // last user may have written, not only the `n` asked for (a
            // kept mapping may be up to twice `n`: its tail would show the
            // last user's bytes; found by a hostile review). Pages beyond
            // the kept part are fresh, and read as zero.
            let kept_bytes = kept.map_or(0, |k| k.len) - ALIGN;
            clear(m.payload as *mut u8, m.usable(page).min(kept_bytes));
        }
        return Some(m.payload as *mut u8);
    }
    let m = if guarded { large::map_guarded(n, align, page)? } else { large::map_block(n, align, page)? };
    if !large().insert(m) {
        // SAFETY: the mapping is ours and unused.
        unsafe { crate::os::unmap(m.base, m.len) };
        return None;
    }
    Some(m.payload as *mut u8)
}

/// The block made of kept mapping `k` (out of the kept list) for a request
/// of `want` bytes, recorded in the table: fitted ([`large::fit`]) and
/// opened ([`large::open`]). `None` when that failed (`k` is gone then, and
/// a fresh mapping is to be made) or the table had no room after all.
fn reuse_kept(k: large::Mapping, want: usize) -> Option<large::Mapping> {
    let (k, tail) = large::fit(k, want)?;
    let m = large::Mapping { payload: k.base + ALIGN, ..k };
    let opened = large::open(m);
    let mut l = large();
    let recorded = opened && l.insert(m);
    // The tail of a kept mapping split for a smaller request stays kept
    // (as accessible as it was).
    let evicted = tail.map(|t| l.retain(t, crate::os::now_ms()));
    drop(l);
    if let Some(e) = evicted {
        e.unmap();
    }
    if opened && !recorded {
        // SAFETY: the mapping is ours and unused.
        unsafe { crate::os::unmap(m.base, m.len) };
    }
    recorded.then_some(m)
}

/// Allocates `n` bytes aligned to `align` (a power of two above 16): a
/// block of the thread cache's list for the size that happens to be
/// aligned, among its first few (a loop that allocates an aligned block
/// and frees it gets the same block back, as glibc's does, instead of a
/// trip to the heap each time), else a block from [`alloc_block`].
pub fn memalign(align: usize, n: usize) -> *mut u8 {
    let t = my_cache();
    if let Some(t) = t
        && n <= TCACHE_MAX_REQUEST
    {
        // SAFETY: this thread's cache.
        match unsafe { t.pop_aligned(config::request_units(n), align) } {
            Ok(Some(b)) => {
                count(Some(t), Call::Memalign, n);
                return b.payload();
            }
            Ok(None) => {}
            Err(tcache::CacheFault::Corrupted(a)) => cache_fault(Call::Memalign, a),
        }
    }
    count(t, Call::Memalign, 0);
    served(n, alloc_block(n, align, false, false, Call::Memalign))
}

/// A block for the hardened mode: from the heap (never a thread cache) or,
/// when large, a mapping of its own that ends with a guard page.
pub fn guarded_block(n: usize, align: usize, zero: bool) -> *mut u8 {
    let call = if align > ALIGN {
        Call::Memalign
    } else if zero {
        Call::Calloc
    } else {
        Call::Malloc
    };
    count(None, call, 0);
    served(n, alloc_block(n, align.max(ALIGN), zero, true, call))
}
