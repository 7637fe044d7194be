//! Boundary-tagged blocks: the only module that does pointer arithmetic on
//! heap memory.
//!
//! # Layout
//!
//! Payloads are 16-byte aligned and block sizes are multiples of 16 bytes
//! ("units"). Each block starts with a 4-byte header right before its
//! payload, so a block begins at an address ≡ 12 (mod 16):
//!
//! ```text
//!  allocated block                      free block
//!  ┌──────────────────────────┐         ┌──────────────────────────┐
//!  │ header u32 (used)        │ b       │ header u32 (free)        │ b
//!  ├──────────────────────────┤         ├──────────────────────────┤
//!  │ payload, 16-aligned      │ b+4     │ link 0: next / left      │ b+4
//!  │   ...                    │         │ link 1: prev / right     │ b+12
//!  │   ...                    │         │ link 2: parent (trees)   │ b+20
//!  │   ...                    │         │ link 3: size (trees)     │ b+28
//!  │   ...                    │         │ (links stored masked)    │
//!  │   ...                    │         │   ...                    │
//!  │   ...                    │         ├──────────────────────────┤
//!  │   ...                    │         │ footer: header u32, and  │ b+size-8
//!  │                          │         │   its keyed check u32    │
//!  └──────────────────────────┘         └──────────────────────────┘
//!  next block's header at b+size        next block's header at b+size
//! ```
//!
//! A footer is the block's header beside a 32-bit keyed hash of that header
//! and the footer's own address: a footer the program forged (a fake
//! previous size before a header whose `PREV_USED` it cleared, or a free
//! block's header enlarged over a live block with a matching footer
//! written inside it) fails its check. Unlike a value masked with a keyed
//! value of its address, a footer the program has seen (read after a free,
//! or by an underflow of the block after it) tells nothing of the footer
//! of another size at the same place. The smallest free block (32 bytes)
//! has room for it after its two list links.
//!
//! An allocated block has no footer: the next block's `PREV_USED` bit says
//! whether the eight bytes before its header are a footer or the end of
//! our payload. So the whole overhead of an allocated block is its 4-byte header
//! (glibc's is 8), and `malloc(n)` takes `max(32, round_up(n + 4, 16))` bytes.
//!
//! # Header bits
//!
//! ```text
//!  used:  | units (16) | tag (14)      | PREV_USED | USED=1 |
//!  free:  |         units (30)          | PREV_USED | USED=0 |
//!           byte 3, 2    byte 1 | byte 0 (lowest address)
//! ```
//!
//! The 14-bit tag of a used header is a keyed hash of the block's address
//! and size: a pointer that is not at a block start, or a header overwritten
//! by an overflow, fails the tag check before the allocator acts on it.
//!
//! A block waiting in a thread cache has its header in the *cached form*:
//! the used header with its byte 1 (the tag's high eight bits) inverted
//! ([`CACHED_FLIP`]). The cached form fails the tag check, so `free`
//! finds a double free of a cached block in the header it reads anyway,
//! even when a write after free wiped the cache's mark in the payload; a
//! one-byte overflow from the block before reaches byte 0 only, and cannot
//! turn one form into the other. The cache writes byte 1 alone, and the
//! heap, which sets and clears a cached heap block's `PREV_USED` under its
//! lock as the block before it changes, writes byte 0 alone
//! ([`Block::set_prev_used`]): neither store can undo the other.
//!
//! # The big form
//!
//! A used header's 16 bits hold sizes up to [`MAX_USED_UNITS`] (`0xFFFD`,
//! about 1 MiB: the small form). A larger used block has the big form: its
//! first unit is a prefix that keeps the size, and the block handed out
//! (its *body*) starts one unit later, so its payload is still 16-aligned
//! with a header just before it:
//!
//! ```text
//!  big used block of U units at s
//!  ┌──────────────────────────────────────┐
//!  │ head u32: used, units = BIG_HEAD     │ s       what walks and
//!  ├──────────────────────────────────────┤         neighbours see
//!  │ record: U (u32), check (u32), 0 (u32)│ s+4
//!  ├──────────────────────────────────────┤
//!  │ body u32: used, units = BIG_BODY     │ s+16    what the pointer's
//!  ├──────────────────────────────────────┤         header read sees
//!  │ payload, 16-aligned                  │ s+20
//!  │   ... (U * 16 - 20 bytes)            │
//!  └──────────────────────────────────────┘
//!  next block's header at s + U * 16
//! ```
//!
//! Both headers are ordinary used headers (keyed tags of their own
//! addresses with the marker values as sizes), so the fast paths, which
//! read one header and see a size above the thread caches' limit, need no
//! change; the record's check is a 32-bit keyed hash of `s` and `U`. A big
//! block is trusted only when the head, record and body all agree
//! ([`Block::big_units`]), so a forged or enlarged size, or a prefix copied
//! elsewhere, is refused before anything is read or written through it.
//! Which form a block has is chosen when it is allocated and kept while it
//! lives (a big block may shrink below 1 MiB in place); the heap's units
//! are still `u32`, so a block spans at most a region (4 GiB).
//!
//! Only the heap writes the headers of heap blocks, and only under its
//! lock; `free` reads them without it. Headers are therefore accessed as
//! relaxed atomics (plain loads and stores on every target we build for).
//! The one exception: a thread cache turns the header of a block it takes
//! into the cached form and back ([`Block::toggle_cached`]) without the
//! heap's lock, while the heap may be changing the same header's
//! `PREV_USED` (the block before a cached heap block is freed or taken):
//! with other threads, each writes its own byte (see *Header bits*). The
//! cache also marks the block in its payload ([`Block::cache_key`]).
//!
//! Each region of the heap is framed so that walks need no bounds checks:
//! the first block's `PREV_USED` is set, and the region ends with a used
//! header of size 0, the epilogue.

use crate::config::{HEADER, MAX_USED_UNITS, UNIT_SHIFT};
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Header bit: this block is held (by the program or a thread cache).
pub(crate) const USED: u32 = 1;
/// Header bit: the block just before this one is held, so there is no
/// footer before this header.
pub(crate) const PREV_USED: u32 = 2;
/// What a thread cache XORs into a block's used header as it takes the
/// block, and again as it gives it out (the cached form): byte 1, the
/// tag's high eight bits.
pub(crate) const CACHED_FLIP: u32 = 0xFF00;
const USED_UNITS_SHIFT: u32 = 16;
const FREE_UNITS_SHIFT: u32 = 2;

/// Used-header size values that mark the big form (see the module notes):
/// the head at the block's start, and the body's header one unit later.
pub(crate) const BIG_HEAD: u32 = 0xFFFF;
pub(crate) const BIG_BODY: u32 = 0xFFFE;
/// Units of a big block's prefix (head and record) before its body.
pub(crate) const BIG_PREFIX_UNITS: u32 = 1;
/// The smallest big block: the prefix and a body of [`MIN_UNITS`].
pub(crate) const MIN_BIG_UNITS: u32 = BIG_PREFIX_UNITS + crate::config::MIN_UNITS;

/// Written over the header of a block that was merged into its neighbour,
/// so that a second free of it is recognised. As a free header it would
/// claim 2^30 - 1 units, more than any region holds.
pub(crate) const MERGED: u32 = 0xFFFF_FFFC;

static TAG_KEY: AtomicU64 = AtomicU64::new(0x243F_6A88_85A3_08D3);
static TAG_MUL: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
static LINK_KEY: AtomicU64 = AtomicU64::new(0x1319_8A2E_0370_7344);
static LINK_MUL: AtomicU64 = AtomicU64::new(0xA409_3822_299F_31D1);

/// Keys the header tags and the free-list links with process-specific
/// randomness (independent keys: a link seen says nothing of the tags).
/// Must run before the first block is tagged, and never again.
pub fn set_secrets(tag: (u64, u64), link: (u64, u64)) {
    TAG_KEY.store(tag.0, Ordering::Relaxed);
    TAG_MUL.store(tag.1 | 1, Ordering::Relaxed);
    LINK_KEY.store(link.0, Ordering::Relaxed);
    LINK_MUL.store(link.1 | 1, Ordering::Relaxed);
}

/// A keyed value of `x` that does not give the keys away: `x` is mixed
/// with `key`, multiplied by the odd secret `mul`, and its high half folded
/// into its low half. One observed `(x, value)` pair leaves both 64-bit keys
/// undetermined (the multiplication by an unknown odd number hides the
/// XOR), unlike `x ^ key`, which one value with a known `x` reveals.
#[inline(always)]
pub fn keyed(x: usize, key: u64, mul: u64) -> usize {
    let y = ((x as u64) ^ key).wrapping_mul(mul);
    (y ^ (y >> 29)) as usize
}

/// Free-list links are stored masked with a keyed value of their slot's
/// address (in every mode), so a link the program overwrote after a free
/// (or copied from elsewhere) decodes to a wild address that fails the
/// checks before it is followed, a heap dump shows no pointers, and a null
/// link read after a free does not reveal how other slots are masked.
#[inline(always)]
fn link_mask(b: Block, i: usize) -> usize {
    keyed(b.addr() + 8 * i, LINK_KEY.load(Ordering::Relaxed), LINK_MUL.load(Ordering::Relaxed))
}

/// The check of footer `h` stored at `at` (see the module notes): a keyed
/// hash of both, the header hashed first so that no two (address, header)
/// pairs are one input.
#[inline(always)]
fn footer_check(at: usize, h: u32) -> u32 {
    let key = LINK_KEY.load(Ordering::Relaxed).rotate_left(31);
    let mul = LINK_MUL.load(Ordering::Relaxed);
    (keyed(at ^ keyed(h as usize, key.rotate_left(17), mul), key, mul) >> 32) as u32
}

/// The tag bits (already in place) of a used header.
#[inline(always)]
fn tag(addr: usize, units: u32) -> u32 {
    let key = TAG_KEY.load(Ordering::Relaxed);
    let mul = TAG_MUL.load(Ordering::Relaxed);
    // The address is hashed first, the size then mixed into the result
    // before a second multiplication. Had the size gone into the same
    // product as the address (as it did: XORed in above the address's
    // bits), its share of the top bits would be a sum independent of the
    // address, so the tags of one block at two sizes (a block shrunk in
    // place, read out of bounds) would give away how to change any tag to
    // any other size. Here the size's share depends on the hashed address.
    let x = (addr as u64 ^ key).wrapping_mul(mul);
    let x = ((x ^ (x >> 29)) ^ units as u64).wrapping_mul(mul);
    ((x >> 50) as u32) << 2
}

/// A used header for a block at `addr` (flags other than `PREV_USED` clear);
/// `units` is a small-form size, 0 (the epilogue) or a big-form marker.
#[inline(always)]
pub fn used_header(addr: usize, units: u32) -> u32 {
    (units << USED_UNITS_SHIFT) | tag(addr, units) | USED
}

/// The keyed check of a big block's record: 32 bits of a keyed hash of
/// the block's address and size (the tags' key, turned, so that the two
/// keyed values are not the same function). The size is hashed first: as
/// a plain XOR into the address's high bits, the record of a block at one
/// address would also check for a block 2^34 bytes away with its size
/// changed by the same bits.
#[inline]
fn big_check(addr: usize, units: u32) -> u32 {
    let key = TAG_KEY.load(Ordering::Relaxed).rotate_left(23);
    let mul = TAG_MUL.load(Ordering::Relaxed);
    (keyed(addr ^ keyed(units as usize, key.rotate_left(11), mul), key, mul) >> 32) as u32
}

/// Whether `h`, read at block address `addr`, is a correct used header
/// (of a held block: a cached block's header has the cached form).
#[inline(always)]
pub fn is_used_header(addr: usize, h: u32) -> bool {
    h & USED != 0 && (h & !PREV_USED) == used_header(addr, h >> USED_UNITS_SHIFT)
}

/// Whether `h`, read at `addr`, is the cached form of a correct used
/// header: the block waits in a thread cache (or the depot).
#[inline(always)]
pub fn is_cached_header(addr: usize, h: u32) -> bool {
    is_used_header(addr, h ^ CACHED_FLIP)
}

/// Whether `h`, read at `addr`, is a correct used header in either form:
/// a held block's or a cached one's (what the heap sees as a used
/// neighbour).
#[inline(always)]
pub fn is_held_or_cached(addr: usize, h: u32) -> bool {
    is_used_header(addr, h) || is_cached_header(addr, h)
}

/// Whether `h`, read at `addr`, is the used header of a block as handed
/// out: a small-form block or a big block's body (not an epilogue, whose
/// used header has size 0, nor a big block's head, whose payload would be
/// its record): only then may its payload be read. A big body must still
/// pass [`Block::big_units`] on its head before its size is trusted.
#[inline(always)]
pub fn is_block_header(addr: usize, h: u32) -> bool {
    is_used_header(addr, h) && used_units(h).wrapping_sub(crate::config::MIN_UNITS) < BIG_HEAD - crate::config::MIN_UNITS
}

/// Whether used header `h` is a big block's body header (its tag unchecked).
#[inline(always)]
pub const fn is_big_body(h: u32) -> bool {
    h & USED != 0 && used_units(h) == BIG_BODY
}

/// Whether used header `h` is a big block's head (its tag unchecked).
#[inline(always)]
pub const fn is_big_head(h: u32) -> bool {
    h & USED != 0 && used_units(h) == BIG_HEAD
}

/// The size in units of a used header.
#[inline(always)]
pub const fn used_units(h: u32) -> u32 {
    h >> USED_UNITS_SHIFT
}

/// A free header (and footer) for a block of `units`; a free block's
/// predecessor is always used, so `PREV_USED` is always set.
#[inline(always)]
pub(crate) const fn free_header(units: u32) -> u32 {
    (units << FREE_UNITS_SHIFT) | PREV_USED
}

/// The size in units recorded in a header of either kind (for a used
/// header, the small-form size or a big-form marker).
#[inline(always)]
pub(crate) const fn header_units(h: u32) -> u32 {
    if h & USED != 0 { h >> USED_UNITS_SHIFT } else { h >> FREE_UNITS_SHIFT }
}

/// A free-list or tree link that failed its check: the block whose link
/// was bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLink(pub usize);

/// Bytes of a block of `units`.
#[inline(always)]
pub const fn units_to_bytes(units: u32) -> usize {
    (units as usize) << UNIT_SHIFT
}

/// Whole units in `bytes`.
#[inline(always)]
pub const fn bytes_to_units(bytes: usize) -> usize {
    bytes >> UNIT_SHIFT
}

/// A block: the address of its header. Copyable; it is a position, not an
/// owner.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct Block(*mut u8);

// SAFETY: a `Block` is only an address; which thread may touch the memory
// behind it is decided by the heap's lock and the thread caches' ownership.
unsafe impl Send for Block {}

impl Block {
    /// The null block, used as "no link".
    pub const NULL: Block = Block(core::ptr::null_mut());

    /// The block at header address `addr`. Building one is safe; using it is not.
    #[inline(always)]
    pub const fn at(addr: *mut u8) -> Block {
        Block(addr)
    }

    /// The block whose payload starts at `p`.
    #[inline(always)]
    pub fn from_payload(p: *mut u8) -> Block {
        Block(p.wrapping_sub(HEADER))
    }

    #[inline(always)]
    pub fn addr(self) -> usize {
        self.0 as usize
    }

    #[inline(always)]
    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    /// Whether `addr` can be a block's header: payloads are 16-aligned and
    /// the header is the 4 bytes before, so headers sit at 12 mod 16.
    #[inline(always)]
    pub const fn is_header_position(addr: usize) -> bool {
        addr % 16 == 16 - HEADER
    }

    /// The first block of a region that starts at `start` (16-aligned): its
    /// payload is the region's first aligned address after a header.
    #[inline(always)]
    pub const fn first_in_region(start: usize) -> Block {
        Block((start + 16 - HEADER) as *mut u8)
    }

    /// The epilogue of a region that ends at `end`: a used header of size
    /// 0 in the region's last four bytes.
    #[inline(always)]
    pub const fn epilogue_of(end: usize) -> Block {
        Block((end - HEADER) as *mut u8)
    }

    /// Bytes from `self` to `other` (a later block), in units.
    #[inline(always)]
    pub fn units_to(self, other: Block) -> u32 {
        bytes_to_units(other.addr() - self.addr()) as u32
    }

    /// The payload address (16-byte aligned for every real block).
    #[inline(always)]
    pub fn payload(self) -> *mut u8 {
        self.0.wrapping_add(HEADER)
    }

    /// Offset of the first block's header in a slab's page
    /// ([`crate::slab`]): its payload is the page's first 16-aligned
    /// address after the page's start.
    pub(crate) const SLAB_FIRST: usize = 16 - HEADER;

    /// The first block of the slab on page `page`.
    #[inline(always)]
    pub fn slab_first(page: usize) -> Block {
        Block((page + Self::SLAB_FIRST) as *mut u8)
    }

    /// How many whole units `self` lies after `base`: `None` when it lies
    /// before it or not a whole number of units after it.
    #[inline]
    pub fn units_after(self, base: Block) -> Option<usize> {
        let off = self.addr().checked_sub(base.addr())?;
        off.is_multiple_of(1 << UNIT_SHIFT).then_some(off >> UNIT_SHIFT)
    }

    /// The block `units` units after this one.
    #[inline(always)]
    pub fn offset(self, units: u32) -> Block {
        Block(self.0.wrapping_add((units as usize) << UNIT_SHIFT))
    }

    /// # Safety
    /// `self` must be a header position inside a heap region.
    #[inline(always)]
    pub unsafe fn header(self) -> u32 {
        // SAFETY: the caller guarantees the header lies in mapped heap memory;
        // header positions are 4-byte aligned (≡ 12 mod 16).
        unsafe { AtomicU32::from_ptr(self.0 as *mut u32).load(Ordering::Relaxed) }
    }

    /// [`Block::header`] for the hit paths, which read the header of a
    /// block whose form a thread cache may have just changed
    /// ([`Block::toggle_cached`]). With other threads (`alone` false) that
    /// store was of byte 1 alone, and one 4-byte load would wait until it
    /// reached the cache (a load takes its value from a pending store only
    /// when the store covers it: a free and a malloc of one block in turn
    /// took twice as long), so the header is read as its parts: byte 0,
    /// byte 1, the two high bytes.
    ///
    /// # Safety
    /// As for [`Block::header`].
    #[inline(always)]
    pub unsafe fn header_hot(self, alone: bool) -> u32 {
        if alone {
            // SAFETY: forwarded.
            return unsafe { self.header() };
        }
        let p = self.0;
        // SAFETY: as for `header`; the three loads cover its four bytes.
        unsafe {
            let b0 = AtomicU8::from_ptr(p).load(Ordering::Relaxed) as u32;
            let b1 = AtomicU8::from_ptr(p.add(1)).load(Ordering::Relaxed) as u32;
            let hi = AtomicU16::from_ptr(p.add(2) as *mut u16).load(Ordering::Relaxed) as u32;
            b0 | b1 << 8 | hi << 16
        }
    }

    /// # Safety
    /// As for [`Block::header`].
    #[inline(always)]
    pub unsafe fn set_header(self, h: u32) {
        // SAFETY: as for `header`.
        unsafe { AtomicU32::from_ptr(self.0 as *mut u32).store(h, Ordering::Relaxed) }
    }

    /// Turns this block's header `h` (as read) from one form into the
    /// other, used into cached as a thread cache takes the block and back
    /// as it leaves. With other threads (`alone` false), one byte store, of
    /// byte 1 inverted: the heap may be setting or clearing a cached heap
    /// block's `PREV_USED` meanwhile, in byte 0 ([`Block::set_prev_used`]),
    /// which this store leaves alone. A thread alone stores the whole
    /// header, which a later 4-byte load can take from the pending store.
    ///
    /// # Safety
    /// `self` is a block the calling thread's cache takes or gives out (or
    /// a chain the caller holds alone), and `h` its header; `alone`, that
    /// the process has had no other thread.
    #[inline(always)]
    pub unsafe fn toggle_cached(self, h: u32, alone: bool) {
        // SAFETY: forwarded; byte 1 of the header is written by no one
        // else while the block is cached (or being cached), and with one
        // thread no one else writes any of it.
        unsafe {
            if alone {
                self.set_header(h ^ CACHED_FLIP);
            } else {
                AtomicU8::from_ptr(self.0.add(1)).store(((h ^ CACHED_FLIP) >> 8) as u8, Ordering::Relaxed);
            }
        }
    }

    /// Claims held block `self`, whose used header was `h`, for a realloc
    /// that copies it elsewhere (with other threads): its header goes to
    /// the cached form in one atomic step, so that a free or realloc of the
    /// block on another thread during the copy (a double free the program
    /// races) finds it freed, and none of its memory can be handed out.
    /// False when the header is no longer `h` but for `PREV_USED` (which
    /// the heap's lock holder may change meanwhile, and which is kept):
    /// another thread freed the block since it was checked.
    ///
    /// # Safety
    /// `self` must be a block in a heap region (its header readable and
    /// writable).
    pub unsafe fn claim(self, h: u32) -> bool {
        // SAFETY: forwarded; the header is a 4-aligned word of a region.
        let a = unsafe { AtomicU32::from_ptr(self.0 as *mut u32) };
        let mut cur = a.load(Ordering::Relaxed);
        loop {
            if (cur ^ h) & !PREV_USED != 0 {
                return false;
            }
            match a.compare_exchange_weak(cur, cur ^ CACHED_FLIP, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Gives back a claim ([`Block::claim`]): the header's used form again
    /// (one atomic step, `PREV_USED` kept), before the block is freed.
    ///
    /// # Safety
    /// As for [`Block::claim`], on a block this thread claimed.
    pub unsafe fn unclaim(self) {
        // SAFETY: forwarded.
        unsafe { AtomicU32::from_ptr(self.0 as *mut u32).fetch_xor(CACHED_FLIP, Ordering::Relaxed) };
    }

    /// The units from this header to the next block's: a free block's or a
    /// small-form block's size; for a big block's head its whole size, for
    /// its body the size less the prefix (both read from the record,
    /// unchecked: see [`Block::big_units`]).
    ///
    /// # Safety
    /// `self` must be a block in a heap region (a big body's head too).
    #[inline(always)]
    pub unsafe fn units(self) -> u32 {
        // SAFETY: forwarded to the caller; a big block's record lies in its
        // prefix, inside the region.
        unsafe {
            let h = self.header();
            if h & USED == 0 {
                return h >> FREE_UNITS_SHIFT;
            }
            match used_units(h) {
                BIG_HEAD => self.record_units(),
                BIG_BODY => self.head_of_body().record_units() - BIG_PREFIX_UNITS,
                u => u,
            }
        }
    }

    /// A big block's head's record: the size it claims, unchecked.
    ///
    /// # Safety
    /// `self` must be a header position at least 16 bytes before the end of
    /// a heap region.
    #[inline(always)]
    unsafe fn record_units(self) -> u32 {
        // SAFETY: the record is the 4 bytes after the header (16-aligned).
        unsafe { (self.payload() as *const u32).read() }
    }

    /// The body of the big block whose head is `self`.
    #[inline(always)]
    pub fn body(self) -> Block {
        self.offset(BIG_PREFIX_UNITS)
    }

    /// The head of the big block whose body is `self`.
    #[inline(always)]
    pub fn head_of_body(self) -> Block {
        Block(self.0.wrapping_sub((BIG_PREFIX_UNITS as usize) << UNIT_SHIFT))
    }

    /// For `self`, a block as handed out (a small-form block or a big
    /// block's body): where the block starts in its region's tiling, its
    /// whole size in units, and whether it has the big form.
    ///
    /// # Safety
    /// `self` must be a held block whose header was checked (a big body's
    /// head and record with [`Block::big_units`]).
    #[inline(always)]
    pub unsafe fn held_span(self) -> (Block, u32, bool) {
        // SAFETY: forwarded to the caller.
        unsafe {
            let h = self.header();
            if is_big_body(h) {
                let s = self.head_of_body();
                (s, s.record_units(), true)
            } else {
                (self, used_units(h), false)
            }
        }
    }

    /// The size of the big block whose head is `self` if the head, its
    /// record (size and keyed check) and the body's header are all intact
    /// and the size is at least [`MIN_BIG_UNITS`]; `None` otherwise. The
    /// caller still checks that the size keeps the block in its region.
    ///
    /// # Safety
    /// `self` must be a header position inside a heap region, before its
    /// epilogue.
    pub unsafe fn big_units(self) -> Option<u32> {
        // SAFETY: the record and the body's header are read only once the
        // head is a valid big head: its block, at least two units long,
        // holds them.
        unsafe {
            let h = self.header();
            if !is_big_head(h) || !is_used_header(self.addr(), h) {
                return None;
            }
            let rec = self.payload() as *const u32;
            let units = rec.read();
            if units < MIN_BIG_UNITS || rec.add(1).read() != big_check(self.addr(), units) {
                return None;
            }
            let body = self.body();
            let bh = body.header();
            (is_big_body(bh) && is_used_header(body.addr(), bh)).then_some(units)
        }
    }

    /// # Safety
    /// `self` must be a block in a heap region.
    #[inline(always)]
    pub unsafe fn is_used(self) -> bool {
        // SAFETY: forwarded to the caller.
        unsafe { self.header() & USED != 0 }
    }

    /// # Safety
    /// `self` must be a block in a heap region.
    #[inline(always)]
    pub unsafe fn prev_used(self) -> bool {
        // SAFETY: forwarded to the caller.
        unsafe { self.header() & PREV_USED != 0 }
    }

    /// Sets or clears `PREV_USED`, leaving the rest of the header (and so a
    /// used header's tag) as it is: a read and a store of byte 0 alone, so
    /// that a thread cache turning a cached heap block's header between its
    /// forms at the same moment (byte 1: [`Block::toggle_cached`]) loses
    /// nothing, and neither does this.
    ///
    /// # Safety
    /// `self` must be a block in a heap region.
    #[inline(always)]
    pub unsafe fn set_prev_used(self, on: bool) {
        // SAFETY: forwarded to the caller; byte 0 of a header is written
        // only under the heap's lock.
        unsafe {
            let b0 = AtomicU8::from_ptr(self.0);
            let v = b0.load(Ordering::Relaxed);
            b0.store(if on { v | PREV_USED as u8 } else { v & !(PREV_USED as u8) }, Ordering::Relaxed);
        }
    }

    /// Whether this block's header is a correct used header in either
    /// form: held, or waiting in a thread cache (what the heap sees as a
    /// used neighbour).
    ///
    /// # Safety
    /// `self` must be a header position inside a heap region.
    #[inline(always)]
    pub unsafe fn is_valid_held_or_cached(self) -> bool {
        // SAFETY: forwarded to the caller.
        is_held_or_cached(self.addr(), unsafe { self.header() })
    }

    /// Marks the block used with `units` (the small form, at most
    /// [`MAX_USED_UNITS`]), keeping `PREV_USED`.
    ///
    /// # Safety
    /// `self` must be a block in a heap region.
    #[inline(always)]
    pub unsafe fn set_used(self, units: u32) {
        debug_assert!(units <= MAX_USED_UNITS);
        // SAFETY: forwarded to the caller.
        unsafe {
            let prev = self.header() & PREV_USED;
            self.set_header(used_header(self.addr(), units) | prev);
        }
    }

    /// Marks the block used with `units` in the big form (head, record and
    /// body header; see the module notes), keeping `PREV_USED`. The block
    /// to hand out is [`Block::body`].
    ///
    /// # Safety
    /// `self .. self + units` must lie in a heap region, `units` at least
    /// [`MIN_BIG_UNITS`].
    pub unsafe fn set_used_big(self, units: u32) {
        debug_assert!(units >= MIN_BIG_UNITS);
        // SAFETY: the prefix is the block's first unit, inside it.
        unsafe {
            let prev = self.header() & PREV_USED;
            self.set_header(used_header(self.addr(), BIG_HEAD) | prev);
            let rec = self.payload() as *mut u32;
            rec.write(units);
            rec.add(1).write(big_check(self.addr(), units));
            rec.add(2).write(0);
            let body = self.body();
            body.set_header(used_header(body.addr(), BIG_BODY) | PREV_USED);
        }
    }

    /// Marks the block used with `units` in the small form or, when `big`,
    /// the big form; returns the block to hand out (the body when big).
    ///
    /// # Safety
    /// As for [`Block::set_used`] or [`Block::set_used_big`].
    #[inline]
    pub unsafe fn set_used_as(self, units: u32, big: bool) -> Block {
        // SAFETY: forwarded to the caller.
        unsafe {
            if big {
                self.set_used_big(units);
                self.body()
            } else {
                self.set_used(units);
                self
            }
        }
    }

    /// Writes a free header and footer for `units`.
    ///
    /// # Safety
    /// `self .. self + units` must lie in a heap region.
    #[inline(always)]
    pub unsafe fn set_free(self, units: u32) {
        // SAFETY: forwarded to the caller; the footer is the last 8 bytes
        // of the block, before the next header (a free block has at least
        // 32 bytes: header, two links and the footer).
        unsafe {
            let h = free_header(units);
            self.set_header(h);
            let f = self.offset(units).footer_before();
            f.write(h);
            f.add(1).write(footer_check(f as usize, h));
        }
    }

    /// Clears the 8 bytes before this header, where the footer of a free
    /// block that is now inside a used block's payload, or inside a larger
    /// free block, was: the program is not shown a footer's check.
    ///
    /// # Safety
    /// The 8 bytes before `self` must lie in a block of the heap (the one
    /// before it, used or merged) that no one else is writing.
    #[inline(always)]
    pub unsafe fn clear_footer_before(self) {
        // SAFETY: forwarded to the caller.
        unsafe {
            let f = self.footer_before();
            f.write(0);
            f.add(1).write(0);
        }
    }

    /// The 8 bytes just before this header (two 4-aligned words): the
    /// previous block's footer when `PREV_USED` is clear.
    #[inline(always)]
    fn footer_before(self) -> *mut u32 {
        self.0.wrapping_sub(8) as *mut u32
    }

    /// The header a free block's footer records (equal to its header when
    /// intact; `u32::MAX`, a used value, when the footer fails its check).
    ///
    /// # Safety
    /// `self` must be a free block with `units` in a heap region.
    #[inline(always)]
    pub unsafe fn footer(self, units: u32) -> u32 {
        // SAFETY: forwarded to the caller.
        unsafe { self.offset(units).prev_footer() }
    }

    /// The header the previous block's footer records, or `u32::MAX` (a
    /// used value, which every caller refuses) when the footer fails its
    /// check.
    ///
    /// # Safety
    /// `self` must be a block in a heap region whose `PREV_USED` is clear.
    #[inline(always)]
    pub unsafe fn prev_footer(self) -> u32 {
        let f = self.footer_before();
        // SAFETY: forwarded to the caller.
        let (h, check) = unsafe { (f.read(), f.add(1).read()) };
        if check == footer_check(f as usize, h) { h } else { u32::MAX }
    }

    /// The previous block, found through its footer.
    ///
    /// # Safety
    /// As for [`Block::prev_footer`], and the footer must be intact.
    #[inline(always)]
    pub unsafe fn prev(self) -> Block {
        // SAFETY: forwarded to the caller.
        let units = header_units(unsafe { self.prev_footer() });
        Block(self.0.wrapping_sub((units as usize) << UNIT_SHIFT))
    }

    /// Free-block link `i` (0: next/left, 1: prev/right, 2: parent).
    ///
    /// # Safety
    /// `self` must be a free block large enough for link `i` (2 needs a tree
    /// block).
    #[inline(always)]
    pub unsafe fn link(self, i: usize) -> Block {
        // SAFETY: links are 8-aligned slots in the payload of a free block.
        let stored = unsafe { (self.payload() as *const usize).add(i).read() };
        Block((stored ^ link_mask(self, i)) as *mut u8)
    }

    /// # Safety
    /// As for [`Block::link`].
    #[inline(always)]
    pub unsafe fn set_link(self, i: usize, to: Block) {
        // SAFETY: as for `link`.
        unsafe { (self.payload() as *mut usize).add(i).write(to.0 as usize ^ link_mask(self, i)) }
    }

    /// The bytes of free block `self` of `units` that hold neither its
    /// header, its links (four in a tree node) nor its footer: `[lo, hi)`,
    /// possibly empty.
    #[inline]
    pub fn spare_span(self, units: u32) -> (usize, usize) {
        let lo = self.payload() as usize + 4 * core::mem::size_of::<usize>();
        let hi = self.offset(units).footer_before() as usize;
        (lo, hi.max(lo))
    }

    /// Payload word 0 of a cached block: the (masked) link to the next
    /// cached block of its size.
    ///
    /// # Safety
    /// `self` must be a used block in a heap region.
    #[inline(always)]
    pub unsafe fn cache_link(self) -> usize {
        // SAFETY: the payload is 16-aligned and at least 28 bytes long.
        unsafe { (self.payload() as *const usize).read() }
    }

    /// # Safety
    /// As for [`Block::cache_link`].
    #[inline(always)]
    pub unsafe fn set_cache_link(self, v: usize) {
        // SAFETY: as for `cache_link`.
        unsafe { (self.payload() as *mut usize).write(v) }
    }

    /// Payload word 1 of a cached block: a keyed mark saying "this block is
    /// in a thread cache", checked by `free` to catch double frees.
    ///
    /// # Safety
    /// As for [`Block::cache_link`].
    #[inline(always)]
    pub unsafe fn cache_key(self) -> usize {
        // SAFETY: as for `cache_link`; word 1 is within the 28-byte minimum.
        unsafe { (self.payload() as *const usize).add(1).read() }
    }

    /// # Safety
    /// As for [`Block::cache_link`].
    #[inline(always)]
    pub unsafe fn set_cache_key(self, v: usize) {
        // SAFETY: as for `cache_key`.
        unsafe { (self.payload() as *mut usize).add(1).write(v) }
    }

    /// Payload word 2 of a cached block: the mark of the block its link
    /// names (0 for none), which its own mark covers, so that each mark
    /// vouches for the whole list below it ([`crate::tcache`]).
    ///
    /// # Safety
    /// As for [`Block::cache_link`].
    #[inline(always)]
    pub unsafe fn cache_below(self) -> usize {
        // SAFETY: as for `cache_link`; word 2 is within the 28-byte minimum.
        unsafe { (self.payload() as *const usize).add(2).read() }
    }

    /// # Safety
    /// As for [`Block::cache_link`].
    #[inline(always)]
    pub unsafe fn set_cache_below(self, v: usize) {
        // SAFETY: as for `cache_below`.
        unsafe { (self.payload() as *mut usize).add(2).write(v) }
    }

    /// Marks a block that goes back to its slab ([`crate::slab`]): its
    /// header becomes 0 (no used header: a stale pointer to it fails every
    /// header check) and payload words 0 and 1 hold keyed values of their
    /// addresses, which [`Block::take_from_slab`] checks, so a write after
    /// free is found when the block is reused.
    ///
    /// # Safety
    /// `self` must be a block of a slab, held by nobody.
    #[inline]
    pub unsafe fn put_in_slab(self) {
        // SAFETY: a slab block's header and first two payload words lie in
        // its slab's page (the smallest payload has 28 bytes).
        unsafe {
            self.set_header(0);
            let w = self.payload() as *mut usize;
            let (m0, m1) = self.slab_marks();
            w.write(m0);
            w.add(1).write(m1);
        }
    }

    /// The two marks of a block free in its slab: a keyed value of its
    /// address, and that value turned half-way round (one keyed hash for
    /// both words: reading one gives the other away, but a program that
    /// can read them can as well write back what it read, which changes
    /// nothing; a write of anything else into either word fails).
    #[inline(always)]
    fn slab_marks(self) -> (usize, usize) {
        let m = link_mask(self, 0);
        (m, m.rotate_left(32))
    }

    /// Takes a block marked by [`Block::put_in_slab`] out of its slab as a
    /// used block of `units`: false, leaving it as it is, when its header
    /// or its marks were overwritten (an overflow from the block before, or
    /// a write after free). The marks are cleared, so the
    /// program never reads a keyed value.
    ///
    /// # Safety
    /// As for [`Block::put_in_slab`].
    #[inline]
    pub unsafe fn take_from_slab(self, units: u32) -> bool {
        // SAFETY: as for `put_in_slab`.
        unsafe {
            let w = self.payload() as *mut usize;
            let (m0, m1) = self.slab_marks();
            if self.header() != 0 || w.read() != m0 || w.add(1).read() != m1 {
                return false;
            }
            w.write(0);
            w.add(1).write(0);
            self.set_header(used_header(self.addr(), units));
        }
        true
    }

    /// Whether a block free in its slab still carries the marks
    /// [`Block::put_in_slab`] wrote (for the heap checker).
    ///
    /// # Safety
    /// As for [`Block::put_in_slab`].
    pub unsafe fn slab_marks_intact(self) -> bool {
        // SAFETY: as for `put_in_slab`.
        unsafe {
            let w = self.payload() as *const usize;
            let (m0, m1) = self.slab_marks();
            self.header() == 0 && w.read() == m0 && w.add(1).read() == m1
        }
    }

    /// Payload word `i` (8 bytes each) of a held block: the hardened mode's
    /// quarantine mark lives in word 1, as the cache mark does.
    ///
    /// # Safety
    /// `self` must be a held block whose payload has more than `8 * i + 8`
    /// bytes.
    #[inline(always)]
    pub unsafe fn payload_word(self, i: usize) -> usize {
        // SAFETY: forwarded to the caller; the payload is 16-aligned.
        unsafe { (self.payload() as *const usize).add(i).read() }
    }

    /// # Safety
    /// As for [`Block::payload_word`].
    #[inline(always)]
    pub unsafe fn set_payload_word(self, i: usize, v: usize) {
        // SAFETY: as for `payload_word`.
        unsafe { (self.payload() as *mut usize).add(i).write(v) }
    }

    /// Bytes from the payload start to the end of a block of `units`.
    #[inline(always)]
    pub const fn payload_bytes(units: u32) -> usize {
        ((units as usize) << UNIT_SHIFT) - HEADER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_and_free_headers_round_trip_units() {
        let addr = 0x1000_000c;
        for units in [2u32, 3, 64, MAX_USED_UNITS] {
            let h = used_header(addr, units);
            assert_eq!(header_units(h), units);
            assert_eq!(h & USED, USED);
        }
        for units in [2u32, 64, 1 << 28] {
            let h = free_header(units);
            assert_eq!(header_units(h), units);
            assert_eq!(h & USED, 0);
        }
        assert!(header_units(MERGED) > (crate::config::MAX_REGION_BYTES >> UNIT_SHIFT) as u32);
    }

    /// A buffer of `units` units whose first header position is returned.
    fn buffer(units: usize) -> (std::vec::Vec<u128>, Block) {
        let v = std::vec![0u128; units + 2];
        let b = Block::at((v.as_ptr() as usize + 16 - HEADER) as *mut u8);
        (v, b)
    }

    #[test]
    fn big_form_keeps_its_size_in_the_record() {
        let units = 0x12_3456;
        let (_v, s) = buffer(units as usize);
        // SAFETY: the buffer holds the whole block.
        unsafe {
            s.set_header(PREV_USED);
            let body = s.set_used_as(units, true);
            assert_eq!(body, s.body());
            assert_eq!(body.head_of_body(), s);
            assert_eq!(s.big_units(), Some(units));
            assert_eq!(s.units(), units);
            assert_eq!(body.units(), units - BIG_PREFIX_UNITS);
            assert_eq!(body.held_span(), (s, units, true));
            assert!(s.prev_used() && is_used_header(s.addr(), s.header()) && is_used_header(body.addr(), body.header()));
            assert!(is_block_header(body.addr(), body.header()), "the body is handed out");
            assert!(!is_block_header(s.addr(), s.header()), "the head is not a block start");
            assert_eq!(body.payload() as usize % 16, 0);
            assert_eq!(body.offset(body.units()), s.offset(units));
        }
    }

    #[test]
    fn big_form_refuses_a_forged_record() {
        let (_v, s) = buffer(100);
        // SAFETY: the buffer holds the block.
        unsafe {
            s.set_header(0);
            s.set_used_big(100);
            let rec = s.payload() as *mut u32;
            rec.write(101);
            assert_eq!(s.big_units(), None, "an enlarged size fails the check");
            rec.write(100);
            assert_eq!(s.big_units(), Some(100));
            s.body().set_header(0);
            assert_eq!(s.big_units(), None, "a head without its body");
            s.set_used_big(100);
            s.set_header(used_header(s.addr(), BIG_HEAD) ^ (1 << 5));
            assert_eq!(s.big_units(), None, "a head with a bad tag");
            // The whole prefix, copied one unit further, is refused there.
            s.set_used_big(100);
            let t = s.offset(1);
            core::ptr::copy(s.0, t.0, 20);
            assert_eq!(t.big_units(), None);
        }
    }

    #[test]
    fn tag_depends_on_address_and_size() {
        let a = used_header(0x1000_000c, 4);
        assert_ne!(a, used_header(0x1000_001c, 4));
        assert_ne!(a, used_header(0x1000_000c, 5));
    }
}
