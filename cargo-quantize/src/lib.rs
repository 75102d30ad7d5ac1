//! The command line of quantize-rs, answering both as `cargo quantize <command>` and as
//! `quantize-rs <command>`. It parses arguments and prints; the decisions live in the
//! `quantize-rs` library (quantizing, [`quantize_rs::validate`], [`quantize_rs::benchmark`]) and
//! in `quantize-build` (declarations and the build cache), so build scripts, this CLI and the
//! library never disagree. The modules public here are what the CLI adds: config files
//! ([`config`]) and running many jobs at once ([`jobs`]).
//!
//! Exit codes: 0 success, 1 the job failed (or a check / gate failed), 2 usage error.
//! With `--format json`, stdout holds exactly one JSON document (also on failure:
//! `{"ok": false, "error": "..."}` when the command failed before it had a report).

mod args;
mod commands;
pub mod config;
pub mod jobs;
mod workspace;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

pub use args::{Format, RecipeArgs};

/// Quantize float32 ONNX models to INT8/INT4 QDQ models. Without a command: quantize every
/// model the workspace declares in `[package.metadata.quantize]` into the build cache.
#[derive(Debug, Parser)]
#[command(name = "quantize-rs", version, about, propagate_version = true, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    build: workspace::BuildArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Quantize the weights of a model (weight-only QDQ).
    Quantize(args::QuantizeArgs),
    /// Quantize weights and activations, calibrating activation ranges on sample data.
    Calibrate(Box<args::CalibrateArgs>),
    /// Describe a model: opsets, inputs/outputs, ops, weights, quantized parts.
    Info(commands::InfoArgs),
    /// Check a quantized model against its original: structure, types, and that it runs.
    Validate(commands::ValidateArgs),
    /// Compare sizes and tract latency of an original and a quantized model.
    Benchmark(commands::BenchmarkArgs),
    /// Quantize many models into one folder, in parallel.
    Batch(commands::BatchArgs),
    /// Run the jobs a YAML or TOML config file describes.
    Config(commands::ConfigArgs),
    /// Quantize every model the workspace declares into the build cache (the default command).
    Build(workspace::BuildArgs),
}

impl Command {
    fn format(&self) -> Format {
        match self {
            Command::Quantize(a) => a.format,
            Command::Calibrate(a) => a.format,
            Command::Info(a) => a.format,
            Command::Validate(a) => a.format,
            Command::Benchmark(a) => a.format,
            Command::Batch(a) => a.format(),
            Command::Config(a) => a.format(),
            Command::Build(a) => a.format,
        }
    }
}

/// Why a command did not succeed, and its exit code.
#[derive(Debug)]
pub struct Failure {
    /// 1 the job failed, 2 usage error.
    pub code: i32,
    /// The one-line message for stderr; `None` when the command already reported the failure.
    pub message: Option<String>,
}

impl Failure {
    /// A usage error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure { code: 2, message: Some(message.into()) }
    }
    /// A failed job (exit code 1).
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure { code: 1, message: Some(message.into()) }
    }
    /// A failure the command has already reported in full (exit code 1).
    pub fn reported() -> Failure {
        Failure { code: 1, message: None }
    }
}

impl From<quantize_rs::Error> for Failure {
    fn from(e: quantize_rs::Error) -> Failure {
        match e {
            // A bad flag value is a usage error.
            quantize_rs::Error::Option { .. } => Failure::usage(e.to_string()),
            e => Failure::failed(e.to_string()),
        }
    }
}

impl From<quantize_build::Error> for Failure {
    fn from(e: quantize_build::Error) -> Failure {
        Failure::failed(e.to_string())
    }
}

/// Runs the CLI on `args` (including the program name) and returns the exit code. `as_cargo`
/// is true for the `cargo-quantize` binary, which cargo calls as `cargo-quantize quantize ...`.
pub fn main(mut args: Vec<OsString>, as_cargo: bool) -> i32 {
    tune_allocator();
    if as_cargo && args.len() > 1 && args[1] == "quantize" {
        // `cargo quantize X` runs `cargo-quantize quantize X`: drop cargo's copy of the name,
        // unless what follows is a model path (then it is `cargo-quantize quantize MODEL`).
        let next = args.get(2).and_then(|a| a.to_str()).unwrap_or("");
        let is_command = next.is_empty() || next.starts_with('-') || Cli::is_command(next);
        if is_command {
            args.remove(1);
        }
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let format = cli.command.as_ref().map(Command::format).unwrap_or(cli.build.format);
    match run(cli) {
        Ok(()) => 0,
        Err(f) => {
            if let Some(m) = &f.message {
                let m = quantize_rs::without_backtrace(&m.replace(['\n', '\r'], " "));
                eprintln!("error: {m}");
                if format == Format::Json {
                    out(&format!("{}\n", serde_json::json!({ "ok": false, "error": m })));
                }
            }
            f.code
        }
    }
}

impl Cli {
    fn is_command(name: &str) -> bool {
        use clap::CommandFactory;
        Cli::command().get_subcommands().any(|c| c.get_name() == name) || name == "help"
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        None => workspace::build(cli.build),
        Some(Command::Build(a)) => workspace::build(a),
        Some(Command::Quantize(a)) => commands::quantize(a),
        Some(Command::Calibrate(a)) => commands::calibrate(*a),
        Some(Command::Info(a)) => commands::info(a),
        Some(Command::Validate(a)) => commands::validate(a),
        Some(Command::Benchmark(a)) => commands::benchmark(a),
        Some(Command::Batch(a)) => commands::batch(a),
        Some(Command::Config(a)) => commands::config(a),
    }
}

/// Prints one JSON document on stdout.
pub(crate) fn print_json(doc: &serde_json::Value) {
    out(&format!("{}\n", serde_json::to_string_pretty(doc).expect("JSON values serialize")));
}

/// Writes to stdout; a closed pipe (`quantize-rs info m.onnx | head`) is not an error worth a panic.
pub(crate) fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush());
}

/// Keeps buffers up to 64 MiB in the allocator's heap when freed, instead of glibc's default of
/// mapping and unmapping each one (its threshold only grows to the size last freed, and trimming
/// hands the heap's top back): a job makes and drops a few megabyte-sized buffers per weight (the
/// floats, their grouped copy, the values), which were page-faulted in afresh for every tensor.
/// What the process holds at its peak is the same; the next tensor's buffers reuse its pages.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: `mallopt` only sets two of the allocator's parameters; it is called before the
    // job's threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Other allocators keep their own counsel.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
