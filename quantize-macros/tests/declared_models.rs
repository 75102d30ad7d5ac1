//! include_quantized! against an OUT_DIR laid out like quantize-build leaves it: a declared
//! name expands to a usable `EmbeddedModel` (checked by running it); an unknown name is a
//! compile error listing the declared ones.

use std::path::PathBuf;

fn fixture_out_dir() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("include-quantized-fixture");
    let dir = out.join("quantize");
    std::fs::create_dir_all(&dir).unwrap();
    let index =
        serde_json::json!({ "format": 2, "manifest_path": "/fixture/Cargo.toml", "models": ["digits", "faces"] });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    // The bytes need not be a real model: the macro embeds them as they are.
    std::fs::write(dir.join("digits.onnx"), b"\x08\x07not really onnx").unwrap();
    let manifest = serde_json::json!({
        "name": "digits",
        "model": dir.join("digits.onnx"),
        "source": "models/digits.onnx",
        "format": 2,
        "content_hash": "be16217a88e84124",
        "tool": "quantize-build 0.1.0",
        "bytes_before": 69384,
        "bytes_after": 17,
        "model_sha256": "not checked by the macro, which checks the size",
        "inputs": [{ "name": "pixels", "elem_type": "float32", "shape": ["batch", 64] }],
        "outputs": [
            { "name": "logits", "elem_type": "float32", "shape": ["batch", 10] },
            { "name": "extra", "elem_type": "float8", "shape": [null] },
            { "name": "unshaped", "elem_type": "int64", "shape": null }
        ],
        "summary": {
            "bits": 8, "unsigned": false, "per_channel": true, "block_size": null, "symmetric": true,
            "native_int4": false, "calibration": "entropy", "scheme": "int8 per-channel symmetric, activations calibrated (entropy)",
            "quantized_tensors": 3, "skipped_tensors": 3, "opset": 13
        },
        "recipe": {},
        "quality": { "samples": 400, "snr_db": "inf", "cosine": 1.0, "max_abs": 0.0 },
        "skipped": [],
        "seconds": 0.01
    });
    std::fs::write(dir.join("digits.json"), serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    out
}

#[test]
fn include_quantized_with_declared_models() {
    let out = fixture_out_dir();
    // SAFETY: set before trybuild starts any thread; this test binary has this one test.
    unsafe { std::env::set_var("OUT_DIR", &out) };
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/embeds_declared_model.rs");
    t.compile_fail("tests/ui/unknown_name.rs");
}
