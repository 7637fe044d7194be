#[global_allocator]
static GLOBAL: fitalloc::FitAlloc = fitalloc::FitAlloc;

fn main() {
    rust_bench::child_main()
}
