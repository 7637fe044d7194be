//! The fuzzing core: turns a byte string into a sequence of calls on the
//! real allocator (through [`crate::api`], the layer under the C exports)
//! and checks every result against a shadow model of the live blocks.
//!
//! [`run`] is called by the cargo-fuzz target in `fuzz/` with the fuzzer's
//! input, and by the tests at the end of this file with fixed pseudo-random
//! inputs, so `cargo test` runs it too.
//!
//! # What is checked
//!
//! - every new block is 16-aligned (or aligned as requested), its usable
//!   size is at least the request, and its range `[p, p + usable)` overlaps
//!   no other live block's range (a sorted map of live ranges);
//! - every block is filled with a byte pattern derived from its own seed,
//!   up to its *usable* size (writing there is allowed), and the pattern is
//!   checked before every free and realloc; after a realloc the first
//!   `min(old request, new request)` bytes must have been carried over;
//! - calloc memory reads as zero;
//! - requests that cannot succeed (sizes above `PTRDIFF_MAX`, overflowing
//!   `nmemb * size`, invalid alignments) fail with the right errno and
//!   leave the block they were given untouched;
//! - with mappings turned off for a while (as `M_MMAP_MAX=0`), requests
//!   above 1 MiB come from the heap in big blocks, under the same checks;
//! - `check_heap` finds no problem every [`CHECK_EVERY`] operations and at
//!   the end of the input, after everything was freed (so inputs are
//!   independent of each other).
//!
//! The total of live usable bytes stays below [`LIVE_BYTES_CAP`], so the
//! fuzzer does not run out of memory.
//!
//! Allocation failures of reasonable requests are errors, unless the
//! failure injection (`FITALLOC_FAIL_EVERY`) is on: then they must leave the
//! model's blocks intact and set `ENOMEM`.
//!
//! Set `FITALLOC_FUZZ_TRACE=1` to print every operation on stderr (to turn
//! a crashing input into a readable reproduction).

extern crate std;

use crate::api;
use std::collections::BTreeMap;
use std::format;
use std::string::String;
use std::vec::Vec;

/// Run the heap checker every this many operations (and at the end).
pub const CHECK_EVERY: usize = 64;
/// Upper bound of the live blocks' usable bytes.
pub const LIVE_BYTES_CAP: usize = 64 << 20;
/// Most blocks alive at once.
pub const MAX_LIVE: usize = 1024;
/// Most operations one input runs.
pub const MAX_OPS: usize = 20_000;
/// Blocks up to this many bytes are filled and checked entirely; larger
/// ones at the head, the tail and samples in between.
const FULL_FILL: usize = 64 << 10;
/// Stride and length of the samples in large blocks.
const SAMPLE_STRIDE: usize = 32 << 10;
const SAMPLE_LEN: usize = 64;
const EDGE: usize = 4096;

/// Payload sizes that sit on the allocator's boundaries (thread-cache limit,
/// bin limits, the mmap threshold, the largest heap request, pages).
fn boundary_sizes() -> [usize; 20] {
    let max_heap = crate::config::MAX_HEAP_REQUEST;
    [
        1,
        12,
        16,
        24,
        28,
        32,
        44,
        1004,
        1020,
        1024,
        4096,
        65536,
        128 << 10,
        (128 << 10) - 4,
        256 << 10,
        512 << 10,
        max_heap - 16,
        max_heap,
        max_heap + 1,
        1 << 20,
    ]
}

/// Sizes no allocator can satisfy on a 64-bit machine.
const IMPOSSIBLE: [usize; 7] = [
    usize::MAX,
    usize::MAX - 4095,
    isize::MAX as usize + 1,
    isize::MAX as usize,
    isize::MAX as usize - 4095,
    1 << 62,
    1 << 58,
];

// ----- input bytes -------------------------------------------------------------

/// The fuzzer's bytes, read front to back; reads past the end give zeros.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A request size: mostly thread-cache sizes, some heap sizes, a few
    /// mapped ones, and sizes on the boundaries.
    fn size(&mut self) -> usize {
        match self.u8() % 32 {
            0 => 0,
            1..=9 => 1 + self.u8() as usize % 64,
            10..=17 => 1 + self.u16() as usize % 1024,
            18..=21 => 1025 + self.u16() as usize % (8 << 10),
            22..=24 => 1 + self.u32() as usize % (128 << 10),
            25..=26 => (128 << 10) + self.u32() as usize % ((1 << 20) - (64 << 10)),
            27 => (1 << 20) + self.u32() as usize % (7 << 20),
            _ => {
                let b = boundary_sizes();
                let base = b[self.u8() as usize % b.len()];
                let delta = (self.u8() % 9) as isize - 4;
                base.saturating_add_signed(delta)
            }
        }
    }

    /// An alignment for memalign and friends: powers of two from 1 to
    /// 64 KiB, a few odd values, and a few large ones.
    fn align(&mut self) -> usize {
        let b = self.u8();
        match b {
            0..=199 => 1 << (b % 17),
            200..=229 => [3, 12, 24, 40, 48, 100, 1000, 4097, 0, 6][b as usize % 10],
            _ => [1 << 17, 1 << 20, 1 << 21, 1 << 22][b as usize % 4],
        }
    }

    /// An index into a list of `n > 0` elements; 255 is the last one.
    fn index(&mut self, n: usize) -> usize {
        match self.u8() {
            255 => n - 1,
            b => b as usize * n / 255,
        }
    }
}

// ----- patterns ------------------------------------------------------------------

/// The pattern's 8 bytes at offset `8 * k` of a block with `seed`.
#[inline]
fn pat_word(seed: u64, k: usize) -> u64 {
    let mut x = seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^ (x >> 29)
}

#[inline]
fn pat_byte(seed: u64, i: usize) -> u8 {
    (pat_word(seed, i / 8) >> (8 * (i % 8))) as u8
}

/// The byte ranges of a block of `len` bytes that carry its pattern: all
/// of it when small, else the head, the tail and a sample every
/// [`SAMPLE_STRIDE`] bytes (placed by the seed).
fn marked(len: usize, seed: u64) -> Vec<(usize, usize)> {
    if len <= FULL_FILL {
        return std::vec![(0, len)];
    }
    let mut v = std::vec![(0, EDGE)];
    let shift = ((seed as usize >> 8) % (SAMPLE_STRIDE - SAMPLE_LEN)) & !7;
    let mut o = EDGE + shift;
    while o + SAMPLE_LEN <= len - EDGE {
        v.push((o, o + SAMPLE_LEN));
        o += SAMPLE_STRIDE;
    }
    v.push((len - EDGE, len));
    v
}

/// Writes the pattern of `seed` on bytes `[from, to)` of `p`.
///
/// # Safety
/// `p` must be valid for writes of `to` bytes and 8-aligned.
unsafe fn fill(p: *mut u8, from: usize, to: usize, seed: u64) {
    let mut i = from;
    // SAFETY: every offset written is below `to`.
    unsafe {
        while i < to && !i.is_multiple_of(8) {
            *p.add(i) = pat_byte(seed, i);
            i += 1;
        }
        while i + 8 <= to {
            (p.add(i) as *mut u64).write(pat_word(seed, i / 8));
            i += 8;
        }
        while i < to {
            *p.add(i) = pat_byte(seed, i);
            i += 1;
        }
    }
}

/// The first offset in `[from, to)` of `p` that lacks `seed`'s pattern.
///
/// # Safety
/// As for [`fill`], for reads.
unsafe fn first_bad(p: *const u8, from: usize, to: usize, seed: u64) -> Option<usize> {
    let mut i = from;
    // SAFETY: every offset read is below `to`.
    unsafe {
        while i < to && !i.is_multiple_of(8) {
            if *p.add(i) != pat_byte(seed, i) {
                return Some(i);
            }
            i += 1;
        }
        while i + 8 <= to {
            if (p.add(i) as *const u64).read() != pat_word(seed, i / 8) {
                return (i..i + 8).find(|&j| *p.add(j) != pat_byte(seed, j));
            }
            i += 8;
        }
        (i..to).find(|&j| *p.add(j) != pat_byte(seed, j))
    }
}

/// The first non-zero offset in `[from, to)` of `p`.
///
/// # Safety
/// `p` must be valid for reads of `to` bytes and 8-aligned.
unsafe fn first_nonzero(p: *const u8, from: usize, to: usize) -> Option<usize> {
    let mut i = from;
    // SAFETY: every offset read is below `to`.
    unsafe {
        while i < to && !i.is_multiple_of(8) {
            if *p.add(i) != 0 {
                return Some(i);
            }
            i += 1;
        }
        while i + 8 <= to {
            if (p.add(i) as *const u64).read() != 0 {
                return (i..i + 8).find(|&j| *p.add(j) != 0);
            }
            i += 8;
        }
        (i..to).find(|&j| *p.add(j) != 0)
    }
}

fn errno() -> i32 {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: i32) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

// ----- the shadow model --------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Live {
    p: usize,
    /// Bytes requested.
    req: usize,
    /// `malloc_usable_size` when allocated: bytes filled with the pattern.
    usable: usize,
    seed: u64,
}

struct Model {
    live: Vec<Live>,
    /// Start → end of every live block's usable range.
    ranges: BTreeMap<usize, usize>,
    live_bytes: usize,
    next_seed: u64,
    ops: usize,
    /// Failure injection is on: reasonable requests may fail.
    may_fail: bool,
    trace: bool,
    /// Where the input buffer starts (a range in `ranges`, not a block).
    input: usize,
    /// New mappings are refused (`M_MMAP_MAX` is 0): large requests are
    /// served by the heap, in big blocks above 1 MiB.
    no_mappings: bool,
}

impl Model {
    fn fail(&self, what: String) -> ! {
        panic!("fuzzcore: operation {}: {what}", self.ops);
    }

    fn note(&self, what: impl FnOnce() -> String) {
        if self.trace {
            std::eprintln!("fuzzcore: {:5} {}", self.ops, what());
        }
    }

    fn has_room(&self, n: usize) -> bool {
        self.live.len() < MAX_LIVE && self.live_bytes.saturating_add(n) <= LIVE_BYTES_CAP
    }

    /// Records a new block of `req` bytes at `p` (from `what`), checking
    /// its alignment, usable size and range, and fills its pattern (of
    /// `seed`, or a new one).
    fn adopt(&mut self, p: *mut u8, req: usize, align: usize, what: &str, seed: Option<u64>) -> Live {
        let a = p as usize;
        if !a.is_multiple_of(align.max(16)) {
            self.fail(format!("{what}: {a:#x} is not aligned to {}", align.max(16)));
        }
        let usable = api::malloc_usable_size(p);
        if usable < req {
            self.fail(format!("{what}: usable size {usable} < requested {req} at {a:#x}"));
        }
        let end = a + usable.max(1);
        if let Some((&s, &e)) = self.ranges.range(..end).next_back()
            && e > a
        {
            let whose = if s == self.input { "the input buffer" } else { "live block" };
            self.fail(format!("{what}: new block [{a:#x}, {end:#x}) ({req} bytes) overlaps {whose} [{s:#x}, {e:#x})"));
        }
        self.ranges.insert(a, end);
        let seed = seed.unwrap_or_else(|| {
            self.next_seed = self.next_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            self.next_seed
        });
        let l = Live { p: a, req, usable, seed };
        for (from, to) in marked(usable, l.seed) {
            // SAFETY: the block is ours for `usable` bytes.
            unsafe { fill(p, from, to, l.seed) };
        }
        self.live_bytes += usable;
        l
    }

    /// Checks that `l`'s pattern is intact.
    fn verify(&self, l: &Live, when: &str) {
        for (from, to) in marked(l.usable, l.seed) {
            // SAFETY: the block is live for `usable` bytes.
            if let Some(i) = unsafe { first_bad(l.p as *const u8, from, to, l.seed) } {
                self.fail(format!(
                    "{when}: block {:#x} ({} bytes requested, {} usable) byte {i} changed: {:#04x}, want {:#04x}",
                    l.p,
                    l.req,
                    l.usable,
                    // SAFETY: as above.
                    unsafe { *(l.p as *const u8).add(i) },
                    pat_byte(l.seed, i)
                ));
            }
        }
    }

    /// Takes block `i` out of the model (its range and bytes too).
    fn forget(&mut self, i: usize) -> Live {
        let l = self.live.swap_remove(i);
        self.ranges.remove(&l.p);
        self.live_bytes -= l.usable;
        l
    }

    /// Puts back a block that a failed call left alone.
    fn restore(&mut self, l: Live) {
        self.ranges.insert(l.p, l.p + l.usable.max(1));
        self.live_bytes += l.usable;
        self.live.push(l);
    }

    /// A reasonable request returned null: an error unless failures are
    /// being injected, when errno must say ENOMEM.
    fn null_result(&self, what: &str, req: usize) {
        if !self.may_fail {
            self.fail(format!("{what}: a request of {req} bytes failed (errno {})", errno()));
        }
        if errno() != libc::ENOMEM {
            self.fail(format!("{what}: failed with errno {} instead of ENOMEM", errno()));
        }
    }

    fn check_zero(&self, p: *mut u8, n: usize, what: &str) {
        // Heap blocks entirely (big ones too); mapped ones (fresh from the
        // kernel) sampled.
        let full = n <= crate::config::MAX_HEAP_REQUEST || (self.no_mappings && n <= 16 << 20);
        let ranges = if full { std::vec![(0, n)] } else { marked(n, 0) };
        for (from, to) in ranges {
            // SAFETY: the block holds at least `n` bytes.
            if let Some(i) = unsafe { first_nonzero(p, from, to) } {
                self.fail(format!("{what}: {n} bytes at {:#x} not zeroed: byte {i}", p as usize));
            }
        }
    }

    fn free_at(&mut self, i: usize, how: &str) {
        let l = self.forget(i);
        self.verify(&l, &format!("before {how}"));
        self.note(|| format!("{how}({:#x}) [{} bytes]", l.p, l.req));
        if how == "realloc0" {
            set_errno(0);
            let q = api::realloc(l.p as *mut u8, 0);
            if !q.is_null() {
                self.fail(format!("realloc({:#x}, 0) returned {:#x}, not null", l.p, q as usize));
            }
        } else {
            api::free(l.p as *mut u8);
        }
    }

    fn free_all(&mut self) {
        while !self.live.is_empty() {
            let last = self.live.len() - 1;
            self.free_at(last, "free");
        }
    }

    fn check_heap(&self, when: &str) {
        let problems = crate::check::check_heap(true);
        if problems != 0 {
            self.fail(format!("check_heap {when}: {problems} problem(s) (printed above)"));
        }
    }

    // ----- operations --------------------------------------------------------------

    fn op_malloc(&mut self, n: usize) {
        if !self.has_room(n) {
            return self.op_free_some();
        }
        set_errno(0);
        let p = api::malloc(n);
        self.note(|| format!("malloc({n}) = {:#x}", p as usize));
        if p.is_null() {
            return self.null_result("malloc", n);
        }
        let l = self.adopt(p, n, 16, "malloc", None);
        self.live.push(l);
    }

    fn op_calloc(&mut self, nmemb: usize, size: usize) {
        let n = nmemb * size;
        if !self.has_room(n) {
            return self.op_free_some();
        }
        set_errno(0);
        let p = api::calloc(nmemb, size);
        self.note(|| format!("calloc({nmemb}, {size}) = {:#x}", p as usize));
        if p.is_null() {
            return self.null_result("calloc", n);
        }
        self.check_zero(p, n, "calloc");
        let l = self.adopt(p, n, 16, "calloc", None);
        self.live.push(l);
    }

    /// realloc (or reallocarray, when `nmemb` is given) of block `i`, or of
    /// null when `i` is `None`.
    fn op_realloc(&mut self, i: Option<usize>, n: usize, nmemb: Option<usize>) {
        let old = i.map(|i| self.live[i]);
        let grow = n.saturating_sub(old.map_or(0, |l| l.usable));
        if !self.has_room(grow) || (old.is_none() && !self.has_room(n)) {
            return self.op_free_some();
        }
        let what = if nmemb.is_some() { "reallocarray" } else { "realloc" };
        if let Some(l) = &old {
            self.verify(l, &format!("before {what}"));
        }
        let l = i.map(|i| self.forget(i));
        let p = l.map_or(core::ptr::null_mut(), |l| l.p as *mut u8);
        set_errno(0);
        let q = match nmemb {
            Some(k) => api::reallocarray(p, k, n / k),
            None => api::realloc(p, n),
        };
        self.note(|| format!("{what}({:#x}, {n}) = {:#x}", p as usize, q as usize));
        if n == 0 && l.is_some() {
            if !q.is_null() {
                self.fail(format!("{what}({:#x}, 0) returned {:#x}, not null", p as usize, q as usize));
            }
            return;
        }
        if q.is_null() {
            self.null_result(what, n);
            if let Some(l) = l {
                self.verify(&l, &format!("after a failed {what}"));
                self.restore(l);
            }
            return;
        }
        if let Some(l) = &l {
            let kept = l.req.min(n);
            for (from, to) in marked(l.usable, l.seed) {
                let to = to.min(kept);
                if from >= to {
                    continue;
                }
                // SAFETY: the new block holds at least `n >= kept` bytes.
                if let Some(b) = unsafe { first_bad(q, from, to, l.seed) } {
                    self.fail(format!(
                        "{what}({:#x} [{} bytes], {n}) = {:#x}: byte {b} of the kept {kept} not carried over",
                        l.p, l.req, q as usize
                    ));
                }
            }
        }
        // The carried-over prefix keeps the old seed.
        let nl = self.adopt(q, n, 16, what, l.map(|l| l.seed));
        self.live.push(nl);
    }

    /// memalign (0), posix_memalign (1), aligned_alloc (2), valloc (3),
    /// pvalloc (4).
    fn op_aligned(&mut self, kind: u8, align: usize, n: usize) {
        let page = 4096;
        let (name, req, want_align) = match kind {
            3 => ("valloc", n, page),
            4 => ("pvalloc", crate::config::round_up(n.max(1), page), page),
            _ => (
                ["memalign", "posix_memalign", "aligned_alloc"][kind as usize],
                n,
                if align <= 16 { 16 } else { align.next_power_of_two() },
            ),
        };
        if !self.has_room(req.saturating_add(want_align)) {
            return self.op_free_some();
        }
        set_errno(0);
        let p = match kind {
            0 => api::memalign(align, n),
            1 => {
                let mut out = 0x5a5a_usize as *mut u8;
                // SAFETY: `out` is writable.
                let r = unsafe { api::posix_memalign(&mut out, align, n) };
                let word = core::mem::size_of::<usize>();
                let valid = align.is_multiple_of(word) && (align / word).is_power_of_two();
                self.note(|| format!("posix_memalign({align}, {n}) = {r}, {:#x}", out as usize));
                if !valid {
                    if r != libc::EINVAL || out as usize != 0x5a5a {
                        self.fail(format!("posix_memalign(align {align}) returned {r}, want EINVAL, *out untouched"));
                    }
                    return;
                }
                if r != 0 {
                    if r != libc::ENOMEM || out as usize != 0x5a5a {
                        self.fail(format!("posix_memalign({align}, {n}) returned {r}; *out {:#x}", out as usize));
                    }
                    return self.null_result(name, n);
                }
                out
            }
            2 => api::aligned_alloc(align, n),
            3 => api::valloc(n),
            _ => api::pvalloc(n),
        };
        if kind != 1 {
            self.note(|| format!("{name}({align}, {n}) = {:#x}", p as usize));
        }
        if p.is_null() {
            return self.null_result(name, req);
        }
        let l = self.adopt(p, req, want_align, name, None);
        self.live.push(l);
    }

    /// Frees one block (the budget is used up, or there was no block).
    fn op_free_some(&mut self) {
        if !self.live.is_empty() {
            self.free_at(self.live.len() / 2, "free");
        }
    }

    /// Requests that must fail, on a block `i` when given.
    fn op_impossible(&mut self, sel: u8, i: Option<usize>, huge: usize) {
        let what = match sel % 8 {
            0 => {
                let p = api::malloc(huge);
                self.expect_nomem(p, format!("malloc({huge})"), libc::ENOMEM);
                return;
            }
            1 => {
                let k = 1 + (huge >> 40).min(1 << 20);
                let p = api::calloc(k, usize::MAX / k + 1);
                self.expect_nomem(p, format!("calloc({k}, {})", usize::MAX / k + 1), libc::ENOMEM);
                let p = api::calloc(huge, 1);
                self.expect_nomem(p, format!("calloc({huge}, 1)"), libc::ENOMEM);
                return;
            }
            2 => {
                let p = api::memalign(64, huge);
                self.expect_nomem(p, format!("memalign(64, {huge})"), libc::ENOMEM);
                return;
            }
            3 => {
                // Alignments above SIZE_MAX / 2 + 1 are invalid.
                set_errno(0);
                let p = api::memalign(usize::MAX / 2 + 2, 16);
                self.expect_nomem(p, "memalign(SIZE_MAX / 2 + 2, 16)".into(), libc::EINVAL);
                return;
            }
            4 => {
                let mut out = 0x77_usize as *mut u8;
                // SAFETY: `out` is writable.
                let r = unsafe { api::posix_memalign(&mut out, 4096, huge) };
                if r != libc::ENOMEM || out as usize != 0x77 {
                    self.fail(format!("posix_memalign(4096, {huge}) returned {r}, *out {:#x}", out as usize));
                }
                return;
            }
            5 | 6 => "realloc",
            _ => "reallocarray",
        };
        let Some(i) = i else { return };
        let l = self.live[i];
        self.verify(&l, &format!("before an impossible {what}"));
        set_errno(0);
        let q = if what == "realloc" {
            api::realloc(l.p as *mut u8, huge)
        } else {
            api::reallocarray(l.p as *mut u8, 1 << 33, 1 << 31)
        };
        self.expect_nomem(q, format!("{what}({:#x}, huge)", l.p), libc::ENOMEM);
        self.verify(&l, &format!("after an impossible {what}"));
        if api::malloc_usable_size(l.p as *mut u8) != l.usable {
            self.fail(format!("{what}: a failed call changed the usable size of {:#x}", l.p));
        }
    }

    fn expect_nomem(&self, p: *mut u8, what: String, want: i32) {
        self.note(|| format!("{what} = {:#x} (must fail)", p as usize));
        if !p.is_null() {
            self.fail(format!("{what} returned {:#x}, must fail", p as usize));
        }
        if errno() != want {
            self.fail(format!("{what}: errno {}, want {want}", errno()));
        }
    }

    fn op_usable(&mut self, i: usize) {
        let l = self.live[i];
        let u = api::malloc_usable_size(l.p as *mut u8);
        if u != l.usable {
            self.fail(format!("malloc_usable_size({:#x}) changed from {} to {u}", l.p, l.usable));
        }
    }
}

/// Whether environment variable `name` is set to something other than
/// `0` (read once per flag).
fn env_flag(name: &str, cache: &core::sync::atomic::AtomicU8) -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    match cache.load(Relaxed) {
        0 => {
            let on = std::env::var_os(name).is_some_and(|v| v != "0" && !v.is_empty());
            cache.store(if on { 2 } else { 1 }, Relaxed);
            on
        }
        v => v == 2,
    }
}

fn tracing() -> bool {
    static T: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
    env_flag("FITALLOC_FUZZ_TRACE", &T)
}

/// Runs the operations `data` describes on the real allocator, checking
/// each against the shadow model; panics on the first discrepancy. Frees
/// every block it allocated before returning.
pub fn run(data: &[u8]) {
    crate::init::ensure_init();
    let mut input = Input { data, pos: 0 };
    let seed = data.iter().fold(0x243F_6A88_85A3_08D3u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3));
    // The input itself is a live block of the harness (of this allocator,
    // under the fuzzer): no block may be handed out over it, and it must
    // not change.
    let mut ranges = BTreeMap::new();
    if !data.is_empty() {
        ranges.insert(data.as_ptr() as usize, data.as_ptr() as usize + data.len());
    }
    let mut m = Model {
        live: Vec::new(),
        ranges,
        live_bytes: 0,
        next_seed: seed,
        ops: 0,
        may_fail: crate::os::FAIL_EVERY.load(core::sync::atomic::Ordering::Relaxed) != 0,
        trace: tracing(),
        input: if data.is_empty() { 0 } else { data.as_ptr() as usize },
        no_mappings: false,
    };
    let saved_mmap_max = crate::options::OPT.mmap_max.load(core::sync::atomic::Ordering::Relaxed);
    while !input.done() && m.ops < MAX_OPS {
        m.ops += 1;
        let op = input.u8();
        match op {
            0..=59 => {
                let n = input.size();
                m.op_malloc(n);
            }
            60..=74 => {
                let k = 1 + (input.u8() % 8) as usize;
                let n = input.size();
                m.op_calloc(k, n / k);
            }
            75..=114 => {
                let n = input.size();
                let i = (!m.live.is_empty()).then(|| input.index(m.live.len()));
                m.op_realloc(i, n, None);
            }
            115..=119 => {
                let n = input.size();
                m.op_realloc(None, n, None);
            }
            120..=127 => {
                let k = 1 + (input.u8() % 16) as usize;
                let n = input.size().max(k);
                let i = (!m.live.is_empty() && op & 1 == 0).then(|| input.index(m.live.len()));
                m.op_realloc(i, n - n % k, Some(k));
            }
            128..=157 => {
                let kind = input.u8() % 5;
                let align = input.align();
                let n = input.size();
                m.op_aligned(kind, align, n);
            }
            158..=214 => {
                if !m.live.is_empty() {
                    let i = input.index(m.live.len());
                    m.free_at(i, "free");
                }
            }
            215..=224 => {
                if !m.live.is_empty() {
                    let i = input.index(m.live.len());
                    m.op_usable(i);
                    m.verify(&m.live[i], "on a visit");
                }
            }
            225..=234 => {
                if !m.live.is_empty() {
                    let i = input.index(m.live.len());
                    m.free_at(i, "realloc0");
                }
            }
            235..=244 => {
                let sel = input.u8();
                let huge = IMPOSSIBLE[input.u8() as usize % IMPOSSIBLE.len()];
                let i = (!m.live.is_empty()).then(|| input.index(m.live.len()));
                m.op_impossible(sel, i, huge);
            }
            247 => {
                // Mappings off (as M_MMAP_MAX=0) or back on: while off,
                // requests above 1 MiB get big heap blocks (the fallback
                // when no mapping can be made), split, merged and resized
                // in the heap beside the others.
                m.no_mappings = !m.no_mappings;
                m.note(|| format!("mappings {}", if m.no_mappings { "off" } else { "on" }));
                let max = if m.no_mappings { 0 } else { saved_mmap_max };
                crate::options::OPT.mmap_max.store(max, core::sync::atomic::Ordering::Relaxed);
            }
            245..=246 => {
                // Free a run of the most recent blocks (neighbours merge).
                let k = 1 + input.u8() as usize % 16;
                for _ in 0..k.min(m.live.len()) {
                    let last = m.live.len() - 1;
                    m.free_at(last, "free");
                }
            }
            248 => {
                let pad = [0usize, 4096, 1 << 20][input.u8() as usize % 3];
                m.note(|| format!("malloc_trim({pad})"));
                api::malloc_trim(pad);
                m.check_heap("after malloc_trim");
            }
            249..=251 => {
                // realloc to the same size, and free(NULL).
                api::free(core::ptr::null_mut());
                if !m.live.is_empty() {
                    let i = input.index(m.live.len());
                    let n = m.live[i].req;
                    m.op_realloc(Some(i), n, None);
                }
            }
            _ => {
                // A burst of same-size blocks, then every other one freed
                // (fragmentation in one size class).
                let n = input.size().min(64 << 10);
                let k = 2 + input.u8() as usize % 30;
                let first = m.live.len();
                for _ in 0..k {
                    m.op_malloc(n);
                }
                let mut j = m.live.len();
                while j > first + 1 {
                    j -= 2;
                    if j < m.live.len() {
                        m.free_at(j, "free");
                    }
                }
            }
        }
        if m.ops.is_multiple_of(CHECK_EVERY) {
            m.check_heap("during the run");
        }
    }
    m.free_all();
    crate::options::OPT.mmap_max.store(saved_mmap_max, core::sync::atomic::Ordering::Relaxed);
    m.check_heap("at the end (everything freed)");
    let after = data.iter().fold(0x243F_6A88_85A3_08D3u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3));
    if after != seed {
        m.fail(format!("the input buffer at {:#x} ({} bytes) changed during the run", data.as_ptr() as usize, data.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The fitalloc heap is process-wide: one fuzz test at a time, so the
    /// checker never runs while another test allocates.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Deterministic pseudo-random bytes (splitmix64).
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    }

    fn in_use() -> (u64, u64) {
        let s = crate::stats::FitallocStats::current();
        (s.in_use_blocks, s.mapped_blocks)
    }

    #[test]
    fn empty_and_short_inputs() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        run(&[]);
        for b in 0..=255u8 {
            run(&[b]);
            run(&[b, b, b]);
        }
    }

    #[test]
    fn fixed_seed_inputs() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let before = in_use();
        for seed in 0..200u64 {
            let len = 1000 + (seed as usize * 7919) % 4000;
            run(&bytes(seed, len));
        }
        let after = in_use();
        // The thread cache may hold a few more blocks (counted as in use).
        assert!(after.0 <= before.0 + 2048, "in_use_blocks grew from {} to {}", before.0, after.0);
        assert_eq!(after.1, before.1, "mapped blocks left behind");
    }

    /// Inputs biased towards one kind of operation each.
    #[test]
    fn biased_inputs() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        for seed in 0..64u64 {
            let mut v = bytes(1000 + seed, 3000);
            // Every fourth byte is an op byte drawn from a narrow window.
            let lo = (seed * 4) as u8;
            for (j, b) in v.iter_mut().enumerate() {
                if j % 4 == 0 {
                    *b = lo.wrapping_add(*b % 24);
                }
            }
            run(&v);
        }
    }

    /// Mappings off, then requests of 1 to 8 MiB, a calloc, a realloc
    /// growing one and a memalign: with no mapping allowed, only big heap
    /// blocks can serve them (a null result fails the run), and the model
    /// checks their contents, ranges and the heap throughout.
    #[test]
    fn big_heap_blocks_when_mappings_are_off() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = std::vec![247u8];
        for k in 0..6u32 {
            v.extend([0u8, 27]);
            v.extend((k * 1_100_003).to_le_bytes());
            v.extend([158, 128]); // free one from the middle
        }
        for k in 0..4u32 {
            v.extend([0u8, 27]);
            v.extend((k * 1_700_001).to_le_bytes());
        }
        v.extend([60u8, 0, 27]); // calloc(1, 1 MiB + ...)
        v.extend(3_000_000u32.to_le_bytes());
        v.extend([75u8, 27]); // realloc of the first live block to 6 MiB
        v.extend(5_000_000u32.to_le_bytes());
        v.push(0);
        v.extend([128u8, 0, 14, 27]); // memalign(16 KiB, ...)
        v.extend(2_000_000u32.to_le_bytes());
        // A big block shrunk below the thread caches' limit, then freed:
        // it must go back to the heap, never to a cache.
        v.extend([0u8, 27, 0, 0, 0, 0, 75, 1, 40, 255, 158, 255]);
        v.extend([0u8, 27, 0, 0, 0, 0, 75, 1, 40, 255, 225, 255]);
        let before = crate::options::OPT.mmap_max.load(core::sync::atomic::Ordering::Relaxed);
        let mapped = in_use().1;
        run(&v);
        assert_eq!(crate::options::OPT.mmap_max.load(core::sync::atomic::Ordering::Relaxed), before, "restored");
        assert_eq!(in_use().1, mapped);
        // And mixed with everything else.
        for seed in 0..40u64 {
            let mut v = bytes(9000 + seed, 3000);
            v[0] = 247;
            run(&v);
        }
    }

    #[test]
    fn runs_from_other_threads() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        // Each thread creates and destroys its own cache.
        for round in 0..4u64 {
            std::thread::spawn(move || run(&bytes(5000 + round, 4000))).join().unwrap();
        }
    }
}
