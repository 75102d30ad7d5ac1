//! Data-aware rounding of weights: with calibration data, each layer's weights are rounded to
//! minimise the error of the layer's *output* on the observed inputs, instead of each weight's
//! own error (round-to-nearest).
//!
//! The scales and zero points stay those [`crate::quant::quantize`] chose; only the integer each
//! weight rounds to changes (GPTQ, see [`gptq`]). What a layer's inputs look like is summed up in
//! its second-moment matrix `H = Σ x xᵀ` over the vectors its weight rows are multiplied with
//! (im2col patches for convolutions), accumulated while the float model runs on the samples
//! (`calibrate::layer_inputs`): statistics, never activations, so memory is bounded by the
//! weights' own sizes.
//!
//! - [`layout`]: how a weight's rows (output channels) and columns (the reduction) map onto its
//!   elements for Conv, ConvTranspose, Gemm and MatMul, and the input vectors of each;
//! - [`gptq`]: the second-order rounding itself.

// Collecting statistics needs tract; the full build lints all of it.
#![cfg_attr(not(feature = "tract"), allow(dead_code, unused_imports))]

pub mod adaround;
pub mod gptq;
pub mod layout;

pub use gptq::{LayerStats, Refined, refine};

use std::collections::HashMap;

/// The input statistics of every layer that has them, by weight name.
pub type WeightStats = HashMap<String, LayerStats>;
