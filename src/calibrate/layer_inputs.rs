//! What data-aware weights need from the samples: for every weight layer (Conv, ConvTranspose,
//! Gemm, MatMul with a constant float weight read by that one node), the second moments of the
//! vectors its weight rows multiply (see [`crate::rounding`]) and the per-channel means of its
//! data input (bias correction). The float model runs once per sample with tract, the layers'
//! data inputs exposed; each sample's values are folded into the statistics, in parallel across
//! layers, and dropped.

use std::collections::HashMap;
use std::time::Instant;

use rayon::prelude::*;
use tract_onnx::prelude::{Datum, IntoTensor, Tensor, TractError};

use super::observer::ChannelMeans;
use crate::error::Result;
use crate::onnx::model::Model;
use crate::ops;
use crate::rounding::{LayerStats, WeightStats, layout::Layer};
use crate::run::Runner;

/// Input vectors taken for a layer with `d` columns over all samples (evenly spread over each
/// sample's positions): several times `d`, so that `H` is well estimated, but bounded, as
/// summing them costs `d²/2` each; a 3×3 convolution over 256 channels (d = 2304) takes 18,432.
fn vector_budget(d: usize) -> usize {
    (8 * d).clamp(4096, 32768)
}

/// At least this many vectors come from each sample (when it has them).
const MIN_VECTORS_PER_SAMPLE: usize = 64;

/// The statistics of the layers' inputs on the samples.
#[derive(Debug, Default)]
pub struct LayerInputs {
    /// Second moments, by weight name.
    pub stats: WeightStats,
    /// Per-channel means of each Conv/Gemm data input, by tensor name.
    pub means: HashMap<String, Vec<f64>>,
    /// Samples run.
    pub samples: usize,
    /// Seconds spent.
    pub seconds: f64,
}

struct Watched {
    weight: String,
    layer: Layer,
    stats: LayerStats,
    /// Index into the values a run yields (model inputs first, then the exposed tensors).
    source: usize,
    usable: bool,
}

/// Runs `float` on `samples` and gathers the input statistics of the layers whose weights are
/// read by one node of `op_types`; with `rounding`, the second moments (else only the means).
pub fn observe_layer_inputs(
    float: &Model,
    op_types: &[String],
    samples: &[Vec<Tensor>],
    rounding: bool,
    opts: &crate::control::RunOptions,
) -> Result<LayerInputs> {
    let start = Instant::now();
    let g = float.graph();
    let consts = crate::onnx::graph::constants(g);
    let readers = crate::onnx::graph::readers(g);
    let inputs: Vec<String> = crate::data::InputSpec::of_model(float)?.into_iter().map(|s| s.name).collect();
    let mut exposed: Vec<String> = Vec::new();
    let mut source_of = |t: &str| -> usize {
        if let Some(i) = inputs.iter().position(|n| n == t) {
            return i;
        }
        let i = exposed.iter().position(|n| n == t).unwrap_or_else(|| {
            exposed.push(t.to_string());
            exposed.len() - 1
        });
        inputs.len() + i
    };
    let mut watched: Vec<Watched> = Vec::new();
    // (tensor source, channel axis, tensor name) of the means to measure.
    let mut mean_of: Vec<(usize, ChannelMeans, String)> = Vec::new();
    for n in &g.node {
        let Some(spec) = ops::spec(n) else { continue };
        let Some(w) = spec.weight else { continue };
        if !op_types.iter().any(|t| ops::is(n, t.as_str())) || w.input == 0 {
            continue;
        }
        let (Some(x), Some(name)) = (n.input.first(), n.input.get(w.input)) else { continue };
        let Some(t) = consts.get(name.as_str()) else { continue };
        if consts.contains_key(x.as_str())
            || t.data_type != Some(crate::onnx::proto::dtype::FLOAT)
            || readers.get(name).map(Vec::len) != Some(1)
        {
            continue;
        }
        if let Some(axis) = spec.data_channel_axis.map(|a| a(n))
            && !mean_of.iter().any(|(_, _, t)| t == x)
        {
            mean_of.push((source_of(x), ChannelMeans::new(axis), x.clone()));
        }
        if !rounding {
            continue;
        }
        let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let Some(layer) = Layer::of(n, &dims) else { continue };
        let stats = LayerStats::new(layer.layout);
        watched.push(Watched { weight: name.clone(), layer, stats, source: source_of(x), usable: true });
    }
    let what = float.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the float model".into());
    let mut runner = Runner::for_model(float, &exposed, &what);
    let own = runner.outputs().len() - exposed.len();
    let tract_err = |e: TractError| crate::run::tract_error(&what, e);
    let bar = crate::run::sample_bar(opts, samples.len(), "observing layer inputs");
    // One sample's exposed tensors, as f32 (converted only when not f32 already).
    let run = |runner: &mut Runner, sample: &Vec<Tensor>| -> Result<Vec<Tensor>> {
        opts.check_cancelled()?;
        let values = runner.run(sample)?;
        values
            .into_iter()
            .skip(own)
            .map(|v| {
                let t = v.into_tensor();
                if t.datum_type() == f32::datum_type() { Ok(t) } else { t.cast_to::<f32>().map(|c| c.into_owned()) }
            })
            .collect::<std::result::Result<_, TractError>>()
            .map_err(tract_err)
    };
    let per_sample = |d: usize| vector_budget(d).div_ceil(samples.len().max(1)).max(MIN_VECTORS_PER_SAMPLE);
    // Folds one sample (its model inputs, then its exposed tensors) into the statistics, in
    // parallel across layers.
    let mut take = |sample: &Vec<Tensor>, exposed: Vec<Tensor>| -> Result<()> {
        let slices: Vec<(&[f32], &[usize])> = sample
            .iter()
            .chain(&exposed)
            .map(|t| {
                // Model inputs of another type and tensors that are not contiguous are left out
                // (empty): the layers reading them keep round-to-nearest.
                let x = t.to_plain_array_view::<f32>().ok().and_then(|v| v.to_slice()).unwrap_or(&[]);
                (x, t.shape())
            })
            .collect();
        watched.par_iter_mut().filter(|w| w.usable).for_each_init(Vec::new, |buf, w| {
            let (x, shape) = &slices[w.source];
            let stats = &mut w.stats;
            let max = per_sample(w.layer.layout.cols());
            let fits = w.layer.for_each_group(x, shape, max, buf, |g, xs, n| stats.add(g, xs, n));
            w.usable &= fits.is_some();
        });
        mean_of.par_iter_mut().for_each(|(source, m, _)| {
            let (x, shape) = &slices[*source];
            m.add(x, shape);
        });
        bar.inc(1);
        Ok(())
    };
    if let Some((first, rest)) = samples.split_first() {
        let exposed = run(&mut runner, first)?;
        // As in `observe`: tract runs the next sample while the statistics take the last one,
        // unless two samples' tensors would cost too much memory. The statistics of a large
        // model hold more than observers do, so the bound is half `observe`'s (PP-OCRv4 det,
        // ~100 MB of layer inputs per sample, peaked at 486 MB pipelined, 360 MB not).
        let input_elems = |s: &Vec<Tensor>| s.iter().map(|t| t.len()).sum::<usize>().max(1);
        let largest = samples.iter().map(input_elems).max().unwrap_or(1);
        let bytes = exposed.iter().map(|t| t.len() * 4).sum::<usize>() * largest / input_elems(first);
        take(first, exposed)?;
        if bytes > super::observe::PIPELINE_BYTES / 2 {
            for sample in rest {
                take(sample, run(&mut runner, sample)?)?;
            }
        } else {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Tensor>>>(0);
            std::thread::scope(|scope| {
                scope.spawn(move || {
                    for sample in rest {
                        let values = run(&mut runner, sample);
                        let failed = values.is_err();
                        if tx.send(values).is_err() || failed {
                            break;
                        }
                    }
                });
                rest.iter().zip(rx).try_for_each(|(sample, values)| take(sample, values?))
            })?;
        }
    }
    bar.finish_and_clear();
    let stats = watched.into_iter().filter(|w| w.usable && w.stats.vectors > 0).map(|w| (w.weight, w.stats)).collect();
    let means = mean_of.into_iter().filter_map(|(_, m, t)| m.means().map(|v| (t, v))).collect();
    Ok(LayerInputs { stats, means, samples: samples.len(), seconds: start.elapsed().as_secs_f64() })
}
