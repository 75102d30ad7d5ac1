//! Measuring what quantization bought: node and initializer counts, file and weight bytes, and
//! tract inference latency of the original and the quantized model on the same input, after
//! warm-up, as a median with its spread.
//!
//! Latency is single-process wall time of one run on one input set after warm-up, in tract
//! (`Runner::run`, plan already built) or, with [`Runtime::Ort`], in ONNX Runtime through its
//! Python package (a child process running `InferenceSession.run`, one intra-op thread, the two
//! models interleaved run by run so a busy machine slows both alike). Compare the two models
//! with each other. The runtimes disagree on what pays: a weight-only model runs at float speed
//! in tract (its DequantizeLinear of constants is folded at load), while static QDQ models are
//! fused into integer kernels by ONNX Runtime only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::data::Sample;
use crate::error::{Error, Result};
use crate::info::ModelInfo;
use crate::onnx::graph::walk_graphs;
use crate::onnx::model::Model;
use crate::run::Runner;
use crate::validate::{float, synthetic_inputs, tract_bytes};

/// How [`benchmark`] measures.
#[derive(Debug, Clone)]
pub struct BenchmarkOptions {
    /// Samples (the first is used); without, inputs are synthesized from the declared shapes.
    pub data: Option<PathBuf>,
    /// Timed runs per model.
    pub runs: usize,
    /// Untimed runs first (the first builds the plan).
    pub warmup: usize,
    /// Shapes for synthesized inputs, by input name, instead of the declared ones.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
    /// Which runtime runs the models.
    pub runtime: Runtime,
}

impl Default for BenchmarkOptions {
    fn default() -> Self {
        BenchmarkOptions { data: None, runs: 20, warmup: 3, input_shapes: BTreeMap::new(), runtime: Runtime::Tract }
    }
}

/// The runtime [`benchmark`] times the models in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Runtime {
    /// tract, in this process.
    Tract,
    /// ONNX Runtime's CPU provider, through the `onnxruntime` Python package of `python`.
    Ort {
        /// The Python interpreter to run (one with `onnxruntime` and `numpy` installed).
        python: PathBuf,
    },
}

/// Latency of one model, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Timed runs.
    pub runs: usize,
    /// Untimed runs before them.
    pub warmup: usize,
    /// Median.
    pub median_ms: f64,
    /// 10th percentile.
    pub p10_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
}

impl Latency {
    /// Summarises run times (in seconds).
    pub fn of(mut seconds: Vec<f64>, warmup: usize) -> Latency {
        seconds.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if seconds.is_empty() {
                return 0.0;
            }
            // Nearest-rank on the sorted times.
            let i = ((p * (seconds.len() - 1) as f64).round() as usize).min(seconds.len() - 1);
            seconds[i] * 1e3
        };
        Latency {
            runs: seconds.len(),
            warmup,
            median_ms: q(0.5),
            p10_ms: q(0.1),
            p90_ms: q(0.9),
            min_ms: q(0.0),
            max_ms: q(1.0),
        }
    }
}

/// Static figures and latency of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFigures {
    /// The file measured.
    pub path: PathBuf,
    /// Its size on disk.
    pub file_bytes: u64,
    /// Nodes in all graphs.
    pub nodes: usize,
    /// Initializers in all graphs.
    pub initializers: usize,
    /// Bytes of stored constants (initializers and `Constant` values, all graphs).
    pub weight_bytes: u64,
    /// Default-domain opset.
    pub opset: i64,
    /// tract latency.
    pub latency: Latency,
}

/// The two models side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Benchmark {
    /// The float model.
    pub original: ModelFigures,
    /// The quantized model.
    pub quantized: ModelFigures,
    /// Original file bytes / quantized file bytes.
    #[serde(serialize_with = "float")]
    pub compression_ratio: f64,
    /// Original weight bytes / quantized weight bytes.
    #[serde(serialize_with = "float")]
    pub weight_compression_ratio: f64,
    /// Original median latency / quantized median latency (above 1: the quantized model is faster).
    #[serde(serialize_with = "float")]
    pub speedup: f64,
    /// What the models ran on: the data file, or `synthetic`.
    pub inputs: String,
    /// Shapes of the input set run.
    pub input_shapes: Vec<Vec<usize>>,
    /// Conversions made so tract could run the quantized model (4-bit widening), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The runtime that ran them (with ONNX Runtime, its version).
    pub runtime: String,
}

fn time(runner: &mut Runner, sample: &Sample, opts: &BenchmarkOptions) -> Result<Latency> {
    for _ in 0..opts.warmup.max(1) {
        runner.run(sample)?;
    }
    let mut times = Vec::with_capacity(opts.runs);
    for _ in 0..opts.runs {
        let start = Instant::now();
        runner.run(sample)?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(Latency::of(times, opts.warmup.max(1)))
}

fn figures(path: &Path, model: &Model, latency: Latency) -> Result<ModelFigures> {
    let info = ModelInfo::of(model)?;
    let mut initializers = 0;
    walk_graphs(model.graph(), &mut |_, g| initializers += g.initializer.len());
    Ok(ModelFigures {
        path: path.to_path_buf(),
        file_bytes: std::fs::metadata(path).map_err(|source| Error::Read { path: path.into(), source })?.len(),
        nodes: info.nodes,
        initializers,
        weight_bytes: info.weight_bytes_by_type.values().sum(),
        opset: model.opset().unwrap_or(0),
        latency,
    })
}

/// Measures the models stored at `original` and `quantized`.
pub fn benchmark(original: &Path, quantized: &Path, opts: &BenchmarkOptions) -> Result<Benchmark> {
    if opts.runs == 0 {
        return Err(Error::Option { key: "--runs".into(), message: "must be at least 1".into() });
    }
    let a = Model::load(original)?;
    let b = Model::load(quantized)?;
    let (sample, inputs) = match &opts.data {
        Some(d) => {
            let mut s = crate::data::load_for_model(&a, d, None, Some(1))?;
            (s.remove(0), d.display().to_string())
        }
        None => (synthetic_inputs(&a, &opts.input_shapes)?, "synthetic".to_string()),
    };
    let (la, lb, note, runtime) = match &opts.runtime {
        Runtime::Tract => {
            let mut ra = Runner::for_model(&a, &[], &original.display().to_string());
            let (bytes, note) = tract_bytes(&b)?;
            let mut rb = Runner::new(bytes, crate::run::output_names(&b), &[], &quantized.display().to_string());
            (time(&mut ra, &sample, opts)?, time(&mut rb, &sample, opts)?, note, "tract".to_string())
        }
        Runtime::Ort { python } => {
            let names: Vec<String> = crate::data::InputSpec::of_model(&a)?.into_iter().map(|i| i.name).collect();
            let (la, lb, version) = time_in_ort(python, original, quantized, &names, &sample, opts)?;
            (la, lb, None, format!("onnxruntime {version}"))
        }
    };
    let fa = figures(original, &a, la)?;
    let fb = figures(quantized, &b, lb)?;
    let ratio = |x: f64, y: f64| if y == 0.0 { f64::INFINITY } else { x / y };
    Ok(Benchmark {
        compression_ratio: ratio(fa.file_bytes as f64, fb.file_bytes as f64),
        weight_compression_ratio: ratio(fa.weight_bytes as f64, fb.weight_bytes as f64),
        speedup: ratio(fa.latency.median_ms, fb.latency.median_ms),
        original: fa,
        quantized: fb,
        inputs,
        input_shapes: sample.iter().map(|t| t.shape().to_vec()).collect(),
        note,
        runtime,
    })
}

/// The child process's program: loads both models (CPU provider, one intra-op thread, default
/// optimizations), reads the inputs, warms up, then times the two models interleaved run by run
/// and prints `{"version", "original": [s...], "quantized": [s...]}`.
const ORT_TIMER: &str = r#"
import json, sys, time
try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:
    print(json.dumps({"error": f"cannot import {e.name}: pip install onnxruntime numpy"}))
    sys.exit(3)
spec = json.loads(sys.argv[1])
def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
try:
    sessions = [session(spec["original"]), session(spec["quantized"])]
except Exception as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(4)
feeds = {}
for i in spec["inputs"]:
    with open(i["file"], "rb") as f:
        feeds[i["name"]] = np.frombuffer(f.read(), dtype=i["dtype"]).reshape(i["shape"])
for _ in range(spec["warmup"]):
    for s in sessions:
        s.run(None, feeds)
times = [[], []]
for _ in range(spec["runs"]):
    for k, s in enumerate(sessions):
        t = time.perf_counter()
        s.run(None, feeds)
        times[k].append(time.perf_counter() - t)
print(json.dumps({"version": ort.__version__, "original": times[0], "quantized": times[1]}))
"#;

/// Times both models in ONNX Runtime through `python` (see [`ORT_TIMER`]): the sample is
/// written as raw little-endian files beside a JSON description, read back with numpy.
fn time_in_ort(
    python: &Path,
    original: &Path,
    quantized: &Path,
    names: &[String],
    sample: &Sample,
    opts: &BenchmarkOptions,
) -> Result<(Latency, Latency, String)> {
    use tract_onnx::prelude::DatumType;
    let dir = tempfile::tempdir().map_err(|source| Error::Write { path: std::env::temp_dir(), source })?;
    let mut inputs = Vec::new();
    for (k, (name, t)) in names.iter().zip(sample).enumerate() {
        let dtype = match t.datum_type() {
            DatumType::F32 => "<f4",
            DatumType::F64 => "<f8",
            DatumType::F16 => "<f2",
            DatumType::I64 => "<i8",
            DatumType::I32 => "<i4",
            DatumType::I16 => "<i2",
            DatumType::I8 => "i1",
            DatumType::U8 => "u1",
            DatumType::Bool => "?",
            other => {
                return Err(Error::Option {
                    key: "--runtime".into(),
                    message: format!("input '{name}' is {other:?}, which the ONNX Runtime timer cannot pass"),
                });
            }
        };
        let file = dir.path().join(format!("input{k}.bin"));
        std::fs::write(&file, t.as_bytes()).map_err(|source| Error::Write { path: file.clone(), source })?;
        inputs.push(serde_json::json!({"name": name, "dtype": dtype, "shape": t.shape(), "file": file}));
    }
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let spec = serde_json::json!({
        "original": abs(original), "quantized": abs(quantized), "inputs": inputs,
        "runs": opts.runs, "warmup": opts.warmup.max(1),
    });
    let out =
        std::process::Command::new(python).arg("-c").arg(ORT_TIMER).arg(spec.to_string()).output().map_err(|e| {
            Error::Option {
                key: "--runtime".into(),
                message: format!(
                    "cannot run {} for ONNX Runtime ({e}); pass the python that has onnxruntime installed (--python)",
                    python.display()
                ),
            }
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: serde_json::Value = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
    if let Some(e) = doc["error"].as_str() {
        return Err(Error::Option {
            key: "--runtime".into(),
            message: format!("ONNX Runtime via {}: {e}", python.display()),
        });
    }
    let times = |k: &str| -> Option<Vec<f64>> { doc[k].as_array()?.iter().map(|v| v.as_f64()).collect() };
    match (times("original"), times("quantized"), doc["version"].as_str()) {
        (Some(a), Some(b), Some(v)) => {
            Ok((Latency::of(a, opts.warmup.max(1)), Latency::of(b, opts.warmup.max(1)), v.into()))
        }
        _ => Err(Error::Option {
            key: "--runtime".into(),
            message: format!(
                "ONNX Runtime via {} gave no timings (exit {:?}): {}",
                python.display(),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let l = Latency::of((1..=11).rev().map(|x| x as f64 / 1e3).collect(), 2);
        assert_eq!((l.min_ms, l.p10_ms, l.median_ms, l.p90_ms, l.max_ms), (1.0, 2.0, 6.0, 10.0, 11.0));
        assert_eq!((l.runs, l.warmup), (11, 2));
    }
}
