//! Running the float model on the calibration samples with tract and feeding each selected
//! tensor to its observer (pipelined: tract runs the next sample while the last is observed).

use rayon::prelude::*;
use tract_onnx::prelude::{Datum, IntoTensor, Tensor};

use super::observer::{ChannelMeans, Observer};
use crate::error::Result;
use crate::onnx::model::Model;
use crate::run::Runner;

/// What observing the calibration samples gave, per tensor (in the order asked for).
pub(super) struct Observed {
    pub(super) observers: Vec<Observer>,
    /// Whether the tensor held floats in every sample (shape and index arithmetic does not).
    pub(super) is_float: Vec<bool>,
    /// Per-channel means, for the tensors a channel axis was given for.
    pub(super) means: Vec<Option<ChannelMeans>>,
}

/// Largest activation bytes per sample for which running the next sample overlaps observing the
/// last one (two samples alive instead of one; the memory bound wins on large inputs).
pub(super) const PIPELINE_BYTES: usize = 128 << 20;

/// Runs the float model on `samples` and returns one observer per tensor of `tensors`.
/// Also says, per tensor, whether it holds floats (shape and index arithmetic does not).
/// Tensors with a channel axis in `axes` also get their per-channel means.
pub(super) fn observe(
    float: &Model,
    tensors: &[String],
    axes: &[Option<usize>],
    samples: &[Vec<Tensor>],
    opts: &crate::control::RunOptions,
) -> Result<Observed> {
    let what = float.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the float model".into());
    let mut runner = Runner::for_model(float, tensors, &what);
    let own_outputs = runner.outputs().len() - tensors.len();
    let mut observers = vec![Observer::default(); tensors.len()];
    let mut is_float = vec![true; tensors.len()];
    let mut means: Vec<Option<ChannelMeans>> = axes.iter().map(|a| a.map(ChannelMeans::new)).collect();
    let bar = crate::run::sample_bar(opts, samples.len(), "calibrating");
    let tract_err = |e: tract_onnx::prelude::TractError| crate::run::tract_error(&what, e);
    // One sample's requested values as owned f32 tensors (moved out of tract's values, converted
    // only when not f32), with whether each held floats.
    let run = |runner: &mut Runner, sample: &Vec<Tensor>| -> Result<(Vec<Tensor>, Vec<bool>)> {
        opts.check_cancelled()?;
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
