//! End to end: quantize, info, validate and benchmark, run as the built `quantize-rs` binary on
//! synthetic models and on the real models in the repository, failure paths included.

mod common;

use common::*;
use tempfile::TempDir;

#[test]
fn quantize_real_model_json_report() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("cls.int8.onnx");
    let r = quantize_rs(dir.path(), &["quantize", s(&ppocr()), "-o", s(&out), "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["report"]["quantized"].as_array().unwrap().len(), 49);
    assert_eq!(j["report"]["opset_after"], 13);
    let (a, b) = (j["bytes_in"].as_u64().unwrap(), j["bytes_out"].as_u64().unwrap());
    assert_eq!(b, std::fs::metadata(&out).unwrap().len());
    assert!(b * 2 < a, "{a} -> {b}");
}

#[test]
fn cargo_subcommand_forms() {
    let dir = TempDir::new().unwrap();
    let m = dir.path().join("m.onnx");
    write_model(&m, &mlp(1));
    // `cargo quantize quantize m.onnx -o q.onnx` runs `cargo-quantize quantize quantize ...`.
    let r = cargo_quantize(dir.path(), &["quantize", "m.onnx", "-o", "q.onnx"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("wrote q.onnx"), "{}", r.stderr);
    // `cargo quantize info m.onnx`.
    let r = cargo_quantize(dir.path(), &["info", "q.onnx", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["quantized_weights"], 2);
    // The seed's `cargo-quantize quantize MODEL ...` still works.
    let r = cargo_quantize(dir.path(), &["m.onnx", "-o", "q2.onnx"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(dir.path().join("q2.onnx").is_file());
}

/// The original product's command lines: `-b` for `--bits`, and no `-o` writes
/// `<stem>_quantized.onnx` / `<stem>_calibrated.onnx` beside the input, never over a file.
#[test]
fn short_bits_and_the_default_output_beside_the_input() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("models")).unwrap();
    write_model(&d.join("models/m.onnx"), &mlp(1));
    let r = quantize_rs(d, &["quantize", "models/m.onnx", "-b", "4", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["output"], "models/m_quantized.onnx");
    assert_eq!(j["recipe"]["bits"], 4);
    let written = read_model(&d.join("models/m_quantized.onnx"));
    let int4 = written.graph.unwrap().initializer.iter().filter(|t| t.data_type == Some(22)).count();
    assert_eq!(int4, 0, "4-bit weights are written as int8 unless --native-int4");
    // Not over the file it wrote before, unless forced; the message says what to do.
    let before = std::fs::read(d.join("models/m_quantized.onnx")).unwrap();
    let r = quantize_rs(d, &["quantize", "models/m.onnx"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("models/m_quantized.onnx already exists (the default output without -o); pass --force"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read(d.join("models/m_quantized.onnx")).unwrap(), before);
    let r = quantize_rs(d, &["quantize", "models/m.onnx", "--force"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("wrote models/m_quantized.onnx"), "{}", r.stderr);
    assert_ne!(std::fs::read(d.join("models/m_quantized.onnx")).unwrap(), before, "8 bits this time");
    // calibrate: `<stem>_calibrated.onnx`.
    write_npy(&d.join("x.npy"), &[4, 32], &rand_f32(128, 5));
    let r = quantize_rs(d, &["calibrate", "models/m.onnx", "--data", "x.npy"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("wrote models/m_calibrated.onnx"), "{}", r.stderr);
    assert!(d.join("models/m_calibrated.onnx").is_file());
}

#[test]
fn user_mistakes_are_one_line_errors_without_output() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let good = d.join("m.onnx");
    write_model(&good, &mlp(1));
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(d.join("truncated.onnx"), &bytes[..bytes.len() / 2]).unwrap();

    let r = quantize_rs(d, &["quantize", "missing.onnx", "-o", "out.onnx"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("error: cannot read missing.onnx"), "{}", r.stderr);

    let r = quantize_rs(d, &["quantize", "truncated.onnx", "-o", "out.onnx"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("truncated.onnx: not a valid ONNX model"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(!d.join("out.onnx").exists());

    let r = quantize_rs(d, &["quantize", "m.onnx", "-o", "no/such/folder/out.onnx"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("output folder no/such/folder does not exist; create it first"), "{}", r.stderr);

    let r = quantize_rs(d, &["quantize", "m.onnx", "-o", "out.onnx", "--bits", "6"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--bits: expected 4 or 8, got 6"), "{}", r.stderr);
    assert!(!d.join("out.onnx").exists());

    // Calibration options are named by the flag that was given.
    let r = quantize_rs(
        d,
        &["calibrate", "m.onnx", "--data", "x.npy", "-o", "out.onnx", "--activation-op-types", "Softmax"],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("error: --activation-op-types: quantize-rs does not quantize the activations of 'Softmax'"),
        "{}",
        r.stderr
    );
    let r = quantize_rs(d, &["calibrate", "m.onnx", "--data", "x.npy", "-o", "out.onnx", "--percentile", "0"]);
    assert!(r.stderr.starts_with("error: --percentile: expected a value in (0, 100]"), "{}", r.stderr);
    assert!(!d.join("out.onnx").exists());

    // --format json still gives one JSON document on stdout.
    let r = quantize_rs(d, &["info", "truncated.onnx", "--format", "json"]);
    assert_eq!(r.code, 1);
    let j = r.json();
    assert_eq!(j["ok"], false);
    assert!(j["error"].as_str().unwrap().contains("not a valid ONNX model"));

    // Without -o the output goes beside the input (see short_bits_and_the_default_output...);
    // without a model it is a usage error.
    let r = quantize_rs(d, &["quantize", "-o", "out.onnx"]);
    assert_eq!(r.code, 2, "clap usage error: {}", r.stderr);
}

#[test]
fn validate_passes_a_good_model_on_real_data() {
    let dir = TempDir::new().unwrap();
    let q = dir.path().join("digits.q.onnx");
    assert_eq!(quantize_rs(dir.path(), &["quantize", s(&digits()), "-o", s(&q)]).code, 0);
    let r = quantize_rs(
        dir.path(),
        &[
            "validate",
            s(&digits()),
            s(&q),
            "--data",
            s(&digits_test()),
            "--detailed",
            "--min-snr-db",
            "30",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["passed"], true);
    assert_eq!(j["samples"], 400);
    let names: Vec<&str> = j["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["structure", "connectivity", "opset", "types", "interface", "runs", "min-snr-db"]);
    assert!(j["checks"].as_array().unwrap().iter().all(|c| c["status"] == "passed"));
    let v = &j["verification"];
    let snr = v["snr_db"].as_f64().unwrap();
    assert!((30.0..80.0).contains(&snr), "{snr}");
    assert!(v["cosine"].as_f64().unwrap() > 0.999);
    assert_eq!(v["exact"], true);
    // One float output: its figures are the summary's.
    assert_eq!(v["outputs"][0]["kind"], "float");
    assert_eq!(v["outputs"][0]["snr_db"].as_f64().unwrap(), snr);
    let weights = j["weights"].as_array().unwrap();
    assert_eq!(weights.len(), 3);
    for w in weights {
        assert_eq!(w["stored_as"], "int8");
        assert_eq!(w["granularity"], "per-axis");
        assert!(w["snr_db"].as_f64().unwrap() > 35.0, "{w}");
    }

    // The same gate at an unreachable level fails, and says so.
    let r =
        quantize_rs(dir.path(), &["validate", s(&digits()), s(&q), "--data", s(&digits_test()), "--min-snr-db", "200"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("min-snr-db    FAILED"), "{}", r.stdout);
    assert!(r.stdout.contains("below 200 dB"), "{}", r.stdout);
    assert!(r.stdout.contains("FAILED: 1 of 7 checks"), "{}", r.stdout);

    // A gate needs data.
    let r = quantize_rs(dir.path(), &["validate", s(&digits()), s(&q), "--min-snr-db", "30"]);
    assert_eq!(r.code, 2);
}

#[test]
fn validate_runs_synthetic_inputs_without_data() {
    let dir = TempDir::new().unwrap();
    let q = dir.path().join("cls.q.onnx");
    assert_eq!(quantize_rs(dir.path(), &["quantize", s(&ppocr()), "-o", s(&q)]).code, 0);
    let r =
        quantize_rs(dir.path(), &["validate", s(&ppocr()), s(&q), "--input-shape", "x=1,3,48,192", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["inputs"], "synthetic");
    assert_eq!(j["samples"], 1);
    let runs = j["checks"].as_array().unwrap().iter().find(|c| c["name"] == "runs").unwrap();
    assert_eq!(runs["status"], "passed");
    assert!(j["verification"]["outputs"][0]["snr_db"].as_f64().unwrap() > 25.0, "{}", j["verification"]);

    let r = quantize_rs(dir.path(), &["validate", s(&ppocr()), s(&q), "--input-shape", "x=1,3,48"]);
    assert_eq!(r.code, 2, "a shape that does not fit is a usage error: {}", r.stderr);
    assert!(r.stderr.contains("input 'x' declares shape [?, 3, ?, ?]"), "{}", r.stderr);
}

/// Quantizes the MLP, then lets `edit` break the result.
fn broken(dir: &std::path::Path, edit: impl FnOnce(&mut quantize_rs::onnx::proto::ModelProto)) -> std::path::PathBuf {
    let m = dir.join("m.onnx");
    write_model(&m, &mlp(3));
    let q = dir.join("q.onnx");
    assert_eq!(quantize_rs(dir, &["quantize", "m.onnx", "-o", "q.onnx"]).code, 0);
    let mut proto = read_model(&q);
    edit(&mut proto);
    let b = dir.join("broken.onnx");
    write_model(&b, &proto);
    b
}

#[test]
fn validate_rejects_a_zeroed_scale() {
    let dir = TempDir::new().unwrap();
    broken(dir.path(), |m| {
        let g = m.graph.as_mut().unwrap();
        let scale = g.initializer.iter_mut().find(|t| t.name.as_deref() == Some("w1_scale")).expect("w1_scale");
        let n = scale.raw_data.as_ref().unwrap().len();
        scale.raw_data = Some(vec![0u8; n].into());
    });
    for format in ["text", "json"] {
        let r = quantize_rs(dir.path(), &["validate", "m.onnx", "broken.onnx", "--format", format]);
        assert_eq!(r.code, 1, "{}", r.stdout);
        if format == "json" {
            let j = r.json();
            assert_eq!(j["passed"], false);
            let types = j["checks"].as_array().unwrap().iter().find(|c| c["name"] == "types").unwrap();
            assert_eq!(types["status"], "failed");
            assert!(types["problems"][0].as_str().unwrap().contains("scale 'w1_scale' element 0 is 0"), "{types}");
            let runs = j["checks"].as_array().unwrap().iter().find(|c| c["name"] == "runs").unwrap();
            assert_eq!(runs["status"], "skipped");
        } else {
            assert!(r.stdout.contains("types         FAILED"), "{}", r.stdout);
            assert!(!r.stdout.contains("PASSED"), "{}", r.stdout);
        }
    }
}

#[test]
fn validate_rejects_a_dangling_input_and_a_wrong_zero_point_type() {
    let dir = TempDir::new().unwrap();
    broken(dir.path(), |m| {
        let g = m.graph.as_mut().unwrap();
        let relu = g.node.iter_mut().find(|n| n.op_type.as_deref() == Some("Relu")).unwrap();
        relu.input[0] = "nowhere".into();
    });
    let r = quantize_rs(dir.path(), &["validate", "m.onnx", "broken.onnx", "--format", "json"]);
    assert_eq!(r.code, 1);
    let j = r.json();
    let conn = j["checks"].as_array().unwrap().iter().find(|c| c["name"] == "connectivity").unwrap();
    assert_eq!(conn["status"], "failed");
    assert!(conn["problems"][0].as_str().unwrap().contains("reads 'nowhere', which no graph input"), "{conn}");

    // An asymmetric model whose uint8 zero point is rewritten as int8.
    let dir = TempDir::new().unwrap();
    let m = dir.path().join("m.onnx");
    write_model(&m, &mlp(4));
    assert_eq!(quantize_rs(dir.path(), &["quantize", "m.onnx", "-o", "q.onnx", "--asymmetric", "--unsigned"]).code, 0);
    let mut proto = read_model(&dir.path().join("q.onnx"));
    let zp = proto.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name.as_deref() == Some("w1_zero_point"));
    zp.expect("asymmetric weights have a zero point").data_type = Some(quantize_rs::onnx::proto::dtype::INT8);
    write_model(&dir.path().join("bad-zp.onnx"), &proto);
    let r = quantize_rs(dir.path(), &["validate", "m.onnx", "bad-zp.onnx"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("zero point 'w1_zero_point' is int8 but input 'w1_quantized' is uint8"), "{}", r.stdout);

    // The untouched asymmetric model passes.
    let r = quantize_rs(dir.path(), &["validate", "m.onnx", "q.onnx"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("PASSED: 6 checks"), "{}", r.stdout);
}

#[test]
fn validate_refuses_an_unreadable_model() {
    let dir = TempDir::new().unwrap();
    let m = dir.path().join("m.onnx");
    write_model(&m, &mlp(1));
    std::fs::write(dir.path().join("half.onnx"), &std::fs::read(&m).unwrap()[..100]).unwrap();
    let r = quantize_rs(dir.path(), &["validate", "m.onnx", "half.onnx"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("half.onnx: not a valid ONNX model"), "{}", r.stderr);
    assert!(!r.stdout.contains("PASSED"));
}

#[test]
fn validate_runs_native_int4_through_the_embedding_conversion() {
    let dir = TempDir::new().unwrap();
    let m = dir.path().join("m.onnx");
    write_model(&m, &mlp(5));
    let q = ["quantize", "m.onnx", "-o", "q4.onnx", "--bits", "4", "--native-int4", "--block-size", "16"];
    assert_eq!(quantize_rs(dir.path(), &q).code, 0);
    let r = quantize_rs(dir.path(), &["validate", "m.onnx", "q4.onnx", "--detailed", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let j = r.json();
    let runs = j["checks"].as_array().unwrap().iter().find(|c| c["name"] == "runs").unwrap();
    assert!(runs["note"].as_str().unwrap().contains("2 blocked weight(s) folded"), "{runs}");
    for w in j["weights"].as_array().unwrap() {
        assert_eq!((w["stored_as"].as_str(), w["granularity"].as_str()), (Some("int4"), Some("blocked")));
        let snr = w["snr_db"].as_f64().unwrap();
        assert!((10.0..30.0).contains(&snr), "4-bit weights: {snr}");
    }
}

#[test]
fn benchmark_reports_sizes_and_latency() {
    let dir = TempDir::new().unwrap();
    let q = dir.path().join("digits.q.onnx");
    assert_eq!(quantize_rs(dir.path(), &["quantize", s(&digits()), "-o", s(&q)]).code, 0);
    let r = quantize_rs(
        dir.path(),
        &["benchmark", s(&digits()), s(&q), "--data", s(&digits_test()), "--runs", "5", "--format", "json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["input_shapes"], serde_json::json!([[1, 64]]));
    for side in ["original", "quantized"] {
        let l = &j[side]["latency"];
        assert_eq!(l["runs"], 5);
        let (p10, med, p90) =
            (l["p10_ms"].as_f64().unwrap(), l["median_ms"].as_f64().unwrap(), l["p90_ms"].as_f64().unwrap());
        assert!(0.0 < p10 && p10 <= med && med <= p90, "{l}");
    }
    assert_eq!(j["original"]["file_bytes"], std::fs::metadata(digits()).unwrap().len());
    assert_eq!(j["quantized"]["file_bytes"], std::fs::metadata(&q).unwrap().len());
    assert_eq!((j["original"]["nodes"].as_u64(), j["quantized"]["nodes"].as_u64()), (Some(5), Some(8)));
    let ratio = j["compression_ratio"].as_f64().unwrap();
    assert!((3.0..4.0).contains(&ratio), "{ratio}");

    let r = quantize_rs(dir.path(), &["benchmark", s(&ppocr()), s(&q), "--runs", "2"]);
    assert_eq!(r.code, 1, "different models: the benchmark input does not fit the quantized one");
    let r = quantize_rs(dir.path(), &["benchmark", s(&digits()), s(&q), "--runs", "0"]);
    assert_eq!(r.code, 2);
    let r = quantize_rs(dir.path(), &["benchmark", s(&digits()), s(&q), "--runs", "3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("tract, 3 timed run(s) after 3 warm-up, input [1, 64] from synthetic"), "{}", r.stdout);
}

#[test]
fn benchmark_times_onnx_runtime_too() {
    let dir = TempDir::new().unwrap();
    let q = dir.path().join("digits.q.onnx");
    assert_eq!(quantize_rs(dir.path(), &["quantize", s(&digits()), "-o", s(&q)]).code, 0);
    // The project's venv with onnxruntime (the same one the ORT checks of the workspace use).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("bash").arg(root.join("scripts/setup-python.sh")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let python = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (model, data) = (digits(), digits_test());
    let args = ["benchmark", s(&model), s(&q), "--data", s(&data), "--runs", "4", "--runtime", "ort"];
    let r = quantize_rs(dir.path(), &[&args[..], &["--python", &python, "--format", "json"]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert!(j["runtime"].as_str().unwrap().starts_with("onnxruntime "), "{j}");
    for side in ["original", "quantized"] {
        let l = &j[side]["latency"];
        assert_eq!(l["runs"], 4);
        assert!(l["median_ms"].as_f64().unwrap() > 0.0, "{l}");
    }
    let r = quantize_rs(dir.path(), &[&args[..], &["--python", &python]].concat());
    assert!(r.stdout.contains("onnxruntime ") && r.stdout.contains("4 timed run(s)"), "{}", r.stdout);
    // A python that cannot be run is an error that says what to pass.
    let r = quantize_rs(dir.path(), &[&args[..], &["--python", "/nonexistent/python"]].concat());
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--python"), "{}", r.stderr);
}
