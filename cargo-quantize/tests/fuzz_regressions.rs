//! Replays every input that fuzzing found a crash with (minimised, in `tests/fuzz-cases/<target>/`)
//! through the fuzz targets' own harness (`fuzz/src/harness.rs`), in the normal test suite: a
//! fixed bug stays fixed without nightly or cargo-fuzz. A case panics here when it regresses.

use std::path::Path;

#[allow(dead_code)]
#[path = "../../fuzz/src/harness.rs"]
mod harness;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-cases").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    files.sort();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        eprintln!("{target}: {}", file.display());
        run(&bytes);
    }
    files.len()
}

#[test]
fn model_cases() {
    replay("model", harness::model);
}

#[test]
fn data_cases() {
    replay("data", harness::data);
}

#[test]
fn config_cases() {
    replay("config", harness::config);
}

#[test]
fn external_cases() {
    replay("external", harness::external);
}
