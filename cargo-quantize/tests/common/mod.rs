//! Shared by the end-to-end tests: running the built binaries, small models built with the
//! protobuf types, and the real models that ship with the repository.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use quantize_rs::onnx::proto::{ModelProto, dtype};

// The workspace's model builders and .npy writer, shared with the root package's tests.
#[path = "../../../tests/support/mod.rs"]
mod support;
// Each test crate uses its own part of this module.
#[allow(unused_imports)]
pub use support::{rand_f32, write_npy};

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

/// A two-layer MLP `x [batch, 32] -> MatMul -> Relu -> MatMul -> y [batch, 8]`, weights from `seed`.
pub fn mlp(seed: u64) -> ModelProto {
    use support::{f32_tensor, graph, model, node, value_info};
    let g = graph(
        "mlp",
        vec![node("MatMul", &["x", "w1"], &["h"]), node("Relu", &["h"], &["r"]), node("MatMul", &["r", "w2"], &["y"])],
        vec![
            f32_tensor("w1", &[32, 64], &rand_f32(32 * 64, seed)),
            f32_tensor("w2", &[64, 8], &rand_f32(64 * 8, seed + 1)),
        ],
        vec![value_info("x", dtype::FLOAT, &[-1, 32])],
        vec![value_info("y", dtype::FLOAT, &[-1, 8])],
    );
    model(g, 13)
}

pub fn write_model(path: &Path, m: &ModelProto) {
    use prost::Message;
    std::fs::write(path, m.encode_to_vec()).expect("write model");
}

pub fn read_model(path: &Path) -> ModelProto {
    use prost::Message;
    ModelProto::decode(std::fs::read(path).expect("read model").as_slice()).expect("decode model")
}
