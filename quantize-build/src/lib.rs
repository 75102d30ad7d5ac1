//! Quantize ONNX models during `cargo build`, and embed them with `include_quantized!`.
//!
//! You declare a float32 ONNX model in Cargo.toml; the build script quantizes it into `OUT_DIR`
//! (cached, so an unchanged model costs nothing on later builds); `include_quantized!` embeds
//! the result in your binary with a typed description of it.
//!
//! # Tutorial
//!
//! Start a crate and put a float model in it:
//!
//! ```sh
//! cargo new digits && cd digits
//! mkdir models && cp /path/to/digits.onnx models/
//! ```
//!
//! Declare the model and add the two crates. `rust-version` 1.77 or later lets the build script
//! report errors with `cargo::error`:
//!
//! ```toml
//! [package]
//! name = "digits"
//! version = "0.1.0"
//! edition = "2024"
//! rust-version = "1.91"
//!
//! [package.metadata.quantize.models.digits]
//! path = "models/digits.onnx"    # the float model, relative to Cargo.toml
//! bits = 8                       # every key of quantize_rs::Recipe, in kebab-case
//! per-channel = true
//!
//! [dependencies]
//! # Embedding needs none of the quantizer; add features = ["tract"] to run the model.
//! quantize-rs = { version = "0.1", default-features = false }
//!
//! [build-dependencies]
//! quantize-build = "0.1"
//! ```
//!
//! Write `build.rs`:
//!
//! ```no_run
//! fn main() {
//!     quantize_build::run()
//! }
//! ```
//!
//! Embed the model in `src/main.rs`:
//!
//! ```ignore
//! static DIGITS: quantize_rs::EmbeddedModel = quantize_rs::include_quantized!("digits");
//!
//! fn main() {
//!     println!("{}: {} -> {} bytes ({})", DIGITS.name, DIGITS.bytes_before, DIGITS.bytes.len(), DIGITS.recipe.scheme);
//!     for input in DIGITS.inputs {
//!         println!("  input {input}"); // pixels: float32 [batch, 64]
//!     }
//! }
//! ```
//!
//! `cargo run` prints
//!
//! ```text
//! digits: 69384 -> 19571 bytes (int8 per-channel symmetric or asymmetric per scale, weight-only)
//!   input pixels: float32 [batch, 64]
//! ```
//!
//! With `quantize-rs = { ..., features = ["tract"] }`, `DIGITS.tract_runnable()?` gives a tract
//! model to run, 4-bit models included. `examples/digits` in the repository is this tutorial
//! carried through: it trains the model, quantizes it at build time and measures its accuracy.
//!
//! What to expect of speed: in tract a weight-only model runs at float speed (tract folds the
//! constant DequantizeLinear when it loads the model), so weight-only buys a smaller binary, not
//! a faster one; a statically calibrated model (`calibration = { ... }`) pays off in ONNX
//! Runtime, which fuses it into integer kernels, and runs slower than float in tract.
//!
//! # Declaring models
//!
//! `[package.metadata.quantize.models.<name>]` takes `path` and any key of
//! [`quantize_rs::Recipe`]: `bits`, `unsigned`, `per-channel`, `symmetric`, `weight-range`, `block-size`,
//! `native-int4`, `exclude`, `include`, `op-types`, `min-elements`, `layer-bits`,
//! `allow-empty`, `dynamic` (MatMul/Gemm on int8 with inputs quantized at run time, for
//! transformers in ONNX Runtime), `calibration = { data = "...", method = "entropy", ... }`, `verify-data`,
//! `min-snr-db`, `max-size-ratio`. `calibration` takes `data`, `method`, `percentile`,
//! `samples`, `symmetric-activations`, `full-range-weights`, `bias-correction`, `graph-rewrites`,
//! `equalize`, `op-types`,
//! `target-snr-db`, `image`, `weight-only` and `weight-rounding` ([`quantize_rs::Calibration`]):
//! with `weight-only = true` the samples serve the weights only (each layer rounded to minimise
//! its output error on them, biases corrected) and the model stays weight-only. Keys set in
//! `[package.metadata.quantize]` itself are defaults for every model; tables such as
//! `calibration` merge key by key.
//!
//! A mistake stops the build with the key's full path and what is accepted:
//!
//! ```text
//! error: package.metadata.quantize.models.digits.bits: expected 4 or 8, got 6
//! ```
//!
//! Weights left float are reported as `cargo::warning`s. Calibration (`calibration`) and
//! verification (`verify-data`, the quality gates) run the model with tract: enable this
//! crate's `tract` feature for them.
//!
//! # What the build script does
//!
//! For each model, [`run`]:
//!
//! 1. reads the package's Cargo.toml (cargo does not pass `[package.metadata]` to build scripts)
//!    into a [`project::Project`];
//! 2. hashes the model, its data files, the recipe and the tool version, and looks the hash up
//!    in the [`cache`] under the target directory, shared by every profile and by
//!    `cargo quantize`; on a miss it runs [`quantize_rs::run`] and stores the result;
//! 3. writes `OUT_DIR/quantize/<name>.onnx` and `OUT_DIR/quantize/<name>.json` (a
//!    [`manifest::Manifest`]), and `OUT_DIR/quantize/index.json`;
//! 4. tells cargo to rerun it only when Cargo.toml, a model or a data file changes
//!    (`cargo::rerun-if-changed`), so editing `src/` never requantizes.
//!
//! # Speed: optimize the build script
//!
//! Build scripts and their dependencies are compiled without optimization, even for
//! `--release`. Weight-only quantization hardly minds; calibration and verification run the
//! model with tract on every sample, and tract unoptimized is an order of magnitude slower
//! (BENCHMARKS.md, "Build-time quantization"). The fix goes in the workspace root's Cargo.toml
//! (cargo ignores profiles anywhere else):
//!
//! ```toml
//! [profile.dev.build-override]
//! opt-level = 3
//! [profile.release.build-override]
//! opt-level = 3
//! ```
//!
//! It costs compile time instead: the first build compiles quantize-rs and tract optimized for
//! the build script, a few minutes on a small machine. So quantize-build only suggests it when
//! it pays: when it was compiled at opt-level 0 and a model that runs tract (`calibration` or
//! `verify-data`) took at least a second ([`Builder::unoptimized_warning_after`]), the build
//! prints one `cargo::warning` with the lines above. Cached models never run, so they never warn.
//!
//! Which opt-level counts is the one quantize-build itself was compiled with (recorded by its
//! own build script). That is the build script's: `build-override` sets it, while the
//! `OPT_LEVEL` variable your build script sees is your package's (3 for `--release` even though
//! the build script is unoptimized) and `debug_assertions` stays on in a dev build-override at
//! opt-level 3. A `[profile.dev.package."*"] opt-level = 2` (a common setting) optimizes every
//! dependency that is not a workspace member, quantize-build, quantize-rs and tract included,
//! build-dependencies too: then there is no warning, and none is needed.
//!
//! # More control: [`Builder`]
//!
//! ```no_run
//! use quantize_rs::Recipe;
//!
//! fn main() {
//!     quantize_build::Builder::new()
//!         // Another package's declarations (paths resolve against its folder).
//!         .manifest_path("../models-crate/Cargo.toml")
//!         // A model declared in code.
//!         .model("tiny", "models/tiny.onnx", Recipe { bits: 4, block_size: Some(32), ..Recipe::default() })
//!         .run()
//! }
//! ```
//!
//! The pieces `cargo quantize` reuses are public: [`project`] (declarations), [`cache`]
//! ([`cache::quantize_into_cache`], [`cache::install`]) and [`manifest`] (the JSON formats).

#![warn(missing_docs)]
// The tutorial shows build.rs as it is written, `fn main` included.
#![allow(clippy::needless_doctest_main)]

pub mod cache;
pub mod error;
pub mod manifest;
pub mod project;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub use cache::Cache;
pub use error::{Error, Result};
pub use manifest::Manifest;
pub use project::{DeclaredModel, Project};
use quantize_rs::Recipe;

/// The opt-level quantize-build was compiled with: in a build script, the build script's
/// (`[profile.*.build-override]`, or a `[profile.*.package]` override of quantize-build).
pub const OPT_LEVEL: &str = env!("QUANTIZE_BUILD_OPT_LEVEL");

/// Jobs that run tract for less than this do not warn about the unoptimized build script.
pub const UNOPTIMIZED_WARNING_AFTER: Duration = Duration::from_secs(1);

/// Quantizes every model the package declares into `OUT_DIR`. Call it from `build.rs`:
///
/// ```no_run
/// fn main() {
///     quantize_build::run()
/// }
/// ```
///
/// Failures are reported to cargo as `cargo::error` lines (the build fails with the message),
/// never as a panic.
pub fn run() {
    Builder::new().run()
}

/// Configures a build-time quantization run; [`run`] is `Builder::new().run()`.
#[derive(Debug, Clone)]
pub struct Builder {
    manifest_path: Option<PathBuf>,
    out_dir: Option<PathBuf>,
    cache: Option<Cache>,
    models: Vec<DeclaredModel>,
    skip_manifest: bool,
    unoptimized_warning_after: Option<Duration>,
    opt_level: &'static str,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            manifest_path: None,
            out_dir: None,
            cache: None,
            models: Vec::new(),
            skip_manifest: false,
            unoptimized_warning_after: Some(UNOPTIMIZED_WARNING_AFTER),
            opt_level: OPT_LEVEL,
        }
    }
}

/// A model that was built.
#[derive(Debug, Clone)]
pub struct BuiltModel {
    /// What was written to `OUT_DIR/quantize/<name>.json`.
    pub manifest: Manifest,
    /// Whether it came from the cache.
    pub cache_hit: bool,
}

/// What a [`Builder::build`] did: the models built, the errors met, and what to tell cargo.
#[derive(Debug, Default)]
pub struct BuildOutput {
    /// The models written to `OUT_DIR`.
    pub models: Vec<BuiltModel>,
    /// One per failed model (or one for the project when the declarations are wrong).
    pub errors: Vec<Error>,
    /// Files whose change must rerun the build script.
    pub rerun_if_changed: Vec<PathBuf>,
    /// Messages for `cargo::warning`.
    pub warnings: Vec<String>,
    /// Progress lines (cache hits, timings), printed as plain build-script output.
    pub notes: Vec<String>,
}

impl BuildOutput {
    /// The `cargo::` directives, in order: reruns, warnings, errors.
    pub fn directives(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.rerun_if_changed {
            out.push(format!("cargo::rerun-if-changed={}", p.display()));
        }
        for w in &self.warnings {
            out.push(format!("cargo::warning={}", one_line(w)));
        }
        for e in &self.errors {
            out.push(format!("cargo::error={}", one_line(&e.to_string())));
        }
        out
    }
}

/// Cargo reads one directive per line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

impl Builder {
    /// A builder for the package being built: its Cargo.toml, `OUT_DIR`, and the cache of its
    /// target directory.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Reads declarations from this Cargo.toml instead of the package's own
    /// (`$CARGO_MANIFEST_DIR/Cargo.toml`). Relative paths in it resolve against its folder.
    pub fn manifest_path(mut self, path: impl Into<PathBuf>) -> Builder {
        self.manifest_path = Some(path.into());
        self
    }

    /// Ignores Cargo.toml's declarations: only models added with [`Builder::model`] are built.
    pub fn without_manifest(mut self) -> Builder {
        self.skip_manifest = true;
        self
    }

    /// Adds a model declared in code; `path` is relative to the manifest's folder. It replaces a
    /// model of the same name declared in Cargo.toml.
    pub fn model(mut self, name: impl Into<String>, path: impl Into<PathBuf>, recipe: Recipe) -> Builder {
        self.models.push(DeclaredModel::new(name, path, recipe));
        self
    }

    /// Writes results into `dir/quantize/` instead of `$OUT_DIR/quantize/`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Uses this cache instead of the target directory's.
    pub fn cache(mut self, cache: Cache) -> Builder {
        self.cache = Some(cache);
        self
    }

    /// When this build script is unoptimized, warn (once) about `[profile.*.build-override]` if
    /// a model that runs tract (calibration, verification) takes at least `after`
    /// ([`UNOPTIMIZED_WARNING_AFTER`] by default); `None` never warns.
    pub fn unoptimized_warning_after(mut self, after: Option<Duration>) -> Builder {
        self.unoptimized_warning_after = after;
        self
    }

    /// Behaves as if quantize-build had been compiled at `opt_level` (tests of the warning).
    #[doc(hidden)]
    pub fn assume_opt_level(mut self, opt_level: &'static str) -> Builder {
        self.opt_level = opt_level;
        self
    }

    /// Builds, then prints the cargo directives (and progress notes) on stdout for cargo.
    pub fn run(self) {
        let output = self.build();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for n in &output.notes {
            let _ = writeln!(out, "quantize-build: {}", one_line(n));
        }
        for d in output.directives() {
            let _ = writeln!(out, "{d}");
        }
    }

    /// Builds every model and returns what happened; prints nothing.
    pub fn build(self) -> BuildOutput {
        let mut output = BuildOutput::default();
        let env_path = |var: &'static str| std::env::var_os(var).map(PathBuf::from).ok_or(Error::NotABuildScript(var));
        let manifest_path = match self.manifest_path.clone() {
            Some(p) => Ok(p),
            None => env_path("CARGO_MANIFEST_DIR").map(|d| d.join("Cargo.toml")),
        };
        let manifest_path = match manifest_path {
            Ok(p) => p,
            Err(e) => {
                output.errors.push(e);
                return output;
            }
        };
        output.rerun_if_changed.push(manifest_path.clone());
        let out_dir = match self.out_dir.clone().map(Ok).unwrap_or_else(|| env_path("OUT_DIR")) {
            Ok(d) => d,
            Err(e) => {
                output.errors.push(e);
                return output;
            }
        };
        let project = if self.skip_manifest {
            Project::from_metadata(None, &manifest_path)
        } else {
            Project::from_manifest(&manifest_path)
        };
        let mut project = match project {
            Ok(p) => p,
            Err(e) => {
                output.errors.push(e);
                return output;
            }
        };
        for m in self.models {
            project.models.insert(m.name.clone(), m);
        }
        let cache = self.cache.unwrap_or_else(|| Cache::for_out_dir(&out_dir));
        // The index comes first: include_quantized! can then list the names even when a model fails.
        if let Err(e) =
            cache::write_index(&out_dir, &manifest_path, project.names().iter().map(|s| s.to_string()).collect())
        {
            output.errors.push(e);
            return output;
        }
        let mut seen = BTreeSet::new();
        let mut warned_opt_level = false;
        for model in project.models.values() {
            for input in model.inputs(&project.root) {
                if seen.insert(input.clone()) {
                    output.rerun_if_changed.push(input);
                }
            }
            match cache::quantize_into_cache(model, &project.root, &cache) {
                Ok((cached, job)) => {
                    for input in job.inputs {
                        if seen.insert(input.clone()) {
                            output.rerun_if_changed.push(input);
                        }
                    }
                    // A cache entry damaged after this run (truncated in place: the file in
                    // OUT_DIR is a link to it) runs this script again, which quantizes anew.
                    if seen.insert(cached.model_path.clone()) {
                        output.rerun_if_changed.push(cached.model_path.clone());
                    }
                    if let Some(damage) = &cached.replaced {
                        output.warnings.push(format!("{}: replaced a damaged cache entry: {damage}", model.name));
                    }
                    let r = &cached.record;
                    if cached.hit {
                        output.notes.push(format!("{}: cache hit {}", model.name, r.content_hash));
                    } else {
                        // What the figure is for: tract folds weight-only models back to float at
                        // load (smaller, float speed); static models pay off in ONNX Runtime.
                        let speed = if r.summary.calibration.is_some() {
                            "static: faster in ONNX Runtime, slower than float in tract"
                        } else {
                            "weight-only: smaller, float speed in tract"
                        };
                        output.notes.push(format!(
                            "{}: quantized in {:.2} s ({} -> {} bytes; {speed}), cached as {}",
                            model.name, r.seconds, r.bytes_before, r.bytes_after, r.content_hash
                        ));
                        if !warned_opt_level
                            && let Some(w) =
                                unoptimized_warning(model, r.seconds, self.opt_level, self.unoptimized_warning_after)
                        {
                            warned_opt_level = true;
                            output.warnings.push(w);
                        }
                    }
                    for s in &r.skipped {
                        output.warnings.push(format!("{}: weight '{}' left float: {}", model.name, s.name, s.reason));
                    }
                    match cache::install(model, &cached, &out_dir) {
                        Ok(manifest) => output.models.push(BuiltModel { manifest, cache_hit: cached.hit }),
                        Err(e) => output.errors.push(e),
                    }
                }
                Err(e) => output.errors.push(e),
            }
        }
        output
    }
}

/// The one warning an unoptimized build script gives, when `model` ran tract for `seconds`.
fn unoptimized_warning(
    model: &DeclaredModel,
    seconds: f64,
    opt_level: &str,
    after: Option<Duration>,
) -> Option<String> {
    let what = match (&model.recipe.calibration, &model.recipe.verify_data) {
        (Some(_), Some(_)) => "calibrating and verifying",
        (Some(_), None) => "calibrating",
        (None, Some(_)) => "verifying",
        (None, None) => return None,
    };
    let after = after?;
    if opt_level != "0" || seconds < after.as_secs_f64() {
        return None;
    }
    Some(format!(
        "{what} '{}' took {seconds:.1} s in a build script compiled without optimization; \
         add `[profile.dev.build-override] opt-level = 3` and `[profile.release.build-override] opt-level = 3` \
         to the workspace root's Cargo.toml to make it several times faster (the first build then compiles \
         quantize-rs and tract optimized once)",
        model.name
    ))
}
