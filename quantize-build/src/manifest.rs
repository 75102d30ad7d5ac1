//! What quantize-build writes about each model, as JSON: a [`Record`] in the cache entry and a
//! [`Manifest`] (the record plus the name and file) in `OUT_DIR/quantize/<name>.json`, which
//! `include_quantized!` reads at expansion. `OUT_DIR/quantize/index.json` ([`Index`]) lists the
//! declared names so the macro can say which exist.
//!
//! The types are the `quantize-manifest` crate's, which the macro reads with too (it cannot
//! depend on this crate or the quantizer); here they carry the full [`Recipe`], and this module
//! builds them from a job's outcome.

use std::path::Path;

use quantize_rs::Port;
use quantize_rs::{ModelInfo, Outcome, Recipe};
use serde::{Deserialize, Serialize};

pub use quantize_manifest::{Dim, FORMAT, INDEX_FILE, Index, OUT_SUBDIR, Quality, Skipped, Summary, Tensor};

use crate::error::{Error, Result};

/// What a job produced, stored beside the model in the cache entry.
pub type Record = quantize_manifest::Record<Recipe>;

/// `OUT_DIR/quantize/<name>.json`: what `include_quantized!("name")` expands from.
pub type Manifest = quantize_manifest::Manifest<Recipe>;

/// A graph input or output as the manifest writes it.
pub fn tensor(p: &Port) -> Tensor {
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

/// Summarises a recipe and what it did.
pub fn summary(recipe: &Recipe, outcome: &Outcome) -> Summary {
    let calibration = recipe
        .calibration
        .as_ref()
        .map(|c| serde_json::to_value(c.method).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default());
    let activations = match &calibration {
        None => "weight-only".to_string(),
        Some(m) => format!("activations calibrated ({m})"),
    };
    Summary {
        bits: recipe.bits,
        unsigned: recipe.unsigned,
        per_channel: recipe.per_channel,
        block_size: recipe.block_size.map(|b| b as u64),
        symmetric: outcome.report.quantized.iter().all(|q| q.symmetric),
        native_int4: recipe.native_int4,
        scheme: format!("{}, {activations}", recipe.scheme()),
        calibration,
        quantized_tensors: outcome.report.quantized.len() as u64,
        skipped_tensors: outcome.report.skipped.len() as u64,
        opset: outcome.report.opset_after,
    }
}

/// The record of a finished job.
pub fn record(
    content_hash: String,
    recipe: &Recipe,
    outcome: &Outcome,
    info: &ModelInfo,
    bytes_after: u64,
    model_sha256: String,
    seconds: f64,
) -> Record {
    Record {
        format: FORMAT,
        content_hash,
        tool: crate::cache::TOOL_VERSION.into(),
        bytes_before: outcome.bytes_in,
        bytes_after,
        model_sha256,
        inputs: info.inputs.iter().map(tensor).collect(),
        outputs: info.outputs.iter().map(tensor).collect(),
        summary: summary(recipe, outcome),
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

/// Reads a JSON file written by this crate.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(Error::io(path))?;
    serde_json::from_slice(&text).map_err(|e| Error::Corrupt { path: path.into(), message: e.to_string() })
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value).expect("manifest types serialize");
    text.push(b'\n');
    quantize_rs::onnx::model::write_atomic(path, &text).map_err(|e| match e {
        quantize_rs::Error::Write { path, source } => Error::Io { path, source },
        other => Error::Io { path: path.into(), source: std::io::Error::other(other.to_string()) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_are_numbers_names_or_null() {
        let port = Port {
            name: "x".into(),
            elem_type: "float32".into(),
            shape: Some(vec!["batch".into(), "64".into(), "?".into()]),
        };
        let t = tensor(&port);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"name":"x","elem_type":"float32","shape":["batch",64,null]}"#
        );
        let back: Tensor =
            serde_json::from_str(r#"{"name":"x","elem_type":"float32","shape":["batch",64,null]}"#).unwrap();
        assert_eq!(back, t);
    }
}
