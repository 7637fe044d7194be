//! Large blocks, each in its own mapping, and the table that owns them.
//!
//! A request too big for the heap (or above the mmap threshold when the
//! heap has no free block for it) gets a private anonymous mapping with the
//! payload 16 bytes in (or at the requested alignment). Nothing is stored in
//! the mapping itself: each mapping has a slot in this table (payload, base,
//! length), and the payload's page names its slot in the page map
//! ([`crate::pagemap`]), so a large block's payload is recognised in two
//! loads, and a pointer that is not ours by a page with no owner, never by
//! reading memory that might not be there. An address inside a large
//! block, not its payload, is recognised by visiting the table (misuse
//! only).
//!
//! When a block is freed its payload page keeps a tombstone naming the slot,
//! and freed slots are reused only once [`KEEP_FREED`] others wait, so a
//! second free of a recently freed large block is reported as a double free.

use crate::pagemap::{Owner, PageMap};
use crate::os;

/// One large block's mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Mapping {
    pub payload: usize,
    /// The whole mapping, which ends with an inaccessible guard page when
    /// `guarded`.
    pub base: usize,
    pub len: usize,
    pub guarded: bool,
}

impl Mapping {
    /// Bytes the program may use from the payload on.
    pub fn usable(&self, page: usize) -> usize {
        self.base + self.len - self.payload - if self.guarded { page } else { 0 }
    }
}

/// What the table knows about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The payload of a live large block.
    Live(Mapping),
    /// An address inside a live large block's mapping that is not its payload.
    Interior(Mapping),
    /// The payload of a large block that was freed.
    Freed,
    /// An address inside the mapping of a large block that was freed
    /// (one of the last freed, whose slots are kept as tombstones).
    InFreed,
    Unknown,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    m: Mapping,
    live: bool,
    /// Next slot in the queue of freed slots.
    next: u32,
}

const NONE: u32 = u32::MAX;
const CHUNK_SHIFT: u32 = 12;
const CHUNK: usize = 1 << CHUNK_SHIFT;
/// 8 Mi slots: more large blocks than the system lets a process map
/// (`vm.max_map_count`, 65,530 by default), within what a page map entry
/// can name.
const CHUNKS: usize = 2048;
const _: () = assert!(CHUNK * CHUNKS <= crate::pagemap::MAX_ID as usize + 1);
/// Freed slots kept as tombstones before one is reused.
const KEEP_FREED: usize = 256;

pub struct MapTable {
    map: &'static PageMap,
    chunks: [*mut Slot; CHUNKS],
    /// Slots ever handed out (the next new one).
    used: u32,
    /// The queue of freed slots, oldest first.
    freed_head: u32,
    freed_tail: u32,
    freed: usize,
    live: usize,
    /// Bytes of all live mappings.
    pub bytes: usize,
    pub peak_bytes: usize,
    pub peak_count: usize,
    /// Mappings of freed large blocks kept for reuse, with when each was
    /// freed (ms); `retained_bytes` is their total.
    retained: [(Mapping, u64); RETAIN_COUNT],
    retained_count: usize,
    pub retained_bytes: usize,
}

/// How many freed mappings may be kept for reuse, and the bytes each and
/// all of them may hold. A program that mallocs, touches and frees a large
/// buffer in a loop gets the same resident pages back (no mmap, munmap or
/// page faults), and one whose buffers change size gets them resized (one
/// mremap, page faults only for the growth); the memory returns to the system when it stays unused for
/// the decay time ([`crate::trim`]), at `malloc_trim`, or when newer ones
/// push it out.
const RETAIN_COUNT: usize = 8;
const RETAIN_ONE_MAX: usize = 32 << 20;
const RETAIN_ALL_MAX: usize = 64 << 20;

/// Mappings given back by the table, to unmap once its lock is released.
#[derive(Default)]
pub struct Evicted {
    list: [Mapping; RETAIN_COUNT + 1],
    n: usize,
}

impl Evicted {
    fn push(&mut self, m: Mapping) {
        self.list[self.n] = m;
        self.n += 1;
    }

    /// Unmaps every mapping given back.
    pub fn unmap(self) {
        for m in &self.list[..self.n] {
            // SAFETY: a mapping that no block and no table entry uses.
            unsafe { os::unmap(m.base, m.len) };
        }
    }
}

/// Whether the mapping of a freed large block may be kept for reuse.
fn keepable(m: Mapping) -> bool {
    !m.guarded && m.len <= RETAIN_ONE_MAX
}

/// Kept mappings up to this size are inaccessible until reused, so that a
/// program's write after free to such a large block faults where it
/// happens, as it does after glibc's munmap (mimalloc-bench's
/// `write_after_free_large`), instead of changing memory a later malloc
/// hands out. It costs two `mprotect` calls per reuse, and a fault on
/// the first write to each page after it: a loop that mallocs a 256 KiB
/// block, writes each of its pages and frees it took 17-21 µs a round
/// instead of 0.55 (glibc, which unmaps and maps again: 164-178). Such a
/// loop needs `M_MMAP_THRESHOLD` set: the dynamic threshold moves blocks
/// of these sizes to the heap after the first free, so they are rarely
/// kept. Larger ones stay accessible: closing them made mimalloc-bench's
/// malloc-large pattern (buffers of 5 to 25 MiB replaced at random,
/// `bench/buffers.c`) take 1.30 to 1.48 times as long (3 interleaved
/// runs); with this bound its time is unchanged (4.9-5.4 s against
/// 5.0-5.2).
const CLOSE_KEPT_MAX: usize = 1 << 20;

/// Makes the mapping of freed large block `m` (out of the table) ready to
/// be kept ([`MapTable::retain`]): inaccessible, up to [`CLOSE_KEPT_MAX`].
/// False when it is not to be kept (too big, guarded, or the system
/// refused to close it), and is to be unmapped.
pub fn keep(m: Mapping) -> bool {
    // SAFETY: `m` is a whole mapping of ours that no block uses any more.
    keepable(m) && (m.len > CLOSE_KEPT_MAX || unsafe { os::protect(m.base, m.len, false) })
}

/// Makes the block's part `m` of a kept mapping readable and writable
/// (it may have been closed by [`keep`]; for one that was not, the system
/// call changes nothing); false, and `m` unmapped, when the system refuses.
pub fn open(m: Mapping) -> bool {
    // SAFETY: `m` is ours (out of the kept list) and unused.
    unsafe { os::protect(m.base, m.len, true) || { os::unmap(m.base, m.len); false } }
}

/// Whether a kept mapping of `have` bytes serves a request for `want` as
/// it is: at least `want`, and at most twice as much (or 64 KiB more). A
/// mapping shrunk to each request must fault its pages in again when the
/// next one is larger; one kept whole serves larger requests later as it
/// is. Measured on mimalloc-bench's malloc-large pattern (buffers of 5 to
/// 25 MiB replaced at random, `bench/buffers.c`): 4.3 s against 5.0 with a
/// quarter of slack at most, at 445 MiB of peak RSS against 419 (glibc's
/// 537; `bench/published/2026-12-01-review/returns.txt`).
pub fn close_enough(have: usize, want: usize) -> bool {
    (want..=want + want.max(64 << 10)).contains(&have)
}

/// Fits kept mapping `k` (unguarded, out of the table) to a request for
/// `want` bytes, keeping its pages: `(mapping for the block, tail to keep)`.
///
/// - [`close_enough`]: `k` as it is.
/// - Larger: split, with no system call: the block takes the first `want`
///   bytes and the rest (more than `want`, and more than 64 KiB) is a
///   mapping of its own, whose resident pages the caller keeps with the
///   others ([`MapTable::retain`]). Shrinking `k` in place gave those
///   pages back to the system, and the next larger request faulted them in
///   again. Measured on mimalloc-bench's malloc-large pattern (buffers of
///   5 to 25 MiB replaced at random, `bench/buffers.c`): 1.44 million page
///   faults down to 0.63 million, 4.7 s down to 2.5 (glibc 2.3), at 486 MiB
///   of peak RSS against 456 (glibc 549; the tails are resident within the
///   kept mappings' bounds): `bench/published/2026-12-02-large/`.
/// - Smaller: grown, moved (its page tables, not its bytes) where it has
///   no room, so only the growth faults. `None` when the system has no
///   room to grow it: `k` has been unmapped.
///
/// The returned mappings' payloads are unset, and both are as
/// accessible as `k` was (the caller opens the block's: [`open`]).
pub fn fit(k: Mapping, want: usize) -> Option<(Mapping, Option<Mapping>)> {
    debug_assert!(!k.guarded);
    if close_enough(k.len, want) {
        return Some((k, None));
    }
    if k.len > want {
        let tail = Mapping { payload: k.base + want, base: k.base + want, len: k.len - want, guarded: false };
        return Some((Mapping { len: want, ..k }, Some(tail)));
    }
    // SAFETY: `k` is a whole mapping of ours that nothing uses.
    unsafe {
        match os::remap(k.base, k.len, want, true) {
            Some(base) => Some((Mapping { base, len: want, ..k }, None)),
            None => {
                os::unmap(k.base, k.len);
                None
            }
        }
    }
}

// SAFETY: the chunks are owned by the table; callers serialise access.
unsafe impl Send for MapTable {}

impl MapTable {
    pub const fn new(map: &'static PageMap) -> Self {
        MapTable {
            map,
            chunks: [core::ptr::null_mut(); CHUNKS],
            used: 0,
            freed_head: NONE,
            freed_tail: NONE,
            freed: 0,
            live: 0,
            bytes: 0,
            peak_bytes: 0,
            peak_count: 0,
            retained: [(Mapping { payload: 0, base: 0, len: 0, guarded: false }, 0); RETAIN_COUNT],
            retained_count: 0,
            retained_bytes: 0,
        }
    }

    /// Keeps the mapping of a freed block (already removed) for reuse,
    /// pushing out the oldest kept ones beyond the bounds; what no longer
    /// fits comes back in the returned list, to unmap.
    /// A freed block's mapping goes through [`keep`] first.
    pub fn retain(&mut self, m: Mapping, now_ms: u64) -> Evicted {
        let mut out = Evicted::default();
        if !keepable(m) {
            out.push(m);
            return out;
        }
        while self.retained_count == RETAIN_COUNT || self.retained_bytes + m.len > RETAIN_ALL_MAX {
            out.push(self.drop_retained(0));
        }
        self.retained[self.retained_count] = (m, now_ms);
        self.retained_count += 1;
        self.retained_bytes += m.len;
        out
    }

    fn drop_retained(&mut self, i: usize) -> Mapping {
        let (m, _) = self.retained[i];
        self.retained.copy_within(i + 1..self.retained_count, i);
        self.retained_count -= 1;
        self.retained_bytes -= m.len;
        m
    }

    /// The kept mapping closest to `len` bytes, which leaves the list: the
    /// smallest of at least `len`, else the largest. The caller resizes it
    /// to `len` ([`fit`]) unless it is [`close_enough`]: its resident pages
    /// are worth more than a fresh mapping's, which faults every page in
    /// again (measured: mimalloc-bench's malloc-large pattern, buffers of
    /// 5 to 25 MiB replaced at random, spent 80% of its time in page faults
    /// when only near sizes were reused).
    pub fn reuse(&mut self, len: usize) -> Option<Mapping> {
        let kept = 0..self.retained_count;
        let best = kept
            .clone()
            .filter(|&i| self.retained[i].0.len >= len)
            .min_by_key(|&i| self.retained[i].0.len)
            .or_else(|| kept.max_by_key(|&i| self.retained[i].0.len))?;
        Some(self.drop_retained(best))
    }

    /// The first `len` bytes of the kept mapping that begins at `addr`,
    /// out of the list, when there is one that long; the rest of it stays
    /// kept, with the time it was kept at. For a block that grows into
    /// the tail [`fit`] left beside it when it split a kept mapping for
    /// it.
    pub fn take_kept_at(&mut self, addr: usize, len: usize) -> Option<Mapping> {
        let i = (0..self.retained_count).find(|&i| self.retained[i].0.base == addr && self.retained[i].0.len >= len)?;
        let (k, kept_at) = self.retained[i];
        self.drop_retained(i);
        if k.len > len {
            // In the slot just freed, within the bytes just freed.
            let rest = Mapping { payload: k.base + len, base: k.base + len, len: k.len - len, guarded: false };
            self.retained[self.retained_count] = (rest, kept_at);
            self.retained_count += 1;
            self.retained_bytes += rest.len;
        }
        Some(Mapping { payload: k.base, base: k.base, len, guarded: false })
    }

    /// Gives back the kept mappings freed at or before `cutoff_ms` (all of
    /// them for `u64::MAX`).
    pub fn expire(&mut self, cutoff_ms: u64) -> Evicted {
        let mut out = Evicted::default();
        let mut i = 0;
        while i < self.retained_count {
            if self.retained[i].1 <= cutoff_ms {
                out.push(self.drop_retained(i));
            } else {
                i += 1;
            }
        }
        out
    }

    pub fn count(&self) -> usize {
        self.live
    }

    fn slot_ptr(&self, id: u32) -> *mut Slot {
        let c = self.chunks[id as usize >> CHUNK_SHIFT];
        assert!(!c.is_null() && id < self.used, "large slot {id} out of range");
        c.wrapping_add(id as usize & (CHUNK - 1))
    }

    fn slot(&self, id: u32) -> &Slot {
        // SAFETY: a slot in a mapped chunk owned by the table.
        unsafe { &*self.slot_ptr(id) }
    }

    fn slot_mut(&mut self, id: u32) -> &mut Slot {
        // SAFETY: as for `slot`; `&mut self` makes the access exclusive.
        unsafe { &mut *self.slot_ptr(id) }
    }

    /// What the table knows about address `a`.
    pub fn lookup(&self, a: usize) -> Lookup {
        match self.map.owner(a) {
            Owner::Large { id } if id < self.used => {
                let s = self.slot(id);
                if !s.live {
                    Lookup::Unknown
                } else if s.m.payload == a {
                    Lookup::Live(s.m)
                } else {
                    Lookup::Interior(s.m)
                }
            }
            Owner::Freed { id } if id < self.used && !self.slot(id).live && self.slot(id).m.payload == a => {
                Lookup::Freed
            }
            _ => match self.containing(a) {
                Some(m) => Lookup::Interior(m),
                None if self.in_freed(a) => Lookup::InFreed,
                None => Lookup::Unknown,
            },
        }
    }

    /// Whether `a` lies in the mapping of a freed large block: one kept
    /// for reuse, or one unmapped whose slot is still a tombstone and whose
    /// pages nothing has mapped since (else they may be the program's own).
    /// Misuse path only: a look at every slot, and a system call.
    #[cold]
    fn in_freed(&self, a: usize) -> bool {
        let within = |m: Mapping| m.len != 0 && a >= m.base && a < m.base + m.len;
        if self.retained[..self.retained_count].iter().any(|&(m, _)| within(m)) {
            return true;
        }
        (0..self.used).any(|id| {
            let s = self.slot(id);
            !s.live && within(s.m)
        }) && !crate::os::is_mapped(a)
    }

    /// The live mapping holding `a`, found by visiting every one: only the
    /// payload's page is in the page map (recording every page would cost
    /// each large malloc and free a write per 4 KiB), so this answers for
    /// the other pages, on the misuse path only.
    #[cold]
    fn containing(&self, a: usize) -> Option<Mapping> {
        let mut found = None;
        self.for_each(|_, m| {
            if a >= m.base && a < m.base + m.len {
                found = Some(m);
            }
        });
        found
    }

    /// Makes room for one more mapping before it is made, so that only the
    /// page map can refuse to record it afterwards. False if the table
    /// cannot grow.
    pub fn reserve(&mut self) -> bool {
        if self.freed > KEEP_FREED {
            return true;
        }
        let c = self.used as usize >> CHUNK_SHIFT;
        if c >= CHUNKS {
            return false;
        }
        if self.chunks[c].is_null() {
            let Some(m) = os::map_table(CHUNK * core::mem::size_of::<Slot>()) else { return false };
            self.chunks[c] = m as *mut Slot;
        }
        true
    }

    /// Records a live mapping (after [`MapTable::reserve`]); false if the
    /// page map cannot cover it.
    pub fn insert(&mut self, m: Mapping) -> bool {
        if !self.reserve() || !self.map.reserve(m.payload, m.payload + 1) {
            return false;
        }
        let id = if self.freed > KEEP_FREED {
            let id = self.freed_head;
            self.freed_head = self.slot(id).next;
            if self.freed_head == NONE {
                self.freed_tail = NONE;
            }
            self.freed -= 1;
            id
        } else {
            self.used += 1;
            self.used - 1
        };
        *self.slot_mut(id) = Slot { m, live: true, next: NONE };
        self.map.set(m.payload, Owner::Large { id }.entry());
        self.live += 1;
        self.bytes += m.len;
        self.peak_bytes = self.peak_bytes.max(self.bytes);
        self.peak_count = self.peak_count.max(self.live);
        true
    }

    /// Forgets the live mapping whose payload is `a`, leaving a tombstone
    /// on its payload page. Returns the mapping (the caller unmaps it).
    pub fn remove(&mut self, a: usize) -> Option<Mapping> {
        let Owner::Large { id } = self.map.owner(a) else { return None };
        let s = self.slot_mut(id);
        if !s.live || s.m.payload != a {
            return None;
        }
        let m = s.m;
        s.live = false;
        s.next = NONE;
        self.map.set(m.payload, Owner::Freed { id }.entry());
        if self.freed_tail == NONE {
            self.freed_head = id;
        } else {
            let tail = self.freed_tail;
            self.slot_mut(tail).next = id;
        }
        self.freed_tail = id;
        self.freed += 1;
        self.live -= 1;
        self.bytes -= m.len;
        Some(m)
    }

    /// Makes sure `[lo, hi)` can be recorded (for a mapping about to move
    /// or grow there).
    pub fn reserve_range(&self, lo: usize, hi: usize) -> bool {
        self.map.reserve(lo, hi)
    }

    /// Visits every live mapping.
    pub fn for_each(&self, mut f: impl FnMut(u32, Mapping)) {
        for id in 0..self.used {
            let s = self.slot(id);
            if s.live {
                f(id, s.m);
            }
        }
    }

    /// Whether the page map names slot `id` on the payload's page of `m`.
    pub fn map_agrees(&self, id: u32, m: Mapping) -> bool {
        self.map.owner(m.payload) == Owner::Large { id }
    }

    /// Live entries and bytes counted by a walk (for the checker).
    pub fn walk_count(&self) -> (usize, usize) {
        let (mut n, mut bytes) = (0, 0);
        self.for_each(|_, m| {
            n += 1;
            bytes += m.len;
        });
        (n, bytes)
    }
}

/// A mapping for a large block of `size` bytes aligned to `align`, ending
/// with an inaccessible guard page, the block placed as close to it as the
/// alignment allows (so an overflow faults at once): `(payload, base, len)`,
/// `len` including the guard page.
///
/// The slack between the block and the guard page is less than
/// `max(align, page)`: it holds the hardened mode's canary, so its cost must
/// not grow with the alignment. Up to a page of alignment the block ends at
/// the guard page, rounded down to the alignment; above a page the block
/// starts at an aligned address and the guard page follows the block's
/// last page, the pages around them given back.
pub fn map_guarded(size: usize, align: usize, page: usize) -> Option<Mapping> {
    // A block of 0 bytes still owns a byte, so its address is its own.
    let size = size.max(1);
    let align = align.max(16);
    let body = crate::config::checked_round_up(size.checked_add(align)?, page)?;
    let len = body.checked_add(page)?;
    if len > isize::MAX as usize {
        return None;
    }
    let base = os::map_accounted(len)?;
    let (payload, first, guard) = if align <= page {
        let guard = base + body;
        (((guard - size) & !(align - 1)), base, guard)
    } else {
        let payload = crate::config::round_up(base, align);
        (payload, payload, crate::config::round_up(payload + size, page))
    };
    // SAFETY: the trimmed ranges are parts of our fresh mapping outside
    // `[first, guard + page)`; the guard page lies inside the mapping
    // (`guard + page <= base + len`) and nothing lives there.
    unsafe {
        if first > base {
            os::unmap(base, first - base);
        }
        if base + len > guard + page {
            os::unmap(guard + page, base + len - guard - page);
        }
        if libc::mprotect(guard as *mut libc::c_void, page, libc::PROT_NONE) != 0 {
            os::unmap(first, guard + page - first);
            return None;
        }
    }
    Some(Mapping { payload, base: first, len: guard + page - first, guarded: true })
}

/// The mapping for a large block of `size` bytes aligned to `align` (a
/// power of two): `(payload, base, len)`. Excess pages from alignment are
/// unmapped.
pub fn map_block(size: usize, align: usize, page: usize) -> Option<Mapping> {
    // A block of 0 bytes still owns a byte, so its address is its own.
    let size = size.max(1);
    let lead = if align <= 16 { 16 } else { align + 16 };
    let len = crate::config::checked_round_up(size.checked_add(lead)?, page)?;
    if len > isize::MAX as usize {
        return None;
    }
    let base = os::map_accounted(len)?;
    if align <= 16 {
        return Some(Mapping { payload: base + 16, base, len, guarded: false });
    }
    // Aligned: the payload goes at the first aligned address at least 16
    // bytes in (or at the base itself when the base is already aligned and
    // the alignment is a page or more); whole pages before and after the
    // block are returned.
    let payload = if align >= page && base % align == 0 { base } else { crate::config::round_up(base + 16, align) };
    let first = (payload - if payload == base { 0 } else { 16 }) & !(page - 1);
    let end = crate::config::round_up(payload + size, page);
    // SAFETY: the trimmed ranges are parts of our fresh mapping that the
    // block does not use.
    unsafe {
        if first > base {
            os::unmap(base, first - base);
        }
        if base + len > end {
            os::unmap(end, base + len - end);
        }
    }
    Some(Mapping { payload, base: first, len: end - first, guarded: false })
}
