//! Shared by the end-to-end tests: running the built binaries, small models built with the
//! protobuf types, and the real models that ship with the repository.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use quantize_rs::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    dtype, tensor_shape_proto, type_proto,
};

/// What a run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not one JSON document ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }
}

fn finish(out: Output) -> Run {
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // No command may panic, whatever the input: a user mistake is an error line.
    assert!(!run.stderr.contains("panicked") && !run.stderr.contains("stack backtrace"), "panic:\n{}", run.stderr);
    run
}

/// Runs `quantize-rs ARGS` in `dir`, with RUST_BACKTRACE set to prove no backtrace shows.
pub fn quantize_rs(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_quantize-rs"))
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run quantize-rs");
    finish(out)
}

/// Runs `cargo-quantize quantize ARGS` in `dir`, as `cargo quantize ARGS` does.
pub fn cargo_quantize(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_cargo-quantize"))
        .arg("quantize")
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo-quantize");
    finish(out)
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

pub fn ppocr() -> PathBuf {
    repo().join("models/ppocr-cls.onnx")
}

pub fn digits() -> PathBuf {
    repo().join("examples/digits/models/digits.onnx")
}

pub fn digits_test() -> PathBuf {
    repo().join("examples/digits/models/digits-test.npy")
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Deterministic pseudo-random floats in [-1, 1).
pub fn rand_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(if d > 0 {
                tensor_shape_proto::dimension::Value::DimValue(d)
            } else {
                tensor_shape_proto::dimension::Value::DimParam("batch".into())
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype::FLOAT),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A two-layer MLP `x [batch, 32] -> MatMul -> Relu -> MatMul -> y [batch, 8]`, weights from `seed`.
pub fn mlp(seed: u64) -> ModelProto {
    let w = |name: &str, dims: [i64; 2], seed: u64| TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype::FLOAT),
        raw_data: Some(
            rand_f32((dims[0] * dims[1]) as usize, seed)
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ),
        ..Default::default()
    };
    let node = |op: &str, inputs: &[&str], output: &str| NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("{output}_node")),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("cargo-quantize tests".into()),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto {
            name: Some("mlp".into()),
            node: vec![node("MatMul", &["x", "w1"], "h"), node("Relu", &["h"], "r"), node("MatMul", &["r", "w2"], "y")],
            initializer: vec![w("w1", [32, 64], seed), w("w2", [64, 8], seed + 1)],
            input: vec![value_info("x", &[-1, 32])],
            output: vec![value_info("y", &[-1, 8])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn write_model(path: &Path, m: &ModelProto) {
    use prost::Message;
    std::fs::write(path, m.encode_to_vec()).expect("write model");
}

pub fn read_model(path: &Path) -> ModelProto {
    use prost::Message;
    ModelProto::decode(std::fs::read(path).expect("read model").as_slice()).expect("decode model")
}

/// Writes a float32 `.npy` file.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    std::fs::write(path, bytes).expect("write npy");
}
