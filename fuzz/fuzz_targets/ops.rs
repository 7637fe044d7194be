//! Fuzz target: the fuzzer's bytes are a program of malloc, calloc,
//! realloc, memalign, free... calls on the real allocator, checked against
//! a shadow model by `fitalloc::fuzzcore::run` (see src/fuzzcore.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fitalloc::fuzzcore::run(data);
});
