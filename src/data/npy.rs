//! Arrays as stored in files: the element types, the `.npy` format (header and values), shared
//! by `.npz` archives.

use std::io::Read;

use ndarray_npy::npy::header::Header;
use tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn, ShapeBuilder};
use tract_onnx::prelude::{Tensor, f16};

/// An element type an array can be stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileType {
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
    pub(super) fn size(self) -> usize {
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
pub(super) enum Values {
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
pub(super) enum Kind {
    Bool,
    Int,
    Float,
}

impl Values {
    /// Decodes `bytes` (exactly the array's data) stored as `ty`.
    pub(super) fn decode(ty: FileType, little_endian: bool, bytes: &[u8]) -> Values {
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

    pub(super) fn type_name(&self) -> &'static str {
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

    pub(super) fn kind(&self) -> Kind {
        match self {
            Values::Bool(_) => Kind::Bool,
            Values::F16(_) | Values::Bf16(_) | Values::F32(_) | Values::F64(_) => Kind::Float,
            _ => Kind::Int,
        }
    }

    pub(super) fn len(&self) -> usize {
        with_values!(self, v => v.len())
    }

    pub(super) fn truncate(&mut self, len: usize) {
        with_values!(self, v => v.truncate(len))
    }

    /// The first float value for which `pred` holds, with its flat index.
    pub(super) fn find_float(&self, pred: impl Fn(f64) -> bool) -> Option<(usize, f64)> {
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
    pub(super) fn find_int_outside(&self, lo: i128, hi: i128) -> Option<(usize, i128)> {
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
    pub(super) fn into_tensor(self, shape: &[usize]) -> std::result::Result<Tensor, String> {
        with_values!(self, v => Tensor::from_shape(shape, &v)).map_err(|e| format!("cannot build a tensor: {e}"))
    }
}

/// An array read from a file.
#[derive(Debug, Clone)]
pub(super) struct RawArray {
    pub(super) shape: Vec<usize>,
    pub(super) values: Values,
}

/// Reads one `.npy` array (header and data) from `reader`, a source of `holds` bytes (the file's
/// size, or the size an archive declares for the entry): a header that promises more data than
/// that is refused before anything is allocated, and no more than the header's size is read.
pub(super) fn read_npy(reader: &mut impl Read, holds: u64) -> std::result::Result<RawArray, String> {
    let header = read_header(reader, holds)?;
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
    let expected = count
        .checked_mul(ty.size())
        .filter(|&b| isize::try_from(b).is_ok())
        .ok_or_else(|| format!("shape {:?} of {descr} is too large to hold", header.shape))?;
    if expected as u64 > holds {
        return Err(format!(
            "shape {:?} of {descr} needs {expected} bytes of data, but the file holds {holds} bytes in all; the \
             file is truncated or corrupt",
            header.shape
        ));
    }
    let mut bytes = crate::onnx::model::buffer_for(expected as u64)
        .map_err(|m| format!("shape {:?} of {descr} {m}", header.shape))?;
    // One byte more than expected tells a file with trailing data from an exact one.
    reader.take(expected as u64 + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read the data: {e}"))?;
    if bytes.len() != expected {
        return Err(format!(
            "shape {:?} of {descr} needs {expected} bytes of data, the file holds {}{}; the file is truncated or corrupt",
            header.shape,
            bytes.len(),
            if bytes.len() > expected { " or more" } else { "" }
        ));
    }
    let mut values = Values::decode(ty, little_endian, &bytes);
    if header.layout.is_fortran() && header.shape.len() > 1 {
        let shape = IxDyn(&header.shape).f();
        values = map_values!(values, v => ArrayD::from_shape_vec(shape, v).expect("length checked").iter().copied().collect());
    }
    Ok(RawArray { shape: header.shape, values })
}

/// numpy itself refuses headers over 10,000 bytes unless told otherwise.
const MAX_HEADER_LEN: usize = 1 << 20;

/// The `.npy` header, its length checked before it is read (the format allows a length of 4 GiB
/// in a file of a dozen bytes).
fn read_header(reader: &mut impl Read, holds: u64) -> std::result::Result<Header, String> {
    // Magic string (6 bytes), version (2), header length (2 bytes in version 1, else 4).
    let mut prefix = [0u8; 12];
    let short = |e: std::io::Error| format!("cannot read the header: {e}");
    reader.read_exact(&mut prefix[..8]).map_err(short)?;
    let len_bytes = if prefix[6] == 1 { 2 } else { 4 };
    reader.read_exact(&mut prefix[8..8 + len_bytes]).map_err(short)?;
    if prefix.starts_with(b"\x93NUMPY") && matches!(prefix[6], 1..=3) {
        let len = if len_bytes == 2 {
            usize::from(u16::from_le_bytes([prefix[8], prefix[9]]))
        } else {
            u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize
        };
        if len > MAX_HEADER_LEN || len as u64 > holds {
            return Err(format!(
                "the header says it is {len} bytes long, in a file of {holds} bytes (numpy writes a few hundred); \
                 the file is corrupt"
            ));
        }
    }
    Header::from_reader(&mut prefix[..8 + len_bytes].chain(reader)).map_err(|e| e.to_string())
}

/// `<f4`, `|u1`, `>i8`, ... into the element type and whether it is little-endian.
pub(super) fn parse_descr(descr: &str) -> std::result::Result<(FileType, bool), String> {
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

/// The number of elements of `shape`, checked. The product of its non-zero dimensions must fit
/// too (an empty array of shape `[0, 2^63]` cannot be laid out either).
pub(super) fn element_count(shape: &[usize]) -> std::result::Result<usize, String> {
    let too_large = || format!("shape {shape:?} is too large to hold");
    let nonzero =
        shape.iter().filter(|&&d| d != 0).try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(too_large)?;
    if isize::try_from(nonzero).is_err() {
        return Err(too_large());
    }
    Ok(if shape.contains(&0) { 0 } else { nonzero })
}
