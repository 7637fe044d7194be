//! Treaps of large free blocks, ordered by (size, address).
//!
//! Each tree bin holds free blocks of a size range in a binary search tree
//! keyed by `(units, address)`: all keys differ, the leftmost block of at
//! least `n` units is the best fit for `n` (smallest size, then lowest
//! address), and insert, remove and search take O(log n) expected steps.
//! Balance comes from a heap order on a priority that is a hash of the
//! block's address (a treap), so nothing but the three links is stored:
//! left (link 0), right (link 1) and parent (link 2), and a copy of the
//! block's size in link 3, masked as the links are.
//!
//! The copy is what [`Treap::remove`] checks the header against: links
//! are checked by where they point, but a header rewritten to a larger
//! size in the same bin (with a footer forged to match, its mask read
//! after a free) would otherwise be taken out of the tree whole, merged,
//! and handed out over the live blocks it now claims.
//!
//! Invariants: in-order traversal is strictly increasing in key; each
//! node's priority is at least its children's; `c.parent == n` iff `c` is a
//! child of `n`. Every link is checked (inside a heap region, a free header,
//! pointing back at its parent) before it is followed.

use crate::block::{BadLink, Block};
use crate::region::RegionTable;

const LEFT: usize = 0;
const RIGHT: usize = 1;
const PARENT: usize = 2;
/// The link slot that keeps a node's size (see the module notes).
const SIZE: usize = 3;

/// Whether tree node `b`'s header size is the size it was inserted with.
///
/// # Safety
/// `b` must be a free tree block in a heap region.
#[inline(always)]
unsafe fn size_intact(b: Block) -> bool {
    // SAFETY: forwarded to the caller; a tree block holds four links.
    unsafe { b.link(SIZE).addr() == b.units() as usize }
}

#[inline(always)]
fn priority(b: Block) -> (u64, usize) {
    ((b.addr() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16, b.addr())
}

/// # Safety
/// `b` must be a free block in a heap region.
#[inline(always)]
unsafe fn key(b: Block) -> (u32, usize) {
    // SAFETY: forwarded to the caller.
    (unsafe { b.units() }, b.addr())
}

#[derive(Clone, Copy)]
pub struct Treap {
    root: Block,
}

impl Default for Treap {
    fn default() -> Self {
        Self::new()
    }
}

impl Treap {
    pub const fn new() -> Self {
        Treap { root: Block::NULL }
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_null()
    }

    /// Whether `c`, read from a link, can be a node: a header position that
    /// is filed ([`crate::filed`]: not a stale copy of a node's words), and
    /// whose header is a free one. A filed block is one some heap holds in
    /// its bins, a tree's or (named by a forged link) a small list's: at
    /// least `MIN_UNITS`, followed by a header inside its region, so its
    /// header and four links (up to 36 bytes on) lie in the region (the
    /// page map was asked for both ends, here, before the filed map
    /// existed); a list block's links then fail the node checks.
    ///
    /// # Safety
    /// None beyond `regions` describing the heap: nothing is read before
    /// the filed map's check.
    #[inline]
    unsafe fn is_node(regions: &RegionTable, c: Block) -> bool {
        Block::is_header_position(c.addr())
            && regions.filed().is_filed(c.addr())
            // SAFETY: `c` begins a filed block, in a heap region.
            && !unsafe { c.is_used() }
    }

    /// Follows link `side` of `n` after checking that the target is a node
    /// ([`Treap::is_node`]) whose parent link is `n`, and not also `n`'s
    /// other child. A node has one parent link, so no node is the child of
    /// two others, and the links followed from the root form no cycle: a
    /// walk ends (a forged link naming one node as both children sent
    /// `for_each` round in a loop, under the heap's lock).
    ///
    /// # Safety
    /// `n` must be a checked node of this tree.
    #[inline]
    unsafe fn child(regions: &RegionTable, n: Block, side: usize) -> Result<Block, BadLink> {
        // SAFETY: `n` is a checked free tree block; `c` is read only after
        // the region checks.
        unsafe {
            let c = n.link(side);
            if c.is_null() || (Self::is_node(regions, c) && c.link(PARENT) == n && n.link(1 - side) != c) {
                Ok(c)
            } else {
                Err(BadLink(n.addr()))
            }
        }
    }

    /// Checks the root: a node whose parent link is null. Every other
    /// node's parent link is checked on the way down to it ([`Treap::child`]);
    /// the root's must be, before a rotation or a walk climbs through it
    /// (a forged one would send them to write, or read, where the program
    /// chose).
    ///
    /// # Safety
    /// The root must be null or a header position the tree put there.
    unsafe fn check_root(&self, regions: &RegionTable) -> Result<(), BadLink> {
        let r = self.root;
        // SAFETY: the root's links are read only once it is a node.
        if r.is_null() || unsafe { Self::is_node(regions, r) && r.link(PARENT).is_null() } {
            Ok(())
        } else {
            Err(BadLink(r.addr()))
        }
    }

    /// Makes `new` take `old`'s place under `parent` (or at the root).
    ///
    /// # Safety
    /// `parent` must be `old`'s parent (or null when `old` is the root).
    unsafe fn replace_child(&mut self, parent: Block, old: Block, new: Block) {
        if parent.is_null() {
            self.root = new;
        } else {
            // SAFETY: `parent` is a node of this tree.
            unsafe {
                let side = if parent.link(LEFT) == old { LEFT } else { RIGHT };
                parent.set_link(side, new);
            }
        }
        if !new.is_null() {
            // SAFETY: `new` is a node of this tree.
            unsafe { new.set_link(PARENT, parent) };
        }
    }

    /// Rotates `x` above its parent `p`, keeping the in-order sequence.
    /// `x`'s inner child, which moves under `p`, is checked first (a link
    /// forged there would have the rotation write where it points).
    ///
    /// # Safety
    /// `x` must be a child of `p`, both checked nodes of this tree.
    unsafe fn rotate_up(&mut self, regions: &RegionTable, x: Block, p: Block) -> Result<(), BadLink> {
        // SAFETY: `x`, `p` and `p`'s parent are checked nodes of this tree
        // (by the callers, before the rotation); `x`'s inner child is
        // checked here.
        unsafe {
            let g = p.link(PARENT);
            let (toward, away) = if p.link(LEFT) == x { (LEFT, RIGHT) } else { (RIGHT, LEFT) };
            let inner = Self::child(regions, x, away)?;
            p.set_link(toward, inner);
            if !inner.is_null() {
                inner.set_link(PARENT, p);
            }
            x.set_link(away, p);
            p.set_link(PARENT, x);
            self.replace_child(g, p, x);
        }
        Ok(())
    }

    /// Inserts free block `b` (header and footer written).
    ///
    /// # Safety
    /// `b` must be a free block of at least 4 links' room, on no list.
    pub unsafe fn insert(&mut self, regions: &RegionTable, b: Block) -> Result<(), BadLink> {
        // SAFETY: nodes are reached through `child`, which checks them.
        unsafe {
            self.check_root(regions)?;
            // Filed first: the rotations below check `b` as a node.
            regions.filed().set(b.addr(), true);
            let k = key(b);
            b.set_link(SIZE, Block::at(k.0 as usize as *mut u8));
            let mut parent = Block::NULL;
            let mut cur = self.root;
            let mut side = LEFT;
            while !cur.is_null() {
                parent = cur;
                side = if k < key(cur) { LEFT } else { RIGHT };
                cur = Self::child(regions, cur, side)?;
            }
            b.set_link(LEFT, Block::NULL);
            b.set_link(RIGHT, Block::NULL);
            b.set_link(PARENT, parent);
            if parent.is_null() {
                self.root = b;
            } else {
                parent.set_link(side, b);
            }
            let pb = priority(b);
            loop {
                let p = b.link(PARENT);
                if p.is_null() || priority(p) >= pb {
                    break;
                }
                self.rotate_up(regions, b, p)?;
            }
        }
        Ok(())
    }

    /// Removes `b` from the tree after checking its links.
    ///
    /// # Safety
    /// `b` must be a free block believed to be in this tree.
    pub unsafe fn remove(&mut self, regions: &RegionTable, b: Block) -> Result<(), BadLink> {
        // SAFETY: `b` is a free block in a region (caller); its parent and
        // children are checked before use.
        unsafe {
            self.check_root(regions)?;
            let parent = b.link(PARENT);
            let linked = if parent.is_null() {
                self.root == b
            } else {
                Self::is_node(regions, parent) && (parent.link(LEFT) == b || parent.link(RIGHT) == b)
            };
            if !linked || !size_intact(b) || !regions.filed().is_filed(b.addr()) {
                return Err(BadLink(b.addr()));
            }
            // Rotate `b` down until it has at most one child.
            loop {
                let l = Self::child(regions, b, LEFT)?;
                let r = Self::child(regions, b, RIGHT)?;
                if l.is_null() || r.is_null() {
                    let only = if l.is_null() { r } else { l };
                    self.replace_child(b.link(PARENT), b, only);
                    regions.filed().set(b.addr(), false);
                    return Ok(());
                }
                let up = if priority(l) > priority(r) { l } else { r };
                self.rotate_up(regions, up, b)?;
            }
        }
    }

    /// The best fit: the block with the smallest key `(units, addr)` of at
    /// least `units` units.
    ///
    /// # Safety
    /// The tree's root must be a block in a heap region (or null).
    pub unsafe fn lower_bound(&self, regions: &RegionTable, units: u32) -> Result<Option<Block>, BadLink> {
        let mut best = None;
        let mut cur = self.root;
        // SAFETY: nodes are reached through `child`, which checks them.
        unsafe {
            while !cur.is_null() {
                if cur.units() >= units {
                    best = Some(cur);
                    cur = Self::child(regions, cur, LEFT)?;
                } else {
                    cur = Self::child(regions, cur, RIGHT)?;
                }
            }
        }
        Ok(best)
    }

    /// Visits every node in order (for the heap checker and heap walks).
    /// Stops at a bad link and returns it.
    ///
    /// # Safety
    /// As for [`Treap::lower_bound`].
    pub unsafe fn for_each(&self, regions: &RegionTable, mut f: impl FnMut(Block)) -> Result<(), BadLink> {
        // Morris-free iterative walk using parent links: no stack needed.
        let mut cur = self.root;
        if cur.is_null() {
            return Ok(());
        }
        // SAFETY: forwarded.
        unsafe { self.check_root(regions)? };
        // SAFETY: every step goes through `child` or a parent link of a
        // checked node.
        unsafe {
            loop {
                let l = Self::child(regions, cur, LEFT)?;
                if l.is_null() {
                    break;
                }
                cur = l;
            }
            loop {
                f(cur);
                let r = Self::child(regions, cur, RIGHT)?;
                if !r.is_null() {
                    cur = r;
                    loop {
                        let l = Self::child(regions, cur, LEFT)?;
                        if l.is_null() {
                            break;
                        }
                        cur = l;
                    }
                } else {
                    // Climb while we come from the right.
                    loop {
                        let p = cur.link(PARENT);
                        if p.is_null() {
                            return Ok(());
                        }
                        if p.link(LEFT) == cur {
                            cur = p;
                            break;
                        }
                        cur = p;
                    }
                }
            }
        }
    }

    /// Checks the order, heap and parent invariants; returns the number of
    /// nodes, or the first bad node.
    ///
    /// # Safety
    /// As for [`Treap::lower_bound`].
    pub unsafe fn validate(&self, regions: &RegionTable) -> Result<usize, BadLink> {
        let mut count = 0;
        let mut last: Option<(u32, usize)> = None;
        let mut bad = None;
        // SAFETY: forwarded; `for_each` checks every link it follows.
        unsafe {
            self.for_each(regions, |b| {
                count += 1;
                let k = key(b);
                if last.is_some_and(|l| l >= k) && bad.is_none() {
                    bad = Some(b.addr());
                }
                last = Some(k);
                let p = b.link(PARENT);
                if (!p.is_null() && priority(p) < priority(b) || !size_intact(b)) && bad.is_none() {
                    bad = Some(b.addr());
                }
            })?;
        }
        match bad {
            Some(a) => Err(BadLink(a)),
            None => Ok(count),
        }
    }
}
