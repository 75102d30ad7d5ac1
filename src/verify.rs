//! The verify step: run the float and the quantized model on held-out samples and compare their
//! outputs (SNR, cosine, max abs error). Used by the pipeline's quality gates, by calibration's
//! accuracy target and by `validate`.

// Calibration and validation (the `tract` feature) are what read the rest of this; the full
// build lints it.
#![cfg_attr(not(feature = "tract"), allow(dead_code, unused_imports))]

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::onnx::model::Model;

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

/// Runs `reference` and `candidate` with tract on the samples in `data` and compares their
/// outputs.
#[cfg(feature = "tract")]
pub fn verify(
    reference: &Model,
    candidate: &Model,
    data: &Path,
    image: Option<&crate::recipe::ImagePreprocess>,
) -> Result<Verification> {
    let samples = crate::data::load_for_model(reference, data, image, None)?;
    let mut a = crate::run::Runner::for_model(reference, &[], "the float model");
    let mut b = crate::run::Runner::for_model(candidate, &[], "the quantized model");
    let mut m = Comparison::default();
    for s in &samples {
        for (x, y) in a.run_f32(s)?.iter().zip(b.run_f32(s)?) {
            m.add(x, &y);
        }
    }
    Ok(m.finish(samples.len()))
}

/// Verification runs models with tract: without the `tract` feature it is an error.
#[cfg(not(feature = "tract"))]
pub fn verify(_: &Model, _: &Model, _: &Path, _: Option<&crate::recipe::ImagePreprocess>) -> Result<Verification> {
    Err(crate::error::Error::Option {
        key: "verify-data".into(),
        message: "verification runs models with tract: enable the `tract` feature of quantize-rs".into(),
    })
}

/// Pooled output comparison: SNR, cosine and max abs error over every output value.
#[derive(Debug, Default, Clone)]
pub struct Comparison {
    signal: f64,
    noise: f64,
    dot: f64,
    norm_a: f64,
    norm_b: f64,
    max_abs: f64,
}

impl Comparison {
    /// Adds one output of the reference (`a`) and the candidate (`b`).
    pub fn add(&mut self, a: &[f32], b: &[f32]) {
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (x as f64, y as f64);
            self.signal += x * x;
            self.noise += (x - y) * (x - y);
            self.dot += x * y;
            self.norm_a += x * x;
            self.norm_b += y * y;
            self.max_abs = self.max_abs.max((x - y).abs());
        }
    }

    /// The pooled figures over `samples` samples.
    pub fn finish(&self, samples: usize) -> Verification {
        let snr_db = if self.noise == 0.0 { f64::INFINITY } else { 10.0 * (self.signal / self.noise).log10() };
        let denom = (self.norm_a * self.norm_b).sqrt();
        let cosine = if denom == 0.0 { 1.0 } else { self.dot / denom };
        Verification { samples, snr_db, cosine, max_abs: self.max_abs }
    }
}
