//! Three words of thread-local storage that never allocate, and the
//! thread's identity ([`thread_id`]): the thread's
//! cache ([`CACHE`]), for the lock-order check the ranks of the locks it
//! holds ([`LOCKS`]), and the heap profiler's countdown to its next sample
//! ([`PROFILE`]).
//!
//! Rust's `thread_local!` in a cdylib goes through `__tls_get_addr`, which
//! may call malloc (for libraries loaded with dlopen): that would recurse
//! into us. On x86_64 the words are a `.tbss` symbol reached with the
//! initial-exec model (`fs:`-relative, one load through the GOT), defined in
//! assembly because stable Rust cannot choose a TLS model. Elsewhere each is
//! a pthread key's value (glibc's first 32 keys need no allocation).

/// The word holding this thread's cache (see [`crate::registry`]).
pub(crate) const CACHE: usize = 0;
/// The word holding the ranks of the locks this thread holds (see
/// [`crate::sync`]).
pub(crate) const LOCKS: usize = 1;
/// The word holding the bytes this thread may still allocate before the
/// heap profiler takes its next sample (see [`crate::profile`]).
pub(crate) const PROFILE: usize = 2;

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::{asm, global_asm};

    global_asm!(
        ".section .tbss,\"awT\",@nobits",
        ".p2align 4",
        ".type fitalloc_tls_words,@object",
        ".size fitalloc_tls_words,24",
        ".hidden fitalloc_tls_words",
        ".globl fitalloc_tls_words",
        "fitalloc_tls_words:",
        ".zero 24",
        ".text",
    );

    /// This thread's offset of the words from the thread pointer, from the
    /// GOT. Declared `pure, nomem` (the GOT slot is written once, by the
    /// dynamic linker, before any code of ours runs), so that the compiler
    /// loads it once for several words or for a read and write of one.
    #[inline(always)]
    fn offset() -> usize {
        let t: usize;
        // SAFETY: reads the GOT slot of a TLS symbol of this object.
        unsafe {
            asm!(
                "mov {0}, qword ptr [rip + fitalloc_tls_words@GOTTPOFF]",
                out(reg) t,
                options(nostack, pure, nomem, preserves_flags)
            );
        }
        t
    }

    #[inline(always)]
    pub fn get<const W: usize>() -> usize {
        let v: usize;
        // SAFETY: reads this thread's copy of word W of a 24-byte TLS
        // variable that the dynamic linker placed in the static TLS block.
        unsafe {
            asm!(
                "mov {0}, qword ptr fs:[{t} + {off}]",
                out(reg) v,
                t = in(reg) offset(),
                off = const W * 8,
                options(nostack, readonly, preserves_flags)
            );
        }
        v
    }

    /// The thread pointer: the address of this thread's control block,
    /// which glibc's `pthread_self()` returns too, read without a call.
    #[inline(always)]
    pub fn thread_id() -> usize {
        let v: usize;
        // SAFETY: on x86_64 Linux the word at fs:0 is the thread control
        // block's pointer to itself (the TLS ABI's requirement).
        unsafe {
            asm!("mov {0}, qword ptr fs:[0]", out(reg) v, options(nostack, readonly, preserves_flags));
        }
        v
    }

    #[inline(always)]
    pub fn set<const W: usize>(v: usize) {
        // SAFETY: writes this thread's copy of the same word.
        unsafe {
            asm!(
                "mov qword ptr fs:[{t} + {off}], {v}",
                t = in(reg) offset(),
                v = in(reg) v,
                off = const W * 8,
                options(nostack, preserves_flags)
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use core::sync::atomic::{AtomicU32, Ordering};

    const NO_KEY: u32 = u32::MAX;
    static KEYS: [AtomicU32; 3] = [AtomicU32::new(NO_KEY), AtomicU32::new(NO_KEY), AtomicU32::new(NO_KEY)];

    fn key(w: usize) -> Option<libc::pthread_key_t> {
        let k = KEYS[w].load(Ordering::Acquire);
        (k != NO_KEY).then_some(k as libc::pthread_key_t)
    }

    pub fn get<const W: usize>() -> usize {
        match key(W) {
            // SAFETY: a valid key; getspecific never allocates.
            Some(k) => unsafe { libc::pthread_getspecific(k) as usize },
            None => 0,
        }
    }

    /// This thread's `pthread_self()`.
    pub fn thread_id() -> usize {
        // SAFETY: pthread_self has no preconditions.
        unsafe { libc::pthread_self() as usize }
    }

    pub fn set<const W: usize>(v: usize) {
        let k = match key(W) {
            Some(k) => k,
            None => {
                let mut k: libc::pthread_key_t = 0;
                // SAFETY: key creation does not allocate in glibc.
                if unsafe { libc::pthread_key_create(&mut k, None) } != 0 {
                    return;
                }
                if KEYS[W].compare_exchange(NO_KEY, k as u32, Ordering::AcqRel, Ordering::Acquire).is_err() {
                    // SAFETY: our key lost the race and was never used.
                    unsafe { libc::pthread_key_delete(k) };
                }
                KEYS[W].load(Ordering::Acquire) as libc::pthread_key_t
            }
        };
        // SAFETY: a valid key.
        unsafe { libc::pthread_setspecific(k, v as *const libc::c_void) };
    }
}

pub use imp::{get, set, thread_id};

#[cfg(test)]
mod tests {
    #[test]
    fn thread_id_is_pthread_self() {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() as usize };
        assert_eq!(super::thread_id(), me);
        let other = std::thread::spawn(|| {
            // SAFETY: as above.
            (super::thread_id(), unsafe { libc::pthread_self() as usize })
        })
        .join()
        .unwrap();
        assert_eq!(other.0, other.1);
        assert_ne!(other.0, me);
    }
}
