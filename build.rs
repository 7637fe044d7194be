//! Generates `include/fitalloc.h` from the exported functions and types with
//! cbindgen (feature `header`, on by default). The header is committed;
//! `make test` fails when it is stale. Also gives the shared library its
//! soname, `libfitalloc.so.0` (the name `make install` installs it under).

fn main() {
    // The soname: programs linked against the installed library record
    // libfitalloc.so.0, so a 0.x update that keeps the ABI replaces it.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libfitalloc.so.0");
    #[cfg(feature = "header")]
    header();
}

#[cfg(feature = "header")]
fn header() {
    // cbindgen reads every module (it decides what to declare), so any
    // source change may change the header.
    for f in ["src", "cbindgen.toml"] {
        println!("cargo:rerun-if-changed={f}");
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen can read the crate");
    bindings.write_to_file(format!("{dir}/include/fitalloc.h"));
}
