//! Measuring what quantization bought: node and initializer counts, file and weight bytes, and
//! tract inference latency of the original and the quantized model on the same input, after
//! warm-up, as a median with its spread.
//!
//! Latency is single-process wall time of `Runner::run` (one input set, plan already built),
//! so it includes tract's per-run overhead; compare the two models with each other, not with
//! other runtimes. DESIGN's measured facts apply: a weight-only model runs at float speed in
//! tract (its DequantizeLinear of constants is folded at load).

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
}

impl Default for BenchmarkOptions {
    fn default() -> Self {
        BenchmarkOptions { data: None, runs: 20, warmup: 3, input_shapes: BTreeMap::new() }
    }
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
    let mut ra = Runner::for_model(&a, &[], &original.display().to_string());
    let (bytes, note) = tract_bytes(&b)?;
    let mut rb = Runner::new(bytes, crate::run::output_names(&b), &[], &quantized.display().to_string());
    let la = time(&mut ra, &sample, opts)?;
    let lb = time(&mut rb, &sample, opts)?;
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
    })
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
