//! One job, every front door: quantize the weights, calibrate activations when the recipe asks,
//! verify on held-out data and apply the recipe's quality gates. The CLI, `quantize-build` and
//! library users all call [`run`], so they can never disagree about what a recipe means.

use std::path::Path;

pub use crate::control::RunOptions;
use crate::error::{Error, Result};
use crate::onnx::model::Model;
use crate::quantize::Report;
use crate::recipe::Recipe;
pub use crate::verify::Verification;
use crate::verify::verify;

#[cfg(feature = "tract")]
pub use crate::calibrate::CalibrationReport;
/// Calibration needs the `tract` feature; without it there is never a report.
#[cfg(not(feature = "tract"))]
#[derive(Debug, Clone, serde::Serialize)]
pub enum CalibrationReport {}

/// What a job produced.
#[derive(Debug)]
pub struct Outcome {
    /// The quantized model.
    pub model: Model,
    /// What was quantized and how.
    pub report: Report,
    /// What calibration did, for static quantization.
    pub calibration: Option<CalibrationReport>,
    /// Quality on `verify-data`, when given.
    pub verification: Option<Verification>,
    /// Encoded size of the input model.
    pub bytes_in: u64,
    /// Encoded size of the output model.
    pub bytes_out: u64,
}

/// Runs `recipe` on `model`. Relative data paths in the recipe resolve against `base_dir`.
pub fn run(model: Model, recipe: &Recipe, base_dir: &Path) -> Result<Outcome> {
    run_with(model, recipe, base_dir, &RunOptions::default())
}

/// [`run`] with options.
pub fn run_with(mut model: Model, recipe: &Recipe, base_dir: &Path, opts: &RunOptions) -> Result<Outcome> {
    recipe.validate("")?;
    check_connections(&model, "the model is broken before quantization; re-export it, or repair it")?;
    let bytes_in = prost::Message::encoded_len(&model.proto) as u64;
    let constant_inputs = constants_as_inputs(&model);
    check_fits_in_memory(&model, recipe, bytes_in, crate::onnx::model::memory_available())?;
    let original = (recipe.calibration.is_some() || recipe.verify_data.is_some()).then(|| model.clone());
    // Per-channel affine ops (batch norm) are folded into the convolutions before them first (see
    // `rewrite`): ONNX Runtime would fold them in the float model but cannot once the weight is behind
    // a DequantizeLinear, static quantization needs the folded output, and the file gets smaller.
    // The folded float model is what calibration observes.
    // Weight-only per-tensor quantization is the exception: one scale for the whole folded weight
    // would have to cover channels the batch norm scaled apart.
    // Calibration samples given for the weights only (`weight-only`) keep the model weight-only.
    let static_cal = recipe.calibration.as_ref().filter(|c| !c.weight_only);
    let weight_data = recipe.calibration.as_ref().filter(|c| c.weight_only);
    let fold = static_cal.is_some() || recipe.per_channel || recipe.block_size.is_some();
    // Static quantization also folds the affine ops after an activation into the convolution
    // that reads them, writes hard-swish as one op and a softmax over a middle axis as
    // elementwise ops: fewer and faster float passes between the integer kernels (see
    // `rewrite`). Weight-only models keep their float graph as it is. Calibration drops unused
    // constants anyway.
    let rewrites = static_cal.is_some_and(|c| c.graph_rewrites);
    let equalize = static_cal.is_some_and(|c| c.equalize);
    let prepared = crate::rewrite::prepare(&mut model, fold, rewrites, equalize, static_cal.is_some());
    // Folding may have removed constants that were inputs too (IR 3): not data to feed now.
    drop_orphaned_inputs(&mut model, &constant_inputs);
    // Dynamic and static quantization with samples first split the outlier input channels of
    // the matrix products into small float products (see `rewrite::outliers`); their weights
    // stay float. (Weight-only models keep their graph.)
    let mut split_recipe;
    // Dynamic quantization without samples probes a token model (integer ids into embedding
    // tables) with random ids instead: its outlier channels do not depend on the text.
    let split = match (recipe.dynamic, weight_data, static_cal.filter(|c| c.graph_rewrites)) {
        (true, Some(cal), _) | (false, _, Some(cal)) => split_outliers(&mut model, Some(cal), base_dir, opts)?,
        (true, None, _) => split_outliers(&mut model, None, base_dir, opts)?,
        _ => None,
    };
    let (recipe, outliers) = match split {
        Some(split) => {
            split_recipe = recipe.clone();
            split_recipe.exclude.extend(split.float_weights.iter().map(|w| globset::escape(w)));
            (&split_recipe, Some(split))
        }
        None => (recipe, None),
    };
    let folded_float = recipe.calibration.as_ref().map(|_| model.clone());
    let mut weights = match (weight_data, &folded_float) {
        (Some(cal), Some(float)) => data_aware_weights(float, &mut model, recipe, cal, base_dir, opts)?,
        _ => crate::quantize::quantize_model_with(&mut model, recipe, None, opts)?,
    };
    if let Some(o) = &outliers {
        // Its own side weights are no user's exclusion: listed with the other float constants.
        let side: std::collections::HashSet<&str> = o.float_weights.iter().map(String::as_str).collect();
        for k in weights.skipped.iter_mut().filter(|k| side.contains(k.name.as_str())) {
            k.is_weight = false;
            k.reason = "the float side product of an outlier split".into();
        }
    }
    weights.outliers = outliers;
    if recipe.dynamic {
        weights.dynamic = Some(crate::dynamic::make_dynamic(&mut model)?);
    }
    opts.check_cancelled()?;
    let calibration = match (static_cal, &folded_float) {
        (Some(cal), Some(float)) => Some(calibrate(float, &mut model, recipe, cal, base_dir, opts)?),
        _ => None,
    };
    let report = combine_reports(weights, prepared, calibration.as_ref());
    let bytes_out = prost::Message::encoded_len(&model.proto) as u64;
    let verification = match (&recipe.verify_data, &original) {
        (Some(data), Some(float)) => Some(verify(
            float,
            &model,
            &base_dir.join(data),
            recipe.calibration.as_ref().and_then(|c| c.image.as_ref()),
        )?),
        _ => None,
    };
    if let (Some(min), Some(v)) = (recipe.min_snr_db, &verification)
        && let Some(why) = v.shortfall(min)
    {
        return Err(Error::Gate {
            gate: "min-snr-db".into(),
            message: format!(
                "on the verification data {why}; quantize fewer layers (exclude, layer-bits) or use 8 bits"
            ),
        });
    }
    if recipe.min_snr_db.is_some() && verification.is_none() {
        return Err(Error::Option {
            key: "min-snr-db".into(),
            message: "needs verify-data: held-out samples to measure the output on".into(),
        });
    }
    if let Some(max) = recipe.max_size_ratio {
        let ratio = bytes_out as f64 / bytes_in.max(1) as f64;
        if ratio > max {
            return Err(Error::Gate {
                gate: "max-size-ratio".into(),
                message: format!("the output is {ratio:.3}x the input, above the limit {max}"),
            });
        }
    }
    drop_orphaned_inputs(&mut model, &constant_inputs);
    check_connections(&model, "quantize-rs broke the graph it wrote, and did not write it; please report this bug")?;
    Ok(Outcome { model, report, calibration, verification, bytes_in, bytes_out })
}

/// Weight-only quantization with calibration samples: the layers' inputs observed on the folded
/// float model `float`, each weight rounded on its layer's statistics (`weight-rounding`), and
/// the biases corrected for the mean shift the quantized weights cause (`bias-correction`).
#[cfg(feature = "tract")]
fn data_aware_weights(
    float: &Model,
    model: &mut Model,
    recipe: &Recipe,
    cal: &crate::recipe::Calibration,
    base_dir: &Path,
    opts: &RunOptions,
) -> Result<Report> {
    use crate::recipe::WeightRounding;
    let samples = calibration_samples(float, cal, base_dir)?;
    let gptq = cal.weight_rounding != WeightRounding::Nearest;
    let mut inputs = crate::calibrate::observe_layer_inputs(float, &recipe.op_types, &samples, gptq, opts)?;
    if cal.weight_rounding == WeightRounding::Adaround {
        inputs.stats.values_mut().for_each(|s| s.adaround = true);
    }
    drop(samples);
    opts.check_cancelled()?;
    // The weight job, with extra per-weight bits for the accuracy target's candidates.
    let unquantized = model.clone();
    let build = |overrides: &std::collections::BTreeMap<String, u8>| -> Result<(Model, Report)> {
        let mut recipe = recipe.clone();
        for (name, bits) in overrides {
            // An exact name beats any pattern; a name that is no valid glob gets escaped.
            let key = if globset::Glob::new(name).is_ok() { name.clone() } else { globset::escape(name) };
            recipe.layer_bits.insert(key, *bits);
        }
        recipe.allow_empty |= !overrides.is_empty();
        let mut model = unquantized.clone();
        let mut report =
            crate::quantize::quantize_model_with(&mut model, &recipe, gptq.then_some(&inputs.stats), opts)?;
        let bias_corrected = if cal.bias_correction {
            crate::calibrate::correct_weight_only_biases(float, &mut model, &inputs.means)?
        } else {
            0
        };
        let data = report.data_aware.get_or_insert_with(Default::default);
        (data.samples, data.observe_seconds, data.bias_corrected) = (inputs.samples, inputs.seconds, bias_corrected);
        Ok((model, report))
    };
    let (quantized, report) = match (cal.target_snr_db, recipe.verify_data.as_deref()) {
        (Some(target), Some(v)) => {
            let held_out = crate::data::load_for_model(float, &base_dir.join(v), cal.image.as_ref(), None)?;
            let (m, mut r, t) =
                crate::calibrate::weight_only_target(float, &build, &held_out, target, recipe.weight_range, opts)?;
            r.target = Some(t);
            (m, r)
        }
        _ => build(&Default::default())?,
    };
    *model = quantized;
    Ok(report)
}

#[cfg(not(feature = "tract"))]
fn data_aware_weights(
    _: &Model,
    _: &mut Model,
    _: &Recipe,
    _: &crate::recipe::Calibration,
    _: &Path,
    _: &RunOptions,
) -> Result<Report> {
    Err(Error::Option {
        key: "calibration".into(),
        message: "data-aware weights run models with tract: enable the `tract` feature of quantize-rs".into(),
    })
}

/// Observes the channel maxima of the matrix products' inputs on the calibration samples of
/// `cal` (or, without, on random token ids when the model is a token model: `Ok(None)` when it is
/// not) and splits their outlier channels off (`rewrite::split_outlier_channels`).
#[cfg(feature = "tract")]
fn split_outliers(
    model: &mut Model,
    cal: Option<&crate::recipe::Calibration>,
    base_dir: &Path,
    opts: &RunOptions,
) -> Result<Option<crate::rewrite::OutlierSplit>> {
    let product_inputs = |model: &Model| -> Vec<String> {
        let g = model.graph();
        let inits: std::collections::HashSet<&str> = g.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
        g.node
            .iter()
            .filter(|n| crate::ops::is(n, crate::ops::MATMUL) || crate::ops::is(n, crate::ops::GEMM))
            .filter(|n| n.input.get(1).is_some_and(|w| inits.contains(w.as_str())))
            .filter_map(|n| n.input.first().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    if product_inputs(model).is_empty() {
        // No product with a constant weight: nothing to split, the graph left as it is, and no
        // pass over the samples.
        return Ok(cal.map(|_| crate::rewrite::OutlierSplit::default()));
    }
    let (samples, probed) = match cal {
        Some(cal) => (calibration_samples(model, cal, base_dir)?, false),
        None => match crate::data::token_probe_samples(model, PROBE_SAMPLES) {
            Some(s) => (s, true),
            None => return Ok(None),
        },
    };
    // Exporters reshape one input once per product (the Gemm style): merged first, the three
    // products of query, key and value read one tensor and share one split, one gather and (in
    // ONNX Runtime) one quantizer.
    crate::rewrite::merge_duplicate_nodes(model.graph_mut());
    let inputs = product_inputs(model);
    let absmax = match crate::calibrate::observe_channel_absmax(model, &inputs, &samples, opts) {
        Ok(absmax) => absmax,
        // Made-up ids a model will not take (say, a mask whose length is not the ids'): the job
        // goes on as plain dynamic quantization; the probe only ever buys accuracy.
        Err(e) if probed && !matches!(e, Error::Cancelled) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut names = crate::onnx::graph::Names::of_graph(model.graph());
    let mut split = crate::rewrite::split_outlier_channels(model, &mut names, &absmax);
    split.probed = probed;
    Ok(Some(split))
}

/// Random token sequences a token model is probed on for outlier channels when dynamic
/// quantization has no samples (all-MiniLM-L6-v2: 16 sequences of 64 ids find the same 47-50
/// channels as 128 real sentences; BENCHMARKS).
#[cfg(feature = "tract")]
const PROBE_SAMPLES: usize = 16;

#[cfg(not(feature = "tract"))]
fn split_outliers(
    _: &mut Model,
    cal: Option<&crate::recipe::Calibration>,
    _: &Path,
    _: &RunOptions,
) -> Result<Option<crate::rewrite::OutlierSplit>> {
    match cal {
        // Without tract there is nothing to probe a token model with: plain dynamic quantization.
        None => Ok(None),
        Some(_) => Err(Error::Option {
            key: "calibration".into(),
            message: "observing activations runs models with tract: enable the `tract` feature of quantize-rs".into(),
        }),
    }
}

/// The samples `cal.data` names (relative to `base_dir`), at most `cal.samples` of them.
#[cfg(feature = "tract")]
fn calibration_samples(
    float: &Model,
    cal: &crate::recipe::Calibration,
    base_dir: &Path,
) -> Result<Vec<crate::data::Sample>> {
    crate::data::load_for_model(float, &base_dir.join(&cal.data), cal.image.as_ref(), cal.samples)
}

#[cfg(feature = "tract")]
fn calibrate(
    float: &Model,
    model: &mut Model,
    recipe: &Recipe,
    cal: &crate::recipe::Calibration,
    base_dir: &Path,
    opts: &RunOptions,
) -> Result<crate::calibrate::CalibrationReport> {
    let verify_data = recipe.verify_data.as_deref();
    let samples = calibration_samples(float, cal, base_dir)?;
    let held_out = match (cal.target_snr_db, verify_data) {
        (Some(_), Some(d)) => Some(crate::data::load_for_model(float, &base_dir.join(d), cal.image.as_ref(), None)?),
        _ => None,
    };
    crate::calibrate::calibrate(float, model, cal, recipe.weight_range, &samples, held_out.as_deref(), opts)
}

#[cfg(not(feature = "tract"))]
fn calibrate(
    _: &Model,
    _: &mut Model,
    _: &Recipe,
    _: &crate::recipe::Calibration,
    _: &Path,
    _: &RunOptions,
) -> Result<CalibrationReport> {
    Err(Error::Option {
        key: "calibration".into(),
        message: "static calibration runs models with tract: enable the `tract` feature of quantize-rs".into(),
    })
}

/// The job's report from its steps' reports: the prepare step's rewrites (and the opset
/// raise it began with), the weight report, and what calibration changed in the weights
/// (weights of integer kernels requantized to 7 bits).
fn combine_reports(
    mut weights: Report,
    prepared: crate::rewrite::Prepared,
    calibration: Option<&CalibrationReport>,
) -> Report {
    weights.folded_nodes = prepared.folded_nodes;
    weights.fused_hard_swish = prepared.fused_hard_swish;
    weights.decomposed_softmax = prepared.decomposed_softmax;
    weights.equalized_pairs = prepared.equalized_pairs;
    if let Some(up) = prepared.upgrade {
        weights.opset_before = up.from;
        for (op, n) in up.rewritten {
            *weights.upgraded_ops.entry(op).or_default() += n;
        }
    }
    // 4-bit weights the accuracy target stepped to 8 bits: one byte per value now.
    #[cfg(feature = "tract")]
    for name in calibration.iter().flat_map(|c| c.target.iter()).flat_map(|t| &t.weights_to_8_bits) {
        if let Some(q) = weights.quantized.iter_mut().find(|q| &q.name == name) {
            let signed = q.spec.qtype.signed();
            if q.spec.native_int4 {
                let values = q.bytes_before / 4;
                let grown = values - values / 2;
                q.bytes_after += grown;
                weights.weight_bytes_after += grown;
            }
            q.spec.qtype = if signed { crate::quant::QType::Int8 } else { crate::quant::QType::Uint8 };
            q.spec.native_int4 = false;
            q.stored_as = if signed { "int8" } else { "uint8" }.into();
        }
    }
    // Weights the accuracy target returned to float are no longer quantized.
    #[cfg(feature = "tract")]
    for name in calibration.iter().flat_map(|c| c.target.iter()).flat_map(|t| &t.weights_returned_to_float) {
        if let Some(i) = weights.quantized.iter().position(|q| &q.name == name) {
            let q = weights.quantized.remove(i);
            weights.weight_bytes_before -= q.bytes_before;
            weights.weight_bytes_after -= q.bytes_after;
            weights.skipped.push(crate::quantize::SkippedTensor {
                name: q.name,
                elements: q.bytes_before / 4,
                reason: "returned to float by the accuracy target".into(),
                is_weight: true,
            });
        }
    }
    #[cfg(feature = "tract")]
    for (name, sqnr) in calibration.iter().flat_map(|c| &c.reduced_range_weights) {
        if let Some(q) = weights.quantized.iter_mut().find(|q| &q.name == name) {
            q.spec.qtype = crate::quant::QType::Int7;
            q.sqnr_db = *sqnr;
        }
    }
    #[cfg(not(feature = "tract"))]
    let _ = calibration;
    weights
}

/// Calibration and verification hand the whole model to tract, which holds it (and its float
/// tensors) in memory: refused, before any work, when that cannot fit. Weight-only quantization
/// streams and has no such limit.
fn check_fits_in_memory(model: &Model, recipe: &Recipe, bytes: u64, available: Option<u64>) -> Result<()> {
    let step = match (&recipe.calibration, &recipe.verify_data) {
        (Some(c), _) if c.weight_only => "data-aware weight rounding",
        (Some(_), _) => "calibration",
        (None, Some(_)) => "verification (verify-data)",
        (None, None) => return Ok(()),
    };
    // The encoded model, tract's copy of its tensors, and room for activations.
    let needed = bytes.saturating_mul(5) / 2;
    let Some(available) = available.filter(|&a| needed > a) else { return Ok(()) };
    let human = crate::info::human_bytes;
    Err(Error::TooLarge {
        path: model.path.clone().unwrap_or_else(|| "<model>".into()),
        step: step.into(),
        message: format!(
            "about {} for a model of {}, but only {} of memory is available; quantize it weight-only \
             (without calibration data or verify-data), which streams models of any size, or run it \
             where more memory is free",
            human(needed),
            human(bytes),
            human(available)
        ),
    })
}

/// An error naming the first broken connection of `model` (and how many more there are).
fn check_connections(model: &Model, what_to_do: &str) -> Result<()> {
    let problems = crate::onnx::graph::broken_connections(model.graph(), false);
    let Some(first) = problems.first() else { return Ok(()) };
    let origin = model.path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default();
    let more = match problems.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    Err(Error::InvalidModel(format!("{origin}{first}{more}; {what_to_do}")))
}

/// The main graph's inputs that name an initializer too: a default the caller may override, or,
/// in models of IR version 3 (which list every initializer among the inputs), a constant.
fn constants_as_inputs(model: &Model) -> std::collections::HashSet<String> {
    let g = model.graph();
    let initializers: std::collections::HashSet<&str> =
        g.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    g.input.iter().filter_map(|i| i.name.clone()).filter(|n| initializers.contains(n.as_str())).collect()
}

/// Drops the inputs of `names` (inputs that had an initializer) whose initializer the job
/// removed (a folded batch norm's parameters, an unused constant) and that nothing reads any
/// more: left behind, they would be inputs every caller has to feed.
fn drop_orphaned_inputs(model: &mut Model, names: &std::collections::HashSet<String>) {
    if names.is_empty() {
        return;
    }
    let g = model.graph();
    let initializers: std::collections::HashSet<&str> =
        g.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    let read = crate::onnx::graph::readers(g);
    let outputs: std::collections::HashSet<&str> = g.output.iter().filter_map(|o| o.name.as_deref()).collect();
    let orphaned: std::collections::HashSet<String> = g
        .input
        .iter()
        .filter_map(|i| i.name.clone())
        .filter(|n| {
            names.contains(n)
                && !initializers.contains(n.as_str())
                && !read.contains_key(n)
                && !outputs.contains(n.as_str())
        })
        .collect();
    model.graph_mut().input.retain(|i| !i.name.as_ref().is_some_and(|n| orphaned.contains(n)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_that_hold_the_whole_model_are_refused_when_it_cannot_fit() {
        let model = Model { proto: Default::default(), path: Some("big/model.onnx".into()) };
        let calibration = crate::recipe::Calibration::new("calib.npy");
        let calibrated = Recipe { calibration: Some(calibration), ..Recipe::default() };
        let gib = 1u64 << 30;
        let err = check_fits_in_memory(&model, &calibrated, 24 * gib, Some(16 * gib)).unwrap_err().to_string();
        assert!(err.starts_with("big/model.onnx: calibration runs the whole model in memory"), "{err}");
        assert!(err.contains("weight-only"), "says what to do: {err}");
        let verified = Recipe { verify_data: Some("test.npy".into()), ..Recipe::default() };
        let err = check_fits_in_memory(&model, &verified, 24 * gib, Some(16 * gib)).unwrap_err().to_string();
        assert!(err.contains("verification (verify-data)"), "{err}");
        assert!(check_fits_in_memory(&model, &calibrated, gib, Some(16 * gib)).is_ok(), "a model that fits");
        assert!(check_fits_in_memory(&model, &Recipe::default(), 24 * gib, Some(gib)).is_ok(), "weight-only streams");
    }
}
