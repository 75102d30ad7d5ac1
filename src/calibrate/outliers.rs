//! The largest magnitude each channel of some tensors reaches on the samples: what finds the few
//! outlier channels of a transformer's activations (`rewrite::split_outlier_channels`).

use std::collections::HashMap;

use tract_onnx::prelude::{Datum, IntoTensor};

use crate::error::Result;
use crate::onnx::model::Model;
use crate::run::Runner;

/// Runs `float` on `samples` and returns, for each named tensor, the largest absolute value of
/// each index of its last axis. Tensors that are not float or change width between samples are
/// left out.
pub fn observe_channel_absmax(
    float: &Model,
    tensors: &[String],
    samples: &[Vec<tract_onnx::prelude::Tensor>],
    opts: &crate::control::RunOptions,
) -> Result<HashMap<String, Vec<f32>>> {
    let what = float.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the float model".into());
    let inputs: Vec<String> = crate::data::InputSpec::of_model(float)?.into_iter().map(|s| s.name).collect();
    let exposed: Vec<String> = tensors.iter().filter(|t| !inputs.contains(t)).cloned().collect();
    let mut runner = Runner::for_model(float, &exposed, &what);
    let own = runner.outputs().len() - exposed.len();
    let mut max: HashMap<String, Option<Vec<f32>>> = HashMap::new();
    let bar = crate::run::sample_bar(opts, samples.len(), "observing channel ranges");
    for sample in samples {
        opts.check_cancelled()?;
        let values = runner.run(sample)?;
        let of_inputs = inputs.iter().zip(sample.iter().cloned()).filter(|(n, _)| tensors.contains(n));
        let of_exposed = exposed.iter().zip(values.into_iter().skip(own).map(|v| v.into_tensor()));
        for (name, t) in of_inputs.chain(of_exposed) {
            let slot = max.entry(name.clone()).or_insert_with(|| Some(Vec::new()));
            let (Some(acc), true) = (slot.as_mut(), t.datum_type() == f32::datum_type()) else {
                *slot = None;
                continue;
            };
            let width = t.shape().last().copied().unwrap_or(0);
            // Contiguous f32 data is read in place (no copy per sample).
            let Some(xs) = t.to_plain_array_view::<f32>().ok().and_then(|v| v.to_slice()) else {
                *slot = None;
                continue;
            };
            if width == 0 || (!acc.is_empty() && acc.len() != width) {
                *slot = None;
                continue;
            }
            acc.resize(width, 0.0);
            for row in xs.chunks_exact(width) {
                for (m, x) in acc.iter_mut().zip(row) {
                    *m = m.max(x.abs());
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(max.into_iter().filter_map(|(k, v)| Some((k, v.filter(|v| !v.is_empty())?))).collect())
}
