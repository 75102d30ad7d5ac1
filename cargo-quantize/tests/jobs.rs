//! End to end: batch, config files and the workspace command, run as the built binaries.

mod common;

use std::path::Path;

use common::*;
use tempfile::TempDir;

/// `in/a.onnx`, `in/bad.onnx` (truncated), `in/c.onnx` and an empty `out/`.
fn models() -> TempDir {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("in")).unwrap();
    std::fs::create_dir_all(d.join("out")).unwrap();
    write_model(&d.join("in/a.onnx"), &mlp(1));
    write_model(&d.join("in/c.onnx"), &mlp(2));
    let bytes = std::fs::read(d.join("in/a.onnx")).unwrap();
    std::fs::write(d.join("in/bad.onnx"), &bytes[..bytes.len() - 100]).unwrap();
    dir
}

fn outputs(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn batch_stops_at_the_first_failure() {
    let dir = models();
    let d = dir.path();
    let args = ["batch", "in/bad.onnx", "in/a.onnx", "in/c.onnx", "-o", "out", "--jobs", "1", "--format", "json"];
    let r = quantize_rs(d, &args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["summary"], serde_json::json!({"total": 3, "written": 0, "skipped": 0, "failed": 1, "not_run": 2}));
    assert_eq!(j["jobs"][0]["status"], "failed");
    assert!(j["jobs"][0]["error"].as_str().unwrap().contains("in/bad.onnx: not a valid ONNX model"));
    assert_eq!(j["jobs"][1]["status"], "not-run");
    // Nothing written, not even a partial or temporary file.
    assert!(outputs(d).is_empty(), "{:?}", outputs(d));
    assert!(r.stderr.contains("[1/3] in/bad.onnx -> out/bad.onnx: FAILED"), "{}", r.stderr);
    assert!(r.stderr.contains("3 job(s): 0 written, 0 skipped, 1 failed, 2 not run"), "{}", r.stderr);
}

#[test]
fn batch_continues_on_error_and_skips_existing() {
    let dir = models();
    let d = dir.path();
    let args = ["batch", "in/a.onnx", "in/bad.onnx", "in/c.onnx", "-o", "out", "--continue-on-error", "--bits", "4"];
    let r = quantize_rs(d, &args);
    assert_eq!(r.code, 1, "a failure still fails the run");
    assert_eq!(r.stderr.lines().filter(|l| l.starts_with('[')).count(), 3, "one line per model: {}", r.stderr);
    assert!(r.stderr.contains("3 job(s): 2 written, 0 skipped, 1 failed, 0 not run"), "{}", r.stderr);
    assert_eq!(outputs(d), ["a.onnx", "c.onnx"]);
    // The recipe flags apply: 4-bit values, stored widened (one per byte).
    let info = quantize_rs(d, &["info", "out/a.onnx", "--format", "json"]).json();
    assert_eq!(info["quantized_weights"], 2);
    let a_before = std::fs::metadata(d.join("out/a.onnx")).unwrap().modified().unwrap();

    let r = quantize_rs(d, &["batch", "in/a.onnx", "in/c.onnx", "-o", "out", "--skip-existing", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["summary"]["skipped"], 2);
    assert_eq!(j["summary"]["written"], 0);
    assert_eq!(std::fs::metadata(d.join("out/a.onnx")).unwrap().modified().unwrap(), a_before);

    // Without --skip-existing the outputs are rewritten, in parallel.
    let r = quantize_rs(d, &["batch", "in/a.onnx", "in/c.onnx", "-o", "out", "-j", "2", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["summary"]["written"], 2);
}

#[test]
fn batch_refuses_colliding_outputs_and_files_as_folders_and_creates_missing_ones() {
    let dir = models();
    let d = dir.path();
    std::fs::create_dir_all(d.join("other")).unwrap();
    write_model(&d.join("other/a.onnx"), &mlp(9));
    let r = quantize_rs(d, &["batch", "in/a.onnx", "other/a.onnx", "-o", "out"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("in/a.onnx and other/a.onnx would both be written to out/a.onnx"), "{}", r.stderr);
    assert!(outputs(d).is_empty());

    // A missing output folder is created, with its parents (`-o quantized/`, like `mkdir -p`)...
    let r = quantize_rs(d, &["batch", "in/a.onnx", "-o", "new/deeper"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(d.join("new/deeper/a.onnx").is_file());
    // ...but a file is never taken for one.
    std::fs::write(d.join("afile"), b"x").unwrap();
    let r = quantize_rs(d, &["batch", "in/a.onnx", "-o", "afile"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("afile is a file, not a folder"), "{}", r.stderr);
    std::fs::remove_dir_all(d.join("new")).unwrap();
    std::fs::remove_file(d.join("afile")).unwrap();

    // An output that is its own input is refused without --force.
    let r = quantize_rs(d, &["batch", "in/a.onnx", "-o", "in"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("refusing to overwrite the input model"), "{}", r.stderr);
}

const YAML: &str = "\
bits: 8
min_elements: 16
models:
  - input: in/a.onnx
    output: out/a.int4.onnx
    bits: 4
    block_size: 16
batch:
  input_dir: in/[ac].onnx
  output_dir: out/all
  skip_existing: true
  per_channel: false
";

const TOML: &str = "\
bits = 8
min_elements = 16

[[models]]
input = \"in/a.onnx\"
output = \"out/a.int4.onnx\"
bits = 4
block_size = 16

[batch]
input_dir = \"in/[ac].onnx\"
output_dir = \"out/all\"
skip_existing = true
per_channel = false
";

#[test]
fn config_dry_run_resolves_yaml_and_toml_alike() {
    let dir = models();
    let d = dir.path();
    std::fs::create_dir_all(d.join("conf")).unwrap();
    // Paths are relative to the config file's folder.
    std::fs::write(d.join("conf/jobs.yaml"), YAML.replace("in/", "../in/").replace("out/", "../out/")).unwrap();
    std::fs::write(d.join("jobs.toml"), TOML).unwrap();
    let yaml = quantize_rs(d, &["config", "conf/jobs.yaml", "--dry-run", "--format", "json"]);
    let toml = quantize_rs(d, &["config", "jobs.toml", "--dry-run", "--format", "json"]);
    // Both resolve to the same paths (relative to the working directory), although the YAML
    // file names them from conf/.
    for r in [&yaml, &toml] {
        assert_eq!(r.code, 0, "{}", r.stderr);
        let j = r.json();
        assert_eq!(j["dry_run"], true);
        let jobs = j["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[0]["key"], "models[0]");
        assert_eq!(jobs[0]["input"], "in/a.onnx");
        assert_eq!(jobs[0]["output"], "out/a.int4.onnx");
        assert_eq!(jobs[0]["recipe"]["bits"], 4);
        assert_eq!(jobs[0]["recipe"]["block-size"], 16);
        assert_eq!(jobs[0]["recipe"]["min-elements"], 16);
        assert_eq!(jobs[1]["output"], "out/all/a.onnx");
        assert_eq!(jobs[2]["output"], "out/all/c.onnx");
        assert_eq!(jobs[2]["recipe"]["bits"], 8);
        assert_eq!(jobs[2]["recipe"]["per-channel"], false);
        assert_eq!(jobs[2]["skip_existing"], true);
    }
    assert!(outputs(d).is_empty(), "a dry run writes nothing");
    let text = quantize_rs(d, &["config", "jobs.toml", "--dry-run"]);
    assert!(
        text.stdout.contains("models[0]: in/a.onnx -> out/a.int4.onnx  [int4 blocked(16) symmetric"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("3 job(s); nothing was run (--dry-run)"), "{}", text.stdout);
}

#[test]
fn config_runs_its_jobs() {
    let dir = models();
    let d = dir.path();
    std::fs::create_dir_all(d.join("out/all")).unwrap();
    std::fs::write(d.join("jobs.yaml"), YAML).unwrap();
    let r = quantize_rs(d, &["config", "jobs.yaml", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["summary"]["written"], 3);
    assert!(
        d.join("out/a.int4.onnx").is_file() && d.join("out/all/a.onnx").is_file() && d.join("out/all/c.onnx").is_file()
    );
    let info = quantize_rs(d, &["info", "out/a.int4.onnx", "--format", "json"]).json();
    assert_eq!(info["opsets"][0][1], 21, "blocked weights need opset 21");
    // skip_existing in the batch section.
    let r = quantize_rs(d, &["config", "jobs.yaml", "--format", "json"]);
    assert_eq!(
        r.json()["summary"],
        serde_json::json!({"total": 3, "written": 1, "skipped": 2, "failed": 0, "not_run": 0})
    );
}

#[test]
fn config_errors_name_the_key() {
    let dir = models();
    let d = dir.path();
    let cases = [
        (
            "bad.yaml",
            "models:\n  - {input: in/a.onnx, output: out/a.onnx}\n  - {input: in/c.onnx, output: out/c.onnx, bitz: 4}\n",
            "bad.yaml: models[1].bitz: unknown field `bitz`, expected one of `bits`",
        ),
        (
            "bad.toml",
            "bits = 6\n[[models]]\ninput = \"in/a.onnx\"\noutput = \"out/a.onnx\"\n",
            "bad.toml: bits: expected 4 or 8, got 6",
        ),
        ("syntax.yaml", "models:\n  - input: [in/a.onnx\n", "syntax.yaml: line 2 column"),
        (
            "glob.toml",
            "[batch]\ninput_dir = \"nothing/*.onnx\"\noutput_dir = \"out\"\n",
            "glob.toml: batch.input_dir: 'nothing/*.onnx' matches no file",
        ),
        ("empty.yaml", "bits: 8\n", "empty.yaml: declares no jobs"),
        ("jobs.json", "{}", "jobs.json: unknown config format: name the file .toml, .yaml or .yml"),
    ];
    for (file, text, expected) in cases {
        std::fs::write(d.join(file), text).unwrap();
        let r = quantize_rs(d, &["config", file]);
        assert_eq!(r.code, 2, "{file}: {}", r.stderr);
        assert!(r.stderr.starts_with(&format!("error: {expected}")), "{file}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{file}: {}", r.stderr);
    }
    let r = quantize_rs(d, &["config", "missing.yaml"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("cannot read config file missing.yaml"), "{}", r.stderr);
    assert!(outputs(d).is_empty());
}

/// A cargo package declaring two models (one of them twice as 4-bit) in a temporary folder.
fn project(extra: &str) -> TempDir {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::write(d.join("src/main.rs"), "fn main() {}\n").unwrap();
    write_model(&d.join("models/mlp.onnx"), &mlp(7));
    std::fs::copy(digits(), d.join("models/digits.onnx")).unwrap();
    let manifest = format!(
        "[package]\nname = \"demo\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [package.metadata.quantize]\nmin-elements = 16\n\n\
         [package.metadata.quantize.models.mlp]\npath = \"models/mlp.onnx\"\n\n\
         [package.metadata.quantize.models.digits4]\npath = \"models/digits.onnx\"\nbits = 4\n{extra}"
    );
    std::fs::write(d.join("Cargo.toml"), manifest).unwrap();
    dir
}

#[test]
fn workspace_build_fills_the_cache_and_check_finds_it() {
    let dir = project("");
    let d = dir.path();
    let r = cargo_quantize(d, &["--check", "--format", "json"]);
    assert_eq!(r.code, 1, "nothing cached yet: {}", r.stderr);
    let j = r.json();
    assert_eq!(j["summary"]["missing"], 2);
    assert!(!d.join("target/quantize-cache").exists(), "--check quantizes nothing");
    assert!(r.stderr.contains("mlp (demo): MISSING"), "{}", r.stderr);

    let r = cargo_quantize(d, &["--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["summary"], serde_json::json!({"total": 2, "cached": 0, "quantized": 2, "missing": 0, "failed": 0}));
    for m in j["models"].as_array().unwrap() {
        assert_eq!(m["status"], "quantized");
        let cached = Path::new(m["cached_model"].as_str().unwrap());
        assert!(
            cached.starts_with(d.join("target/quantize-cache").canonicalize().unwrap())
                || cached.starts_with(d.join("target/quantize-cache")),
            "{}",
            cached.display()
        );
        assert!(cached.is_file());
    }

    // `build` is the same command; everything is cached now.
    let r = cargo_quantize(d, &["build"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("2 model(s): 2 cached, 0 quantized, 0 missing, 0 failed"), "{}", r.stderr);
    let r = cargo_quantize(d, &["--check"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // A cached model truncated in place: --check does not call it cached but says it is damaged
    // (exit 1); `cargo quantize` quantizes it anew and says so; --check is happy again.
    let r = cargo_quantize(d, &["--check", "--format", "json"]);
    let entry = |j: &serde_json::Value, name: &str| {
        j["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap().clone()
    };
    let mlp = std::path::PathBuf::from(entry(&r.json(), "mlp")["cached_model"].as_str().unwrap());
    let good = std::fs::read(&mlp).unwrap();
    std::fs::OpenOptions::new().write(true).open(&mlp).unwrap().set_len(good.len() as u64 - 10).unwrap();
    let r = cargo_quantize(d, &["--check", "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let m = entry(&r.json(), "mlp");
    assert_eq!(m["status"], "failed");
    let error = m["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("model.onnx: is {} bytes with SHA-256", good.len() - 10))
            && error.contains(&format!("but the entry recorded {} bytes", good.len()))
            && error.contains("the next build or `cargo quantize` quantizes the model anew"),
        "{error}"
    );
    assert_eq!(entry(&r.json(), "digits4")["status"], "cached");
    let r = cargo_quantize(d, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("mlp (demo): quantized in"), "{}", r.stderr);
    assert!(r.stderr.contains("(replacing a damaged entry: "), "{}", r.stderr);
    assert_eq!(std::fs::read(&mlp).unwrap(), good);
    let r = cargo_quantize(d, &["--check"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Changing a recipe makes its result stale: --check fails for that model only.
    let manifest = std::fs::read_to_string(d.join("Cargo.toml")).unwrap().replace("bits = 4", "bits = 8");
    std::fs::write(d.join("Cargo.toml"), manifest).unwrap();
    let r = cargo_quantize(d, &["--check", "--format", "json"]);
    assert_eq!(r.code, 1);
    let j = r.json();
    let status =
        |name: &str| j["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()["status"].clone();
    assert_eq!((status("mlp"), status("digits4")), ("cached".into(), "missing".into()));

    // --package selects; an unknown one is a usage error.
    let r = cargo_quantize(d, &["--check", "--package", "demo", "--manifest-path", s(&d.join("Cargo.toml"))]);
    assert_eq!(r.code, 1);
    let r = cargo_quantize(d, &["--package", "nope"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--package nope: no such package in the workspace (it has demo)"), "{}", r.stderr);
}

#[test]
fn workspace_build_reports_bad_declarations_and_failed_models() {
    let dir = project("\n[package.metadata.quantize.models.broken]\npath = \"models/missing.onnx\"\n");
    let r = cargo_quantize(dir.path(), &["--jobs", "1"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("broken (demo): FAILED: package.metadata.quantize.models.broken.path: cannot read"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("3 model(s): 0 cached, 2 quantized, 0 missing, 1 failed"), "{}", r.stderr);

    let dir = project("bitz = 3\n");
    let r = cargo_quantize(dir.path(), &["--format", "json"]);
    assert_eq!(r.code, 1);
    let j = r.json();
    assert_eq!(j["summary"]["failed"], 1);
    let e = j["models"][0]["error"].as_str().unwrap();
    assert!(e.starts_with("package.metadata.quantize.models.digits4.bitz: unknown field `bitz`"), "{e}");

    let empty = TempDir::new().unwrap();
    let r = cargo_quantize(empty.path(), &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("error: `cargo metadata` failed:"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}
