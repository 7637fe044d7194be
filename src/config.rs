//! Compile-time constants of the design. Run-time tunables (mallopt and the
//! `FITALLOC_*` environment) live in [`crate::options`].

/// Every payload is aligned to this; every block size is a multiple of it.
pub(crate) const ALIGN: usize = 16;
/// Block sizes are counted in units of [`ALIGN`] bytes ("units").
pub(crate) const UNIT_SHIFT: u32 = 4;

/// Bytes of the boundary tag in front of every payload.
pub(crate) const HEADER: usize = 4;

/// Smallest block, in units: a free block must hold its header, two links
/// and a footer (4 + 8 + 8 + 4 = 24 bytes, rounded up to 32).
pub(crate) const MIN_UNITS: u32 = 2;

/// Largest block with the small form of used header, in units. That header
/// keeps the size in 16 bits (see [`crate::block`]), two of whose values
/// mark the big form instead; a larger block has the big form, which keeps
/// its size in a record beside the header.
pub(crate) const MAX_USED_UNITS: u32 = 0xFFFD;

/// Largest request the heap serves by choice, in a small-form block (the
/// best fit may be one unit larger than asked when the remainder is too
/// small to split off, and the result must still fit [`MAX_USED_UNITS`]):
/// about 1 MiB. The dynamic mmap threshold stops here, as does an
/// unprompted move of a large block into the heap; a larger request gets
/// a heap block (big form) only when no mapping can be made, or when the
/// program set `M_MMAP_THRESHOLD` above it or `M_MMAP_MAX` to 0.
pub(crate) const MAX_HEAP_REQUEST: usize = ((MAX_USED_UNITS as usize - 1) << UNIT_SHIFT) - HEADER;

/// Largest request the heap can hold at all (a big-form block): a block
/// never crosses a region, and a region stays below [`MAX_REGION_BYTES`];
/// a MiB is left for the region's frame, the big form's prefix and the
/// rounding of a growth to pages.
pub(crate) const MAX_BIG_REQUEST: usize = MAX_REGION_BYTES - (1 << 20);

/// The most address space one request could ever get: the part of the
/// user address space the kernel hands out without an address hint (47
/// bits on x86_64 whatever the paging depth, 48 on aarch64). No mapping or
/// heap growth this large can succeed, so giving memory back for such a
/// request ([`crate::alloc::alloc_block`]) is wasted work.
#[cfg(target_arch = "x86_64")]
pub(crate) const MAX_ADDRESS_SPACE: usize = 1 << 47;
#[cfg(target_arch = "aarch64")]
pub(crate) const MAX_ADDRESS_SPACE: usize = 1 << 48;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) const MAX_ADDRESS_SPACE: usize = usize::MAX;

/// Largest region of the heap. Free blocks never cross a region, and a free
/// header keeps its size in 30 bits of units; 4 GiB keeps every size in a
/// `u32` of units with room to spare.
pub(crate) const MAX_REGION_BYTES: usize = 1 << 32;

/// Small bins hold exactly one block size each, for blocks below this many
/// units (16 KiB); larger free blocks go to the tree bins. (Measured: with
/// the limit at 1 KiB, merged free spans of 1-4 KiB made tree insertions
/// and removals a fifth of the time of realloc-heavy programs; at 4 KiB,
/// blocks of 1-16 KiB replaced at random (1,000 live) took 2,250
/// allocator instructions a malloc/free pair, 1,690 at 16 KiB with 32 tree
/// bins per power of two, the shared traces' utilization unchanged.)
pub(crate) const SMALL_LIMIT_SHIFT: u32 = 10;
pub(crate) const SMALL_LIMIT_UNITS: u32 = 1 << SMALL_LIMIT_SHIFT;

/// Tree bins: each power of two of units is split into `1 << TREE_SUB_BITS`
/// bins. Finer bins keep each treap small (fewer checked links to follow
/// per insertion, removal or search); the bins' bitmap finds the next
/// non-empty one with a bit scan per 64 bins.
pub(crate) const TREE_SUB_BITS: u32 = 5;
/// Number of tree bins: units from `SMALL_LIMIT_UNITS` up to 2^30.
pub(crate) const TREE_BINS: usize = ((30 - SMALL_LIMIT_SHIFT) << TREE_SUB_BITS) as usize;

/// Thread caches hold freed blocks of up to this many units (1 KiB).
pub(crate) const TCACHE_MAX_UNITS: u32 = 64;

/// Bytes of cached blocks the depot holds between threads, by default
/// (`FITALLOC_DEPOT_BYTES`). Measured on `prodcons`, one thread allocating
/// and another freeing (`bench/depot_bound.py`): 256 KiB gave 24.3 Mops/s
/// at a blowup (peak RSS growth / peak live bytes) of 1.24, 128 KiB 22.1 at
/// 1.19, 64 KiB 18.8 at 1.10, none 12.1 at 1.10 (README, *The depot*).
pub(crate) const DEPOT_BYTES: usize = 64 << 10;

/// Page size assumed for rounding mappings; checked against the kernel's at
/// start-up.
pub(crate) const PAGE: usize = 4096;

/// Default `M_MXFAST` (glibc's `DEFAULT_MXFAST`: 64 * sizeof(size_t) / 4)
/// and the largest value `mallopt` accepts (80 * sizeof(size_t) / 4).
pub(crate) const DEFAULT_MXFAST: usize = 64 * core::mem::size_of::<usize>() / 4;
pub(crate) const MAX_MXFAST: usize = 80 * core::mem::size_of::<usize>() / 4;

/// Default threshold (bytes) at and above which a request gets its own
/// mapping (glibc's `M_MMAP_THRESHOLD` default).
pub(crate) const DEFAULT_MMAP_THRESHOLD: usize = 128 * 1024;
/// Default free bytes at the top of the heap above which the top is given
/// back to the system (glibc's `M_TRIM_THRESHOLD` default).
pub(crate) const DEFAULT_TRIM_THRESHOLD: usize = 128 * 1024;
/// Default extra bytes asked from the system on each heap growth, and kept
/// at the top when trimming (glibc's `M_TOP_PAD` default).
pub(crate) const DEFAULT_TOP_PAD: usize = 128 * 1024;
/// Default maximum number of simultaneous large-block mappings.
pub(crate) const DEFAULT_MMAP_MAX: usize = 65536;

/// Size of a heap region obtained with mmap when sbrk cannot grow the heap.
/// Untouched pages cost no memory, only address space.
pub(crate) const MMAP_REGION_BYTES: usize = 64 << 20;

/// Rounds `n` up to a multiple of `to` (a power of two), or `None` on overflow.
#[inline]
pub(crate) const fn checked_round_up(n: usize, to: usize) -> Option<usize> {
    match n.checked_add(to - 1) {
        Some(v) => Some(v & !(to - 1)),
        None => None,
    }
}

/// Rounds `n` up to a multiple of `to` (a power of two); `n` must be small
/// enough not to overflow.
#[inline]
pub(crate) const fn round_up(n: usize, to: usize) -> usize {
    (n + to - 1) & !(to - 1)
}

/// Block units needed to hold a request of `n` bytes in the small form
/// (`n <= MAX_BIG_REQUEST`; a big-form block adds its prefix,
/// [`crate::block::BIG_PREFIX_UNITS`]).
#[inline]
pub(crate) const fn request_units(n: usize) -> u32 {
    let units = ((n + HEADER + ALIGN - 1) >> UNIT_SHIFT) as u32;
    if units < MIN_UNITS { MIN_UNITS } else { units }
}

/// Most arenas: heaps with a lock of their own ([`crate::process`]).
pub(crate) const MAX_ARENAS: usize = 8;
