//! What `include_quantized!("name")` expands to: an [`EmbeddedModel`], the quantized model's bytes
//! (embedded with `include_bytes!`) and a typed description of it written by `quantize-build`.
//!
//! Everything here is `const`-constructible and needs no feature of this crate, so a binary that
//! only embeds a model does not pay for the quantizer:
//!
//! ```toml
//! [dependencies]
//! quantize-rs = { version = "0.1", default-features = false }
//! ```
//!
//! With the `tract` feature, `EmbeddedModel::tract_runnable` turns the bytes into a model tract
//! runs, including 4-bit and blocked models, which tract cannot load as written (it has no 4-bit
//! element type and no `block_size` attribute): `tract_compatible` widens those weights at load.
//!
//! ```ignore
//! static DIGITS: quantize_rs::EmbeddedModel = quantize_rs::include_quantized!("digits");
//!
//! fn main() {
//!     println!("{}: {} bytes, {}", DIGITS.name, DIGITS.bytes.len(), DIGITS.recipe.scheme);
//!     for input in DIGITS.inputs {
//!         println!("input {input}"); // pixels: float32 [batch, 64]
//!     }
//! }
//! ```

use std::fmt;

/// A quantized model embedded in the binary, with what `quantize-build` recorded about it.
///
/// Built by `include_quantized!`; the fields are public so the macro can write a `static`.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedModel {
    /// The name it is declared under in `[package.metadata.quantize.models.<name>]`.
    pub name: &'static str,
    /// The quantized ONNX model.
    pub bytes: &'static [u8],
    /// The JSON manifest `quantize-build` wrote for it (the source of every other field).
    pub manifest: &'static str,
    /// Graph inputs.
    pub inputs: &'static [TensorInfo],
    /// Graph outputs.
    pub outputs: &'static [TensorInfo],
    /// How the model was quantized.
    pub recipe: RecipeSummary,
    /// Size in bytes of the float model it was made from.
    pub bytes_before: u64,
    /// Size in bytes of the quantized model (equal to `bytes.len()`).
    pub bytes_after: u64,
    /// SHA-256 (hex) of the job's inputs: model bytes, data bytes, recipe and tool version. It
    /// names the build cache entry, so equal hashes mean identical models.
    pub content_hash: &'static str,
    /// Output quality measured on `verify-data` at build time, when the recipe had some.
    pub quality: Option<Quality>,
}

impl EmbeddedModel {
    /// Looks up an input by name.
    pub fn input(&self, name: &str) -> Option<&'static TensorInfo> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// Looks up an output by name.
    pub fn output(&self, name: &str) -> Option<&'static TensorInfo> {
        self.outputs.iter().find(|t| t.name == name)
    }

    /// Quantized size as a fraction of the float size.
    pub fn size_ratio(&self) -> f64 {
        self.bytes_after as f64 / self.bytes_before.max(1) as f64
    }
}

/// A graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorInfo {
    /// The ONNX name.
    pub name: &'static str,
    /// Element type.
    pub elem_type: ElemType,
    /// Dimensions, or `None` when the model does not say.
    pub shape: Option<&'static [Dim]>,
}

impl fmt::Display for TensorInfo {
    /// `name: float32 [batch, 64]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.elem_type)?;
        match self.shape {
            None => write!(f, " (no shape)"),
            Some(dims) => {
                write!(f, " [")?;
                for (i, d) in dims.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{d}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// One dimension of a [`TensorInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A named size fixed at run time, such as `batch`.
    Symbolic(&'static str),
    /// Neither a size nor a name.
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// Element type of a [`TensorInfo`], named as ONNX names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// 32-bit float.
    Float32,
    /// 16-bit IEEE float.
    Float16,
    /// bfloat16.
    BFloat16,
    /// 64-bit float.
    Float64,
    /// Signed 8-bit integer.
    Int8,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Signed 16-bit integer.
    Int16,
    /// Unsigned 16-bit integer.
    Uint16,
    /// Signed 32-bit integer.
    Int32,
    /// Unsigned 32-bit integer.
    Uint32,
    /// Signed 64-bit integer.
    Int64,
    /// Unsigned 64-bit integer.
    Uint64,
    /// Boolean.
    Bool,
    /// String.
    String,
    /// Any other type, by its name in the manifest.
    Other(&'static str),
}

impl ElemType {
    /// The type for a manifest name such as `float32`; unknown names become [`ElemType::Other`].
    pub fn from_name(name: &'static str) -> ElemType {
        match name {
            "float32" => ElemType::Float32,
            "float16" => ElemType::Float16,
            "bfloat16" => ElemType::BFloat16,
            "float64" => ElemType::Float64,
            "int8" => ElemType::Int8,
            "uint8" => ElemType::Uint8,
            "int16" => ElemType::Int16,
            "uint16" => ElemType::Uint16,
            "int32" => ElemType::Int32,
            "uint32" => ElemType::Uint32,
            "int64" => ElemType::Int64,
            "uint64" => ElemType::Uint64,
            "bool" => ElemType::Bool,
            "string" => ElemType::String,
            other => ElemType::Other(other),
        }
    }

    /// The manifest name, e.g. `float32`.
    pub fn name(&self) -> &'static str {
        match self {
            ElemType::Float32 => "float32",
            ElemType::Float16 => "float16",
            ElemType::BFloat16 => "bfloat16",
            ElemType::Float64 => "float64",
            ElemType::Int8 => "int8",
            ElemType::Uint8 => "uint8",
            ElemType::Int16 => "int16",
            ElemType::Uint16 => "uint16",
            ElemType::Int32 => "int32",
            ElemType::Uint32 => "uint32",
            ElemType::Int64 => "int64",
            ElemType::Uint64 => "uint64",
            ElemType::Bool => "bool",
            ElemType::String => "string",
            ElemType::Other(name) => name,
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The recipe an [`EmbeddedModel`] was made with, in brief (the manifest has all of it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecipeSummary {
    /// Bits per weight: 8 or 4.
    pub bits: u8,
    /// Unsigned values.
    pub unsigned: bool,
    /// Per-channel scales.
    pub per_channel: bool,
    /// Block size along the reduction axis, when blocked.
    pub block_size: Option<u64>,
    /// Symmetric weights.
    pub symmetric: bool,
    /// 4-bit values stored as ONNX INT4/UINT4.
    pub native_int4: bool,
    /// Calibration method (`minmax`, `entropy`...) when activations were quantized too.
    pub calibration: Option<&'static str>,
    /// One line for people, e.g. `int8 per-channel symmetric, weight-only`.
    pub scheme: &'static str,
    /// Weights quantized.
    pub quantized_tensors: u64,
    /// Float constants left as they were.
    pub skipped_tensors: u64,
    /// Default-domain opset of the quantized model.
    pub opset: i64,
}

/// Output quality measured at build time on the recipe's `verify-data`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// Samples compared.
    pub samples: u64,
    /// Output signal-to-noise ratio in dB.
    pub snr_db: f64,
    /// Cosine similarity of the outputs.
    pub cosine: f64,
    /// Largest absolute output difference.
    pub max_abs: f64,
}

#[cfg(feature = "tract")]
pub use self::tract_support::{TractCompatibility, tract_compatible};

#[cfg(feature = "tract")]
mod tract_support {
    use std::borrow::Cow;
    use std::collections::{HashMap, HashSet};

    use prost::Message;
    use tract_onnx::prelude::*;

    use super::EmbeddedModel;
    use crate::error::{Error, Result};
    use crate::onnx::graph::{NodeExt, walk_graphs_mut};
    use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, TensorProto, dtype};
    use crate::onnx::tensor::{float_tensor, ints};
    use crate::ops::quantized::dequantize;

    /// What [`tract_compatible`] changed.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct TractCompatibility {
        /// INT4/UINT4 tensors widened to INT8/UINT8.
        pub widened_int4: usize,
        /// Blocked DequantizeLinear nodes replaced by their float result.
        pub folded_blocked: usize,
    }

    /// Rewrites what tract cannot load (tract-onnx 0.23 has no 4-bit element type and rejects
    /// DequantizeLinear's `block_size`): INT4/UINT4 tensors become INT8/UINT8 holding the same
    /// values, and a blocked DequantizeLinear of constants becomes the float constant it computes
    /// (tract folds every constant DequantizeLinear to float at load anyway, so this costs
    /// nothing at run time). Returns `None` when the model needs no change.
    pub fn tract_compatible(bytes: &[u8]) -> Result<Option<(Vec<u8>, TractCompatibility)>> {
        let mut model =
            ModelProto::decode(bytes).map_err(|source| Error::Decode { origin: "<embedded>".into(), source })?;
        let mut done = TractCompatibility::default();
        let graph =
            model.graph.as_mut().ok_or_else(|| Error::InvalidModel("the embedded model has no graph".into()))?;
        walk_graphs_mut(graph, &mut |_, g| {
            done.folded_blocked += fold_blocked(g)?;
            for t in &mut g.initializer {
                done.widened_int4 += widen_int4(t)? as usize;
            }
            for node in &mut g.node {
                for attr in &mut node.attribute {
                    if let Some(t) = attr.t.as_mut() {
                        done.widened_int4 += widen_int4(t)? as usize;
                    }
                }
            }
            Ok(())
        })?;
        if done == TractCompatibility::default() {
            return Ok(None);
        }
        Ok(Some((model.encode_to_vec(), done)))
    }

    /// The values of a quantized integer tensor (4-bit unpacked), as i32.
    fn int_values(t: &TensorProto) -> Result<Vec<i32>> {
        Ok(ints(t)?.into_iter().map(|v| v as i32).collect())
    }

    fn widen_int4(t: &mut TensorProto) -> Result<bool> {
        let signed = match t.data_type {
            Some(dtype::INT4) => true,
            Some(dtype::UINT4) => false,
            _ => return Ok(false),
        };
        let values = int_values(t)?;
        t.raw_data = Some(values.iter().map(|&v| v as u8).collect::<Vec<u8>>().into());
        t.int32_data.clear();
        t.data_type = Some(if signed { dtype::INT8 } else { dtype::UINT8 });
        Ok(true)
    }

    /// Replaces each DequantizeLinear with `block_size` whose inputs are initializers of `g` by a
    /// float initializer named like its output, and drops the integer initializers only it read.
    fn fold_blocked(g: &mut GraphProto) -> Result<usize> {
        let index: HashMap<String, usize> =
            g.initializer.iter().enumerate().filter_map(|(i, t)| Some((t.name.clone()?, i))).collect();
        let mut folded = Vec::new();
        let mut consumed = HashSet::new();
        let mut keep = Vec::with_capacity(g.node.len());
        for node in std::mem::take(&mut g.node) {
            let block = if crate::ops::is(&node, crate::ops::DEQUANTIZE_LINEAR) {
                node.attr_int("block_size")?.filter(|&b| b > 0)
            } else {
                None
            };
            let consts: Option<Vec<&TensorProto>> =
                node.input.iter().map(|name| index.get(name).map(|&i| &g.initializer[i])).collect();
            match (block, consts) {
                (Some(_), Some(consts)) if consts.len() >= 2 && node.output.len() == 1 => {
                    folded.push(dequantize_blocked(&node, &consts)?);
                    consumed.extend(node.input.iter().cloned());
                }
                _ => keep.push(node),
            }
        }
        g.node = keep;
        let n = folded.len();
        if n > 0 {
            let mut used: HashSet<String> = g.output.iter().filter_map(|o| o.name.clone()).collect();
            walk_graphs_mut(g, &mut |_, sub| {
                used.extend(sub.node.iter().flat_map(|node| node.input.iter().cloned()));
                Ok(())
            })?;
            g.initializer
                .retain(|t| t.name.as_ref().is_none_or(|name| !consumed.contains(name) || used.contains(name)));
            g.initializer.extend(folded);
        }
        Ok(n)
    }

    fn dequantize_blocked(node: &NodeProto, consts: &[&TensorProto]) -> Result<TensorProto> {
        let output = &node.output[0];
        let values = dequantize(node, consts[0], consts[1], consts.get(2).copied())
            .map_err(|e| Error::InvalidModel(format!("blocked DequantizeLinear of '{output}': {e}")))?;
        Ok(float_tensor(output.clone(), consts[0].dims.clone(), &values))
    }

    impl EmbeddedModel {
        /// The model's bytes in a form tract-onnx loads: borrowed as they are, or rewritten by
        /// [`tract_compatible`] for 4-bit and blocked models.
        pub fn tract_bytes(&self) -> Result<Cow<'static, [u8]>> {
            Ok(match tract_compatible(self.bytes)? {
                None => Cow::Borrowed(self.bytes),
                Some((bytes, _)) => Cow::Owned(bytes),
            })
        }

        /// The model as a tract inference model, to set input facts on before optimising.
        pub fn tract_model(&self) -> TractResult<InferenceModel> {
            let bytes = self.tract_bytes().map_err(|e| TractError::msg(format!("{}: {e}", self.name)))?;
            tract_onnx::onnx().model_for_read(&mut &*bytes)
        }

        /// The model optimised and ready to run, with its input shapes as the model declares
        /// them (symbolic dimensions such as `batch` stay symbolic).
        pub fn tract_runnable(&self) -> TractResult<std::sync::Arc<TypedRunnableModel>> {
            self.tract_model()?.into_optimized()?.into_runnable()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static INPUTS: [TensorInfo; 1] = [TensorInfo {
        name: "pixels",
        elem_type: ElemType::Float32,
        shape: Some(&[Dim::Symbolic("batch"), Dim::Fixed(64)]),
    }];

    #[test]
    fn tensor_info_prints_like_the_manifest() {
        assert_eq!(INPUTS[0].to_string(), "pixels: float32 [batch, 64]");
        let unknown = TensorInfo { name: "x", elem_type: ElemType::Other("float8"), shape: Some(&[Dim::Unknown]) };
        assert_eq!(unknown.to_string(), "x: float8 [?]");
        let no_shape = TensorInfo { name: "y", elem_type: ElemType::Int64, shape: None };
        assert_eq!(no_shape.to_string(), "y: int64 (no shape)");
    }

    #[test]
    fn elem_type_names_round_trip() {
        for name in ["float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "uint16", "int32"] {
            assert_eq!(ElemType::from_name(name).name(), name);
        }
        for name in ["uint32", "int64", "uint64", "bool", "string", "float8"] {
            assert_eq!(ElemType::from_name(name).name(), name);
        }
        assert_eq!(ElemType::from_name("float8"), ElemType::Other("float8"));
    }
}

#[cfg(all(test, feature = "tract"))]
mod tract_tests {
    use tract_onnx::prelude::*;

    use super::*;
    use crate::onnx::proto::dtype;
    use crate::{Model, Recipe, quantize_model};

    const DIGITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/digits/models/digits.onnx");

    fn logits(bytes: &[u8], input: &Tensor) -> Vec<f32> {
        let model = tract_onnx::onnx().model_for_read(&mut &*bytes).unwrap().into_optimized().unwrap();
        let out = model.into_runnable().unwrap().run(tvec!(input.clone().into())).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    fn quantized(recipe: Recipe) -> Vec<u8> {
        let mut model = Model::load(DIGITS).unwrap();
        quantize_model(&mut model, &recipe).unwrap();
        model.to_bytes()
    }

    fn input() -> Tensor {
        let values: Vec<f32> = (0..4 * 64).map(|i| ((i * 37) % 17) as f32 / 16.0).collect();
        Tensor::from_shape(&[4, 64], &values).unwrap()
    }

    /// Runs `bytes` through tract_compatible and tract, and returns the largest difference from
    /// the float model's logits, relative to their largest magnitude.
    fn relative_error(bytes: &'static [u8], expect: TractCompatibility) -> f32 {
        let (compatible, done) = tract_compatible(bytes).unwrap().expect("4-bit models need rewriting");
        assert_eq!(done, expect);
        let decoded = <crate::onnx::proto::ModelProto as prost::Message>::decode(&compatible[..]).unwrap();
        let g = decoded.graph.unwrap();
        assert!(g.initializer.iter().all(|t| !matches!(t.data_type, Some(dtype::INT4 | dtype::UINT4))));
        assert!(g.node.iter().all(|n| n.attribute.iter().all(|a| a.name.as_deref() != Some("block_size"))));

        let embedded = EmbeddedModel {
            name: "digits",
            bytes,
            manifest: "{}",
            inputs: &[],
            outputs: &[],
            recipe: RecipeSummary {
                bits: 4,
                unsigned: false,
                per_channel: true,
                block_size: None,
                symmetric: true,
                native_int4: true,
                calibration: None,
                scheme: "",
                quantized_tensors: 3,
                skipped_tensors: 0,
                opset: 21,
            },
            bytes_before: 0,
            bytes_after: bytes.len() as u64,
            content_hash: "",
            quality: None,
        };
        let runnable = embedded.tract_runnable().unwrap();
        let got: Vec<f32> = runnable.run(tvec!(input().into())).unwrap()[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        assert_eq!(got, logits(&compatible, &input()));
        let want = logits(&std::fs::read(DIGITS).unwrap(), &input());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
    }

    #[test]
    fn native_int4_per_channel_runs_in_tract_after_widening() {
        let bytes = quantized(Recipe { bits: 4, native_int4: true, symmetric: Some(true), ..Recipe::default() }).leak();
        // Three weights; symmetric signed weights have no zero-point tensor.
        let err = relative_error(bytes, TractCompatibility { widened_int4: 3, folded_blocked: 0 });
        assert!(err < 0.25, "relative error {err}");
    }

    #[test]
    fn blocked_int4_runs_in_tract_after_folding() {
        let recipe =
            Recipe { bits: 4, native_int4: true, block_size: Some(16), symmetric: Some(false), ..Recipe::default() };
        let bytes = quantized(recipe).leak();
        let err = relative_error(bytes, TractCompatibility { widened_int4: 0, folded_blocked: 3 });
        assert!(err < 0.15, "relative error {err}");
    }

    #[test]
    fn int8_models_are_left_as_they_are() {
        let bytes = quantized(Recipe::default());
        assert_eq!(tract_compatible(&bytes).unwrap(), None);
    }
}
