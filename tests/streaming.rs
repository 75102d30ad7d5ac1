//! Models whose weights live in external data files: quantized streamed (payloads mapped, results
//! in a scratch file) they give the same bytes as in memory, on any thread count, in bounded
//! memory; steps that need the whole model in memory refuse clearly when it cannot fit.

mod support;

use std::path::{Path, PathBuf};

use quantize_rs::onnx::proto::{ModelProto, dtype};
use quantize_rs::{Model, Recipe, RunOptions, SaveOptions};
use support::*;

/// A stack of MatMul layers `[rows, cols]`, each weight past the mapping threshold (1 MiB).
fn layers(count: usize, rows: usize, cols: usize) -> ModelProto {
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut x = "x".to_string();
    for i in 0..count {
        let w = rand_f32(rows * cols, i as u64 + 1);
        inits.push(f32_tensor(&format!("w{i}"), &[rows as i64, cols as i64], &w));
        let y = format!("y{i}");
        nodes.push(node("MatMul", &[&x, &format!("w{i}")], &[&y]));
        x = y;
        if i + 1 < count {
            // Square the chain back to `rows` features.
            let back = rand_f32(cols * rows, 1000 + i as u64);
            inits.push(f32_tensor(&format!("v{i}"), &[cols as i64, rows as i64], &back));
            let z = format!("z{i}");
            nodes.push(node("MatMul", &[&x, &format!("v{i}")], &[&z]));
            x = z;
        }
    }
    nodes.push(node("Identity", &[&x], &["out"]));
    let g = graph(
        "layers",
        nodes,
        inits,
        vec![value_info("x", dtype::FLOAT, &[1, rows as i64])],
        vec![value_info("out", dtype::FLOAT, &[1, cols as i64])],
    );
    model(g, 17)
}

/// `m` written twice: inline and with every tensor in `<name>.data`.
fn inline_and_external(dir: &Path, m: &ModelProto) -> (PathBuf, PathBuf) {
    let inline = write(dir, "inline.onnx", m);
    let external = dir.join("external.onnx");
    let all_out = SaveOptions { external_data_threshold: 0, ..SaveOptions::default() };
    Model::load(&inline).unwrap().save(&external, &all_out).unwrap();
    assert!(dir.join("external.onnx.data").exists());
    (inline, external)
}

/// The files a save wrote: the model and, when there is one, its data file.
fn written(path: &Path) -> (Vec<u8>, Option<Vec<u8>>) {
    let data = PathBuf::from(format!("{}.data", path.display()));
    (std::fs::read(path).unwrap(), std::fs::read(data).ok())
}

fn quantize_to(input: &Path, output: &Path, recipe: &Recipe, opts: &RunOptions, save: &SaveOptions) {
    let model = Model::load(input).unwrap();
    let outcome = quantize_rs::run_with(model, recipe, Path::new("."), opts).unwrap();
    outcome.model.save(output, save).unwrap();
}

fn recipes() -> Vec<(&'static str, Recipe)> {
    let per_channel = Recipe { per_channel: true, ..Recipe::default() };
    let blocked = Recipe { bits: 4, block_size: Some(32), native_int4: true, ..Recipe::default() };
    vec![("int8 per-channel", per_channel), ("int4 blocked-32", blocked)]
}

#[test]
fn streamed_and_in_memory_quantization_write_the_same_bytes_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (inline, external) = inline_and_external(dir.path(), &layers(3, 256, 1040));
    let in_memory = RunOptions { spill_above: u64::MAX, ..RunOptions::default() };
    let streamed = RunOptions { spill_above: 0, scratch_dir: Some(dir.path().into()), ..RunOptions::default() };
    let inline_out = SaveOptions::default();
    let external_out = SaveOptions { external_data_threshold: 0, ..SaveOptions::default() };
    for (what, recipe) in recipes() {
        for (layout, save) in [("inline", &inline_out), ("external", &external_out)] {
            // Same file names (an external output names its data file), different folders.
            let folder = |name: String| {
                let d = dir.path().join(name);
                std::fs::create_dir_all(&d).unwrap();
                d.join("q.onnx")
            };
            let reference = folder(format!("mem-{what}-{layout}"));
            quantize_to(&inline, &reference, &recipe, &in_memory, save);
            let expected = written(&reference);
            assert_eq!(expected.1.is_some(), layout == "external", "{what}: {layout} output");
            for threads in [1, 3] {
                let out = folder(format!("streamed-{what}-{layout}-{threads}"));
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| quantize_to(&external, &out, &recipe, &streamed, save));
                assert!(written(&out) == expected, "{what}, {layout} output, {threads} thread(s): the bytes differ");
            }
        }
    }
    // Nothing is left behind: the scratch file has no name.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".onnx") && !n.ends_with(".onnx.data") && !n.contains('-'))
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

#[test]
fn a_streamed_output_runs_in_onnx_runtime_like_the_in_memory_one() {
    let dir = tempfile::tempdir().unwrap();
    let (inline, external) = inline_and_external(dir.path(), &layers(2, 256, 1040));
    let (_, recipe) = recipes().remove(0);
    let out = dir.path().join("q.onnx");
    let streamed = RunOptions { spill_above: 0, ..RunOptions::default() };
    quantize_to(&external, &out, &recipe, &streamed, &SaveOptions { external_data_threshold: 0, ..Default::default() });
    let result = ort_compare(&inline, &out, &Compare::default());
    assert!(worst_snr(&result) > 30.0, "{result}");
}

/// Resident memory of this process (kB): now and at its peak.
fn rss_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Run in a child process (a fresh peak): quantizes the model named by the environment, streamed
/// or not, and prints how far resident memory rose above what it was before loading.
#[test]
fn child_reports_peak_memory() {
    let (Ok(input), Ok(mode)) = (std::env::var("QRS_MEMORY_MODEL"), std::env::var("QRS_MEMORY_MODE")) else {
        return;
    };
    let (before, _) = rss_kb();
    let spill_above = if mode == "streamed" { 0 } else { u64::MAX };
    let opts = RunOptions { spill_above, ..RunOptions::default() };
    let recipe = Recipe { per_channel: true, weight_range: quantize_rs::RangeSearch::Minmax, ..Recipe::default() };
    let out = Path::new(&input).with_file_name(format!("{mode}-out.onnx"));
    quantize_to(
        Path::new(&input),
        &out,
        &recipe,
        &opts,
        &SaveOptions { external_data_threshold: 0, ..Default::default() },
    );
    let (_, peak) = rss_kb();
    println!("PEAK_GROWTH_KB={}", peak.saturating_sub(before));
}

#[cfg(target_os = "linux")]
#[test]
fn streamed_quantization_holds_a_few_tensors_not_the_model() {
    let dir = tempfile::tempdir().unwrap();
    // 24 weights of 1 MiB + 24 of 1.02 MiB: ~48 MiB of float weights.
    let (_, external) = inline_and_external(dir.path(), &layers(25, 256, 1040));
    let growth = |mode: &str| -> u64 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_reports_peak_memory", "--nocapture", "--test-threads", "1"])
            .env("QRS_MEMORY_MODEL", &external)
            .env("QRS_MEMORY_MODE", mode)
            .env("RAYON_NUM_THREADS", "2")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        let kb = text.split("PEAK_GROWTH_KB=").nth(1).and_then(|r| r.split_whitespace().next());
        let kb = kb.unwrap_or_else(|| panic!("no report: {text}"));
        kb.parse().unwrap()
    };
    let model_kb = 49 * 1040;
    let (whole, streamed) = (growth("in-memory"), growth("streamed"));
    eprintln!("resident memory rose by {whole} kB in memory, {streamed} kB streamed, for a {model_kb} kB model");
    assert!(whole > model_kb, "the in-memory path holds the model ({whole} kB): the measure works");
    // A window of 4 weights in flight, each as floats, group copies and values: ~20 MiB.
    assert!(streamed < model_kb / 2, "streamed, memory rose by {streamed} kB for a {model_kb} kB model");
}

#[test]
fn calibrating_a_small_external_data_model_is_not_refused_for_size() {
    let dir = tempfile::tempdir().unwrap();
    let (_, external) = inline_and_external(dir.path(), &layers(1, 256, 1040));
    let recipe = Recipe { calibration: Some(quantize_rs::Calibration::new("missing.npy")), ..Recipe::default() };
    // It passes the memory check and fails later, on the missing samples.
    let err = quantize_rs::run(Model::load(&external).unwrap(), &recipe, dir.path()).unwrap_err();
    assert!(!matches!(err, quantize_rs::Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("missing.npy"), "{err}");
}
