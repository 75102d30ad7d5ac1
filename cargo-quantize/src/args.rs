//! Command-line arguments shared by several commands: the recipe flags every quantizing
//! command takes, and the arguments of `quantize` and `calibrate`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use quantize_rs::{
    Calibration, CalibrationMethod, ImagePreprocess, KeySegment, KeyStyle, Recipe, RecipeError, WeightRounding,
};

#[derive(Debug, Args)]
pub(crate) struct CalibrateArgs {
    /// The float32 ONNX model.
    pub(crate) model: PathBuf,
    /// Calibration samples: .npy, .npz, .safetensors, or a folder of images (with --image-size).
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Where to write the quantized model [default: <stem>_calibrated.onnx beside the model,
    /// never over an existing file without --force].
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    /// Range method.
    #[arg(long, value_enum, default_value_t = CalibrationMethod::default())]
    pub(crate) method: CalibrationMethod,
    /// Percentile kept by --method percentile.
    #[arg(long, default_value_t = Calibration::DEFAULT_PERCENTILE)]
    pub(crate) percentile: f64,
    /// Use at most N samples.
    #[arg(long, value_name = "N")]
    pub(crate) samples: Option<usize>,
    /// Symmetric int8 activations instead of asymmetric uint8.
    #[arg(long)]
    pub(crate) symmetric_activations: bool,
    /// Full int8 range for the weights of integer-kernel ops (default 7 bits, which ONNX Runtime's
    /// x86 kernels without VNNI cannot saturate); for models that run only on VNNI/ARM or tract.
    #[arg(long)]
    pub(crate) full_range_weights: bool,
    /// Leave biases as they are (by default MinMax calibration corrects them for the mean shift
    /// the quantized weights cause).
    #[arg(long)]
    pub(crate) no_bias_correction: bool,
    /// Turn off the rewrites before calibration: no folding of per-channel Mul/Add into the next
    /// convolution, no one-op HardSwish (and no opset 14 for it), no Softmax rewrite (on by
    /// default for speed), no split of a matrix product's outlier input channels into a small
    /// float product (on by default for accuracy); all exact up to float rounding. Affine ops
    /// right after a convolution are still folded into it.
    #[arg(long)]
    pub(crate) no_graph_rewrites: bool,
    /// Cross-layer equalization before calibrating: rescale the channels between consecutive
    /// convolutions (linked by Relu, LeakyRelu, PRelu or nothing) so both weights share each
    /// channel's range; exact up to float rounding.
    #[arg(long)]
    pub(crate) equalize: bool,
    /// Op types whose activations are quantized wherever they can be (default: Conv,MatMul,Gemm,
    /// plus Add,Mul,Sigmoid,Concat,MaxPool,Resize,Split where their inputs already are).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub(crate) activation_op_types: Vec<String>,
    /// Held-out samples to measure the result on (same formats as --data).
    #[arg(long)]
    pub(crate) verify_data: Option<PathBuf>,
    /// Fail when the output SNR on --verify-data is below this.
    #[arg(long, value_name = "DB")]
    pub(crate) min_snr_db: Option<f64>,
    /// Accuracy-target mode: return the activations that hurt most to float until the output SNR
    /// on --verify-data reaches this (the report lists them).
    #[arg(long, value_name = "DB", requires = "verify_data")]
    pub(crate) target_snr_db: Option<f64>,
    #[command(flatten)]
    pub(crate) image: ImageArgs,
    #[command(flatten)]
    pub(crate) recipe: RecipeArgs,
    /// Overwrite the output, even when it is the input model.
    #[arg(long)]
    pub(crate) force: bool,
    /// List every tensor in the report.
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

impl CalibrateArgs {
    pub(crate) fn recipe(&self) -> Result<Recipe, quantize_rs::Error> {
        let mut r = self.recipe.recipe()?;
        let image = self.image.preprocess()?;
        // Without --activation-op-types the default chain applies; it already leaves float the
        // nodes whose weights --op-types left float.
        let op_types = (!self.activation_op_types.is_empty()).then(|| self.activation_op_types.clone());
        r.calibration = Some(Calibration {
            method: self.method,
            percentile: self.percentile,
            samples: self.samples,
            symmetric_activations: self.symmetric_activations,
            full_range_weights: self.full_range_weights,
            bias_correction: !self.no_bias_correction,
            graph_rewrites: !self.no_graph_rewrites,
            equalize: self.equalize,
            op_types,
            target_snr_db: self.target_snr_db,
            image,
            ..Calibration::new(&self.data)
        });
        r.verify_data = self.verify_data.clone();
        r.min_snr_db = self.min_snr_db;
        r.check().map_err(flag_error)?;
        Ok(r)
    }
}

/// How a folder of images given as --data becomes model inputs.
#[derive(Debug, Args)]
pub(crate) struct ImageArgs {
    /// Resize images in a --data folder to HxW.
    #[arg(long, value_name = "HxW")]
    pub(crate) image_size: Option<String>,
    /// Image layout: nchw or nhwc.
    #[arg(long, default_value = ImagePreprocess::DEFAULT_LAYOUT)]
    pub(crate) image_layout: String,
    /// Image channels: rgb, bgr or gray.
    #[arg(long, default_value = ImagePreprocess::DEFAULT_CHANNELS)]
    pub(crate) image_channels: String,
    /// Multiply pixels (0-255) by this first.
    #[arg(long, default_value_t = ImagePreprocess::DEFAULT_SCALE)]
    pub(crate) image_scale: f32,
    /// Per-channel mean subtracted after scaling (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub(crate) image_mean: Vec<f32>,
    /// Per-channel standard deviation divided by after the mean (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub(crate) image_std: Vec<f32>,
}

impl ImageArgs {
    /// The preprocessing, when --image-size is given.
    fn preprocess(&self) -> Result<Option<ImagePreprocess>, quantize_rs::Error> {
        let Some(size) = &self.image_size else { return Ok(None) };
        let bad = || quantize_rs::Error::Option {
            key: "--image-size".into(),
            message: format!("expected HxW such as 224x224, got '{size}'"),
        };
        let (h, w) = size.split_once('x').ok_or_else(bad)?;
        Ok(Some(ImagePreprocess {
            layout: self.image_layout.clone(),
            channels: self.image_channels.clone(),
            scale: self.image_scale,
            mean: self.image_mean.clone(),
            std: self.image_std.clone(),
            ..ImagePreprocess::new([h.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?])
        }))
    }
}

/// A recipe error named by the flag that sets the key: `--bits`, `--percentile` for
/// `calibration.percentile`, `--activation-op-types` for `calibration.op-types`.
fn flag_error(e: RecipeError) -> quantize_rs::Error {
    let names: Vec<&str> = e
        .path
        .segments()
        .iter()
        .filter_map(|s| match s {
            KeySegment::Field(name) => Some(*name),
            KeySegment::Key(key) => Some(key.as_str()),
            KeySegment::Index(_) => None,
        })
        .collect();
    let flag = match names.as_slice() {
        ["calibration", "op-types"] => "activation-op-types".to_string(),
        ["calibration", "image", field] => format!("image-{field}"),
        ["calibration", rest @ ..] | rest => rest.join("."),
    };
    quantize_rs::Error::Option { key: format!("--{flag}"), message: e.message(KeyStyle::Kebab) }
}

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Text for people (on stdout for info, stderr for job reports).
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Options shared by every command that quantizes.
#[derive(Debug, Args, Clone)]
pub struct RecipeArgs {
    /// Bits per weight: 8 or 4.
    #[arg(short, long, default_value_t = Recipe::DEFAULT_BITS)]
    pub(crate) bits: u8,
    /// Unsigned values (uint8/uint4) instead of signed ones.
    #[arg(long)]
    pub(crate) unsigned: bool,
    /// One scale per output channel (the default).
    #[arg(long, conflicts_with = "per_tensor")]
    pub(crate) per_channel: bool,
    /// One scale per tensor (keeps opset 10+ models at their opset).
    #[arg(long)]
    pub(crate) per_tensor: bool,
    /// One scale per N elements along each weight's reduction axis (needs opset 21).
    #[arg(long, value_name = "N")]
    pub(crate) block_size: Option<usize>,
    /// Symmetric weights, zero point 0 [default: per scale, symmetric or asymmetric, whichever
    /// reconstructs the weights better; symmetric for static quantization's integer kernels;
    /// asymmetric for weights rounded on `--data` by GPTQ].
    #[arg(long, conflicts_with = "asymmetric")]
    pub(crate) symmetric: bool,
    /// Asymmetric weights with a zero point per scale.
    #[arg(long)]
    pub(crate) asymmetric: bool,
    /// How each weight scale's range is chosen: `mse` shrinks it while the squared error drops,
    /// `minmax` keeps the full range [default: mse].
    #[arg(long, value_enum, value_name = "HOW")]
    pub(crate) weight_range: Option<quantize_rs::RangeSearch>,
    /// Store 4-bit weights as ONNX INT4/UINT4, two per byte (opset 21), instead of one per byte.
    #[arg(long)]
    pub(crate) native_int4: bool,
    /// Never quantize tensors or nodes matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub(crate) exclude: Vec<String>,
    /// Only quantize tensors or nodes matching one of these globs (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub(crate) include: Vec<String>,
    /// Op types whose weights are quantized [default: Conv,ConvTranspose,Gemm,MatMul,Gather,LSTM,GRU,RNN].
    #[arg(long, value_delimiter = ',', value_name = "OPS")]
    pub(crate) op_types: Vec<String>,
    /// Leave weights with fewer elements float.
    #[arg(long, value_name = "N")]
    pub(crate) min_elements: Option<u64>,
    /// Bits for tensors or nodes matching NAME (a glob): 4, 8, or 32 to keep float (repeatable).
    #[arg(long, value_name = "NAME=BITS")]
    pub(crate) layer_bits: Vec<String>,
    /// Write the model even when nothing was quantized.
    #[arg(long)]
    pub(crate) allow_empty: bool,
    /// Dynamic quantization: MatMul/Gemm run on int8, their inputs quantized at run time (no
    /// calibration data needed; the form ONNX Runtime runs fastest for transformers).
    #[arg(long)]
    pub(crate) dynamic: bool,
}

impl RecipeArgs {
    /// The recipe these flags describe, validated.
    pub fn recipe(&self) -> Result<Recipe, quantize_rs::Error> {
        let mut r = Recipe { bits: self.bits, unsigned: self.unsigned, ..Recipe::default() };
        r.per_channel = !self.per_tensor;
        r.block_size = self.block_size;
        r.symmetric = match (self.symmetric, self.asymmetric) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        if let Some(range) = self.weight_range {
            r.weight_range = range;
        }
        r.native_int4 = self.native_int4;
        r.dynamic = self.dynamic;
        r.exclude = self.exclude.clone();
        r.include = self.include.clone();
        if !self.op_types.is_empty() {
            r.op_types = self.op_types.clone();
        }
        if let Some(n) = self.min_elements {
            r.min_elements = n;
        }
        let mut layer_bits = BTreeMap::new();
        for spec in &self.layer_bits {
            let bad = || quantize_rs::Error::Option {
                key: "--layer-bits".into(),
                message: format!("expected NAME=BITS (e.g. 'head.*=8'), got '{spec}'"),
            };
            let (name, bits) = spec.rsplit_once('=').ok_or_else(bad)?;
            let bits: u8 = bits.trim().parse().map_err(|_| bad())?;
            layer_bits.insert(name.to_string(), bits);
        }
        r.layer_bits = layer_bits;
        r.check().map_err(flag_error)?;
        Ok(r)
    }
}

#[derive(Debug, Args)]
pub(crate) struct QuantizeArgs {
    /// The float32 ONNX model.
    pub(crate) model: PathBuf,
    /// Where to write the quantized model [default: <stem>_quantized.onnx beside the model,
    /// never over an existing file without --force].
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    /// Samples of the model's inputs (.npy, .npz, .safetensors, or a folder of images with
    /// --image-size): each layer's weights are rounded to minimise its output error on them, and
    /// biases corrected for the mean shift the quantized weights cause. The model stays
    /// weight-only.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Use at most N samples of --data.
    #[arg(long, value_name = "N", requires = "data")]
    pub(crate) samples: Option<usize>,
    /// How weights are rounded with --data.
    #[arg(long, value_enum, requires = "data", default_value_t = WeightRounding::default())]
    pub(crate) weight_rounding: WeightRounding,
    /// With --data, leave biases as they are.
    #[arg(long, requires = "data")]
    pub(crate) no_bias_correction: bool,
    /// Held-out samples to measure the result on (same formats as --data).
    #[arg(long)]
    pub(crate) verify_data: Option<PathBuf>,
    /// Fail when the output SNR on --verify-data is below this.
    #[arg(long, value_name = "DB", requires = "verify_data")]
    pub(crate) min_snr_db: Option<f64>,
    /// Accuracy-target mode: the fewest weights, worst first, go from 4 to 8 bits and then to
    /// float until the output SNR on --verify-data reaches this (each count tried is the whole
    /// job run again, so the figure is the file's; the report lists them).
    #[arg(long, value_name = "DB", requires_all = ["verify_data", "data"])]
    pub(crate) target_snr_db: Option<f64>,
    #[command(flatten)]
    pub(crate) image: ImageArgs,
    #[command(flatten)]
    pub(crate) recipe: RecipeArgs,
    /// Overwrite the output, even when it is the input model.
    #[arg(long)]
    pub(crate) force: bool,
    /// List every tensor in the report.
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

impl QuantizeArgs {
    pub(crate) fn recipe(&self) -> Result<Recipe, quantize_rs::Error> {
        let mut r = self.recipe.recipe()?;
        if let Some(data) = &self.data {
            r.calibration = Some(Calibration {
                samples: self.samples,
                bias_correction: !self.no_bias_correction,
                image: self.image.preprocess()?,
                weight_only: true,
                weight_rounding: self.weight_rounding,
                target_snr_db: self.target_snr_db,
                ..Calibration::new(data)
            });
        }
        r.verify_data = self.verify_data.clone();
        r.min_snr_db = self.min_snr_db;
        r.check().map_err(flag_error)?;
        Ok(r)
    }
}
