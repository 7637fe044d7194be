//! Hardened mode (`FITALLOC_HARDEN=1`): checks that need bookkeeping the
//! default mode does not pay for.
//!
//! - **Canary.** Every block gets at least one canary byte after the bytes
//!   the program asked for, and an 8-byte trailer at the end of its usable
//!   space: the requested size and a keyed check of it. free and realloc
//!   verify both, so a one-byte overflow is reported. `malloc_usable_size`
//!   answers the requested size, so code that fills its slack stays clear
//!   of the canary.
//! - **Quarantine.** A freed heap block is filled with a pattern, marked,
//!   and waits in a FIFO (bounded in bytes) before the heap may reuse it. A
//!   second free while it waits is a double free; a byte changed while it
//!   waits is a write after free, reported when the block leaves.
//! - **Guard pages.** A large block ends right before an inaccessible page
//!   of its own mapping: an overflow faults at once. With an alignment
//!   above a page it ends within a page of it, so the canary run stays
//!   short whatever the alignment ([`crate::large::map_guarded`]).
//! - Free-list links are masked in every mode ([`crate::block`]).
//!
//! Thread caches are off in this mode: every block goes through the checks.
//! Blocks allocated before the mode was on (e.g. during start-up) carry no
//! trailer and are freed without the canary check.

use crate::block::Block;
use crate::diag;
use crate::options::OPT;
use crate::pointer::{self, Ptr};
use crate::process::heap_of;
use crate::sync::{Guard, Locked, Rank};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Payload word holding the quarantine mark (word 0 is left to the
/// pattern check, as the cache's link is in the default mode).
const MARK_WORD: usize = 1;

/// Canary bytes (at least one) plus the trailer.
const OVERHEAD: usize = 1 + TRAILER;
const TRAILER: usize = 8;
/// Freed memory reads as this byte while it waits in quarantine.
const FREED: u8 = 0xDF;

static KEY: AtomicU64 = AtomicU64::new(0x9b05_688c_2b3e_6c1f);
static MUL: AtomicU64 = AtomicU64::new(0x2545_f491_4f6c_dd1d);

/// Whether every block the program holds was sealed (hardening was on
/// before the first allocation): then a bad trailer is always an overflow.
static ALL_SEALED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Turns the mode on; `from_start` when no block was handed out before.
pub fn enable(from_start: bool) {
    ALL_SEALED.store(from_start, Relaxed);
}

/// Keys the trailers and canaries (once, at start-up).
pub fn set_secret(k: u64, mul: u64) {
    KEY.store(k, Relaxed);
    MUL.store(mul | 1, Relaxed);
}

/// How a block was allocated, kept in its trailer's keyed check, so that
/// C++'s `delete` and `delete[]` can be matched with `new` and `new[]`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Kind {
    Malloc = 0,
    New = 1,
    NewArray = 2,
}

const KINDS: [Kind; 3] = [Kind::Malloc, Kind::New, Kind::NewArray];

/// The trailer's check: a keyed hash of the block's address, its
/// requested size and its kind, the size hashed first (XORed into the
/// address's high bits, a trailer would also check on a block 4 GiB away
/// with its size changed by the same bits).
fn check_word(p: usize, n: u32, kind: Kind) -> u32 {
    let key = KEY.load(Relaxed) ^ (kind as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mul = MUL.load(Relaxed);
    let size = crate::block::keyed(n as usize, key.rotate_left(29), mul);
    (crate::block::keyed(p ^ size, key, mul) >> 32) as u32
}

/// The canary's bytes for the block at `p`: a keyed hash of its address,
/// byte `i` of the slack taking byte `i % 8` of it, so the canary of one
/// block says nothing of another's (with one key byte for every block, a
/// byte read past one block's request gave them all away).
fn canary_word(p: usize) -> usize {
    crate::block::keyed(p ^ 0x4341_4e41_5259_2121, KEY.load(Relaxed).rotate_left(17), MUL.load(Relaxed))
}

fn canary_byte(word: usize, i: usize) -> u8 {
    (word >> (8 * (i % 8))) as u8
}

/// The keyed mark a quarantined block carries in its payload's word 1.
fn quarantine_mark(p: usize) -> usize {
    crate::block::keyed(p ^ 0x5155_4152_414e_5449, KEY.load(Relaxed), MUL.load(Relaxed))
}

/// Writes the canary and trailer of a block of `usable` bytes at `p`
/// holding `n` requested bytes, allocated as `kind`.
///
/// # Safety
/// `p .. p + usable` must be ours, with `usable >= n + OVERHEAD`.
unsafe fn seal(p: *mut u8, n: usize, usable: usize, kind: Kind) {
    let a = p as usize;
    let word = canary_word(a);
    // SAFETY: the canary and trailer lie inside the block (caller).
    unsafe {
        for i in n..usable - TRAILER {
            *p.add(i) = canary_byte(word, i);
        }
        let t = p.add(usable - TRAILER) as *mut u32;
        t.write_unaligned(n as u32);
        t.add(1).write_unaligned(check_word(a, n as u32, kind));
    }
}

/// The requested size and kind recorded in a sealed block's trailer, or
/// `None` when the block has no trailer (allocated before hardening was
/// on). Aborts if the canary was overwritten.
///
/// # Safety
/// `p .. p + usable` must be a live block of ours.
unsafe fn unseal(p: *mut u8, usable: usize, func: &'static str) -> Option<(usize, Kind)> {
    let a = p as usize;
    if usable < OVERHEAD {
        return None;
    }
    // SAFETY: the trailer lies inside the block (caller).
    let (n, check) = unsafe {
        let t = p.add(usable - TRAILER) as *const u32;
        (t.read_unaligned(), t.add(1).read_unaligned())
    };
    // The trailer keeps the low 32 bits; the block is at most 15 bytes
    // (plus the overhead) longer than the request, which fixes the rest.
    let most = usable - OVERHEAD;
    let mut full = (most & !0xFFFF_FFFF) | n as usize;
    if full > most {
        full = full.wrapping_sub(1 << 32);
    }
    let kind = KINDS.into_iter().find(|&k| check == check_word(a, n, k));
    let Some(kind) = kind.filter(|_| full <= most) else {
        if ALL_SEALED.load(Relaxed) {
            diag::fatal(func, "heap overflow: the trailer after the block was overwritten at", a);
        }
        // A block from before hardening was on.
        return None;
    };
    let n = full;
    let word = canary_word(a);
    for i in n..usable - TRAILER {
        // SAFETY: as above.
        if unsafe { *p.add(i) } != canary_byte(word, i) {
            diag::fatal(func, "heap overflow: the canary after the block was overwritten at", a);
        }
    }
    Some((n, kind))
}

/// Aborts if a C++ `delete` (of kind `want`, with `size` when sized) does
/// not match how the block at `a` was allocated: `delete` of a `new[]`
/// block or the reverse, or a size other than the one asked for (0
/// included: it was taken for an unsized delete, found by a hostile
/// review).
fn check_delete(a: usize, func: &'static str, want: Kind, size: Option<usize>, sealed: Option<(usize, Kind)>) {
    let Some((n, kind)) = sealed else { return };
    match (want, kind) {
        (Kind::New, Kind::NewArray) => diag::fatal(func, "delete of a block from new[] (use delete[]) at", a),
        (Kind::NewArray, Kind::New) => diag::fatal(func, "delete[] of a block from new (use delete) at", a),
        _ => {}
    }
    if size.is_some_and(|s| s != n) {
        let what = if func.starts_with("operator") {
            "sized delete with a size other than the block's at"
        } else {
            "a size other than the block's at"
        };
        diag::fatal(func, what, a);
    }
}

// ----- the quarantine ------------------------------------------------------------

struct Quarantine {
    ring: *mut usize,
    cap: usize,
    head: usize,
    len: usize,
    bytes: usize,
}

// SAFETY: the ring is owned by the quarantine; access is locked.
unsafe impl Send for Quarantine {}

static QUARANTINE: Locked<Quarantine> =
    Locked::new(Rank::Quarantine, Quarantine { ring: core::ptr::null_mut(), cap: 0, head: 0, len: 0, bytes: 0 });

const RING: usize = 1 << 16;

/// Bytes and blocks waiting in quarantine.
pub fn held() -> (usize, usize) {
    let q = QUARANTINE.lock();
    (q.bytes, q.len)
}

/// Fork: the quarantine's lock is held across `fork()` (in rank order),
/// so the child finds it consistent.
pub fn hold_for_fork() {
    QUARANTINE.hold();
}

pub fn release_after_fork() {
    QUARANTINE.release_held();
}

/// Puts freed heap block `b` (pattern-filled, marked) into quarantine and
/// releases the oldest blocks beyond the budget to the heap.
/// Puts freed block `b` at the quarantine's tail (`q`: its lock, held),
/// releasing the oldest blocks to the heap while it holds too much.
fn quarantine(mut q: Guard<'static, Quarantine>, b: Block) {
    if q.ring.is_null() {
        match crate::os::map_metadata(RING * core::mem::size_of::<usize>()) {
            Some(m) => {
                q.ring = m as *mut usize;
                q.cap = RING;
            }
            None => {
                drop(q);
                release(b);
                return;
            }
        }
    }
    // SAFETY: `b` is a held heap block.
    let size = Block::payload_bytes(unsafe { b.units() });
    let budget = OPT.quarantine_bytes.load(Relaxed);
    while q.len > 0 && (q.len == q.cap || q.bytes + size > budget) {
        // SAFETY: `head` indexes a filled slot of the ring.
        let old = Block::at(unsafe { *q.ring.add(q.head) } as *mut u8);
        q.head = (q.head + 1) % q.cap;
        q.len -= 1;
        // SAFETY: quarantined blocks are held heap blocks: their header
        // positions lie in a heap region.
        if !crate::block::is_block_header(old.addr(), unsafe { old.header() }) {
            // Nothing of the program points here any more: an overflow of
            // the block before it rewrote the header while it waited.
            drop(q);
            diag::fatal("free", "heap overflow into the header of a freed block (in quarantine) at", old.payload() as usize);
        }
        // SAFETY: as above; the header is intact, so is its size.
        q.bytes -= Block::payload_bytes(unsafe { old.units() });
        verify_freed(old);
        release(old);
    }
    let tail = (q.head + q.len) % q.cap;
    // SAFETY: `tail` is a free slot of the ring.
    unsafe { *q.ring.add(tail) = b.addr() };
    q.len += 1;
    q.bytes += size;
}

/// Whether held heap block `p` of `usable` bytes looks freed: the place of
/// its trailer holds the freed pattern, which a sealed live block's
/// trailer never is (its check is keyed). Asked when a block's quarantine
/// mark is not there: a write after free may have wiped it (a
/// `p->next = p->prev = 0` of the first two words), and the block is a
/// freed one, not a live one whose trailer an overflow rewrote. Only once
/// every block is sealed: a block from before hardening was on may hold
/// the pattern as its data.
///
/// # Safety
/// `p` is the payload of a held heap block of `usable` bytes.
unsafe fn looks_freed(p: *mut u8, usable: usize) -> bool {
    // SAFETY: the payload is `usable` bytes long (at least 28), the
    // trailer its last 8.
    ALL_SEALED.load(Relaxed) && unsafe { (p.add(usable - TRAILER) as *const [u8; 8]).read_unaligned() == [FREED; 8] }
}

/// Checks that a block leaving quarantine still holds the freed pattern
/// and, in word 1, its quarantine mark, a word at a time.
fn verify_freed(b: Block) {
    let p = b.payload();
    // SAFETY: a held heap block of `units`.
    let n = Block::payload_bytes(unsafe { b.units() });
    let word = usize::from_ne_bytes([FREED; 8]);
    let words = n / 8;
    // SAFETY: the payload is 16-aligned and `n` bytes long.
    let intact = unsafe {
        let w = p as *const usize;
        *w == word
            && *w.add(MARK_WORD) == quarantine_mark(p as usize)
            && (2..words).all(|i| *w.add(i) == word)
            && (words * 8..n).all(|i| *p.add(i) == FREED)
    };
    if !intact {
        diag::fatal("free", "write after free detected in the block at", p as usize);
    }
}

/// Gives a block leaving quarantine back to the heap, without its mark (the
/// heap may hand the same address out again).
fn release(b: Block) {
    // SAFETY: a held heap block nobody references; its payload holds the
    // mark.
    unsafe {
        b.set_payload_word(MARK_WORD, 0);
        heap_of(b, "free").free(b);
    }
}

// ----- the API in hardened mode -----------------------------------------------------

/// A block of `n` bytes (aligned to `align`), sealed.
pub fn malloc(n: usize, align: usize, zero: bool) -> *mut u8 {
    malloc_as(n, align, zero, Kind::Malloc)
}

/// A block of `n` bytes (aligned to `align`), sealed as allocated by `kind`.
pub fn malloc_as(n: usize, align: usize, zero: bool, kind: Kind) -> *mut u8 {
    let Some(want) = n.checked_add(OVERHEAD) else { return core::ptr::null_mut() };
    let p = crate::alloc::guarded_block(want, align, zero);
    if !p.is_null() {
        // SAFETY: a fresh block of at least `want` usable bytes.
        unsafe { seal(p, n, pointer::usable_size(p, "malloc"), kind) };
    }
    p
}

/// Frees `p` (non-null): checks, fills and quarantines heap blocks; unmaps
/// large ones (their pages go away: a use after free faults).
pub fn free(p: *mut u8, func: &'static str) {
    free_as(p, func, None)
}

/// [`free`] for a C++ `delete` of kind `want` (with its size when sized, else
/// 0), checked against how the block was allocated.
#[cfg(not(any(test, feature = "rust-global")))]
pub fn delete(p: *mut u8, func: &'static str, want: Kind, size: Option<usize>) {
    free_as(p, func, Some((want, size)))
}

/// [`free`] for C23's `free_sized` (and `free_aligned_sized`), whose
/// size is checked against the block's requested size.
pub fn free_sized(p: *mut u8, func: &'static str, size: usize) {
    free_as(p, func, Some((Kind::Malloc, Some(size))))
}

fn free_as(p: *mut u8, func: &'static str, delete: Option<(Kind, Option<usize>)>) {
    free_locked(QUARANTINE.lock(), p, func, delete)
}

/// [`free_as`] with the quarantine's lock `q` held: one hardened free at a
/// time, from its checks to the block's place in the quarantine (or its
/// mapping's unmapping), and none while a hardened realloc copies a block
/// ([`realloc`]). Two threads freeing one block at once (a double free
/// the program races) both found it live, both quarantined it (the second
/// copy later released a block the program held), or one read the canary
/// the other's fill had overwritten and named an overflow (found by a
/// hostile review).
fn free_locked(q: Guard<'static, Quarantine>, p: *mut u8, func: &'static str, delete: Option<(Kind, Option<usize>)>) {
    let a = p as usize;
    let b = Block::from_payload(p);
    if pointer::in_heap(p) {
        // Aborts unless `b` is a held block (a big one checked whole).
        let b = pointer::held(b, func).block();
        // SAFETY: `b` is a held block of a heap region; nothing is read
        // beyond it.
        unsafe {
            let usable = Block::payload_bytes(b.units());
            if b.payload_word(MARK_WORD) == quarantine_mark(a) {
                diag::fatal(func, "double free (the block is in quarantine) of", a);
            }
            if looks_freed(p, usable) {
                diag::fatal(func, "double free (the block is in quarantine; its mark was written after free) of", a);
            }
            let sealed = unseal(p, usable, func);
            if let Some((want, size)) = delete {
                check_delete(a, func, want, size, sealed);
            }
            core::ptr::write_bytes(p, FREED, usable);
            b.set_payload_word(MARK_WORD, quarantine_mark(a));
        }
        quarantine(q, b);
        return;
    }
    if let Ptr::Large(m) = pointer::resolve(p, func) {
        let usable = m.usable(OPT.page.load(Relaxed));
        // SAFETY: a live large block of `usable` bytes.
        let sealed = unsafe { unseal(p, usable, func) };
        if let Some((want, size)) = delete {
            check_delete(a, func, want, size, sealed);
        }
        crate::free::free_large(a, func);
    }
    drop(q);
}

/// Reports `p` (non-null) for free-like C function `func` as its free
/// would when it is not a live block (foreign, interior, freed: in
/// quarantine), without freeing it.
pub fn check_freeable(p: *mut u8, func: &'static str) {
    let a = p as usize;
    if pointer::in_heap(p) {
        let b = pointer::held(Block::from_payload(p), func).block();
        // SAFETY: `b` is a held block of a heap region.
        unsafe {
            let usable = Block::payload_bytes(b.units());
            if b.payload_word(MARK_WORD) == quarantine_mark(a) || looks_freed(p, usable) {
                diag::fatal(func, "double free (the block is in quarantine) of", a);
            }
        }
    } else {
        pointer::resolve(p, func);
    }
}

/// Checks `p` (non-null) and returns its requested size.
fn checked_size(p: *mut u8, func: &'static str) -> usize {
    let a = p as usize;
    let b = Block::from_payload(p);
    if pointer::in_heap(p) {
        // SAFETY: the quarantine mark is read only for a valid used block.
        unsafe {
            if crate::block::is_block_header(b.addr(), b.header()) && b.payload_word(MARK_WORD) == quarantine_mark(a) {
                diag::fatal(func, "use of a freed block (in quarantine) at", a);
            }
        }
    }
    let usable = pointer::usable_size(p, func);
    // SAFETY: `usable_size` checked that `p` is a live block of ours.
    if pointer::in_heap(p) && unsafe { looks_freed(p, usable) } {
        diag::fatal(func, "use of a freed block (in quarantine; its mark was written after free) at", a);
    }
    // SAFETY: as above.
    unsafe { unseal(p, usable, func) }.map_or(usable, |(n, _)| n)
}

pub fn usable_size(p: *mut u8) -> usize {
    checked_size(p, "malloc_usable_size")
}

/// Resizes by moving: a new sealed block, the contents copied, the old
/// block quarantined. Null (with `p` intact) when out of memory.
///
/// It holds the quarantine's lock from its check of `p` to `p`'s place in
/// the quarantine, so that a free of `p` on another thread meanwhile (a
/// double free the program races) waits, then finds it freed. Before, that
/// free, and mallocs that brought the block back out of the quarantine,
/// could happen while the new block was made or the old one copied, and
/// realloc then freed the block the other thread held (found by a hostile
/// review: one block handed out twice).
pub fn realloc(p: *mut u8, n: usize) -> *mut u8 {
    let lock = QUARANTINE.lock();
    let old = checked_size(p, "realloc");
    let q = malloc(n, 16, false);
    if q.is_null() {
        return q;
    }
    // SAFETY: both blocks are ours; `min(old, n)` bytes fit in each.
    unsafe { core::ptr::copy_nonoverlapping(p, q, old.min(n)) };
    free_locked(lock, p, "realloc", None);
    q
}
