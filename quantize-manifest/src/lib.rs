//! The JSON files `quantize-build` writes about each quantized model, as serde types shared by
//! the writer (`quantize-build`) and the reader (`include_quantized!` in `quantize-macros`), so
//! the two can never drift apart.
//!
//! - `OUT_DIR/quantize/index.json` ([`Index`]): the names a package declares, so the macro can
//!   list them when asked for one that does not exist;
//! - `OUT_DIR/quantize/<name>.json` ([`Manifest`]): one model — where it is, what it was made
//!   from, and its [`Record`];
//! - `<target>/quantize-cache/<hash>/record.json` ([`Record`]): what a job produced, stored in
//!   the build cache beside the model.
//!
//! A separate crate because the macro cannot depend on the quantizer: `quantize-rs` depends on
//! `quantize-macros` (to re-export `include_quantized!`), and a proc-macro crate can export
//! nothing but macros. This one depends on serde alone. The full recipe is a type parameter
//! (`quantize_rs::Recipe` for the writer, [`serde::de::IgnoredAny`] for a reader that only needs
//! the [`Summary`]).
//!
//! [`FORMAT`] is written into every file and bumped on any change a reader must know about.

#![warn(missing_docs)]

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Version of the JSON layout; bumped on any change a reader must know about.
pub const FORMAT: u32 = 2;

/// Name of the folder in `OUT_DIR` that holds the results.
pub const OUT_SUBDIR: &str = "quantize";

/// Name of the index file in [`OUT_SUBDIR`].
pub const INDEX_FILE: &str = "index.json";

/// File name of model `name`'s quantized model in [`OUT_SUBDIR`].
pub fn model_file(name: &str) -> String {
    format!("{name}.onnx")
}

/// File name of model `name`'s [`Manifest`] in [`OUT_SUBDIR`].
pub fn manifest_file(name: &str) -> String {
    format!("{name}.json")
}

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

/// What a job produced, stored beside the model in the cache entry. `R` is the full recipe's
/// type (`quantize_rs::Recipe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<R> {
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
    /// SHA-256 (hex) of the quantized model file: checked before the cache entry is reused.
    pub model_sha256: String,
    /// Graph inputs.
    pub inputs: Vec<Tensor>,
    /// Graph outputs.
    pub outputs: Vec<Tensor>,
    /// The recipe in brief.
    pub summary: Summary,
    /// The full recipe.
    pub recipe: R,
    /// Quality measured on `verify-data`.
    pub quality: Option<Quality>,
    /// Weights left float.
    pub skipped: Vec<Skipped>,
    /// Seconds the job took when it ran.
    pub seconds: f64,
}

/// `OUT_DIR/quantize/<name>.json`: what `include_quantized!("name")` expands from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest<R> {
    /// The declared name.
    pub name: String,
    /// The quantized model: `OUT_DIR/quantize/<name>.onnx`, absolute.
    pub model: PathBuf,
    /// The float model it was made from, as declared.
    pub source: PathBuf,
    /// Everything else.
    #[serde(flatten)]
    pub record: Record<R>,
}

/// `OUT_DIR/quantize/index.json`: the declared models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// [`FORMAT`].
    pub format: u32,
    /// The package's Cargo.toml.
    pub manifest_path: PathBuf,
    /// Declared names, sorted.
    pub models: Vec<String>,
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
        let nan: Quality = serde_json::from_str(r#"{"samples":1,"snr_db":"-inf","cosine":"nan","max_abs":2}"#).unwrap();
        assert!(nan.snr_db == f64::NEG_INFINITY && nan.cosine.is_nan() && nan.max_abs == 2.0);
    }

    #[test]
    fn a_reader_may_skip_the_full_recipe() {
        let record = Record {
            format: FORMAT,
            content_hash: "ab".into(),
            tool: "t".into(),
            bytes_before: 10,
            bytes_after: 3,
            model_sha256: "cd".into(),
            inputs: vec![Tensor {
                name: "x".into(),
                elem_type: "float32".into(),
                shape: Some(vec![Dim::Symbolic("batch".into()), Dim::Fixed(64), Dim::Unknown]),
            }],
            outputs: vec![],
            summary: Summary {
                bits: 8,
                unsigned: false,
                per_channel: true,
                block_size: None,
                symmetric: true,
                native_int4: false,
                calibration: None,
                scheme: "int8 per-channel symmetric, weight-only".into(),
                quantized_tensors: 3,
                skipped_tensors: 0,
                opset: 13,
            },
            recipe: serde_json::json!({ "bits": 8, "layer-bits": {} }),
            quality: None,
            skipped: vec![],
            seconds: 0.5,
        };
        let manifest = Manifest { name: "m".into(), model: "/o/m.onnx".into(), source: "m.onnx".into(), record };
        let text = serde_json::to_string(&manifest).unwrap();
        assert!(text.contains(r#""shape":["batch",64,null]"#), "{text}");
        let back: Manifest<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, manifest);
        let skimmed: Manifest<serde::de::IgnoredAny> = serde_json::from_str(&text).unwrap();
        assert_eq!((skimmed.name.as_str(), skimmed.record.summary.opset), ("m", 13));
    }
}
