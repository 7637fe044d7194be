//! fitalloc: a best-fit malloc for Linux over boundary-tagged blocks.
//!
//! # Module map and the dependency rule
//!
//! Dependencies flow one way, left to right; a module uses only modules to
//! its left (or the leaves):
//!
//! ```text
//! block → freelist, tree → bins → heap → tcache, large → global → api → ffi
//! leaves: config, os, sync, tls, stats, diag, options
//! ```
//!
//! - [`block`]: the boundary-tagged block format; the only module that does
//!   pointer arithmetic on heap memory.
//! - [`freelist`]: exact-size doubly-linked free lists (small blocks).
//! - [`tree`]: size-then-address ordered treaps (large free blocks).
//! - [`region`]: the table of heap regions (ownership checks).
//! - [`bins`]: size → bin mapping, occupancy bitmaps, best-fit search.
//! - [`heap`]: malloc/free/realloc/memalign on one heap of regions, generic
//!   over a memory [`os::Source`] so tests can run it on a plain buffer.
//! - [`addrmap`]: an address-keyed hash map in system-mapped memory.
//! - [`large`]: blocks in their own mappings, and the table that owns them.
//! - [`tcache`]: per-thread caches of freed small blocks (the fast path).
//! - [`global`]: the process-wide allocator: lazy start-up, locks, fork.
//! - [`api`]: the C semantics (errno, overflow, realloc edge cases).
//! - [`ffi`]: the C names' `#[no_mangle]` functions; they forward to [`api`].
//! - `cxxapi`: C++'s `operator new`/`delete` semantics over [`api`]; `cxx`:
//!   their exports under the mangled names, forwarding to `cxxapi`.
//! - [`check`]: the heap checker used by every test.
//! - [`harden`]: the hardened mode (canaries, quarantine, guard pages).
//! - `rustalloc`: [`FitAlloc`], a Rust `GlobalAlloc` over [`api`] (with
//!   the `std` feature; `rust-global` also drops the C names' exports).
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

mod addrmap;
mod api;
mod bins;
mod block;
mod check;
mod config;
// The C++ operators replace libstdc++'s only where the C names are
// exported too (not in unit tests, not in a Rust program's global allocator).
#[cfg(not(any(test, feature = "rust-global")))]
mod cxx;
#[cfg(not(any(test, feature = "rust-global")))]
mod cxxapi;
mod diag;
mod ffi;
mod freelist;
mod global;
mod harden;
mod heap;
mod large;
mod options;
mod os;
mod region;
#[cfg(feature = "std")]
mod rustalloc;
mod stats;
mod sync;
mod tcache;
mod tls;
mod trace;
mod tree;

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
