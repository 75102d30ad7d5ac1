//! Running ONNX models with tract: the engine behind calibration and verification.
//!
//! Models are loaded with concrete input shapes taken from the samples (some exported models only
//! load that way), with any wanted intermediate tensors exposed as extra outputs *before* tract
//! optimizes, so statistics are keyed by ONNX tensor names. A plan is built once per distinct
//! input shape and reused.

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::error::{Error, Result};

type Plan = Arc<TypedRunnableModel>;

/// A model ready to run on samples of any shape it accepts.
pub struct Runner {
    bytes: Vec<u8>,
    /// Names of the outputs a run returns: the model's own, then the requested extra tensors.
    outputs: Vec<String>,
    plans: HashMap<Vec<Vec<usize>>, Plan>,
    /// The model as read, with its outputs selected: parsed once, typed once per input shape.
    parsed: Option<InferenceModel>,
    what: String,
}

/// A tract failure as [`Error::Tract`]: `what` names the model, the detail keeps tract's first
/// lines (the failing node, then its causes).
pub(crate) fn tract_error(what: &str, e: impl std::fmt::Debug) -> Error {
    let detail = format!("{e:?}");
    // tract's first line names the failing node; the rest is its cause chain.
    let detail = detail.lines().filter(|l| !l.trim().is_empty()).take(6).collect::<Vec<_>>().join(" / ");
    Error::Tract { what: what.to_string(), detail }
}

impl Runner {
    /// Prepares `bytes` (an ONNX model) to return its outputs plus the tensors named in `extra`.
    /// `what` names the model in errors.
    pub fn new(bytes: Vec<u8>, model_outputs: Vec<String>, extra: &[String], what: &str) -> Runner {
        let bytes = without_shape_hints(bytes);
        // 4-bit and blocked weights as tract can load them (what `include_quantized!` does too).
        let bytes = match crate::embed::tract_compatible(&bytes) {
            Ok(Some((compatible, _))) => compatible,
            _ => bytes,
        };
        let mut outputs = model_outputs;
        outputs.extend(extra.iter().cloned());
        Runner { bytes, outputs, plans: HashMap::new(), parsed: None, what: what.to_string() }
    }

    /// [`Runner::new`] for `model` returning its own outputs plus `extra`.
    pub fn for_model(model: &crate::onnx::model::Model, extra: &[String], what: &str) -> Runner {
        Runner::new(model.to_bytes(), output_names(model), extra, what)
    }

    /// Names of the tensors [`Runner::run`] returns, in order.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    fn plan(&mut self, inputs: &[Tensor]) -> Result<Plan> {
        let key: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        if let Some(p) = self.plans.get(&key) {
            return Ok(p.clone());
        }
        let what = self.what.clone();
        let err = |e: TractError| tract_error(&what, e);
        if self.parsed.is_none() {
            let mut model = tract_onnx::onnx()
                .with_ignore_output_shapes(true)
                .model_for_read(&mut self.bytes.as_slice())
                .map_err(err)?;
            model.select_outputs_by_name(self.outputs.iter()).map_err(err)?;
            self.parsed = Some(model);
        }
        let mut model = self.parsed.clone().expect("parsed above");
        for (i, t) in inputs.iter().enumerate() {
            model.set_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape())).map_err(err)?;
        }
        let plan = model.into_optimized().map_err(err)?.into_runnable().map_err(err)?;
        self.plans.insert(key, plan.clone());
        Ok(plan)
    }

    /// [`Runner::run`] with every output flattened to f32.
    pub fn run_f32(&mut self, inputs: &[Tensor]) -> Result<Vec<Vec<f32>>> {
        self.run(inputs)?.iter().map(as_f32).collect()
    }

    /// Runs one sample (inputs in the model's input order) and returns [`Runner::outputs`].
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<TVec<TValue>> {
        let plan = self.plan(inputs)?;
        let values: TVec<TValue> = inputs.iter().map(|t| t.clone().into_tvalue()).collect();
        plan.run(values).map_err(|e| tract_error(&self.what, e))
    }
}

/// The progress bar of a pass over `samples` samples, labelled `label` (hidden unless
/// `opts.progress`).
pub(crate) fn sample_bar(opts: &crate::control::RunOptions, samples: usize, label: &str) -> indicatif::ProgressBar {
    if !opts.progress {
        return indicatif::ProgressBar::hidden();
    }
    let template = format!("{label} {{bar:30}} {{pos}}/{{len}} samples {{elapsed}}");
    indicatif::ProgressBar::new(samples as u64)
        .with_style(indicatif::ProgressStyle::with_template(&template).expect("valid template"))
}

/// Names of the main graph's outputs, in order.
pub fn output_names(model: &crate::onnx::model::Model) -> Vec<String> {
    model.graph().output.iter().filter_map(|v| v.name.clone()).collect()
}

/// `bytes` without the graph's intermediate `value_info`: they are only hints, and exporters write
/// symbolic expressions there (`floor(height/2 - 1/2) + 1`) that tract reads as new symbols which
/// then fail to unify with the concrete shapes of a sample. Undecodable bytes are left for tract
/// to report.
fn without_shape_hints(bytes: Vec<u8>) -> Vec<u8> {
    use prost::Message;
    match crate::onnx::proto::ModelProto::decode(bytes.as_slice()) {
        Ok(mut m) => match m.graph.as_mut() {
            Some(g) if !g.value_info.is_empty() => {
                g.value_info.clear();
                m.encode_to_vec()
            }
            _ => bytes,
        },
        Err(_) => bytes,
    }
}

/// Output values as f32 (casting other numeric types), flattened.
pub fn as_f32(v: &TValue) -> Result<Vec<f32>> {
    let t = v.cast_to::<f32>().map_err(|e| tract_error("an output", e))?;
    let view = t.to_plain_array_view::<f32>().map_err(|e| tract_error("an output", e))?;
    Ok(view.iter().copied().collect())
}
