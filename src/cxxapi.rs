//! C++'s `operator new` and `operator delete` semantics, one layer below
//! their exports in [`crate::cxx`]; allocation itself is [`crate::api`]'s,
//! so errno, hooks (trace, checks, hardened mode) and statistics are the
//! C functions' own.
//!
//! - `new(n)` is `malloc(n)`: `malloc(0)` already returns a unique block.
//!   The `align_val_t` forms are `memalign(align, n)`.
//! - On failure the throwing forms loop: call the current new-handler
//!   (`std::get_new_handler()`) and retry; with no handler they throw
//!   `std::bad_alloc` (`std::__throw_bad_alloc()`).
//! - The `nothrow` forms return NULL on failure *without* calling the
//!   new-handler. The standard has them call it and catch what it throws;
//!   catching needs the C++ runtime's personality routine at link time,
//!   which this library does not depend on (nor does libstdc++'s own
//!   nothrow form in a program that never sets a handler: then both just
//!   return NULL).
//! - Every `delete` is `free`: the size and alignment arguments are not
//!   needed to find a block. The hardened mode records in each block
//!   whether it came from `malloc`, `new` or `new[]`, and stops a `delete`
//!   of a `new[]` block (or the reverse) and a sized `delete` whose size is
//!   not the one asked for.
//!
//! # Why the loop is written in assembly
//!
//! The library does not link libstdc++: a C program preloading it must
//! not pull in the C++ runtime. So the failure path looks up
//! `std::get_new_handler` and `std::__throw_bad_alloc` with `dlsym` at run
//! time (no lock of ours is held there, so dlsym may call malloc). But
//! both the handler and the throw unwind, and an exception must not unwind
//! through a Rust frame of this crate (panic = "abort": that is undefined
//! behaviour, and in practice an abort). So the retry loop is one naked
//! function with its own call-frame information: the unwinder walks
//! through it as through a C frame, from the throw to the program's
//! `catch`. The Rust functions it calls ([`try_new`], [`on_failure`])
//! never unwind; the calls that may unwind are made from the assembly.
//! Other architectures have no such loop (see [`new_or_abort`]).

use crate::api;
use crate::harden::Kind;
use core::ffi::c_void;

/// `new` (`ARRAY == 0`) or `new[]` (1): the kind the hardened mode
/// records in the block.
pub const fn kind(array: usize) -> Kind {
    if array == 0 { Kind::New } else { Kind::NewArray }
}

/// The allocation every `new` makes: `align == 0` for the plain forms,
/// else the `align_val_t` argument; `array` 1 for `new[]`.
#[inline(always)]
pub extern "C" fn try_new(size: usize, align: usize, array: usize) -> *mut u8 {
    if !valid_alignment(align) {
        return core::ptr::null_mut();
    }
    api::cxx_new(size, align, kind(array))
}

/// The alignment an `align_val_t` form passes on for argument `align`:
/// itself, except 0, which is no power of two and so must be refused, and
/// becomes `usize::MAX` (0 stands for "no alignment given" in the calls
/// below). libstdc++ throws `bad_alloc` for `align_val_t(0)`.
#[inline(always)]
pub const fn given(align: usize) -> usize {
    if align == 0 { usize::MAX } else { align }
}

/// Whether `align` (0: none given) is an alignment `new` accepts: a power
/// of two, as libstdc++ requires (it throws `bad_alloc` at once for any
/// other, without calling the new-handler).
#[inline(always)]
fn valid_alignment(align: usize) -> bool {
    align == 0 || align.is_power_of_two()
}

/// The `nothrow` forms: NULL on failure, after the new-handler had its
/// chance, as the standard says. A new-handler may throw, and catching a
/// C++ exception needs the C++ runtime's personality routine, which this
/// library does not link; so on x86_64 the call goes to the runtime's own
/// `nothrow` form (the next definition of the same name, found once with
/// `dlsym(RTLD_NEXT)`), which calls the throwing `new` (this library's,
/// with its new-handler loop) inside a `try` and returns NULL for any
/// exception. Without a C++ runtime in the process: one attempt, NULL on
/// failure. `nothrow` is the caller's `std::nothrow_t` argument, passed on.
pub fn new_nothrow(size: usize, align: usize, array: usize, nothrow: *const c_void) -> *mut u8 {
    // One try by malloc's own path first, as the throwing `new` makes it
    // (null when hooks are set or memory is short: then the runtime's
    // loop, below). Measured: a cached `new (std::nothrow)` and its
    // `delete` took about 50 more instructions than `new` and `delete`.
    #[cfg(not(any(test, feature = "rust-global")))]
    if align == 0 {
        let p = crate::api::cxx_new_plain(size);
        if !p.is_null() {
            return p;
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        let form = (align != 0) as usize * 2 + array;
        let f = runtime_nothrow(form);
        if f != 0 {
            // SAFETY: `f` is the C++ runtime's definition of this very
            // form (same mangled name), whose signature these are.
            unsafe {
                return if align == 0 {
                    let f: unsafe extern "C" fn(usize, *const c_void) -> *mut u8 = core::mem::transmute(f);
                    f(size, nothrow)
                } else {
                    let f: unsafe extern "C" fn(usize, usize, *const c_void) -> *mut u8 = core::mem::transmute(f);
                    f(size, align, nothrow)
                };
            }
        }
    }
    let _ = nothrow;
    try_new(size, align, array)
}

/// The base address of the loaded object holding code address `a` (0 if
/// none).
fn object_base(a: usize) -> usize {
    // SAFETY: a zeroed Dl_info, filled by dladdr, which only reads the
    // loader's tables.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(a as *const c_void, &mut info) == 0 {
            return 0;
        }
        info.dli_fbase as usize
    }
}

/// The C++ runtime's `nothrow` form number `form` (`new`, `new[]`, aligned
/// `new`, aligned `new[]`), or 0 when there is none.
#[cfg(target_arch = "x86_64")]
fn runtime_nothrow(form: usize) -> usize {
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    const NAMES: [&core::ffi::CStr; 4] = [
        c"_ZnwmRKSt9nothrow_t",
        c"_ZnamRKSt9nothrow_t",
        c"_ZnwmSt11align_val_tRKSt9nothrow_t",
        c"_ZnamSt11align_val_tRKSt9nothrow_t",
    ];
    /// usize::MAX: not looked up yet.
    static FOUND: [AtomicUsize; 4] = [const { AtomicUsize::new(usize::MAX) }; 4];
    let f = FOUND[form].load(Relaxed);
    if f != usize::MAX {
        return f;
    }
    // SAFETY: dlsym with a NUL-terminated name; no lock of ours is held (it
    // may call malloc).
    let next = unsafe { libc::dlsym(libc::RTLD_NEXT, NAMES[form].as_ptr()) } as usize;
    // Only the C++ runtime's own form (the object that defines
    // std::get_new_handler): another allocator in the process (jemalloc,
    // tcmalloc and mimalloc define these names too) would hand out memory
    // that is not ours, and never ourselves (a second copy would loop).
    // SAFETY: as above.
    let runtime = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_ZSt15get_new_handlerv".as_ptr()) } as usize;
    let f = if next != 0 && runtime != 0 && object_base(next) == object_base(runtime) && object_base(next) != 0 {
        next
    } else {
        0
    };
    FOUND[form].store(f, Relaxed);
    f
}

/// The four `delete` forms the others stand on in the C++ runtime: the
/// sized and `nothrow` forms of each call it (libstdc++'s do).
#[derive(Clone, Copy)]
pub enum BaseDelete {
    /// `delete(void*)`: `_ZdlPv`.
    Plain = 0,
    /// `delete[](void*)`: `_ZdaPv`.
    Array = 1,
    /// `delete(void*, align_val_t)`: `_ZdlPvSt11align_val_t`.
    Aligned = 2,
    /// `delete[](void*, align_val_t)`: `_ZdaPvSt11align_val_t`.
    AlignedArray = 3,
}

/// The program's own definition of `base` (named `name`), when the
/// program (or a library before this one) replaced it, else 0. A derived form (a
/// sized or `nothrow` `delete`) then calls it, as the C++ runtime's forms
/// do, so that a block from the program's own `new` goes back to the
/// program's own `delete`: a program that replaced only `new(size_t)` and
/// `delete(void*)` (a pool) had its blocks freed by this library's sized
/// `delete`, which the compiler emits for `delete p`, and ended in "not
/// allocated by fitalloc" (found by a hostile review). Looked up once
/// (`dlsym`, outside every lock of ours: it may call malloc).
#[inline(always)]
pub fn replaced(base: BaseDelete, name: &core::ffi::CStr) -> usize {
    use core::sync::atomic::Ordering::Relaxed;
    let f = REPLACED[base as usize].load(Relaxed);
    if f != usize::MAX {
        return f;
    }
    look_up_replaced(base, name)
}

/// usize::MAX: not looked up yet.
static REPLACED: [core::sync::atomic::AtomicUsize; 4] = [const { core::sync::atomic::AtomicUsize::new(usize::MAX) }; 4];

#[cold]
#[inline(never)]
fn look_up_replaced(base: BaseDelete, name: &core::ffi::CStr) -> usize {
    // SAFETY: dlsym with a NUL-terminated name.
    let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
    // Ours is whatever this library's object defines (a reference to our
    // own exported name would itself resolve to the program's).
    let ours = object_base(look_up_replaced as *const () as usize);
    let f = if found != 0 && object_base(found) != ours { found } else { 0 };
    REPLACED[base as usize].store(f, core::sync::atomic::Ordering::Relaxed);
    f
}

/// Calls `f`, a replaced base `delete` of one argument, on `p`.
pub fn call_delete(f: usize, p: *mut c_void) {
    // SAFETY: `f` is the program's `operator delete(void*)` or `delete[]`
    // ([`replaced`]), which takes a pointer and does not unwind (noexcept).
    unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void)>(f)(p) }
}

/// Calls `f`, a replaced aligned base `delete`, on `p` and `align`.
pub fn call_delete_aligned(f: usize, p: *mut c_void, align: usize) {
    // SAFETY: as in [`call_delete`], for the `align_val_t` forms.
    unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void, usize)>(f)(p, align) }
}

/// Every `delete` form: `array` 1 for `delete[]`, `size` the sized forms'
/// argument (`None` for the others: a sized delete of 0 is checked too).
#[inline(always)]
pub fn delete(p: *mut u8, array: usize, size: Option<usize>) {
    api::cxx_delete(p, kind(array), size)
}

#[cfg(target_arch = "x86_64")]
type VoidFn = unsafe extern "C" fn();

/// Looks up a function of the C++ runtime by its mangled name.
#[cfg(target_arch = "x86_64")]
fn cxx_runtime_fn(name: &core::ffi::CStr) -> Option<VoidFn> {
    // SAFETY: dlsym with a NUL-terminated name; no lock of ours is held
    // (it may call malloc).
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    // SAFETY: both names looked up are `void f()`-shaped functions (the
    // getter returns a pointer, converted below); a non-null result is
    // that function's address.
    (!f.is_null()).then(|| unsafe { core::mem::transmute::<*mut c_void, VoidFn>(f) })
}

/// Called by the retry loop after `size` bytes (aligned to `align`, 0 for
/// the plain forms) could not be had: returns
/// the function the loop must call next: the current new-handler (which
/// frees memory and returns, or throws), else `std::__throw_bad_alloc`
/// (which throws). Without a C++ runtime in the process, prints one line
/// and aborts. Never unwinds itself.
#[cfg(target_arch = "x86_64")]
pub extern "C" fn on_failure(size: usize, align: usize) -> VoidFn {
    // An alignment that is not a power of two never succeeds: no handler
    // could help, so `bad_alloc` at once (libstdc++ does the same).
    if let (true, Some(get)) = (valid_alignment(align), cxx_runtime_fn(c"_ZSt15get_new_handlerv")) {
        // SAFETY: `std::get_new_handler()` takes nothing, returns the
        // handler (or null) and is noexcept.
        let get: unsafe extern "C" fn() -> Option<VoidFn> = unsafe { core::mem::transmute(get) };
        // SAFETY: as above.
        if let Some(handler) = unsafe { get() } {
            return handler;
        }
    }
    match cxx_runtime_fn(c"_ZSt17__throw_bad_allocv") {
        Some(throw) => throw,
        None => out_of_memory(size, "no C++ runtime is loaded to throw std::bad_alloc"),
    }
}

/// One line on stderr, then abort.
#[cold]
fn out_of_memory(size: usize, why: &str) -> ! {
    use core::fmt::Write;
    let mut b = crate::diag::Buf::<200>::new();
    let _ = writeln!(b, "fitalloc: operator new(): out of memory for {size} bytes, and {why}");
    b.write_to(2);
    crate::diag::abort()
}

// The retry loop (x86_64 System V). In: rdi = size, rsi = alignment (0:
// plain), rdx = 1 for new[]. Three slots keep them across calls; the frame is 32 bytes with the
// return address, so calls are made with a 16-byte aligned stack. The
// call-frame information describes every instruction, so an exception
// thrown by the handler or by __throw_bad_alloc unwinds through it.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
pub extern "C" fn new_loop(size: usize, align: usize, array: usize) -> *mut u8 {
    core::arch::naked_asm!(
        ".cfi_startproc",
        "sub rsp, 24",
        ".cfi_def_cfa_offset 32",
        "mov [rsp], rdi",
        "mov [rsp + 8], rsi",
        "mov [rsp + 16], rdx",
        "2:",
        "call {try_new}",
        "test rax, rax",
        "jz 3f",
        ".cfi_remember_state",
        "add rsp, 24",
        ".cfi_def_cfa_offset 8",
        "ret",
        ".cfi_restore_state",
        "3:",
        "mov rdi, [rsp]",
        "mov rsi, [rsp + 8]",
        "call {on_failure}",
        // The handler returns (retry) or throws; __throw_bad_alloc throws.
        "call rax",
        "mov rdi, [rsp]",
        "mov rsi, [rsp + 8]",
        "mov rdx, [rsp + 16]",
        "jmp 2b",
        ".cfi_endproc",
        try_new = sym try_new,
        on_failure = sym on_failure,
    )
}

/// Elsewhere than x86_64 there is no unwind-safe retry loop: a failed
/// throwing `new` reports and aborts instead of throwing.
#[cfg(not(target_arch = "x86_64"))]
pub extern "C" fn new_or_abort(size: usize, align: usize, array: usize) -> *mut u8 {
    let p = try_new(size, align, array);
    if p.is_null() {
        out_of_memory(size, "std::bad_alloc is not thrown on this architecture");
    }
    p
}
