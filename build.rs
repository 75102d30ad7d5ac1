//! Generates the ONNX protobuf types from the vendored `proto/onnx.proto` (proto2, Apache-2.0,
//! shipped by the `onnx` PyPI package). protox parses it in pure Rust: no system `protoc`.

fn main() {
    println!("cargo::rerun-if-changed=proto/onnx.proto");
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "quantize")]
    generate();
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
