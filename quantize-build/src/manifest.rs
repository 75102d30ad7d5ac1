//! What quantize-build writes about each model, as JSON: a [`Record`] in the cache entry and a
//! [`Manifest`] (the record plus the name and file) in `OUT_DIR/quantize/<name>.json`, which
//! `include_quantized!` reads at expansion. `OUT_DIR/quantize/index.json` ([`Index`]) lists the
//! declared names so the macro can say which exist.
//!
//! The macro crate cannot depend on this one (it would pull the quantizer into every proc-macro
//! build), so it reads the same JSON with its own types; [`FORMAT`] guards against a mismatch.

use std::path::{Path, PathBuf};

use quantize_rs::Recipe;
use quantize_rs::info::{ModelInfo, Port};
use quantize_rs::pipeline::Outcome;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of the JSON layout; bumped on any change the macro must know about.
pub const FORMAT: u32 = 1;

/// Name of the folder in `OUT_DIR` that holds the results.
pub const OUT_SUBDIR: &str = "quantize";

/// Name of the index file in [`OUT_SUBDIR`].
pub const INDEX_FILE: &str = "index.json";

/// One dimension: a number, a symbolic name, or unknown (`null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A symbolic size such as `batch`.
    Symbolic(String),
    /// Unknown.
    Unknown,
}

/// A graph input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tensor {
    /// ONNX name.
    pub name: String,
    /// Element type, e.g. `float32`.
    pub elem_type: String,
    /// Dimensions, `null` when the model gives no shape.
    pub shape: Option<Vec<Dim>>,
}

impl From<&Port> for Tensor {
    fn from(p: &Port) -> Tensor {
        let dim = |d: &String| match d.as_str() {
            "?" => Dim::Unknown,
            s => s.parse::<u64>().map(Dim::Fixed).unwrap_or_else(|_| Dim::Symbolic(s.to_string())),
        };
        Tensor {
            name: p.name.clone(),
            elem_type: p.elem_type.clone(),
            shape: p.shape.as_ref().map(|s| s.iter().map(dim).collect()),
        }
    }
}

/// The recipe in brief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Bits per weight.
    pub bits: u8,
    /// Unsigned values.
    pub unsigned: bool,
    /// Per-channel scales.
    pub per_channel: bool,
    /// Block size, when blocked.
    pub block_size: Option<u64>,
    /// Symmetric weights.
    pub symmetric: bool,
    /// Native INT4 storage.
    pub native_int4: bool,
    /// Calibration method, when activations were quantized.
    pub calibration: Option<String>,
    /// One line for people, e.g. `int8 per-channel symmetric, weight-only`.
    pub scheme: String,
    /// Weights quantized.
    pub quantized_tensors: u64,
    /// Float constants left as they were.
    pub skipped_tensors: u64,
    /// Default-domain opset of the result.
    pub opset: i64,
}

impl Summary {
    /// Summarises a recipe and what it did.
    pub fn new(recipe: &Recipe, outcome: &Outcome) -> Summary {
        let qtype = recipe.qtype(recipe.bits);
        let layout = match (recipe.block_size, recipe.per_channel) {
            (Some(b), _) => format!("blocked({b})"),
            (None, true) => "per-channel".into(),
            (None, false) => "per-tensor".into(),
        };
        let sym = if recipe.symmetric { "symmetric" } else { "asymmetric" };
        let calibration = recipe.calibration.as_ref().map(|c| {
            serde_json::to_value(c.method).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
        });
        let activations = match &calibration {
            None => "weight-only".to_string(),
            Some(m) => format!("activations calibrated ({m})"),
        };
        let stored = serde_json::to_value(qtype).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        Summary {
            bits: recipe.bits,
            unsigned: recipe.unsigned,
            per_channel: recipe.per_channel,
            block_size: recipe.block_size.map(|b| b as u64),
            symmetric: recipe.symmetric,
            native_int4: recipe.native_int4,
            scheme: format!("{stored} {layout} {sym}, {activations}"),
            calibration,
            quantized_tensors: outcome.report.quantized.len() as u64,
            skipped_tensors: outcome.report.skipped.len() as u64,
            opset: outcome.report.opset_after,
        }
    }
}

/// Output quality on `verify-data`. Non-finite values (an infinite SNR when the outputs are
/// identical) are written as the strings `"inf"`, `"-inf"` and `"nan"`, which JSON numbers
/// cannot hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Samples compared.
    pub samples: u64,
    /// Output SNR in dB.
    #[serde(with = "float")]
    pub snr_db: f64,
    /// Cosine similarity.
    #[serde(with = "float")]
    pub cosine: f64,
    /// Largest absolute difference.
    #[serde(with = "float")]
    pub max_abs: f64,
}

/// f64 as a JSON number, or a string for the values JSON has no number for.
mod float {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match *v {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("nan"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(f64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(v),
            Repr::Text(t) => match t.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!("expected a number, inf, -inf or nan, got '{other}'"))),
            },
        }
    }
}

/// A weight the job left float, and why (reported as a cargo warning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// Tensor name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// What a job produced, stored beside the model in the cache entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`FORMAT`].
    pub format: u32,
    /// The cache key: SHA-256 (hex) of the job's inputs.
    pub content_hash: String,
    /// quantize-build's version.
    pub tool: String,
    /// Size of the float model in bytes.
    pub bytes_before: u64,
    /// Size of the quantized model in bytes.
    pub bytes_after: u64,
    /// Graph inputs.
    pub inputs: Vec<Tensor>,
    /// Graph outputs.
    pub outputs: Vec<Tensor>,
    /// The recipe in brief.
    pub summary: Summary,
    /// The full recipe.
    pub recipe: Recipe,
    /// Quality measured on `verify-data`.
    pub quality: Option<Quality>,
    /// Weights left float.
    pub skipped: Vec<Skipped>,
    /// Seconds the job took when it ran.
    pub seconds: f64,
}

impl Record {
    /// The record of a finished job.
    pub fn new(
        content_hash: String,
        recipe: &Recipe,
        outcome: &Outcome,
        info: &ModelInfo,
        bytes_after: u64,
        seconds: f64,
    ) -> Record {
        Record {
            format: FORMAT,
            content_hash,
            tool: crate::cache::TOOL_VERSION.into(),
            bytes_before: outcome.bytes_in,
            bytes_after,
            inputs: info.inputs.iter().map(Tensor::from).collect(),
            outputs: info.outputs.iter().map(Tensor::from).collect(),
            summary: Summary::new(recipe, outcome),
            recipe: recipe.clone(),
            quality: outcome.verification.as_ref().map(|v| Quality {
                samples: v.samples as u64,
                snr_db: v.snr_db,
                cosine: v.cosine,
                max_abs: v.max_abs,
            }),
            skipped: outcome
                .report
                .skipped
                .iter()
                .filter(|s| s.is_weight)
                .map(|s| Skipped { name: s.name.clone(), reason: s.reason.clone() })
                .collect(),
            seconds,
        }
    }
}

/// `OUT_DIR/quantize/<name>.json`: what `include_quantized!("name")` expands from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The declared name.
    pub name: String,
    /// The quantized model: `OUT_DIR/quantize/<name>.onnx`, absolute.
    pub model: PathBuf,
    /// The float model it was made from, as declared.
    pub source: PathBuf,
    /// Everything else.
    #[serde(flatten)]
    pub record: Record,
}

/// `OUT_DIR/quantize/index.json`: the declared models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// [`FORMAT`].
    pub format: u32,
    /// The package's Cargo.toml.
    pub manifest_path: PathBuf,
    /// Declared names, sorted.
    pub models: Vec<String>,
}

/// Reads a JSON file written by this crate.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(Error::io(path))?;
    serde_json::from_slice(&text).map_err(|e| Error::Corrupt { path: path.into(), message: e.to_string() })
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value).expect("manifest types serialize");
    text.push(b'\n');
    quantize_rs::model::write_atomic(path, &text).map_err(|e| match e {
        quantize_rs::Error::Write { path, source } => Error::Io { path, source },
        other => Error::Io { path: path.into(), source: std::io::Error::other(other.to_string()) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinite_quality_survives_json() {
        let q = Quality { samples: 3, snr_db: f64::INFINITY, cosine: 1.0, max_abs: 0.0 };
        let text = serde_json::to_string(&q).unwrap();
        assert_eq!(text, r#"{"samples":3,"snr_db":"inf","cosine":1.0,"max_abs":0.0}"#);
        assert_eq!(serde_json::from_str::<Quality>(&text).unwrap(), q);
    }

    #[test]
    fn dims_are_numbers_names_or_null() {
        let port = Port {
            name: "x".into(),
            elem_type: "float32".into(),
            shape: Some(vec!["batch".into(), "64".into(), "?".into()]),
        };
        let t = Tensor::from(&port);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"name":"x","elem_type":"float32","shape":["batch",64,null]}"#
        );
        let back: Tensor =
            serde_json::from_str(r#"{"name":"x","elem_type":"float32","shape":["batch",64,null]}"#).unwrap();
        assert_eq!(back, t);
    }
}
