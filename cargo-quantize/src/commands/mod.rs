//! One function per command: build the request from the arguments, call the library, print.

mod batch;
mod check;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use quantize_rs::human_bytes;
use quantize_rs::{Model, ModelInfo, Recipe, RunOptions, SaveOptions};

pub(crate) use batch::{BatchArgs, ConfigArgs, batch, config};
pub(crate) use check::{BenchmarkArgs, ValidateArgs, benchmark, validate};

use crate::args::{CalibrateArgs, QuantizeArgs};
use crate::{Failure, Format, print_json};

pub(crate) fn quantize(a: QuantizeArgs) -> Result<(), Failure> {
    let recipe = a.recipe()?;
    let output = output_or_default(&a.model, a.output, "quantized", a.force)?;
    run_job(&a.model, &output, &recipe, a.force, a.verbose, a.format)
}

pub(crate) fn calibrate(a: CalibrateArgs) -> Result<(), Failure> {
    let recipe = a.recipe()?;
    let output = output_or_default(&a.model, a.output.clone(), "calibrated", a.force)?;
    run_job(&a.model, &output, &recipe, a.force, a.verbose, a.format)
}

/// The `-o` path, or without one `<stem>_<suffix>.onnx` beside the input (as the original
/// `quantize-rs` wrote), which is never written over an existing file unless `--force`.
fn output_or_default(input: &Path, output: Option<PathBuf>, suffix: &str, force: bool) -> Result<PathBuf, Failure> {
    if let Some(output) = output {
        return Ok(output);
    }
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let path = input.with_file_name(format!("{stem}_{suffix}.onnx"));
    if !force && path.symlink_metadata().is_ok() {
        return Err(Failure::failed(format!(
            "{} already exists (the default output without -o); pass --force to overwrite it, or -o to write elsewhere",
            path.display()
        )));
    }
    Ok(path)
}

fn run_job(
    input: &PathBuf,
    output: &PathBuf,
    recipe: &Recipe,
    force: bool,
    verbose: bool,
    format: Format,
) -> Result<(), Failure> {
    use std::io::IsTerminal;
    let start = Instant::now();
    quantize_rs::onnx::model::check_output(output, Some(input), force)?;
    let model = Model::load(input)?;
    // Data paths on the command line are relative to the working directory.
    let opts = RunOptions {
        progress: format == Format::Text && std::io::stderr().is_terminal(),
        scratch_dir: output.parent().map(Path::to_path_buf),
        ..RunOptions::default()
    };
    let outcome = quantize_rs::run_with(model, recipe, Path::new("."), &opts)?;
    outcome.model.save(output, &SaveOptions { force: true, ..SaveOptions::default() })?;
    let seconds = start.elapsed().as_secs_f64();
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    // External data counts: the input's as decoded, the output's file beside it.
    let bytes_in = size(input).max(outcome.bytes_in);
    let mut bytes_out = size(output);
    if outcome.bytes_out > quantize_rs::onnx::model::PROTOBUF_LIMIT {
        let mut data = output.clone().into_os_string();
        data.push(".data");
        bytes_out += size(&PathBuf::from(data));
    }
    let ratio = bytes_out as f64 / bytes_in.max(1) as f64;
    let peak = quantize_rs::peak_memory();
    match format {
        Format::Json => print_json(&serde_json::json!({
            "ok": true,
            "input": input,
            "output": output,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "size_ratio": ratio,
            "seconds": seconds,
            "peak_memory_bytes": peak,
            "recipe": recipe,
            "report": outcome.report,
            "calibration": outcome.calibration,
            "verification": outcome.verification,
        })),
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
                if c.bias_corrected > 0 {
                    eprintln!(
                        "  {} bias(es) corrected for the mean shift of their quantized weights",
                        c.bias_corrected
                    );
                }
                if !c.reduced_range_weights.is_empty() {
                    eprintln!(
                        "  {} integer-kernel weight(s) kept to 7 bits so x86 kernels without VNNI cannot saturate (--full-range-weights to keep 8)",
                        c.reduced_range_weights.len()
                    );
                }
                for (node, why) in &c.skipped_nodes {
                    eprintln!("  left float: {node}: {why}");
                }
                if let Some(t) = &c.target {
                    eprintln!(
                        "target {} dB: all activations quantized gave {:.2} dB; returned {} of {} to float ({} trial(s)) -> {:.2} dB",
                        t.target_db,
                        t.all_quantized_db,
                        t.returned_to_float.len(),
                        c.activations.len() + t.returned_to_float.len(),
                        t.trials.len(),
                        t.reached_db
                    );
                    for name in &t.returned_to_float {
                        eprintln!("  float: {name}");
                    }
                    if let Some(w) = quantize_rs::few_samples_warning(t.effective_samples) {
                        eprintln!("  {w}");
                    }
                    if !t.weights_to_8_bits.is_empty() {
                        eprintln!(
                            "  the 4-bit weights alone missed the target: {} of {} stepped to 8 bits first",
                            t.weights_to_8_bits.len(),
                            t.four_bit_alone_db.len()
                        );
                        for name in &t.weights_to_8_bits {
                            eprintln!("  8-bit weight: {name}");
                        }
                    }
                    if !t.weights_returned_to_float.is_empty() {
                        eprintln!(
                            "  the quantized weights alone missed the target: {} of {} weight(s) returned to float first",
                            t.weights_returned_to_float.len(),
                            t.weight_alone_db.len()
                        );
                        for name in &t.weights_returned_to_float {
                            eprintln!("  float weight: {name}");
                        }
                    }
                }
            }
            if let Some(v) = &outcome.verification {
                eprintln!(
                    "verified on {} held-out sample(s): worst float output SNR {:.2} dB, cosine {:.6}, max abs error {:.4}{}",
                    v.samples,
                    v.snr_db,
                    v.cosine,
                    v.max_abs,
                    if v.exact { "" } else { "; an integer output DIFFERS" }
                );
                if v.outputs.len() > 1 {
                    eprint!("{}", quantize_rs::outputs_text(v));
                }
            }
            let peak = peak.map(|p| format!(", peak memory {}", human_bytes(p))).unwrap_or_default();
            eprintln!(
                "wrote {}: {} -> {} ({ratio:.3}x) in {seconds:.2} s{peak}",
                output.display(),
                human_bytes(bytes_in),
                human_bytes(bytes_out),
            );
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

pub(crate) fn info(a: InfoArgs) -> Result<(), Failure> {
    let model = Model::load(&a.model)?;
    let info = ModelInfo::of(&model)?;
    match a.format {
        Format::Json => {
            let mut doc = serde_json::to_value(&info).expect("serializable");
            doc["ok"] = true.into();
            print_json(&doc)
        }
        Format::Text => crate::out(&info.to_text()),
    }
    Ok(())
}
