//! `batch` (many models, one recipe) and `config` (the jobs of a YAML/TOML file): both build a
//! list of [`Job`]s and hand it to [`crate::jobs::run_jobs`].

use std::path::PathBuf;

use clap::Args;

use crate::args::RecipeArgs;
use crate::jobs::{Job, RunJobsOptions, Summary, check_distinct_outputs, default_jobs, run_jobs};
use crate::{Failure, Format, print_json};

/// Options shared by `batch` and `config` for running jobs.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Jobs run at once [default: the number of cores].
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
    /// Keep going after a failure (the exit code is still 1).
    #[arg(long)]
    continue_on_error: bool,
    /// Allow an output to overwrite its own input model.
    #[arg(long)]
    force: bool,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct BatchArgs {
    /// The float32 ONNX models.
    #[arg(required = true, value_name = "MODELS")]
    models: Vec<PathBuf>,
    /// The folder the quantized models go to, each as <DIR>/<file stem>.onnx. It must exist.
    #[arg(short, long, value_name = "DIR")]
    output_dir: PathBuf,
    /// Leave a model alone when its output already exists.
    #[arg(long)]
    skip_existing: bool,
    #[command(flatten)]
    recipe: RecipeArgs,
    #[command(flatten)]
    run: RunArgs,
}

impl BatchArgs {
    pub(crate) fn format(&self) -> Format {
        self.run.format
    }
}

pub(crate) fn batch(a: BatchArgs) -> Result<(), Failure> {
    let recipe = a.recipe.recipe()?;
    crate::jobs::ensure_output_dir(&a.output_dir)?;
    let jobs: Vec<Job> = a
        .models
        .iter()
        .map(|input| {
            let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Job {
                key: input.display().to_string(),
                input: input.clone(),
                output: a.output_dir.join(format!("{stem}.onnx")),
                recipe: recipe.clone(),
                base_dir: PathBuf::from("."),
                skip_existing: a.skip_existing,
                // The folder was made up front.
                create_dir: false,
            }
        })
        .collect();
    check_distinct_outputs(&jobs).map_err(Failure::usage)?;
    run_and_report(&jobs, &a.run, serde_json::json!({ "output_dir": a.output_dir }))
}

fn run_and_report(jobs: &[Job], run: &RunArgs, extra: serde_json::Value) -> Result<(), Failure> {
    if run.jobs == Some(0) {
        return Err(Failure::usage("--jobs: must be at least 1"));
    }
    let opts = RunJobsOptions {
        jobs: run.jobs.unwrap_or_else(default_jobs),
        continue_on_error: run.continue_on_error,
        force: run.force,
        progress: true,
    };
    let results = run_jobs(jobs, &opts);
    let summary = Summary::of(&results);
    eprintln!("{}", summary.to_text());
    if run.format == Format::Json {
        let mut doc = serde_json::json!({
            "ok": summary.failed == 0,
            "summary": summary,
            "jobs": results,
        });
        if let (Some(d), serde_json::Value::Object(e)) = (doc.as_object_mut(), extra) {
            d.extend(e);
        }
        print_json(&doc);
    }
    if summary.failed > 0 { Err(Failure::reported()) } else { Ok(()) }
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// The config file: .yaml, .yml or .toml.
    file: PathBuf,
    /// Print the resolved jobs (input -> output, recipe) and stop.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    run: RunArgs,
}

impl ConfigArgs {
    pub(crate) fn format(&self) -> Format {
        self.run.format
    }
}

pub(crate) fn config(a: ConfigArgs) -> Result<(), Failure> {
    let config = crate::config::load(&a.file).map_err(|e| Failure::usage(e.0))?;
    if a.dry_run {
        match a.format() {
            Format::Json => print_json(&serde_json::json!({
                "ok": true,
                "config": config.path,
                "dry_run": true,
                "jobs": config.jobs,
            })),
            Format::Text => {
                let mut text = String::new();
                for j in &config.jobs {
                    text.push_str(&format!(
                        "{}: {} -> {}{}  [{}]\n",
                        j.key,
                        j.input.display(),
                        j.output.display(),
                        if j.skip_existing { " (skip if it exists)" } else { "" },
                        scheme(&j.recipe)
                    ));
                }
                text.push_str(&format!("{} job(s); nothing was run (--dry-run)\n", config.jobs.len()));
                crate::out(&text);
            }
        }
        return Ok(());
    }
    run_and_report(&config.jobs, &a.run, serde_json::json!({ "config": config.path }))
}

/// `int8 per-channel symmetric, weight-only`-style summary of a recipe, plus its non-default keys.
fn scheme(r: &quantize_rs::Recipe) -> String {
    let mut s = r.scheme();
    s.push_str(match &r.calibration {
        None => ", weight-only",
        Some(_) => ", activations calibrated",
    });
    let defaults = serde_json::to_value(quantize_rs::Recipe::default()).expect("serializable");
    let this = serde_json::to_value(r).expect("serializable");
    if let (Some(d), Some(t)) = (defaults.as_object(), this.as_object()) {
        let skip = ["bits", "unsigned", "per-channel", "block-size", "symmetric", "calibration"];
        for (k, v) in t {
            if !skip.contains(&k.as_str()) && d.get(k) != Some(v) {
                s.push_str(&format!(", {k}={v}"));
            }
        }
    }
    s
}
