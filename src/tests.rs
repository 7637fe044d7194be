//! Heap scenario tests on a plain buffer, one per case, each followed by the
//! heap checker; and seeded random operation streams against a shadow model.

use crate::block::Block;
use crate::check::{check_heap_structure, Count};
use crate::block::units_to_bytes;
use crate::config::{request_units, MIN_UNITS};
use crate::heap::{Heap, HeapParams};
use crate::os::Source;
use crate::pagemap::PageMap;
use crate::filed::FiledMap;
use crate::region::RegionTable;
use std::alloc::{alloc_zeroed, Layout};

/// A memory source over a zeroed buffer: the "break" moves inside it.
pub struct BufferSource {
    base: usize,
    cap: usize,
    brk: usize,
    /// Refuse to move the break (forces mapped regions).
    pub no_brk: bool,
    /// Fail every request (out of memory).
    pub exhausted: bool,
}

impl BufferSource {
    pub fn new(cap: usize) -> Self {
        // SAFETY: a non-zero, page-aligned layout.
        let base = unsafe { alloc_zeroed(Layout::from_size_align(cap, 4096).unwrap()) } as usize;
        assert!(base != 0);
        // Start the break at an odd spot, as a real program's would be.
        BufferSource { base, cap, brk: base + 0x7a8, no_brk: false, exhausted: false }
    }
}

impl Source for BufferSource {
    fn brk_grow(&mut self, len: usize) -> Option<usize> {
        if self.no_brk || self.exhausted || self.brk + len > self.base + self.cap {
            return None;
        }
        let old = self.brk;
        self.brk += len;
        Some(old)
    }
    fn brk_shrink(&mut self, len: usize) -> bool {
        self.brk -= len;
        // Memory given back reads as zero when it comes back.
        // SAFETY: the range is inside our buffer.
        unsafe { std::ptr::write_bytes(self.brk as *mut u8, 0, len) };
        true
    }
    fn map(&mut self, len: usize) -> Option<usize> {
        if self.exhausted {
            return None;
        }
        // SAFETY: a non-zero, page-aligned layout; leaked on purpose.
        let p = unsafe { alloc_zeroed(Layout::from_size_align(len, 4096).unwrap()) } as usize;
        (p != 0).then_some(p)
    }
    unsafe fn unmap(&mut self, _addr: usize, _len: usize) {
        // Leaked, as every mapping of this source is.
    }
    unsafe fn purge(&mut self, addr: usize, len: usize) -> bool {
        // SAFETY: the caller gives a range of its own region.
        unsafe { std::ptr::write_bytes(addr as *mut u8, 0, len) };
        true
    }
}

fn params() -> HeapParams {
    HeapParams { trim_threshold: 128 * 1024, top_pad: 64 * 1024, page: 4096 }
}

fn new_heap(cap: usize) -> Heap<BufferSource> {
    // SAFETY: an all-zero page map is valid (no leaves yet).
    let map: &'static PageMap = unsafe { &*(alloc_zeroed(Layout::new::<PageMap>()) as *const PageMap) };
    // SAFETY: an all-zero filed map is valid (no leaves yet).
    let filed: &'static FiledMap = unsafe { &*(alloc_zeroed(Layout::new::<FiledMap>()) as *const FiledMap) };
    let regions: &'static RegionTable = Box::leak(Box::new(RegionTable::new(map, filed)));
    Heap::new(BufferSource::new(cap), regions, params(), 0)
}

fn check<S: Source>(h: &Heap<S>) {
    let mut c = Count(0, true);
    check_heap_structure(h, &mut c);
    assert_eq!(c.0, 0, "heap checker found {} problems", c.0);
}

fn alloc(h: &mut Heap<BufferSource>, bytes: usize) -> Block {
    // SAFETY: the heap is consistent between calls.
    let g = unsafe { h.alloc(request_units(bytes)) }.expect("allocation");
    check(h);
    g.block
}

fn free(h: &mut Heap<BufferSource>, b: Block) {
    // SAFETY: `b` is a block the test holds.
    unsafe { h.free(b) };
    check(h);
}

fn units(b: Block) -> u32 {
    // SAFETY: test blocks are live heap blocks.
    unsafe { b.units() }
}

/// Allocates `n` blocks of `bytes` with a guard block between each pair, so
/// freeing one never merges with another.
fn separated(h: &mut Heap<BufferSource>, sizes: &[usize]) -> Vec<Block> {
    let mut out = Vec::new();
    for &s in sizes {
        out.push(alloc(h, s));
        alloc(h, 16); // guard
    }
    out
}

#[test]
fn first_allocation_creates_a_region_with_an_aligned_payload() {
    let mut h = new_heap(1 << 22);
    let b = alloc(&mut h, 1);
    assert_eq!(b.payload() as usize % 16, 0);
    assert_eq!(units(b), MIN_UNITS);
    assert_eq!(h.regions.len(), 1);
}

#[test]
fn split_parks_the_remainder() {
    let mut h = new_heap(1 << 22);
    let v = separated(&mut h, &[500]);
    free(&mut h, v[0]);
    let free_before = h.counters.free_bytes;
    let b = alloc(&mut h, 100);
    assert_eq!(b, v[0], "best fit reuses the freed block");
    let rest = units(v[0].offset(units(b)));
    assert_eq!(h.counters.free_blocks, 1);
    assert_eq!(h.counters.free_bytes, units_to_bytes(rest));
    assert!(h.counters.free_bytes < free_before);
}

#[test]
fn a_run_of_neighbouring_frees_merges_into_the_parked_block() {
    let mut h = new_heap(1 << 22);
    let v: Vec<_> = (0..6).map(|_| alloc(&mut h, 100)).collect();
    alloc(&mut h, 16);
    for &b in &v {
        free(&mut h, b);
        assert_eq!(h.parked().0, v[0], "each free merges into the parked run");
    }
    assert_eq!(h.counters.free_blocks, 1);
    assert_eq!(h.parked().1, 6 * units(v[0]).min(request_units(100)));
}

#[test]
fn best_fit_prefers_a_smaller_filed_block_over_the_parked_one() {
    let mut h = new_heap(1 << 22);
    let v = separated(&mut h, &[200, 600]);
    free(&mut h, v[0]); // parked
    free(&mut h, v[1]); // parks; the 200-byte block is filed
    assert_eq!(h.parked().0, v[1]);
    assert_eq!(alloc(&mut h, 150), v[0], "the filed 200-byte block is the better fit");
    assert_eq!(alloc(&mut h, 500), v[1], "then the parked one");
}

#[test]
fn no_split_when_remainder_is_below_the_minimum_block() {
    let mut h = new_heap(1 << 22);
    let v = separated(&mut h, &[60]); // 64 bytes: 4 units
    free(&mut h, v[0]);
    let b = alloc(&mut h, 40); // 3 units wanted: 1 unit would remain
    assert_eq!(b, v[0]);
    assert_eq!(units(b), 4, "the whole block is handed out");
    assert_eq!(h.counters.free_blocks, 0);
}

#[test]
fn coalesce_with_next() {
    let mut h = new_heap(1 << 22);
    let a = alloc(&mut h, 100);
    let b = alloc(&mut h, 100);
    alloc(&mut h, 16);
    let both = units(a) + units(b);
    free(&mut h, b);
    free(&mut h, a);
    assert_eq!(h.counters.free_blocks, 1);
    assert_eq!(h.counters.free_bytes, units_to_bytes(both));
}

#[test]
fn coalesce_with_prev() {
    let mut h = new_heap(1 << 22);
    let a = alloc(&mut h, 100);
    let b = alloc(&mut h, 100);
    alloc(&mut h, 16);
    free(&mut h, a);
    free(&mut h, b);
    assert_eq!(h.counters.free_blocks, 1);
    // The merged block starts where `a` did.
    // SAFETY: `a` is now the start of a free block.
    assert_eq!(unsafe { a.units() }, 2 * request_units(100));
}

#[test]
fn coalesce_with_both_sides() {
    let mut h = new_heap(1 << 22);
    let a = alloc(&mut h, 100);
    let b = alloc(&mut h, 200);
    let c = alloc(&mut h, 300);
    alloc(&mut h, 16);
    free(&mut h, a);
    free(&mut h, c);
    assert_eq!(h.counters.free_blocks, 2);
    free(&mut h, b);
    assert_eq!(h.counters.free_blocks, 1);
    // SAFETY: `a` starts the merged free block.
    assert_eq!(unsafe { a.units() }, request_units(100) + request_units(200) + request_units(300));
}

#[test]
fn freeing_the_block_before_the_top_grows_the_top() {
    let mut h = new_heap(1 << 22);
    alloc(&mut h, 16);
    let b = alloc(&mut h, 1000);
    let (_, top_before) = h.top();
    let b_units = units(b);
    free(&mut h, b);
    let (top, top_after) = h.top();
    assert_eq!(top, b);
    assert_eq!(top_after, top_before + b_units);
    assert_eq!(h.counters.free_blocks, 0, "the top is not in a bin");
}

#[test]
fn best_fit_prefers_the_smallest_sufficient_small_block() {
    let mut h = new_heap(1 << 22);
    let v = separated(&mut h, &[300, 100, 200, 120]);
    for &b in &v {
        free(&mut h, b);
    }
    let got = alloc(&mut h, 110);
    assert_eq!(got, v[3], "120-byte block is the smallest that holds 110");
    let got = alloc(&mut h, 90);
    assert_eq!(got, v[1]);
}

#[test]
fn best_fit_prefers_the_smallest_sufficient_large_block_then_lowest_address() {
    let mut h = new_heap(1 << 24);
    let v = separated(&mut h, &[5000, 3000, 3000, 4000, 3000]);
    // Free the 3000s in reverse address order so LIFO would pick the last.
    for &i in &[4usize, 2, 1, 0, 3] {
        free(&mut h, v[i]);
    }
    let got = alloc(&mut h, 2500);
    assert_eq!(got, v[1], "smallest size, then lowest address");
    let got = alloc(&mut h, 3500);
    assert_eq!(got, v[3], "4000 beats 5000");
}

#[test]
fn best_fit_in_a_tree_bin_ignores_smaller_blocks_of_the_same_bin() {
    let mut h = new_heap(1 << 24);
    // All three land in one tree bin.
    let sizes = [17950, 18400, 18200];
    let bins: Vec<_> = sizes.iter().map(|&s| crate::bins::tree_index(request_units(s))).collect();
    assert!(request_units(17950) >= crate::config::SMALL_LIMIT_UNITS && bins.iter().all(|&i| i == bins[0]));
    let v = separated(&mut h, &sizes);
    for &b in &v {
        free(&mut h, b);
    }
    assert_eq!(alloc(&mut h, 18300), v[1]);
    assert_eq!(alloc(&mut h, 18000), v[2]);
}

#[test]
fn top_grows_the_heap_in_large_steps() {
    let mut h = new_heap(1 << 26);
    let before = h.counters.heap_bytes;
    for _ in 0..2000 {
        alloc(&mut h, 1000);
    }
    let grown = h.counters.heap_bytes - before;
    assert!(grown >= 2000 * 1008);
    assert_eq!(h.regions.len(), 1, "contiguous growth extends the region");
}

#[test]
fn trim_gives_back_the_top_beyond_the_threshold() {
    let mut h = new_heap(1 << 26);
    let keep = alloc(&mut h, 16);
    let big: Vec<_> = (0..1000).map(|_| alloc(&mut h, 1000)).collect();
    let grown = h.counters.heap_bytes;
    for b in big.into_iter().rev() {
        free(&mut h, b);
    }
    assert!(h.counters.heap_bytes < grown, "the top was trimmed");
    let (_, top) = h.top();
    assert!(units_to_bytes(top) <= params().trim_threshold);
    assert!(h.counters.released_bytes > 0);
    let _ = keep;
}

#[test]
fn calloc_grant_reports_no_dirty_bytes_for_fresh_top_memory() {
    let mut h = new_heap(1 << 22);
    // SAFETY: the heap is consistent between calls.
    let g = unsafe { h.alloc(request_units(500)) }.unwrap();
    assert_eq!(g.dirty, 0, "fresh memory needs no clearing");
    let b = g.block;
    // SAFETY: `b` is ours.
    unsafe { std::ptr::write_bytes(b.payload(), 0xAB, 500) };
    alloc(&mut h, 16);
    free(&mut h, b);
    // SAFETY: as above.
    let g = unsafe { h.alloc(request_units(500)) }.unwrap();
    assert_eq!(g.block, b);
    assert_eq!(g.dirty, Block::payload_bytes(units(b)), "reused memory must be cleared");
}

#[test]
fn fresh_memory_stays_zero_across_growth_and_trim() {
    let mut h = new_heap(1 << 26);
    let mut held = Vec::new();
    for round in 0..5 {
        for i in 0..400 {
            // SAFETY: the heap is consistent between calls.
            let g = unsafe { h.alloc(request_units(300 + i)) }.unwrap();
            let p = g.block.payload();
            let n = Block::payload_bytes(units(g.block));
            // Every byte the grant did not call dirty must be zero.
            // SAFETY: the payload is ours.
            let s = unsafe { std::slice::from_raw_parts(p, n) };
            assert!(s[g.dirty..].iter().all(|&x| x == 0), "round {round}: fresh bytes not zero");
            // SAFETY: as above.
            unsafe { std::ptr::write_bytes(p, 0xCD, n) };
            held.push(g.block);
        }
        while let Some(b) = held.pop() {
            free(&mut h, b);
        }
    }
}

#[test]
fn realloc_shrinks_in_place_and_frees_the_tail() {
    let mut h = new_heap(1 << 22);
    let a = alloc(&mut h, 1000);
    alloc(&mut h, 16);
    // SAFETY: `a` is held.
    let r = unsafe { h.resize(a, request_units(200), 200) };
    check(&h);
    assert_eq!(r, Some(a));
    assert_eq!(units(a), request_units(200));
    assert_eq!(h.counters.free_blocks, 1);
}

#[test]
fn realloc_grows_into_the_next_free_block() {
    let mut h = new_heap(1 << 22);
    let a = alloc(&mut h, 200);
    let b = alloc(&mut h, 800);
    alloc(&mut h, 16);
    free(&mut h, b);
    // SAFETY: `a` is held.
    let r = unsafe { h.resize(a, request_units(600), 200) };
    check(&h);
    assert_eq!(r, Some(a));
    assert_eq!(units(a), request_units(600));
    assert_eq!(h.counters.free_blocks, 1, "the rest of the neighbour stays free");
}

#[test]
fn realloc_grows_into_the_top() {
    let mut h = new_heap(1 << 26);
    let a = alloc(&mut h, 200);
    // SAFETY: `a` is held.
    let r = unsafe { h.resize(a, request_units(500_000), 200) };
    check(&h);
    assert_eq!(r, Some(a));
    assert_eq!(units(a), request_units(500_000));
}

#[test]
fn realloc_slides_down_into_a_free_predecessor_keeping_contents() {
    let mut h = new_heap(1 << 22);
    let p = alloc(&mut h, 500);
    let a = alloc(&mut h, 100);
    alloc(&mut h, 16);
    // SAFETY: `a` is held; its payload has 100 bytes.
    unsafe {
        for i in 0..100 {
            *a.payload().add(i) = i as u8;
        }
    }
    free(&mut h, p);
    // SAFETY: as above.
    let r = unsafe { h.resize(a, request_units(450), 100) }.expect("slide");
    check(&h);
    assert_eq!(r, p);
    // SAFETY: `r` is held with at least 450 bytes.
    unsafe {
        for i in 0..100 {
            assert_eq!(*r.payload().add(i), i as u8);
        }
    }
}

#[test]
fn realloc_sliding_down_leaves_no_block_start_at_the_old_address() {
    // 300 bytes grown to 600 slide into a free 2,000-byte predecessor: the
    // old header lies beyond the 300 bytes copied, in the new block. A
    // stale free of the old pointer must find no block start there.
    let mut h = new_heap(1 << 22);
    let p = alloc(&mut h, 2000);
    let a = alloc(&mut h, 300);
    alloc(&mut h, 300);
    free(&mut h, p);
    // SAFETY: `a` is held with 300 bytes.
    let r = unsafe { h.resize(a, request_units(600), 300) }.expect("slide");
    check(&h);
    assert_eq!(r, p);
    // SAFETY: `a` lies inside the new block `r`, in the heap's region.
    assert!(!crate::block::is_block_header(a.addr(), unsafe { a.header() }), "the old header is still a block start");
}

#[test]
fn realloc_fails_in_place_when_neighbours_are_held() {
    let mut h = new_heap(1 << 22);
    let a = alloc(&mut h, 200);
    alloc(&mut h, 16);
    // SAFETY: `a` is held.
    assert_eq!(unsafe { h.resize(a, request_units(400), 200) }, None);
    check(&h);
}

#[test]
fn aligned_allocation_frees_the_lead_and_tail() {
    let mut h = new_heap(1 << 24);
    alloc(&mut h, 16);
    for align in [32usize, 64, 256, 4096, 65536] {
        // SAFETY: the heap is consistent between calls.
        let b = unsafe { h.alloc_aligned(align, request_units(100)) }.expect("aligned");
        check(&h);
        assert_eq!(b.payload() as usize % align, 0, "align {align}");
        assert!(Block::payload_bytes(units(b)) >= 100);
    }
}

#[test]
fn a_freed_aligned_block_serves_the_same_aligned_request_again() {
    let mut h = new_heap(1 << 24);
    alloc(&mut h, 16);
    for (align, n) in [(64usize, 23450usize), (128, 500), (256, 100)] {
        // SAFETY: the heap is consistent between calls.
        let a = unsafe { h.alloc_aligned(align, request_units(n)) }.expect("aligned");
        // Keeps `a` from merging with what follows.
        let apart = alloc(&mut h, 512);
        free(&mut h, a);
        check(&h);
        // The freed block fits as it is, with no room for a lead: it is
        // used again (a request with room for any lead would not fit it).
        // SAFETY: as above.
        let b = unsafe { h.alloc_aligned(align, request_units(n)) }.expect("aligned");
        check(&h);
        assert_eq!(b, a, "align {align}, {n} bytes");
        free(&mut h, b);
        free(&mut h, apart);
        check(&h);
    }
}

#[test]
fn heap_falls_back_to_mapped_regions_when_the_break_cannot_move() {
    let mut h = new_heap(1 << 20);
    h.source.no_brk = true;
    let a = alloc(&mut h, 1000);
    assert_eq!(h.regions.kind(h.current_region()), crate::region::RegionKind::Mapped);
    free(&mut h, a);
}

#[test]
fn out_of_memory_returns_none_and_leaves_the_heap_consistent() {
    let mut h = new_heap(1 << 20);
    let a = alloc(&mut h, 1000);
    h.source.exhausted = true;
    // SAFETY: the heap is consistent between calls.
    assert!(unsafe { h.alloc(request_units(900_000)) }.is_none());
    check(&h);
    h.source.exhausted = false;
    free(&mut h, a);
}

#[test]
fn purge_keeps_free_block_tags_intact() {
    let mut h = new_heap(1 << 24);
    let a = alloc(&mut h, 200_000);
    alloc(&mut h, 16);
    free(&mut h, a);
    // SAFETY: the heap is consistent.
    let released = unsafe { h.purge_free_blocks() };
    assert!(released >= 4096 * 40);
    check(&h);
    let b = alloc(&mut h, 200_000);
    assert_eq!(b, a);
}

// ----- big blocks (above the small form's 1 MiB) --------------------------------

const MIB: usize = 1 << 20;

/// Where held block `b` starts in the tiling, its whole size, its form.
fn span(b: Block) -> (Block, u32, bool) {
    // SAFETY: test blocks are live heap blocks.
    unsafe { b.held_span() }
}

/// Fills `n` bytes of `b`'s payload with a pattern of `seed`.
fn pattern(b: Block, n: usize, seed: u8) {
    // SAFETY: the payload holds at least `n` bytes.
    unsafe {
        for i in (0..n).step_by(4093).chain([n - 1]) {
            *b.payload().add(i) = seed.wrapping_add(i as u8);
        }
    }
}

fn has_pattern(b: Block, n: usize, seed: u8) -> bool {
    // SAFETY: as in `pattern`.
    unsafe { (0..n).step_by(4093).chain([n - 1]).all(|i| *b.payload().add(i) == seed.wrapping_add(i as u8)) }
}

#[test]
fn big_request_gets_a_big_form_block() {
    let mut h = new_heap(1 << 26);
    let small = alloc(&mut h, crate::config::MAX_HEAP_REQUEST);
    assert!(!span(small).2, "the largest small-form request keeps the small form");
    let b = alloc(&mut h, 3 * MIB);
    let (s, total, big) = span(b);
    assert!(big);
    assert_eq!(b.payload() as usize % 16, 0);
    assert_eq!(s.body(), b);
    assert_eq!(total, request_units(3 * MIB) + crate::block::BIG_PREFIX_UNITS);
    assert_eq!(Block::payload_bytes(units(b)), units_to_bytes(total) - 20);
    assert!(Block::payload_bytes(units(b)) >= 3 * MIB);
    assert_eq!(h.counters.used_bytes, units_to_bytes(total + units(small)));
    pattern(b, 3 * MIB, 7);
    free(&mut h, b);
    free(&mut h, small);
    assert_eq!(h.counters.used_blocks, 0);
}

#[test]
fn big_block_split_parks_the_remainder() {
    let mut h = new_heap(1 << 26);
    let v = separated(&mut h, &[8 * MIB]);
    let (s, whole, _) = span(v[0]);
    free(&mut h, v[0]);
    assert_eq!(h.parked(), (s, whole), "the freed big block is one free block");
    let b = alloc(&mut h, 3 * MIB);
    let (s2, part, big) = span(b);
    assert!(big);
    assert_eq!(s2, s, "best fit reuses the freed block from its start");
    assert_eq!(h.parked(), (s.offset(part), whole - part), "the rest is parked");
    assert_eq!(h.counters.free_bytes, units_to_bytes(whole - part));
}

#[test]
fn big_block_split_off_small_blocks_from_its_space() {
    let mut h = new_heap(1 << 26);
    let v = separated(&mut h, &[2 * MIB]);
    let (s, _, _) = span(v[0]);
    free(&mut h, v[0]);
    let a = alloc(&mut h, 100);
    assert_eq!(a, s, "a small block takes the front of a big block's space");
    let b = alloc(&mut h, MIB + MIB / 2);
    assert!(span(b).2);
    assert_eq!(span(b).0, s.offset(units(a)));
    free(&mut h, a);
    free(&mut h, b);
}

#[test]
fn coalesce_big_blocks_with_both_sides() {
    let mut h = new_heap(1 << 26);
    let a = alloc(&mut h, 2 * MIB);
    let b = alloc(&mut h, 3 * MIB);
    let c = alloc(&mut h, 200);
    alloc(&mut h, 16);
    let (sa, ua, _) = span(a);
    let (_, ub, _) = span(b);
    let uc = units(c);
    free(&mut h, a);
    free(&mut h, c);
    assert_eq!(h.counters.free_blocks, 2);
    free(&mut h, b);
    assert_eq!(h.counters.free_blocks, 1);
    // SAFETY: `sa` starts the merged free block.
    assert_eq!(unsafe { sa.units() }, ua + ub + uc);
    let d = alloc(&mut h, 5 * MIB);
    assert_eq!(span(d).0, sa, "the merged space serves a larger big block");
}

#[test]
fn freeing_a_big_block_before_the_top_grows_the_top() {
    let mut h = new_heap(1 << 26);
    alloc(&mut h, 16);
    let b = alloc(&mut h, 2 * MIB);
    let (s, _, _) = span(b);
    free(&mut h, b);
    assert_eq!(h.top().0, s);
}

#[test]
fn realloc_grows_a_big_block_into_the_next_free_block() {
    let mut h = new_heap(1 << 26);
    let a = alloc(&mut h, 2 * MIB);
    let b = alloc(&mut h, 4 * MIB);
    alloc(&mut h, 16);
    pattern(a, 2 * MIB, 3);
    free(&mut h, b);
    // SAFETY: `a` is held.
    let r = unsafe { h.resize(a, request_units(5 * MIB), 2 * MIB) };
    check(&h);
    assert_eq!(r, Some(a), "in place");
    assert!(Block::payload_bytes(units(a)) >= 5 * MIB);
    assert!(has_pattern(a, 2 * MIB, 3));
    assert_eq!(h.counters.free_blocks, 1, "the rest of the neighbour stays free");
}

#[test]
fn realloc_grows_a_small_block_past_the_small_form_only_by_moving() {
    let mut h = new_heap(1 << 26);
    let a = alloc(&mut h, 500_000);
    // Into the top, or a free neighbour: the small form cannot say 2 MiB.
    // SAFETY: `a` is held.
    assert_eq!(unsafe { h.resize(a, request_units(2 * MIB), 100) }, None);
    check(&h);
    let b = alloc(&mut h, 16);
    free(&mut h, b);
    // SAFETY: as above.
    assert_eq!(unsafe { h.resize(a, request_units(2 * MIB), 100) }, None);
    check(&h);
}

#[test]
fn realloc_grows_a_big_block_into_the_top() {
    let mut h = new_heap(1 << 27);
    let a = alloc(&mut h, 2 * MIB);
    pattern(a, 2 * MIB, 9);
    // SAFETY: `a` is held.
    let r = unsafe { h.resize(a, request_units(40 * MIB), 2 * MIB) };
    check(&h);
    assert_eq!(r, Some(a));
    assert!(Block::payload_bytes(units(a)) >= 40 * MIB);
    assert!(has_pattern(a, 2 * MIB, 9));
    assert_eq!(h.regions.len(), 1, "the region grew in place");
}

#[test]
fn realloc_shrinks_a_big_block_in_place_keeping_its_form() {
    let mut h = new_heap(1 << 26);
    let a = alloc(&mut h, 6 * MIB);
    alloc(&mut h, 16);
    pattern(a, 1000, 5);
    for n in [3 * MIB, MIB / 2, 1000] {
        // SAFETY: `a` is held.
        let r = unsafe { h.resize(a, request_units(n), n.min(1000)) };
        check(&h);
        assert_eq!(r, Some(a), "shrunk to {n} in place");
        assert!(span(a).2, "still the big form");
        assert_eq!(units(a), request_units(n));
        assert!(has_pattern(a, 1000, 5));
    }
    assert_eq!(h.counters.free_blocks, 1, "the freed tails merged");
    // And it grows back in place into what it gave up.
    // SAFETY: as above.
    assert_eq!(unsafe { h.resize(a, request_units(4 * MIB), 1000) }, Some(a));
    check(&h);
}

#[test]
fn realloc_slides_a_big_block_down_into_a_free_predecessor() {
    let mut h = new_heap(1 << 26);
    let p = alloc(&mut h, 3 * MIB);
    let a = alloc(&mut h, 2 * MIB);
    alloc(&mut h, 16);
    pattern(a, 2 * MIB, 11);
    let (sp, _, _) = span(p);
    free(&mut h, p);
    // SAFETY: `a` is held.
    let r = unsafe { h.resize(a, request_units(4 * MIB), 2 * MIB) }.expect("slide");
    check(&h);
    assert_eq!(span(r).0, sp);
    assert!(span(r).2);
    assert!(Block::payload_bytes(units(r)) >= 4 * MIB);
    assert!(has_pattern(r, 2 * MIB, 11));
}

#[test]
fn aligned_big_allocation_frees_the_lead_and_tail() {
    let mut h = new_heap(1 << 27);
    alloc(&mut h, 16);
    for align in [32usize, 4096, 65536] {
        for n in [100, 2 * MIB] {
            // SAFETY: the heap is consistent between calls.
            let b = unsafe { h.alloc_aligned(align, request_units(n)) }.expect("aligned");
            check(&h);
            assert_eq!(b.payload() as usize % align, 0, "align {align}");
            assert!(Block::payload_bytes(units(b)) >= n);
            assert_eq!(span(b).2, n > MIB);
        }
    }
}

#[test]
fn big_blocks_in_mapped_regions() {
    let mut h = new_heap(1 << 20);
    h.source.no_brk = true;
    let a = alloc(&mut h, 10 * MIB);
    let b = alloc(&mut h, 100 * MIB);
    assert!(span(a).2 && span(b).2);
    assert!(h.regions.len() >= 2, "the 100 MiB block has a region of its own size");
    free(&mut h, a);
    free(&mut h, b);
}

#[test]
fn a_freed_big_block_is_no_longer_a_block() {
    let mut h = new_heap(1 << 26);
    let a = alloc(&mut h, 2 * MIB);
    alloc(&mut h, 16);
    let (s, _, _) = span(a);
    free(&mut h, a);
    // SAFETY: `a` and `s` lie in the region.
    unsafe {
        assert!(!crate::block::is_block_header(a.addr(), a.header()), "the body was marked");
        assert_eq!(s.big_units(), None, "the head is a free header");
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Mostly small sizes, sometimes large ones; with `big`, one in 40
    /// above the small form's 1 MiB.
    fn size(&mut self, big: bool) -> usize {
        match self.below(40) {
            0..=23 => self.below(256) as usize,
            24..=35 => self.below(4096) as usize,
            39 if big => (1 << 20) + self.below(5 << 20) as usize,
            _ => self.below(200_000) as usize,
        }
    }
}

struct Live {
    b: Block,
    len: usize,
    seed: u8,
}

fn fill(l: &Live) {
    // SAFETY: the payload holds at least `len` bytes.
    unsafe {
        for i in 0..l.len {
            *l.b.payload().add(i) = l.seed.wrapping_add(i as u8);
        }
    }
}

fn verify(l: &Live, upto: usize) {
    // SAFETY: as in `fill`.
    unsafe {
        for i in 0..upto.min(l.len) {
            assert_eq!(*l.b.payload().add(i), l.seed.wrapping_add(i as u8), "content lost at byte {i}");
        }
    }
}

/// Random malloc/free/realloc/memalign against a shadow list of live blocks
/// with content patterns; the checker runs after every step.
fn random_stream(seed: u64, steps: usize, check_every: usize, big: bool) {
    let mut h = new_heap(1 << 28);
    let mut rng = Rng(seed);
    let mut live: Vec<Live> = Vec::new();
    // Big-form blocks made, and big sizes resized into.
    let mut bigs = 0;
    for step in 0..steps {
        // With big blocks, the live set stays near 200 blocks (a few hundred
        // MiB at most): frees then outnumber allocations.
        let op = match rng.below(10) {
            0..=4 if big && live.len() > 200 => 5,
            op => op,
        };
        match op {
            0..=3 => {
                let len = rng.size(big);
                // SAFETY: the heap is consistent between calls.
                if let Some(g) = unsafe { h.alloc(request_units(len)) } {
                    let l = Live { b: g.block, len, seed: rng.next() as u8 };
                    assert_eq!(l.b.payload() as usize % 16, 0);
                    bigs += span(l.b).2 as usize;
                    fill(&l);
                    live.push(l);
                }
            }
            4 => {
                let align = 32usize << rng.below(8);
                let len = rng.size(big);
                // SAFETY: as above.
                if let Some(b) = unsafe { h.alloc_aligned(align, request_units(len)) } {
                    assert_eq!(b.payload() as usize % align, 0);
                    let l = Live { b, len, seed: rng.next() as u8 };
                    bigs += span(l.b).2 as usize;
                    fill(&l);
                    live.push(l);
                }
            }
            5..=7 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                let l = live.swap_remove(i);
                verify(&l, l.len);
                // SAFETY: `l.b` is held.
                unsafe { h.free(l.b) };
            }
            8..=9 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                let new_len = rng.size(big);
                let l = &mut live[i];
                // SAFETY: `l.b` is held.
                if let Some(nb) = unsafe { h.resize(l.b, request_units(new_len), l.len.min(new_len)) } {
                    let kept = l.len.min(new_len);
                    bigs += (new_len > crate::config::MAX_HEAP_REQUEST) as usize;
                    l.b = nb;
                    verify(l, kept);
                    l.len = new_len;
                    fill(l);
                }
            }
            _ => {}
        }
        if step % check_every == 0 {
            check(&h);
        }
        // Live blocks never overlap: the checker proves the tiling, and
        // every live block must be a distinct used block of it.
        if step % (check_every * 50) == 0 {
            let mut addrs: Vec<usize> = live.iter().map(|l| l.b.addr()).collect();
            addrs.sort_unstable();
            addrs.dedup();
            assert_eq!(addrs.len(), live.len(), "two live blocks share a start");
            for l in &live {
                // SAFETY: live blocks are held.
                assert!(unsafe { l.b.is_used() });
                assert!(Block::payload_bytes(units(l.b)) >= l.len);
            }
        }
    }
    for l in live.drain(..) {
        verify(&l, l.len);
        // SAFETY: `l.b` is held.
        unsafe { h.free(l.b) };
    }
    check(&h);
    assert_eq!(h.counters.used_blocks, 0);
    assert!(!big || bigs >= steps / 200, "only {bigs} big blocks in {steps} steps");
}

#[test]
fn random_stream_seed_1() {
    random_stream(1, 20_000, 1, false);
}

#[test]
fn random_stream_seed_2() {
    random_stream(0xdead_beef, 20_000, 1, false);
}

#[test]
fn random_stream_long() {
    random_stream(42, 300_000, 97, false);
}

/// With big blocks (1 to 6 MiB) among the others: split, merged, resized
/// and aligned beside small ones.
#[test]
fn random_stream_with_big_blocks() {
    random_stream(7, 20_000, 1, true);
    random_stream(0xb16, 60_000, 31, true);
}

// ----- the layer rule ----------------------------------------------------------

/// The modules a source file names through `crate::` paths (`use` lines,
/// grouped imports and inline paths), outside comments and its test module.
fn crate_paths(src: &str) -> std::collections::BTreeSet<String> {
    let code: String = src
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap()
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = std::collections::BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the names at depth one.
            let (mut depth, mut item) = (1, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        out.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 {
                    item.push(c);
                }
            }
            if !item.trim().is_empty() {
                out.insert(ident(item.trim()));
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

/// Every edge between modules points down the table in `lib.rs`: a module
/// names only modules listed before it.
#[test]
fn layers_only_point_down() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers = crate::LAYERS;
    let rank = |m: &str| layers.iter().position(|l| *l == m);
    let mut bad = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if ["lib", "tests", "fuzzcore"].contains(&name.as_str()) {
            continue;
        }
        let Some(me) = rank(&name) else {
            bad.push(format!("src/{name}.rs is not in lib.rs's LAYERS table"));
            continue;
        };
        seen += 1;
        for dep in crate_paths(&std::fs::read_to_string(&path).unwrap()) {
            match rank(&dep) {
                Some(d) if d < me => {}
                Some(_) => bad.push(format!("{name} -> {dep}: {dep} is not below {name}")),
                None => bad.push(format!("{name} -> {dep}: {dep} is not a module in LAYERS")),
            }
        }
    }
    assert_eq!(seen, layers.len(), "every module in LAYERS has its file");
    assert!(bad.is_empty(), "edges against the layer rule:\n{}", bad.join("\n"));
}

#[test]
fn crate_paths_reads_uses_groups_and_inline_paths() {
    let src = "use crate::a::X;\nuse crate::{b, c::{D, E}, f};\nfn g() { crate::h::i(); } // crate::j\n#[cfg(test)]\nmod tests { use crate::k; }";
    let found: Vec<_> = crate_paths(src).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "f", "h"]);
}

// ----- slabs ------------------------------------------------------------------

mod slabs {
    use super::{check, new_heap, BufferSource};
    use crate::block::{used_header, Block};
    use crate::heap::Heap;
    use crate::pagemap::Owner;
    use crate::slab::{blocks_per_slab, index_of, GiveFault, Slabs, CONTAINER_UNITS, NIL, SLAB_BYTES};
    use core::sync::atomic::AtomicU32;

    /// A heap and slabs over its page map; owner 1's current slab hint.
    fn setup() -> (Heap<BufferSource>, Box<Slabs>, AtomicU32) {
        let h = new_heap(8 << 20);
        let s = Box::new(Slabs::new(h.regions.map()));
        (h, s, AtomicU32::new(NIL))
    }

    fn take(h: &mut Heap<BufferSource>, s: &mut Slabs, owner: usize, cur: &AtomicU32, units: u32, n: usize) -> Vec<Block> {
        let mut out = vec![Block::NULL; n];
        // SAFETY: containers are page-aligned heap blocks of the test heap,
        // handed over for good.
        let k = unsafe { s.take(units, &mut out, owner, cur, || h.alloc_aligned(SLAB_BYTES, CONTAINER_UNITS)) }
            .expect("no block written after free");
        out.truncate(k);
        check_all(h, s);
        out
    }

    fn give(h: &mut Heap<BufferSource>, s: &mut Slabs, b: Block) -> Result<(), GiveFault> {
        // SAFETY: the test gives back blocks it took (or, on purpose, not).
        let r = unsafe { s.give(b, |c| h.free(c)) };
        check_all(h, s);
        r
    }

    /// The heap checker and the slab checker, after every step.
    fn check_all(h: &Heap<BufferSource>, s: &mut Slabs) {
        check(h);
        // SAFETY: the slabs' pages are the test heap's.
        unsafe { s.check(|what, a| panic!("slab checker: {what} at {a:#x}")) };
    }

    fn page_of(b: Block) -> usize {
        b.payload() as usize & !(SLAB_BYTES - 1)
    }

    #[test]
    fn slab_hands_out_consecutive_blocks_of_one_page_with_used_headers() {
        let (mut h, mut s, cur) = setup();
        let v = take(&mut h, &mut s, 1, &cur, 3, 5);
        assert_eq!(v.len(), 5);
        let page = page_of(v[0]);
        for (i, &b) in v.iter().enumerate() {
            assert_eq!(page_of(b), page);
            assert_eq!(index_of(b, page, 3), Some(i));
            // SAFETY: a block just taken.
            assert_eq!(unsafe { b.header() }, used_header(b.addr(), 3));
            assert_eq!(b.payload() as usize % 16, 0);
        }
        assert_eq!(s.counters.slabs, 1);
        assert_eq!(h.regions.map().owner(page), Owner::Slab { id: 0, units: 3 });
    }

    #[test]
    fn slab_goes_back_to_the_heap_when_its_last_block_returns() {
        let (mut h, mut s, cur) = setup();
        let used_before = h.counters.used_bytes;
        let n = blocks_per_slab(17);
        let v = take(&mut h, &mut s, 1, &cur, 17, n);
        let page = page_of(v[0]);
        assert!(v.iter().all(|&b| page_of(b) == page), "one slab holds {n} blocks of 17 units");
        for &b in &v {
            give(&mut h, &mut s, b).unwrap();
        }
        assert_eq!(s.counters.slabs, 0);
        assert_eq!(h.counters.used_bytes, used_before);
        assert!(matches!(h.regions.map().owner(page), Owner::Region { .. }));
    }

    #[test]
    fn slab_reports_a_block_given_back_twice() {
        let (mut h, mut s, cur) = setup();
        let v = take(&mut h, &mut s, 1, &cur, 2, 2);
        give(&mut h, &mut s, v[0]).unwrap();
        assert_eq!(give(&mut h, &mut s, v[0]), Err(GiveFault::AlreadyFree));
    }

    #[test]
    fn slab_refuses_an_address_inside_a_block() {
        let (mut h, mut s, cur) = setup();
        let v = take(&mut h, &mut s, 4, &cur, 4, 1);
        let inside = v[0].offset(1);
        assert_eq!(index_of(inside, page_of(v[0]), 4), None);
        assert_eq!(give(&mut h, &mut s, inside), Err(GiveFault::NotABlock));
    }

    #[test]
    fn slab_reports_a_block_written_after_it_was_freed() {
        let (mut h, mut s, cur) = setup();
        let v = take(&mut h, &mut s, 1, &cur, 5, 2);
        give(&mut h, &mut s, v[0]).unwrap();
        // SAFETY: the block's payload lies in the slab's page (a use after
        // free, on purpose).
        unsafe { (v[0].payload() as *mut u64).write(0x4141_4141_4141_4141) };
        let mut out = vec![Block::NULL; 4];
        // SAFETY: as in `take`.
        let r = unsafe { s.take(5, &mut out, 1, &cur, || h.alloc_aligned(SLAB_BYTES, CONTAINER_UNITS)) };
        assert_eq!(r, Err(v[0]));
    }

    #[test]
    fn slab_reports_a_free_block_whose_header_an_overflow_rewrote() {
        let (mut h, mut s, cur) = setup();
        let v = take(&mut h, &mut s, 1, &cur, 3, 2);
        give(&mut h, &mut s, v[1]).unwrap();
        // SAFETY: an overflow from v[0] into v[1]'s header, on purpose.
        unsafe { v[1].set_header(used_header(v[1].addr(), 3)) };
        let mut out = vec![Block::NULL; 4];
        // SAFETY: as in `take`.
        let r = unsafe { s.take(3, &mut out, 1, &cur, || h.alloc_aligned(SLAB_BYTES, CONTAINER_UNITS)) };
        assert_eq!(r, Err(v[1]));
    }

    #[test]
    fn slab_clears_every_header_position_past_its_last_block() {
        let (mut h, mut s, cur) = setup();
        // Dirty heap memory, freed: the slab's container is carved from it.
        let big = super::alloc(&mut h, 64 * 1024);
        // SAFETY: `big` is held with 64 KiB.
        unsafe { core::ptr::write_bytes(big.payload(), 0xAB, 64 * 1024) };
        super::free(&mut h, big);
        let v = take(&mut h, &mut s, 1, &cur, 2, 1);
        // SAFETY: the block lies in the dirty memory.
        assert!(v[0].addr() > big.addr() && v[0].addr() < big.addr() + 64 * 1024, "the slab reuses the freed memory");
        let page = page_of(v[0]);
        let spare = crate::slab::block_at(page, 2, blocks_per_slab(2));
        assert!(spare.addr() < page + SLAB_BYTES - 4, "a 2-unit slab has slack");
        // SAFETY: the slack lies in the slab's page.
        assert_eq!(unsafe { spare.header() }, 0);
    }

    #[test]
    fn slabs_of_two_threads_never_share_a_page() {
        let (mut h, mut s, cur1) = setup();
        let cur2 = AtomicU32::new(NIL);
        let a = take(&mut h, &mut s, 1, &cur1, 3, 4);
        let b = take(&mut h, &mut s, 2, &cur2, 3, 4);
        let c = take(&mut h, &mut s, 1, &cur1, 3, 4);
        assert_ne!(page_of(a[0]), page_of(b[0]));
        assert_eq!(page_of(a[0]), page_of(c[0]), "a thread keeps its slab while it has room");
        // The first thread's exit lets the second use its slab.
        s.disown(1, core::slice::from_ref(&cur1));
        let full_b = blocks_per_slab(3) - 4;
        let _ = take(&mut h, &mut s, 2, &cur2, 3, full_b);
        let d = take(&mut h, &mut s, 2, &cur2, 3, 1);
        assert_eq!(page_of(d[0]), page_of(a[0]));
    }

    #[test]
    fn slabs_made_one_after_another_tile_the_heap() {
        let (mut h, mut s, cur) = setup();
        let n = blocks_per_slab(2);
        let v = take(&mut h, &mut s, 1, &cur, 2, 3 * n);
        let pages: Vec<usize> = [0, n, 2 * n].iter().map(|&i| page_of(v[i])).collect();
        assert_eq!(pages[1] - pages[0], SLAB_BYTES);
        assert_eq!(pages[2] - pages[1], SLAB_BYTES);
        assert_eq!(s.counters.slabs, 3);
    }
}

/// Two heaps (arenas 0 and 1) over one region table, as the process has: each
/// grows regions of its own, each checks clean against its own regions only,
/// and a block filed in the wrong arena's bins is found.
#[test]
fn arenas_share_the_region_table_and_keep_their_own_blocks() {
    // SAFETY: an all-zero page map is valid (no leaves yet).
    let map: &'static PageMap = unsafe { &*(alloc_zeroed(Layout::new::<PageMap>()) as *const PageMap) };
    // SAFETY: an all-zero filed map is valid (no leaves yet).
    let filed: &'static FiledMap = unsafe { &*(alloc_zeroed(Layout::new::<FiledMap>()) as *const FiledMap) };
    let regions: &'static RegionTable = Box::leak(Box::new(RegionTable::new(map, filed)));
    let mut a = Heap::new(BufferSource::new(1 << 22), regions, params(), 0);
    let mut b = Heap::new(BufferSource::new(1 << 22), regions, params(), 1);
    let xa: Vec<Block> = (0..50).map(|i| alloc(&mut a, 2000 + 16 * i)).collect();
    let xb: Vec<Block> = (0..50).map(|i| alloc(&mut b, 3000 + 16 * i)).collect();
    assert!(regions.len() >= 2);
    for (&p, &q) in xa.iter().zip(&xb) {
        assert_eq!(regions.arena(regions.find(p.addr()).unwrap()), 0);
        assert_eq!(regions.arena(regions.find(q.addr()).unwrap()), 1);
    }
    for (i, (&p, &q)) in xa.iter().zip(&xb).enumerate() {
        if i % 4 == 1 {
            free(&mut a, p);
            free(&mut b, q);
        }
    }
    check(&a);
    check(&b);
    // A block of arena 1, between two held blocks, given to arena 0's heap:
    // the checker finds it in the wrong arena's bins.
    // SAFETY: a held block of heap `b`, given to the wrong heap on purpose;
    // its neighbours are held, so nothing merges.
    unsafe { a.free(xb[3]) };
    let mut c = Count(0, false);
    check_heap_structure(&a, &mut c);
    assert!(c.0 > 0, "a block of another arena in the bins went unnoticed");
}

/// A top in a mapped region (the break refused) is purged, not cut, so it
/// stays large: a later free into it purges only what was written since,
/// and only once that passes the trim threshold.
#[test]
fn a_purged_top_is_not_purged_again_until_written() {
    let mut h = new_heap(1 << 24);
    h.source.no_brk = true;
    let keep = alloc(&mut h, 64);
    let big = alloc(&mut h, 600 * 1024);
    let before = h.counters.released_bytes;
    free(&mut h, big); // into the top: dirty beyond the threshold, purged
    let first = h.counters.released_bytes - before;
    assert!(first >= 500 * 1024, "the written part of the top was purged ({first} bytes)");
    let small = alloc(&mut h, 64 * 1024);
    let mid = h.counters.released_bytes;
    free(&mut h, small); // 64 KiB written: below the threshold, nothing purged
    assert_eq!(h.counters.released_bytes, mid, "a small write into a purged top purged it again");
    let again = alloc(&mut h, 300 * 1024);
    free(&mut h, again); // 300 KiB written: purged, and only about that much
    let second = h.counters.released_bytes - mid;
    assert!(second > 0 && second <= 400 * 1024, "purged {second} bytes, not just what was written");
    free(&mut h, keep);
}
