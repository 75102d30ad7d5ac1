//! The recipe: the one description of a quantization job that every front door (CLI flags,
//! Cargo metadata, config files, the Rust API) builds, with one set of defaults and one
//! validation routine.
//!
//! - [`mod.rs`](self): the types and their defaults ([`Recipe::default`],
//!   [`Calibration::new`], [`ImagePreprocess::new`] and the `DEFAULT_*` constants the CLI shows);
//! - `check`: [`Recipe::check`], every value checked, errors named by their [`KeyPath`];
//! - `parse`: [`Recipe::from_value`] and [`Recipe::from_layers`], the one parser of recipes
//!   written as data (Cargo metadata, TOML/YAML/JSON config files): kebab-case and snake_case
//!   keys, defaults ← file-level defaults ← per-model keys, errors at the layer that wrote them;
//! - `key`: [`KeyPath`] and [`RecipeError`], which each front door renders its own way
//!   ([`KeyStyle::Kebab`] for Cargo.toml, [`KeyStyle::Snake`] for config files, flags for the CLI).

mod check;
mod de;
mod key;
mod parse;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::quant::{QType, RangeSearch, Symmetry};

pub use key::{KeyPath, KeySegment, KeyStyle, RecipeError, RecipeProblem};
pub use parse::RecipeLayer;

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
    /// `true`: symmetric weights (zero point 0, or the middle for unsigned types); `false`:
    /// asymmetric (a zero point per scale); unset (the default): per scale, whichever
    /// reconstructs the weights better. Static quantization's integer kernels get symmetric
    /// weights unless this is `false`; weights rounded by GPTQ (data-aware, weight-only) get
    /// asymmetric ones unless this is `true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symmetric: Option<bool>,
    /// How each weight scale's range is chosen: `mse` (the default) shrinks it from the full
    /// range while that lowers the squared reconstruction error; `minmax` keeps the full range.
    #[serde(alias = "weight_range")]
    pub weight_range: RangeSearch,
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
    /// Dynamic quantization: MatMul and Gemm run on 8-bit integers, their inputs quantized at
    /// run time (DynamicQuantizeLinear + MatMulInteger); their weights int8 symmetric.
    /// Needs no calibration samples; other weights stay weight-only.
    pub dynamic: bool,
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
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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

impl ImagePreprocess {
    /// Default [`ImagePreprocess::layout`].
    pub const DEFAULT_LAYOUT: &str = "nchw";
    /// Default [`ImagePreprocess::channels`].
    pub const DEFAULT_CHANNELS: &str = "rgb";
    /// Default [`ImagePreprocess::scale`]: 8-bit pixels to 0..1.
    pub const DEFAULT_SCALE: f32 = 1.0 / 255.0;

    /// Images resized to `size` (height, width), every other setting at its default.
    pub fn new(size: [usize; 2]) -> ImagePreprocess {
        ImagePreprocess {
            size,
            layout: Self::DEFAULT_LAYOUT.into(),
            channels: Self::DEFAULT_CHANNELS.into(),
            scale: Self::DEFAULT_SCALE,
            mean: vec![],
            std: vec![],
        }
    }
}

fn default_layout() -> String {
    ImagePreprocess::DEFAULT_LAYOUT.into()
}
fn default_channels() -> String {
    ImagePreprocess::DEFAULT_CHANNELS.into()
}
fn default_scale() -> f32 {
    ImagePreprocess::DEFAULT_SCALE
}
fn default_true() -> bool {
    true
}
fn default_percentile() -> f64 {
    Calibration::DEFAULT_PERCENTILE
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
    /// With MinMax ranges (or `weight-only`), correct each Conv/Gemm bias for the mean shift its
    /// quantized weight causes, using the per-channel input means measured during calibration
    /// (default on).
    #[serde(default = "default_true", alias = "bias_correction")]
    pub bias_correction: bool,
    /// Before calibrating, fold per-channel Mul/Add/BatchNormalization into the convolution that
    /// reads them, write the spelled-out hard-swish as one `HardSwish` (raising the opset to 14)
    /// and a Softmax over a non-last axis as elementwise ops: exact up to float rounding, fewer
    /// float passes between the integer kernels (see `quantize_rs::fold`); and split the outlier
    /// input channels of each MatMul/Gemm (observed on the samples) into a small float product,
    /// so that the activation range the rest is quantized on is not set by a few channels
    /// (`rewrite::outliers`). Default on; off turns these four off and keeps the opset
    /// (per-channel BatchNormalization/Mul/Add right after a convolution are still folded into
    /// it, as for weight-only per-channel quantization).
    #[serde(default = "default_true", alias = "graph_rewrites")]
    pub graph_rewrites: bool,
    /// Before calibrating, equalize the channels between consecutive convolutions linked by
    /// Relu/LeakyRelu/PRelu or nothing (cross-layer equalization, data-free and exact up to float
    /// rounding: `rewrite::equalize`). Default off.
    #[serde(default)]
    pub equalize: bool,
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
    /// Use the samples for the weights only: no activation is quantized (the model stays a
    /// weight-only model), but each layer's rounding is chosen on its observed inputs
    /// (`weight-rounding`) and its bias corrected for the mean shift its quantized weight causes
    /// (`bias-correction`).
    #[serde(default, alias = "weight_only")]
    pub weight_only: bool,
    /// How weights are rounded when samples are given (default `gptq`).
    #[serde(default, alias = "weight_rounding")]
    pub weight_rounding: WeightRounding,
}

/// How weights are rounded to their integers when calibration samples are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum WeightRounding {
    /// Each layer's rounding chosen to minimise its output error on the observed inputs, from
    /// their second moments (GPTQ), with the scales round-to-nearest would use.
    #[default]
    Gptq,
    /// Each weight rounded up or down by gradient descent on the same objective (AdaRound);
    /// measured against GPTQ in BENCHMARKS.md.
    Adaround,
    /// Each weight to its nearest integer.
    Nearest,
}

impl Calibration {
    /// Default [`Calibration::percentile`].
    pub const DEFAULT_PERCENTILE: f64 = 99.99;

    /// Calibration on `data`, every other setting at its default (MinMax ranges, bias correction
    /// and graph rewrites on).
    pub fn new(data: impl Into<PathBuf>) -> Calibration {
        Calibration {
            data: data.into(),
            method: CalibrationMethod::default(),
            percentile: Self::DEFAULT_PERCENTILE,
            samples: None,
            symmetric_activations: false,
            full_range_weights: false,
            bias_correction: true,
            graph_rewrites: true,
            equalize: false,
            op_types: None,
            target_snr_db: None,
            image: None,
            weight_only: false,
            weight_rounding: WeightRounding::default(),
        }
    }
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            bits: Recipe::DEFAULT_BITS,
            unsigned: false,
            per_channel: true,
            block_size: None,
            symmetric: None,
            weight_range: RangeSearch::Mse,
            native_int4: false,
            exclude: vec![],
            include: vec![],
            op_types: crate::ops::default_op_types(),
            min_elements: Recipe::DEFAULT_MIN_ELEMENTS,
            layer_bits: BTreeMap::new(),
            allow_empty: false,
            dynamic: false,
            calibration: None,
            verify_data: None,
            min_snr_db: None,
            max_size_ratio: None,
        }
    }
}

impl Recipe {
    /// Default [`Recipe::bits`].
    pub const DEFAULT_BITS: u8 = 8;
    /// Default [`Recipe::min_elements`].
    pub const DEFAULT_MIN_ELEMENTS: u64 = 128;

    /// Checks every value; `prefix` is put before the key in messages (e.g. `--` for flags or
    /// `package.metadata.quantize.models.digits.`), which are kebab-case. [`Recipe::check`]
    /// gives the key as a [`KeyPath`] instead, for front doors that name keys their own way.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        self.check().map_err(|e| Error::Option {
            key: format!("{prefix}{}", e.key(KeyStyle::Kebab)),
            message: e.message(KeyStyle::Kebab),
        })
    }

    /// The value type for a weight quantized with `bits`.
    pub fn qtype(&self, bits: u8) -> QType {
        QType::from_bits(bits, !self.unsigned).expect("validated: bits is 4 or 8")
    }

    /// The weight scheme in brief, e.g. `int8 per-channel symmetric` or `uint4 blocked(32)
    /// asymmetric`.
    pub fn scheme(&self) -> String {
        let stored = serde_json::to_value(self.qtype(self.bits))
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let layout = match (self.block_size, self.per_channel) {
            (Some(b), _) => format!("blocked({b})"),
            (None, true) => "per-channel".into(),
            (None, false) => "per-tensor".into(),
        };
        let symmetry = match self.symmetry() {
            Symmetry::Symmetric => "symmetric",
            Symmetry::Asymmetric => "asymmetric",
            // Static quantization's integer kernels take symmetric weights.
            Symmetry::Auto if self.calibration.is_some() => "symmetric",
            Symmetry::Auto => "symmetric or asymmetric per scale",
        };
        let range = match self.weight_range {
            RangeSearch::Mse => "",
            RangeSearch::Minmax => ", min-max ranges",
        };
        format!("{stored} {layout} {symmetry}{range}")
    }

    /// The zero points the weight scales may use, as `symmetric` says.
    pub fn symmetry(&self) -> Symmetry {
        match self.symmetric {
            Some(true) => Symmetry::Symmetric,
            Some(false) => Symmetry::Asymmetric,
            None => Symmetry::Auto,
        }
    }
}
