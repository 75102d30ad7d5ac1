//! quantize-rs: post-training quantization of float32 ONNX models into standard ONNX QDQ models
//! (QuantizeLinear / DequantizeLinear) that ONNX Runtime and tract load.
//!
//! With default features off the crate is only [`embed`]: what `include_quantized!` expands to.

#![warn(missing_docs)]

// The layers, bottom to top (ARCHITECTURE.md). Only `onnx` and `embed` are public modules; the
// rest is reached through the re-exports below, so unused code is visible to the compiler.
#[cfg(feature = "quantize")]
mod analyse;
#[cfg(feature = "tract")]
mod benchmark;
#[cfg(feature = "tract")]
mod calibrate;
#[cfg(feature = "quantize")]
mod control;
#[cfg(feature = "tract")]
mod data;
#[cfg(feature = "quantize")]
mod dynamic;
pub mod embed;
#[cfg(feature = "quantize")]
mod error;
#[cfg(feature = "quantize")]
mod info;
#[cfg(feature = "quantize")]
pub mod onnx;
#[cfg(feature = "quantize")]
mod ops;
#[cfg(feature = "quantize")]
mod opset;
#[cfg(feature = "quantize")]
mod pipeline;
#[cfg(feature = "quantize")]
mod quant;
#[cfg(feature = "quantize")]
mod quantize;
#[cfg(feature = "quantize")]
mod recipe;
#[cfg(feature = "quantize")]
mod rewrite;
// Data-aware rounding needs layer statistics, which only tract runs can give.
#[cfg(feature = "tract")]
mod rounding;
#[cfg(feature = "tract")]
mod run;
#[cfg(feature = "tract")]
mod validate;
#[cfg(feature = "quantize")]
mod verify;

/// This engine's version and a fingerprint of its sources: a cache of quantized models keyed on
/// it is invalidated by any change to the engine.
pub const ENGINE_ID: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("QUANTIZE_RS_ENGINE"));

#[cfg(feature = "tract")]
pub use benchmark::{Benchmark, BenchmarkOptions, Latency, ModelFigures, Runtime, benchmark};
#[cfg(feature = "tract")]
pub use calibrate::{ActivationRange, TargetSearch};
#[cfg(feature = "quantize")]
pub use control::peak_memory;
#[cfg(feature = "tract")]
pub use data::{InputSpec, Sample, load_for_model, load_samples};
#[cfg(feature = "quantize")]
pub use error::{Error, Result};
#[cfg(feature = "quantize")]
pub use info::{ModelInfo, Port, human_bytes};
#[cfg(feature = "quantize")]
pub use onnx::model::{Model, SaveOptions};
#[cfg(feature = "quantize")]
pub use opset::{Handling, OpChange, Upgrade, op_changes, upgrade as upgrade_opset};
#[cfg(feature = "quantize")]
pub use pipeline::{CalibrationReport, Outcome, RunOptions, run, run_with};
#[cfg(feature = "quantize")]
pub use quant::{Granularity, QType, RangeSearch, Symmetry};
#[cfg(feature = "quantize")]
pub use quantize::{
    FEW_EFFECTIVE_SAMPLES, QuantSpec, QuantizedTensor, Report, SkippedTensor, WeightTarget, few_samples_warning,
    quantize_model,
};
#[cfg(feature = "quantize")]
pub use recipe::{
    Calibration, CalibrationMethod, ImagePreprocess, KeyPath, KeySegment, KeyStyle, Recipe, RecipeError, RecipeLayer,
    RecipeProblem, WeightRounding,
};
#[cfg(feature = "tract")]
pub use run::Runner;
#[cfg(feature = "tract")]
pub use validate::{
    Check, Status, ValidateOptions, Validation, WeightComparison, validate, validate_files, without_backtrace,
};
#[cfg(feature = "quantize")]
pub use verify::{OutputFigures, OutputKind, Verification, outputs_text};

/// Internals that the integration tests drive directly (the graph rewrites run alone). Not
/// part of the API: no stability promise.
#[cfg(feature = "quantize")]
#[doc(hidden)]
pub mod testing {
    pub use crate::rewrite::{
        decompose_softmax, drop_unused, equalize_conv_pairs, fold_affine_into_conv, fuse_hard_swish,
    };
}

pub use embed::{Dim, ElemType, EmbeddedModel, Quality, RecipeSummary, TensorInfo};
/// Embeds a model quantized by `quantize-build`: `static M: EmbeddedModel = include_quantized!("name");`
/// (see [`embed`]).
pub use quantize_macros::include_quantized;
