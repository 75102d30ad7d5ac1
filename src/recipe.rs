//! The recipe: the one description of a quantization job that every front door (CLI flags,
//! Cargo metadata, config files, the Rust API) builds, with one set of defaults and one
//! validation routine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::quant::QType;

/// What to quantize and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Recipe {
    /// Bits per weight: 8 or 4.
    pub bits: u8,
    /// Unsigned values (uint8/uint4) instead of signed ones.
    pub unsigned: bool,
    /// One scale per output channel (per tensor when false). Ignored when `block_size` is set.
    #[serde(alias = "per_channel")]
    pub per_channel: bool,
    /// Blocks of this many elements along each weight's reduction axis (opset 21).
    #[serde(alias = "block_size")]
    pub block_size: Option<usize>,
    /// Symmetric weights (zero point 0, or the middle for unsigned types).
    pub symmetric: bool,
    /// Store 4-bit values as ONNX INT4/UINT4 (two per byte, opset 21) instead of widened bytes.
    #[serde(alias = "native_int4")]
    pub native_int4: bool,
    /// Tensors or nodes (glob patterns) never quantized.
    pub exclude: Vec<String>,
    /// When not empty, only tensors or nodes matching one of these globs are quantized.
    pub include: Vec<String>,
    /// Op types whose weights are quantized.
    #[serde(alias = "op_types")]
    pub op_types: Vec<String>,
    /// Weights with fewer elements stay float.
    #[serde(alias = "min_elements")]
    pub min_elements: u64,
    /// Bits per weight for tensors or nodes matching a glob: 4, 8, or 32 to keep them float.
    /// An exact name beats a pattern; among patterns, the longest wins.
    #[serde(alias = "layer_bits")]
    pub layer_bits: BTreeMap<String, u8>,
    /// Write the model even when nothing was quantized.
    #[serde(alias = "allow_empty")]
    pub allow_empty: bool,
    /// Static quantization: calibrate activations on these samples.
    pub calibration: Option<Calibration>,
    /// Held-out samples (same formats as calibration data) to measure the result on.
    #[serde(alias = "verify_data")]
    pub verify_data: Option<PathBuf>,
    /// Fail when the output SNR on `verify-data` is below this many dB.
    #[serde(alias = "min_snr_db")]
    pub min_snr_db: Option<f64>,
    /// Fail when the output file is larger than this fraction of the input.
    #[serde(alias = "max_size_ratio")]
    pub max_size_ratio: Option<f64>,
}

/// How activation ranges are chosen from the observed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationMethod {
    /// Observed minimum and maximum.
    #[default]
    Minmax,
    /// The `percentile` of the absolute values (and its mirror for asymmetric ranges).
    Percentile,
    /// The threshold minimising the KL divergence between the float and quantized histograms;
    /// where that range's estimated error exceeds MinMax's, MSE's threshold instead.
    Entropy,
    /// The threshold minimising the mean squared quantization error.
    Mse,
}

/// Preprocessing for a folder of images used as calibration or verification data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImagePreprocess {
    /// Height and width the images are resized to.
    pub size: [usize; 2],
    /// `nchw` (default) or `nhwc`.
    #[serde(default = "default_layout")]
    pub layout: String,
    /// `rgb` (default), `bgr` or `gray`.
    #[serde(default = "default_channels")]
    pub channels: String,
    /// Pixel values are multiplied by this first (default 1/255).
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Per-channel mean subtracted after scaling.
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after the mean.
    #[serde(default)]
    pub std: Vec<f32>,
}

fn default_layout() -> String {
    "nchw".into()
}
fn default_channels() -> String {
    "rgb".into()
}
fn default_scale() -> f32 {
    1.0 / 255.0
}
fn default_true() -> bool {
    true
}
fn default_percentile() -> f64 {
    99.99
}

/// Static quantization settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Calibration {
    /// `.npy`, `.npz`, `.safetensors`, or a folder of images (with `image`).
    pub data: PathBuf,
    /// Range method.
    #[serde(default)]
    pub method: CalibrationMethod,
    /// Percentile for [`CalibrationMethod::Percentile`].
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// Use at most this many samples.
    pub samples: Option<usize>,
    /// Symmetric activation ranges (int8, zero point 0) instead of asymmetric uint8.
    #[serde(default, alias = "symmetric_activations")]
    pub symmetric_activations: bool,
    /// Keep the full int8 range (-127..127) for the weights of integer-kernel ops. By default
    /// they get 7 bits (-63..63) so that ONNX Runtime's u8×s8 kernels on x86 without VNNI, which
    /// add pairs of products in saturating 16-bit lanes, cannot overflow; set this when the model
    /// only runs where that cannot happen (VNNI or ARM CPUs, tract) for one more bit of weight
    /// precision.
    #[serde(default, alias = "full_range_weights")]
    pub full_range_weights: bool,
    /// With MinMax ranges, correct each Conv/Gemm bias for the mean shift its quantized weight
    /// causes, using the per-channel input means measured during calibration (default on).
    #[serde(default = "default_true", alias = "bias_correction")]
    pub bias_correction: bool,
    /// Before calibrating, fold per-channel Mul/Add/BatchNormalization into the convolution that
    /// reads them, write the spelled-out hard-swish as one `HardSwish` (raising the opset to 14)
    /// and a Softmax over a non-last axis as elementwise ops: exact up to float rounding, fewer
    /// float passes between the integer kernels (see `quantize_rs::fold`). Default on; off turns
    /// these three off and keeps the opset (per-channel BatchNormalization/Mul/Add right after a
    /// convolution are still folded into it, as for weight-only per-channel quantization).
    #[serde(default = "default_true", alias = "graph_rewrites")]
    pub graph_rewrites: bool,
    /// Op types whose activations are quantized, wherever they can be. Default: Conv, MatMul and
    /// Gemm, plus the elementwise and pass-through ops ONNX Runtime runs as integer kernels
    /// (Add, Mul, Sigmoid, Concat, MaxPool, Resize, Split) where all their data inputs already are
    /// quantized, so no conversion is added (see `quantize_rs::ops`).
    #[serde(default, alias = "op_types")]
    pub op_types: Option<Vec<String>>,
    /// Return the tensors that hurt most to float until the output SNR on `verify-data` reaches this.
    #[serde(default, alias = "target_snr_db")]
    pub target_snr_db: Option<f64>,
    /// Preprocessing when `data` is a folder of images.
    #[serde(default)]
    pub image: Option<ImagePreprocess>,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            bits: 8,
            unsigned: false,
            per_channel: true,
            block_size: None,
            symmetric: true,
            native_int4: false,
            exclude: vec![],
            include: vec![],
            op_types: crate::ops::default_op_types(),
            min_elements: 128,
            layer_bits: BTreeMap::new(),
            allow_empty: false,
            calibration: None,
            verify_data: None,
            min_snr_db: None,
            max_size_ratio: None,
        }
    }
}

impl Recipe {
    /// Checks every value; `prefix` is the path of the recipe in messages (e.g. `--` for flags
    /// or `package.metadata.quantize.models.digits.`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let key = |k: &str| format!("{prefix}{k}");
        let bad = |k: &str, message: String| Err(Error::Option { key: key(k), message });
        if !matches!(self.bits, 4 | 8) {
            return bad("bits", format!("expected 4 or 8, got {}", self.bits));
        }
        if self.block_size == Some(0) {
            return bad("block-size", "must be at least 1".into());
        }
        if self.native_int4 && self.bits != 4 {
            return bad("native-int4", format!("only applies to 4-bit weights, but bits is {}", self.bits));
        }
        for (pattern, bits) in &self.layer_bits {
            if !matches!(bits, 4 | 8 | 32) {
                return bad(&format!("layer-bits.{pattern}"), format!("expected 4, 8 or 32 (keep float), got {bits}"));
            }
            if *bits == 4 && self.native_int4 && self.bits != 4 {
                return bad(&format!("layer-bits.{pattern}"), "4-bit layers with native-int4 need bits = 4".into());
            }
        }
        for (k, patterns) in [("exclude", &self.exclude), ("include", &self.include)] {
            for p in patterns {
                if let Err(e) = globset::Glob::new(p) {
                    return bad(k, format!("'{p}' is not a valid glob: {e}"));
                }
            }
        }
        for p in self.layer_bits.keys() {
            if let Err(e) = globset::Glob::new(p) {
                return bad("layer-bits", format!("'{p}' is not a valid glob: {e}"));
            }
        }
        if let Some(c) = &self.calibration {
            if !(0.0 < c.percentile && c.percentile <= 100.0) {
                return bad("calibration.percentile", format!("expected a value in (0, 100], got {}", c.percentile));
            }
            let known = crate::ops::activation_op_types();
            for op in c.op_types.iter().flatten() {
                if !known.contains(&op.as_str()) {
                    return bad(
                        "calibration.op-types",
                        format!(
                            "quantize-rs does not quantize the activations of '{op}'; expected some of {}",
                            known.join(", ")
                        ),
                    );
                }
            }
            if c.samples == Some(0) {
                return bad("calibration.samples", "must be at least 1".into());
            }
            if let Some(img) = &c.image {
                if !matches!(img.layout.as_str(), "nchw" | "nhwc") {
                    return bad("calibration.image.layout", format!("expected nchw or nhwc, got '{}'", img.layout));
                }
                if !matches!(img.channels.as_str(), "rgb" | "bgr" | "gray") {
                    return bad(
                        "calibration.image.channels",
                        format!("expected rgb, bgr or gray, got '{}'", img.channels),
                    );
                }
                if img.size.contains(&0) {
                    return bad("calibration.image.size", "height and width must be at least 1".into());
                }
            }
        }
        if let Some(r) = self.max_size_ratio
            && (r.is_nan() || r <= 0.0)
        {
            return bad("max-size-ratio", format!("expected a positive fraction, got {r}"));
        }
        let known = crate::ops::default_op_types();
        for op in &self.op_types {
            if !known.contains(op) {
                return bad(
                    "op-types",
                    format!("'{op}' has no weight quantize-rs can quantize; expected some of {}", known.join(", ")),
                );
            }
        }
        Ok(())
    }

    /// The value type for a weight quantized with `bits`.
    pub fn qtype(&self, bits: u8) -> QType {
        QType::from_bits(bits, !self.unsigned).expect("validated: bits is 4 or 8")
    }
}
