//! Messages without allocation: a fixed stack buffer, `core::fmt`, and one
//! `write(2)` per message.

use core::fmt::{self, Write};

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
    let mut b = Buf::<200>::new();
    let _ = writeln!(b, "fitalloc: {func}(): {what} {addr:#x}");
    b.write_to(2);
    abort()
}

/// Aborts the process with SIGABRT.
pub fn abort() -> ! {
    // SAFETY: abort never returns and does not allocate.
    unsafe { libc::abort() }
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
