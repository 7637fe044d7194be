//! What a pointer from the program is: a heap block it holds, a large
//! block's payload, or misuse, named by its real cause.
//!
//! Every path that takes a pointer back (free, realloc, malloc_usable_size,
//! the hardened mode) resolves it here, except the inline free fast path,
//! which makes the same checks for the common case and comes here for the
//! rest. Nothing is read from the program's memory before the page map says
//! the address is ours; a heap block's header is trusted only once its
//! keyed tag matches.

use crate::block::{units_to_bytes, Block};
use crate::config::{MIN_UNITS, TCACHE_MAX_UNITS};
use crate::diag;
use crate::large::{Lookup, Mapping};
use crate::process::{heap_of, large, PAGEMAP, REGIONS};
use crate::pagemap::{interior_region_entry, slab_units, Owner};
use crate::slab::SLAB_BYTES;
use crate::tcache;

/// A heap block that passed the ownership and tag checks and is held by
/// the program (not free, not waiting in a thread cache). Only [`resolve`],
/// [`held`] and [`held_unmarked`] make one, so code that receives it need
/// not check again.
#[derive(Clone, Copy, Debug)]
pub struct Held(Block, bool);

impl Held {
    pub fn block(self) -> Block {
        self.0
    }

    /// Whether the block is a slab's (its payload is on a slab page).
    pub fn in_slab(self) -> bool {
        self.1
    }
}

/// The checks of the hit paths (free's and realloc's) on `p`, from a
/// thread with a cache: `Some((units, header))` when `p` is the payload
/// of a held block of a size the caches keep, of a slab or the heap, whose
/// used header is `header`, and whether it is a slab's. `None` sends the
/// caller to its slow path, which resolves the pointer ([`resolve`]) and
/// names any misuse. The cache's mark is not looked at: see
/// [`held_unmarked`].
///
/// A slab block's size comes from its page's entry in the page map, so
/// its header, usually in a cold cache line, is only compared, not waited
/// for; a heap block's size is its header's.
///
/// # Safety
/// None beyond `p` being the program's pointer: every read is of memory
/// the page map says is ours (below).
#[inline(always)]
pub unsafe fn held_cacheable(p: *mut u8, alone: bool) -> Option<(u32, u32, bool)> {
    // A 16-aligned payload (its header is a header position) in the page
    // map's range.
    if (p as usize) & ((crate::config::ALIGN - 1) | crate::pagemap::OUTSIDE) != 0 {
        return None;
    }
    let b = Block::from_payload(p);
    // By the payload's page (see `crate::slab`).
    let e = PAGEMAP.entry_within(p as usize);
    let slab = slab_units(e);
    // SAFETY: `p` is 16-aligned on a page of ours that a slab or a heap
    // region covers wholly, so its first 16 bytes are mapped, and so is
    // the header before it: on the same page, or, for a page's first
    // address, on the page before, which is ours (a slab's page follows
    // its container's header; a heap page is used only when `p` is not the
    // page's first address).
    unsafe {
        if slab != 0 {
            let expect = crate::block::used_header(b.addr(), slab);
            // One of the slab's blocks (not inside one), whose header is a
            // held block's: a cached block's header is in the cached form,
            // not `expect`.
            (crate::slab::is_payload(p as usize, slab) && b.header_hot(alone) == expect).then_some((slab, expect, true))
        } else if interior_region_entry(e) && !(p as usize).is_multiple_of(crate::slab::SLAB_BYTES) {
            let h = b.header_hot(alone);
            let units = crate::block::used_units(h);
            let cacheable = units.wrapping_sub(MIN_UNITS) <= TCACHE_MAX_UNITS - MIN_UNITS;
            let checked = if cfg!(feature = "unchecked-fast-path") {
                h & crate::block::USED != 0
            } else {
                crate::block::is_used_header(b.addr(), h)
            };
            (cacheable && checked).then_some((units, h, false))
        } else {
            None
        }
    }
}

/// `b`, which [`held_cacheable`] found held with used header `h` (`slab`:
/// a slab's block), as a [`Held`], once its payload is seen not to carry
/// the cache's mark; else its misuse is reported for `func` (an overflow
/// may have put a cached block's header back in the used form).
pub fn held_unmarked(b: Block, h: u32, slab: bool, func: &'static str) -> Held {
    // SAFETY: a held block of at least MIN_UNITS (held_cacheable's check)
    // holds the cache's three words.
    if unsafe { tcache::is_marked(b, h ^ crate::block::CACHED_FLIP) } {
        diag::fatal(func, double_free_text(func), b.payload() as usize);
    }
    Held(b, slab)
}

/// A pointer the program may give back.
#[derive(Clone, Copy, Debug)]
pub enum Ptr {
    Heap(Held),
    Large(Mapping),
}

/// Resolves `p` (non-null) for C function `func`, or reports the misuse
/// and aborts.
pub fn resolve(p: *mut u8, func: &'static str) -> Ptr {
    let a = p as usize;
    let b = Block::from_payload(p);
    if Block::is_header_position(b.addr()) {
        // By the payload's page: see `crate::slab` on the block after a
        // slab's container.
        let e = PAGEMAP.entry(a);
        let units = slab_units(e);
        if units != 0 {
            return Ptr::Heap(held_in_slab(b, units, func));
        }
        // A page a heap region covers wholly (not its edge), and not the
        // page's first address: the header is on the same page, inside
        // the region, and the payload is no slab's page (the free fast
        // path's test).
        if interior_region_entry(e) && !a.is_multiple_of(SLAB_BYTES) {
            return Ptr::Heap(held_header(b, func));
        }
    }
    if in_heap(p) {
        return Ptr::Heap(held(b, func));
    }
    match large().lookup(a) {
        Lookup::Live(m) => Ptr::Large(m),
        found => bad_pointer(a, found, func),
    }
}

/// Whether `p` (non-null) can only be a heap block's payload: its header
/// position lies in a heap region, and `p` is not on the payload page of a
/// large block. (A large block's page-aligned payload may follow a heap
/// region directly, whose epilogue is then the header position before it.)
#[inline]
pub fn in_heap(p: *mut u8) -> bool {
    let a = p as usize;
    REGIONS.holds_header(Block::from_payload(p).addr())
        && !(a.is_multiple_of(SLAB_BYTES) && matches!(PAGEMAP.owner(a), Owner::Large { .. } | Owner::Freed { .. }))
}

/// `b` as a held block, or the reason it is not (and abort).
///
/// # Panics
/// If `b` is not a header position inside a heap region (callers check).
#[inline]
pub fn held(b: Block, func: &'static str) -> Held {
    assert!(REGIONS.holds_header(b.addr()));
    // A slab's container is a used heap block, but the program never got
    // it: its payload is the slab's page.
    let payload = b.payload() as usize;
    if payload.is_multiple_of(SLAB_BYTES) && slab_units(PAGEMAP.entry(payload)) != 0 {
        diag::fatal(func, "invalid pointer (inside the heap, not a block start)", payload);
    }
    held_header(b, func)
}

/// `b` as a held block, by its header, or the reason it is not (and
/// abort).
///
/// # Panics
/// Not itself; callers make sure `b` is a header position inside a heap
/// region whose payload is not a slab's page.
#[inline]
fn held_header(b: Block, func: &'static str) -> Held {
    // SAFETY: `b` is a header position inside a heap region, before its
    // epilogue; the payload word is read only for a valid used header of
    // at least MIN_UNITS (whose payload holds it).
    //
    // The cache's mark is looked for only on a header of a size the caches
    // keep: a mark seals its block's cached header, so a header of a larger
    // size (1-16 KiB blocks, every free and realloc of which comes here)
    // cannot match a cached block's mark, whatever was written over it
    // (20 instructions a call).
    unsafe {
        let h = b.header();
        if crate::block::is_block_header(b.addr(), h)
            && (!crate::block::is_big_body(h) || is_whole_big_block(b))
            && (crate::block::used_units(h) > TCACHE_MAX_UNITS || !tcache::is_marked(b, h ^ crate::block::CACHED_FLIP))
        {
            return Held(b, false);
        }
    }
    bad_heap_pointer(b, func)
}

/// `b`, a header position on a slab page of blocks of `units`, as a held
/// block, or the reason it is not (and abort).
fn held_in_slab(b: Block, units: u32, func: &'static str) -> Held {
    let p = b.payload() as usize;
    if crate::slab::index_of(b, p & !(SLAB_BYTES - 1), units).is_none() {
        diag::fatal(func, "invalid pointer (inside the heap, not a block start)", p);
    }
    let used = crate::block::used_header(b.addr(), units);
    // SAFETY: `b` is the header position of a block of a live slab, whose
    // page is mapped.
    let h = unsafe { b.header() };
    if h == used || h == used ^ crate::block::CACHED_FLIP {
        // A cache puts a slab block it takes in the cached form, and its
        // mark seals that form: the form, or the mark (looked for whatever
        // the header now holds: an overflow may have put it back in the
        // used form, as a write after free may have wiped the mark), says
        // it waits in one.
        // SAFETY: as above; the payload holds the cache's three words.
        let marked = unsafe { tcache::is_marked(b, used ^ crate::block::CACHED_FLIP) };
        if !marked && h == used {
            return Held(b, true);
        }
        diag::fatal(func, double_free_text(func), p);
    }
    if h == 0 {
        // Header 0: the block is free in its slab (a double free), or an
        // overflow of the block before zeroed a held block's header: the
        // slab's bitmap tells which.
        let e = crate::process::PAGEMAP.entry(p);
        if crate::process::slabs().is_free_in_slab(b, crate::pagemap::slab_id(e), units) {
            diag::fatal(func, double_free_text(func), p);
        }
        diag::fatal(func, "heap overflow into the header of a held block (its header was overwritten) at", p);
    }
    diag::fatal(func, "invalid pointer (not a block start, or its header was overwritten)", p)
}

/// Whether `b`, whose header is a valid big body header, is the body of a
/// genuine big block: its head (one unit before) lies in the same region,
/// head, record and body agree ([`Block::big_units`]), and the size keeps
/// the block inside the region. A forged or enlarged record fails here,
/// before any size is used.
///
/// # Safety
/// `b` must be a header position inside a heap region.
#[cold]
unsafe fn is_whole_big_block(b: Block) -> bool {
    let s = b.head_of_body();
    let Some(r) = REGIONS.find(b.addr()) else { return false };
    let (lo, hi) = REGIONS.block_span(r);
    if s.addr() < lo {
        return false;
    }
    // SAFETY: `s` is a header position of region `r`, before `b`.
    match unsafe { s.big_units() } {
        Some(units) => units_to_bytes(units) <= hi - s.addr(),
        None => false,
    }
}

/// Explains why `a`, which is not a heap block start, cannot be given back.
#[cold]
fn bad_pointer(a: usize, found: Lookup, func: &'static str) -> ! {
    match found {
        Lookup::Interior(_) => diag::fatal(func, "invalid pointer (inside a large block, not its start)", a),
        Lookup::Freed => diag::fatal(func, double_free_text(func), a),
        Lookup::InFreed => diag::fatal(func, "invalid pointer (inside a large block already freed)", a),
        _ => match PAGEMAP.owner(a) {
            Owner::Slab { .. } => diag::fatal(func, "invalid pointer (inside the heap, not a block start)", a),
            Owner::Region { .. } if REGIONS.find(a).is_some() => {
                diag::fatal(func, "invalid pointer (inside the heap, not a block start)", a)
            }
            // The top was trimmed below it: its block (if it was one) was
            // freed, and the memory went back to the system.
            Owner::None if REGIONS.gave_back(a) => {
                diag::fatal(func, "invalid pointer (in heap memory already freed and given back to the system)", a)
            }
            _ => diag::fatal(func, "invalid pointer (not allocated by fitalloc)", a),
        },
    }
}

/// Explains why heap header position `b`'s payload cannot be given back,
/// and aborts.
#[cold]
pub fn bad_heap_pointer(b: Block, func: &'static str) -> ! {
    let p = b.payload() as usize;
    let h = heap_of(b, func);
    // Another thread's free of the same block (a double free it races) may
    // have given the memory back to the system since the caller looked.
    if !REGIONS.holds_header(b.addr()) {
        drop(h);
        diag::fatal(func, "invalid pointer (in heap memory already freed and given back to the system)", p);
    }
    // SAFETY: `b` is a header position inside a heap region (checked under
    // the heap's lock, which a trim holds).
    let what = unsafe {
        let hd = b.header();
        let (top, top_units) = h.top();
        let in_top = top_units > 0 && b.addr() >= top.addr() && b.addr() < top.offset(top_units).addr();
        let region = REGIONS.find(b.addr());
        let never_used = region.is_some_and(|r| b.addr() >= REGIONS.fresh(r));
        if crate::block::is_cached_header(b.addr(), hd) {
            // The cached form: the block waits in a thread cache (or the
            // depot). With the mark that seals that form, a block whose
            // header an overflow put back in the used form.
            double_free_text(func)
        } else if crate::block::is_block_header(b.addr(), hd)
            && !crate::block::is_big_body(hd)
            && tcache::is_marked(b, hd ^ crate::block::CACHED_FLIP)
        {
            double_free_text(func)
        } else if never_used {
            "invalid pointer (inside unused heap space)"
        } else if hd == crate::block::MERGED || (in_top && b == top) {
            // A block merged into a neighbour (a freed big block's body is
            // marked so), or freed into the top, which starts where it did.
            double_free_text(func)
        } else if in_top {
            // Inside the top but not where a freed block would have left
            // its start: never a block start there.
            "invalid pointer (inside the heap's free space, not a block start)"
        } else if (hd & crate::block::USED == 0 && is_free_block(b, region)) || freed_big_body(b, region) {
            // A free block, or a big block's body whose block is one now.
            double_free_text(func)
        } else {
            "invalid pointer (not a block start, or its header was overwritten)"
        }
    };
    drop(h);
    diag::fatal(func, what, p)
}

/// Whether `b` carries a genuine free block's tags: a sane size that stays
/// in its region, and a footer equal to its header.
///
/// # Safety
/// `b` must be a header position inside heap region `region`.
unsafe fn is_free_block(b: Block, region: Option<usize>) -> bool {
    let Some(r) = region else { return false };
    // SAFETY: the footer is read only once the size keeps it in the region.
    unsafe {
        let hd = b.header();
        let units = crate::block::header_units(hd);
        units >= MIN_UNITS && b.offset(units).addr() < REGIONS.block_span(r).1 && b.footer(units) == hd
    }
}

/// Whether `b` was the body of a big block since freed and filed in a bin
/// (the free block's links wrote over the body's mark): the unit before
/// it starts a genuine free block that covers it.
///
/// # Safety
/// `b` must be a header position inside heap region `region`.
unsafe fn freed_big_body(b: Block, region: Option<usize>) -> bool {
    let Some(r) = region else { return false };
    let s = b.head_of_body();
    // SAFETY: the head is read only once it is known to lie in the region.
    unsafe {
        s.addr() >= REGIONS.block_span(r).0
            && s.header() & crate::block::USED == 0
            && is_free_block(s, region)
            && s.units() > crate::block::BIG_PREFIX_UNITS
    }
}

pub use crate::diag::double_free_text;

/// The usable size of block `p` (non-null).
pub fn usable_size(p: *mut u8, func: &'static str) -> usize {
    usable_bytes(resolve(p, func))
}

/// The usable size of the block `ptr` names.
pub fn usable_bytes(ptr: Ptr) -> usize {
    match ptr {
        // SAFETY: a held block's header is valid.
        Ptr::Heap(b) => Block::payload_bytes(unsafe { b.block().units() }),
        Ptr::Large(m) => m.usable(crate::options::OPT.page.load(core::sync::atomic::Ordering::Relaxed)),
    }
}
