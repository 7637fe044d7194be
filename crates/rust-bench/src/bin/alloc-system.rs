#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    rust_bench::child_main()
}
