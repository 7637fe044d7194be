//! Slabs: pages of small blocks of one size, carved from the heap.
//!
//! A request of up to [`SLAB_MAX_UNITS`] units (268 bytes) that the thread
//! cache cannot serve is served from a slab: one 4 KiB page, aligned to a
//! page, that holds blocks of a single size in the same format as every
//! other block (a keyed used header before each payload, see
//! [`crate::block`]). The page is the payload of one used heap block (the
//! slab's *container*), taken from the best-fit heap when a size has no slab
//! with a free block and given back to it as soon as the slab is empty (an
//! empty slab kept for reuse would pin its page inside the heap's free
//! space; the thread caches already absorb a block going back and forth).
//!
//! ```text
//!   container header  page (4096-aligned)                       next page
//!   v                 v                                           v
//!   [hdr][ .. 12 .. ][h|payload ][h|payload ] ... [h|payload ][..][hdr]
//!                     ^ first block header at page + 12           ^ page + 4092:
//!                       stride units * 16                  the next heap block's header
//! ```
//!
//! The container's payload is the page less its last 4 bytes, where the
//! header of the heap block after the container sits: so containers made
//! one after another tile the heap with no gap, and that header position,
//! on a slab's page, belongs to the heap
//! ([`crate::region::is_after_slab`]). Everything that looks a block up in
//! the page map goes by its payload's page, which for the block after a
//! container is the next page.
//!
//! Why: the page map entry of a slab page names the block size
//! ([`crate::pagemap::Owner::Slab`]), so `free` knows where a block goes from
//! hot metadata, without waiting for the block's header, which is usually
//! in a cold cache line; the header is still checked, but off the critical
//! path. Taking blocks for a thread cache and giving them back is a bit
//! operation on the slab's descriptor instead of a best-fit search and a
//! coalescing, and no boundary tag of the heap is touched.
//!
//! # Invariants (under the slab lock)
//!
//! - Bit `i` of `free_bits` is set iff block `i` of the slab is free in the
//!   slab (not held by the program, not in a thread cache); `free` counts
//!   the set bits; only bits below `total` are ever set.
//! - A block free in its slab has header 0 (never a used header), so a
//!   stale pointer to it fails `free`'s header check, and keyed marks in
//!   its first two payload words, checked when it is taken again, so a
//!   write after free is found ([`Block::put_in_slab`]); a block out of
//!   the slab has a correct used header of `units`.
//! - A slab with `0 < free` is on the list `partial[units]`, and no other;
//!   no live slab has `free == total` (an empty slab goes back at once).
//! - A slab has an owner (the thread cache that takes blocks from it) only
//!   while it has room; a full slab has none.
//! - The page map entry of a live slab's page is `Slab { id, units }`; it
//!   was `saved` before, and is restored when the slab goes back.
//! - The container is a used heap block of `container_bytes`; header
//!   positions past the last block are 0, up to the page's last one.

use crate::block::{self, units_to_bytes, Block};
use crate::config::HEADER;
use crate::pagemap::{Owner, PageMap, MAX_SLAB_ID};
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Bytes of a slab: one page of the page map.
pub(crate) const SLAB_BYTES: usize = 1 << crate::pagemap::PAGE_SHIFT;
/// Largest block, in units, served from slabs: requests up to 268 bytes.
pub(crate) const SLAB_MAX_UNITS: u32 = 17;
const _: () = assert!(SLAB_MAX_UNITS < 32, "a page map entry holds 5 bits of units");
/// Units of a slab's container: from its header just before the page to
/// the page's last header position.
pub(crate) const CONTAINER_UNITS: u32 = (SLAB_BYTES / 16) as u32;
/// Bytes of a slab's page that blocks may use, from the first block's
/// header ([`Block::slab_first`]) to the page's last header position.
const ROOM: usize = SLAB_BYTES - HEADER - Block::SLAB_FIRST;
/// Most blocks one slab holds (of `MIN_UNITS`).
const MAX_BLOCKS: usize = ROOM / (crate::config::MIN_UNITS as usize * 16);
const WORDS: usize = MAX_BLOCKS.div_ceil(64);
/// No slab (an empty list, or a thread with no current slab).
pub(crate) const NIL: u32 = u32::MAX;

/// How many blocks of `units` one slab holds.
#[inline]
pub const fn blocks_per_slab(units: u32) -> usize {
    ROOM / units_to_bytes(units)
}

/// Block `i` of a slab of `units` on page `page`.
#[inline]
pub fn block_at(page: usize, units: u32, i: usize) -> Block {
    Block::slab_first(page).offset(units * i as u32)
}

/// Where block `b`, on slab page `page` of `units`, sits: its index, or
/// `None` when `b` is not the header position of one of the slab's blocks.
#[inline]
pub fn index_of(b: Block, page: usize, units: u32) -> Option<usize> {
    let off = b.units_after(Block::slab_first(page))?;
    if off >= SLAB_BYTES / 16 || units > SLAB_MAX_UNITS {
        return None;
    }
    let i = ((off as u32 * RECIPROCALS[units as usize]) >> 16) as usize;
    // Block `i` starts at `off` and ends inside the room: `i <
    // blocks_per_slab(units)` without a division.
    (block_at(page, units, i) == b && off + units as usize <= ROOM / 16).then_some(i)
}
const _: () = assert!(ROOM.is_multiple_of(16), "index_of's room test needs whole units");

/// Whether `p`, a 16-aligned address on a slab page of blocks of `units`
/// (at most 31: a page map entry's field), is the payload of one of the
/// slab's blocks: [`index_of`]'s answer, by one look-up in a table, for
/// `free`'s fast path. A header there is compared only after this: the
/// tag is a function of the address and the size only, so a header value
/// a program read where a heap block of that size once lay, written back
/// inside a live slab block, would pass it (found by a hostile review).
#[inline(always)]
pub fn is_payload(p: usize, units: u32) -> bool {
    SLOT_STARTS[(units & 31) as usize][(p & (SLAB_BYTES - 1)) >> 4]
}

/// `SLOT_STARTS[u][x]`: whether the address `x` units into a slab's page
/// is the payload of a block of a slab of `u` units. The first payload is
/// one unit in ([`Block::slab_first`] is its header); the others follow
/// every `u` units, as long as the block ends inside the room.
static SLOT_STARTS: [[bool; SLAB_BYTES / 16]; 32] = {
    let mut t = [[false; SLAB_BYTES / 16]; 32];
    let mut u = crate::config::MIN_UNITS as usize;
    while u <= SLAB_MAX_UNITS as usize {
        let mut off = 0;
        while off + u <= ROOM / 16 {
            t[u][off + (Block::SLAB_FIRST + HEADER) / 16] = true;
            off += u;
        }
        u += 1;
    }
    t
};
const _: () = assert!(Block::SLAB_FIRST + HEADER == 16, "a slab's first payload is one unit into its page");

/// `ceil(2^16 / u)` for each block size `u` (0 for sizes below 2): `off *
/// RECIPROCALS[u] >> 16` is `off / u` for every offset in a page (`off <
/// 256` units, and `off * (RECIPROCALS[u] * u - 2^16) < 2^16`), without
/// a division on `free`'s way back to a slab.
const RECIPROCALS: [u32; SLAB_MAX_UNITS as usize + 1] = {
    let mut r = [0u32; SLAB_MAX_UNITS as usize + 1];
    let mut u = 2;
    while u <= SLAB_MAX_UNITS as usize {
        r[u] = 65536u32.div_ceil(u as u32);
        u += 1;
    }
    r
};

/// One slab's descriptor.
#[derive(Clone, Copy)]
struct Desc {
    /// The page (0: the descriptor is unused).
    page: usize,
    free_bits: [u64; WORDS],
    /// Free blocks and all blocks: 32 bits each, not 16, so that a free's
    /// `free += 1` is a 32-bit store the next one's 32-bit load reads
    /// forwarded (as 16-bit fields, read together as one 32-bit load after
    /// a 16-bit store, each free of a batch stalled about 12 cycles on
    /// store forwarding: a quarter of `release_blocks`'s time).
    free: u32,
    total: u32,
    units: u32,
    /// The page map entry the page had before it became a slab.
    saved: u32,
    /// Links of `partial[units]`, or of the unused descriptors (`next`).
    next: u32,
    prev: u32,
    /// The thread cache that takes its blocks from this slab (0: none).
    /// A thread keeps one slab per size while it has room, and no other
    /// thread takes blocks from it: two threads' blocks allocated at the
    /// same time never share a slab, so never a cache line.
    owner: usize,
    /// Bytes of the container (usually `CONTAINER_UNITS` units; one more
    /// when the heap could not split the last unit off).
    container_bytes: usize,
}

const CHUNK_SHIFT: u32 = 11;
const CHUNK: usize = 1 << CHUNK_SHIFT;
const CHUNKS: usize = (MAX_SLAB_ID as usize + 1) / CHUNK;

/// Why a block could not go back to its slab.
#[derive(Debug, PartialEq, Eq)]
pub enum GiveFault {
    /// The address is not a block of a live slab.
    NotABlock,
    /// The block is already free in its slab.
    AlreadyFree,
}

/// Figures for the statistics.
#[derive(Default, Clone, Copy, Debug)]
pub struct SlabCounters {
    pub slabs: usize,
    /// Bytes of the slabs' containers (heap blocks).
    pub container_bytes: usize,
    /// Bytes of every block of every slab (payloads and headers).
    pub block_bytes: usize,
    pub blocks: usize,
    /// Blocks free in their slabs, and their bytes (payloads and headers).
    pub free_blocks: usize,
    pub free_bytes: usize,
}

impl SlabCounters {
    /// Bytes of the slabs' containers that no block can use.
    pub fn slack_bytes(&self) -> usize {
        self.container_bytes - self.block_bytes
    }
}

/// Every slab, behind the slab lock ([`crate::process::slabs`]).
pub struct Slabs {
    map: &'static PageMap,
    chunks: [*mut Desc; CHUNKS],
    /// Descriptors ever made (ids below this are initialised).
    made: u32,
    /// Unused descriptors, linked by `next`.
    unused: u32,
    /// Slabs with a free block, per size.
    partial: [u32; SLAB_MAX_UNITS as usize + 1],
    pub counters: SlabCounters,
}

// SAFETY: the descriptor chunks are private memory reached only through
// `&mut Slabs`, which the slab lock serialises.
unsafe impl Send for Slabs {}

impl Slabs {
    pub const fn new(map: &'static PageMap) -> Self {
        Slabs {
            map,
            chunks: [core::ptr::null_mut(); CHUNKS],
            made: 0,
            unused: NIL,
            partial: [NIL; SLAB_MAX_UNITS as usize + 1],
            counters: SlabCounters { slabs: 0, container_bytes: 0, block_bytes: 0, blocks: 0, free_blocks: 0, free_bytes: 0 },
        }
    }

    fn desc(&mut self, id: u32) -> &mut Desc {
        let c = self.chunks[id as usize >> CHUNK_SHIFT];
        debug_assert!(!c.is_null());
        // SAFETY: ids below `made` lie in mapped chunks; `&mut self`
        // makes this the only reference.
        unsafe { &mut *c.add(id as usize & (CHUNK - 1)) }
    }

    /// A descriptor to use, or `None` when the table is full or no chunk
    /// can be mapped.
    fn new_desc(&mut self) -> Option<u32> {
        if self.unused != NIL {
            let id = self.unused;
            self.unused = self.desc(id).next;
            return Some(id);
        }
        let id = self.made;
        if id > MAX_SLAB_ID {
            return None;
        }
        let c = id as usize >> CHUNK_SHIFT;
        if self.chunks[c].is_null() {
            let m = crate::os::map_table(CHUNK * core::mem::size_of::<Desc>())?;
            self.chunks[c] = m as *mut Desc;
        }
        self.made += 1;
        Some(id)
    }

    fn link(&mut self, id: u32) {
        let units = self.desc(id).units as usize;
        let head = self.partial[units];
        {
            let d = self.desc(id);
            d.next = head;
            d.prev = NIL;
        }
        if head != NIL {
            self.desc(head).prev = id;
        }
        self.partial[units] = id;
    }

    fn unlink(&mut self, id: u32) {
        let (units, next, prev) = {
            let d = self.desc(id);
            (d.units as usize, d.next, d.prev)
        };
        if prev != NIL {
            self.desc(prev).next = next;
        } else {
            self.partial[units] = next;
        }
        if next != NIL {
            self.desc(next).prev = prev;
        }
    }

    /// Takes up to `out.len()` blocks of `units` (at most
    /// [`SLAB_MAX_UNITS`]) out of slabs, making slabs from containers that
    /// `container` takes from the heap when none has room; their headers
    /// are written. Returns how many, or a block whose marks were
    /// overwritten after it was freed (the blocks taken before it are in
    /// `out`, taken).
    ///
    /// # Safety
    /// `container` returns `None` or a used heap block of at least
    /// [`CONTAINER_UNITS`] whose payload is page-aligned, given to the slab
    /// for good, with its page in a heap region (so reserved in the page
    /// map).
    pub unsafe fn take(
        &mut self,
        units: u32,
        out: &mut [Block],
        owner: usize,
        cur: &AtomicU32,
        mut container: impl FnMut() -> Option<Block>,
    ) -> Result<usize, Block> {
        debug_assert!((crate::config::MIN_UNITS..=SLAB_MAX_UNITS).contains(&units));
        debug_assert!(owner != 0);
        let mut k = 0;
        while k < out.len() {
            let id = match self.pick(units, owner, cur) {
                Some(id) => id,
                None => {
                    // The descriptor first: a container taken for a slab
                    // that cannot be made would be lost to the heap.
                    let Some(id) = self.new_desc() else { break };
                    let Some(c) = container() else {
                        self.unuse(id);
                        break;
                    };
                    // SAFETY: forwarded (caller).
                    unsafe { self.make(id, c, units) };
                    self.desc(id).owner = owner;
                    cur.store(id, Relaxed);
                    id
                }
            };
            let d = self.desc(id);
            let stride = units as usize * 16;
            for w in 0..WORDS {
                while d.free_bits[w] != 0 && k < out.len() {
                    let bit = d.free_bits[w].trailing_zeros() as usize;
                    d.free_bits[w] &= d.free_bits[w] - 1;
                    d.free -= 1;
                    let b = block_at(d.page, units, w * 64 + bit);
                    // SAFETY: block `w * 64 + bit` of the slab lies in its
                    // page, which the slab owns, and is free in it.
                    if !unsafe { b.take_from_slab(units) } {
                        d.free_bits[w] |= 1 << bit;
                        d.free += 1;
                        self.counters.free_bytes -= k * stride;
                        self.counters.free_blocks -= k;
                        return Err(b);
                    }
                    out[k] = b;
                    k += 1;
                }
            }
            if d.free == 0 {
                // Full: off its list, and no one's until a block comes back.
                d.owner = 0;
                self.unlink(id);
                cur.store(NIL, Relaxed);
            }
        }
        self.counters.free_bytes -= k * units as usize * 16;
        self.counters.free_blocks -= k;
        Ok(k)
    }

    /// The slab of `units` that `owner` takes blocks from: its current one
    /// (`cur`) while that has room, else the first slab with room that no
    /// thread owns, which becomes its own. `None`: a new slab is needed.
    fn pick(&mut self, units: u32, owner: usize, cur: &AtomicU32) -> Option<u32> {
        let c = cur.load(Relaxed);
        if c < self.made {
            let d = self.desc(c);
            if d.owner == owner && d.page != 0 && d.units == units {
                if d.free > 0 {
                    return Some(c);
                }
                d.owner = 0;
            }
        }
        let mut id = self.partial[units as usize];
        while id != NIL {
            let d = self.desc(id);
            if d.owner == 0 {
                d.owner = owner;
                cur.store(id, Relaxed);
                return Some(id);
            }
            id = d.next;
        }
        None
    }

    /// Gives up the slabs `owner` takes blocks from (its thread exits):
    /// other threads may use them. `cur` holds its current slab per size.
    pub fn disown(&mut self, owner: usize, cur: &[AtomicU32]) {
        for c in cur {
            let id = c.load(Relaxed);
            if id < self.made && self.desc(id).owner == owner {
                self.desc(id).owner = 0;
            }
            c.store(NIL, Relaxed);
        }
    }

    /// Makes a slab of `units` with descriptor `id` in container `c`.
    ///
    /// # Safety
    /// As for [`Slabs::take`]'s containers.
    unsafe fn make(&mut self, id: u32, c: Block, units: u32) {
        let page = c.payload() as usize;
        let total = blocks_per_slab(units);
        // SAFETY: every block lies in the page, ours now. Header positions
        // past the last block (up to the page's last one, which is the
        // heap's) are cleared too, so that no used header left there by
        // the heap's earlier use of the memory passes `free`'s check.
        unsafe {
            for i in 0..total {
                block_at(page, units, i).put_in_slab();
            }
            let mut spare = block_at(page, units, total);
            while spare.addr() < page + SLAB_BYTES - HEADER {
                spare.set_header(0);
                spare = spare.offset(1);
            }
        }
        // SAFETY: the container is a used heap block of the caller's.
        let container_units = unsafe { c.units() };
        if container_units > CONTAINER_UNITS {
            // The heap could not split one unit off the container: the
            // page's last header position lies inside it, not at the next
            // heap block; a header 0 there is never a block start.
            // SAFETY: inside the container's payload.
            unsafe { Block::at((page + SLAB_BYTES - HEADER) as *mut u8).set_header(0) };
        }
        let saved = self.map.entry(page);
        let mut free_bits = [0u64; WORDS];
        for (w, word) in free_bits.iter_mut().enumerate() {
            let left = total.saturating_sub(w * 64);
            *word = if left >= 64 { u64::MAX } else { (1u64 << left) - 1 };
        }
        let stride = units as usize * 16;
        *self.desc(id) = Desc {
            page,
            free_bits,
            free: total as u32,
            total: total as u32,
            units,
            saved,
            next: NIL,
            prev: NIL,
            owner: 0,
            container_bytes: units_to_bytes(container_units),
        };
        self.map.set(page, Owner::Slab { id, units }.entry());
        self.link(id);
        self.counters.slabs += 1;
        self.counters.container_bytes += units_to_bytes(container_units);
        self.counters.blocks += total;
        self.counters.block_bytes += total * stride;
        self.counters.free_blocks += total;
        self.counters.free_bytes += total * stride;
    }

    /// Puts unused descriptor `id` on the unused list.
    fn unuse(&mut self, id: u32) {
        let unused = self.unused;
        let e = self.desc(id);
        e.page = 0;
        e.owner = 0;
        e.next = unused;
        self.unused = id;
    }

    /// Gives block `b` back to its slab. When that empties the slab, it
    /// goes: its page map entry is restored and `release` gets its
    /// container back.
    ///
    /// # Safety
    /// `b` must not be used by the program or a cache any more (a double
    /// give is reported, not trusted).
    #[cfg(test)]
    pub unsafe fn give(&mut self, b: Block, release: impl FnMut(Block)) -> Result<(), GiveFault> {
        let Owner::Slab { id, units } = self.map.owner(b.addr()) else {
            return Err(GiveFault::NotABlock);
        };
        // SAFETY: forwarded.
        unsafe { self.give_to(b, id, units, release) }
    }

    /// Whether block `b` of slab `id` (of `units`) is free in its slab: for
    /// the message of a free whose header reads 0 (a double free, or an
    /// overflow that zeroed a held block's header).
    pub fn is_free_in_slab(&mut self, b: Block, id: u32, units: u32) -> bool {
        if id >= self.made {
            return false;
        }
        let d = self.desc(id);
        d.page != 0 && d.units == units && index_of(b, d.page, units).is_some_and(|i| d.free_bits[i / 64] & (1 << (i % 64)) != 0)
    }

    /// [`Slabs::give`] of block `b` whose page's entry, read before the
    /// slab lock was taken, named slab `id` of `units`. The entry of a
    /// held block's page cannot change while the program holds it (its
    /// slab is not empty); for a block given twice it may have, so the
    /// descriptor is checked: a block not in slab `id` as it is now is
    /// reported.
    ///
    /// # Safety
    /// As for [`Slabs::give`].
    pub unsafe fn give_to(&mut self, b: Block, id: u32, units: u32, mut release: impl FnMut(Block)) -> Result<(), GiveFault> {
        if id >= self.made {
            return Err(GiveFault::NotABlock);
        }
        let d = self.desc(id);
        if d.page == 0 || d.units != units {
            return Err(GiveFault::NotABlock);
        }
        let Some(i) = index_of(b, d.page, units) else {
            return Err(GiveFault::NotABlock);
        };
        let bit = 1u64 << (i % 64);
        if d.free_bits[i / 64] & bit != 0 {
            return Err(GiveFault::AlreadyFree);
        }
        d.free_bits[i / 64] |= bit;
        d.free += 1;
        let (free, total) = (d.free, d.total);
        // SAFETY: `b` is a block of this slab, out of the program's hands.
        unsafe { b.put_in_slab() };
        self.counters.free_bytes += units as usize * 16;
        self.counters.free_blocks += 1;
        if free == 1 {
            self.link(id);
        }
        if free == total {
            self.unmake(id, &mut release);
        }
        Ok(())
    }

    /// Gives every empty slab back to the heap (malloc_trim). Returns how
    /// many.
    pub fn release_empty(&mut self, mut release: impl FnMut(Block)) -> usize {
        let mut n = 0;
        for units in 0..=SLAB_MAX_UNITS as usize {
            let mut id = self.partial[units];
            while id != NIL {
                let d = *self.desc(id);
                if d.free == d.total {
                    self.unmake(id, &mut release);
                    n += 1;
                }
                id = d.next;
            }
        }
        n
    }

    /// Unmakes empty slab `id`: off its list, its page's entry restored,
    /// its container to `release`, its descriptor unused.
    fn unmake(&mut self, id: u32, release: &mut impl FnMut(Block)) {
        self.unlink(id);
        let d = *self.desc(id);
        debug_assert_eq!(d.free, d.total);
        self.map.set(d.page, d.saved);
        self.counters.slabs -= 1;
        self.counters.container_bytes -= d.container_bytes;
        self.counters.blocks -= d.total as usize;
        self.counters.block_bytes -= d.total as usize * d.units as usize * 16;
        self.counters.free_blocks -= d.total as usize;
        self.counters.free_bytes -= d.total as usize * d.units as usize * 16;
        self.unuse(id);
        // Each block's header position says "merged" from now on, as a heap
        // block's does once merged into a neighbour: a stale pointer to one,
        // freed again once the page is the heap's, is reported as the double
        // free it is ([`crate::pointer::bad_heap_pointer`]).
        for i in 0..d.total as usize {
            // SAFETY: block `i` of the slab lies in its page, still ours
            // until `release` below.
            unsafe { block_at(d.page, d.units, i).set_header(block::MERGED) };
        }
        release(Block::from_payload(d.page as *mut u8));
    }

    /// Checks every slab: its page map entry, its counts and bits, the
    /// headers of its free blocks, its list. Calls `problem` for each fault.
    ///
    /// # Safety
    /// The slabs' pages must be mapped (they are, while the slabs live).
    pub unsafe fn check(&mut self, mut problem: impl FnMut(&'static str, usize)) {
        let mut on_lists = 0usize;
        for units in 0..=SLAB_MAX_UNITS as usize {
            let mut id = self.partial[units];
            let mut prev = NIL;
            let mut n = 0;
            while id != NIL {
                let d = *self.desc(id);
                if d.prev != prev || d.units as usize != units || d.free == 0 || d.page == 0 {
                    problem("slab list broken at", d.page);
                    break;
                }
                prev = id;
                id = d.next;
                n += 1;
                if n > self.made as usize {
                    problem("slab list loops", units);
                    break;
                }
            }
            on_lists += n;
        }
        let (mut live, mut with_room, mut free_bytes) = (0, 0, 0);
        let (mut blocks, mut free_blocks, mut container_bytes) = (0, 0, 0);
        for id in 0..self.made {
            let d = *self.desc(id);
            if d.page == 0 {
                continue;
            }
            live += 1;
            let stride = d.units as usize * 16;
            if self.map.owner(d.page) != (Owner::Slab { id, units: d.units }) {
                problem("page map disagrees with a slab", d.page);
            }
            if d.total as usize != blocks_per_slab(d.units) {
                problem("slab has a wrong block count", d.page);
            }
            if d.free == d.total {
                problem("an empty slab was kept", d.page);
            }
            let c = Block::from_payload(d.page as *mut u8);
            // SAFETY: the container's header lies just before the page, in
            // the heap region that holds it.
            let ch = unsafe { c.header() };
            if !block::is_used_header(c.addr(), ch) || units_to_bytes(block::used_units(ch)) != d.container_bytes {
                problem("slab's container is not a used heap block of its size", d.page);
            }
            blocks += d.total as usize;
            free_blocks += d.free as usize;
            container_bytes += d.container_bytes;
            let ones: u32 = d.free_bits.iter().map(|w| w.count_ones()).sum();
            if ones != d.free {
                problem("slab free count disagrees with its bits", d.page);
            }
            for i in 0..MAX_BLOCKS {
                let set = d.free_bits[i / 64] & (1 << (i % 64)) != 0;
                if i >= d.total as usize {
                    if set {
                        problem("slab has a free bit past its blocks", d.page);
                    }
                    continue;
                }
                let b = block_at(d.page, d.units, i);
                // SAFETY: header positions of a live slab's blocks.
                let h = unsafe { b.header() };
                // SAFETY: as above; the marks lie in the block.
                if set && !unsafe { b.slab_marks_intact() } {
                    problem("block free in its slab was written after free", b.addr());
                }
                // A block out of its slab: held, or cached (its header in the cached form).
                let used = block::used_header(b.addr(), d.units);
                if !set && h != used && h != used ^ block::CACHED_FLIP {
                    problem("slab block has a bad header", b.addr());
                }
            }
            if d.free > 0 {
                with_room += 1;
            } else if d.owner != 0 {
                problem("a full slab has an owner", d.page);
            }
            free_bytes += d.free as usize * stride;
        }
        if live != self.counters.slabs {
            problem("slab count wrong", live);
        }
        if with_room != on_lists {
            problem("a slab with room is not on its list", with_room);
        }
        if free_bytes != self.counters.free_bytes {
            problem("slab free bytes wrong", free_bytes);
        }
        if blocks != self.counters.blocks || free_blocks != self.counters.free_blocks {
            problem("slab block counts wrong", blocks);
        }
        if container_bytes != self.counters.container_bytes {
            problem("slab container bytes wrong", container_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reciprocals_divide_every_offset_in_a_page_exactly() {
        for u in crate::config::MIN_UNITS..=SLAB_MAX_UNITS {
            for off in 0..(SLAB_BYTES / 16) as u32 {
                assert_eq!((off * RECIPROCALS[u as usize]) >> 16, off / u, "units {u}, offset {off}");
            }
        }
    }

    #[test]
    fn index_of_names_block_starts_only() {
        let page = 0x7000_0000_0000usize;
        for u in crate::config::MIN_UNITS..=SLAB_MAX_UNITS {
            for i in 0..blocks_per_slab(u) {
                let b = block_at(page, u, i);
                assert_eq!(index_of(b, page, u), Some(i));
                assert_eq!(index_of(b.offset(1), page, u), None);
            }
            assert_eq!(index_of(block_at(page, u, blocks_per_slab(u)), page, u), None);
            assert_eq!(index_of(Block::at((page - 4) as *mut u8), page, u), None);
        }
    }
}
