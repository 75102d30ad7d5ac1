//! The accuracy target for weight-only models (`quantize --data D --verify-data V
//! --target-snr-db X`): the fewest weights, worst first, go from 4 to 8 bits, then (if that is
//! not enough) from quantized to float, until the output SNR on the verification data reaches X.
//!
//! Every count tried is the whole weight job run again with those weights overridden (as
//! `layer-bits` entries: GPTQ rounding and bias correction redone for the model as written), so
//! the figure the search stops at is the file's. Only the order (each weight's own contribution)
//! comes from a cheaper stand-in: the first model with every other eligible weight stepped up in
//! place, on the first held-out samples.

use std::collections::{BTreeMap, HashSet};

use tract_onnx::prelude::Tensor;

use super::target::{
    effective_samples, four_bit_weights, output_snr, rank_alone, reference_outputs, with_8bit_weights,
    with_float_weights,
};
use crate::control::RunOptions;
use crate::error::Result;
use crate::onnx::model::Model;
use crate::quantize::{Report, WeightTarget};

/// A weight job run with extra per-weight bits (8, or 32 for float): the model and its report.
pub type Build<'a> = dyn Fn(&BTreeMap<String, u8>) -> Result<(Model, Report)> + 'a;

/// Runs the search. `float` is the model the weights are quantized from (after the prepare step:
/// the names the weight job sees), `build` the weight job.
pub fn weight_only_target(
    float: &Model,
    build: &Build,
    held_out: &[Vec<Tensor>],
    target: f64,
    range: crate::quant::RangeSearch,
    opts: &RunOptions,
) -> Result<(Model, Report, WeightTarget)> {
    let reference = reference_outputs(float, "the float model", held_out)?;
    let float_consts = crate::onnx::graph::constants(float.graph());
    let mut t =
        WeightTarget { target_db: target, effective_samples: effective_samples(&reference), ..Default::default() };
    let mut overrides: BTreeMap<String, u8> = BTreeMap::new();
    let (model, report) = build(&overrides)?;
    let snr = output_snr(&model, &reference, held_out)?;
    t.trials.push((0, 0, snr));
    (t.recipe_db, t.reached_db) = (snr, snr);
    let mut best = (model, report);
    if snr >= target {
        return Ok((best.0, best.1, t));
    }
    // Step 1: 4-bit weights to 8 bits; step 2: quantized weights to float.
    for bits in [8u8, 32] {
        let eligible: Vec<String> = if bits == 8 {
            four_bit_weights(best.0.graph())
        } else {
            super::select::dequantized_weights(best.0.graph())
                .into_keys()
                .filter(|w| float_consts.contains_key(w.as_str()))
                .collect()
        };
        if eligible.is_empty() {
            continue;
        }
        let step = |m: &Model, names: &HashSet<&str>| -> Result<Model> {
            if bits == 8 {
                with_8bit_weights(m, &float_consts, names, range)
            } else {
                Ok(with_float_weights(m, &float_consts, names))
            }
        };
        // Each weight's own contribution: every other eligible weight stepped up in place.
        let ranked = rank_alone(&best.0, &eligible, &step, &|_| Ok(()), held_out, &reference, opts)?;
        // The smallest count, worst first, whose rebuilt model reaches the target.
        let with = |k: usize| -> BTreeMap<String, u8> {
            let mut o = overrides.clone();
            o.extend(ranked[..k].iter().map(|(w, _)| (w.clone(), bits)));
            o
        };
        // Only the model of the current upper end can still be chosen: the others are dropped
        // as soon as they are measured (a large model's copies add up).
        let measure = |k: usize, t: &mut WeightTarget| -> Result<(Model, Report, f64)> {
            opts.check_cancelled()?;
            let o = with(k);
            let (m, r) = build(&o)?;
            let snr = output_snr(&m, &reference, held_out)?;
            let (eights, floats) = (o.values().filter(|&&b| b == 8).count(), o.values().filter(|&&b| b == 32).count());
            t.trials.push((eights, floats, snr));
            Ok((m, r, snr))
        };
        let n = ranked.len();
        let mut chosen = measure(n, &mut t)?;
        let mut k = n;
        if chosen.2 >= target {
            let mut lo = 0;
            while k - lo > 1 {
                let mid = (lo + k) / 2;
                let tried = measure(mid, &mut t)?;
                if tried.2 >= target {
                    (k, chosen) = (mid, tried);
                } else {
                    lo = mid;
                }
            }
        }
        let (m, r, snr) = chosen;
        overrides = with(k);
        let chosen: Vec<String> = ranked[..k].iter().map(|(w, _)| w.clone()).collect();
        if bits == 8 {
            (t.weights_to_8_bits, t.four_bit_alone_db) = (chosen, ranked);
        } else {
            (t.weights_returned_to_float, t.weight_alone_db) = (chosen, ranked);
        }
        t.reached_db = snr;
        best = (m, r);
        if snr >= target {
            break;
        }
    }
    Ok((best.0, best.1, t))
}
