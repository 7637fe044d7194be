//! Runs the allocator binaries built beside this one (alloc-fitalloc,
//! alloc-mimalloc, alloc-jemalloc, alloc-system), interleaved, each in fresh
//! processes, and prints a table: median wall time and peak RSS per
//! allocator and thread count, with ratios against fitalloc (>1: fitalloc
//! better: faster, or smaller).
//!
//! usage: rust-bench [REPS] [OPS]   (defaults 5, 400000 operations per thread)

use std::process::Command;

const ALLOCATORS: [&str; 4] = ["fitalloc", "mimalloc", "jemalloc", "system"];
const THREADS: [usize; 2] = [1, 4];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let ops: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(400_000);
    let dir = std::env::current_exe().expect("own path").parent().expect("a directory").to_path_buf();
    let mut rows = Vec::new();
    for &threads in &THREADS {
        let mut ms = vec![Vec::new(); ALLOCATORS.len()];
        let mut rss = vec![Vec::new(); ALLOCATORS.len()];
        let mut sums = vec![None; ALLOCATORS.len()];
        for rep in 0..reps {
            for k in 0..ALLOCATORS.len() {
                let a = (k + rep) % ALLOCATORS.len(); // rotated: drift hits all alike
                eprint!("\r[{threads} threads, rep {}/{reps}] {:<10}", rep + 1, ALLOCATORS[a]);
                let out = Command::new(dir.join(format!("alloc-{}", ALLOCATORS[a])))
                    .args([threads.to_string(), ops.to_string()])
                    .output()
                    .expect("run an allocator binary (cargo build --release --bins first)");
                assert!(out.status.success(), "alloc-{} failed: {}", ALLOCATORS[a], String::from_utf8_lossy(&out.stderr));
                let text = String::from_utf8_lossy(&out.stdout);
                let f: Vec<&str> = text.split_whitespace().collect();
                ms[a].push(f[0].parse::<f64>().expect("ms"));
                rss[a].push(f[1].parse::<f64>().expect("KiB") / 1024.0);
                let sum = f[2].to_string();
                assert!(sums[a].get_or_insert(sum.clone()) == &sum, "checksums differ between runs");
            }
        }
        eprintln!();
        let ms: Vec<f64> = ms.iter_mut().map(|v| median(v)).collect();
        let rss: Vec<f64> = rss.iter_mut().map(|v| median(v)).collect();
        assert!(sums.windows(2).all(|w| w[0] == w[1]), "allocators disagree on the checksum: {sums:?}");
        rows.push((threads, ms, rss));
    }
    println!("Rust global allocators: BTreeMap/Vec/String churn with cross-thread frees,");
    println!("{ops} operations per thread; medians of {reps} fresh processes each, interleaved.");
    println!("Ratios: peer / fitalloc (>1: fitalloc is faster, or uses less memory).\n");
    print!("| threads | metric |");
    for a in ALLOCATORS {
        print!(" {a} |");
    }
    for a in &ALLOCATORS[1..] {
        print!(" vs {a} |");
    }
    println!();
    println!("|---|---|{}", "---|".repeat(2 * ALLOCATORS.len() - 1));
    for (threads, ms, rss) in &rows {
        for (metric, v, digits) in [("time (ms)", ms, 0), ("peak RSS (MiB)", rss, 1)] {
            print!("| {threads} | {metric} |");
            for x in v.iter() {
                print!(" {x:.digits$} |");
            }
            for x in &v[1..] {
                print!(" {:.2} |", x / v[0]);
            }
            println!();
        }
    }
}
