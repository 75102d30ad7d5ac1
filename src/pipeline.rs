//! One job, every front door: quantize the weights, calibrate activations when the recipe asks,
//! verify on held-out data and apply the recipe's quality gates. The CLI, `quantize-build` and
//! library users all call [`run`], so they can never disagree about what a recipe means.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::quantize::{Report, quantize_model};
use crate::recipe::Recipe;

/// Output quality measured on held-out data.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Samples compared.
    pub samples: usize,
    /// Output SNR in dB, pooled over outputs and samples.
    pub snr_db: f64,
    /// Cosine similarity, pooled.
    pub cosine: f64,
    /// Largest absolute difference of any output value.
    pub max_abs: f64,
}

/// What a job produced.
#[derive(Debug)]
pub struct Outcome {
    /// The quantized model.
    pub model: Model,
    /// What was quantized and how.
    pub report: Report,
    /// Quality on `verify-data`, when given.
    pub verification: Option<Verification>,
    /// Encoded size of the input model.
    pub bytes_in: u64,
    /// Encoded size of the output model.
    pub bytes_out: u64,
}

/// Runs `recipe` on `model`. Relative data paths in the recipe resolve against `base_dir`.
pub fn run(mut model: Model, recipe: &Recipe, base_dir: &Path) -> Result<Outcome> {
    recipe.validate("")?;
    let bytes_in = prost::Message::encoded_len(&model.proto) as u64;
    let original = (recipe.calibration.is_some() || recipe.verify_data.is_some()).then(|| model.clone());
    let report = match &recipe.calibration {
        None => quantize_model(&mut model, recipe)?,
        Some(_) => {
            return Err(Error::Option {
                key: "calibration".into(),
                message:
                    "static calibration is not available in this build yet; remove the key for weight-only quantization"
                        .into(),
            });
        }
    };
    let bytes_out = prost::Message::encoded_len(&model.proto) as u64;
    let verification = match (&recipe.verify_data, original) {
        (Some(data), Some(_original)) => {
            let _ = base_dir.join(data);
            return Err(Error::Option {
                key: "verify-data".into(),
                message: "verification is not available in this build yet".into(),
            });
        }
        _ => None,
    };
    if let Some(max) = recipe.max_size_ratio {
        let ratio = bytes_out as f64 / bytes_in.max(1) as f64;
        if ratio > max {
            return Err(Error::Gate {
                gate: "max-size-ratio".into(),
                message: format!("the output is {ratio:.3}x the input, above the limit {max}"),
            });
        }
    }
    Ok(Outcome { model, report, verification, bytes_in, bytes_out })
}
