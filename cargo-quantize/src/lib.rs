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
use quantize_rs::pipeline::RunOptions;
use quantize_rs::{Model, Recipe, SaveOptions};

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
    /// Quantize weights and activations, calibrating activation ranges on sample data.
    Calibrate(Box<CalibrateArgs>),
    /// Describe a model: opsets, inputs/outputs, ops, weights, quantized parts.
    Info(InfoArgs),
}

/// How activation ranges are chosen.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Method {
    Minmax,
    Percentile,
    Entropy,
    Mse,
}

#[derive(Debug, Args)]
struct CalibrateArgs {
    /// The float32 ONNX model.
    model: PathBuf,
    /// Calibration samples: .npy, .npz, .safetensors, or a folder of images (with --image-size).
    #[arg(long)]
    data: PathBuf,
    /// Where to write the quantized model.
    #[arg(short, long)]
    output: PathBuf,
    /// Range method.
    #[arg(long, value_enum, default_value_t = Method::Minmax)]
    method: Method,
    /// Percentile kept by --method percentile.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Use at most N samples.
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// Symmetric int8 activations instead of asymmetric uint8.
    #[arg(long)]
    symmetric_activations: bool,
    /// Held-out samples to measure the result on (same formats as --data).
    #[arg(long)]
    verify_data: Option<PathBuf>,
    /// Fail when the output SNR on --verify-data is below this.
    #[arg(long, value_name = "DB")]
    min_snr_db: Option<f64>,
    /// Resize images in a --data folder to HxW.
    #[arg(long, value_name = "HxW")]
    image_size: Option<String>,
    /// Image layout: nchw or nhwc.
    #[arg(long, default_value = "nchw")]
    image_layout: String,
    /// Image channels: rgb, bgr or gray.
    #[arg(long, default_value = "rgb")]
    image_channels: String,
    /// Multiply pixels (0-255) by this first.
    #[arg(long, default_value_t = 1.0 / 255.0)]
    image_scale: f32,
    /// Per-channel mean subtracted after scaling (comma-separated).
    #[arg(long, value_delimiter = ',')]
    image_mean: Vec<f32>,
    /// Per-channel standard deviation divided by after the mean (comma-separated).
    #[arg(long, value_delimiter = ',')]
    image_std: Vec<f32>,
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

impl CalibrateArgs {
    fn recipe(&self) -> Result<Recipe, quantize_rs::Error> {
        use quantize_rs::recipe::{Calibration, CalibrationMethod, ImagePreprocess};
        let mut r = self.recipe.recipe()?;
        let image = match &self.image_size {
            None => None,
            Some(size) => {
                let bad = || quantize_rs::Error::Option {
                    key: "--image-size".into(),
                    message: format!("expected HxW such as 224x224, got '{size}'"),
                };
                let (h, w) = size.split_once('x').ok_or_else(bad)?;
                Some(ImagePreprocess {
                    size: [h.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?],
                    layout: self.image_layout.clone(),
                    channels: self.image_channels.clone(),
                    scale: self.image_scale,
                    mean: self.image_mean.clone(),
                    std: self.image_std.clone(),
                })
            }
        };
        let op_types = (!self.recipe.op_types.is_empty()).then(|| self.recipe.op_types.clone());
        r.calibration = Some(Calibration {
            data: self.data.clone(),
            method: match self.method {
                Method::Minmax => CalibrationMethod::Minmax,
                Method::Percentile => CalibrationMethod::Percentile,
                Method::Entropy => CalibrationMethod::Entropy,
                Method::Mse => CalibrationMethod::Mse,
            },
            percentile: self.percentile,
            samples: self.samples,
            symmetric_activations: self.symmetric_activations,
            op_types,
            target_snr_db: None,
            image,
        });
        r.verify_data = self.verify_data.clone();
        r.min_snr_db = self.min_snr_db;
        r.validate("--")?;
        Ok(r)
    }
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
        Command::Calibrate(a) => calibrate(*a),
        Command::Info(a) => info(a),
    }
}

fn quantize(a: QuantizeArgs) -> Result<(), quantize_rs::Error> {
    let recipe = a.recipe.recipe()?;
    run_job(&a.model, &a.output, &recipe, a.force, a.verbose, a.format)
}

fn calibrate(a: CalibrateArgs) -> Result<(), quantize_rs::Error> {
    let recipe = a.recipe()?;
    run_job(&a.model, &a.output, &recipe, a.force, a.verbose, a.format)
}

fn run_job(
    input: &PathBuf,
    output: &PathBuf,
    recipe: &Recipe,
    force: bool,
    verbose: bool,
    format: Format,
) -> Result<(), quantize_rs::Error> {
    use std::io::IsTerminal;
    let start = Instant::now();
    quantize_rs::model::check_output(output, Some(input), force)?;
    let model = Model::load(input)?;
    // Data paths on the command line are relative to the working directory.
    let opts = RunOptions { progress: format == Format::Text && std::io::stderr().is_terminal() };
    let outcome = quantize_rs::pipeline::run_with(model, recipe, std::path::Path::new("."), &opts)?;
    outcome.model.save(output, &SaveOptions { force: true, ..SaveOptions::default() })?;
    let seconds = start.elapsed().as_secs_f64();
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (bytes_in, bytes_out) = (size(input), size(output));
    let ratio = bytes_out as f64 / bytes_in.max(1) as f64;
    match format {
        Format::Json => {
            let doc = serde_json::json!({
                "input": input,
                "output": output,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "size_ratio": ratio,
                "seconds": seconds,
                "recipe": recipe,
                "report": outcome.report,
                "calibration": outcome.calibration,
                "verification": outcome.verification,
            });
            println!("{}", serde_json::to_string_pretty(&doc).expect("serializable"));
        }
        Format::Text => {
            eprint!("{}", outcome.report.to_text(verbose));
            if let Some(c) = &outcome.calibration {
                eprintln!(
                    "calibrated {} activation(s) of {} node(s) as {} with {:?} on {} sample(s) in {:.2} s; {} int32 bias(es)",
                    c.activations.len(),
                    c.quantized_nodes,
                    c.activation_type,
                    c.method,
                    c.samples,
                    c.run_seconds,
                    c.int32_biases
                );
                for (node, why) in &c.skipped_nodes {
                    eprintln!("  left float: {node}: {why}");
                }
            }
            if let Some(v) = &outcome.verification {
                eprintln!(
                    "verified on {} held-out sample(s): SNR {:.2} dB, cosine {:.6}, max abs error {:.4}",
                    v.samples, v.snr_db, v.cosine, v.max_abs
                );
            }
            eprintln!(
                "wrote {}: {} -> {} ({ratio:.3}x) in {seconds:.2} s",
                output.display(),
                human_bytes(bytes_in),
                human_bytes(bytes_out),
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
