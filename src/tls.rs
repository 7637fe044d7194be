//! One word of thread-local storage that never allocates.
//!
//! Rust's `thread_local!` in a cdylib goes through `__tls_get_addr`, which
//! may call malloc (for libraries loaded with dlopen): that would recurse
//! into us. On x86_64 the word is a `.tbss` symbol reached with the
//! initial-exec model (`fs:`-relative, one load through the GOT), defined in
//! assembly because stable Rust cannot choose a TLS model. Elsewhere it is a
//! pthread key's value (glibc's first 32 keys need no allocation).

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::{asm, global_asm};

    global_asm!(
        ".section .tbss,\"awT\",@nobits",
        ".p2align 3",
        ".type fitalloc_tls_word,@object",
        ".size fitalloc_tls_word,8",
        ".hidden fitalloc_tls_word",
        ".globl fitalloc_tls_word",
        "fitalloc_tls_word:",
        ".zero 8",
        ".text",
    );

    #[inline(always)]
    pub fn get() -> usize {
        let v: usize;
        // SAFETY: reads this thread's copy of an 8-byte TLS variable that the
        // dynamic linker placed in the static TLS block.
        unsafe {
            asm!(
                "mov {0}, qword ptr [rip + fitalloc_tls_word@GOTTPOFF]",
                "mov {0}, qword ptr fs:[{0}]",
                out(reg) v,
                options(nostack, readonly, preserves_flags)
            );
        }
        v
    }

    #[inline(always)]
    pub fn set(v: usize) {
        // SAFETY: writes this thread's copy of the same variable.
        unsafe {
            asm!(
                "mov {t}, qword ptr [rip + fitalloc_tls_word@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = in(reg) v,
                options(nostack, preserves_flags)
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use core::sync::atomic::{AtomicU32, Ordering};

    const NO_KEY: u32 = u32::MAX;
    static KEY: AtomicU32 = AtomicU32::new(NO_KEY);

    fn key() -> Option<libc::pthread_key_t> {
        let k = KEY.load(Ordering::Acquire);
        (k != NO_KEY).then_some(k as libc::pthread_key_t)
    }

    pub fn get() -> usize {
        match key() {
            // SAFETY: a valid key; getspecific never allocates.
            Some(k) => unsafe { libc::pthread_getspecific(k) as usize },
            None => 0,
        }
    }

    pub fn set(v: usize) {
        let k = match key() {
            Some(k) => k,
            None => {
                let mut k: libc::pthread_key_t = 0;
                // SAFETY: key creation does not allocate in glibc.
                if unsafe { libc::pthread_key_create(&mut k, None) } != 0 {
                    return;
                }
                if KEY.compare_exchange(NO_KEY, k as u32, Ordering::AcqRel, Ordering::Acquire).is_err() {
                    // SAFETY: our key lost the race and was never used.
                    unsafe { libc::pthread_key_delete(k) };
                }
                KEY.load(Ordering::Acquire) as libc::pthread_key_t
            }
        };
        // SAFETY: a valid key.
        unsafe { libc::pthread_setspecific(k, v as *const libc::c_void) };
    }
}

pub use imp::{get, set};
