//! `cargo quantize` with no command (or `build`): every model that a workspace package declares
//! in `[package.metadata.quantize]`, run into the cache that build scripts use
//! (`<target-dir>/quantize-cache`), so a later `cargo build` (any profile) finds it there.
//! `--check` only looks the models up: it fails when one is missing or stale (its model, data
//! or recipe changed since it was quantized) and quantizes nothing.

use std::path::PathBuf;
use std::time::Instant;

use cargo_metadata::MetadataCommand;
use clap::Args;
use quantize_build::{Cache, DeclaredModel, Project, cache};
use quantize_rs::human_bytes;
use serde::Serialize;

use crate::jobs::{default_jobs, parallel};
use crate::{Failure, Format, print_json};

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// Quantize nothing: fail if a declared model is missing from the cache or stale.
    #[arg(long)]
    check: bool,
    /// Only this workspace package (repeatable).
    #[arg(short, long, value_name = "NAME")]
    package: Vec<String>,
    /// The workspace's (or a package's) Cargo.toml [default: found from the current folder].
    #[arg(long, value_name = "PATH")]
    manifest_path: Option<PathBuf>,
    /// Models quantized at once [default: the number of cores].
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// What happened to one declared model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Status {
    /// Already in the cache, unchanged.
    Cached,
    /// Quantized now and stored in the cache.
    Quantized,
    /// Not in the cache (`--check`): never quantized, or its inputs changed since.
    Missing,
    /// The declaration or the job failed.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
struct ModelResult {
    package: String,
    /// The declared name (`include_quantized!("name")`); empty when the package's declarations
    /// could not be read.
    name: String,
    manifest_path: PathBuf,
    /// The float model as declared.
    path: PathBuf,
    status: Status,
    /// The cache key (content hash).
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The cached model file.
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_model: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_after: Option<u64>,
    /// Seconds this run spent on it.
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// What was wrong with the damaged cache entry this run replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    replaced: Option<String>,
}

impl ModelResult {
    /// A result that has failed until the job says otherwise.
    fn failed(package: &str, name: String, manifest_path: PathBuf, path: PathBuf) -> ModelResult {
        ModelResult {
            package: package.to_string(),
            name,
            manifest_path,
            path,
            status: Status::Failed,
            key: None,
            cached_model: None,
            bytes_before: None,
            bytes_after: None,
            seconds: 0.0,
            error: None,
            replaced: None,
        }
    }

    fn line(&self) -> String {
        let who = if self.name.is_empty() {
            format!("package {}", self.package)
        } else {
            format!("{} ({})", self.name, self.package)
        };
        let key = self.key.as_deref().map(|k| &k[..k.len().min(12)]).unwrap_or("");
        let sizes = match (self.bytes_before, self.bytes_after) {
            (Some(a), Some(b)) => format!("{} -> {}", human_bytes(a), human_bytes(b)),
            _ => String::new(),
        };
        match self.status {
            Status::Cached => format!("{who}: cached {key}, {sizes}"),
            Status::Quantized => format!(
                "{who}: quantized in {:.2} s, {sizes}, cached as {key}{}",
                self.seconds,
                self.replaced.as_deref().map(|d| format!(" (replacing a damaged entry: {d})")).unwrap_or_default()
            ),
            Status::Missing => format!(
                "{who}: MISSING: no cache entry {key} (never quantized, or {} or its data or recipe changed); run cargo quantize",
                self.path.display()
            ),
            Status::Failed => format!("{who}: FAILED: {}", self.error.as_deref().unwrap_or("")),
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct Counts {
    total: usize,
    cached: usize,
    quantized: usize,
    missing: usize,
    failed: usize,
}

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

pub(crate) fn build(a: BuildArgs) -> Result<(), Failure> {
    if a.jobs == Some(0) {
        return Err(Failure::usage("--jobs: must be at least 1"));
    }
    let mut cmd = MetadataCommand::new();
    cmd.no_deps().other_options(vec!["--offline".to_string()]);
    if let Some(p) = &a.manifest_path {
        cmd.manifest_path(p);
    }
    let metadata = cmd.exec().map_err(|e| {
        Failure::failed(format!(
            "`cargo metadata` failed: {}; run cargo quantize inside a cargo project or pass --manifest-path",
            one_line(&e.to_string())
        ))
    })?;
    let packages = metadata.workspace_packages();
    for wanted in &a.package {
        if !packages.iter().any(|p| p.name.as_str() == wanted.as_str()) {
            let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
            return Err(Failure::usage(format!(
                "--package {wanted}: no such package in the workspace (it has {})",
                names.join(", ")
            )));
        }
    }
    let cache = Cache::in_target_dir(metadata.target_directory.as_std_path());
    let mut work: Vec<(String, PathBuf, DeclaredModel)> = vec![];
    let mut results: Vec<ModelResult> = vec![];
    for p in packages {
        if !a.package.is_empty() && !a.package.iter().any(|w| w.as_str() == p.name.as_str()) {
            continue;
        }
        let Some(q) = p.metadata.get("quantize").filter(|v| !v.is_null()) else { continue };
        let manifest = p.manifest_path.as_std_path().to_path_buf();
        match Project::from_metadata(Some(q), &manifest) {
            Ok(project) => {
                for m in project.models.into_values() {
                    work.push((p.name.to_string(), project.root.clone(), m));
                }
            }
            Err(e) => results.push(ModelResult {
                error: Some(e.to_string()),
                ..ModelResult::failed(&p.name, String::new(), manifest, PathBuf::new())
            }),
        }
    }
    for r in &results {
        eprintln!("{}", r.line());
    }
    let threads = a.jobs.unwrap_or_else(default_jobs);
    let check = a.check;
    let done: Vec<ModelResult> = parallel(work.len(), threads, |i| {
        let (package, root, model) = &work[i];
        let r = one(package, root, model, &cache, check);
        eprintln!("{}", r.line());
        r
    });
    results.extend(done);
    let mut counts = Counts { total: results.len(), ..Counts::default() };
    for r in &results {
        match r.status {
            Status::Cached => counts.cached += 1,
            Status::Quantized => counts.quantized += 1,
            Status::Missing => counts.missing += 1,
            Status::Failed => counts.failed += 1,
        }
    }
    if results.is_empty() {
        eprintln!("no workspace package declares models in [package.metadata.quantize.models.NAME]");
    } else {
        eprintln!(
            "{} model(s): {} cached, {} quantized, {} missing, {} failed (cache: {})",
            counts.total,
            counts.cached,
            counts.quantized,
            counts.missing,
            counts.failed,
            // Relative to the working directory when under it, as users type paths.
            std::env::current_dir()
                .ok()
                .and_then(|cwd| cache.dir().strip_prefix(cwd).ok().map(|p| p.display().to_string()))
                .unwrap_or_else(|| cache.dir().display().to_string())
        );
    }
    let ok = counts.failed == 0 && counts.missing == 0;
    if a.format == Format::Json {
        print_json(&serde_json::json!({
            "ok": ok,
            "check": check,
            "workspace_root": metadata.workspace_root,
            "cache": cache.dir(),
            "summary": counts,
            "models": results,
        }));
    }
    if ok { Ok(()) } else { Err(Failure::reported()) }
}

fn one(package: &str, root: &std::path::Path, model: &DeclaredModel, cache: &Cache, check: bool) -> ModelResult {
    let start = Instant::now();
    let mut r = ModelResult::failed(package, model.name.clone(), root.join("Cargo.toml"), model.path.clone());
    let outcome = if check {
        cache::prepare(model, root).and_then(|job| {
            r.key = Some(job.key.clone());
            cache.lookup(&job.key)
        })
    } else {
        cache::quantize_into_cache(model, root, cache).map(|(c, _)| Some(c))
    };
    match outcome {
        Ok(Some(c)) => {
            r.status = if c.hit { Status::Cached } else { Status::Quantized };
            r.key = Some(c.record.content_hash.clone());
            r.cached_model = Some(c.model_path.clone());
            r.bytes_before = Some(c.record.bytes_before);
            r.bytes_after = Some(c.record.bytes_after);
            r.replaced = c.replaced;
        }
        Ok(None) => r.status = Status::Missing,
        Err(e) => r.error = Some(quantize_rs::without_backtrace(&one_line(&e.to_string()))),
    }
    r.seconds = start.elapsed().as_secs_f64();
    r
}
