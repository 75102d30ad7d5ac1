//! Quantizing the planned weights: in parallel by tensor, a bounded window of them at a time,
//! results taken in model order. For a large model the window is what bounds memory: each weight's
//! float payload is taken out of the model (a mapped external-data payload goes with it, see
//! `onnx::mapped`), and each result is moved to a scratch file before the next window starts, so
//! the job holds the graph plus a few tensors whatever the model's size. The bytes written are
//! the same either way, on any thread count: only where they wait differs.

use bytes::Bytes;
use rayon::prelude::*;

use super::{Planned, QuantSpec, Refined, WeightStats, tensor_of};
use crate::analyse::{Analysis, Constant, Storage};
use crate::control::RunOptions;
use crate::error::Result;
use crate::onnx::graph::graph_at_mut;
use crate::onnx::mapped::Scratch;
use crate::onnx::model::Model;
use crate::onnx::proto::TensorProto;
use crate::onnx::tensor::{constant_value_mut, finite_floats, le_bytes, pack_int4};
use crate::quant::{Quantized, RangeSearch, Symmetry, quantize_measured};

/// One quantized weight as its DequantizeLinear's initializers hold it.
pub(super) struct Encoded {
    /// Values (4-bit ones packed two per byte when stored as INT4/UINT4).
    pub values: Bytes,
    /// Float32 scales, little-endian.
    pub scales: Bytes,
    /// Zero points, when any is not 0.
    pub zero_points: Option<Bytes>,
    /// Shape of the scales and zero points.
    pub param_dims: Vec<i64>,
    /// Every zero point is the type's symmetric one.
    pub symmetric: bool,
    /// Signal-to-quantization-noise ratio of the weight (dB).
    pub sqnr_db: f64,
    /// What data-aware rounding gained, when it ran.
    pub refined: Option<Refined>,
}

impl Encoded {
    /// Bytes of values, scales and zero points.
    pub fn bytes(&self) -> u64 {
        (self.values.len() + self.scales.len() + self.zero_points.as_ref().map_or(0, |z| z.len())) as u64
    }
}

/// An [`Encoded`] whose payloads are still plain buffers, before they are kept somewhere.
struct Made {
    values: Vec<u8>,
    scales: Vec<u8>,
    zero_points: Option<Vec<u8>>,
    param_dims: Vec<i64>,
    symmetric: bool,
    sqnr_db: f64,
    refined: Option<Refined>,
}

/// Quantizes every planned weight of `model`, in plan order. When the planned weights pass
/// `opts.spill_above` bytes, their float payloads leave the model as they are quantized and the
/// results wait in a scratch file (the model is then only fit to be rewritten, also on error).
pub(super) fn quantize_weights(
    model: &mut Model,
    analysis: &Analysis,
    planned: &[Planned],
    stats: Option<&WeightStats>,
    opts: &RunOptions,
) -> Result<Vec<Encoded>> {
    let total: u64 = planned.iter().map(|p| analysis.constants[p.constant].elements().saturating_mul(4)).sum();
    let spill = total > opts.spill_above;
    let mut scratch = if spill {
        let dir = opts
            .scratch_dir
            .clone()
            .or_else(|| model.path.as_deref().and_then(|p| p.parent()).map(|p| p.to_path_buf()))
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(std::env::temp_dir);
        Some(Scratch::new_in(&dir)?)
    } else {
        None
    };
    let bar = opts.bytes_bar(total, "quantizing weights");
    let window = 2 * rayon::current_num_threads().max(1);
    // Results are kept (moved to the scratch file) in order on a thread of their own while the
    // next window is quantized, so that the cores do not wait for the writes.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Made>(window);
    let keeper = move || -> Result<Vec<Encoded>> {
        let mut out = Vec::with_capacity(planned.len());
        for m in rx {
            let mut keep = |b: Vec<u8>| match scratch.as_mut() {
                Some(s) => s.keep(b),
                None => Ok(Bytes::from(b)),
            };
            out.push(Encoded {
                values: keep(m.values)?,
                scales: keep(m.scales)?,
                zero_points: m.zero_points.map(&mut keep).transpose()?,
                param_dims: m.param_dims,
                symmetric: m.symmetric,
                sqnr_db: m.sqnr_db,
                refined: m.refined,
            });
        }
        Ok(out)
    };
    let quantize_all = |model: &mut Model, tx: std::sync::mpsc::SyncSender<Made>| -> Result<()> {
        for start in (0..planned.len()).step_by(window) {
            opts.check_cancelled()?;
            let items = &planned[start..(start + window).min(planned.len())];
            let taken: Vec<Option<TensorProto>> =
                items.iter().map(|p| spill.then(|| take_payload(model, &analysis.constants[p.constant]))).collect();
            let made: Vec<Made> = items
                .par_iter()
                .zip(taken)
                .map(|(p, own)| {
                    let c = &analysis.constants[p.constant];
                    quantize_one(own.as_ref().unwrap_or_else(|| tensor_of(model, c)), c, p, stats)
                })
                .collect::<Result<_>>()?;
            for (m, p) in made.into_iter().zip(items) {
                if tx.send(m).is_err() {
                    return Ok(()); // the keeper failed: its error is the one to report
                }
                bar.inc(analysis.constants[p.constant].elements().saturating_mul(4));
            }
        }
        Ok(())
    };
    let (quantized, kept) = std::thread::scope(|scope| {
        let keeper = scope.spawn(keeper);
        let quantized = quantize_all(model, tx); // and the keeper's queue ends
        (quantized, keeper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    quantized?;
    bar.finish_and_clear();
    kept
}

/// The weight's tensor with its payload, which leaves the model (the tensor is replaced anyway).
fn take_payload(model: &mut Model, c: &Constant) -> TensorProto {
    let g = graph_at_mut(model.graph_mut(), &c.graph);
    let t = match c.storage {
        Storage::Initializer => &mut g.initializer[c.index],
        Storage::Constant => constant_value_mut(&mut g.node[c.index]).expect("analysis found a Constant value here"),
    };
    TensorProto {
        raw_data: t.raw_data.take(),
        float_data: std::mem::take(&mut t.float_data),
        name: t.name.clone(),
        dims: t.dims.clone(),
        data_type: t.data_type,
        ..TensorProto::default()
    }
}

fn quantize_one(t: &TensorProto, c: &Constant, p: &Planned, stats: Option<&WeightStats>) -> Result<Made> {
    let values = finite_floats(t)?;
    let dims: Vec<usize> = c.dims.iter().map(|&d| d as usize).collect();
    let mean_axis = (p.spec.range == RangeSearch::Mse).then_some(p.channel_axis).flatten();
    let (qtype, gran) = (p.spec.qtype, p.spec.granularity);
    // Only weights in the main graph have statistics (subgraph names may repeat). GPTQ keeps the
    // scales and zero points chosen here and re-chooses the integers.
    let layer = stats.filter(|_| c.graph.is_empty()).and_then(|s| s.get(&c.name));
    // A weight GPTQ will round takes asymmetric scales unless symmetric ones were asked for: a
    // symmetric grid leaves part of its levels outside a skewed group's range, levels GPTQ's
    // compensation of one weight's error on the next would use (what each grid reconstructs on
    // its own, which decides per scale without data, is not what counts here). BENCHMARKS.md,
    // "Data-aware weights": better on 8 of 12 model x bit-width cases, at most 0.7 dB worse.
    let symmetry = match p.spec.symmetry {
        Symmetry::Auto if layer.is_some() => Symmetry::Asymmetric,
        s => s,
    };
    #[cfg_attr(not(feature = "tract"), allow(unused_mut))]
    let (mut q, measured) = quantize_measured(&values, &dims, qtype, gran, symmetry, p.spec.range, mean_axis);
    #[cfg(feature = "tract")]
    let refined = layer.and_then(|s| {
        if s.adaround {
            crate::rounding::adaround::refine(&values, &dims, &mut q, qtype, gran, s)
        } else {
            crate::rounding::refine(&values, &dims, &mut q, qtype, gran, s)
        }
    });
    #[cfg(not(feature = "tract"))]
    let refined: Option<Refined> = layer.map(|never| match *never {});
    // Measured again only when data-aware rounding re-chose the integers.
    let sqnr_db = if refined.is_some() { crate::quant::sqnr_db(&values, &dims, &q, qtype, gran) } else { measured };
    drop(values);
    Ok(encode(q, &p.spec, sqnr_db, refined, p.explicit_zero_point))
}

fn encode(q: Quantized, spec: &QuantSpec, sqnr_db: f64, refined: Option<Refined>, explicit_zero_point: bool) -> Made {
    let pack = |bytes: Vec<u8>| if spec.native_int4 { pack_int4(&bytes) } else { bytes };
    let symmetric = q.zero_points.iter().all(|&z| z == spec.qtype.symmetric_zero_point());
    // A missing zero point means 0 of the values' type: signed symmetric weights need none,
    // unless the plan asks for one (static Gemm, for ONNX Runtime's QGemm fusion).
    let zero_points = (explicit_zero_point || q.zero_points.iter().any(|&z| z != 0)).then(|| {
        pack(q.zero_points.iter().map(|&z| if spec.qtype.signed() { z as i8 as u8 } else { z as u8 }).collect())
    });
    Made {
        values: pack(q.values),
        scales: le_bytes(&q.scales),
        zero_points,
        param_dims: q.param_dims.iter().map(|&d| d as i64).collect(),
        symmetric,
        sqnr_db,
        refined,
    }
}
