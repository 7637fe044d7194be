//! fitalloc as a std Rust program's global allocator: collections, strings,
//! threads, one large allocation and over-aligned layouts, checked through
//! fitalloc's own statistics and heap checker. Also checks that the C
//! names stay the C library's (the `rust-global` feature).
//! Prints TAP lines; exits 1 on any failure.

use fitalloc::FitAlloc;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

#[global_allocator]
static GLOBAL: FitAlloc = FitAlloc;

unsafe extern "C" {
    fn malloc(n: usize) -> *mut u8;
    fn free(p: *mut u8);
}

static COUNT: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);

fn check(ok: bool, name: &str, detail: String) {
    let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    let problems = fitalloc::check_heap();
    if ok && problems == 0 {
        println!("ok {n} - {name}");
    } else {
        FAILED.fetch_add(1, Ordering::Relaxed);
        println!("not ok {n} - {name}: {detail} (heap checker: {problems} problems)");
    }
}

fn main() {
    let start = fitalloc::stats();
    check(start.malloc_calls > 0, "std's start-up allocations already came to fitalloc", format!("{start:?}"));

    // Collections and strings on one thread.
    let before = fitalloc::stats();
    let mut map = BTreeMap::new();
    let mut hash = HashMap::new();
    let mut dq = VecDeque::new();
    for i in 0..20_000u64 {
        let s = format!("key-{i:06}-{}", "x".repeat((i % 50) as usize));
        hash.insert(i, s.clone());
        map.insert(s, i);
        dq.push_back(vec![i; (i % 17) as usize]);
        if dq.len() > 1000 {
            dq.pop_front();
        }
    }
    let mid = fitalloc::stats();
    let sum: u64 = map.values().sum();
    check(
        sum == (0..20_000).sum::<u64>() && hash[&777].starts_with("key-000777") && mid.malloc_calls - before.malloc_calls > 40_000,
        "BTreeMap, HashMap, VecDeque, String: served by fitalloc",
        format!("malloc calls {}", mid.malloc_calls - before.malloc_calls),
    );
    check(mid.in_use_bytes > before.in_use_bytes + 1_000_000, "in_use grows while they are live",
        format!("{} -> {}", before.in_use_bytes, mid.in_use_bytes));
    drop((map, hash, dq));
    let after = fitalloc::stats();
    check(after.free_calls - mid.free_calls > 40_000 && after.in_use_bytes < mid.in_use_bytes,
        "dropping them frees through fitalloc",
        format!("free calls {}, in use {} -> {}", after.free_calls - mid.free_calls, mid.in_use_bytes, after.in_use_bytes));

    // Threads: each builds and drops its own data, and hands some to the others.
    let before = fitalloc::stats();
    let shared = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let mut local = Vec::new();
                for i in 0..20_000 {
                    local.push(format!("t{t}-{i}"));
                    if i % 3 == 0 {
                        shared.lock().unwrap().push(local.pop().unwrap());
                    }
                    if local.len() > 500 {
                        local.clear();
                    }
                }
                local.len()
            })
        })
        .collect();
    let lens: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let n_shared = shared.lock().unwrap().len();
    shared.lock().unwrap().clear(); // frees blocks other threads allocated
    let after = fitalloc::stats();
    check(
        n_shared == 4 * 6667 && lens <= 4 * 501 && after.malloc_calls - before.malloc_calls >= 80_000,
        "4 threads, cross-thread frees: served by fitalloc",
        format!("shared {n_shared}, malloc calls {}", after.malloc_calls - before.malloc_calls),
    );

    // One large allocation (its own mapping), grown.
    let before = fitalloc::stats();
    let mut big = vec![7u8; 64 << 20];
    let mid = fitalloc::stats();
    big.resize(96 << 20, 9);
    let ok = big[0] == 7 && big[(64 << 20) - 1] == 7 && big[(96 << 20) - 1] == 9;
    let grown = fitalloc::stats();
    check(
        ok && mid.in_use_bytes >= before.in_use_bytes + (64 << 20) && grown.in_use_bytes >= before.in_use_bytes + (96 << 20)
            && mid.mapped_blocks > before.mapped_blocks,
        "a 64 MiB Vec, grown to 96 MiB: a mapped block of fitalloc's",
        format!("in use {} -> {} -> {}, mapped blocks {}", before.in_use_bytes, mid.in_use_bytes, grown.in_use_bytes, mid.mapped_blocks),
    );
    drop(big);

    // Over-aligned layouts: Box of an aligned type, and the raw interface.
    #[repr(align(4096))]
    struct Page([u8; 100]);
    let before = fitalloc::stats();
    let pages: Vec<Box<Page>> = (0..10).map(|i| Box::new(Page([i; 100]))).collect();
    let mut bad = Vec::new();
    for p in &pages {
        if (&**p as *const Page as usize) % 4096 != 0 {
            bad.push(&**p as *const Page as usize);
        }
    }
    let mid = fitalloc::stats();
    check(bad.is_empty() && pages[9].0[99] == 9 && mid.memalign_calls - before.memalign_calls == 10,
        "Box of a 4096-aligned type: aligned, memalign'd by fitalloc", format!("misaligned {bad:x?}"));
    drop(pages);
    let mut errs = Vec::new();
    for align in [32usize, 64, 256, 4096, 1 << 16] {
        for size in [1usize, 100, 5000, 300_000] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero sizes; each block is freed with its layout.
            unsafe {
                let z = GLOBAL.alloc_zeroed(l);
                if z.is_null() || (z as usize) % align != 0 || std::slice::from_raw_parts(z, size).iter().any(|&b| b != 0) {
                    errs.push(format!("alloc_zeroed {size}/{align}"));
                    continue;
                }
                z.write_bytes(0xa5, size);
                let r = GLOBAL.realloc(z, l, size * 3);
                if r.is_null() || (r as usize) % align != 0 || std::slice::from_raw_parts(r, size).iter().any(|&b| b != 0xa5) {
                    errs.push(format!("realloc {size}/{align}"));
                    continue;
                }
                GLOBAL.dealloc(r, Layout::from_size_align(size * 3, align).unwrap());
            }
        }
    }
    check(errs.is_empty(), "alloc_zeroed and realloc of over-aligned layouts (32 B .. 64 KiB)", format!("{errs:?}"));

    // The C names are the C library's: its malloc does not count here.
    let before = fitalloc::stats();
    // SAFETY: the C library's malloc and free, as a C caller would use them.
    let p = unsafe { malloc(100) };
    // SAFETY: p came from malloc above.
    unsafe { free(p) };
    let after = fitalloc::stats();
    check(!p.is_null() && after.malloc_calls == before.malloc_calls && after.free_calls == before.free_calls,
        "C's malloc and free stay the C library's (rust-global)",
        format!("fitalloc malloc calls {} -> {}", before.malloc_calls, after.malloc_calls));

    let n = COUNT.load(Ordering::Relaxed);
    let failed = FAILED.load(Ordering::Relaxed);
    println!("1..{n}\n# globalalloc-test: {} passed, {failed} failed", n - failed);
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
