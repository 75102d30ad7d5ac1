//! Loading and saving: byte-identical re-encoding, external data read and written, unsafe or
//! inconsistent external references refused with the tensor named.

mod support;

use std::process::Command;

use quantize_rs::onnx::proto::{StringStringEntryProto, tensor_proto::DataLocation};
use quantize_rs::{Error, Model, Recipe, SaveOptions, quantize_model};
use support::*;

fn matmul_model() -> quantize_rs::onnx::proto::ModelProto {
    let g = graph(
        "mm",
        vec![node("MatMul", &["X", "W"], &["Y"]).named("mm")],
        vec![f32_tensor("W", &[64, 32], &rand_f32(2048, 31))],
        vec![value_info("X", quantize_rs::onnx::proto::dtype::FLOAT, &[2, 64])],
        vec![value_info("Y", quantize_rs::onnx::proto::dtype::FLOAT, &[2, 32])],
    );
    model(g, 13)
}

fn external(location: &str, offset: u64, length: u64) -> Vec<StringStringEntryProto> {
    let e = |k: &str, v: String| StringStringEntryProto { key: Some(k.into()), value: Some(v) };
    vec![e("location", location.into()), e("offset", offset.to_string()), e("length", length.to_string())]
}

#[test]
fn a_model_written_by_the_onnx_package_re_encodes_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.onnx");
    let script = r#"
import sys, numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "W")
c = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array([1.5], dtype=np.float32)))
mm = helper.make_node("MatMul", ["X", "W"], ["m"], name="mm")
add = helper.make_node("Add", ["m", "k"], ["Y"], doc_string="adds k")
g = helper.make_graph([c, mm, add], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 3])],
    [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 4])], [w])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="onnx-py")
onnx.save(m, sys.argv[1])
"#;
    let out = Command::new(python()).arg("-c").arg(script).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let original = std::fs::read(&path).unwrap();
    let model = Model::load(&path).unwrap();
    assert_eq!(model.to_bytes(), original);
}

#[test]
fn external_data_is_read_on_load_and_written_past_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    // Write a model whose weight lives in an external file, as large exporters do.
    let mut m = matmul_model();
    let w = m.graph.as_mut().unwrap().initializer[0].clone();
    let raw = w.raw_data.clone().unwrap();
    let mut blob = vec![7u8; 100];
    blob.extend_from_slice(&raw);
    std::fs::create_dir(dir.path().join("weights")).unwrap();
    std::fs::write(dir.path().join("weights/w.bin"), &blob).unwrap();
    let t = &mut m.graph.as_mut().unwrap().initializer[0];
    t.raw_data = None;
    t.data_location = Some(DataLocation::External as i32);
    t.external_data = external("weights/w.bin", 100, raw.len() as u64);
    let p = write(dir.path(), "ext.onnx", &m);
    let loaded = Model::load(&p).unwrap();
    assert_eq!(loaded.graph().initializer[0].raw_data.as_deref(), Some(&raw[..]));
    // ONNX Runtime reads the external weight itself: exactly the inline model's outputs.
    assert_same_outputs(&write(dir.path(), "inline.onnx", &matmul_model()), &p, &Compare::samples(2), 0.0);

    // Saving above the threshold moves large tensors to `<name>.data`, page-aligned.
    let mut q = loaded.clone();
    quantize_model(&mut q, &Recipe::default()).unwrap();
    let out = dir.path().join("q.onnx");
    q.save(&out, &SaveOptions { external_data_threshold: 1000, ..SaveOptions::default() }).unwrap();
    let data = std::fs::read(dir.path().join("q.onnx.data")).unwrap();
    assert_eq!(data.len(), 2048, "only the 2048-byte int8 weight moves out");
    let back = Model::load(&out).unwrap();
    let wq = back.graph().initializer.iter().find(|t| t.name.as_deref() == Some("W_quantized")).unwrap();
    assert_eq!(wq.raw_data.as_deref(), Some(&data[..]));
    let r = ort_compare(&p, &out, &Compare::samples(2));
    assert!(worst_snr(&r) > 35.0, "{r}");
}

#[test]
fn unsafe_or_inconsistent_external_references_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), vec![0u8; 64]).unwrap();
    let cases = [
        (external("../outside.bin", 0, 8192), "leaves the model's folder"),
        (external("/etc/passwd", 0, 10), "absolute"),
        (external("w.bin", 0, 8192), "passes the end of 'w.bin'"),
        (external("w.bin", 60, 8), "passes the end"),
        (external("missing.bin", 0, 8), "missing.bin"),
    ];
    for (entries, expect) in cases {
        let mut m = matmul_model();
        let t = &mut m.graph.as_mut().unwrap().initializer[0];
        t.raw_data = None;
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = entries;
        let p = write(dir.path(), "bad.onnx", &m);
        let err = Model::load(&p).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(expect), "expected '{expect}' in: {msg}");
        if !matches!(err, Error::Read { .. }) {
            assert!(msg.contains("tensor 'W'"), "names the tensor: {msg}");
        }
        // Bytes without a folder cannot resolve external files at all.
        let bytes = std::fs::read(&p).unwrap();
        assert!(Model::from_bytes(bytes, None).unwrap_err().to_string().contains("tensor 'W'"));
    }
}

/// A save that completes replaces the old file and leaves no temporary behind. (A save killed
/// midway is tested on the real binary in cargo-quantize/tests/interrupted.rs.)
#[test]
fn saving_replaces_the_file_and_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.onnx", &matmul_model());
    let mut m = Model::load(&p).unwrap();
    quantize_model(&mut m, &Recipe::default()).unwrap();
    let out = dir.path().join("q.onnx");
    std::fs::write(&out, b"old contents").unwrap();
    m.save(&out, &SaveOptions::default()).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), m.to_bytes(), "the new model, whole");
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    // --force is what lets a user overwrite the input itself.
    m.save(&p, &SaveOptions { force: true, ..SaveOptions::default() }).unwrap();
}
