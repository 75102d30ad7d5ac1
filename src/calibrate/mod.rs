//! Static quantization: run the float model on calibration samples with tract, observe the
//! activations that feed and leave the quantized ops, turn the statistics into ranges, and write
//! QuantizeLinear→DequantizeLinear pairs (plus int32 biases) in the layout ONNX Runtime fuses into
//! integer kernels (QLinearConv, QLinearMatMul, QGemm).

mod layer_inputs;
mod observe;
pub mod observer;
mod outliers;
mod qdq;
mod select;
mod target;
mod weight_target;
mod weights;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use tract_onnx::prelude::Tensor;

use crate::error::{Error, Result};
use crate::onnx::model::Model;
use crate::onnx::proto::dtype;
use crate::quant::{QType, params_for_range};
use crate::recipe::{Calibration, CalibrationMethod};
use observe::*;
use observer::Observer;
use qdq::*;
use select::*;
use target::*;
use weights::*;

pub use layer_inputs::observe_layer_inputs;
pub use outliers::observe_channel_absmax;
pub use weight_target::weight_only_target;

use crate::ops::{DEFAULT_ACTIVATION_OPS, ELEMENTWISE_ACTIVATION_OPS, PASSTHROUGH_ACTIVATION_OPS};

/// The range chosen for one activation tensor.
#[derive(Debug, Clone, Serialize)]
pub struct ActivationRange {
    /// ONNX tensor name.
    pub tensor: String,
    /// Smallest value observed.
    pub min: f32,
    /// Largest value observed.
    pub max: f32,
    /// Range kept by the method (values outside saturate).
    pub lo: f32,
    /// See `lo`.
    pub hi: f32,
    /// Quantization scale.
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
    /// Estimated signal-to-quantization-noise ratio of this tensor alone (dB), from its histogram.
    pub sqnr_db: f64,
}

/// What calibration did.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationReport {
    /// Range method.
    pub method: CalibrationMethod,
    /// Samples run.
    pub samples: usize,
    /// Activation element type (`uint8` or `int8`).
    pub activation_type: String,
    /// Ranges of every quantized activation, in graph order.
    pub activations: Vec<ActivationRange>,
    /// Nodes whose inputs and outputs are now quantized.
    pub quantized_nodes: usize,
    /// Biases rewritten as int32.
    pub int32_biases: usize,
    /// Conv/Gemm biases corrected for the mean shift their quantized weights cause.
    pub bias_corrected: usize,
    /// Weights of integer-kernel ops requantized to 7 bits (int8 storage) with their SQNR (dB),
    /// unless `full-range-weights`: see [`crate::quant::QType::Int7`].
    pub reduced_range_weights: Vec<(String, f64)>,
    /// Nodes of the chosen op types left float, with the reason.
    pub skipped_nodes: Vec<(String, String)>,
    /// Seconds spent running samples.
    pub run_seconds: f64,
    /// The accuracy-target search, when a target was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSearch>,
}

/// What the accuracy-target mode did (`target-snr-db`).
#[derive(Debug, Clone, Serialize)]
pub struct TargetSearch {
    /// The output SNR asked for, in dB, on the verification data.
    pub target_db: f64,
    /// The output SNR of the model written (tract, verification data).
    pub reached_db: f64,
    /// With every calibrated activation quantized.
    pub all_quantized_db: f64,
    /// Activations returned to float, worst first.
    pub returned_to_float: Vec<String>,
    /// Every calibrated activation, worst first, with the output SNR (dB) of the weight-quantized
    /// model when that activation alone is quantized too (measured on the first held-out samples).
    pub alone_db: Vec<(String, f64)>,
    /// Every trial: (activations returned to float, output SNR in dB).
    pub trials: Vec<(usize, f64)>,
    /// 4-bit weights stepped to 8 bits, worst first, when the quantized weights alone missed the
    /// target by the margin [`WEIGHT_MARGIN_DB`] the activations need (before any weight goes
    /// back to float).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weights_to_8_bits: Vec<String>,
    /// With 4-bit weights stepped: every 4-bit weight, worst first, with the output SNR (dB) of
    /// the weight-quantized model when that weight alone stays at 4 bits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub four_bit_alone_db: Vec<(String, f64)>,
    /// Weights returned to float, worst first, when the quantized weights alone (after any step
    /// to 8 bits) missed the target by the margin [`WEIGHT_MARGIN_DB`] the activations need.
    pub weights_returned_to_float: Vec<String>,
    /// With weights returned: every quantized weight, worst first, with the output SNR (dB) of the
    /// float model when that weight alone is quantized.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weight_alone_db: Vec<(String, f64)>,
    /// How many verification samples the figure rests on: for each float output,
    /// `(Σ e_i)² / Σ e_i²` over the samples' signal energies `e_i` in the float model (the count
    /// when they carry equal signal, near 1 when one sample carries it all); the smallest over
    /// the outputs. A target chosen on few effective samples may not hold on other inputs.
    pub effective_samples: f64,
}

/// The accuracy target asks this much more of the quantized weights alone, when they miss it, so
/// that the activations keep some of the error budget.
pub const WEIGHT_MARGIN_DB: f64 = 3.0;

/// Calibrates `quantized` (the weight-quantized form of `float`) on `samples` and rewrites its
/// activations as `cal` says.
///
/// With `cal.target_snr_db`, `verify` (held-out samples) is where the output SNR is measured: each
/// activation's own contribution to the output error is measured (the weight-quantized model with
/// only that activation quantized), and the worst are returned to float, as few as a bisection
/// over their count finds enough, until the model reaches the target.
pub fn calibrate(
    float: &Model,
    quantized: &mut Model,
    cal: &Calibration,
    weight_range: crate::quant::RangeSearch,
    samples: &[Vec<Tensor>],
    verify: Option<&[Vec<Tensor>]>,
    opts: &crate::control::RunOptions,
) -> Result<CalibrationReport> {
    let to_strings = |ops: &[&str]| ops.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let (op_types, sel) = match &cal.op_types {
        Some(ops) => (ops.clone(), select(quantized.graph(), ops, None)),
        None => {
            // The weight ops, then the elementwise and pass-through ops between them.
            let mut all = to_strings(DEFAULT_ACTIVATION_OPS);
            let core = select(quantized.graph(), &all, None);
            all.extend(to_strings(ELEMENTWISE_ACTIVATION_OPS));
            all.extend(to_strings(PASSTHROUGH_ACTIVATION_OPS));
            let chain = core.tensors.iter().cloned().collect();
            (all.clone(), select(quantized.graph(), &all, Some(chain)))
        }
    };
    if sel.tensors.is_empty() {
        return Err(Error::Option {
            key: "calibration.op-types".into(),
            message: format!(
                "no node of {} has a quantized weight and an activation input to calibrate; use weight-only quantization or other op types",
                op_types.join("/")
            ),
        });
    }
    let start = Instant::now();
    // Bias correction assumes each layer's input keeps its float mean: true for MinMax ranges,
    // not for methods that clip (their shift measured 0.2-1.1 dB worse on real models). Only then
    // are per-channel means worth observing.
    let bias_correction = cal.bias_correction && cal.method == CalibrationMethod::Minmax;
    let axes = if bias_correction { channel_axes(quantized.graph(), &sel) } else { vec![None; sel.tensors.len()] };
    let Observed { observers, is_float, means } = observe(float, &sel.tensors, &axes, samples, opts)?;
    let means: HashMap<String, Vec<f64>> =
        sel.tensors.iter().zip(means).filter_map(|(t, m)| m.and_then(|m| m.means()).map(|v| (t.clone(), v))).collect();
    let run_seconds = start.elapsed().as_secs_f64();
    // Elementwise ops also compute shapes and indices: only float tensors are quantized.
    let integers: HashSet<String> =
        sel.tensors.iter().zip(&is_float).filter(|(_, f)| !**f).map(|(t, _)| t.clone()).collect();
    let (sel, keep) = sel.without(&integers, quantized.graph(), "it computes on integers (shapes or indices)");
    let observers: Vec<Observer> = observers.into_iter().zip(keep).filter(|(_, k)| *k).map(|(o, _)| o).collect();
    // The weights as the integer kernels of `sel` get them: 7 bits, corrected biases.
    let finish_weights = |m: &mut Model, sel: &Selection| -> Result<(Vec<(String, f64)>, usize)> {
        let reduced =
            if cal.full_range_weights { Vec::new() } else { reduce_weight_ranges(float, m, sel, weight_range)? };
        let corrected = if bias_correction { correct_biases(float, m, sel, &means)? } else { 0 };
        Ok((reduced, corrected))
    };
    let qtype = if cal.symmetric_activations { QType::Int8 } else { QType::Uint8 };
    // The threshold searches (entropy, mse) are independent per tensor: run them in parallel.
    // Pass-through outputs take their input's range below, so they skip the search.
    let tied_outputs: HashSet<&str> = sel.tied.iter().map(|(o, _)| o.as_str()).collect();
    let mut activations: Vec<ActivationRange> = sel
        .tensors
        .par_iter()
        .zip(observers.par_iter())
        .map(|(t, o)| {
            let method = if tied_outputs.contains(t.as_str()) { CalibrationMethod::Minmax } else { cal.method };
            let (lo, hi) = o.range(method, cal.percentile, cal.symmetric_activations);
            let (scale, zero_point) = params_for_range(lo, hi, qtype, cal.symmetric_activations);
            let sqnr_db = o.sqnr_db(lo, hi, scale);
            ActivationRange { tensor: t.clone(), min: o.min(), max: o.max(), lo, hi, scale, zero_point, sqnr_db }
        })
        .collect();
    // Pass-through outputs take their input's range (graph order, so chains follow): the same
    // scale and zero point on both sides lets ONNX Runtime run the op on uint8 as it stands.
    let index: HashMap<String, usize> = sel.tensors.iter().enumerate().map(|(i, t)| (t.clone(), i)).collect();
    for (out, inp) in &sel.tied {
        let (o, i) = (index[out], index[inp]);
        let src = activations[i].clone();
        let a = &mut activations[o];
        (a.lo, a.hi, a.scale, a.zero_point) = (src.lo, src.hi, src.scale, src.zero_point);
        a.sqnr_db = observers[o].sqnr_db(a.lo, a.hi, a.scale);
    }
    let (sel, activations, target, reduced_range_weights, bias_corrected, int32_biases) =
        match (cal.target_snr_db, verify) {
            (Some(target), Some(held_out)) => {
                let reference = target::reference_outputs(float, "the float model", held_out)?;
                // The search runs on the weights every activation being quantized would get; the
                // model written gets them for the activations it keeps, so a weight op whose input
                // went back to float (a float op: nothing saturates) keeps its 8 bits.
                let mut trial = quantized.clone();
                finish_weights(&mut trial, &sel)?;
                // Weights whose quantization alone misses the target go back to float first,
                // worst first, until the weights alone clear it with a margin for activations.
                // 4-bit weights step to 8 bits first, then, if that is not enough, to float.
                let (mut widened, mut weight_search) = (None, None);
                let float_consts = crate::onnx::graph::constants(float.graph());
                let finish = |m: &mut Model| finish_weights(m, &sel).map(|_| ());
                // One step up for `eligible`: the fewest weights, worst first, that leave the
                // weights alone the margin; the model written and the trial take them.
                let step_up = |quantized: &mut Model, trial: &mut Model, eligible: &[String], step: &target::Step| {
                    let margin = target + WEIGHT_MARGIN_DB;
                    let (names, alone) =
                        search_weights(quantized, eligible, step, &finish, held_out, &reference, margin, opts)?;
                    let set: HashSet<&str> = names.iter().map(String::as_str).collect();
                    *quantized = step(quantized, &set)?;
                    *trial = quantized.clone();
                    finish_weights(trial, &sel)?;
                    Ok::<_, Error>((names, alone))
                };
                let mut weights_alone_db = target::output_snr(&trial, &reference, held_out)?;
                let four = target::four_bit_weights(quantized.graph());
                if !four.is_empty() && weights_alone_db < target {
                    let step = |m: &Model, names: &HashSet<&str>| {
                        target::with_8bit_weights(m, &float_consts, names, weight_range)
                    };
                    widened = Some(step_up(quantized, &mut trial, &four, &step)?);
                    weights_alone_db = target::output_snr(&trial, &reference, held_out)?;
                }
                if weights_alone_db < target {
                    let step =
                        |m: &Model, names: &HashSet<&str>| Ok(target::with_float_weights(m, &float_consts, names));
                    let all: Vec<String> = dequantized_weights(quantized.graph())
                        .into_keys()
                        .filter(|w| float_consts.contains_key(w.as_str()))
                        .collect();
                    weight_search = Some(step_up(quantized, &mut trial, &all, &step)?);
                }
                // A candidate exactly as it would be written: weights finished for the
                // activations it keeps (8 bits where an input went back to float), then the Q/DQ
                // pairs and int32 biases.
                let unfinished: &Model = quantized;
                let build = |keep: &[ActivationRange]| -> Result<Model> {
                    let mut m = unfinished.clone();
                    let s = sel.keeping(keep.iter().map(|a| a.tensor.clone()).collect());
                    finish_weights(&mut m, &s)?;
                    rewrite(&mut m, &s, keep, qtype);
                    Ok(m)
                };
                let (keep, mut search) =
                    search_target(&trial, &build, &sel, &activations, qtype, held_out, &reference, target, opts)?;
                if let Some((names, alone)) = widened {
                    (search.weights_to_8_bits, search.four_bit_alone_db) = (names, alone);
                }
                if let Some((names, alone)) = weight_search {
                    (search.weights_returned_to_float, search.weight_alone_db) = (names, alone);
                }
                let sel = sel.keeping(keep.iter().map(|a| a.tensor.clone()).collect());
                let (reduced, corrected) = finish_weights(quantized, &sel)?;
                let biases = rewrite(quantized, &sel, &keep, qtype);
                // The report describes the model written.
                search.reached_db = output_snr(quantized, &reference, held_out)?;
                (sel, keep, Some(search), reduced, corrected, biases)
            }
            _ => {
                let (reduced, corrected) = finish_weights(quantized, &sel)?;
                let biases = rewrite(quantized, &sel, &activations, qtype);
                (sel, activations, None, reduced, corrected, biases)
            }
        };
    Ok(CalibrationReport {
        method: cal.method,
        samples: samples.len(),
        activation_type: dtype::name(qtype.onnx_dtype(false)).into(),
        activations,
        quantized_nodes: sel.nodes.len(),
        int32_biases,
        reduced_range_weights,
        bias_corrected,
        skipped_nodes: sel.skipped,
        run_seconds,
        target,
    })
}

/// Bias correction for a weight-only model: every Conv/Gemm of `quantized` whose data input has
/// measured per-channel `means` (by tensor name) absorbs the mean shift its quantized weight
/// causes, as in static quantization. `float` holds the weights' float values. Returns the count
/// of nodes corrected.
pub fn correct_weight_only_biases(
    float: &Model,
    quantized: &mut Model,
    means: &HashMap<String, Vec<f64>>,
) -> Result<usize> {
    let nodes: Vec<usize> = quantized
        .graph()
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.input.first().is_some_and(|x| means.contains_key(x))
                && crate::ops::spec(n).is_some_and(|s| s.output_shift.is_some())
        })
        .map(|(i, _)| i)
        .collect();
    let sel = Selection { tensors: vec![], nodes, uses: vec![], tied: vec![], skipped: vec![] };
    correct_biases(float, quantized, &sel, means)
}
