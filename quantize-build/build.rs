//! Records the opt-level quantize-build itself is compiled with, so that a build script can tell
//! whether calibration runs unoptimized and say how to fix it.

fn main() {
    let level = std::env::var("OPT_LEVEL").unwrap_or_else(|_| "0".into());
    println!("cargo::rustc-env=QUANTIZE_BUILD_OPT_LEVEL={level}");
    println!("cargo::rerun-if-changed=build.rs");
}
