//! quantize-rs: post-training quantization of float32 ONNX models into standard ONNX QDQ models
//! (QuantizeLinear / DequantizeLinear) that ONNX Runtime and tract load.
//!
//! With default features off the crate is only [`embed`]: what `include_quantized!` expands to.

#![warn(missing_docs)]

#[cfg(feature = "quantize")]
pub mod analyse;
#[cfg(feature = "tract")]
pub mod benchmark;
#[cfg(feature = "tract")]
pub mod calibrate;
#[cfg(feature = "tract")]
pub mod data;
pub mod embed;
#[cfg(feature = "quantize")]
pub mod error;
#[cfg(feature = "quantize")]
pub mod info;
#[cfg(feature = "quantize")]
pub mod onnx;
#[cfg(feature = "quantize")]
pub mod ops;
#[cfg(feature = "quantize")]
pub mod opset;
#[cfg(feature = "quantize")]
pub mod pipeline;
#[cfg(feature = "quantize")]
pub mod quant;
#[cfg(feature = "quantize")]
pub mod quantize;
#[cfg(feature = "quantize")]
pub mod recipe;
#[cfg(feature = "quantize")]
pub mod rewrite;
#[cfg(feature = "tract")]
pub mod run;
#[cfg(feature = "tract")]
pub mod validate;
#[cfg(feature = "quantize")]
pub mod verify;

/// This engine's version and a fingerprint of its sources: a cache of quantized models keyed on
/// it is invalidated by any change to the engine.
pub const ENGINE_ID: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("QUANTIZE_RS_ENGINE"));

#[cfg(feature = "quantize")]
pub use error::{Error, Result};
#[cfg(feature = "quantize")]
pub use onnx::model::{Model, SaveOptions};
// Old paths, until the front doors and tests use the new ones.
#[cfg(feature = "tract")]
pub use benchmark::{Benchmark, BenchmarkOptions, benchmark};
#[cfg(feature = "quantize")]
pub use info::ModelInfo;
#[cfg(feature = "quantize")]
pub use onnx::{graph, model, proto};
#[cfg(feature = "quantize")]
pub use pipeline::{CalibrationReport, Outcome, RunOptions, Verification, run, run_with};
#[cfg(feature = "quantize")]
pub use quantize::{Report, quantize_model};
#[cfg(feature = "quantize")]
pub use recipe::{
    Calibration, CalibrationMethod, ImagePreprocess, KeyPath, KeySegment, KeyStyle, Recipe, RecipeError, RecipeLayer,
    RecipeProblem,
};
#[cfg(feature = "tract")]
pub use validate::{
    Check, OutputComparison, Status, ValidateOptions, Validation, WeightComparison, validate, validate_files,
};

pub use embed::{Dim, ElemType, EmbeddedModel, Quality, RecipeSummary, TensorInfo};
/// Embeds a model quantized by `quantize-build`: `static M: EmbeddedModel = include_quantized!("name");`
/// (see [`embed`]).
pub use quantize_macros::include_quantized;
