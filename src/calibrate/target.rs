//! Accuracy-target mode: measure each activation's own contribution to the output error and
//! return the worst to float until the output SNR on held-out data reaches the target.

use std::collections::{HashMap, HashSet};

use crate::onnx::graph::NodeExt;

use tract_onnx::prelude::Tensor;

use super::*;
use crate::error::{Error, Result};
use crate::onnx::model::Model;
use crate::quant::QType;
use crate::run::Runner;
use crate::verify::{OutputsComparison, Values, run_values};

/// Output SNR (dB) of `candidate` against the outputs `reference` on `samples`: the worst float
/// output's, minus infinity when an integer output differs (see [`crate::verify`]).
pub(super) fn output_snr(candidate: &Model, reference: &[Vec<Values>], samples: &[Vec<Tensor>]) -> Result<f64> {
    let mut runner = Runner::for_model(candidate, &[], "the quantized model");
    let mut cmp = OutputsComparison::new(runner.outputs().to_vec());
    for (sample, want) in samples.iter().zip(reference) {
        cmp.add(want, &run_values(&mut runner, sample)?);
    }
    Ok(cmp.finish(samples.len()).score())
}

/// The smallest, over the float outputs, of `(Σ e_i)² / Σ e_i²` with `e_i` the energy of sample
/// `i`'s output in `reference` (see [`TargetSearch::effective_samples`]); the sample count when
/// there is no float output or no signal at all.
pub(super) fn effective_samples(reference: &[Vec<Values>]) -> f64 {
    let outputs = reference.first().map_or(0, Vec::len);
    let mut smallest = reference.len() as f64;
    for k in 0..outputs {
        let energies: Vec<f64> = reference
            .iter()
            .filter_map(|s| match s.get(k) {
                Some(Values::Float(v)) => Some(v.iter().map(|&x| x as f64 * x as f64).sum()),
                _ => None,
            })
            .collect();
        let (sum, sq): (f64, f64) = energies.iter().fold((0.0, 0.0), |(s, q), &e| (s + e, q + e * e));
        if energies.len() == reference.len() && sq > 0.0 && sum.is_finite() {
            smallest = smallest.min(sum * sum / sq);
        }
    }
    smallest
}

/// The outputs of `model` on each of `samples`.
pub(super) fn reference_outputs(model: &Model, what: &str, samples: &[Vec<Tensor>]) -> Result<Vec<Vec<Values>>> {
    let mut runner = Runner::for_model(model, &[], what);
    samples.iter().map(|s| run_values(&mut runner, s)).collect()
}

/// `m` with the quantized weights named in `names` (outputs of DequantizeLinear nodes of its
/// main graph) back to their float values from `float_consts`: each such DequantizeLinear
/// becomes an Identity of a float initializer, so node indices stay put.
pub(super) fn with_float_weights(
    m: &Model,
    float_consts: &std::collections::HashMap<&str, &crate::onnx::proto::TensorProto>,
    names: &HashSet<&str>,
) -> Model {
    let mut out = m.clone();
    let mut fresh = crate::onnx::graph::Names::of_graph(out.graph());
    let g = out.graph_mut();
    let mut added = Vec::new();
    for n in g.node.iter_mut() {
        let Some(w) = n.output.first().filter(|o| names.contains(o.as_str())) else { continue };
        let Some(t) = float_consts.get(w.as_str()).filter(|_| crate::ops::is(n, crate::ops::DEQUANTIZE_LINEAR)) else {
            continue;
        };
        let mut t = (*t).clone();
        let name = fresh.fresh(&format!("{w}_float"));
        t.name = Some(name.clone());
        added.push(t);
        n.op_type = Some(crate::ops::IDENTITY.into());
        n.input = vec![name];
        n.attribute.clear();
    }
    g.initializer.extend(added);
    let read: HashSet<String> = g.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
    g.initializer.retain(|t| t.name.as_ref().is_some_and(|n| read.contains(n)));
    out
}

/// The weights stepped up, worst first, and every eligible weight with its own figure.
pub(super) type WeightSearch = (Vec<String>, Vec<(String, f64)>);

/// One step up in precision for a set of weights: `m` with the weights named stepped (to float,
/// or from 4 to 8 bits).
pub(super) type Step<'a> = dyn Fn(&Model, &HashSet<&str>) -> Result<Model> + 'a;

/// The `eligible` weights of `weights_only` that `step` takes up a level, worst first (each
/// weight's own contribution: the model with every other eligible weight stepped up, on the
/// first held-out samples), as few as a bisection over their count needs for the weights alone
/// to reach `target`; all of them when even that misses it. Each candidate gets its weights
/// `finish`ed as the model written would (7-bit kernels, biases corrected for the weights still
/// quantized). Returns them and every eligible weight's figure.
#[allow(clippy::too_many_arguments)] // the models, the step, how weights are finished, the data and the options
pub(super) fn search_weights(
    weights_only: &Model,
    eligible: &[String],
    step: &Step,
    finish: &dyn Fn(&mut Model) -> Result<()>,
    held_out: &[Vec<Tensor>],
    reference: &[Vec<Values>],
    target: f64,
    opts: &crate::control::RunOptions,
) -> Result<WeightSearch> {
    let ranked = rank_alone(weights_only, eligible, step, finish, held_out, reference, opts)?;
    let stepped = |k: usize| -> HashSet<&str> { ranked[..k].iter().map(|(w, _)| w.as_str()).collect() };
    let measure = |k: usize| -> Result<f64> {
        opts.check_cancelled()?;
        let mut candidate = step(weights_only, &stepped(k))?;
        finish(&mut candidate)?;
        output_snr(&candidate, reference, held_out)
    };
    // measure(0) < target (the caller saw it); the smallest count that reaches the target lies
    // above, or is every weight when measure(n) misses it too (the bisection then ends at n).
    let (mut lo, mut hi) = (0, ranked.len());
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if measure(mid)? >= target { hi = mid } else { lo = mid }
    }
    let names = ranked[..hi].iter().map(|(w, _)| w.clone()).collect();
    Ok((names, ranked))
}

/// Each of the `eligible` weights with its own figure, worst first: `base` with every other
/// eligible weight stepped up, `finish`ed, on the first held-out samples (ties in name order).
pub(super) fn rank_alone(
    base: &Model,
    eligible: &[String],
    step: &Step,
    finish: &dyn Fn(&mut Model) -> Result<()>,
    held_out: &[Vec<Tensor>],
    reference: &[Vec<Values>],
    opts: &crate::control::RunOptions,
) -> Result<Vec<(String, f64)>> {
    let mut weights = eligible.to_vec();
    weights.sort();
    let probe = &held_out[..held_out.len().min(PROBE_SAMPLES)];
    let probe_reference = &reference[..probe.len()];
    let mut ranked = Vec::with_capacity(weights.len());
    for w in &weights {
        let others: HashSet<&str> = weights.iter().filter(|o| *o != w).map(String::as_str).collect();
        opts.check_cancelled()?;
        let mut candidate = step(base, &others)?;
        finish(&mut candidate)?;
        ranked.push((w.clone(), output_snr(&candidate, probe_reference, probe)?));
    }
    // Stable: equal figures keep name order.
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    Ok(ranked)
}

/// The quantized weights of `g`'s main graph that hold 4-bit values: stored as INT4/UINT4, or
/// widened to INT8/UINT8 bytes that all lie in the 4-bit range (an 8-bit quantization puts a
/// group's extremes at the ends of the 8-bit range, so a weight that uses none of it is a 4-bit
/// one, or all zeros, which no step changes).
pub(super) fn four_bit_weights(g: &crate::onnx::proto::GraphProto) -> Vec<String> {
    use crate::onnx::proto::dtype;
    let inits: HashMap<&str, &crate::onnx::proto::TensorProto> =
        g.initializer.iter().filter_map(|t| t.name.as_deref().map(|n| (n, t))).collect();
    let mut out: Vec<String> = dequantized_weights(g)
        .into_iter()
        .filter(|(_, dq)| {
            let Some(t) = dq.input.first().and_then(|v| inits.get(v.as_str())) else { return false };
            let raw = t.raw_data.as_deref().unwrap_or_default();
            match t.data_type {
                Some(dtype::INT4) | Some(dtype::UINT4) => true,
                Some(dtype::INT8) => !raw.is_empty() && raw.iter().all(|&b| (-8..=7).contains(&(b as i8))),
                Some(dtype::UINT8) => !raw.is_empty() && raw.iter().all(|&b| b <= 15),
                _ => false,
            }
        })
        .map(|(name, _)| name)
        .collect();
    out.sort();
    out
}

/// `m` with the 4-bit weights named in `names` (outputs of DequantizeLinear nodes of its main
/// graph) quantized again from their float values in `float_consts` at 8 bits, in the same
/// layout (per tensor, per channel or blocked), signedness and symmetry, stored as INT8/UINT8.
pub(super) fn with_8bit_weights(
    m: &Model,
    float_consts: &HashMap<&str, &crate::onnx::proto::TensorProto>,
    names: &HashSet<&str>,
    range: crate::quant::RangeSearch,
) -> Result<Model> {
    use crate::onnx::proto::dtype;
    use crate::quant::{Granularity, Symmetry, quantize_measured};
    let mut out = m.clone();
    let g = out.graph_mut();
    let position = |g: &crate::onnx::proto::GraphProto, name: Option<&String>| {
        name.and_then(|n| g.initializer.iter().position(|t| t.name.as_ref() == Some(n)))
    };
    let dqs: Vec<crate::onnx::proto::NodeProto> = g
        .node
        .iter()
        .filter(|n| crate::ops::is(n, crate::ops::DEQUANTIZE_LINEAR))
        .filter(|n| n.output.first().is_some_and(|o| names.contains(o.as_str())))
        .cloned()
        .collect();
    for dq in dqs {
        let w = &dq.output[0];
        let Some(ft) = float_consts.get(w.as_str()) else { continue };
        let (Some(qi), Some(si)) = (position(g, dq.input.first()), position(g, dq.input.get(1))) else { continue };
        let zi = position(g, dq.input.get(2));
        let values = crate::onnx::tensor::finite_floats(ft)?;
        let dims: Vec<usize> = ft.dims.iter().map(|&d| d as usize).collect();
        let signed = matches!(g.initializer[qi].data_type, Some(dtype::INT4) | Some(dtype::INT8));
        let axis = dq.attr("axis").and_then(|a| a.i).unwrap_or(1);
        let axis = if axis < 0 { axis + dims.len() as i64 } else { axis } as usize;
        let gran = match (g.initializer[si].dims.is_empty(), dq.attr("block_size").and_then(|a| a.i)) {
            (true, _) => Granularity::PerTensor,
            (false, Some(block)) if block > 0 => Granularity::Blocked { axis, block: block as usize },
            (false, _) => Granularity::PerAxis { axis },
        };
        let qtype = if signed { QType::Int8 } else { QType::Uint8 };
        let stored_zero: Vec<u8> = zi.and_then(|z| g.initializer[z].raw_data.as_deref()).unwrap_or_default().to_vec();
        // Signed: no zero point, or zeros; unsigned: the middle, 8 (two of them in a packed byte).
        let symmetric = if signed {
            stored_zero.iter().all(|&b| b == 0)
        } else {
            zi.is_some() && stored_zero.iter().all(|&b| b == 8 || b == 0x88)
        };
        let symmetry = if symmetric { Symmetry::Symmetric } else { Symmetry::Asymmetric };
        let (q, _) = quantize_measured(&values, &dims, qtype, gran, symmetry, range, None);
        let stored = if signed { dtype::INT8 } else { dtype::UINT8 };
        let t = &mut g.initializer[qi];
        (t.data_type, t.raw_data, t.int32_data) = (Some(stored), Some(q.values.into()), Vec::new());
        let s = &mut g.initializer[si];
        (s.raw_data, s.float_data) = (Some(crate::onnx::tensor::le_bytes(&q.scales).into()), Vec::new());
        if let Some(zi) = zi {
            let z = &mut g.initializer[zi];
            let bytes: Vec<u8> = q.zero_points.iter().map(|&z| if signed { z as i8 as u8 } else { z as u8 }).collect();
            (z.data_type, z.raw_data, z.int32_data) = (Some(stored), Some(bytes.into()), Vec::new());
        }
    }
    Ok(out)
}

/// Held-out samples each activation's own contribution is measured on.
pub(super) const PROBE_SAMPLES: usize = 2;

/// The accuracy-target search: returns the activations to keep quantized and what it did.
/// `reference` holds the float model's outputs on `held_out`. `build` makes the model that would
/// be written with a given set of activations quantized (its weights finished for exactly those):
/// every count tried is measured on that model, so the count chosen reaches the target on the
/// verification data in the file written, not only in a stand-in.
#[allow(clippy::too_many_arguments)] // the model, its plan, the data and the options: all needed
pub(super) fn search_target(
    weights_only: &Model,
    build: &dyn Fn(&[ActivationRange]) -> Result<Model>,
    sel: &Selection,
    activations: &[ActivationRange],
    qtype: QType,
    held_out: &[Vec<Tensor>],
    reference: &[Vec<Values>],
    target: f64,
    opts: &crate::control::RunOptions,
) -> Result<(Vec<ActivationRange>, TargetSearch)> {
    // Each activation's own contribution to the output error: the weight-only model with that one
    // activation quantized, against the weight-only model, on a few held-out samples.
    let probe = &held_out[..held_out.len().min(PROBE_SAMPLES)];
    let wo_reference = reference_outputs(weights_only, "the weight-quantized model", probe)?;
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
        opts.check_cancelled()?;
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
        let candidate = build(&keep)?;
        opts.check_cancelled()?;
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
        weights_to_8_bits: Vec::new(),
        four_bit_alone_db: Vec::new(),
        weights_returned_to_float: Vec::new(),
        weight_alone_db: Vec::new(),
        effective_samples: effective_samples(reference),
    };
    Ok((keep, search))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_samples_count_the_samples_that_carry_the_signal() {
        let f = |v: &[f32]| Values::Float(v.to_vec());
        let equal = vec![vec![f(&[1.0, -1.0])], vec![f(&[-1.0, 1.0])], vec![f(&[1.0, 1.0])]];
        assert!((effective_samples(&equal) - 3.0).abs() < 1e-9);
        // One sample with all the signal, two with almost none.
        let one = vec![vec![f(&[10.0])], vec![f(&[0.01])], vec![f(&[0.0])]];
        assert!(effective_samples(&one) < 1.01);
        // The smallest over the float outputs; integer outputs do not count.
        let mixed = vec![
            vec![f(&[1.0]), f(&[5.0]), Values::Integer(vec![7])],
            vec![f(&[1.0]), f(&[0.0]), Values::Integer(vec![0])],
        ];
        assert!((effective_samples(&mixed) - 1.0).abs() < 1e-9);
        // No signal at all: the sample count.
        assert_eq!(effective_samples(&[vec![f(&[0.0])], vec![f(&[0.0])]]), 2.0);
    }
}
