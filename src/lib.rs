//! fitalloc: a best-fit malloc for Linux over boundary-tagged blocks.
//!
//! # Module map and the layer rule
//!
//! A module uses only modules listed before it in this table (the order of
//! `LAYERS`, below); the test `layers_only_point_down` reads every `crate::` path in `src/` and
//! fails on any other edge. The README points here.
//!
//! | level | modules | what they are |
//! |---|---|---|
//! | leaves | `config`, `diag`, `tls`, `sync`, `options`, `modes`, `os` | constants; messages; two TLS words; the locks and their rank table; run-time options; which per-call hooks are on; the only memory system calls |
//! | core | `block`, `pagemap`, `filed`, `region`, `freelist`, `tree`, `bins`, `heap`, `slab`, `tcache`, `depot`, `large`, `addrmap` | the block format (the only pointer arithmetic on heap memory); the address → owner map; which free blocks the heaps filed; heap regions; exact-size lists; treaps; best-fit bins; one heap; pages of small blocks of one size; thread caches; chains of cached blocks passed between threads; large blocks' mappings; an address-keyed hash map for the recorder |
//! | process | `process`, `registry`, `pointer` | the singletons; the thread registry and per-thread counters; what a pointer from the program is |
//! | call paths | `trim`, `alloc`, `free`, `realloc` | memory given back (malloc_trim, and the decay); malloc/calloc/memalign; free; realloc |
//! | top | `harden`, `stats`, `check`, `trace`, `stack`, `profile`, `fork`, `init`, `api`, `ffi` | hardened mode; statistics; the heap checker; the trace recorder; call stacks without allocating (cached DWARF rules); the heap profiler (sampled stacks, pinned free space);  fork handlers; start-up and modes; C semantics; the C names' `#[no_mangle]` exports |
//! | other ways in | `cxxapi`, `cxx`, `rustalloc` | C++ `new`/`delete` semantics over `api`; their mangled exports; [`FitAlloc`], a Rust `GlobalAlloc` over `api` (feature `std`; `rust-global` also drops the C names' exports) |
//!
//! Nothing in this crate allocates through a global allocator: under
//! `LD_PRELOAD` that would recurse into ourselves.
//!
//! The modules are private: the library's interface is the C ABI in `ffi`
//! (callable from Rust too), and with `std` the Rust [`FitAlloc`],
//! [`stats`] and [`check_heap`] (none of them inline). Keeping everything else private lets the
//! compiler treat the allocator's statics and functions as local to the
//! library and address them directly; anything reachable from public inline
//! code would be exported from the rlib and reached through the GOT, one
//! more load on every fast path.
#![cfg_attr(not(test), no_std)]
// LLVM must not recognise malloc/memset idioms in the crate that *defines*
// malloc: it could turn our calloc into a call to calloc (ourselves).
#![no_builtins]
// Unit tests do not export the C names (the test harness keeps glibc's
// malloc), so the functions only those exports reach look unused there.
#![cfg_attr(test, allow(dead_code))]
#![allow(clippy::missing_safety_doc)] // every unsafe fn has a `# Safety` section; see the lint note in Cargo.toml

mod config;
mod diag;
mod tls;
mod sync;
mod options;
mod modes;
mod os;
mod block;
mod pagemap;
mod filed;
mod region;
mod freelist;
mod tree;
mod bins;
mod heap;
mod slab;
mod tcache;
mod depot;
mod large;
mod addrmap;
mod process;
mod registry;
mod pointer;
mod trim;
mod alloc;
mod free;
mod realloc;
mod harden;
mod stats;
mod check;
mod trace;
mod stack;
mod profile;
mod fork;
mod init;
mod api;
mod ffi;
// The C++ operators replace libstdc++'s only where the C names are
// exported too (not in unit tests, not in a Rust program's global allocator).
#[cfg(not(any(test, feature = "rust-global")))]
mod cxxapi;
#[cfg(not(any(test, feature = "rust-global")))]
mod cxx;
#[cfg(feature = "std")]
mod rustalloc;

/// The layer order: each module may use only those before it.
///
/// cbindgen:ignore
#[cfg(test)]
pub const LAYERS: &[&str] = &[
    "config",
    "diag",
    "tls",
    "sync",
    "options",
    "modes",
    "os",
    "block",
    "pagemap",
    "filed",
    "region",
    "freelist",
    "tree",
    "bins",
    "heap",
    "slab",
    "tcache",
    "depot",
    "large",
    "addrmap",
    "process",
    "registry",
    "pointer",
    "trim",
    "alloc",
    "free",
    "realloc",
    "harden",
    "stats",
    "check",
    "trace",
    "stack",
    "profile",
    "fork",
    "init",
    "api",
    "ffi",
    "cxxapi",
    "cxx",
    "rustalloc",
];

#[cfg(test)]
mod tests;

/// A Rust program's global allocator (features `std` or `rust-global`).
#[cfg(feature = "std")]
pub use rustalloc::{check_heap, stats, FitAlloc};
/// `struct fitalloc_stats`, as [`stats`] returns it.
#[cfg(feature = "std")]
pub use stats::FitallocStats as Stats;

// With std, the program's standard library supplies the panic handler (and
// the cdylib that cargo builds beside the rlib links it too).
#[cfg(feature = "std")]
extern crate std;

/// Random operation streams against a shadow model: run with fixed seeds by
/// `cargo test`, and with fuzzer input by the target in `fuzz/`.
///
/// cbindgen:ignore
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzzcore;

/// Without std there is no unwinding and no default handler: a panic is an
/// allocator bug, reported with one line and `abort()`.
#[cfg(all(not(test), not(feature = "std")))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    diag::panic_abort(info)
}

/// The standard library's precompiled `core` refers to the unwinding
/// personality routine even though this crate never unwinds
/// (`panic = "abort"`); without std, nothing else defines it.
#[cfg(all(not(test), not(feature = "std")))]
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
