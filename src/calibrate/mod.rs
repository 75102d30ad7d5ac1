//! Static quantization: run the float model on calibration samples with tract, observe the
//! activations that feed and leave the quantized ops, turn the statistics into ranges, and write
//! QuantizeLinear→DequantizeLinear pairs (plus int32 biases) in the layout ONNX Runtime fuses into
//! integer kernels (QLinearConv, QLinearMatMul, QGemm).

pub mod observer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use tract_onnx::prelude::{Datum, IntoTensor, Tensor};

use crate::error::{Error, Result};
use crate::onnx::graph::{Names, NodeExt, node_domain, node_label};
use crate::onnx::model::Model;
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto, dtype};
use crate::onnx::tensor::constant_value;
use crate::quant::{QType, params_for_range};
use crate::recipe::{Calibration, CalibrationMethod};
use crate::run::Runner;
use observer::{ChannelMeans, Observer};

use crate::ops::{self, DEFAULT_ACTIVATION_OPS, ELEMENTWISE_ACTIVATION_OPS, PASSTHROUGH_ACTIVATION_OPS};

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
}

struct Selection {
    /// Activation tensors to quantize, in first-use order.
    tensors: Vec<String>,
    /// Indices (main graph) of the nodes whose activations are quantized.
    nodes: Vec<usize>,
    /// The activation tensors of each node of `nodes`.
    uses: Vec<Vec<String>>,
    /// (output, input) of pass-through ops: the output takes the input's range.
    tied: Vec<(String, String)>,
    skipped: Vec<(String, String)>,
}

impl Selection {
    /// Leaves float the nodes that touch a tensor of `drop` (with `why`), and every tensor only
    /// they used. `keep_tensor` says, in `tensors`' order, which tensors remain.
    fn without(self, drop: &HashSet<String>, g: &GraphProto, why: &str) -> (Selection, Vec<bool>) {
        let mut sel = Selection { tensors: vec![], nodes: vec![], uses: vec![], tied: vec![], skipped: self.skipped };
        for (i, uses) in self.nodes.into_iter().zip(self.uses) {
            if uses.iter().any(|t| drop.contains(t)) {
                sel.skipped.push((node_label(&g.node[i]), why.to_string()));
            } else {
                sel.nodes.push(i);
                sel.uses.push(uses);
            }
        }
        let used: HashSet<&str> = sel.uses.iter().flatten().map(String::as_str).collect();
        let keep: Vec<bool> = self.tensors.iter().map(|t| used.contains(t.as_str())).collect();
        sel.tied =
            self.tied.into_iter().filter(|(o, i)| used.contains(o.as_str()) && used.contains(i.as_str())).collect();
        sel.tensors = self.tensors.into_iter().zip(&keep).filter(|(_, k)| **k).map(|(t, _)| t).collect();
        (sel, keep)
    }
}

/// The DequantizeLinear node of each quantized weight, by the weight's name (its output).
fn dequantized_weights(g: &GraphProto) -> HashMap<String, NodeProto> {
    let inits: HashSet<&str> = g.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    g.node
        .iter()
        .filter(|n| ops::is(n, ops::DEQUANTIZE_LINEAR) && n.input.first().is_some_and(|i| inits.contains(i.as_str())))
        .filter_map(|n| n.output.first().map(|o| (o.clone(), n.clone())))
        .collect()
}

/// The nodes of `op_types` whose activations are quantized, and those tensors. With `chain`
/// (the tensors the weight ops quantize), elementwise and pass-through ops are taken only where
/// every data input is already quantized: they then run as integer kernels without adding a
/// conversion, and a chain of them (Conv → Sigmoid → Mul → Concat → Conv) stays in uint8.
fn select(g: &GraphProto, op_types: &[String], chain: Option<HashSet<String>>) -> Selection {
    let chained = chain.is_some();
    let mut quantized = chain.unwrap_or_default();
    let weights = dequantized_weights(g);
    let constants: HashSet<&str> = crate::onnx::graph::constants(g).into_keys().collect();
    let outputs: HashSet<&str> = g.output.iter().filter_map(|v| v.name.as_deref()).collect();
    let readers = crate::onnx::graph::readers(g);
    let mut tensors: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut nodes = Vec::new();
    let mut uses = Vec::new();
    let mut tied = Vec::new();
    let mut skipped = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        let op = n.op_type.as_deref().unwrap_or("");
        if !node_domain(n).is_empty() || !op_types.iter().any(|o| o == op) {
            continue;
        }
        let Some(spec) = ops::spec(n) else { continue };
        // Activation inputs: the data input, and a second operand that is not a constant.
        let weight_input = match spec.activation {
            ops::Activation::IntegerKernel { needs_weight: true, .. } => spec.weight.map(|w| w.input),
            _ => None,
        };
        if let Some(w) = weight_input
            && !n.input.get(w).is_some_and(|w| weights.contains_key(w.as_str()))
        {
            skipped.push((node_label(n), "its weight is not quantized".to_string()));
            continue;
        }
        if spec.activation == ops::Activation::PassThrough {
            // The data input only: the others are sizes, scales or split lengths.
            let data = n.input.first().map(String::as_str).unwrap_or("");
            let cubic = n.attr("mode").and_then(|a| a.s.as_deref()) == Some(b"cubic".as_slice());
            let why = if n.output.iter().any(|o| outputs.contains(o.as_str())) {
                Some("its output is a graph output")
            } else if cubic {
                Some("cubic interpolation overshoots its input's range")
            } else if data.is_empty() || constants.contains(data) || weights.contains_key(data) {
                Some("its input is a constant")
            } else {
                None
            };
            if chained && (why.is_some() || !quantized.contains(data)) {
                continue;
            }
            if let Some(why) = why {
                skipped.push((node_label(n), why.to_string()));
                continue;
            }
            let outs: Vec<&str> = n.output.iter().map(String::as_str).filter(|o| !o.is_empty()).collect();
            for a in std::iter::once(data).chain(outs.iter().copied()) {
                if seen.insert(a.to_string()) {
                    tensors.push(a.to_string());
                }
            }
            tied.extend(outs.iter().map(|o| (o.to_string(), data.to_string())));
            quantized.extend(outs.iter().map(|o| o.to_string()));
            nodes.push(i);
            uses.push(std::iter::once(data).chain(outs).map(String::from).collect());
            continue;
        }
        if spec.activation == ops::Activation::Elementwise {
            let output = n.output.first().map(String::as_str).unwrap_or("");
            let why = if outputs.contains(output) {
                Some("its output is a graph output")
            } else if n
                .input
                .iter()
                .any(|i| i.is_empty() || constants.contains(i.as_str()) || weights.contains_key(i.as_str()))
            {
                Some("it has a constant operand")
            } else {
                None
            };
            if chained && (why.is_some() || !n.input.iter().all(|i| quantized.contains(i))) {
                continue;
            }
            if let Some(why) = why {
                skipped.push((node_label(n), why.to_string()));
                continue;
            }
            quantized.insert(output.to_string());
            for a in n.input.iter().map(String::as_str).chain([output]) {
                if seen.insert(a.to_string()) {
                    tensors.push(a.to_string());
                }
            }
            nodes.push(i);
            uses.push(n.input.iter().cloned().chain([output.to_string()]).collect());
            continue;
        }
        let mut acts: Vec<&str> = Vec::new();
        for (j, input) in n.input.iter().enumerate().take(2) {
            if Some(j) == weight_input || input.is_empty() {
                continue;
            }
            if constants.contains(input.as_str()) || weights.contains_key(input.as_str()) {
                continue;
            }
            acts.push(input);
        }
        if acts.is_empty() {
            skipped.push((node_label(n), "it has no activation input".to_string()));
            continue;
        }
        if let Some(out) = n.output.first().filter(|o| !outputs.contains(o.as_str())) {
            // A Relu that alone reads the output is quantized past: its output's range starts at 0,
            // so the uint8 code spends no level on negatives, and ONNX Runtime drops the Relu and
            // fuses DequantizeLinear→Conv→QuantizeLinear into one integer kernel.
            let past = match readers.get(out).map(Vec::as_slice) {
                Some(&[r]) if r != crate::onnx::graph::SUBGRAPH_READER => {
                    let r = &g.node[r];
                    ops::is(r, ops::RELU).then(|| r.output.first()).flatten().filter(|o| !outputs.contains(o.as_str()))
                }
                _ => None,
            };
            acts.push(past.unwrap_or(out));
        }
        for a in &acts {
            if seen.insert(a.to_string()) {
                tensors.push(a.to_string());
            }
        }
        nodes.push(i);
        uses.push(acts.iter().map(|a| a.to_string()).collect());
    }
    Selection { tensors, nodes, uses, tied, skipped }
}

/// What observing the calibration samples gave, per tensor (in the order asked for).
struct Observed {
    observers: Vec<Observer>,
    /// Whether the tensor held floats in every sample (shape and index arithmetic does not).
    is_float: Vec<bool>,
    /// Per-channel means, for the tensors a channel axis was given for.
    means: Vec<Option<ChannelMeans>>,
}

/// Largest activation bytes per sample for which running the next sample overlaps observing the
/// last one (two samples alive instead of one; the memory bound wins on large inputs).
const PIPELINE_BYTES: usize = 128 << 20;

/// Runs the float model on `samples` and returns one observer per tensor of `tensors`.
/// Also says, per tensor, whether it holds floats (shape and index arithmetic does not).
/// Tensors with a channel axis in `axes` also get their per-channel means.
fn observe(
    float: &Model,
    tensors: &[String],
    axes: &[Option<usize>],
    samples: &[Vec<Tensor>],
    progress: bool,
) -> Result<Observed> {
    let what = float.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the float model".into());
    let mut runner = Runner::for_model(float, tensors, &what);
    let own_outputs = runner.outputs().len() - tensors.len();
    let mut observers = vec![Observer::default(); tensors.len()];
    let mut is_float = vec![true; tensors.len()];
    let mut means: Vec<Option<ChannelMeans>> = axes.iter().map(|a| a.map(ChannelMeans::new)).collect();
    let bar = if progress {
        indicatif::ProgressBar::new(samples.len() as u64).with_style(
            indicatif::ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} samples {elapsed}")
                .expect("valid template"),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let tract_err = |e: tract_onnx::prelude::TractError| crate::run::tract_error(&what, e);
    // One sample's requested values as owned f32 tensors (moved out of tract's values, converted
    // only when not f32), with whether each held floats.
    let run = |runner: &mut Runner, sample: &Vec<Tensor>| -> Result<(Vec<Tensor>, Vec<bool>)> {
        let values = runner.run(sample)?;
        let mut floats = Vec::with_capacity(values.len());
        let tensors = values
            .into_iter()
            .skip(own_outputs)
            .map(|v| {
                let t = v.into_tensor();
                floats.push(t.datum_type().is_float());
                if t.datum_type() == f32::datum_type() { Ok(t) } else { t.cast_to::<f32>().map(|c| c.into_owned()) }
            })
            .collect::<std::result::Result<Vec<Tensor>, _>>()
            .map_err(tract_err)?;
        Ok((tensors, floats))
    };
    // Every tensor's histogram updated in parallel.
    let mut take = |(tensors, floats): (Vec<Tensor>, Vec<bool>)| -> Result<()> {
        for (f, g) in is_float.iter_mut().zip(floats) {
            *f &= g;
        }
        observers
            .par_iter_mut()
            .zip(means.par_iter_mut())
            .zip(tensors.par_iter())
            .try_for_each(|((o, m), t)| {
                let view = t.to_plain_array_view::<f32>()?;
                let owned;
                let xs = match view.as_slice() {
                    Some(s) => s,
                    None => {
                        owned = view.iter().copied().collect::<Vec<_>>();
                        &owned
                    }
                };
                o.observe(xs);
                if let Some(m) = m {
                    m.add(xs, t.shape());
                }
                Ok::<(), tract_onnx::prelude::TractError>(())
            })
            .map_err(tract_err)?;
        bar.inc(1);
        Ok(())
    };
    let Some((first, rest)) = samples.split_first() else { return Ok(Observed { observers, is_float, means }) };
    let values = run(&mut runner, first)?;
    // Activation bytes scale with the input size: budget for the largest sample.
    let input_elems = |s: &Vec<Tensor>| s.iter().map(|t| t.len()).sum::<usize>().max(1);
    let largest = samples.iter().map(input_elems).max().unwrap_or(1);
    let bytes: usize = values.0.iter().map(|t| t.len() * 4).sum::<usize>() * largest / input_elems(first);
    take(values)?;
    if bytes > PIPELINE_BYTES {
        for sample in rest {
            take(run(&mut runner, sample)?)?;
        }
    } else {
        // tract runs the next sample on one thread while the others observe the last one (each
        // takes about half the time); the rendezvous channel keeps at most two samples alive.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(Vec<Tensor>, Vec<bool>)>>(0);
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
            rx.into_iter().try_for_each(|values| take(values?))
        })?;
    }
    bar.finish_and_clear();
    Ok(Observed { observers, is_float, means })
}

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
    samples: &[Vec<Tensor>],
    verify: Option<&[Vec<Tensor>]>,
    progress: bool,
) -> Result<CalibrationReport> {
    if cal.target_snr_db.is_some() && verify.is_none() {
        return Err(Error::Option {
            key: "calibration.target-snr-db".into(),
            message: "needs verify-data: held-out samples to measure the output SNR on".into(),
        });
    }
    let to_strings = |ops: &[&str]| ops.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let (op_types, sel) = match &cal.op_types {
        Some(ops) => (ops.clone(), select(quantized.graph(), ops, None)),
        None => {
            // The weight ops, then the elementwise and pass-through ops between them.
            let core = select(quantized.graph(), &to_strings(DEFAULT_ACTIVATION_OPS), None);
            let mut all = to_strings(DEFAULT_ACTIVATION_OPS);
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
    let Observed { observers, is_float, means } = observe(float, &sel.tensors, &axes, samples, progress)?;
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
        let reduced = if cal.full_range_weights { Vec::new() } else { reduce_weight_ranges(float, m, sel)? };
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
                let mut runner = Runner::for_model(float, &[], "the float model");
                let reference: Vec<Vec<Vec<f32>>> =
                    held_out.iter().map(|s| runner.run_f32(s)).collect::<Result<_>>()?;
                // The search runs on the weights every activation being quantized would get; the
                // model written gets them for the activations it keeps, so a weight op whose input
                // went back to float (a float op: nothing saturates) keeps its 8 bits.
                let mut trial = quantized.clone();
                finish_weights(&mut trial, &sel)?;
                let (keep, mut search) =
                    search_target(&trial, &sel, &activations, qtype, held_out, &reference, target)?;
                let sel = Selection { tensors: keep.iter().map(|a| a.tensor.clone()).collect(), ..sel };
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

/// Requantizes, from the float model's values, the int8 weights of the selected nodes that ONNX
/// Runtime runs as u8×s8 GEMM kernels (Conv except depthwise, MatMul, Gemm) to 7 bits, keeping
/// their layout. On x86 without VNNI those kernels add pairs of u8×s8 products in saturating
/// 16-bit lanes: with 8-bit weights a pair reaches 2 × 255 × 127 and overflows, which cost up to
/// 13 dB of output SNR on real models (BENCHMARKS.md); with 7 bits it cannot. Depthwise
/// convolutions use a kernel that accumulates in 32 bits and keep 8 bits. Returns each weight
/// requantized with its SQNR.
fn reduce_weight_ranges(float: &Model, quantized: &mut Model, sel: &Selection) -> Result<Vec<(String, f64)>> {
    use crate::quant::{Granularity, quantize, sqnr_db};
    let float_consts = crate::onnx::graph::constants(float.graph());
    let float_tensor = |name: &str| float_consts.get(name).copied();
    let g = quantized.graph_mut();
    let weights = dequantized_weights(g);
    let quantized_inputs: HashSet<&str> = sel.tensors.iter().map(String::as_str).collect();
    let mut names: Vec<String> = Vec::new();
    for &i in &sel.nodes {
        let n = &g.node[i];
        // Only ops whose input is quantized run as integer kernels.
        let Some((saturates, w)) = ops::spec(n).and_then(|s| Some((s.saturating_kernel?, s.weight?.input))) else {
            continue;
        };
        if !n.input.first().is_some_and(|x| quantized_inputs.contains(x.as_str())) {
            continue;
        }
        let Some(w) = n.input.get(w).filter(|w| weights.contains_key(w.as_str())) else { continue };
        let dims = float_tensor(w).map(|t| t.dims.clone()).unwrap_or_default();
        if saturates(n, &dims) && !names.contains(w) {
            names.push(w.clone());
        }
    }
    let mut out = Vec::new();
    for w in names {
        let dq = &weights[&w];
        if dq.attr("block_size").is_some() {
            continue;
        }
        let Some(ft) = float_tensor(&w) else { continue };
        let values = crate::onnx::tensor::finite_floats(ft)?;
        let dims: Vec<usize> = ft.dims.iter().map(|&d| d as usize).collect();
        let find =
            |name: Option<&String>| name.and_then(|n| g.initializer.iter().position(|t| t.name.as_ref() == Some(n)));
        let (Some(qi), Some(si)) = (find(dq.input.first()), find(dq.input.get(1))) else { continue };
        // Only 8-bit values can saturate: 4-bit weights (widened to int8 bytes) stay as they are.
        let stored = &g.initializer[qi];
        if stored.data_type != Some(dtype::INT8)
            || stored.raw_data.as_ref().is_none_or(|r| r.iter().all(|&b| (-64..=64).contains(&(b as i8))))
        {
            continue;
        }
        let zi = find(dq.input.get(2));
        let gran = if g.initializer[si].dims.is_empty() {
            Granularity::PerTensor
        } else {
            let axis = dq.attr("axis").and_then(|a| a.i).unwrap_or(1);
            Granularity::PerAxis { axis: if axis < 0 { axis + dims.len() as i64 } else { axis } as usize }
        };
        // The weight pass writes a zero point only for asymmetric weights.
        let symmetric = zi.is_none();
        let q = quantize(&values, &dims, QType::Int7, gran, symmetric);
        let sqnr = sqnr_db(&values, &dims, &q, QType::Int7, gran);
        g.initializer[qi].raw_data = Some(q.values.into());
        g.initializer[si].raw_data = Some(q.scales.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into());
        g.initializer[si].float_data.clear();
        if let Some(zi) = zi {
            g.initializer[zi].raw_data = Some(q.zero_points.iter().map(|&z| z as i8 as u8).collect::<Vec<u8>>().into());
            g.initializer[zi].int32_data.clear();
        }
        out.push((w, sqnr));
    }
    Ok(out)
}

/// The channel axis of each tensor of `sel` that is the data input of a selected Conv or Gemm:
/// bias correction needs its per-channel means.
fn channel_axes(g: &GraphProto, sel: &Selection) -> Vec<Option<usize>> {
    let mut axis_of: HashMap<&str, usize> = HashMap::new();
    for &i in &sel.nodes {
        let n = &g.node[i];
        let Some(axis) = ops::spec(n).and_then(|s| s.data_channel_axis).map(|axis| axis(n)) else { continue };
        if let Some(x) = n.input.first() {
            axis_of.insert(x, axis);
        }
    }
    sel.tensors.iter().map(|t| axis_of.get(t.as_str()).copied()).collect()
}

/// Σ (W_q − W)·E[x] per output channel of Conv/Gemm `n`: the mean shift of its output that
/// quantizing its weight (float `wf`, dequantized `wq`, shape `dims`) causes for input means `m`.
fn weight_shift(n: &NodeProto, wf: &[f32], wq: &[f32], dims: &[usize], m: &[f64]) -> Option<Vec<f64>> {
    (ops::spec(n)?.output_shift?)(n, wf, wq, dims, m)
}

/// Bias correction: quantizing a weight moves each output channel's mean by
/// Σ (W_q − W)·E[x]; with the per-channel input means measured during calibration, the float bias
/// of each selected Conv/Gemm absorbs that shift (a bias is added where there was none), before it
/// is quantized to int32. Returns the count of nodes corrected.
fn correct_biases(
    float: &Model,
    quantized: &mut Model,
    sel: &Selection,
    means: &HashMap<String, Vec<f64>>,
) -> Result<usize> {
    let float_consts = crate::onnx::graph::constants(float.graph());
    // First every node's shift, from the graph as it is; then the biases change.
    let shifts: Vec<(usize, Vec<f64>)> = {
        let g = quantized.graph();
        let weights = dequantized_weights(g);
        let consts = crate::onnx::graph::constants(g);
        sel.nodes
            .iter()
            .filter_map(|&i| {
                let n = &g.node[i];
                let (x, w) = (n.input.first()?, n.input.get(1)?);
                let (m, dq, ft) = (means.get(x)?, weights.get(w)?, float_consts.get(w.as_str())?);
                let wf = crate::onnx::tensor::finite_floats(ft).ok()?;
                let input =
                    |k: usize| dq.input.get(k).filter(|i| !i.is_empty()).and_then(|i| consts.get(i.as_str()).copied());
                let wq = crate::ops::quantized::dequantized(dq, input(0)?, input(1)?, input(2))?;
                let dims: Vec<usize> = ft.dims.iter().map(|&d| d as usize).collect();
                (wq.len() == wf.len()).then(|| weight_shift(n, &wf, &wq, &dims, m)).flatten().map(|c| (i, c))
            })
            .collect()
    };
    let mut names = Names::of_graph(quantized.graph());
    let g = quantized.graph_mut();
    let readers = crate::onnx::graph::readers(g);
    let mut corrected = 0;
    for (i, corr) in shifts {
        let w = g.node[i].input[1].clone();
        // The bias: an initializer or Constant read by this node alone, or a new one.
        let b = g.node[i].input.get(2).filter(|b| !b.is_empty()).cloned();
        let slot = match &b {
            Some(b) if readers.get(b).map(Vec::len) == Some(1) => {
                if let Some(t) = g.initializer.iter_mut().find(|t| t.name.as_ref() == Some(b)) {
                    Some(t)
                } else {
                    g.node
                        .iter_mut()
                        .find(|c| c.output.first() == Some(b) && constant_value(c).is_some())
                        .and_then(|c| c.attribute.iter_mut().find(|a| a.name.as_deref() == Some("value")))
                        .and_then(|a| a.t.as_mut())
                }
            }
            Some(_) => None,
            None => {
                let name = names.fresh(&format!("{}_bias", w));
                g.initializer.push(TensorProto {
                    name: Some(name.clone()),
                    data_type: Some(dtype::FLOAT),
                    dims: vec![corr.len() as i64],
                    raw_data: Some(vec![0u8; corr.len() * 4].into()),
                    ..Default::default()
                });
                g.node[i].input.resize(2, String::new());
                g.node[i].input.push(name);
                g.initializer.last_mut()
            }
        };
        let Some(t) = slot else { continue };
        let Ok(bias) = crate::onnx::tensor::finite_floats(t) else { continue };
        if t.dims.len() != 1 || bias.len() != corr.len() {
            continue;
        }
        let fixed: Vec<u8> =
            bias.iter().zip(&corr).flat_map(|(&b, &c)| ((b as f64 - c) as f32).to_le_bytes()).collect();
        t.raw_data = Some(fixed.into());
        t.float_data.clear();
        corrected += 1;
    }
    Ok(corrected)
}

/// Output SNR (dB) of `candidate` against the float outputs `reference` on `samples`.
fn output_snr(candidate: &Model, reference: &[Vec<Vec<f32>>], samples: &[Vec<Tensor>]) -> Result<f64> {
    let mut runner = Runner::for_model(candidate, &[], "the quantized model");
    let mut cmp = crate::verify::Comparison::default();
    for (sample, want) in samples.iter().zip(reference) {
        for (a, b) in want.iter().zip(runner.run_f32(sample)?) {
            cmp.add(a, &b);
        }
    }
    Ok(cmp.finish(samples.len()).snr_db)
}

/// Held-out samples each activation's own contribution is measured on.
const PROBE_SAMPLES: usize = 2;

/// The accuracy-target search: returns the activations to keep quantized and what it did.
/// `reference` holds the float model's outputs on `held_out`.
fn search_target(
    weights_only: &Model,
    sel: &Selection,
    activations: &[ActivationRange],
    qtype: QType,
    held_out: &[Vec<Tensor>],
    reference: &[Vec<Vec<f32>>],
    target: f64,
) -> Result<(Vec<ActivationRange>, TargetSearch)> {
    // Each activation's own contribution to the output error: the weight-only model with that one
    // activation quantized, against the weight-only model, on a few held-out samples.
    let probe = &held_out[..held_out.len().min(PROBE_SAMPLES)];
    let mut wo = Runner::for_model(weights_only, &[], "the weight-quantized model");
    let wo_reference: Vec<Vec<Vec<f32>>> = probe.iter().map(|s| wo.run_f32(s)).collect::<Result<_>>()?;
    let mut alone = Vec::with_capacity(activations.len());
    for a in activations {
        let mut candidate = weights_only.clone();
        let one = Selection {
            tensors: vec![a.tensor.clone()],
            nodes: sel.nodes.clone(),
            uses: vec![],
            tied: vec![],
            skipped: vec![],
        };
        rewrite(&mut candidate, &one, std::slice::from_ref(a), qtype);
        alone.push(output_snr(&candidate, &wo_reference, probe)?);
    }
    // Worst first: the lowest output SNR when quantized alone.
    let mut order: Vec<usize> = (0..activations.len()).collect();
    order.sort_by(|&a, &b| alone[a].total_cmp(&alone[b]).then(a.cmp(&b)));
    let mut trials: Vec<(usize, f64)> = Vec::new();
    let mut measure = |k: usize| -> Result<f64> {
        if let Some(&(_, snr)) = trials.iter().find(|(n, _)| *n == k) {
            return Ok(snr);
        }
        let returned: HashSet<usize> = order[..k].iter().copied().collect();
        let keep: Vec<ActivationRange> =
            (0..activations.len()).filter(|i| !returned.contains(i)).map(|i| activations[i].clone()).collect();
        let mut candidate = weights_only.clone();
        let trial = Selection {
            tensors: keep.iter().map(|a| a.tensor.clone()).collect(),
            nodes: sel.nodes.clone(),
            uses: vec![],
            tied: vec![],
            skipped: vec![],
        };
        rewrite(&mut candidate, &trial, &keep, qtype);
        let snr = output_snr(&candidate, reference, held_out)?;
        trials.push((k, snr));
        Ok(snr)
    };
    let all = measure(0)?;
    let n = activations.len();
    let k = if all >= target {
        0
    } else {
        let none = measure(n)?;
        if none < target {
            return Err(Error::Gate {
                gate: "target-snr-db".into(),
                message: format!(
                    "even with every activation in float the weights alone give {none:.2} dB on the verification data, below the {target} dB target; quantize fewer weights (exclude, layer-bits) or lower the target"
                ),
            });
        }
        // Smallest count that reaches the target: measure(lo) < target <= measure(hi).
        let (mut lo, mut hi) = (0, n);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if measure(mid)? >= target { hi = mid } else { lo = mid }
        }
        hi
    };
    let reached = trials.iter().find(|(c, _)| *c == k).map(|t| t.1).unwrap_or(all);
    let returned: HashSet<usize> = order[..k].iter().copied().collect();
    let keep = (0..n).filter(|i| !returned.contains(i)).map(|i| activations[i].clone()).collect();
    let search = TargetSearch {
        target_db: target,
        reached_db: reached,
        all_quantized_db: all,
        returned_to_float: order[..k].iter().map(|&i| activations[i].tensor.clone()).collect(),
        alone_db: order.iter().map(|&i| (activations[i].tensor.clone(), alone[i])).collect(),
        trials,
    };
    Ok((keep, search))
}

fn scalar(name: String, data_type: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto { name: Some(name), data_type: Some(data_type), raw_data: Some(raw.into()), ..Default::default() }
}

fn qdq_pair(
    names: &mut Names,
    t: &str,
    r: &ActivationRange,
    qtype: QType,
) -> (Vec<NodeProto>, Vec<TensorProto>, String) {
    let s = names.fresh(&format!("{t}_scale"));
    let z = names.fresh(&format!("{t}_zero_point"));
    let q_out = names.fresh(&format!("{t}_quantized"));
    let dq_out = names.fresh(&format!("{t}_dequantized"));
    let zp_byte = if qtype.signed() { r.zero_point as i8 as u8 } else { r.zero_point as u8 };
    let inits = vec![
        scalar(s.clone(), dtype::FLOAT, r.scale.to_le_bytes().to_vec()),
        scalar(z.clone(), qtype.onnx_dtype(false), vec![zp_byte]),
    ];
    let q = NodeProto {
        name: Some(names.fresh(&format!("{t}_QuantizeLinear"))),
        op_type: Some(ops::QUANTIZE_LINEAR.into()),
        input: vec![t.to_string(), s.clone(), z.clone()],
        output: vec![q_out.clone()],
        ..Default::default()
    };
    let dq = NodeProto {
        name: Some(names.fresh(&format!("{t}_DequantizeLinear"))),
        op_type: Some(ops::DEQUANTIZE_LINEAR.into()),
        input: vec![q_out, s, z],
        output: vec![dq_out.clone()],
        ..Default::default()
    };
    (vec![q, dq], inits, dq_out)
}

/// Inserts a Q→DQ pair after each selected activation (every reader switches to the DQ output),
/// and rewrites float biases of quantized Conv/Gemm nodes as int32. Returns the bias count.
fn rewrite(model: &mut Model, sel: &Selection, ranges: &[ActivationRange], qtype: QType) -> usize {
    let mut names = Names::of_graph(model.graph());
    let g = model.graph_mut();
    let by_name: HashMap<&str, &ActivationRange> = ranges.iter().map(|r| (r.tensor.as_str(), r)).collect();
    let mut pairs: HashMap<String, (Vec<NodeProto>, String)> = HashMap::new();
    let mut new_inits = Vec::new();
    for t in &sel.tensors {
        let (nodes, inits, dq_out) = qdq_pair(&mut names, t, by_name[t.as_str()], qtype);
        new_inits.extend(inits);
        pairs.insert(t.clone(), (nodes, dq_out));
    }
    let biases = quantize_biases(g, sel, &by_name, &pairs, &mut names, &mut new_inits);
    // Readers switch to the dequantized value; the Q node itself keeps reading the float tensor.
    let dq_of: HashMap<&str, &str> = pairs.iter().map(|(t, (_, d))| (t.as_str(), d.as_str())).collect();
    for n in g.node.iter_mut() {
        for input in n.input.iter_mut() {
            if let Some(d) = dq_of.get(input.as_str()) {
                *input = d.to_string();
            }
        }
    }
    // Place each pair right after the node producing its tensor (graph inputs: at the start).
    let mut pending: BTreeMap<String, Vec<NodeProto>> = pairs.into_iter().map(|(t, (n, _))| (t, n)).collect();
    let mut nodes = Vec::with_capacity(g.node.len() + 2 * pending.len());
    let graph_inputs: Vec<String> = g.input.iter().filter_map(|v| v.name.clone()).collect();
    for i in graph_inputs {
        if let Some(p) = pending.remove(&i) {
            nodes.extend(p);
        }
    }
    for n in std::mem::take(&mut g.node) {
        let outs = n.output.clone();
        nodes.push(n);
        for o in outs {
            if let Some(p) = pending.remove(&o) {
                nodes.extend(p);
            }
        }
    }
    g.node = nodes;
    g.initializer.extend(new_inits);
    biases
}

/// Conv/Gemm biases become int32 with scale = input scale × weight scale, so ONNX Runtime can fuse
/// the node into an integer kernel.
fn quantize_biases(
    g: &mut GraphProto,
    sel: &Selection,
    ranges: &HashMap<&str, &ActivationRange>,
    pairs: &HashMap<String, (Vec<NodeProto>, String)>,
    names: &mut Names,
    new_inits: &mut Vec<TensorProto>,
) -> usize {
    let weights = dequantized_weights(g);
    let inits: HashMap<String, usize> =
        g.initializer.iter().enumerate().filter_map(|(i, t)| t.name.clone().map(|n| (n, i))).collect();
    let mut count = 0;
    let mut dq_nodes = Vec::new();
    for &i in &sel.nodes {
        let n = &g.node[i];
        if ops::spec(n).and_then(|s| s.int32_bias) != Some(2) || n.input.len() < 3 || n.input[2].is_empty() {
            continue;
        }
        let (x, w, b) = (&n.input[0], &n.input[1], &n.input[2]);
        let (Some(xr), Some(wdq)) = (ranges.get(x.as_str()), weights.get(w)) else { continue };
        if !pairs.contains_key(x) {
            continue;
        }
        // The weight's scales (and axis) from its DequantizeLinear; only per-tensor/per-axis.
        if wdq.attr("block_size").is_some() {
            continue;
        }
        let Some(ws) = wdq.input.get(1).and_then(|s| inits.get(s)).map(|&k| &g.initializer[k]) else { continue };
        let Ok(w_scales) = crate::onnx::tensor::finite_floats(ws) else { continue };
        let Some(bt) = inits
            .get(b)
            .map(|&k| &g.initializer[k])
            .or_else(|| g.node.iter().find(|c| c.output.first() == Some(b)).and_then(constant_value))
        else {
            continue;
        };
        let Ok(bias) = crate::onnx::tensor::finite_floats(bt) else { continue };
        if bt.dims.len() != 1 || (w_scales.len() != 1 && w_scales.len() != bias.len()) {
            continue;
        }
        let scales: Vec<f32> =
            (0..bias.len()).map(|c| xr.scale * w_scales[if w_scales.len() == 1 { 0 } else { c }]).collect();
        let q: Option<Vec<i32>> = bias
            .iter()
            .zip(&scales)
            .map(|(&v, &s)| {
                let q = (v as f64 / s as f64).round();
                (s > 0.0 && q.abs() < i32::MAX as f64).then_some(q as i32)
            })
            .collect();
        let Some(q) = q else { continue };
        let qb = names.fresh(&format!("{b}_quantized"));
        let sb = names.fresh(&format!("{b}_scale"));
        let out = names.fresh(&format!("{b}_dequantized"));
        new_inits.push(TensorProto {
            name: Some(qb.clone()),
            data_type: Some(dtype::INT32),
            dims: bt.dims.clone(),
            raw_data: Some(q.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
            ..Default::default()
        });
        new_inits.push(TensorProto {
            name: Some(sb.clone()),
            data_type: Some(dtype::FLOAT),
            dims: bt.dims.clone(),
            raw_data: Some(scales.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
            ..Default::default()
        });
        let mut dq = NodeProto {
            name: Some(names.fresh(&format!("{b}_DequantizeLinear"))),
            op_type: Some(ops::DEQUANTIZE_LINEAR.into()),
            input: vec![qb, sb],
            output: vec![out.clone()],
            ..Default::default()
        };
        dq.set_attr_int("axis", 0);
        dq_nodes.push((i, dq, out));
        count += 1;
    }
    // Insert each bias DQ just before its node (indices shift as we go, so go from the back).
    dq_nodes.sort_by_key(|(i, _, _)| std::cmp::Reverse(*i));
    for (i, dq, out) in dq_nodes {
        g.node[i].input[2] = out;
        g.node.insert(i, dq);
    }
    crate::fold::drop_unused(g);
    count
}
