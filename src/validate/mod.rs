//! Checking a quantized model against the float model it came from, before anyone ships it:
//! structure, connectivity, opsets and Q/DQ types (a zeroed or negative scale, a zero point of
//! the wrong type, a dangling input are all found here), the same interface as the original,
//! and that the model actually runs in tract — on held-out samples, or on inputs synthesized from
//! the declared shapes — with its outputs compared to the original's.
//!
//! [`validate`] never stops at the first problem: every check reports all it found, and
//! [`Validation::passed`] is true only when every check passed *and* the model ran. A model that
//! could not be run is never reported as valid.

mod graph;
mod run;
mod types;
mod weights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::onnx::model::Model;
use crate::recipe::ImagePreprocess;
use crate::verify::Verification;
use graph::*;
use run::*;
pub use run::{synthetic_inputs, tract_bytes};
use types::*;
use weights::*;

/// What [`validate`] does beyond the structural checks.
#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// Samples to run both models on (`.npy`, `.npz`, `.safetensors`, images). Without them,
    /// one input set is synthesized from the declared input shapes (symbolic sizes become 1).
    pub data: Option<PathBuf>,
    /// Preprocessing when `data` is a folder of images.
    pub image: Option<ImagePreprocess>,
    /// Use at most this many samples of `data`.
    pub samples: Option<usize>,
    /// Compare every dequantized weight with the original float weight of the same name.
    pub detailed: bool,
    /// Fail when the pooled output SNR on `data` is below this many dB (needs `data`).
    pub min_snr_db: Option<f64>,
    /// Shapes for synthesized inputs, by input name, instead of the declared ones.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing wrong was found.
    Passed,
    /// At least one problem.
    Failed,
    /// Not run, because an earlier check failed (see the note).
    Skipped,
}

/// One check and every problem it found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `structure`, `connectivity`, `opset`, `types`, `interface`, `runs` or `min-snr-db`.
    pub name: String,
    /// Its outcome.
    pub status: Status,
    /// What is wrong, one line each, naming the node, tensor or graph.
    pub problems: Vec<String>,
    /// Extra facts worth knowing (what was run on, conversions made to run it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Check {
    fn new(name: &str, problems: Vec<String>) -> Check {
        let status = if problems.is_empty() { Status::Passed } else { Status::Failed };
        Check { name: name.into(), status, problems, note: None }
    }
}

/// One dequantized weight against the original float weight.
#[derive(Debug, Clone, Serialize)]
pub struct WeightComparison {
    /// The weight's name (the DequantizeLinear output, the original initializer).
    pub name: String,
    /// Element type it is stored as.
    pub stored_as: String,
    /// `per-tensor`, `per-axis` or `blocked`.
    pub granularity: String,
    /// Elements.
    pub elements: usize,
    /// SNR of the dequantized values in dB.
    #[serde(serialize_with = "float")]
    pub snr_db: f64,
    /// Largest absolute error.
    #[serde(serialize_with = "float")]
    pub max_abs: f64,
}

/// Everything [`validate`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// True when every check passed and the quantized model ran.
    pub passed: bool,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
    /// What the models ran on: the data file, or `synthetic` (shapes: symbolic sizes as 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// Input sets run.
    pub samples: usize,
    /// Output figures, when both models ran: each output's, and the worst float output's SNR
    /// (integer and bool outputs must be exact).
    pub verification: Option<Verification>,
    /// Per-weight figures (with [`ValidateOptions::detailed`]).
    pub weights: Vec<WeightComparison>,
}

/// `message` without the backtrace that tract's errors carry when `RUST_BACKTRACE` is set
/// (`... / Stack backtrace: / 0: ...`, up to the `; ` that starts the advice, if any).
pub fn without_backtrace(message: &str) -> String {
    let Some(start) = message.find("Stack backtrace:") else {
        return message.to_string();
    };
    let head = message[..start].trim_end().trim_end_matches('/').trim_end();
    let tail = message[start..].find("; ").map(|j| &message[start + j..]).unwrap_or("");
    format!("{head}{tail}")
}

/// JSON has no infinities: non-finite figures are written as `"inf"`, `"-inf"` or `"nan"`.
pub(crate) use crate::verify::non_finite_as_string as float;

/// Checks `quantized` against `original` (see the [module docs](self)). `Err` only for a
/// problem with the request (unreadable data, a gate without data); problems with the models
/// are in the returned checks.
pub fn validate(original: &Model, quantized: &Model, opts: &ValidateOptions) -> Result<Validation> {
    if opts.min_snr_db.is_some() && opts.data.is_none() {
        return Err(Error::Option {
            key: "min-snr-db".into(),
            message: "needs data (--data): held-out samples to measure the outputs on".into(),
        });
    }
    let mut checks = vec![
        Check::new("structure", structure(quantized)),
        Check::new("connectivity", connectivity(quantized.graph())),
        Check::new("opset", opsets(quantized, original)),
        Check::new("types", types(quantized)),
        Check::new("interface", interface(original, quantized)),
    ];
    let mut v =
        Validation { passed: false, checks: vec![], inputs: None, samples: 0, verification: None, weights: vec![] };
    if checks.iter().any(|c| c.status == Status::Failed) {
        checks.push(Check {
            name: "runs".into(),
            status: Status::Skipped,
            problems: vec![],
            note: Some("not run: an earlier check failed".into()),
        });
    } else {
        let samples = match &opts.data {
            Some(path) => {
                v.inputs = Some(path.display().to_string());
                crate::data::load_for_model(original, path, opts.image.as_ref(), opts.samples)?
            }
            None => {
                v.inputs = Some("synthetic".into());
                match synthetic_inputs(original, &opts.input_shapes) {
                    Ok(s) => vec![s],
                    Err(e @ Error::Option { .. }) => return Err(e),
                    Err(e) => {
                        checks.push(Check::new(
                            "runs",
                            vec![format!("cannot synthesize inputs ({e}); pass samples with --data")],
                        ));
                        vec![]
                    }
                }
            }
        };
        if !samples.is_empty() {
            v.samples = samples.len();
            let (check, verification) = run_both(original, quantized, &samples);
            checks.push(check);
            v.verification = verification;
        }
    }
    if let Some(min) = opts.min_snr_db {
        let problems = match &v.verification {
            Some(o) => o.shortfall(min).into_iter().collect(),
            None => vec!["no output SNR: the models did not both run".into()],
        };
        checks.push(Check::new("min-snr-db", problems));
    }
    if opts.detailed {
        v.weights = weight_errors(original, quantized);
    }
    v.passed = checks.iter().all(|c| c.status == Status::Passed);
    v.checks = checks;
    Ok(v)
}

/// Loads both models and validates; a model that cannot be read is an `Err`.
pub fn validate_files(original: &Path, quantized: &Path, opts: &ValidateOptions) -> Result<Validation> {
    let a = Model::load(original)?;
    let b = Model::load(quantized)?;
    validate(&a, &b, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtraces_are_cut_from_messages() {
        let m = "tract cannot run m: node x / Stack backtrace: /    0: anyhow::msg; if an op is unsupported, do y";
        assert_eq!(without_backtrace(m), "tract cannot run m: node x; if an op is unsupported, do y");
        assert_eq!(without_backtrace("a / Stack backtrace: / 0: f"), "a");
        assert_eq!(without_backtrace("plain"), "plain");
    }
}
