//! The trace recorder: `FITALLOC_TRACE=path` writes every allocation call
//! of the process in the trace format of `../shared/traces/README.md`
//! (`a`, `c`, `m`, `r`, `f` lines after a four-line header), while fitalloc
//! serves the calls.
//!
//! - Block ids are dense and assigned in allocation order; a realloc keeps
//!   its block's id; frees of pointers the trace never saw are dropped.
//! - While tracing, every API call runs under the recorder's lock (see
//!   [`crate::api`]), so threads are serialised into one valid trace.
//! - At exit the blocks still live are freed in the trace and the header's
//!   counts are filled in, so every trace is balanced.
//! - One file per process: the first process takes `path` (holding an
//!   `flock` on it while it runs); a forked child, or an exec'd program that
//!   finds `path` held by a live process, writes `path.<pid>`. A `%p` in the
//!   path is replaced by the pid.
//! - The file is held on a high close-on-exec descriptor, and written only
//!   while that descriptor still refers to it: a program that closed it
//!   and reused the number for a file of its own stops the trace there
//!   rather than receiving trace lines.
//! - Nothing here allocates: the pointer → id map lives in mapped memory
//!   ([`crate::addrmap`]) and lines go through a fixed buffer to `write(2)`.

use crate::addrmap::AddrMap;
use crate::modes;
use crate::sync::{Locked, Rank};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

const BUF: usize = 64 * 1024;
const PATH_MAX: usize = 600;
/// Width of the header's count fields, filled in at exit.
const COUNT_WIDTH: usize = 20;

struct Recorder {
    fd: i32,
    /// `fd` and the file it was opened for.
    own: crate::diag::OwnFd,
    path: [u8; PATH_MAX],
    ids: AddrMap<u64>,
    next_id: u64,
    ops: u64,
    buf: [u8; BUF],
    len: usize,
}

/// What a call did, for the trace recorder.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    Malloc { size: usize, ptr: *mut u8 },
    Calloc { nmemb: usize, size: usize, ptr: *mut u8 },
    Memalign { align: usize, size: usize, ptr: *mut u8 },
    Realloc { old: *mut u8, size: usize, ptr: *mut u8 },
    Free { ptr: *mut u8 },
}

static ON: AtomicBool = AtomicBool::new(false);
static REC: Locked<Recorder> = Locked::new(Rank::Trace, Recorder {
    fd: -1,
    own: crate::diag::OwnFd::none(),
    path: [0; PATH_MAX],
    ids: AddrMap::new(),
    next_id: 0,
    ops: 0,
    buf: [0; BUF],
    len: 0,
});

/// Whether this process is recording.
pub fn on() -> bool {
    ON.load(Relaxed)
}

/// Starts recording if `FITALLOC_TRACE` is set (once, at start-up).
/// True when recording.
pub fn start() -> bool {
    let Some(path) = crate::options::trace_path() else { return false };
    let mut r = REC.lock();
    if r.fd >= 0 {
        return true;
    }
    if r.open(path.to_bytes(), false) {
        ON.store(true, Relaxed);
        return true;
    } else {
        // SAFETY: this thread's errno, as the failed open left it.
        let err = unsafe { *libc::__errno_location() };
        let mut b = crate::diag::Buf::<700>::new();
        b.push_bytes(b"fitalloc: cannot open FITALLOC_TRACE=");
        b.push_bytes(path.to_bytes());
        let _ = match crate::diag::errno_text(err) {
            "" => writeln!(b, " for writing (errno {err}); tracing is off"),
            text => writeln!(b, " for writing ({text}); tracing is off"),
        };
        b.write_to(2);
    }
    false
}

/// Holds the recorder's lock for the duration of one traced API call.
pub fn lock() -> crate::sync::Guard<'static, impl Sized> {
    REC.lock()
}

/// Records one call (the recorder's lock is held by the caller's [`lock`]).
pub fn record(e: Event) {
    if !on() {
        return;
    }
    // SAFETY: the caller holds the recorder's lock for this whole call.
    let r = unsafe { REC.get_unlocked() };
    r.event(e);
}

/// Fork, before: holds the recorder's lock (the lowest rank).
pub fn hold_for_fork() {
    if on() {
        REC.hold();
    }
}

pub fn fork_parent() {
    if on() {
        REC.release_held();
    }
}

/// A forked child records into a file of its own, from an empty state:
/// blocks inherited from the parent are unknown to it.
pub fn fork_child() {
    if !on() {
        return;
    }
    REC.release_held();
    let mut r = REC.lock();
    if r.own.still_ours() {
        // SAFETY: the inherited descriptor is the parent's file; closing our
        // copy leaves the parent's descriptor (and its lock) alone.
        unsafe { libc::close(r.fd) };
    }
    r.fd = -1;
    r.len = 0;
    r.ops = 0;
    r.next_id = 0;
    r.ids.clear();
    let mut base = [0u8; PATH_MAX];
    let n = r.path.iter().position(|&c| c == 0).unwrap_or(0);
    base[..n].copy_from_slice(&r.path[..n]);
    if !r.open(&base[..n], true) {
        ON.store(false, Relaxed);
        modes::set(modes::TRACE, false);
    }
}

/// At exit: frees what is still live, flushes, and fills in the header.
pub fn finish() {
    if !on() {
        return;
    }
    let mut r = REC.lock();
    ON.store(false, Relaxed);
    modes::set(modes::TRACE, false);
    let mut live = AddrMap::<u64>::new();
    core::mem::swap(&mut live, &mut r.ids);
    live.for_each(|_, id| {
        r.ops += 1;
        r.line(b'f', &[id]);
    });
    r.flush();
    if r.fd < 0 {
        return;
    }
    let head = count_lines(r.next_id, r.ops);
    // SAFETY: our descriptor (checked by `flush`); the count fields start
    // after "0\n".
    unsafe { libc::pwrite(r.fd, head.as_ptr() as *const libc::c_void, head.len(), 2) };
}

/// The decimal digits of `v`, written at the end of `buf`.
fn decimal(v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let (mut v, mut i) = (v, buf.len());
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// Header lines 2 and 3 (ids, operations), each right-aligned in a field of
/// fixed width so the final counts can overwrite the placeholders in place.
fn count_lines(ids: u64, ops: u64) -> [u8; 2 * (COUNT_WIDTH + 1)] {
    let mut head = [b' '; 2 * (COUNT_WIDTH + 1)];
    write_padded(&mut head[..COUNT_WIDTH], ids);
    head[COUNT_WIDTH] = b'\n';
    write_padded(&mut head[COUNT_WIDTH + 1..2 * COUNT_WIDTH + 1], ops);
    head[2 * COUNT_WIDTH + 1] = b'\n';
    head
}

/// Right-aligns `v` in `out` (already filled with spaces, at least as wide
/// as the number).
fn write_padded(out: &mut [u8], v: u64) {
    let mut buf = [0; 20];
    let d = decimal(v, &mut buf);
    let at = out.len() - d.len();
    out[at..].copy_from_slice(d);
}

impl Recorder {
    /// Opens the trace file for this process: `base` itself unless another
    /// live process holds it (or `child`), else `base.<pid>`.
    fn open(&mut self, base: &[u8], child: bool) -> bool {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u64;
        let mut p = Path::new();
        let has_pid_pattern = base.windows(2).any(|w| w == b"%p");
        p.push_expanding(base, pid);
        if !has_pid_pattern && !child && self.try_open(&p, true) {
            self.keep_path(base);
            return true;
        }
        if !has_pid_pattern {
            p.push(b".");
            p.push_num(pid);
        }
        let ok = self.try_open(&p, false);
        self.keep_path(base);
        ok
    }

    fn keep_path(&mut self, base: &[u8]) {
        let n = base.len().min(PATH_MAX - 1);
        self.path[..n].copy_from_slice(&base[..n]);
        self.path[n] = 0;
    }

    /// Opens `p`, locks it (failing if `need_lock` and another process holds
    /// it), truncates it and writes the header placeholder.
    fn try_open(&mut self, p: &Path, need_lock: bool) -> bool {
        // SAFETY: `p` is NUL-terminated; the calls do not allocate.
        unsafe {
            let fd = libc::open(p.c_str(), libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
            if fd < 0 {
                return false;
            }
            if libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) != 0 && need_lock {
                libc::close(fd);
                return false;
            }
            if libc::ftruncate(fd, 0) != 0 {
                libc::close(fd);
                return false;
            }
            // The lock belongs to the open file, so it survives the move.
            self.own = crate::diag::OwnFd::adopt(fd, false);
            self.fd = self.own.fd;
            if self.fd < 0 {
                return false;
            }
        }
        self.put(b"0\n");
        self.put(&count_lines(0, 0));
        self.put(b"1\n");
        true
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Malloc { size, ptr } => self.born(ptr, b'a', &[size as u64]),
            Event::Calloc { nmemb, size, ptr } => self.born(ptr, b'c', &[nmemb as u64, size as u64]),
            Event::Memalign { align, size, ptr } => self.born(ptr, b'm', &[align as u64, size as u64]),
            Event::Realloc { old, size, ptr } => {
                if old.is_null() {
                    self.born(ptr, b'r', &[size as u64]);
                } else if size == 0 {
                    self.died(old);
                } else if !ptr.is_null() {
                    let id = match self.ids.remove(old as usize) {
                        Some(id) => id,
                        None => self.new_id(),
                    };
                    self.ids.insert(ptr as usize, id);
                    self.ops += 1;
                    self.line(b'r', &[id, size as u64]);
                }
            }
            Event::Free { ptr } => self.died(ptr),
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    fn born(&mut self, ptr: *mut u8, op: u8, args: &[u64]) {
        if ptr.is_null() {
            return;
        }
        let id = self.new_id();
        if !self.ids.insert(ptr as usize, id) {
            return;
        }
        self.ops += 1;
        let mut all = [0u64; 3];
        all[0] = id;
        all[1..=args.len()].copy_from_slice(args);
        self.line(op, &all[..=args.len()]);
    }

    /// Records a free; a pointer the trace never saw is dropped.
    fn died(&mut self, ptr: *mut u8) {
        if let Some(id) = self.ids.remove(ptr as usize) {
            self.ops += 1;
            self.line(b'f', &[id]);
        }
    }

    /// Appends `op n1 n2 ...\n`.
    fn line(&mut self, op: u8, nums: &[u64]) {
        if self.len + 80 > BUF {
            self.flush();
        }
        self.buf[self.len] = op;
        self.len += 1;
        for &n in nums {
            self.buf[self.len] = b' ';
            self.len += 1;
            let mut digits = [0; 20];
            let d = decimal(n, &mut digits);
            self.buf[self.len..self.len + d.len()].copy_from_slice(d);
            self.len += d.len();
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > BUF {
            self.flush();
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn flush(&mut self) {
        if self.fd >= 0 && !self.own.still_ours() {
            // The program closed our descriptor (and may have reused its
            // number): the trace ends here.
            self.fd = -1;
            ON.store(false, Relaxed);
            modes::set(modes::TRACE, false);
        }
        if self.fd >= 0 {
            crate::diag::write_all(self.fd, &self.buf[..self.len]);
        }
        self.len = 0;
    }
}

/// A NUL-terminated path built without allocation (the heap profile's
/// file is named the same way).
pub(crate) struct Path {
    bytes: [u8; PATH_MAX + 32],
    len: usize,
}

impl Path {
    pub(crate) fn new() -> Self {
        Path { bytes: [0; PATH_MAX + 32], len: 0 }
    }

    pub(crate) fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.bytes.len() - 1 - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self.bytes[self.len] = 0;
    }

    pub(crate) fn push_num(&mut self, v: u64) {
        let mut buf = [0; 20];
        self.push(decimal(v, &mut buf));
    }

    /// Appends `s`, replacing each `%p` with `pid`.
    pub(crate) fn push_expanding(&mut self, s: &[u8], pid: u64) {
        let mut i = 0;
        while i < s.len() {
            if s[i] == b'%' && s.get(i + 1) == Some(&b'p') {
                self.push_num(pid);
                i += 2;
            } else {
                self.push(&s[i..i + 1]);
                i += 1;
            }
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub(crate) fn c_str(&self) -> *const libc::c_char {
        self.bytes.as_ptr() as *const libc::c_char
    }
}
