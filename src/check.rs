//! The heap checker, used by every test, and the heap walk behind heap maps.
//!
//! [`check_heap`] walks every block of every region, every bin and the
//! large-block table, and checks every invariant the heap states:
//!
//! - blocks tile each region from its first header to its epilogue;
//! - used headers carry a valid tag; a big block's head, size record (and
//!   its keyed check) and body header agree, and only a head starts one;
//!   free blocks' footers equal headers;
//! - `PREV_USED` of every block (and the epilogue) tells the truth, and no
//!   two free blocks are adjacent;
//! - the top is the last block of the current region (or the epilogue);
//! - every small list is a well-linked list of free blocks of its size, and
//!   its bitmap bit is set iff it is non-empty; every tree is a valid treap
//!   of free blocks that map to it, with the same bitmap rule;
//! - the bins hold exactly the free blocks the walk found (count and bytes);
//! - the heap's counters agree with the walk; the large table is sane;
//! - the calling thread's cache holds only correctly marked blocks.
//!
//! The walk reads payload words only to recognise blocks waiting in thread
//! caches; with other threads running that classification is approximate.

use crate::bins::tree_index;
use crate::block::{self, bytes_to_units, header_units, units_to_bytes, Block, PREV_USED, USED};
use crate::config::{MAX_USED_UNITS, MIN_UNITS, SMALL_LIMIT_UNITS, TREE_BINS};
use crate::diag::Buf;
use crate::heap::Heap;
use crate::large::MapTable;
use crate::os::{Os, Source};
use crate::pagemap::Owner;
use crate::process::{all_heaps, large, slabs, MAX_ARENAS};
use crate::region::RegionTable;
use crate::slab::Slabs;
use crate::registry::{with_registry, Registry};

/// Every arena's heap, by arena (`None` past the arenas in use).
type Heaps<'a> = [Option<&'a Heap<Os>>; MAX_ARENAS];

/// Runs `f` with the registry, the slabs, every heap and the large-block
/// table locked (in rank order). `f` must not allocate.
fn with_everything<R>(f: impl FnOnce(&Heaps, &MapTable, &Registry, &mut Slabs, &Depot) -> R) -> R {
    with_registry(|r| {
        let d = crate::process::depot();
        let mut s = slabs();
        let guards = all_heaps("check");
        let heaps: Heaps = core::array::from_fn(|i| guards[i].as_deref());
        let l = large();
        f(&heaps, &l, r, &mut s, &d)
    })
}
use core::fmt::Write;
use crate::depot::Depot;

/// Kinds reported by [`walk`] (the values of `FITALLOC_WALK_*`).
pub(crate) const WALK_REGION: u32 = 0;
pub(crate) const WALK_USED: u32 = 1;
pub(crate) const WALK_FREE: u32 = 2;
pub(crate) const WALK_CACHED: u32 = 3;
pub(crate) const WALK_MAPPED: u32 = 4;

struct Report {
    problems: usize,
    print: bool,
}

impl Report {
    fn problem(&mut self, what: &str, addr: usize) {
        self.problems += 1;
        if self.print && self.problems <= 20 {
            let mut b = Buf::<200>::new();
            let _ = writeln!(b, "fitalloc: check: {what} at {addr:#x}");
            b.write_to(2);
        }
    }

    fn expect(&mut self, ok: bool, what: &str, addr: usize) {
        if !ok {
            self.problem(what, addr);
        }
    }
}

/// Whether held block `b` carries the thread-cache mark.
///
/// # Safety
/// `b` must be a used block of at least two units in a heap region.
unsafe fn looks_cached(b: Block) -> bool {
    // SAFETY: the payload's first three words lie inside the block; other
    // threads may be writing them (hence volatile reads).
    let (header, link, mark, below) = unsafe {
        let p = b.payload() as *const usize;
        (b.header(), core::ptr::read_volatile(p), core::ptr::read_volatile(p.add(1)), core::ptr::read_volatile(p.add(2)))
    };
    crate::tcache::seals(b.addr(), link, below, header, mark)
}

/// Whether cached block `b` has its header in the cached form, as every
/// cache gives it (`free` finds a double free of a cached block by that
/// form).
///
/// # Safety
/// `b` must be a cached block whose header was checked.
unsafe fn in_cached_form(b: Block) -> bool {
    // SAFETY: forwarded.
    block::is_cached_header(b.addr(), unsafe { b.header() })
}

/// The block size of the slab whose container is used heap block `b`, if
/// it is one.
fn slab_of_container(b: Block) -> Option<u32> {
    let page = b.payload() as usize;
    if !page.is_multiple_of(crate::slab::SLAB_BYTES) {
        return None;
    }
    match crate::process::PAGEMAP.owner(page) {
        Owner::Slab { units, .. } => Some(units),
        _ => None,
    }
}

/// Totals found by walking the regions.
#[derive(Default)]
struct Walked {
    used_bytes: usize,
    used_blocks: usize,
    free_bytes: usize,
    free_blocks: usize,
    heap_bytes: usize,
}

/// Walks region `i` block by block, checking the tiling and the tags, and
/// calls `f(block, units, used)` for each block (the top included).
///
/// # Safety
/// `regions` must describe mapped heap regions.
unsafe fn walk_region(
    regions: &RegionTable,
    i: usize,
    top: Option<Block>,
    rep: &mut Report,
    mut f: impl FnMut(Block, u32, bool),
) {
    let (start, end) = (regions.start(i), regions.end(i));
    rep.expect(start % 16 == 0 && end % 16 == 0 && end > start, "misaligned region", start);
    let epi = Block::epilogue_of(end).addr();
    let mut b = Block::first_in_region(start);
    let mut prev_used = true;
    // SAFETY: every header read is at a position inside the region.
    unsafe {
        loop {
            if b.addr() == epi {
                let h = b.header();
                rep.expect(h & !PREV_USED == block::used_header(epi, 0), "bad epilogue", epi);
                rep.expect((h & PREV_USED != 0) == prev_used, "epilogue PREV_USED wrong", epi);
                break;
            }
            if b.addr() > epi {
                rep.problem("blocks run past the region end", b.addr());
                break;
            }
            let h = b.header();
            let units = if block::is_big_head(h) {
                // The big form: head, record and body must agree.
                match b.big_units() {
                    Some(u) => u,
                    None => {
                        rep.problem("big block with a bad head, record or body", b.addr());
                        break;
                    }
                }
            } else {
                header_units(h)
            };
            if h & USED != 0 && units > MAX_USED_UNITS && !block::is_big_head(h) {
                rep.problem("used header with a big-form marker where a block starts", b.addr());
                break;
            }
            if units < MIN_UNITS || units > bytes_to_units(epi - b.addr()) as u32 {
                rep.problem("block size out of range", b.addr());
                break;
            }
            rep.expect((h & PREV_USED != 0) == prev_used, "PREV_USED disagrees with the previous block", b.addr());
            if h & USED != 0 {
                // Either form, judged from the one value read: another
                // thread's cache may take or give back a cached heap block
                // between two reads (no lock), so a second read of the
                // header or its mark could see the other form (found by a
                // hostile review: false alarms under `FITALLOC_CHECK`).
                rep.expect(block::is_held_or_cached(b.addr(), h), "used header with a bad tag", b.addr());
                prev_used = true;
            } else {
                rep.expect(prev_used, "two adjacent free blocks", b.addr());
                if Some(b) != top {
                    rep.expect(b.footer(units) == h, "footer differs from header", b.addr());
                } else {
                    rep.expect(b.offset(units).addr() == epi, "top is not the last block", b.addr());
                }
                prev_used = false;
            }
            f(b, units, h & USED != 0);
            b = b.offset(units);
        }
    }
}

/// Checks the whole heap; prints up to 20 problems (when `print`) and
/// returns their number.
pub fn check_heap(print: bool) -> usize {
    let mut rep = Report { problems: 0, print };
    with_everything(|h, l, r, s, d| check_locked(h, l, r, s, d, &mut rep));
    rep.problems
}

fn check_locked(heaps: &Heaps, large: &MapTable, _reg: &Registry, slabs: &mut Slabs, depot: &Depot, rep: &mut Report) {
    for h in heaps.iter().flatten() {
        check_heap_structure(*h, rep);
    }
    let slab_pages = check_region_pages(&crate::process::REGIONS, rep);
    rep.expect(slab_pages == slabs.counters.slabs, "a slab's page is outside the heap's regions", slab_pages);
    // SAFETY: live slabs' pages are mapped.
    unsafe { slabs.check(|what, a| rep.problem(what, a)) };
    check_large(large, rep);
    check_my_cache(rep);
    check_depot(depot, rep);
}

/// Each chain of the depot: as long as it says, every block a cached
/// block of its size, in a slab or a heap region.
fn check_depot(d: &Depot, rep: &mut Report) {
    let mut blocks = 0u64;
    let mut whole = true;
    for u in crate::config::MIN_UNITS..=crate::config::TCACHE_MAX_UNITS {
        for &chain in d.chains(u) {
            let mut in_heap = true;
            let mut bits_wrong = 0;
            // SAFETY: the depot's lock is held: its chains do not change;
            // each block is checked before its payload is read.
            let r = unsafe {
                crate::tcache::walk_chain(chain, u, |b| {
                    in_heap &= crate::process::in_slab(b) || crate::process::REGIONS.holds_header(b.addr());
                    if !in_cached_form(b) {
                        bits_wrong = b.addr();
                    }
                    blocks += 1;
                })
            };
            if let Err(crate::tcache::CacheFault::Corrupted(a)) = r {
                rep.problem("corrupted chain in the depot", a);
                whole = false;
            }
            rep.expect(in_heap, "a block of the depot is outside the heap", chain.head);
            rep.expect(bits_wrong == 0, "a block of the depot is not in the cached form", bits_wrong);
        }
    }
    // Its count, when every chain could be walked.
    if whole && blocks != d.held().1 {
        let first = (crate::config::MIN_UNITS..=crate::config::TCACHE_MAX_UNITS)
            .find_map(|u| d.chains(u).first())
            .map_or(0, |c| c.head);
        rep.problem("depot's block count wrong (first chain)", first);
    }
}

/// Whether free block `b` (a header position in a region) lies in one of
/// `h`'s regions.
fn arena_holds<S: Source>(h: &Heap<S>, b: Block) -> bool {
    h.regions.find(b.addr()).is_some_and(|r| h.regions.arena(r) == h.arena)
}

/// The checks on one heap (also run by the Rust tests on test heaps).
pub fn check_heap_structure<S: Source>(h: &Heap<S>, rep_out: &mut impl ProblemSink) {
    let mut rep = Report { problems: 0, print: rep_out.print() };
    let regions = h.regions;
    let (top, top_units) = h.top();
    let mut w = Walked::default();
    let mut filed_bits = 0;
    for i in 0..regions.len() {
        if regions.arena(i) != h.arena {
            // Another arena's region: its heap checks it.
            continue;
        }
        w.heap_bytes += regions.end(i) - regions.start(i);
        filed_bits += regions.filed().count(regions.start(i), regions.end(i));
        let is_cur = i == h.current_region();
        let t = if is_cur && top_units > 0 { Some(top) } else { None };
        if is_cur && !top.is_null() {
            rep.expect(regions.find(top.addr()) == Some(i), "top outside the current region", top.addr());
        }
        // SAFETY: the table describes mapped regions.
        unsafe {
            walk_region(regions, i, t, &mut rep, |b, units, used| {
                let bytes = units_to_bytes(units);
                if used {
                    w.used_bytes += bytes;
                    w.used_blocks += 1;
                } else if Some(b) != t {
                    w.free_bytes += bytes;
                    w.free_blocks += 1;
                }
            });
        }
    }
    // Bins.
    let (mut bin_blocks, mut bin_bytes) = (0usize, 0usize);
    let limit = w.free_blocks + 1;
    rep.expect(h.bins.small.summary_agrees(), "small bitmap's summary disagrees with it", 0);
    for u in MIN_UNITS..SMALL_LIMIT_UNITS {
        let mut b = h.bins.small.head(u);
        let non_empty = !b.is_null();
        rep.expect(h.bins.small.marked(u) == non_empty, "small bitmap disagrees with list", u as usize);
        let mut prev = Block::NULL;
        let mut n = 0;
        while !b.is_null() && n <= limit {
            // The smallest block from `b` must fit in the region (a header
            // position right before the region's end has its links past
            // it), and be a free block of the list's size, before its links
            // are read.
            if !regions.holds_header(b.addr()) || !regions.holds_header(b.offset(MIN_UNITS).addr()) {
                rep.problem("small list link outside the heap", b.addr());
                break;
            }
            rep.expect(arena_holds(h, b), "small list holds another arena's block", b.addr());
            // SAFETY: `b` and the smallest block's span from it lie in a
            // region.
            unsafe {
                if b.header() != block::free_header(u) {
                    rep.problem("block in the wrong small list", b.addr());
                    break;
                }
                rep.expect(regions.filed().is_filed(b.addr()), "small list block not in the filed map", b.addr());
                // The head's back link is not kept.
                rep.expect(prev.is_null() || b.link(1) == prev, "small list back link wrong", b.addr());
                prev = b;
                b = b.link(0);
            }
            n += 1;
            bin_blocks += 1;
            bin_bytes += units_to_bytes(u);
        }
        rep.expect(n <= limit, "small list has a cycle", u as usize);
    }
    for i in 0..TREE_BINS {
        let tree = h.bins.tree(i);
        let non_empty = !tree.is_empty();
        rep.expect(h.bins.tree_map_bit(i) == non_empty, "tree bitmap disagrees with tree", i);
        // SAFETY: tree nodes are checked as they are reached.
        let walked = unsafe {
            tree.for_each(regions, |b| {
                let u = b.units();
                if b.is_used() || u < SMALL_LIMIT_UNITS || tree_index(u) != i {
                    rep.problem("block in the wrong tree bin", b.addr());
                }
                rep.expect(arena_holds(h, b), "tree bin holds another arena's block", b.addr());
                bin_blocks += 1;
                bin_bytes += units_to_bytes(u);
            })
        };
        if let Err(e) = walked {
            rep.problem("bad tree link", e.0);
        }
        // SAFETY: as above.
        if let Err(e) = unsafe { tree.validate(regions) } {
            rep.problem("tree order or priority broken", e.0);
        }
    }
    let (parked, parked_units) = h.parked();
    if !parked.is_null() {
        if !regions.holds_header(parked.addr()) {
            rep.problem("parked block outside the heap", parked.addr());
        } else {
            // SAFETY: a header position in a region.
            unsafe {
                rep.expect(!parked.is_used() && parked.footer(parked_units) == parked.header(), "parked block is not a free block", parked.addr());
            }
            rep.expect(!regions.filed().is_filed(parked.addr()), "parked block in the filed map", parked.addr());
        }
    }
    // Every filed block was found in a list or a tree (those lists'
    // and trees' blocks are in the filed map: checked as they were
    // walked), and nothing else is in the map.
    rep.expect(filed_bits == bin_blocks, "filed map and bins disagree", filed_bits);
    if !parked.is_null() && regions.holds_header(parked.addr()) {
        bin_blocks += 1;
        bin_bytes += units_to_bytes(parked_units);
    }
    rep.expect(bin_blocks == w.free_blocks, "bins and walk disagree on free blocks", bin_blocks);
    rep.expect(bin_bytes == w.free_bytes, "bins and walk disagree on free bytes", bin_bytes);
    let c = &h.counters;
    rep.expect(c.free_blocks == w.free_blocks, "free block counter wrong", c.free_blocks);
    rep.expect(c.free_bytes == w.free_bytes, "free byte counter wrong", c.free_bytes);
    rep.expect(c.used_blocks == w.used_blocks, "used block counter wrong", c.used_blocks);
    rep.expect(c.used_bytes == w.used_bytes, "used byte counter wrong", c.used_bytes);
    rep.expect(c.heap_bytes == w.heap_bytes, "heap byte counter wrong", c.heap_bytes);
    rep_out.add(rep.problems);
}

/// Where [`check_heap_structure`] reports.
pub trait ProblemSink {
    fn print(&self) -> bool;
    fn add(&mut self, n: usize);
}

impl ProblemSink for Report {
    fn print(&self) -> bool {
        self.print
    }
    fn add(&mut self, n: usize) {
        self.problems += n;
    }
}

/// A sink that only counts, for tests: `let mut n = Count(0, true)`.
#[cfg(test)]
pub struct Count(pub usize, pub bool);

#[cfg(test)]
impl ProblemSink for Count {
    fn print(&self) -> bool {
        self.1
    }
    fn add(&mut self, n: usize) {
        self.0 += n;
    }
}

fn check_large(l: &MapTable, rep: &mut Report) {
    let (n, bytes) = l.walk_count();
    rep.expect(n == l.count(), "large table count wrong", n);
    rep.expect(bytes == l.bytes, "large table bytes wrong", bytes);
    l.for_each(|id, m| {
        let (p, base, len) = (m.payload, m.base, m.len);
        rep.expect(base % crate::config::PAGE == 0 && len % crate::config::PAGE == 0, "misaligned mapping", base);
        rep.expect(p % 16 == 0 && p >= base && p < base + len, "payload outside its mapping", p);
        rep.expect(l.map_agrees(id, m), "page map does not name the mapping on its payload's page", p);
    });
}

/// Every page of every region names that region in the page map (edges
/// exactly on a first or last page the region covers in part), or is a
/// slab's page (which the slab checker matches with its slab). Returns how
/// many slab pages it met.
fn check_region_pages(regions: &RegionTable, rep: &mut Report) -> usize {
    let mut slab_pages = 0;
    let map = regions.map();
    let page = 1usize << crate::pagemap::PAGE_SHIFT;
    for i in 0..regions.len() {
        let (start, end) = (regions.start(i), regions.end(i));
        let (first, last) = (start & !(page - 1), (end - 1) & !(page - 1));
        let mut a = first;
        while a <= last {
            let edge = (a == first && !start.is_multiple_of(page)) || (a == last && !end.is_multiple_of(page));
            match map.owner(a) {
                Owner::Slab { .. } if !edge => slab_pages += 1,
                o => rep.expect(o == Owner::Region { id: i as u32, edge }, "page map disagrees with a region", a),
            }
            a += page;
        }
    }
    slab_pages
}

fn check_my_cache(rep: &mut Report) {
    let Some(t) = crate::registry::my_cache() else { return };
    let mut n = 0u64;
    let mut bits_wrong = 0;
    // SAFETY: `for_each` checks every block before handing it on.
    let r = unsafe {
        t.for_each(|b, _| {
            n += 1;
            if !in_cached_form(b) {
                bits_wrong = b.addr();
            }
        })
    };
    if let Err(crate::tcache::CacheFault::Corrupted(a)) = r {
        rep.problem("corrupted thread cache", a);
    }
    rep.expect(bits_wrong == 0, "a block of the thread cache is not in the cached form", bits_wrong);
    rep.expect(n == t.held().1, "thread cache count wrong", n as usize);
}

/// Calls `f(addr, size, kind)` for every region, block and mapping; returns
/// the number of calls. Runs with every lock held: `f` must not allocate.
pub fn walk(mut f: impl FnMut(usize, u64, u32)) -> usize {
    with_everything(|heaps, l, _, _, _| {
        let mut calls = 0;
        let mut rep = Report { problems: 0, print: false };
        let regions = &crate::process::REGIONS;
        for i in 0..regions.len() {
            let (s, e) = (regions.start(i), regions.end(i));
            f(s, (e - s) as u64, WALK_REGION);
            calls += 1;
            let Some(h) = heaps.get(regions.arena(i)).copied().flatten() else { continue };
            let (top, top_units) = h.top();
            let t = if i == h.current_region() && top_units > 0 { Some(top) } else { None };
            // SAFETY: the table describes mapped regions.
            unsafe {
                walk_region(regions, i, t, &mut rep, |b, units, used| {
                    if used && let Some(slab_units) = slab_of_container(b) {
                        // A slab: its blocks, not its container.
                        let page = b.payload() as usize;
                        for j in 0..crate::slab::blocks_per_slab(slab_units) {
                            let sb = crate::slab::block_at(page, slab_units, j);
                            let kind = if sb.header() == 0 {
                                WALK_FREE
                            } else if looks_cached(sb) {
                                WALK_CACHED
                            } else {
                                WALK_USED
                            };
                            f(sb.addr(), units_to_bytes(slab_units) as u64, kind);
                            calls += 1;
                        }
                        return;
                    }
                    let kind = if !used {
                        WALK_FREE
                    } else if looks_cached(b) {
                        WALK_CACHED
                    } else {
                        WALK_USED
                    };
                    f(b.addr(), units_to_bytes(units) as u64, kind);
                    calls += 1;
                });
            }
        }
        l.for_each(|_, m| {
            f(m.base, m.len as u64, WALK_MAPPED);
            calls += 1;
        });
        calls
    })
}
