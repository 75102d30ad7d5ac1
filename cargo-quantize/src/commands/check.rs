//! `validate` and `benchmark`: print what `quantize_rs::validate` and `quantize_rs::benchmark` found.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use quantize_rs::Latency;
use quantize_rs::human_bytes;
use quantize_rs::{Benchmark, BenchmarkOptions, Runtime, Status, ValidateOptions, Validation};

use crate::{Failure, Format, print_json};

/// The two models `validate` and `benchmark` compare, and what they are run on.
#[derive(Debug, Args)]
struct ModelPair {
    /// The float model the quantized one was made from.
    original: PathBuf,
    /// The quantized model.
    quantized: PathBuf,
    /// Samples to run both models on (.npy, .npz, .safetensors; benchmark times the first);
    /// without, inputs are synthesized from the declared input shapes (symbolic sizes as 1).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Shape of a synthesized input instead of its declared one, e.g. x=1,3,48,192 (repeatable).
    #[arg(long, value_name = "NAME=DIMS", value_parser = input_shape)]
    input_shape: Vec<(String, Vec<usize>)>,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    #[command(flatten)]
    pair: ModelPair,
    /// Use at most N samples of --data.
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// Also compare every dequantized weight with the original float weight.
    #[arg(long)]
    detailed: bool,
    /// Fail when the worst float output's SNR on --data is below this (integer outputs must
    /// match exactly regardless).
    #[arg(long, value_name = "DB")]
    min_snr_db: Option<f64>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

pub(crate) fn validate(a: ValidateArgs) -> Result<(), Failure> {
    if a.min_snr_db.is_some() && a.pair.data.is_none() {
        return Err(Failure::usage("--min-snr-db needs --data: held-out samples to measure the outputs on"));
    }
    if a.samples == Some(0) {
        return Err(Failure::usage("--samples: must be at least 1"));
    }
    let opts = ValidateOptions {
        data: a.pair.data.clone(),
        image: None,
        samples: a.samples,
        detailed: a.detailed,
        min_snr_db: a.min_snr_db,
        input_shapes: a.pair.input_shape.iter().cloned().collect(),
    };
    let v = quantize_rs::validate_files(&a.pair.original, &a.pair.quantized, &opts)?;
    match a.format {
        Format::Json => {
            let mut doc = serde_json::to_value(&v).expect("serializable");
            doc["ok"] = v.passed.into();
            doc["original"] = serde_json::json!(a.pair.original);
            doc["quantized"] = serde_json::json!(a.pair.quantized);
            print_json(&doc);
        }
        Format::Text => crate::out(&validation_text(&a, &v)),
    }
    if v.passed { Ok(()) } else { Err(Failure::reported()) }
}

/// `NAME=D0,D1,...`.
fn input_shape(s: &str) -> Result<(String, Vec<usize>), String> {
    let bad = || format!("expected NAME=DIMS such as x=1,3,224,224, got '{s}'");
    let (name, dims) = s.rsplit_once('=').ok_or_else(bad)?;
    let dims: Vec<usize> =
        dims.split(',').map(|d| d.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    if name.is_empty() || dims.contains(&0) {
        return Err(bad());
    }
    Ok((name.to_string(), dims))
}

fn db(x: f64) -> String {
    if x.is_infinite() && x > 0.0 { "inf".into() } else { format!("{x:.2}") }
}

fn validation_text(a: &ValidateArgs, v: &Validation) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "validate {} against {}", a.pair.quantized.display(), a.pair.original.display());
    for c in &v.checks {
        let status = match c.status {
            Status::Passed => "passed",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        };
        let _ = writeln!(s, "  {:<13} {status}", c.name);
        const SHOWN: usize = 10;
        for p in c.problems.iter().take(SHOWN) {
            let _ = writeln!(s, "      {p}");
        }
        if c.problems.len() > SHOWN {
            let _ = writeln!(s, "      ... and {} more (--format json lists all)", c.problems.len() - SHOWN);
        }
        if let Some(n) = &c.note {
            let _ = writeln!(s, "      ({n})");
        }
    }
    if let Some(o) = &v.verification {
        let _ = writeln!(s, "outputs on {} input set(s) from {}:", v.samples, v.inputs.as_deref().unwrap_or("?"));
        s.push_str(&quantize_rs::outputs_text(o));
    }
    if a.detailed {
        let _ = writeln!(s, "weights ({} dequantized, worst first):", v.weights.len());
        let mut weights: Vec<_> = v.weights.iter().collect();
        weights.sort_by(|a, b| a.snr_db.total_cmp(&b.snr_db));
        for w in weights {
            let _ = writeln!(
                s,
                "  {:<32} {:<5} {:<10} {:>9} elements  SNR {:>7} dB  max abs {:.5}",
                w.name,
                w.stored_as,
                w.granularity,
                w.elements,
                db(w.snr_db),
                w.max_abs
            );
        }
    }
    let failed = v.checks.iter().filter(|c| c.status != Status::Passed).count();
    if v.passed {
        let _ = writeln!(s, "PASSED: {} checks", v.checks.len());
    } else {
        let _ = writeln!(s, "FAILED: {failed} of {} checks did not pass", v.checks.len());
    }
    s
}

#[derive(Debug, Args)]
pub(crate) struct BenchmarkArgs {
    #[command(flatten)]
    pair: ModelPair,
    /// Timed runs per model.
    #[arg(long, default_value_t = 20, value_name = "N")]
    runs: usize,
    /// Untimed runs per model before timing.
    #[arg(long, default_value_t = 3, value_name = "N")]
    warmup: usize,
    /// Where to time the models: tract (in process) or ort (ONNX Runtime's CPU provider, one
    /// thread, through the onnxruntime Python package of --python).
    #[arg(long, value_enum, default_value_t = RuntimeArg::Tract)]
    runtime: RuntimeArg,
    /// The Python with onnxruntime installed, for --runtime ort [default: $QUANTIZE_RS_PYTHON,
    /// else python3].
    #[arg(long, value_name = "PATH")]
    python: Option<std::path::PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeArg {
    Tract,
    Ort,
}

pub(crate) fn benchmark(a: BenchmarkArgs) -> Result<(), Failure> {
    if a.runs == 0 {
        return Err(Failure::usage("--runs: must be at least 1"));
    }
    let runtime = match a.runtime {
        RuntimeArg::Tract => Runtime::Tract,
        RuntimeArg::Ort => Runtime::Ort {
            python: a
                .python
                .clone()
                .or_else(|| std::env::var_os("QUANTIZE_RS_PYTHON").map(Into::into))
                .unwrap_or_else(|| "python3".into()),
        },
    };
    let opts = BenchmarkOptions {
        data: a.pair.data.clone(),
        runs: a.runs,
        warmup: a.warmup,
        input_shapes: a.pair.input_shape.iter().cloned().collect(),
        runtime,
    };
    let b = quantize_rs::benchmark(&a.pair.original, &a.pair.quantized, &opts)?;
    match a.format {
        Format::Json => {
            let mut doc = serde_json::to_value(&b).expect("serializable");
            doc["ok"] = true.into();
            print_json(&doc);
        }
        Format::Text => crate::out(&benchmark_text(&b)),
    }
    Ok(())
}

fn benchmark_text(b: &Benchmark) -> String {
    let (o, q) = (&b.original, &b.quantized);
    let mut s = String::new();
    let row = |s: &mut String, name: &str, x: String, y: String, extra: String| {
        let _ = writeln!(s, "{}", format!("{name:<16} {x:>14} {y:>14}  {extra}").trim_end());
    };
    row(&mut s, "", "original".into(), "quantized".into(), String::new());
    row(
        &mut s,
        "file",
        human_bytes(o.file_bytes),
        human_bytes(q.file_bytes),
        format!("{:.2}x smaller", b.compression_ratio),
    );
    row(
        &mut s,
        "weights",
        human_bytes(o.weight_bytes),
        human_bytes(q.weight_bytes),
        format!("{:.2}x smaller", b.weight_compression_ratio),
    );
    row(&mut s, "nodes", o.nodes.to_string(), q.nodes.to_string(), String::new());
    row(&mut s, "initializers", o.initializers.to_string(), q.initializers.to_string(), String::new());
    row(&mut s, "opset", o.opset.to_string(), q.opset.to_string(), String::new());
    let ms = |l: &Latency, f: fn(&Latency) -> f64| format!("{:.3} ms", f(l));
    row(
        &mut s,
        "latency median",
        ms(&o.latency, |l| l.median_ms),
        ms(&q.latency, |l| l.median_ms),
        format!("{:.2}x speed", b.speedup),
    );
    row(&mut s, "        p10", ms(&o.latency, |l| l.p10_ms), ms(&q.latency, |l| l.p10_ms), String::new());
    row(&mut s, "        p90", ms(&o.latency, |l| l.p90_ms), ms(&q.latency, |l| l.p90_ms), String::new());
    let shapes: Vec<String> = b
        .input_shapes
        .iter()
        .map(|d| format!("[{}]", d.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")))
        .collect();
    let _ = writeln!(
        s,
        "{}, {} timed run(s) after {} warm-up, input {} from {}",
        b.runtime,
        o.latency.runs,
        o.latency.warmup,
        shapes.join(" "),
        b.inputs
    );
    if let Some(n) = &b.note {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
