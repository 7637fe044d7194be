//! Messages without allocation: a fixed stack buffer, `core::fmt`, and one
//! `write(2)` per message.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering::{AcqRel, Acquire}};

/// A fixed-capacity text buffer; text beyond its capacity is dropped.
pub struct Buf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Buf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Buf<N> {
    pub const fn new() -> Self {
        Buf { bytes: [0; N], len: 0 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Appends raw bytes (text that may not be UTF-8, e.g. from the
    /// environment); what does not fit is dropped.
    pub fn push_bytes(&mut self, b: &[u8]) {
        let n = b.len().min(N - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    /// Writes the buffer to file descriptor `fd`, retrying short writes.
    pub fn write_to(&self, fd: i32) {
        write_all(fd, self.as_bytes());
    }
}

impl<const N: usize> Write for Buf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes all of `bytes` to `fd` (best effort; errno is preserved).
pub fn write_all(fd: i32, mut bytes: &[u8]) {
    // SAFETY: errno is this thread's; `bytes` is a valid slice.
    unsafe {
        let e = libc::__errno_location();
        let saved = *e;
        while !bytes.is_empty() {
            let n = libc::write(fd, bytes.as_ptr() as *const libc::c_void, bytes.len());
            if n <= 0 {
                if n < 0 && *e == libc::EINTR {
                    continue;
                }
                break;
            }
            bytes = &bytes[n as usize..];
        }
        *e = saved;
    }
}

/// Reports misuse or corruption found while serving C function `func` and
/// aborts: `fitalloc: free(): double free of 0x55d0c0a01230`.
#[cold]
#[inline(never)]
pub fn fatal(func: &str, what: &str, addr: usize) -> ! {
    report(func, what, addr);
    abort()
}

/// The thread writing a report that ends the process (0: none yet).
static REPORTER: AtomicUsize = AtomicUsize::new(0);

/// How long a second thread that finds a misuse while another reports one
/// waits for the process to end before it reports its own, in
/// milliseconds.
const OTHER_REPORT_WAIT_MS: u32 = 1000;

/// Writes [`fatal`]'s line without aborting.
///
/// One line per process: two threads that find a misuse at the same moment
/// (a double free raced from two threads, each thread seeing the other's
/// free) both reported it before either's abort took effect (found by a
/// hostile review: 13 runs in 200 printed two lines). The second waits for
/// the first's abort to end the process; when it has not within a second
/// (the program's SIGABRT handler returned to it), it reports as well. A
/// thread that reported before reports again at once.
pub fn report(func: &str, what: &str, addr: usize) {
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as usize;
    if let Err(other) = REPORTER.compare_exchange(0, me, AcqRel, Acquire)
        && other != me
    {
        let ms = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
        for _ in 0..OTHER_REPORT_WAIT_MS {
            // SAFETY: `ms` is a valid timespec; the remainder is not wanted.
            unsafe { libc::nanosleep(&ms, core::ptr::null_mut()) };
        }
    }
    let mut b = Buf::<200>::new();
    let _ = writeln!(b, "fitalloc: {func}(): {what} {addr:#x}");
    b.write_to(2);
}

/// Aborts the process with SIGABRT.
pub fn abort() -> ! {
    // SAFETY: abort never returns and does not allocate.
    unsafe { libc::abort() }
}

/// Aborts the process with SIGABRT's default action, whatever handler the
/// program set: for a state where the handler could only make things
/// worse (`crate::sync`'s self-deadlock: it would wait for a lock again).
pub fn abort_default() -> ! {
    // SAFETY: restoring SIGABRT's default action has no preconditions;
    // abort then unblocks SIGABRT and raises it.
    unsafe {
        libc::signal(libc::SIGABRT, libc::SIG_DFL);
        libc::abort()
    }
}

/// The panic handler's body: an allocator bug, reported in one line.
/// (With `std` the program's handler is used instead.)
#[cold]
#[cfg_attr(feature = "std", allow(dead_code))]
pub fn panic_abort(info: &core::panic::PanicInfo) -> ! {
    let mut b = Buf::<300>::new();
    let _ = write!(b, "fitalloc: internal error: {}", info.message());
    if let Some(l) = info.location() {
        let _ = write!(b, " at {}:{}", l.file(), l.line());
    }
    let _ = b.write_str("\n");
    b.write_to(2);
    abort()
}

/// A descriptor the allocator opened or duplicated for itself, and the
/// identity (device, inode) of the file it was for. A program may close
/// our descriptor and reuse its number for one of its own files; writing
/// only while [`OwnFd::still_ours`] holds keeps our text out of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OwnFd {
    pub fd: i32,
    dev: u64,
    ino: u64,
}

impl OwnFd {
    /// No descriptor. (A function, not an associated constant, which
    /// cbindgen would export to the C header.)
    pub const fn none() -> OwnFd {
        OwnFd { fd: -1, dev: 0, ino: 0 }
    }

    /// Takes `fd` (opened by us) as ours, moved to a high descriptor
    /// (close-on-exec) so that it stays clear of the numbers programs use.
    /// `keep_original`: duplicate it and leave `fd` alone (stderr).
    pub fn adopt(fd: i32, keep_original: bool) -> OwnFd {
        if fd < 0 {
            return OwnFd::none();
        }
        let errno_saved = Errno::save();
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct we own.
        let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 256 };
        // Near the top of the usual 1024 (below the limit), so that the
        // kernel's descriptor table stays small.
        let top = soft.min(1024) as i32;
        let low = if top > 164 { top - 64 } else { 3 };
        // SAFETY: duplicating and closing a descriptor we own.
        let own = unsafe {
            let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, low);
            if high >= 0 {
                if !keep_original {
                    libc::close(fd);
                }
                high
            } else if keep_original {
                libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3)
            } else {
                fd
            }
        };
        let r = match file_identity(own) {
            Some((dev, ino)) => OwnFd { fd: own, dev, ino },
            None => OwnFd::none(),
        };
        errno_saved.restore();
        r
    }

    /// Whether the descriptor is open and still refers to the file we
    /// opened (not to one the program opened after closing ours).
    pub fn still_ours(&self) -> bool {
        self.fd >= 0 && {
            let e = Errno::save();
            let same = file_identity(self.fd) == Some((self.dev, self.ino));
            e.restore();
            same
        }
    }
}

/// The device and inode `fd` refers to.
fn file_identity(fd: i32) -> Option<(u64, u64)> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the struct on success.
    unsafe { (libc::fstat(fd, st.as_mut_ptr()) == 0).then(|| (st.assume_init().st_dev, st.assume_init().st_ino)) }
}

/// errno, saved and put back: diagnostics must not change it.
struct Errno(i32);

impl Errno {
    fn save() -> Errno {
        // SAFETY: this thread's errno slot.
        Errno(unsafe { *libc::__errno_location() })
    }

    fn restore(self) {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

/// A short description of the errno values opening a file may give, for
/// messages (strerror may allocate for its translations); empty for others.
pub fn errno_text(e: i32) -> &'static str {
    match e {
        libc::ENOENT => "no such file or directory",
        libc::EACCES | libc::EPERM => "permission denied",
        libc::ENOTDIR => "a path component is not a directory",
        libc::EISDIR => "is a directory",
        libc::EROFS => "read-only file system",
        libc::ENOSPC => "no space left on device",
        libc::EMFILE | libc::ENFILE => "too many open files",
        libc::ENAMETOOLONG => "name too long",
        libc::EWOULDBLOCK => "locked",
        _ => "",
    }
}

/// The words naming a block already freed, for C function `func`.
pub fn double_free_text(func: &str) -> &'static str {
    match func {
        "free" | "free_sized" | "free_aligned_sized" | "operator delete" | "operator delete[]" => "double free of",
        "realloc" => "realloc of a freed block",
        _ => "pointer to a freed block",
    }
}
