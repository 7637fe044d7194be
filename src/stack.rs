//! Call stacks for the heap profiler, taken without allocating and, once a
//! program's call sites have been seen, without parsing anything.
//!
//! Most of the cost of libgcc's `_Unwind_Backtrace` (about 1,500
//! instructions a frame) is finding and interpreting a frame's DWARF
//! call-frame information again at every sample. Yet a return address
//! always unwinds by the same rule, and on x86-64 the rules that compilers
//! emit for ordinary code are few: the canonical frame address (CFA) is the
//! stack pointer or the frame pointer plus a constant, the return address
//! is stored at a constant offset from the CFA, and the caller's frame
//! pointer is either untouched or stored at one. So [`capture`] walks the
//! stack itself, with a cache of those rules keyed by return address:
//!
//! - **Hit:** a few loads per frame.
//! - **Miss:** libgcc's `_Unwind_Find_FDE` finds the frame description
//!   entry and this module interprets its CFA program up to the address
//!   ([`rule_for`]), then caches the rule.
//! - **Anything else** (a signal frame, a DWARF expression, a register the
//!   rule does not cover, no description at all, a CFA that does not move
//!   up the stack): the whole stack is taken again by `_Unwind_Backtrace`,
//!   which handles every case. The walk never guesses.
//!
//! Nothing here takes a lock: objects are looked up with glibc's
//! `_dl_find_object` (lock-free and fork-safe; found with `dlsym` when
//! profiling starts, and without it the walk is left to libgcc), never
//! with `dl_iterate_phdr`, which holds the loader's lock (a forked child
//! could hang on it, and a program's callback holding its own lock could
//! deadlock with a sample). The cache is a table of slots, each behind a
//! version counter read like a sequence lock, shared by every thread.
//! Each rule is cached with the identity of the object it was worked out
//! in (where it is mapped and where its unwind tables are), checked on
//! every hit: after a `dlclose`, another library at the same address does
//! not inherit the old one's rules.

use core::ffi::c_void;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering::{Acquire, Relaxed, Release}};

/// Frames kept per stack.
pub(crate) const MAX_FRAMES: usize = 48;
/// Frames walked at most, ours included.
const MAX_STEPS: usize = MAX_FRAMES + 16;

/// Entries of the rule cache (a power of two): 28 KiB in `.bss`, touched
/// only by a profiling process (a program's sampled stacks hold a few
/// hundred distinct return addresses; the cache's pages count in its
/// footprint).
const CACHE: usize = 1024;
/// Per slot: a version (odd while a writer fills the slot), the code
/// address, the rule (0: no rule, the walk hands over) and the object's
/// identity.
static SEQS: [AtomicU32; CACHE] = [const { AtomicU32::new(0) }; CACHE];
static KEYS: [AtomicUsize; CACHE] = [const { AtomicUsize::new(0) }; CACHE];
static RULES: [AtomicU64; CACHE] = [const { AtomicU64::new(0) }; CACHE];
static IDENTS: [AtomicU64; CACHE] = [const { AtomicU64::new(0) }; CACHE];

/// glibc's `_dl_find_object` (2.35 and later), or 0.
static FIND_OBJECT: AtomicUsize = AtomicUsize::new(0);

/// Looks up `_dl_find_object` and libgcc's unwinder (when profiling
/// starts: `dlsym` and `dlopen` may allocate).
pub fn init() {
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches every object.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_find_object".as_ptr()) };
    FIND_OBJECT.store(f as usize, Relaxed);
    Unwinder::load();
}

/// libgcc's unwinder (`libgcc_s.so.1`), looked up when profiling starts
/// rather than linked: a process that never profiles does not load the
/// library (about 100 KiB of resident memory in a C program, which has no
/// other use for it). A C++ program has it loaded already. Without it, the
/// cached walk covers the frames it can and stops at the first it cannot.
struct Unwinder;

/// `_Unwind_Find_FDE`, `_Unwind_Backtrace` and `_Unwind_GetIP`, or 0.
static UNWIND: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
const FIND_FDE: usize = 0;
const BACKTRACE: usize = 1;
const GET_IP: usize = 2;

impl Unwinder {
    fn load() {
        const NAMES: [&core::ffi::CStr; 3] = [c"_Unwind_Find_FDE", c"_Unwind_Backtrace", c"_Unwind_GetIP"];
        // SAFETY: NUL-terminated names; a handle from dlopen, checked.
        unsafe {
            let mut handle = libc::RTLD_DEFAULT;
            if libc::dlsym(handle, NAMES[0].as_ptr()).is_null() {
                handle = libc::dlopen(c"libgcc_s.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
                if handle.is_null() {
                    return;
                }
            }
            let found = NAMES.map(|n| libc::dlsym(handle, n.as_ptr()) as usize);
            if found.iter().all(|&f| f != 0) {
                for (slot, f) in UNWIND.iter().zip(found) {
                    slot.store(f, Relaxed);
                }
            }
        }
    }

    /// `_Unwind_Find_FDE(pc, bases)`; null when libgcc is not loaded.
    fn find_fde(pc: usize, bases: &mut DwarfEhBases) -> usize {
        let f = UNWIND[FIND_FDE].load(Relaxed);
        if f == 0 {
            return 0;
        }
        // SAFETY: `f` is libgcc's `_Unwind_Find_FDE` (looked up by its
        // name), whose signature this is; it reads the loaded objects'
        // tables and writes `bases`.
        unsafe {
            let f: unsafe extern "C" fn(*mut c_void, *mut DwarfEhBases) -> *const u8 = core::mem::transmute(f);
            f(pc as *mut c_void, bases) as usize
        }
    }

    /// `_Unwind_Backtrace(step, arg)`; false when libgcc is not loaded.
    fn backtrace(step: extern "C" fn(*mut c_void, *mut c_void) -> i32, arg: *mut c_void) -> bool {
        let f = UNWIND[BACKTRACE].load(Relaxed);
        if f == 0 {
            return false;
        }
        // SAFETY: `f` is libgcc's `_Unwind_Backtrace`; `step` matches the
        // callback's C signature and `arg` is the caller's.
        unsafe {
            type Trace = extern "C" fn(*mut c_void, *mut c_void) -> i32;
            let f: unsafe extern "C" fn(Trace, *mut c_void) -> i32 = core::mem::transmute(f);
            f(step, arg);
        }
        true
    }

    /// `_Unwind_GetIP(ctx)`, for a context libgcc passed to a callback
    /// (which it only does once loaded).
    fn ip(ctx: *mut c_void) -> usize {
        let f = UNWIND[GET_IP].load(Relaxed);
        // SAFETY: `f` is libgcc's `_Unwind_GetIP`, set before any
        // backtrace could call back; `ctx` is the unwinder's context.
        unsafe {
            let f: unsafe extern "C" fn(*mut c_void) -> usize = core::mem::transmute(f);
            f(ctx)
        }
    }
}

/// glibc's `struct dl_find_object`.
#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: usize,
    map_end: usize,
    link_map: usize,
    eh_frame: usize,
    reserved: [u64; 7],
}

/// The identity of the loaded object holding `pc` (never 0), or `None`
/// for code outside every object (a JIT's, which can be replaced at the
/// same address) or when glibc cannot say.
fn object_of(pc: usize) -> Option<u64> {
    let f = FIND_OBJECT.load(Relaxed);
    if f == 0 {
        return None;
    }
    // SAFETY: `f` is glibc's `_dl_find_object`, whose signature this is.
    let find: unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> i32 = unsafe { core::mem::transmute(f) };
    let mut o = DlFindObject { flags: 0, map_start: 0, map_end: 0, link_map: 0, eh_frame: 0, reserved: [0; 7] };
    // SAFETY: lock-free, async-signal-safe; it writes `o`.
    if unsafe { find(pc as *mut c_void, &mut o) } != 0 || o.eh_frame == 0 {
        return None;
    }
    Some((o.map_start as u64 ^ (o.map_end as u64).rotate_left(21) ^ (o.eh_frame as u64).rotate_left(42)) | 1)
}

/// DWARF register numbers on x86-64.
const RBP: u64 = 6;
const RSP: u64 = 7;
const RA: u64 = 16;

/// How one frame unwinds, packed in a word for the cache.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Rule {
    /// The CFA is `rbp + cfa_off` (else `rsp + cfa_off`).
    cfa_rbp: bool,
    cfa_off: i16,
    /// The caller's `rbp` is stored at `CFA + rbp_off` (else unchanged).
    rbp_at: Option<i16>,
    /// The return address is at `CFA + ra_off`; `None`: the outermost
    /// frame (its return address is undefined).
    ra_at: Option<i16>,
}

impl Rule {
    /// Never 0, so a zeroed cache slot never decodes as a rule.
    fn pack(self) -> u64 {
        let flags = 1 | (self.cfa_rbp as u64) << 1 | (self.rbp_at.is_some() as u64) << 2 | (self.ra_at.is_some() as u64) << 3;
        flags
            | (self.cfa_off as u16 as u64) << 16
            | (self.rbp_at.unwrap_or(0) as u16 as u64) << 32
            | (self.ra_at.unwrap_or(0) as u16 as u64) << 48
    }

    fn unpack(w: u64) -> Rule {
        Rule {
            cfa_rbp: w & 2 != 0,
            cfa_off: (w >> 16) as u16 as i16,
            rbp_at: (w & 4 != 0).then_some((w >> 32) as u16 as i16),
            ra_at: (w & 8 != 0).then_some((w >> 48) as u16 as i16),
        }
    }
}

/// Takes the caller's stack: return addresses, innermost first, leaving out
/// the innermost frames whose address is in `own` (the allocator's). Returns
/// the depth.
#[inline(never)]
pub fn capture(frames: &mut [usize; MAX_FRAMES], own: core::ops::Range<usize>) -> usize {
    match walk(frames, &own) {
        Some(depth) => depth,
        None => {
            HANDED_OVER.fetch_add(1, Relaxed);
            backtrace(frames, own)
        }
    }
}

/// Stacks the cached walk handed over to libgcc's (reported in the
/// profile, so a program whose frames the walk does not cover shows).
static HANDED_OVER: AtomicU64 = AtomicU64::new(0);

pub fn handed_over() -> u64 {
    HANDED_OVER.load(Relaxed)
}

/// The cached walk; `None` where it cannot be sure of a frame.
#[inline(never)]
fn walk(frames: &mut [usize; MAX_FRAMES], own: &core::ops::Range<usize>) -> Option<usize> {
    let (mut ip, mut sp, mut bp): (usize, usize, usize);
    // SAFETY: reads three registers; touches no memory.
    unsafe {
        core::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags)
        );
    }
    let mut depth = 0;
    let mut skipping = true;
    // The first address is inside this function, not a return address.
    let mut key = ip;
    // Memory is known readable from this frame up to `mapped_to`: a frame
    // pointer the program overwrote (an overflow of a buffer on its stack)
    // could lead past the stack, so a read beyond it first asks whether it
    // can be read (a system call per page the walk enters; mapped is not
    // enough: another thread's stack guard page is mapped, unreadable).
    // Reads only go up the stack, so the pages skipped are never read.
    let page = crate::os::page_size();
    let mut mapped_to = (sp | (page - 1)) + 1;
    let mut readable = |a: usize| {
        if a < mapped_to {
            return true;
        }
        if !crate::os::is_readable(a & !7) {
            return false;
        }
        mapped_to = (a | (page - 1)) + 1;
        true
    };
    for _ in 0..MAX_STEPS {
        let r = cached_rule(key)?;
        let Some(ra_at) = r.ra_at else { return Some(depth) };
        let cfa = (if r.cfa_rbp { bp } else { sp }).wrapping_add(r.cfa_off as isize as usize);
        // Each frame's CFA is above the one before it, on the stack: a
        // frame that says otherwise (a frame pointer the program overwrote)
        // ends the stack here; libgcc's walk would follow it too (found by
        // a hostile review: handed over, it faulted in libgcc).
        if cfa <= sp || cfa & 7 != 0 || cfa - sp > 1 << 24 {
            return Some(depth);
        }
        // The saved words lie in the frame: at or above its stack pointer.
        let in_frame = |at: i16| Some(cfa.wrapping_add(at as isize as usize)).filter(|&a| a >= sp && a < cfa);
        let Some(ra_slot) = in_frame(ra_at) else { return Some(depth) };
        let bp_slot = match r.rbp_at {
            Some(at) => match in_frame(at) {
                Some(b) => Some(b),
                None => return Some(depth),
            },
            None => None,
        };
        // Not mapped: not the program's stack. The walk stops here
        // (libgcc's would read there too).
        let (lo, hi) = match bp_slot {
            Some(b) => (ra_slot.min(b), ra_slot.max(b)),
            None => (ra_slot, ra_slot),
        };
        if !readable(lo) || !readable(hi) {
            return Some(depth);
        }
        // SAFETY: both slots are in this frame, between its stack pointer
        // and its CFA, on this thread's stack, where the frame's description
        // says the return address and the caller's frame pointer are.
        unsafe {
            ip = *(ra_slot as *const usize);
            if let Some(a) = bp_slot {
                bp = *(a as *const usize);
            }
        }
        sp = cfa;
        if ip == 0 {
            return Some(depth);
        }
        if skipping && own.contains(&ip) {
            key = ip - 1;
            continue;
        }
        skipping = false;
        frames[depth] = ip;
        depth += 1;
        if depth == MAX_FRAMES {
            return Some(depth);
        }
        // A return address is just past its call: the call is at `ip - 1`.
        key = ip - 1;
    }
    Some(depth)
}

fn slot(key: usize) -> usize {
    ((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE.trailing_zeros())) as usize
}

/// The rule for code address `key`, from the cache or worked out; `None`
/// when the walk must hand over (no object, or a frame it does not cover:
/// cached too, so such a frame costs a lookup, not a parse, every time).
fn cached_rule(key: usize) -> Option<Rule> {
    if key < 4096 {
        return None;
    }
    let ident = object_of(key)?;
    let i = slot(key);
    let v = SEQS[i].load(Acquire);
    if v & 1 == 0 {
        let (k, w, id) = (KEYS[i].load(Relaxed), RULES[i].load(Relaxed), IDENTS[i].load(Relaxed));
        fence(Acquire);
        if SEQS[i].load(Relaxed) == v && k == key && id == ident {
            return (w != 0).then(|| Rule::unpack(w));
        }
    }
    let r = rule_for(key);
    // Cache it, unless another thread is filling this slot.
    if v & 1 == 0 && SEQS[i].compare_exchange(v, v + 1, Acquire, Relaxed).is_ok() {
        KEYS[i].store(key, Relaxed);
        RULES[i].store(r.map_or(0, Rule::pack), Relaxed);
        IDENTS[i].store(ident, Relaxed);
        SEQS[i].store(v + 2, Release);
    }
    r
}

#[repr(C)]
struct DwarfEhBases {
    tbase: *mut c_void,
    dbase: *mut c_void,
    func: *mut c_void,
}


/// A reader of call-frame information between two addresses; every read
/// past the end fails.
struct Cursor {
    p: usize,
    end: usize,
}

impl Cursor {
    fn u8(&mut self) -> Option<u8> {
        if self.p >= self.end {
            return None;
        }
        // SAFETY: inside the entry, which the loader mapped with its object.
        let v = unsafe { *(self.p as *const u8) };
        self.p += 1;
        Some(v)
    }

    fn bytes(&mut self, n: usize) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..n {
            v |= (self.u8()? as u64) << (8 * i);
        }
        Some(v)
    }

    fn uleb(&mut self) -> Option<u64> {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= ((b & 0x7f) as u64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
    }

    fn sleb(&mut self) -> Option<i64> {
        let (mut v, mut shift) = (0i64, 0);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= ((b & 0x7f) as i64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Some(v);
            }
        }
    }

    /// Skips a pointer of encoding `enc` (`DW_EH_PE_*`; only its format
    /// matters) and returns its raw value.
    fn encoded(&mut self, enc: u8) -> Option<u64> {
        match enc & 0x0f {
            0x00 | 0x04 | 0x0c => self.bytes(8),
            0x01 => self.uleb(),
            0x09 => self.sleb().map(|v| v as u64),
            0x02 | 0x0a => self.bytes(2),
            0x03 | 0x0b => self.bytes(4),
            _ => None,
        }
    }
}

/// Where a register's value is, as far as the walk needs to know.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Saved {
    Unchanged,
    At(i64),
    Undefined,
}

#[derive(Clone, Copy)]
struct Row {
    cfa_reg: u64,
    cfa_off: i64,
    rbp: Saved,
    ra: Saved,
}

/// Works out the rule at code address `pc` from its frame description
/// entry; `None` for anything the walk does not handle.
fn rule_for(pc: usize) -> Option<Rule> {
    let mut bases = DwarfEhBases { tbase: core::ptr::null_mut(), dbase: core::ptr::null_mut(), func: core::ptr::null_mut() };
    let fde = Unwinder::find_fde(pc, &mut bases);
    if fde == 0 || bases.func.is_null() || pc < bases.func as usize {
        return None;
    }
    // SAFETY: the entry's length and CIE pointer words, which libgcc has
    // just read itself.
    let (len, cie_delta) = unsafe { (*(fde as *const u32), *((fde + 4) as *const u32)) };
    if len == 0 || len == u32::MAX {
        return None;
    }
    let fde_end = fde + 4 + len as usize;
    let cie = (fde + 4).checked_sub(cie_delta as usize)?;
    // SAFETY: as above, for the common entry the FDE names.
    let cie_len = unsafe { *(cie as *const u32) };
    if cie_len == 0 || cie_len == u32::MAX {
        return None;
    }
    let mut c = Cursor { p: cie + 8, end: cie + 4 + cie_len as usize };
    let version = c.u8()?;
    if version != 1 && version != 3 {
        return None;
    }
    let mut aug = [0u8; 8];
    let mut n = 0;
    loop {
        let b = c.u8()?;
        if b == 0 {
            break;
        }
        if n == aug.len() {
            return None;
        }
        aug[n] = b;
        n += 1;
    }
    let aug = &aug[..n];
    if aug.first() != Some(&b'z') || aug.contains(&b'S') {
        // No augmentation data to size the FDE's, or a signal frame.
        return None;
    }
    let code_align = c.uleb()?;
    let data_align = c.sleb()?;
    let ra_reg = if version == 1 { c.u8()? as u64 } else { c.uleb()? };
    if ra_reg != RA {
        return None;
    }
    let aug_len = c.uleb()? as usize;
    let aug_end = c.p + aug_len;
    let mut fde_enc = 0u8;
    for &a in &aug[1..] {
        match a {
            b'R' => fde_enc = c.u8()?,
            b'P' => {
                let e = c.u8()?;
                c.encoded(e)?;
            }
            b'L' => {
                c.u8()?;
            }
            _ => return None,
        }
    }
    c.p = aug_end;
    let initial = Row { cfa_reg: RSP, cfa_off: 0, rbp: Saved::Unchanged, ra: Saved::Undefined };
    let mut row = run(&mut c, initial, initial, code_align, data_align, usize::MAX)?;
    let cie_row = row;
    let mut f = Cursor { p: fde + 8, end: fde_end };
    f.encoded(fde_enc)?; // the start, which libgcc gave as `bases.func`
    let range = f.encoded(fde_enc & 0x0f)? as usize;
    if pc >= bases.func as usize + range {
        return None;
    }
    let skip = f.uleb()? as usize;
    f.p += skip;
    row = run(&mut f, row, cie_row, code_align, data_align, pc - bases.func as usize)?;
    let cfa_rbp = match row.cfa_reg {
        RSP => false,
        RBP => true,
        _ => return None,
    };
    let small = |v: i64| i16::try_from(v).ok();
    Some(Rule {
        cfa_rbp,
        cfa_off: small(row.cfa_off)?,
        rbp_at: match row.rbp {
            Saved::Unchanged => None,
            Saved::At(o) => Some(small(o)?),
            Saved::Undefined => return None,
        },
        ra_at: match row.ra {
            Saved::At(o) => Some(small(o)?),
            Saved::Undefined => None,
            Saved::Unchanged => return None,
        },
    })
}

/// Runs a CFA program from row `row` while the location is at most
/// `target` (bytes from the function's start; `usize::MAX`: the whole
/// program, a CIE's initial instructions). `initial` is the row
/// `DW_CFA_restore` goes back to.
fn run(c: &mut Cursor, mut row: Row, initial: Row, code_align: u64, data_align: i64, target: usize) -> Option<Row> {
    let mut stack = [row; 4];
    let mut depth = 0;
    let mut loc = 0usize;
    let set = |row: &mut Row, reg: u64, s: Saved| -> Option<()> {
        match reg {
            RBP => row.rbp = s,
            RA => row.ra = s,
            // Neither the stack pointer nor the CFA may move this way.
            RSP => return None,
            _ => {}
        }
        Some(())
    };
    let restore = |row: &mut Row, reg: u64| match reg {
        RBP => row.rbp = initial.rbp,
        RA => row.ra = initial.ra,
        _ => {}
    };
    while c.p < c.end {
        let op = c.u8()?;
        let advance = match op >> 6 {
            1 => Some((op & 0x3f) as u64),
            2 => {
                let off = c.uleb()? as i64 * data_align;
                set(&mut row, (op & 0x3f) as u64, Saved::At(off))?;
                None
            }
            3 => {
                restore(&mut row, (op & 0x3f) as u64);
                None
            }
            _ => match op {
                0x00 => None,
                0x02 => Some(c.bytes(1)?),
                0x03 => Some(c.bytes(2)?),
                0x04 => Some(c.bytes(4)?),
                0x05 => {
                    let reg = c.uleb()?;
                    let off = c.uleb()? as i64 * data_align;
                    set(&mut row, reg, Saved::At(off))?;
                    None
                }
                0x06 => {
                    restore(&mut row, c.uleb()?);
                    None
                }
                0x07 => {
                    set(&mut row, c.uleb()?, Saved::Undefined)?;
                    None
                }
                0x08 => {
                    set(&mut row, c.uleb()?, Saved::Unchanged)?;
                    None
                }
                0x0a => {
                    if depth == stack.len() {
                        return None;
                    }
                    stack[depth] = row;
                    depth += 1;
                    None
                }
                0x0b => {
                    depth = depth.checked_sub(1)?;
                    // The whole saved row, CFA rule included, as libgcc
                    // restores it.
                    row = stack[depth];
                    None
                }
                0x0c => {
                    row.cfa_reg = c.uleb()?;
                    row.cfa_off = c.uleb()? as i64;
                    None
                }
                0x0d => {
                    row.cfa_reg = c.uleb()?;
                    None
                }
                0x0e => {
                    row.cfa_off = c.uleb()? as i64;
                    None
                }
                0x11 => {
                    let reg = c.uleb()?;
                    let off = c.sleb()? * data_align;
                    set(&mut row, reg, Saved::At(off))?;
                    None
                }
                0x12 => {
                    row.cfa_reg = c.uleb()?;
                    row.cfa_off = c.sleb()? * data_align;
                    None
                }
                0x13 => {
                    row.cfa_off = c.sleb()? * data_align;
                    None
                }
                // DW_CFA_expression and DW_CFA_val_expression of a register
                // the walk does not follow: skip the block.
                0x10 | 0x16 => {
                    let reg = c.uleb()?;
                    if reg == RBP || reg == RA || reg == RSP {
                        return None;
                    }
                    let n = c.uleb()? as usize;
                    c.p = c.p.checked_add(n)?;
                    None
                }
                // DW_CFA_GNU_args_size: only for landing pads.
                0x2e => {
                    c.uleb()?;
                    None
                }
                // DW_CFA_set_loc, register, def_cfa_expression, val_offset
                // and the rest: not handled.
                _ => return None,
            },
        };
        if let Some(delta) = advance {
            loc = loc.checked_add((delta * code_align) as usize)?;
            if loc > target {
                return Some(row);
            }
        }
    }
    Some(row)
}

/// libgcc's walk, for the stacks [`walk`] gives up on.
fn backtrace(frames: &mut [usize; MAX_FRAMES], own: core::ops::Range<usize>) -> usize {
    let mut w = Unwind { frames, depth: 0, skipping: true, own };
    // `step` receives `&mut w` as its argument, which outlives the call.
    Unwinder::backtrace(step, &mut w as *mut Unwind as *mut c_void);
    w.depth
}

struct Unwind<'a> {
    frames: &'a mut [usize; MAX_FRAMES],
    depth: usize,
    /// Still in fitalloc's own frames.
    skipping: bool,
    own: core::ops::Range<usize>,
}

const URC_NO_REASON: i32 = 0;
const URC_NORMAL_STOP: i32 = 4;

extern "C" fn step(ctx: *mut c_void, arg: *mut c_void) -> i32 {
    // SAFETY: `arg` is the `Unwind` that `backtrace` passed; `ctx` is the
    // unwinder's context for this frame.
    let (w, ip) = unsafe { (&mut *(arg as *mut Unwind), Unwinder::ip(ctx)) };
    if ip == 0 {
        return URC_NORMAL_STOP;
    }
    if w.skipping {
        if w.own.contains(&ip) {
            return URC_NO_REASON;
        }
        w.skipping = false;
    }
    w.frames[w.depth] = ip;
    w.depth += 1;
    if w.depth == MAX_FRAMES { URC_NORMAL_STOP } else { URC_NO_REASON }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_pack_and_unpack() {
        for r in [
            Rule { cfa_rbp: false, cfa_off: 8, rbp_at: None, ra_at: Some(-8) },
            Rule { cfa_rbp: true, cfa_off: 16, rbp_at: Some(-16), ra_at: Some(-8) },
            Rule { cfa_rbp: false, cfa_off: -32768, rbp_at: Some(32767), ra_at: None },
        ] {
            assert_ne!(r.pack(), 0);
            assert_eq!(Rule::unpack(r.pack()), r);
        }
    }

    #[inline(never)]
    fn deep(n: usize, out: &mut [usize; MAX_FRAMES], libgcc: bool) -> usize {
        if n == 0 {
            return if libgcc { backtrace(out, 0..0) } else { walk(out, &(0..0)).unwrap_or(usize::MAX) };
        }
        // Keep the recursion from becoming a loop.
        let d = deep(n - 1, out, libgcc);
        core::hint::black_box(d)
    }

    /// A stack 12 frames deep in `deep`, then `take`.
    #[inline(never)]
    fn take(libgcc: bool) -> ([usize; MAX_FRAMES], usize) {
        let mut f = [0; MAX_FRAMES];
        let d = deep(12, &mut f, libgcc);
        (core::hint::black_box(f), d)
    }

    /// The cached walk and libgcc's agree on the return addresses of a
    /// real stack (this test binary's, through Rust's and libc's frames),
    /// the first time (rules worked out) and the second (rules cached).
    #[test]
    fn walk_matches_libgcc() {
        init();
        assert_ne!(FIND_OBJECT.load(Relaxed), 0, "glibc has _dl_find_object (2.35 and later)");
        for _ in 0..2 {
            let ((a, da), (b, db)) = (take(false), take(true));
            assert_ne!(da, usize::MAX, "the walk gave up");
            assert!(da >= 14, "only {da} frames");
            // The walk's first frame is the return into `deep` from
            // `walk`; libgcc's are in `backtrace` and then the return into
            // `deep` from it. From the recursive calls on, they must agree,
            // to the thread's first frame.
            // The one frame that differs is the return into this test from
            // its two calls of `take`.
            let j = b[..db].iter().position(|&x| x == a[1]).expect("libgcc's stack has the walk's frames");
            assert_eq!(da - 1, db - j);
            assert_eq!(&a[1..14], &b[j..j + 13]);
            assert_eq!(&a[15..da], &b[j + 14..db]);
        }
    }
}
