//! The workload every allocator binary runs (src/bin/*.rs, one per
//! allocator: a #[global_allocator] is chosen at compile time), and what
//! it reports: one line "ms peak_rss_kib checksum".
//!
//! Each thread churns a BTreeMap<String, Vec<u64>> (inserts, removes,
//! growing values), builds Strings it sends to the next thread (which
//! frees them: cross-thread frees), and every 4096 operations allocates
//! and drops a batch of boxed byte slices of 16 B .. 4 KiB. Fixed seeds:
//! every allocator does the same operations.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn churn(id: usize, ops: usize, to_next: mpsc::Sender<String>, from_prev: mpsc::Receiver<String>) -> u64 {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1) * 0x1234_5678_9abc_def1);
    let mut map: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut sum = 0u64;
    for i in 0..ops {
        let r = rng.next();
        let key = format!("key-{:05}", r % 20_000);
        match (r >> 20) % 10 {
            0..=4 => {
                let len = ((r >> 32) % 48) as usize;
                map.insert(key, vec![r; len]);
            }
            5..=6 => {
                if let Some(v) = map.remove(&key) {
                    sum = sum.wrapping_add(v.len() as u64);
                }
            }
            7 => {
                if let Some(v) = map.get_mut(&key) {
                    v.extend_from_slice(&[r; 8]);
                }
            }
            _ => {
                let mut s = String::new();
                for k in 0..((r >> 40) % 12) {
                    s.push_str(&format!("{k}:{:x};", r >> k));
                }
                sum = sum.wrapping_add(s.len() as u64);
                let _ = to_next.send(s);
            }
        }
        // Strings from the previous thread are freed here (the checksum
        // counts them at the sender, so it does not depend on timing).
        while let Ok(s) = from_prev.try_recv() {
            drop(s);
        }
        if i % 4096 == 0 {
            let batch: Vec<Box<[u8]>> =
                (0..256).map(|_| vec![1u8; 16 + (rng.next() % 4080) as usize].into_boxed_slice()).collect();
            sum = sum.wrapping_add(batch.iter().map(|b| b.len() as u64).sum::<u64>());
        }
    }
    sum.wrapping_add(map.len() as u64)
}

/// Runs the workload on `threads` threads, `ops` operations each; returns
/// (milliseconds, checksum).
pub fn workload(threads: usize, ops: usize) -> (f64, u64) {
    let start = Instant::now();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel::<String>()).unzip();
    let mut receivers: Vec<Option<mpsc::Receiver<String>>> = receivers.into_iter().map(Some).collect();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let to_next = senders[(t + 1) % threads].clone();
            let from_prev = receivers[t].take().expect("one receiver per thread");
            thread::spawn(move || churn(t, ops, to_next, from_prev))
        })
        .collect();
    drop(senders);
    let sum = handles.into_iter().map(|h| h.join().expect("worker")).fold(0u64, u64::wrapping_add);
    (start.elapsed().as_secs_f64() * 1000.0, sum)
}

/// Peak resident set size of this process (VmHWM), KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// What each allocator binary's main does: `BIN THREADS OPS` prints
/// "ms peak_rss_kib checksum".
pub fn child_main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let ops = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let (ms, sum) = workload(threads, ops);
    println!("{ms:.1} {} {sum}", peak_rss_kib());
}
