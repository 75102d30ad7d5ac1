//! The build-script half end to end on the digits example's model: declarations in a Cargo.toml,
//! OUT_DIR contents, the cache (hits, sharing, concurrent builders) and the cargo directives.

use std::fs;
use std::path::{Path, PathBuf};

use quantize_build::manifest::{Index, Manifest};
use quantize_build::{Builder, Cache};

fn digits_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits/models/digits.onnx").canonicalize().unwrap()
}

/// A package folder with the digits model and a Cargo.toml holding `metadata`.
fn package(metadata: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("models")).unwrap();
    fs::copy(digits_model(), dir.path().join("models/digits.onnx")).unwrap();
    let toml = format!("[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n{metadata}");
    fs::write(dir.path().join("Cargo.toml"), toml).unwrap();
    dir
}

fn builder(pkg: &Path, out: &Path, cache: &Path) -> Builder {
    Builder::new().manifest_path(pkg.join("Cargo.toml")).out_dir(out).cache(Cache::new(cache))
}

const DIGITS: &str = "[package.metadata.quantize.models.digits]\npath = \"models/digits.onnx\"\nbits = 8\n";

#[test]
fn builds_into_out_dir_then_hits_the_cache_from_another_profile() {
    let pkg = package(DIGITS);
    let tmp = tempfile::tempdir().unwrap();
    let (debug_out, release_out, cache) = (tmp.path().join("debug"), tmp.path().join("release"), tmp.path().join("c"));

    let first = builder(pkg.path(), &debug_out, &cache).build();
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert_eq!(first.models.len(), 1);
    assert!(!first.models[0].cache_hit);
    let manifest: &Manifest = &first.models[0].manifest;
    assert_eq!(manifest.name, "digits");
    assert_eq!(manifest.model, debug_out.join("quantize/digits.onnx"));
    let quantized = fs::read(&manifest.model).unwrap();
    assert_eq!(quantized.len() as u64, manifest.record.bytes_after);
    assert_eq!(manifest.record.bytes_before, fs::metadata(digits_model()).unwrap().len());
    assert!(manifest.record.bytes_after * 3 < manifest.record.bytes_before);
    assert_eq!(manifest.record.summary.scheme, "int8 per-channel symmetric or asymmetric per scale, weight-only");
    assert_eq!(manifest.record.summary.quantized_tensors, 3);
    assert_eq!(manifest.record.content_hash.len(), 64);
    let input = &manifest.record.inputs[0];
    assert_eq!(
        serde_json::to_string(input).unwrap(),
        r#"{"name":"pixels","elem_type":"float32","shape":["batch",64]}"#
    );

    let on_disk: Manifest = serde_json::from_slice(&fs::read(debug_out.join("quantize/digits.json")).unwrap()).unwrap();
    assert_eq!(&on_disk, manifest);
    let index: Index = serde_json::from_slice(&fs::read(debug_out.join("quantize/index.json")).unwrap()).unwrap();
    assert_eq!(index.models, ["digits"]);

    // Cargo.toml, the model and the cache entry's model trigger a rerun; nothing else is listed.
    let cached_model = cache.join(&manifest.record.content_hash).join("model.onnx");
    assert_eq!(
        first.directives(),
        [
            format!("cargo::rerun-if-changed={}", pkg.path().join("Cargo.toml").display()),
            format!("cargo::rerun-if-changed={}", pkg.path().join("models/digits.onnx").display()),
            format!("cargo::rerun-if-changed={}", cached_model.display()),
        ]
    );

    // Another OUT_DIR (another profile) on the same cache: no second quantization, same bytes.
    let second = builder(pkg.path(), &release_out, &cache).build();
    assert!(second.errors.is_empty(), "{:?}", second.errors);
    assert!(second.models[0].cache_hit);
    assert_eq!(fs::read(release_out.join("quantize/digits.onnx")).unwrap(), quantized);
    assert_eq!(second.models[0].manifest.record, manifest.record);
    assert!(second.notes[0].starts_with("digits: cache hit "), "{:?}", second.notes);

    // Only complete entries live in the cache: one folder, no temporaries left.
    let entries: Vec<String> =
        fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries, [manifest.record.content_hash.as_str()]);
}

/// A cache entry truncated in place (which also truncates OUT_DIR's hard link to it) or with a
/// garbled record is reported by a lookup, and the next build quantizes anew, warns and installs
/// the good bytes.
#[test]
fn a_damaged_cache_entry_is_reported_and_rebuilt() {
    let pkg = package(DIGITS);
    let tmp = tempfile::tempdir().unwrap();
    let (out, cache_dir) = (tmp.path().join("o"), tmp.path().join("c"));
    let first = builder(pkg.path(), &out, &cache_dir).build();
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let record = first.models[0].manifest.record.clone();
    assert_eq!(record.model_sha256.len(), 64);
    let good = fs::read(out.join("quantize/digits.onnx")).unwrap();
    let entry = cache_dir.join(&record.content_hash);
    let cache = Cache::new(&cache_dir);

    // Each damage returns what the lookup must say.
    let truncate = || {
        let model = entry.join("model.onnx");
        fs::OpenOptions::new().write(true).open(&model).unwrap().set_len(good.len() as u64 / 2).unwrap();
        let (size, sha) = quantize_build::cache::file_sha256(&model).unwrap();
        format!(
            "model.onnx: is {size} bytes with SHA-256 {sha}, but the entry recorded {} bytes with SHA-256 {}: the \
             cached model was damaged; the next build or `cargo quantize` quantizes the model anew",
            good.len(),
            record.model_sha256
        )
    };
    let garble_record = || {
        fs::write(entry.join("record.json"), b"{\"format\": 2, \"content_hash\"").unwrap();
        "record.json: EOF while parsing".to_string()
    };
    let cases: [&dyn Fn() -> String; 2] = [&truncate, &garble_record];
    for damage in cases {
        let expect = damage();
        let err = cache.lookup(&record.content_hash).unwrap_err().to_string();
        assert!(err.contains(&expect), "expected '{expect}' in: {err}");
        let again = builder(pkg.path(), &out, &cache_dir).build();
        assert!(again.errors.is_empty(), "{:?}", again.errors);
        assert!(!again.models[0].cache_hit, "a damaged entry is no hit");
        assert!(
            again.warnings.iter().any(|w| w.starts_with("digits: replaced a damaged cache entry: ")),
            "{:?}",
            again.warnings
        );
        assert_eq!(fs::read(out.join("quantize/digits.onnx")).unwrap(), good, "the good bytes are installed");
        assert!(cache.lookup(&record.content_hash).unwrap().is_some());
        let entries = fs::read_dir(&cache_dir).unwrap().count();
        assert_eq!(entries, 1, "the damaged entry is gone");
    }
}

#[test]
fn the_key_follows_content_and_recipe_not_names() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let hash = |metadata: &str| {
        let pkg = package(metadata);
        let out = builder(pkg.path(), &tmp.path().join("o"), &cache).build();
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        out.models[0].manifest.record.content_hash.clone()
    };
    let base = hash(DIGITS);
    let renamed = hash("[package.metadata.quantize.models.other]\npath = \"./models/digits.onnx\"\nbits = 8\n");
    let four_bits = hash("[package.metadata.quantize.models.digits]\npath = \"models/digits.onnx\"\nbits = 4\n");
    assert_eq!(base, renamed);
    assert_ne!(base, four_bits);

    // The same model with one more (unknown, ignored) protobuf field: other bytes, other key.
    let pkg = package(DIGITS);
    let mut bytes = fs::read(pkg.path().join("models/digits.onnx")).unwrap();
    bytes.extend_from_slice(&[0xA0, 0x06, 0x01]); // field 100, varint 1
    fs::write(pkg.path().join("models/digits.onnx"), &bytes).unwrap();
    let changed = builder(pkg.path(), &tmp.path().join("o"), &cache).build();
    assert!(changed.errors.is_empty(), "{:?}", changed.errors);
    assert!(!changed.models[0].cache_hit);
    assert_ne!(changed.models[0].manifest.record.content_hash, base);
}

#[test]
fn concurrent_builders_share_one_complete_entry() {
    let pkg = package(DIGITS);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let outputs: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (pkg, out, cache) = (pkg.path(), tmp.path().join(format!("o{i}")), cache.clone());
                s.spawn(move || {
                    let built = builder(pkg, &out, &cache).build();
                    assert!(built.errors.is_empty(), "{:?}", built.errors);
                    fs::read(out.join("quantize/digits.onnx")).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(outputs.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);
}

/// The losing side of the race, made to happen: storing an entry that another build completed
/// first keeps the winner's files (not this build's bytes) and removes this build's temporary.
#[test]
fn a_store_that_loses_the_race_uses_the_winners_entry() {
    let pkg = package(DIGITS);
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("c");
    let first = builder(pkg.path(), &tmp.path().join("o"), &cache_dir).build();
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let record = first.models[0].manifest.record.clone();
    let winner = fs::read(cache_dir.join(&record.content_hash).join("model.onnx")).unwrap();

    let cache = Cache::new(&cache_dir);
    let stored = cache.store(b"the loser's bytes", record.clone()).unwrap();
    assert!(!stored.hit, "this build ran the job");
    assert_eq!(stored.model_path, cache_dir.join(&record.content_hash).join("model.onnx"));
    assert_eq!(fs::read(&stored.model_path).unwrap(), winner, "the winner's file stays");
    assert_eq!(stored.record, record);
    let entries: Vec<String> =
        fs::read_dir(&cache_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries, [record.content_hash.as_str()], "the loser's temporary folder is gone");
}

/// A package declaring one MatMul model with a 2048 x 2048 weight: its quantization takes long
/// enough in a test build that processes started together all miss the cache.
fn big_package() -> tempfile::TempDir {
    use prost::Message;
    use quantize_rs::onnx::proto::{
        GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto, ValueInfoProto, dtype,
        type_proto,
    };
    let (rows, cols) = (2048usize, 2048usize);
    let mut s: u32 = 12345;
    let w: Vec<u8> = (0..rows * cols)
        .flat_map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5).to_le_bytes()
        })
        .collect();
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
    let m = ModelProto {
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
                raw_data: Some(w.into()),
                ..Default::default()
            }],
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("models")).unwrap();
    fs::write(dir.path().join("models/big.onnx"), m.encode_to_vec()).unwrap();
    let toml = "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
                [package.metadata.quantize.models.big]\npath = \"models/big.onnx\"\n";
    fs::write(dir.path().join("Cargo.toml"), toml).unwrap();
    dir
}

const RACE_ENV: &str = "QUANTIZE_BUILD_RACE_CHILD";

/// The child side of [`builder_processes_racing_for_one_entry_share_it`]: run only by it (as
/// `<this test binary> race_child --exact --ignored` with RACE_ENV = "package;out;cache;go-file").
#[test]
#[ignore = "a child process of builder_processes_racing_for_one_entry_share_it"]
fn race_child() {
    let Ok(spec) = std::env::var(RACE_ENV) else { return };
    let parts: Vec<&str> = spec.split(';').collect();
    let (pkg, out, cache, go) = (Path::new(parts[0]), Path::new(parts[1]), Path::new(parts[2]), Path::new(parts[3]));
    // Start together: wait for the parent's go file.
    let start = std::time::Instant::now();
    while !go.exists() {
        assert!(start.elapsed().as_secs() < 120, "no go file");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let built = builder(pkg, out, cache).build();
    assert!(built.errors.is_empty(), "{:?}", built.errors);
    println!("RACE-RESULT cache_hit={}", built.models[0].cache_hit);
}

/// Separate build-script processes (this test binary, re-run as children) fill one cache entry
/// at the same time: all succeed with the same bytes, one complete entry is left and no
/// temporary folder. At least two must have run the job (else no race happened and it is
/// retried on a fresh cache): one entry from two jobs means a rename lost and its build used the
/// winner's entry.
#[test]
fn builder_processes_racing_for_one_entry_share_it() {
    const PROCESSES: usize = 4;
    let pkg = big_package();
    let tmp = tempfile::tempdir().unwrap();
    for attempt in 0..3 {
        let cache = tmp.path().join(format!("c{attempt}"));
        let go = tmp.path().join(format!("go{attempt}"));
        let children: Vec<_> = (0..PROCESSES)
            .map(|i| {
                let out = tmp.path().join(format!("o{attempt}-{i}"));
                let spec = format!("{};{};{};{}", pkg.path().display(), out.display(), cache.display(), go.display());
                let child = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["race_child", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
                    .env(RACE_ENV, spec)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("start a child");
                (child, out)
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        fs::write(&go, b"").unwrap();
        let mut ran = 0;
        let mut outputs = Vec::new();
        for (child, out) in children {
            let o = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
            // libtest may print "test race_child ... " on the same line first.
            let line = stdout.lines().find(|l| l.contains("RACE-RESULT")).expect("the child ran its build");
            ran += usize::from(line.contains("RACE-RESULT cache_hit=false"));
            outputs.push(fs::read(out.join("quantize/big.onnx")).unwrap());
        }
        assert!(outputs.windows(2).all(|w| w[0] == w[1]), "every build embeds the same bytes");
        let entries: Vec<String> =
            fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(entries.len(), 1, "one entry, no temporary folder: {entries:?}");
        assert_eq!(fs::read(cache.join(&entries[0]).join("model.onnx")).unwrap(), outputs[0]);
        if ran >= 2 {
            return;
        }
        eprintln!("attempt {attempt}: {ran} of {PROCESSES} builds ran the job; no race, retrying");
    }
    panic!("{PROCESSES} build processes started together never raced in 3 attempts");
}

#[test]
fn a_bad_declaration_becomes_a_cargo_error_naming_the_key() {
    let pkg = package("[package.metadata.quantize.models.digits]\npath = \"models/digits.onnx\"\nbits = 6\n");
    let tmp = tempfile::tempdir().unwrap();
    let out = builder(pkg.path(), tmp.path(), &tmp.path().join("c")).build();
    assert!(out.models.is_empty());
    assert_eq!(
        out.directives(),
        [
            format!("cargo::rerun-if-changed={}", pkg.path().join("Cargo.toml").display()),
            "cargo::error=package.metadata.quantize.models.digits.bits: expected 4 or 8, got 6".to_string(),
        ]
    );
}

#[test]
fn one_failing_model_does_not_hide_the_others() {
    let pkg = package(&format!("{DIGITS}[package.metadata.quantize.models.gone]\npath = \"models/gone.onnx\"\n"));
    let tmp = tempfile::tempdir().unwrap();
    let out = builder(pkg.path(), tmp.path(), &tmp.path().join("c")).build();
    assert_eq!(out.models.len(), 1);
    assert_eq!(out.errors.len(), 1);
    let e = out.errors[0].to_string();
    assert!(e.starts_with("package.metadata.quantize.models.gone.path: cannot read "), "{e}");
    // The missing file is still watched, so creating it reruns the build script.
    assert!(out.rerun_if_changed.contains(&pkg.path().join("models/gone.onnx")));
    let index: Index = serde_json::from_slice(&fs::read(tmp.path().join("quantize/index.json")).unwrap()).unwrap();
    assert_eq!(index.models, ["digits", "gone"]);
}

#[test]
fn skipped_weights_are_cargo_warnings() {
    let pkg = package(&format!("{DIGITS}min-elements = 1000\n"));
    let tmp = tempfile::tempdir().unwrap();
    let out = builder(pkg.path(), tmp.path(), &tmp.path().join("c")).build();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let warnings: Vec<&str> = out.warnings.iter().map(String::as_str).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("digits: weight 'fc3.weight' left float: "), "{warnings:?}");
    assert!(out.directives().iter().any(|d| d.starts_with("cargo::warning=digits: weight 'fc3.weight' left float")));
}

#[cfg(not(feature = "tract"))]
#[test]
fn calibration_without_the_tract_feature_says_what_to_enable() {
    let pkg = package(&format!("{DIGITS}calibration = {{ data = \"models/digits.onnx\" }}\n"));
    let tmp = tempfile::tempdir().unwrap();
    let out = builder(pkg.path(), tmp.path(), &tmp.path().join("c")).build();
    let e = out.errors[0].to_string();
    assert!(e.starts_with("package.metadata.quantize.models.digits.calibration: runs the model, which needs quantize-build's `tract` feature"), "{e}");
}

/// The digits package with calibration data and held-out samples next to the model.
#[cfg(feature = "tract")]
fn calibrated_package(metadata: &str) -> tempfile::TempDir {
    let pkg = package(metadata);
    let models = digits_model().parent().unwrap().to_path_buf();
    for f in ["digits-calib.npy", "digits-test.npy"] {
        fs::copy(models.join(f), pkg.path().join("models").join(f)).unwrap();
    }
    pkg
}

#[cfg(feature = "tract")]
const CALIBRATED: &str = "[package.metadata.quantize.models.a]\npath = \"models/digits.onnx\"\n\
    calibration = { data = \"models/digits-calib.npy\" }\n\
    [package.metadata.quantize.models.b]\npath = \"models/digits.onnx\"\nper-channel = false\n\
    calibration = { data = \"models/digits-calib.npy\" }\nverify-data = \"models/digits-test.npy\"\n\
    [package.metadata.quantize.models.c]\npath = \"models/digits.onnx\"\n";

#[cfg(feature = "tract")]
fn opt_level_warnings(out: &quantize_build::BuildOutput) -> Vec<&str> {
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    out.warnings.iter().map(String::as_str).filter(|w| w.contains("build-override")).collect()
}

#[cfg(feature = "tract")]
#[test]
fn an_unoptimized_build_script_warns_once_with_the_fix() {
    use std::time::Duration;
    let pkg = calibrated_package(CALIBRATED);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let build = |opt: &'static str, after: Option<Duration>, cache: &Path| {
        builder(pkg.path(), tmp.path(), cache).assume_opt_level(opt).unoptimized_warning_after(after).build()
    };

    // Two calibrated models ran at opt-level 0: one warning, naming the first and the fix.
    let out = build("0", Some(Duration::ZERO), &cache);
    assert_eq!(out.models.len(), 3);
    let warnings = opt_level_warnings(&out);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("calibrating 'a' took "), "{}", warnings[0]);
    assert!(
        warnings[0].contains(
            "add `[profile.dev.build-override] opt-level = 3` and `[profile.release.build-override] opt-level = 3` \
             to the workspace root's Cargo.toml"
        ),
        "{}",
        warnings[0]
    );
    let directives: Vec<String> = out.directives().into_iter().filter(|d| d.contains("build-override")).collect();
    assert_eq!(directives.len(), 1);
    assert!(directives[0].starts_with("cargo::warning=calibrating 'a' took "), "{directives:?}");

    // Nothing ran on a cache hit: nothing to warn about.
    let hit = build("0", Some(Duration::ZERO), &cache);
    assert!(hit.models.iter().all(|m| m.cache_hit));
    assert!(opt_level_warnings(&hit).is_empty());

    // Optimized, faster than the threshold, or turned off: no warning.
    for (opt, after) in [("3", Some(Duration::ZERO)), ("0", Some(Duration::from_secs(3600))), ("0", None)] {
        let fresh = tmp.path().join(format!("c-{opt}-{after:?}"));
        let out = build(opt, after, &fresh);
        assert!(out.models.iter().all(|m| !m.cache_hit));
        assert!(opt_level_warnings(&out).is_empty(), "opt-level {opt}, after {after:?}: {:?}", out.warnings);
    }
}

#[cfg(feature = "tract")]
#[test]
fn weight_only_models_never_warn_about_opt_level() {
    let pkg = package(DIGITS);
    let tmp = tempfile::tempdir().unwrap();
    let out = builder(pkg.path(), tmp.path(), &tmp.path().join("c"))
        .assume_opt_level("0")
        .unoptimized_warning_after(Some(std::time::Duration::ZERO))
        .build();
    assert!(opt_level_warnings(&out).is_empty(), "{:?}", out.warnings);
}

#[cfg(feature = "tract")]
#[test]
fn verifying_alone_names_what_ran() {
    let pkg = calibrated_package(&format!("{DIGITS}verify-data = \"models/digits-test.npy\"\n"));
    let tmp = tempfile::tempdir().unwrap();
    let out = builder(pkg.path(), tmp.path(), &tmp.path().join("c"))
        .assume_opt_level("0")
        .unoptimized_warning_after(Some(std::time::Duration::ZERO))
        .build();
    let warnings = opt_level_warnings(&out);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("verifying 'digits' took "), "{}", warnings[0]);
}

/// The opt-level recorded at compile time is the one this test binary's quantize-build was
/// built with (cargo's OPT_LEVEL for its build script): the dev test profile leaves workspace
/// members unoptimized, `--release` optimizes them.
#[test]
fn the_recorded_opt_level_is_this_builds() {
    let expected = if cfg!(debug_assertions) { ["0"].as_slice() } else { ["1", "2", "3", "s", "z"].as_slice() };
    assert!(expected.contains(&quantize_build::OPT_LEVEL), "{}", quantize_build::OPT_LEVEL);
}
