//! With the `libtorch` feature, binaries find libtorch where torch-sys linked it from:
//! `$LIBTORCH/lib` goes in their rpath, so they run without `LD_LIBRARY_PATH`. (A build
//! script's link arguments reach only its own package's targets: melt-backends has the same
//! one for its tests.)
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_LIBTORCH").is_some() {
        if let Some(dir) = std::env::var_os("LIBTORCH") {
            let lib = std::path::Path::new(&dir).join("lib");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        }
    }
}
