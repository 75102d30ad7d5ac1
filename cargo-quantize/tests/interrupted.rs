//! What other processes see when a save is killed midway, and when several processes fill the
//! same cache entry at once: the real binaries, separate processes, SIGKILL.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use quantize_rs::onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto, ValueInfoProto, dtype, type_proto,
};

/// One MatMul with a `rows x cols` float weight: 4096 x 4096 is a 64 MB model whose quantization
/// and 16 MB save take long enough, in the test build of the binary, to be interrupted.
fn big_matmul(rows: usize, cols: usize, seed: u64) -> ModelProto {
    let raw: Vec<u8> = rand_f32(rows * cols, seed).iter().flat_map(|x| x.to_le_bytes()).collect();
    let vi = |name: &str| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype::FLOAT),
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(7),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto {
            name: Some("big".into()),
            node: vec![NodeProto {
                op_type: Some("MatMul".into()),
                name: Some("mm".into()),
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            initializer: vec![TensorProto {
                name: Some("w".into()),
                dims: vec![rows as i64, cols as i64],
                data_type: Some(dtype::FLOAT),
                raw_data: Some(raw.into()),
                ..Default::default()
            }],
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn is_save_temporary(name: &str) -> bool {
    name.starts_with(".quantize-rs-") && name.ends_with(".tmp")
}

/// Starts `quantize-rs quantize in -o out --force`, waits until its temporary output file exists
/// (the save has begun), and SIGKILLs it. Returns whether the kill landed before the rename (the
/// temporary was still there afterwards).
fn kill_during_save(dir: &Path, input: &Path, out: &Path) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quantize-rs"))
        .args(["quantize", s(input), "-o", s(out), "--force"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start quantize-rs");
    let start = Instant::now();
    loop {
        if names(dir).iter().any(|n| is_save_temporary(n)) {
            child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("quantize-rs finished ({status}) before its save was seen");
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no save started in 300 s");
        std::thread::sleep(Duration::from_micros(200));
    }
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "killed by a signal, not exited: {status}");
    names(dir).iter().any(|n| is_save_temporary(n))
}

/// A save SIGKILLed after it started writing leaves the output as it was: the previous complete
/// model byte for byte, or no file when there was none. Never a part.
#[cfg(unix)]
#[test]
fn a_save_killed_midway_leaves_the_previous_file_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("big.onnx");
    write_model(&input, &big_matmul(4096, 4096, 3));
    let out = d.join("out.onnx");
    let mut landed = 0;
    for attempt in 0..3 {
        // With a previous model at the output path.
        write_model(&out, &mlp(1));
        let previous = std::fs::read(&out).unwrap();
        if kill_during_save(d, &input, &out) {
            landed += 1;
        }
        let now = std::fs::read(&out).unwrap();
        assert!(now == previous || read_model(&out).graph.is_some(), "attempt {attempt}: a partial output");
        if now != previous {
            // The kill came after the rename: then the file is the whole new model.
            let r = quantize_rs(d, &["info", "out.onnx", "--format", "json"]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert_eq!(r.json()["quantized_weights"], 1);
        }
        remove_temporaries(d);

        // With nothing at the output path.
        std::fs::remove_file(&out).unwrap();
        if kill_during_save(d, &input, &out) {
            landed += 1;
            assert!(!out.exists(), "attempt {attempt}: an output appeared although the save never finished");
        }
        remove_temporaries(d);
        let _ = std::fs::remove_file(&out);
    }
    assert!(landed >= 3, "only {landed} of 6 kills landed during a save: the test did not test interruption");
}

/// What a killed save leaves besides the output: its temporary file, which a process killed
/// with SIGKILL cannot remove; the next save into the folder sweeps it (its process is gone).
#[cfg(unix)]
#[test]
fn a_save_killed_midway_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("big.onnx");
    write_model(&input, &big_matmul(4096, 4096, 3));
    let out = d.join("out.onnx");
    write_model(&out, &mlp(1));
    // Kill until one lands mid-save, so a temporary is really left for the next save to sweep.
    assert!(
        (0..6).any(|_| kill_during_save(d, &input, &out)),
        "no kill landed during a save in 6 tries: the sweep was not tested"
    );
    assert!(names(d).iter().any(|n| is_save_temporary(n)), "the killed save left its temporary");
    // The next save into the folder removes the temporary the killed one left (its process is
    // gone), and leaves only the models.
    let r = quantize_rs(d, &["quantize", "big.onnx", "-o", "out.onnx", "--force"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(names(d), ["big.onnx", "out.onnx"]);
}

fn remove_temporaries(d: &Path) {
    for n in names(d) {
        if is_save_temporary(&n) {
            std::fs::remove_file(d.join(n)).unwrap();
        }
    }
}

/// A cargo package declaring one big model.
fn big_project() -> tempfile::TempDir {
    let dir = tempfile::TempDir::new().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::write(d.join("src/main.rs"), "fn main() {}\n").unwrap();
    write_model(&d.join("models/big.onnx"), &big_matmul(2048, 4096, 5));
    let manifest = "[package]\nname = \"race\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [package.metadata.quantize.models.big]\npath = \"models/big.onnx\"\n";
    std::fs::write(d.join("Cargo.toml"), manifest).unwrap();
    dir
}

/// Several `cargo quantize` processes started together on a cold cache all quantize the same
/// model and race to store the same entry: every one succeeds and reports the one entry, which
/// is complete, and no temporary folder is left. At least two must have quantized (else there
/// was no race and the test retries on a fresh cache), so the losing side of the rename ran.
#[test]
fn cargo_quantize_processes_racing_for_one_cache_entry_share_it() {
    const PROCESSES: usize = 4;
    let dir = big_project();
    let d = dir.path();
    // `cargo metadata` once first, so that the racers do not also race to write Cargo.lock.
    let r = cargo_quantize(d, &["--check"]);
    assert_eq!(r.code, 1, "nothing cached yet: {}", r.stderr);
    let cache = d.join("target/quantize-cache");
    for attempt in 0..3 {
        let _ = std::fs::remove_dir_all(&cache);
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_cargo-quantize"))
                    .args(["quantize", "--format", "json"])
                    .current_dir(d)
                    .env_remove("CARGO_TARGET_DIR")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start cargo-quantize")
            })
            .collect();
        let mut statuses = Vec::new();
        let mut entries: Vec<PathBuf> = Vec::new();
        for c in children {
            let out = c.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let m = &j["models"][0];
            statuses.push(m["status"].as_str().unwrap().to_string());
            entries.push(PathBuf::from(m["cached_model"].as_str().unwrap()));
        }
        assert!(entries.windows(2).all(|w| w[0] == w[1]), "one entry for all: {entries:?}");
        assert_eq!(names(&cache).len(), 1, "one entry, no temporary folders: {:?}", names(&cache));
        let entry = entries[0].parent().unwrap();
        let mut files = names(entry);
        files.sort();
        assert_eq!(files, ["model.onnx", "record.json"]);
        // The entry is complete: the model loads and is the quantized big model.
        let r = quantize_rs(d, &["info", s(&entries[0]), "--format", "json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.json()["quantized_weights"], 1);
        let quantized = statuses.iter().filter(|s| *s == "quantized").count();
        assert!(statuses.iter().all(|s| s == "quantized" || s == "cached"), "{statuses:?}");
        if quantized >= 2 {
            return; // at least one process lost the race to store the entry, and used the winner's
        }
        eprintln!("attempt {attempt}: only {quantized} process(es) quantized ({statuses:?}); no race, retrying");
    }
    panic!("{PROCESSES} processes started together never raced for the entry in 3 attempts");
}
