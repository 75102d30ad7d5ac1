//! The command line of quantize-rs, answering both as `cargo quantize <command>` and as
//! `quantize-rs <command>`. It parses arguments and prints; every decision lives in the
//! `quantize-rs` library, so build scripts, this CLI and the library never disagree.
//!
//! Exit codes: 0 success, 1 the job failed, 2 usage error.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use quantize_rs::info::{ModelInfo, human_bytes};
use quantize_rs::{Model, Recipe, SaveOptions, quantize_model};

/// Quantize float32 ONNX models to INT8/INT4 QDQ models.
#[derive(Debug, Parser)]
#[command(name = "quantize-rs", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Quantize the weights of a model (weight-only QDQ).
    Quantize(QuantizeArgs),
    /// Describe a model: opsets, inputs/outputs, ops, weights, quantized parts.
    Info(InfoArgs),
}

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Text for people (on stdout for info, stderr for job reports).
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Options shared by every command that quantizes.
#[derive(Debug, Args, Clone)]
pub struct RecipeArgs {
    /// Bits per weight: 8 or 4.
    #[arg(long, default_value_t = 8)]
    bits: u8,
    /// Unsigned values (uint8/uint4) instead of signed ones.
    #[arg(long)]
    unsigned: bool,
    /// One scale per output channel (the default).
    #[arg(long, conflicts_with = "per_tensor")]
    per_channel: bool,
    /// One scale per tensor (keeps opset 10+ models at their opset).
    #[arg(long)]
    per_tensor: bool,
    /// One scale per N elements along each weight's reduction axis (needs opset 21).
    #[arg(long, value_name = "N")]
    block_size: Option<usize>,
    /// Symmetric weights, zero point 0 (the default).
    #[arg(long, conflicts_with = "asymmetric")]
    symmetric: bool,
    /// Asymmetric weights with a zero point per scale.
    #[arg(long)]
    asymmetric: bool,
    /// Store 4-bit weights as ONNX INT4/UINT4, two per byte (opset 21), instead of one per byte.
    #[arg(long)]
    native_int4: bool,
    /// Never quantize tensors or nodes matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Only quantize tensors or nodes matching one of these globs (repeatable).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Op types whose weights are quantized [default: Conv,ConvTranspose,Gemm,MatMul,Gather].
    #[arg(long, value_delimiter = ',', value_name = "OPS")]
    op_types: Vec<String>,
    /// Leave weights with fewer elements float.
    #[arg(long, value_name = "N")]
    min_elements: Option<u64>,
    /// Bits for tensors or nodes matching NAME (a glob): 4, 8, or 32 to keep float (repeatable).
    #[arg(long, value_name = "NAME=BITS")]
    layer_bits: Vec<String>,
    /// Write the model even when nothing was quantized.
    #[arg(long)]
    allow_empty: bool,
}

impl RecipeArgs {
    /// The recipe these flags describe, validated.
    pub fn recipe(&self) -> Result<Recipe, quantize_rs::Error> {
        let mut r = Recipe { bits: self.bits, unsigned: self.unsigned, ..Recipe::default() };
        r.per_channel = !self.per_tensor;
        r.block_size = self.block_size;
        r.symmetric = !self.asymmetric;
        r.native_int4 = self.native_int4;
        r.exclude = self.exclude.clone();
        r.include = self.include.clone();
        if !self.op_types.is_empty() {
            r.op_types = self.op_types.clone();
        }
        if let Some(n) = self.min_elements {
            r.min_elements = n;
        }
        let mut layer_bits = BTreeMap::new();
        for spec in &self.layer_bits {
            let bad = || quantize_rs::Error::Option {
                key: "--layer-bits".into(),
                message: format!("expected NAME=BITS (e.g. 'head.*=8'), got '{spec}'"),
            };
            let (name, bits) = spec.rsplit_once('=').ok_or_else(bad)?;
            let bits: u8 = bits.trim().parse().map_err(|_| bad())?;
            layer_bits.insert(name.to_string(), bits);
        }
        r.layer_bits = layer_bits;
        r.validate("--")?;
        Ok(r)
    }
}

#[derive(Debug, Args)]
struct QuantizeArgs {
    /// The float32 ONNX model.
    model: PathBuf,
    /// Where to write the quantized model.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Overwrite the output, even when it is the input model.
    #[arg(long)]
    force: bool,
    /// List every tensor in the report.
    #[arg(short, long)]
    verbose: bool,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
struct InfoArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Runs the CLI on `args` (including the program name) and returns the exit code. `as_cargo`
/// is true for the `cargo-quantize` binary, which cargo calls as `cargo-quantize quantize ...`.
pub fn main(mut args: Vec<OsString>, as_cargo: bool) -> i32 {
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
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

impl Cli {
    fn is_command(name: &str) -> bool {
        use clap::CommandFactory;
        Cli::command().get_subcommands().any(|c| c.get_name() == name) || name == "help"
    }
}

fn run(cli: Cli) -> Result<(), quantize_rs::Error> {
    match cli.command {
        Command::Quantize(a) => quantize(a),
        Command::Info(a) => info(a),
    }
}

fn quantize(a: QuantizeArgs) -> Result<(), quantize_rs::Error> {
    let recipe = a.recipe.recipe()?;
    let start = Instant::now();
    quantize_rs::model::check_output(&a.output, Some(&a.model), a.force)?;
    let mut model = Model::load(&a.model)?;
    let report = quantize_model(&mut model, &recipe)?;
    let opts = SaveOptions { force: true, ..SaveOptions::default() };
    model.save(&a.output, &opts)?;
    let seconds = start.elapsed().as_secs_f64();
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (bytes_in, bytes_out) = (size(&a.model), size(&a.output));
    match a.format {
        Format::Json => {
            let doc = serde_json::json!({
                "input": a.model,
                "output": a.output,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "size_ratio": bytes_out as f64 / bytes_in.max(1) as f64,
                "seconds": seconds,
                "recipe": recipe,
                "report": report,
            });
            println!("{}", serde_json::to_string_pretty(&doc).expect("serializable"));
        }
        Format::Text => {
            eprint!("{}", report.to_text(a.verbose));
            eprintln!(
                "wrote {}: {} -> {} ({:.3}x) in {:.2} s",
                a.output.display(),
                human_bytes(bytes_in),
                human_bytes(bytes_out),
                bytes_out as f64 / bytes_in.max(1) as f64,
                seconds
            );
        }
    }
    Ok(())
}

fn info(a: InfoArgs) -> Result<(), quantize_rs::Error> {
    let model = Model::load(&a.model)?;
    let info = ModelInfo::of(&model)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&info).expect("serializable")),
        Format::Text => print!("{}", info.to_text()),
    }
    Ok(())
}
