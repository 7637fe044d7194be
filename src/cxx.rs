//! The C++ allocation operators under their Itanium-mangled names, as
//! libstdc++ exports them: `new`, `new[]`, `delete`, `delete[]` with their
//! `nothrow`, sized and `align_val_t` forms. Each forwards to
//! [`crate::cxxapi`]; no logic here. (Defined through macros, so that
//! cbindgen leaves them out of the C header.)
//!
//! | name | C++ |
//! |---|---|
//! | `_Znwm`, `_Znam` | `new(size_t)`, `new[](size_t)` |
//! | `_ZnwmSt11align_val_t`, `_ZnamSt11align_val_t` | `new(size_t, align_val_t)`, and `[]` |
//! | `_ZnwmRKSt9nothrow_t`, `_ZnamRKSt9nothrow_t` | `new(size_t, const nothrow_t&)`, and `[]` |
//! | `_ZnwmSt11align_val_tRKSt9nothrow_t`, `_ZnamSt11…` | aligned `nothrow` `new`, and `[]` |
//! | `_ZdlPv`, `_ZdaPv` | `delete(void*)`, `delete[](void*)` |
//! | `_ZdlPvm`, `_ZdaPvm` | sized: `delete(void*, size_t)`, and `[]` |
//! | `_ZdlPvSt11align_val_t`, `_ZdlPvmSt11align_val_t` (and `_Zda…`) | aligned, aligned sized |
//! | `_ZdlPvRKSt9nothrow_t`, `_ZdlPvSt11align_val_tRKSt9nothrow_t` (and `_Zda…`) | `nothrow` deletes |
//!
//! The throwing `new`s are naked jumps into [`crate::cxxapi::new_loop`],
//! so that no Rust frame stands between the program and a `bad_alloc`
//! thrown for it (see `cxxapi`).

use crate::cxxapi;
use core::ffi::c_void;

/// A throwing `new`: `plain` forms take (size), `aligned` forms (size,
/// align); `array` is 0 for `new`, 1 for `new[]`.
#[cfg(target_arch = "x86_64")]
macro_rules! throwing_new {
    ($name:ident, $array:literal => plain) => {
        // One try by malloc's own path first (`api::cxx_new_plain`, null
        // when hooks are set or memory is short), without the retry loop's
        // frame: 55 instructions a cached `new` instead of 66. The size is
        // kept on the stack across the call (which also aligns the stack
        // for it); the unwind information covers the push, for the heap
        // profiler's backtraces taken inside the call.
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(size: usize) -> *mut c_void {
            core::arch::naked_asm!(
                ".cfi_startproc",
                "push rdi",
                ".cfi_adjust_cfa_offset 8",
                "call {fast}",
                "pop rdi",
                ".cfi_adjust_cfa_offset -8",
                "test rax, rax",
                "jz 2f",
                "ret",
                "2:",
                "xor esi, esi",
                concat!("mov edx, ", $array),
                "jmp {f}",
                ".cfi_endproc",
                fast = sym crate::api::cxx_new_plain,
                f = sym cxxapi::new_loop
            )
        }
    };
    ($name:ident, $array:literal => aligned) => {
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(size: usize, align: usize) -> *mut c_void {
            // An explicit alignment of 0 is not a power of two: it becomes
            // usize::MAX (`cmp` sets the carry only for 0), which
            // `new_loop` refuses, where 0 would mean "no alignment given".
            core::arch::naked_asm!(
                "cmp rsi, 1",
                "sbb rax, rax",
                "or rsi, rax",
                concat!("mov edx, ", $array),
                "jmp {f}",
                f = sym cxxapi::new_loop
            )
        }
    };
}

#[cfg(not(target_arch = "x86_64"))]
macro_rules! throwing_new {
    ($name:ident, $array:literal => plain) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(size: usize) -> *mut c_void {
            cxxapi::new_or_abort(size, 0, $array) as *mut c_void
        }
    };
    ($name:ident, $array:literal => aligned) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(size: usize, align: usize) -> *mut c_void {
            cxxapi::new_or_abort(size, cxxapi::given(align), $array) as *mut c_void
        }
    };
}

/// One exported function.
macro_rules! export {
    ($name:ident => fn $args:tt -> $ret:ty $body:block) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn $name $args -> $ret $body
    };
    ($name:ident => fn $args:tt $body:block) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn $name $args $body
    };
}

throwing_new!(_Znwm, 0 => plain);
throwing_new!(_Znam, 1 => plain);
throwing_new!(_ZnwmSt11align_val_t, 0 => aligned);
throwing_new!(_ZnamSt11align_val_t, 1 => aligned);

export!(_ZnwmRKSt9nothrow_t => fn(size: usize, _nt: *const c_void) -> *mut c_void {
    cxxapi::new_nothrow(size, 0, 0, _nt) as *mut c_void
});
export!(_ZnamRKSt9nothrow_t => fn(size: usize, _nt: *const c_void) -> *mut c_void {
    cxxapi::new_nothrow(size, 0, 1, _nt) as *mut c_void
});
export!(_ZnwmSt11align_val_tRKSt9nothrow_t => fn(size: usize, align: usize, _nt: *const c_void) -> *mut c_void {
    cxxapi::new_nothrow(size, cxxapi::given(align), 0, _nt) as *mut c_void
});
export!(_ZnamSt11align_val_tRKSt9nothrow_t => fn(size: usize, align: usize, _nt: *const c_void) -> *mut c_void {
    cxxapi::new_nothrow(size, cxxapi::given(align), 1, _nt) as *mut c_void
});

export!(_ZdlPv => fn(p: *mut c_void) { cxxapi::delete(p as *mut u8, 0, None) });
export!(_ZdaPv => fn(p: *mut c_void) { cxxapi::delete(p as *mut u8, 1, None) });
/// A `delete` form that stands on a base form (`$base`, named
/// `$base_name`): when the program replaced the base
/// ([`cxxapi::replaced`]), `$forward` calls the program's (`$f`), as the
/// C++ runtime's own form would; else `$body`.
macro_rules! derived_delete {
    ($name:ident($($arg:ident: $t:ty),*) on $base:ident $base_name:literal,
     |$f:ident| $forward:expr, else $body:block) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $t),*) {
            let $f = cxxapi::replaced(cxxapi::BaseDelete::$base, $base_name);
            if $f != 0 {
                return $forward;
            }
            $body
        }
    };
}

derived_delete!(_ZdlPvm(p: *mut c_void, size: usize) on Plain c"_ZdlPv",
    |f| cxxapi::call_delete(f, p), else { cxxapi::delete(p as *mut u8, 0, Some(size)) });
derived_delete!(_ZdaPvm(p: *mut c_void, size: usize) on Array c"_ZdaPv",
    |f| cxxapi::call_delete(f, p), else { cxxapi::delete(p as *mut u8, 1, Some(size)) });
export!(_ZdlPvSt11align_val_t => fn(p: *mut c_void, _align: usize) { cxxapi::delete(p as *mut u8, 0, None) });
export!(_ZdaPvSt11align_val_t => fn(p: *mut c_void, _align: usize) { cxxapi::delete(p as *mut u8, 1, None) });
derived_delete!(_ZdlPvRKSt9nothrow_t(p: *mut c_void, _nt: *const c_void) on Plain c"_ZdlPv",
    |f| cxxapi::call_delete(f, p), else { cxxapi::delete(p as *mut u8, 0, None) });
derived_delete!(_ZdaPvRKSt9nothrow_t(p: *mut c_void, _nt: *const c_void) on Array c"_ZdaPv",
    |f| cxxapi::call_delete(f, p), else { cxxapi::delete(p as *mut u8, 1, None) });
derived_delete!(_ZdlPvmSt11align_val_t(p: *mut c_void, size: usize, align: usize)
    on Aligned c"_ZdlPvSt11align_val_t",
    |f| cxxapi::call_delete_aligned(f, p, align), else { cxxapi::delete(p as *mut u8, 0, Some(size)) });
derived_delete!(_ZdaPvmSt11align_val_t(p: *mut c_void, size: usize, align: usize)
    on AlignedArray c"_ZdaPvSt11align_val_t",
    |f| cxxapi::call_delete_aligned(f, p, align), else { cxxapi::delete(p as *mut u8, 1, Some(size)) });
derived_delete!(_ZdlPvSt11align_val_tRKSt9nothrow_t(p: *mut c_void, align: usize, _nt: *const c_void)
    on Aligned c"_ZdlPvSt11align_val_t",
    |f| cxxapi::call_delete_aligned(f, p, align), else { cxxapi::delete(p as *mut u8, 0, None) });
derived_delete!(_ZdaPvSt11align_val_tRKSt9nothrow_t(p: *mut c_void, align: usize, _nt: *const c_void)
    on AlignedArray c"_ZdaPvSt11align_val_t",
    |f| cxxapi::call_delete_aligned(f, p, align), else { cxxapi::delete(p as *mut u8, 1, None) });
