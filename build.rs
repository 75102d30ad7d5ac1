//! Generates the ONNX protobuf types from the vendored `proto/onnx.proto` (proto2, Apache-2.0,
//! shipped by the `onnx` PyPI package). protox parses it in pure Rust: no system `protoc`.

fn main() {
    println!("cargo::rerun-if-changed=proto/onnx.proto");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src");
    println!("cargo::rustc-env=QUANTIZE_RS_ENGINE={:016x}", engine_fingerprint());
    #[cfg(feature = "quantize")]
    generate();
}

/// A fingerprint of the engine's sources (every file under src/ and proto/, by path and content),
/// so a cache of quantized models keyed on it never serves a result an older engine wrote, even
/// between releases with the same version number (path and git dependencies).
fn engine_fingerprint() -> u64 {
    use std::hash::{Hash, Hasher};
    fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, files);
            } else {
                files.push(p);
            }
        }
    }
    let mut files = vec![];
    walk(std::path::Path::new("src"), &mut files);
    walk(std::path::Path::new("proto"), &mut files);
    files.sort();
    // SipHash with fixed keys: the same sources give the same value on every machine.
    let mut h = std::hash::DefaultHasher::new();
    for f in files {
        f.to_string_lossy().replace('\\', "/").hash(&mut h);
        std::fs::read(&f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

#[cfg(feature = "quantize")]
fn generate() {
    let fds = match protox::compile(["onnx.proto"], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => {
            println!("cargo::error=cannot parse proto/onnx.proto: {e}");
            return;
        }
    };
    let mut config = prost_build::Config::new();
    // Tensor payloads as `Bytes`: decoding from a `Bytes` buffer slices it instead of copying.
    config.bytes([".onnx.TensorProto.raw_data"]);
    if let Err(e) = config.compile_fds(fds) {
        println!("cargo::error=cannot generate ONNX types: {e}");
    }
}
