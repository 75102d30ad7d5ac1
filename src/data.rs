//! Calibration and verification data: reads the samples a model is run on from a `.npy`, `.npz`
//! or `.safetensors` file, or from a folder of images, checks them against the model's inputs and
//! returns them as tract tensors, one complete set of model inputs per sample.
//!
//! # Formats
//!
//! - `.npy`: one array, for a model with a single input.
//! - `.npz` (as `numpy.savez` or `numpy.savez_compressed` write it): one array per input, named
//!   after it (`np.savez(path, input_ids=ids, attention_mask=mask)`).
//! - `.safetensors`: one tensor per input, named after it.
//! - A folder of `.npy` / `.npz` / `.safetensors` files: each file is read as above and the
//!   samples of all files are taken in file name order. This is the way to feed samples of
//!   different sizes (a detector's images at their own aspect ratio), one file each.
//! - A folder of `.png` / `.jpg` / `.jpeg` images (or one such image), for a model with a single
//!   image input, with [`ImagePreprocess`]: each image is converted to 8-bit RGB (or gray),
//!   resized to `size` (bilinear), put in `channels` order, multiplied by `scale`, has `mean`
//!   subtracted and is divided by `std` (one value for all channels, or one per channel), and
//!   laid out as `[1, C, H, W]` (`nchw`) or `[1, H, W, C]` (`nhwc`). Images are taken in file
//!   name order; other files in the folder are ignored.
//!
//! # How arrays become samples
//!
//! For an input of rank `r`:
//! - an array of rank `r + 1` holds `N` samples stacked on axis 0, each a complete input;
//! - an array of rank `r` holds samples along the batch axis (axis 0), one each (`array[i:i+1]`),
//!   unless axis 0 of the input has a fixed size other than 1 (the VAD state `[2, batch, 128]`):
//!   then the array is one complete input;
//! - a rank-0 array feeds a scalar input (a sample rate).
//!
//! Every input must hold the same number of samples, except that an array at the input's own
//! rank holding exactly one sample (a scalar, a batch of 1, or one complete input as above) is
//! shared by every sample: a sample rate or an initial state need not be repeated. An array
//! stacked at rank `r + 1` is never shared, so a stack of 1 next to a stack of 8 is an error.
//!
//! Fixed dimensions must match exactly; symbolic and unknown ones take the sample's sizes, and
//! inputs that name the same symbol (`batch`, `sequence`) must agree on its size within a sample.
//!
//! # Types
//!
//! Data is converted to the input's type only where nothing is lost that matters:
//! - integers to any integer type whose range holds every value (int64 token ids for an int32
//!   input, int32 for int64);
//! - floats to any float type: widening is exact, narrowing (float64 → float32, what NumPy saves
//!   by default) rounds, and values beyond the narrower type's range are an error;
//! - bfloat16 and float16 data widen exactly.
//!
//! Integers never become floats nor floats integers (int16 PCM audio fed as-is to a model that
//! expects floats in [-1, 1] would calibrate garbage): such data is an error. Float data must be
//! finite: a NaN or infinity is an error naming the sample and the index.
//!
//! All samples are held in memory, converted to the inputs' types.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use ndarray_npy::npy::header::Header;
use tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn, ShapeBuilder};
use tract_onnx::prelude::{DatumType, Tensor, f16};

use crate::error::{Error, Result};
use crate::onnx::model::Model;
use crate::onnx::proto::dtype;
use crate::onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::onnx::proto::type_proto;
use crate::recipe::ImagePreprocess;

/// What the model expects of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// The graph input's name.
    pub name: String,
    /// Its element type, as an ONNX `TensorProto.DataType` value (0 when the model does not say:
    /// the data is then taken in its own type).
    pub elem_type: i32,
    /// Its shape.
    pub dims: Vec<Dim>,
}

/// One dimension of an [`InputSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size: the data must have exactly this.
    Fixed(usize),
    /// A size chosen by the data, named by a symbol such as `batch` (the empty name when the model
    /// gives none). Inputs that share a non-empty symbol must agree on its size within a sample.
    Symbolic(String),
}

/// One complete set of model inputs, in [`InputSpec`] order.
pub type Sample = Vec<Tensor>;

impl InputSpec {
    /// The inputs of `model`'s main graph that are fed at run time (initializers listed as graph
    /// inputs, as models of IR version < 4 do, are left out), in graph order, which is the order
    /// tract takes them in.
    pub fn of_model(model: &Model) -> Result<Vec<InputSpec>> {
        let graph = model.graph();
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
        let mut specs = vec![];
        for input in &graph.input {
            let name = input.name.clone().unwrap_or_default();
            if initializers.contains(name.as_str()) {
                continue;
            }
            let tensor = input.r#type.as_ref().and_then(|t| match &t.value {
                Some(type_proto::Value::TensorType(tt)) => Some(tt),
                _ => None,
            });
            let Some(shape) = tensor.and_then(|t| t.shape.as_ref()) else {
                return Err(Error::InvalidModel(format!(
                    "graph input '{name}' declares no tensor shape, so calibration data cannot be matched to it; \
                     export the model with input shapes"
                )));
            };
            // Exporters write 0 or -1 for sizes they do not know.
            let dims = shape
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(DimValue::DimValue(n)) if *n > 0 => Dim::Fixed(*n as usize),
                    // Paddle writes "?" for every unknown dim: a placeholder, not a shared name.
                    Some(DimValue::DimParam(p)) if p != "?" => Dim::Symbolic(p.clone()),
                    _ => Dim::Symbolic(String::new()),
                })
                .collect();
            specs.push(InputSpec { name, elem_type: tensor.and_then(|t| t.elem_type).unwrap_or(0), dims });
        }
        Ok(specs)
    }
}

/// Loads the samples in `path` for the inputs of `model`: [`InputSpec::of_model`] then
/// [`load_samples`].
pub fn load_for_model(
    model: &Model,
    path: &Path,
    image: Option<&ImagePreprocess>,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
    load_samples(path, &InputSpec::of_model(model)?, image, limit)
}

/// Loads the samples for `inputs` from `path` (see the [module docs](self) for the formats and
/// rules). `image` is the preprocessing for images and is needed only for them; `limit` keeps
/// the first samples only.
pub fn load_samples(
    path: &Path,
    inputs: &[InputSpec],
    image: Option<&ImagePreprocess>,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
    let fail = |message: String| Error::Data { path: path.to_path_buf(), input: None, message };
    if inputs.is_empty() {
        return Err(fail("the model has no inputs to feed".into()));
    }
    if limit == Some(0) {
        return Err(fail("asked for 0 samples; use at least 1".into()));
    }
    let meta = std::fs::metadata(path).map_err(|source| read_error(path, source))?;
    if meta.is_dir() {
        if let Some(files) = list_arrays(path)? {
            return load_array_files(&files, inputs, image, limit);
        }
        return load_images(path, &list_images(path)?, inputs, image, limit);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let arrays = match ext.as_str() {
        "npy" => {
            if inputs.len() != 1 {
                return Err(fail(format!(
                    "a .npy file holds one array, but the model has {} inputs ({}); save one array per \
                     input name in a .npz or .safetensors file",
                    inputs.len(),
                    quoted(inputs.iter().map(|i| i.name.as_str()))
                )));
            }
            let mut reader = BufReader::new(File::open(path).map_err(|source| read_error(path, source))?);
            vec![read_npy(&mut reader).map_err(|m| fail(format!("not a valid .npy array: {m}")))?]
        }
        "npz" => read_npz(path, inputs)?,
        "safetensors" => read_safetensors(path, inputs)?,
        "png" | "jpg" | "jpeg" => return load_images(path, &[path.to_path_buf()], inputs, image, limit),
        _ => {
            return Err(fail(
                "unknown data format: expected a .npy, .npz or .safetensors file, a .png/.jpeg image or a \
                 folder of images"
                    .into(),
            ));
        }
    };
    assemble(path, inputs, arrays, limit)
}

fn read_error(path: &Path, source: std::io::Error) -> Error {
    Error::Read { path: path.to_path_buf(), source }
}

/// `'a', 'b', 'c'`.
fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------------
// Arrays as read from files

/// An element type an array can be stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileType {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F16,
    Bf16,
    F32,
    F64,
}

impl FileType {
    fn size(self) -> usize {
        match self {
            FileType::Bool | FileType::U8 | FileType::I8 => 1,
            FileType::U16 | FileType::I16 | FileType::F16 | FileType::Bf16 => 2,
            FileType::U32 | FileType::I32 | FileType::F32 => 4,
            FileType::U64 | FileType::I64 | FileType::F64 => 8,
        }
    }
}

/// The values of an array, in C order, in the type they were stored in (bfloat16 widened to f32).
#[derive(Debug, Clone)]
enum Values {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F16(Vec<f16>),
    Bf16(Vec<f32>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Applies `$body` to the vector inside any [`Values`], rebuilding the same variant.
macro_rules! map_values {
    ($values:expr, $v:ident => $body:expr) => {
        match $values {
            Values::Bool($v) => Values::Bool($body),
            Values::U8($v) => Values::U8($body),
            Values::I8($v) => Values::I8($body),
            Values::U16($v) => Values::U16($body),
            Values::I16($v) => Values::I16($body),
            Values::U32($v) => Values::U32($body),
            Values::I32($v) => Values::I32($body),
            Values::U64($v) => Values::U64($body),
            Values::I64($v) => Values::I64($body),
            Values::F16($v) => Values::F16($body),
            Values::Bf16($v) => Values::Bf16($body),
            Values::F32($v) => Values::F32($body),
            Values::F64($v) => Values::F64($body),
        }
    };
}

/// Evaluates `$body` with the vector inside any [`Values`].
macro_rules! with_values {
    ($values:expr, $v:ident => $body:expr) => {
        match $values {
            Values::Bool($v) => $body,
            Values::U8($v) => $body,
            Values::I8($v) => $body,
            Values::U16($v) => $body,
            Values::I16($v) => $body,
            Values::U32($v) => $body,
            Values::I32($v) => $body,
            Values::U64($v) => $body,
            Values::I64($v) => $body,
            Values::F16($v) => $body,
            Values::Bf16($v) => $body,
            Values::F32($v) => $body,
            Values::F64($v) => $body,
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
}

impl Values {
    /// Decodes `bytes` (exactly the array's data) stored as `ty`.
    fn decode(ty: FileType, little_endian: bool, bytes: &[u8]) -> Values {
        macro_rules! num {
            ($t:ty) => {
                bytes
                    .chunks_exact(size_of::<$t>())
                    .map(|c| {
                        let a = c.try_into().expect("chunks_exact gives whole elements");
                        if little_endian { <$t>::from_le_bytes(a) } else { <$t>::from_be_bytes(a) }
                    })
                    .collect::<Vec<$t>>()
            };
        }
        match ty {
            FileType::Bool => Values::Bool(bytes.iter().map(|&b| b != 0).collect()),
            FileType::U8 => Values::U8(bytes.to_vec()),
            FileType::I8 => Values::I8(num!(i8)),
            FileType::U16 => Values::U16(num!(u16)),
            FileType::I16 => Values::I16(num!(i16)),
            FileType::U32 => Values::U32(num!(u32)),
            FileType::I32 => Values::I32(num!(i32)),
            FileType::U64 => Values::U64(num!(u64)),
            FileType::I64 => Values::I64(num!(i64)),
            FileType::F16 => Values::F16(num!(u16).into_iter().map(f16::from_bits).collect()),
            // bfloat16 is the upper half of an f32.
            FileType::Bf16 => Values::Bf16(num!(u16).into_iter().map(|b| f32::from_bits(u32::from(b) << 16)).collect()),
            FileType::F32 => Values::F32(num!(f32)),
            FileType::F64 => Values::F64(num!(f64)),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Values::Bool(_) => "bool",
            Values::U8(_) => "uint8",
            Values::I8(_) => "int8",
            Values::U16(_) => "uint16",
            Values::I16(_) => "int16",
            Values::U32(_) => "uint32",
            Values::I32(_) => "int32",
            Values::U64(_) => "uint64",
            Values::I64(_) => "int64",
            Values::F16(_) => "float16",
            Values::Bf16(_) => "bfloat16",
            Values::F32(_) => "float32",
            Values::F64(_) => "float64",
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Values::Bool(_) => Kind::Bool,
            Values::F16(_) | Values::Bf16(_) | Values::F32(_) | Values::F64(_) => Kind::Float,
            _ => Kind::Int,
        }
    }

    fn len(&self) -> usize {
        with_values!(self, v => v.len())
    }

    fn truncate(&mut self, len: usize) {
        with_values!(self, v => v.truncate(len))
    }

    /// The first float value for which `pred` holds, with its flat index.
    fn find_float(&self, pred: impl Fn(f64) -> bool) -> Option<(usize, f64)> {
        fn find<T: Copy>(v: &[T], to: impl Fn(T) -> f64, pred: impl Fn(f64) -> bool) -> Option<(usize, f64)> {
            v.iter().map(|&x| to(x)).enumerate().find(|&(_, x)| pred(x))
        }
        match self {
            Values::F16(v) => find(v, f16::to_f64, pred),
            Values::Bf16(v) | Values::F32(v) => find(v, f64::from, pred),
            Values::F64(v) => find(v, |x| x, pred),
            _ => None,
        }
    }

    /// The first integer value outside `lo..=hi`, with its flat index.
    fn find_int_outside(&self, lo: i128, hi: i128) -> Option<(usize, i128)> {
        fn find<T: Copy + Into<i128>>(v: &[T], lo: i128, hi: i128) -> Option<(usize, i128)> {
            v.iter().map(|&x| x.into()).enumerate().find(|&(_, x)| x < lo || x > hi)
        }
        match self {
            Values::U8(v) => find(v, lo, hi),
            Values::I8(v) => find(v, lo, hi),
            Values::U16(v) => find(v, lo, hi),
            Values::I16(v) => find(v, lo, hi),
            Values::U32(v) => find(v, lo, hi),
            Values::I32(v) => find(v, lo, hi),
            Values::U64(v) => find(v, lo, hi),
            Values::I64(v) => find(v, lo, hi),
            _ => None,
        }
    }

    /// A tensor of `shape` holding these values in their own type (bfloat16 as f32).
    fn into_tensor(self, shape: &[usize]) -> std::result::Result<Tensor, String> {
        with_values!(self, v => Tensor::from_shape(shape, &v)).map_err(|e| format!("cannot build a tensor: {e}"))
    }
}

/// An array read from a file.
#[derive(Debug, Clone)]
struct RawArray {
    shape: Vec<usize>,
    values: Values,
}

/// Reads one `.npy` array (header and data) from `reader`.
fn read_npy(reader: &mut impl Read) -> std::result::Result<RawArray, String> {
    let header = Header::from_reader(reader).map_err(|e| e.to_string())?;
    let descr = match header.type_descriptor.as_string() {
        Some(d) => d.clone(),
        None => {
            return Err(format!(
                "dtype {} is not a plain numeric or bool type; save a plain array",
                header.type_descriptor
            ));
        }
    };
    let (ty, little_endian) = parse_descr(&descr)?;
    let count = element_count(&header.shape)?;
    let expected = count.checked_mul(ty.size()).ok_or("the array is too large")?;
    let mut bytes = Vec::with_capacity(expected);
    reader.read_to_end(&mut bytes).map_err(|e| format!("cannot read the data: {e}"))?;
    if bytes.len() != expected {
        return Err(format!(
            "shape {:?} of {descr} needs {expected} bytes of data, the file holds {}; the file is truncated or corrupt",
            header.shape,
            bytes.len()
        ));
    }
    let mut values = Values::decode(ty, little_endian, &bytes);
    if header.layout.is_fortran() && header.shape.len() > 1 {
        let shape = IxDyn(&header.shape).f();
        values = map_values!(values, v => ArrayD::from_shape_vec(shape, v).expect("length checked").iter().copied().collect());
    }
    Ok(RawArray { shape: header.shape, values })
}

/// `<f4`, `|u1`, `>i8`, ... into the element type and whether it is little-endian.
fn parse_descr(descr: &str) -> std::result::Result<(FileType, bool), String> {
    let unsupported = || format!("dtype '{descr}' is not supported; use bool, integer or float arrays");
    let mut chars = descr.chars();
    let little_endian = match chars.next() {
        Some('<' | '|') => true,
        Some('>') => false,
        Some('=') => cfg!(target_endian = "little"),
        _ => return Err(unsupported()),
    };
    let ty = match chars.as_str() {
        "b1" => FileType::Bool,
        "u1" => FileType::U8,
        "i1" => FileType::I8,
        "u2" => FileType::U16,
        "i2" => FileType::I16,
        "u4" => FileType::U32,
        "i4" => FileType::I32,
        "u8" => FileType::U64,
        "i8" => FileType::I64,
        "f2" => FileType::F16,
        "f4" => FileType::F32,
        "f8" => FileType::F64,
        _ => return Err(unsupported()),
    };
    Ok((ty, little_endian))
}

fn element_count(shape: &[usize]) -> std::result::Result<usize, String> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| format!("shape {shape:?} is too large"))
}

/// Checks that the names in a file are exactly the inputs' names.
fn match_names(path: &Path, inputs: &[InputSpec], found: &[String], what: &str) -> Result<()> {
    for name in found {
        if !inputs.iter().any(|i| &i.name == name) {
            return Err(Error::Data {
                path: path.to_path_buf(),
                input: None,
                message: format!(
                    "{what} '{name}' matches no model input; the model's inputs are {} (name each {what} after \
                     the input it feeds)",
                    quoted(inputs.iter().map(|i| i.name.as_str()))
                ),
            });
        }
    }
    for input in inputs {
        if !found.contains(&input.name) {
            return Err(Error::Data {
                path: path.to_path_buf(),
                input: Some(input.name.clone()),
                message: format!(
                    "missing: the file has no {what} of that name (it holds {})",
                    if found.is_empty() { "nothing".into() } else { quoted(found.iter().map(String::as_str)) }
                ),
            });
        }
    }
    Ok(())
}

/// Reads one array per input from a `.npz` archive, in input order.
fn read_npz(path: &Path, inputs: &[InputSpec]) -> Result<Vec<RawArray>> {
    let fail = |input: Option<&str>, message: String| Error::Data {
        path: path.to_path_buf(),
        input: input.map(str::to_string),
        message,
    };
    let file = File::open(path).map_err(|source| read_error(path, source))?;
    let mut archive =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|e| fail(None, format!("not a valid .npz archive: {e}")))?;
    // numpy stores array `x` as the entry `x.npy`.
    let mut entries = HashMap::new();
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(|e| fail(None, format!("not a valid .npz archive: {e}")))?;
        if entry.is_dir() {
            continue;
        }
        let entry_name = entry.name().map_err(|e| fail(None, format!("not a valid .npz archive: {e}")))?.to_string();
        let name = entry_name.strip_suffix(".npy").unwrap_or(&entry_name).to_string();
        entries.insert(name, i);
    }
    let mut names: Vec<String> = entries.keys().cloned().collect();
    names.sort();
    match_names(path, inputs, &names, "array")?;
    inputs
        .iter()
        .map(|input| {
            let mut entry = archive
                .by_index(entries[&input.name])
                .map_err(|e| fail(Some(&input.name), format!("cannot read the array: {e}")))?;
            read_npy(&mut entry).map_err(|m| fail(Some(&input.name), format!("not a valid .npy array: {m}")))
        })
        .collect()
}

/// Reads one tensor per input from a `.safetensors` file, in input order.
fn read_safetensors(path: &Path, inputs: &[InputSpec]) -> Result<Vec<RawArray>> {
    use safetensors::Dtype;
    let bytes = std::fs::read(path).map_err(|source| read_error(path, source))?;
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        input: None,
        message: format!("not a valid .safetensors file: {e}"),
    })?;
    let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    names.sort();
    match_names(path, inputs, &names, "tensor")?;
    inputs
        .iter()
        .map(|input| {
            let view = file.tensor(&input.name).map_err(|e| Error::Data {
                path: path.to_path_buf(),
                input: Some(input.name.clone()),
                message: format!("cannot read the tensor: {e}"),
            })?;
            let ty = match view.dtype() {
                Dtype::BOOL => FileType::Bool,
                Dtype::U8 => FileType::U8,
                Dtype::I8 => FileType::I8,
                Dtype::U16 => FileType::U16,
                Dtype::I16 => FileType::I16,
                Dtype::U32 => FileType::U32,
                Dtype::I32 => FileType::I32,
                Dtype::U64 => FileType::U64,
                Dtype::I64 => FileType::I64,
                Dtype::F16 => FileType::F16,
                Dtype::BF16 => FileType::Bf16,
                Dtype::F32 => FileType::F32,
                Dtype::F64 => FileType::F64,
                other => {
                    return Err(Error::Data {
                        path: path.to_path_buf(),
                        input: Some(input.name.clone()),
                        message: format!("dtype {other:?} is not supported; use bool, integer or float tensors"),
                    });
                }
            };
            // safetensors checked that the data length matches the shape and dtype.
            Ok(RawArray { shape: view.shape().to_vec(), values: Values::decode(ty, true, view.data()) })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Matching arrays with inputs

/// How one input's array is cut into samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Rank + 1: sample `i` is `array[i]`.
    Stacked(usize),
    /// The input's rank: sample `i` is `array[i..i + 1]`.
    Batch(usize),
    /// The input's rank, one complete input used by every sample.
    Shared,
}

impl Split {
    /// Samples in the array, `None` when it is one sample that can be shared by all.
    fn count(self) -> Option<usize> {
        match self {
            Split::Stacked(n) => Some(n),
            Split::Batch(n) if n > 1 => Some(n),
            _ => None,
        }
    }
}

/// An input's array, checked and converted, ready to be cut into samples.
struct Prepared {
    tensor: Tensor,
    split: Split,
}

impl Prepared {
    fn sample(&self, i: usize) -> std::result::Result<Tensor, String> {
        let slice = |t: &Tensor| t.slice(0, i, i + 1).map_err(|e| format!("cannot take sample {i}: {e}"));
        match self.split {
            Split::Stacked(_) => {
                let mut t = slice(&self.tensor)?;
                t.remove_axis(0).map_err(|e| format!("cannot take sample {i}: {e}"))?;
                Ok(t)
            }
            Split::Batch(n) if n > 1 => slice(&self.tensor),
            Split::Batch(_) | Split::Shared => Ok(self.tensor.clone()),
        }
    }
}

fn dims_text(dims: &[Dim]) -> String {
    let d: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbolic(s) if s.is_empty() => "?".into(),
            Dim::Symbolic(s) => s.clone(),
        })
        .collect();
    format!("[{}]", d.join(", "))
}

/// Decides how `shape` splits into samples for `spec`, and the shape of one sample.
fn split_of(spec: &InputSpec, shape: &[usize]) -> std::result::Result<(Split, Vec<usize>), String> {
    let rank = spec.dims.len();
    let no_samples = || Err(format!("the array of shape {shape:?} holds no samples (axis 0 is empty)"));
    if shape.len() == rank + 1 {
        if shape[0] == 0 {
            return no_samples();
        }
        return Ok((Split::Stacked(shape[0]), shape[1..].to_vec()));
    }
    if shape.len() == rank {
        return match spec.dims.first() {
            None => Ok((Split::Shared, vec![])),
            Some(Dim::Fixed(d)) if *d != 1 => Ok((Split::Shared, shape.to_vec())),
            Some(_) if shape[0] == 0 => no_samples(),
            Some(_) => {
                let mut one = shape.to_vec();
                one[0] = 1;
                Ok((Split::Batch(shape[0]), one))
            }
        };
    }
    Err(format!(
        "expected an array of rank {rank} (samples along the batch axis) or {} (samples stacked on a new axis 0) \
         for shape {}, found rank {} (shape {shape:?})",
        rank + 1,
        dims_text(&spec.dims),
        shape.len()
    ))
}

/// The tract type of an ONNX element type, `None` for "take the data's own".
fn datum_type(elem_type: i32) -> std::result::Result<Option<DatumType>, String> {
    Ok(Some(match elem_type {
        0 => return Ok(None),
        1 => DatumType::F32,
        2 => DatumType::U8,
        3 => DatumType::I8,
        4 => DatumType::U16,
        5 => DatumType::I16,
        6 => DatumType::I32,
        7 => DatumType::I64,
        9 => DatumType::Bool,
        10 => DatumType::F16,
        11 => DatumType::F64,
        12 => DatumType::U32,
        13 => DatumType::U64,
        t => return Err(format!("inputs of type {} cannot be fed from data files", dtype::name(t))),
    }))
}

/// Where flat index `flat` of an array split by `split` lies: `sample 3, index [0, 2]` (the
/// index within the sample).
fn locate(flat: usize, split: Split, sample_shape: &[usize]) -> String {
    let per_sample = sample_shape.iter().product::<usize>().max(1);
    let (sample, mut rest) = (flat / per_sample, flat % per_sample);
    let mut index = vec![0; sample_shape.len()];
    for (i, &d) in sample_shape.iter().enumerate().rev() {
        if d > 0 {
            index[i] = rest % d;
            rest /= d;
        }
    }
    // A shared array is sample 0 of every sample.
    let sample = if split.count().is_some() { sample } else { 0 };
    format!("sample {sample}, index {index:?}")
}

/// Checks `values` (of an array split by `split`) against `spec`'s type and converts them.
fn convert(
    spec: &InputSpec,
    shape: &[usize],
    values: Values,
    split: Split,
    sample_shape: &[usize],
) -> std::result::Result<Tensor, String> {
    let found = values.type_name();
    if let Some((i, x)) = values.find_float(|x| !x.is_finite()) {
        let what = if x.is_nan() {
            "NaN"
        } else if x > 0.0 {
            "+inf"
        } else {
            "-inf"
        };
        return Err(format!("{found} data holds {what} at {}; samples must be finite", locate(i, split, sample_shape)));
    }
    let Some(target) = datum_type(spec.elem_type)? else {
        return values.into_tensor(shape);
    };
    let expected = dtype::name(spec.elem_type);
    let target_kind = if target == DatumType::Bool {
        Kind::Bool
    } else if target.is_float() {
        Kind::Float
    } else {
        Kind::Int
    };
    if values.kind() != target_kind {
        let hint = match target_kind {
            Kind::Float => format!(
                "; save it as {expected} (e.g. `array.astype(np.{})`) after any scaling the model expects",
                numpy_name(expected)
            ),
            Kind::Int => format!("; save it as {expected} (e.g. `array.astype(np.{})`)", numpy_name(expected)),
            Kind::Bool => "; save it as bool".into(),
        };
        return Err(format!("expected {expected} data, found {found}{hint}"));
    }
    match target_kind {
        Kind::Int => {
            let (lo, hi) = int_range(target);
            if let Some((i, x)) = values.find_int_outside(lo, hi) {
                return Err(format!(
                    "{found} value {x} at {} does not fit the input's type {expected} ({lo}..={hi})",
                    locate(i, split, sample_shape)
                ));
            }
        }
        Kind::Float => {
            let max = match target {
                DatumType::F16 => f64::from(f16::MAX.to_f32()),
                DatumType::F32 => f64::from(f32::MAX),
                _ => f64::INFINITY,
            };
            if let Some((i, x)) = values.find_float(|x| x.abs() > max) {
                return Err(format!(
                    "{found} value {x} at {} is beyond the range of the input's type {expected} (±{max})",
                    locate(i, split, sample_shape)
                ));
            }
        }
        Kind::Bool => {}
    }
    let tensor = values.into_tensor(shape)?;
    Ok(tensor.cast_to_dt(target).map_err(|e| format!("cannot convert {found} to {expected}: {e}"))?.into_owned())
}

fn numpy_name(onnx_name: &str) -> &str {
    match onnx_name {
        "bool" => "bool_",
        n => n,
    }
}

fn int_range(t: DatumType) -> (i128, i128) {
    match t {
        DatumType::U8 => (0, u8::MAX.into()),
        DatumType::I8 => (i8::MIN.into(), i8::MAX.into()),
        DatumType::U16 => (0, u16::MAX.into()),
        DatumType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DatumType::U32 => (0, u32::MAX.into()),
        DatumType::I32 => (i32::MIN.into(), i32::MAX.into()),
        DatumType::U64 => (0, u64::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    }
}

/// Sizes given to symbolic dimensions so far: symbol → (size, input).
type Symbols = HashMap<String, (usize, String)>;

/// Checks `sample_shape` against `spec.dims` and records its symbolic sizes.
fn check_shape(spec: &InputSpec, sample_shape: &[usize], symbols: &mut Symbols) -> std::result::Result<(), String> {
    for (i, (dim, &size)) in spec.dims.iter().zip(sample_shape).enumerate() {
        match dim {
            Dim::Fixed(d) if *d != size => {
                return Err(format!(
                    "dim {i}: expected {d}, found {size} (expected shape {}, found {sample_shape:?} per sample)",
                    dims_text(&spec.dims)
                ));
            }
            Dim::Symbolic(s) if !s.is_empty() => match symbols.get(s) {
                Some((other, who)) if *other != size => {
                    return Err(format!(
                        "dim {i} ('{s}') is {size}, but input '{who}' has '{s}' = {other}; inputs sharing a \
                         dimension name must agree"
                    ));
                }
                Some(_) => {}
                None => {
                    symbols.insert(s.clone(), (size, spec.name.clone()));
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// Matches one array per input (in input order) with the inputs and cuts them into samples.
fn assemble(path: &Path, inputs: &[InputSpec], arrays: Vec<RawArray>, limit: Option<usize>) -> Result<Vec<Sample>> {
    let fail = |input: &InputSpec, message: String| Error::Data {
        path: path.to_path_buf(),
        input: Some(input.name.clone()),
        message,
    };
    let mut splits = vec![];
    let mut symbols = Symbols::new();
    for (spec, array) in inputs.iter().zip(&arrays) {
        let (split, sample_shape) = split_of(spec, &array.shape).map_err(|m| fail(spec, m))?;
        check_shape(spec, &sample_shape, &mut symbols).map_err(|m| fail(spec, m))?;
        splits.push((split, sample_shape));
    }
    let mut count: Option<(usize, &InputSpec)> = None;
    for (spec, (split, _)) in inputs.iter().zip(&splits) {
        match (split.count(), count) {
            (Some(n), None) => count = Some((n, spec)),
            (Some(n), Some((m, first))) if n != m => {
                return Err(fail(
                    spec,
                    format!(
                        "holds {n} samples, but input '{}' holds {m}; every input needs the same number of \
                         samples (an array at the input's own rank holding one sample is shared by all)",
                        first.name
                    ),
                ));
            }
            _ => {}
        }
    }
    let total = count.map_or(1, |(n, _)| n);
    let total = limit.map_or(total, |l| total.min(l));
    let mut prepared = vec![];
    for (spec, (mut array, (split, sample_shape))) in inputs.iter().zip(arrays.into_iter().zip(splits)) {
        // Only the samples kept are checked and converted: they are a prefix in C order.
        if split.count().is_some_and(|n| n > total) {
            let per_sample: usize = array.shape[1..].iter().product();
            array.values.truncate(total * per_sample);
            array.shape[0] = total;
        }
        debug_assert_eq!(array.values.len(), array.shape.iter().product::<usize>());
        let tensor = convert(spec, &array.shape, array.values, split, &sample_shape).map_err(|m| fail(spec, m))?;
        prepared.push(Prepared { tensor, split });
    }
    let mut samples = Vec::with_capacity(total);
    for i in 0..total {
        let sample = inputs
            .iter()
            .zip(&prepared)
            .map(|(spec, p)| p.sample(i).map_err(|m| fail(spec, m)))
            .collect::<Result<Sample>>()?;
        samples.push(sample);
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------------------------
// Folders of arrays

const ARRAY_EXTENSIONS: [&str; 3] = ["npy", "npz", "safetensors"];
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn extension_of(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

/// The array files of `dir` in name order, or `None` when it holds none (then it is read as a
/// folder of images). A folder holding both arrays and images is ambiguous: an error.
fn list_arrays(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let mut arrays = vec![];
    let mut images = 0;
    for entry in std::fs::read_dir(dir).map_err(|source| read_error(dir, source))? {
        let path = entry.map_err(|source| read_error(dir, source))?.path();
        if !path.is_file() {
            continue;
        }
        let ext = extension_of(&path);
        if ARRAY_EXTENSIONS.contains(&ext.as_str()) {
            arrays.push(path);
        } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            images += 1;
        }
    }
    if arrays.is_empty() {
        return Ok(None);
    }
    if images > 0 {
        return Err(Error::Data {
            path: dir.to_path_buf(),
            input: None,
            message: format!(
                "the folder holds both array files ({}) and images ({images}); keep one kind per folder",
                arrays.len()
            ),
        });
    }
    arrays.sort();
    Ok(Some(arrays))
}

/// The samples of every file in `files`, in order, up to `limit`.
fn load_array_files(
    files: &[PathBuf],
    inputs: &[InputSpec],
    image: Option<&ImagePreprocess>,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
    let mut samples = vec![];
    for file in files {
        let left = limit.map(|l| l - samples.len());
        if left == Some(0) {
            break;
        }
        samples.extend(load_samples(file, inputs, image, left)?);
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------------------------
// Images

/// The `.png` / `.jpg` / `.jpeg` files of `dir`, in name order.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut images = vec![];
    let mut others = 0;
    for entry in std::fs::read_dir(dir).map_err(|source| read_error(dir, source))? {
        let path = entry.map_err(|source| read_error(dir, source))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if path.is_file() && matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
            images.push(path);
        } else {
            others += 1;
        }
    }
    if images.is_empty() {
        return Err(Error::Data {
            path: dir.to_path_buf(),
            input: None,
            message: format!("the folder holds no .png or .jpeg images ({others} other entries)"),
        });
    }
    images.sort();
    Ok(images)
}

/// Loads `files` as images for the model's single input.
fn load_images(
    path: &Path,
    files: &[PathBuf],
    inputs: &[InputSpec],
    image: Option<&ImagePreprocess>,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
    let [spec] = inputs else {
        return Err(Error::Data {
            path: path.to_path_buf(),
            input: None,
            message: format!(
                "images feed a model with one input, but this model has {} ({}); save the inputs as .npz or \
                 .safetensors with one array per input name",
                inputs.len(),
                quoted(inputs.iter().map(|i| i.name.as_str()))
            ),
        });
    };
    let fail = |message: String| Error::Data { path: path.to_path_buf(), input: Some(spec.name.clone()), message };
    let Some(pre) = image else {
        return Err(fail(
            "images need preprocessing: give the image settings (size, layout, channels, scale, mean, std)".into(),
        ));
    };
    let channels = match pre.channels.as_str() {
        "rgb" | "bgr" => 3,
        "gray" => 1,
        c => return Err(fail(format!("image channels: expected rgb, bgr or gray, got '{c}'"))),
    };
    if !matches!(pre.layout.as_str(), "nchw" | "nhwc") {
        return Err(fail(format!("image layout: expected nchw or nhwc, got '{}'", pre.layout)));
    }
    for (key, values) in [("mean", &pre.mean), ("std", &pre.std)] {
        if !(values.is_empty() || values.len() == 1 || values.len() == channels) {
            return Err(fail(format!(
                "image {key}: expected 1 or {channels} values for {} images, got {}",
                pre.channels,
                values.len()
            )));
        }
    }
    if let Some(s) = pre.std.iter().find(|s| !(s.is_finite() && **s != 0.0)) {
        return Err(fail(format!("image std: {s} cannot divide pixel values; use finite, non-zero values")));
    }
    if spec.dims.len() != 4 {
        return Err(fail(format!(
            "images give [1, C, H, W] or [1, H, W, C] tensors, but the input has shape {}; save the data as .npy",
            dims_text(&spec.dims)
        )));
    }
    // uint8 inputs take the pixels as they are: a model that wants them normalizes them itself.
    let raw_pixels = spec.elem_type == dtype::UINT8;
    if !(raw_pixels || matches!(spec.elem_type, 0 | dtype::FLOAT | dtype::FLOAT16 | dtype::DOUBLE)) {
        return Err(fail(format!(
            "images feed float or uint8 inputs, but this input is {}; save the data as .npy",
            dtype::name(spec.elem_type)
        )));
    }
    if raw_pixels && (pre.scale != 1.0 || !pre.mean.is_empty() || !pre.std.is_empty()) {
        return Err(fail(
            "the input takes uint8 pixels as they are: set image scale to 1 and give no mean or std".into(),
        ));
    }
    let files = &files[..limit.map_or(files.len(), |l| l.min(files.len()))];
    let mut samples = Vec::with_capacity(files.len());
    for file in files {
        let on_image = |message: String| Error::Data { path: file.clone(), input: Some(spec.name.clone()), message };
        let array = read_image(file, pre, channels, raw_pixels).map_err(on_image)?;
        let (split, sample_shape) = split_of(spec, &array.shape).map_err(on_image)?;
        check_shape(spec, &sample_shape, &mut Symbols::new()).map_err(|m| {
            on_image(format!("{m}; the image settings give size {:?} and {channels} channel(s)", pre.size))
        })?;
        samples.push(vec![convert(spec, &array.shape, array.values, split, &sample_shape).map_err(on_image)?]);
    }
    Ok(samples)
}

/// One image as a batch of 1, preprocessed (or its 8-bit pixels as they are with `raw_pixels`).
fn read_image(
    file: &Path,
    pre: &ImagePreprocess,
    channels: usize,
    raw_pixels: bool,
) -> std::result::Result<RawArray, String> {
    let decoded = image::ImageReader::open(file)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| format!("cannot read the image: {e}"))?
        .decode()
        .map_err(|e| format!("cannot decode the image: {e}"))?;
    let [h, w] = pre.size;
    let (width, height) = (
        u32::try_from(w).map_err(|_| "image width too large")?,
        u32::try_from(h).map_err(|_| "image height too large")?,
    );
    let resized = if decoded.width() == width && decoded.height() == height {
        decoded
    } else {
        decoded.resize_exact(width, height, image::imageops::FilterType::Triangle)
    };
    // Interleaved HWC pixels, channels in the requested order.
    let hwc: Vec<u8> = match pre.channels.as_str() {
        "gray" => resized.to_luma8().into_raw(),
        "bgr" => resized.to_rgb8().pixels().flat_map(|p| [p.0[2], p.0[1], p.0[0]]).collect(),
        _ => resized.to_rgb8().into_raw(),
    };
    let per_channel = |values: &[f32], c: usize, default: f32| match values.len() {
        0 => default,
        1 => values[0],
        _ => values[c],
    };
    let (shape, order): (Vec<usize>, Vec<usize>) = if pre.layout == "nhwc" {
        (vec![1, h, w, channels], (0..hwc.len()).collect())
    } else {
        // Element (c, y, x) of CHW is element (y, x, c) of HWC.
        let idx = (0..channels).flat_map(|c| (0..h * w).map(move |p| p * channels + c)).collect();
        (vec![1, channels, h, w], idx)
    };
    if raw_pixels {
        return Ok(RawArray { shape, values: Values::U8(order.iter().map(|&i| hwc[i]).collect()) });
    }
    let values = order
        .iter()
        .map(|&i| {
            let c = i % channels;
            (f32::from(hwc[i]) * pre.scale - per_channel(&pre.mean, c, 0.0)) / per_channel(&pre.std, c, 1.0)
        })
        .collect();
    Ok(RawArray { shape, values: Values::F32(values) })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use ndarray_npy::WriteNpyExt;
    use tract_onnx::prelude::tract_ndarray::{Array, ArrayD};

    use super::*;

    fn spec(name: &str, elem_type: i32, dims: &[&str]) -> InputSpec {
        let dims = dims
            .iter()
            .map(|d| match d.parse() {
                Ok(n) => Dim::Fixed(n),
                Err(_) => Dim::Symbolic(if *d == "?" { String::new() } else { d.to_string() }),
            })
            .collect();
        InputSpec { name: name.into(), elem_type, dims }
    }

    fn array<T: Clone>(shape: &[usize], values: Vec<T>) -> ArrayD<T> {
        Array::from_shape_vec(IxDyn(shape), values).unwrap()
    }

    fn npy<T: ndarray_npy::WritableElement>(a: &ArrayD<T>) -> Vec<u8> {
        let mut buf = vec![];
        a.write_npy(&mut buf).unwrap();
        buf
    }

    /// An .npy file written by hand, for what ndarray-npy does not write (float16, big-endian).
    fn npy_raw(descr: &str, shape: &[usize], fortran: bool, data: &[u8]) -> Vec<u8> {
        let shape_text = match shape {
            [n] => format!("({n},)"),
            _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
        };
        let py_bool = if fortran { "True" } else { "False" };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': {py_bool}, 'shape': {shape_text}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn write_npz(path: &Path, arrays: &[(&str, Vec<u8>)], compressed: bool) {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        let method = if compressed { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, bytes) in arrays {
            zip.start_file(format!("{name}.npy"), options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    }

    fn write_safetensors(path: &Path, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, dt, shape, data)| {
                (n.to_string(), safetensors::tensor::TensorView::new(*dt, shape.clone(), data).unwrap())
            })
            .collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.cast_to::<f32>().unwrap().to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    fn i64s(t: &Tensor) -> Vec<i64> {
        t.to_plain_array_view::<i64>().unwrap().iter().copied().collect()
    }

    fn load(path: &Path, inputs: &[InputSpec]) -> Result<Vec<Sample>> {
        load_samples(path, inputs, None, None)
    }

    fn load_err(path: &Path, inputs: &[InputSpec]) -> String {
        match load(path, inputs) {
            Ok(s) => panic!("expected an error, got {} samples", s.len()),
            Err(e) => e.to_string(),
        }
    }

    fn iota(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32).collect()
    }

    #[test]
    fn npy_stacked_samples_are_complete_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, npy(&array(&[4, 1, 3], iota(12)))).unwrap();
        let samples = load(&path, &[spec("x", 1, &["1", "3"])]).unwrap();
        assert_eq!(samples.len(), 4);
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(s.len(), 1);
            assert_eq!(s[0].shape(), &[1, 3]);
            assert_eq!(s[0].datum_type(), DatumType::F32);
            let base = (i * 3) as f32;
            assert_eq!(f32s(&s[0]), vec![base, base + 1.0, base + 2.0]);
        }
    }

    #[test]
    fn npy_at_the_input_rank_splits_the_batch_axis() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, npy(&array(&[5, 3], iota(15)))).unwrap();
        // Symbolic and fixed-1 batch axes alike.
        for batch in ["batch", "1"] {
            let samples = load(&path, &[spec("x", 1, &[batch, "3"])]).unwrap();
            assert_eq!(samples.len(), 5);
            assert_eq!(samples[2][0].shape(), &[1, 3]);
            assert_eq!(f32s(&samples[2][0]), vec![6.0, 7.0, 8.0]);
        }
    }

    #[test]
    fn folder_of_arrays_feeds_samples_of_different_sizes_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        // Two images of their own sizes, one file each, plus a stack of two in a third file.
        std::fs::write(dir.path().join("b.npy"), npy(&array(&[1, 1, 2, 3], iota(6)))).unwrap();
        std::fs::write(dir.path().join("a.npy"), npy(&array(&[1, 1, 4, 2], iota(8)))).unwrap();
        std::fs::write(dir.path().join("c.npy"), npy(&array(&[2, 1, 1, 2, 2], iota(8)))).unwrap();
        std::fs::write(dir.path().join("manifest.json"), "{}").unwrap();
        let inputs = [spec("x", 1, &["N", "1", "H", "W"])];
        let samples = load(dir.path(), &inputs).unwrap();
        let shapes: Vec<_> = samples.iter().map(|s| s[0].shape().to_vec()).collect();
        assert_eq!(shapes, vec![vec![1, 1, 4, 2], vec![1, 1, 2, 3], vec![1, 1, 2, 2], vec![1, 1, 2, 2]]);
        assert_eq!(f32s(&samples[3][0]), vec![4.0, 5.0, 6.0, 7.0]);
        // The limit spans files.
        let three = load_samples(dir.path(), &inputs, None, Some(3)).unwrap();
        assert_eq!(three.len(), 3);
        // An error names the file it is in.
        std::fs::write(dir.path().join("d.npy"), npy(&array(&[1, 2, 2, 2], iota(8)))).unwrap();
        let err = load_err(dir.path(), &inputs);
        assert!(err.contains("d.npy"), "{err}");
    }

    #[test]
    fn folder_mixing_arrays_and_images_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_pngs(dir.path());
        std::fs::write(dir.path().join("x.npy"), npy(&array(&[1, 3], iota(3)))).unwrap();
        let err = load_err(dir.path(), &[spec("x", 1, &["N", "3"])]);
        assert!(err.contains("both array files (1) and images (2)"), "{err}");
    }

    #[test]
    fn dynamic_dims_take_the_sample_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, npy(&array(&[2, 1, 3, 5, 7], iota(210)))).unwrap();
        let samples = load(&path, &[spec("x", 1, &["batch", "3", "height", "?"])]).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1][0].shape(), &[1, 3, 5, 7]);
        assert_eq!(f32s(&samples[1][0])[0], 105.0);
        // Several images per sample: the batch is dynamic too.
        let samples = load(&path, &[spec("x", 1, &["batch", "3", "height", "width"])]).unwrap();
        assert_eq!(samples[0][0].shape(), &[1, 3, 5, 7]);
    }

    #[test]
    fn limit_keeps_the_first_samples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let mut values = iota(15);
        values[14] = f32::NAN; // in a sample that is not kept
        std::fs::write(&path, npy(&array(&[5, 3], values))).unwrap();
        let samples = load_samples(&path, &[spec("x", 1, &["batch", "3"])], None, Some(2)).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(f32s(&samples[1][0]), vec![3.0, 4.0, 5.0]);
        let samples = load_samples(&path, &[spec("x", 1, &["batch", "3"])], None, Some(100));
        assert!(samples.unwrap_err().to_string().contains("sample 4, index [0, 2]"));
    }

    #[test]
    fn npz_feeds_a_transformer_and_widens_int32_to_int64() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<i64> = (0..12).map(|i| 100 + i).collect();
        let mask: Vec<i32> = vec![1; 12];
        for compressed in [false, true] {
            let path = dir.path().join(format!("tokens-{compressed}.npz"));
            write_npz(
                &path,
                &[
                    ("input_ids", npy(&array(&[3, 4], ids.clone()))),
                    ("attention_mask", npy(&array(&[3, 4], mask.clone()))),
                ],
                compressed,
            );
            let inputs =
                [spec("input_ids", 7, &["batch", "sequence"]), spec("attention_mask", 7, &["batch", "sequence"])];
            let samples = load(&path, &inputs).unwrap();
            assert_eq!(samples.len(), 3);
            assert_eq!(samples[1][0].shape(), &[1, 4]);
            assert_eq!(i64s(&samples[1][0]), vec![104, 105, 106, 107]);
            assert_eq!(samples[1][1].datum_type(), DatumType::I64);
            assert_eq!(i64s(&samples[1][1]), vec![1, 1, 1, 1]);
        }
    }

    #[test]
    fn npz_feeds_a_vad_with_shared_state_and_sample_rate() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = [spec("input", 1, &["batch", "4"]), spec("state", 1, &["2", "batch", "8"]), spec("sr", 7, &[])];
        let audio = npy(&array(&[3, 4], iota(12)));
        let state = npy(&array(&[2, 1, 8], vec![0.5f32; 16]));
        // The sample rate once (rank 0, shared) or per sample (rank 1: stacked scalars).
        let shared = dir.path().join("shared.npz");
        write_npz(
            &shared,
            &[("input", audio.clone()), ("state", state.clone()), ("sr", npy(&array(&[], vec![16000i64])))],
            false,
        );
        let samples = load(&shared, &inputs).unwrap();
        assert_eq!(samples.len(), 3);
        for s in &samples {
            assert_eq!(s[1].shape(), &[2, 1, 8]);
            assert_eq!(s[2].shape(), &[] as &[usize]);
            assert_eq!(i64s(&s[2]), vec![16000]);
        }
        assert_eq!(f32s(&samples[2][0]), vec![8.0, 9.0, 10.0, 11.0]);
        let stacked = dir.path().join("stacked.npz");
        write_npz(
            &stacked,
            &[("input", audio), ("state", state), ("sr", npy(&array(&[3], vec![8000i64, 16000, 8000])))],
            false,
        );
        let samples = load(&stacked, &inputs).unwrap();
        assert_eq!(i64s(&samples[1][2]), vec![16000]);
        assert_eq!(i64s(&samples[2][2]), vec![8000]);
    }

    #[test]
    fn safetensors_by_name_with_half_floats_widened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.safetensors");
        let halves: Vec<u8> = [0.5f32, -2.0, 1.5, 3.0].iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect();
        let bf16: Vec<u8> = [1.0f32, -0.25].iter().flat_map(|&x| ((x.to_bits() >> 16) as u16).to_le_bytes()).collect();
        let ints: Vec<u8> = [7i64, 9].iter().flat_map(|x| x.to_le_bytes()).collect();
        write_safetensors(
            &path,
            &[
                ("image", safetensors::Dtype::F16, vec![2, 1, 2], halves),
                ("scale", safetensors::Dtype::BF16, vec![2], bf16),
                ("ids", safetensors::Dtype::I64, vec![2, 1], ints),
            ],
        );
        let inputs = [spec("ids", 6, &["batch"]), spec("image", 1, &["1", "2"]), spec("scale", 11, &[])];
        let samples = load(&path, &inputs).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1][0].datum_type(), DatumType::I32);
        assert_eq!(f32s(&samples[1][0]), vec![9.0]);
        assert_eq!(samples[0][1].datum_type(), DatumType::F32);
        assert_eq!(f32s(&samples[0][1]), vec![0.5, -2.0]);
        assert_eq!(f32s(&samples[1][1]), vec![1.5, 3.0]);
        assert_eq!(samples[1][2].datum_type(), DatumType::F64);
        assert_eq!(f32s(&samples[1][2]), vec![-0.25]);
    }

    #[test]
    fn npy_float16_big_endian_and_fortran_order() {
        let dir = tempfile::tempdir().unwrap();
        let input = [spec("x", 1, &["2", "3"])];
        let path = dir.path().join("half.npy");
        let halves: Vec<u8> = iota(6).iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect();
        std::fs::write(&path, npy_raw("<f2", &[2, 3], false, &halves)).unwrap();
        assert_eq!(f32s(&load(&path, &input).unwrap()[0][0]), iota(6));
        let path = dir.path().join("big.npy");
        let big: Vec<u8> = iota(6).iter().flat_map(|x| x.to_be_bytes()).collect();
        std::fs::write(&path, npy_raw(">f4", &[2, 3], false, &big)).unwrap();
        assert_eq!(f32s(&load(&path, &input).unwrap()[0][0]), iota(6));
        // Column-major: [[0, 1, 2], [3, 4, 5]] is stored 0 3 1 4 2 5.
        let path = dir.path().join("fortran.npy");
        let cols: Vec<u8> = [0.0f32, 3.0, 1.0, 4.0, 2.0, 5.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(&path, npy_raw("<f4", &[2, 3], true, &cols)).unwrap();
        assert_eq!(f32s(&load(&path, &input).unwrap()[0][0]), iota(6));
    }

    #[test]
    fn float64_narrows_to_float32_and_scalar_inputs_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        std::fs::write(&path, npy(&array(&[3], vec![0.1f64, 0.2, 0.3]))).unwrap();
        let samples = load(&path, &[spec("t", 1, &[])]).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[2][0].shape(), &[] as &[usize]);
        assert_eq!(f32s(&samples[2][0]), vec![0.3f32]);
        std::fs::write(&path, npy(&array(&[], vec![2.5f64]))).unwrap();
        let samples = load(&path, &[spec("t", 11, &[])]).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(f32s(&samples[0][0]), vec![2.5]);
    }

    fn write_pngs(dir: &Path) {
        // Two 2x2 images; pixel (x, y) of image k is (10k + x + 2y, 100, 200).
        for k in 0..2u8 {
            let img = image::RgbImage::from_fn(2, 2, |x, y| image::Rgb([10 * k + x as u8 + 2 * y as u8, 100, 200]));
            img.save(dir.join(format!("img{k}.png"))).unwrap();
        }
        std::fs::write(dir.join("README.txt"), "not an image").unwrap();
    }

    fn preprocess(layout: &str, channels: &str) -> ImagePreprocess {
        ImagePreprocess {
            size: [2, 2],
            layout: layout.into(),
            channels: channels.into(),
            scale: 1.0,
            mean: vec![],
            std: vec![],
        }
    }

    #[test]
    fn image_folder_nchw_rgb_with_mean_and_std() {
        let dir = tempfile::tempdir().unwrap();
        write_pngs(dir.path());
        let mut pre = preprocess("nchw", "rgb");
        pre.scale = 0.5;
        pre.mean = vec![1.0, 2.0, 3.0];
        pre.std = vec![2.0];
        let samples = load_samples(dir.path(), &[spec("images", 1, &["N", "3", "2", "2"])], Some(&pre), None).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1][0].shape(), &[1, 3, 2, 2]);
        let v = f32s(&samples[1][0]);
        // Red of image 1 is 10, 11, 12, 13: (p * 0.5 - 1) / 2.
        assert_eq!(&v[..4], &[2.0, 2.25, 2.5, 2.75]);
        assert_eq!(&v[4..8], &[24.0; 4]); // (100 * 0.5 - 2) / 2
        assert_eq!(&v[8..], &[48.5; 4]); // (200 * 0.5 - 3) / 2
    }

    #[test]
    fn image_folder_nhwc_bgr_gray_resize_and_uint8() {
        let dir = tempfile::tempdir().unwrap();
        write_pngs(dir.path());
        let pre = preprocess("nhwc", "bgr");
        let samples = load_samples(dir.path(), &[spec("x", 1, &["1", "2", "2", "3"])], Some(&pre), None).unwrap();
        assert_eq!(&f32s(&samples[0][0])[..6], &[200.0, 100.0, 0.0, 200.0, 100.0, 1.0]);
        let mut pre = preprocess("nchw", "gray");
        pre.size = [4, 6];
        let samples = load_samples(dir.path(), &[spec("x", 10, &["1", "1", "h", "w"])], Some(&pre), Some(1)).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0][0].shape(), &[1, 1, 4, 6]);
        assert_eq!(samples[0][0].datum_type(), DatumType::F16);
        let pre = preprocess("nchw", "rgb");
        let samples = load_samples(dir.path(), &[spec("x", 2, &["1", "3", "2", "2"])], Some(&pre), None).unwrap();
        assert_eq!(samples[1][0].datum_type(), DatumType::U8);
        assert_eq!(&f32s(&samples[1][0])[..4], &[10.0, 11.0, 12.0, 13.0]);
        // One image file works as a one-sample set.
        let one = dir.path().join("img1.png");
        let samples = load_samples(&one, &[spec("x", 1, &["1", "3", "2", "2"])], Some(&pre), None).unwrap();
        assert_eq!(samples.len(), 1);
    }

    #[test]
    fn image_errors_name_the_input_or_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let input = [spec("pixels", 1, &["1", "3", "224", "224"])];
        let pre = preprocess("nchw", "rgb");
        let err = load_samples(dir.path(), &input, Some(&pre), None).unwrap_err().to_string();
        assert!(err.contains("no .png or .jpeg images"), "{err}");
        write_pngs(dir.path());
        let err = load_samples(dir.path(), &input, Some(&pre), None).unwrap_err().to_string();
        assert!(err.contains("img0.png: input 'pixels': dim 2: expected 224, found 2"), "{err}");
        let err = load_samples(dir.path(), &input, None, None).unwrap_err().to_string();
        assert!(err.contains("input 'pixels': images need preprocessing"), "{err}");
        let mut bad = preprocess("nchw", "rgb");
        bad.mean = vec![0.0, 0.0];
        let err = load_samples(dir.path(), &input, Some(&bad), None).unwrap_err().to_string();
        assert!(err.contains("image mean: expected 1 or 3 values"), "{err}");
        let ids = [spec("ids", 7, &["1", "3", "2", "2"])];
        let err = load_samples(dir.path(), &ids, Some(&pre), None).unwrap_err().to_string();
        assert!(err.contains("input 'ids': images feed float or uint8 inputs, but this input is int64"), "{err}");
        let two = [spec("a", 1, &["1", "3", "2", "2"]), spec("b", 1, &[])];
        let err = load_samples(dir.path(), &two, Some(&pre), None).unwrap_err().to_string();
        assert!(err.contains("this model has 2 ('a', 'b')"), "{err}");
        std::fs::write(dir.path().join("broken.jpg"), b"not a jpeg").unwrap();
        let input = [spec("pixels", 1, &["1", "3", "2", "2"])];
        let err = load_samples(dir.path(), &input, Some(&pre), None).unwrap_err().to_string();
        assert!(err.contains("broken.jpg: input 'pixels': cannot decode the image"), "{err}");
    }

    /// Writes `arrays` to an .npz and returns the error loading it for `inputs`.
    fn npz_err(arrays: &[(&str, Vec<u8>)], inputs: &[InputSpec]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.npz");
        write_npz(&path, arrays, false);
        load_err(&path, inputs)
    }

    #[test]
    fn names_must_match_the_inputs() {
        let inputs = [spec("input_ids", 7, &["batch", "seq"]), spec("attention_mask", 7, &["batch", "seq"])];
        let ids = npy(&array(&[2, 3], vec![1i64; 6]));
        let err = npz_err(&[("input_ids", ids.clone()), ("token_type_ids", ids.clone())], &inputs);
        assert!(err.contains("array 'token_type_ids' matches no model input"), "{err}");
        assert!(err.contains("'input_ids', 'attention_mask'"), "{err}");
        let err = npz_err(&[("input_ids", ids.clone())], &inputs);
        assert!(err.contains("input 'attention_mask': missing"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, &ids).unwrap();
        let err = load_err(&path, &inputs);
        assert!(err.contains("a .npy file holds one array, but the model has 2 inputs"), "{err}");
        let path = dir.path().join("x.safetensors");
        write_safetensors(&path, &[("ids", safetensors::Dtype::I64, vec![1], vec![0; 8])]);
        let err = load_err(&path, &inputs);
        assert!(err.contains("tensor 'ids' matches no model input"), "{err}");
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "1,2").unwrap();
        assert!(load_err(&path, &inputs).contains("unknown data format"));
    }

    #[test]
    fn shapes_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, npy(&array(&[2, 4], iota(8)))).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["1", "3", "4"])]);
        assert!(err.contains("input 'x': expected an array of rank 3"), "{err}");
        assert!(err.contains("found rank 2 (shape [2, 4])"), "{err}");
        let err = load_err(&path, &[spec("x", 1, &["batch", "3"])]);
        assert!(err.contains("input 'x': dim 1: expected 3, found 4"), "{err}");
        // At the input's rank with a fixed leading size, the array is one complete input.
        let err = load_err(&path, &[spec("x", 1, &["3", "4"])]);
        assert!(err.contains("dim 0: expected 3, found 2"), "{err}");
        std::fs::write(&path, npy(&array(&[0, 4], Vec::<f32>::new()))).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["batch", "4"])]);
        assert!(err.contains("input 'x': the array of shape [0, 4] holds no samples"), "{err}");
        // Inputs sharing a dimension name must agree.
        let inputs = [spec("ids", 7, &["batch", "seq"]), spec("mask", 7, &["batch", "seq"])];
        let err = npz_err(
            &[("ids", npy(&array(&[2, 3], vec![1i64; 6]))), ("mask", npy(&array(&[2, 5], vec![1i64; 10])))],
            &inputs,
        );
        assert!(err.contains("input 'mask': dim 1 ('seq') is 5, but input 'ids' has 'seq' = 3"), "{err}");
        // And on the sample count.
        let err = npz_err(
            &[("ids", npy(&array(&[2, 3], vec![1i64; 6]))), ("mask", npy(&array(&[4, 3], vec![1i64; 12])))],
            &inputs,
        );
        assert!(err.contains("input 'mask': holds 4 samples, but input 'ids' holds 2"), "{err}");
    }

    #[test]
    fn types_convert_only_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, npy(&array(&[2, 2], vec![1.0f32; 4]))).unwrap();
        let err = load_err(&path, &[spec("ids", 7, &["batch", "2"])]);
        assert!(err.contains("input 'ids': expected int64 data, found float32"), "{err}");
        std::fs::write(&path, npy(&array(&[2, 2], vec![1i16; 4]))).unwrap();
        let err = load_err(&path, &[spec("audio", 1, &["batch", "2"])]);
        assert!(err.contains("input 'audio': expected float32 data, found int16"), "{err}");
        std::fs::write(&path, npy(&array(&[2, 2], vec![1i64, 2, 3, 1 << 40]))).unwrap();
        let err = load_err(&path, &[spec("ids", 6, &["batch", "2"])]);
        assert!(err.contains("int64 value 1099511627776 at sample 1, index [0, 1] does not fit"), "{err}");
        assert!(err.contains("int32"), "{err}");
        std::fs::write(&path, npy(&array(&[2, 2], vec![1.0f64, 2.0, 7e4, 1.0]))).unwrap();
        let err = load_err(&path, &[spec("x", 10, &["batch", "2"])]);
        assert!(err.contains("value 70000 at sample 1, index [0, 0] is beyond the range"), "{err}");
        assert!(err.contains("float16"), "{err}");
        std::fs::write(&path, npy_raw("<U3", &[1], false, &[0; 12])).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["?"])]);
        assert!(err.contains("dtype '<U3' is not supported"), "{err}");
        let err = load_err(&path, &[spec("x", 8, &["?"])]);
        assert!(err.contains("dtype '<U3'") || err.contains("string"), "{err}");
    }

    #[test]
    fn non_finite_values_name_the_sample_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let mut values = iota(12);
        values[9] = f32::NAN;
        std::fs::write(&path, npy(&array(&[2, 2, 3], values))).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["2", "3"])]);
        assert!(err.contains("input 'x': float32 data holds NaN at sample 1, index [1, 0]"), "{err}");
        let mut values = iota(6);
        values[4] = f32::NEG_INFINITY;
        std::fs::write(&path, npy(&array(&[2, 3], values))).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["2", "3"])]);
        assert!(err.contains("-inf at sample 0, index [1, 1]"), "{err}");
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let mut bytes = npy(&array(&[2, 3], iota(6)));
        bytes.truncate(bytes.len() - 4);
        std::fs::write(&path, &bytes).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["batch", "3"])]);
        assert!(err.contains("needs 24 bytes of data, the file holds 20"), "{err}");
        std::fs::write(&path, b"hello").unwrap();
        assert!(load_err(&path, &[spec("x", 1, &["batch", "3"])]).contains("not a valid .npy array"));
        let path = dir.path().join("x.npz");
        std::fs::write(&path, b"hello").unwrap();
        assert!(load_err(&path, &[spec("x", 1, &["batch", "3"])]).contains("not a valid .npz archive"));
        let path = dir.path().join("x.safetensors");
        std::fs::write(&path, b"hello world").unwrap();
        assert!(load_err(&path, &[spec("x", 1, &["batch", "3"])]).contains("not a valid .safetensors file"));
        let missing = dir.path().join("missing.npy");
        assert!(load_err(&missing, &[spec("x", 1, &["batch", "3"])]).contains("cannot read"));
        assert!(load_err(&dir.path().join("nowhere"), &[spec("x", 1, &["batch", "3"])]).contains("cannot read"));
    }
}
