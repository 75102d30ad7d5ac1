//! ONNX protobuf types, generated at build time from the vendored `proto/onnx.proto`.
//!
//! The file is proto2, as upstream ships it: fields keep presence, so a model that is read and
//! written back without changes re-encodes byte for byte.

#[allow(clippy::all, missing_docs, rustdoc::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use generated::*;

/// `TensorProto.DataType` values used across the crate.
pub mod dtype {
    /// 32-bit IEEE float.
    pub const FLOAT: i32 = 1;
    /// Unsigned 8-bit integer.
    pub const UINT8: i32 = 2;
    /// Signed 8-bit integer.
    pub const INT8: i32 = 3;
    /// Signed 32-bit integer.
    pub const INT32: i32 = 6;
    /// Signed 64-bit integer.
    pub const INT64: i32 = 7;
    /// Boolean.
    pub const BOOL: i32 = 9;
    /// 16-bit IEEE float.
    pub const FLOAT16: i32 = 10;
    /// 64-bit IEEE float.
    pub const DOUBLE: i32 = 11;
    /// Unsigned 4-bit integer, two per byte.
    pub const UINT4: i32 = 21;
    /// Signed 4-bit integer, two per byte.
    pub const INT4: i32 = 22;

    /// Human name of a `TensorProto.DataType` value.
    pub fn name(t: i32) -> &'static str {
        match t {
            0 => "undefined",
            1 => "float32",
            2 => "uint8",
            3 => "int8",
            4 => "uint16",
            5 => "int16",
            6 => "int32",
            7 => "int64",
            8 => "string",
            9 => "bool",
            10 => "float16",
            11 => "float64",
            12 => "uint32",
            13 => "uint64",
            14 => "complex64",
            15 => "complex128",
            16 => "bfloat16",
            17..=20 => "float8",
            21 => "uint4",
            22 => "int4",
            23 => "float4e2m1",
            _ => "unknown",
        }
    }

    /// Size in bits of one element, for the types whose size is fixed.
    pub fn bits(t: i32) -> Option<u64> {
        Some(match t {
            1 | 6 | 12 => 32,
            2 | 3 | 9 | 17..=20 => 8,
            4 | 5 | 10 | 16 => 16,
            7 | 11 | 13 | 14 => 64,
            15 => 128,
            21..=23 => 4,
            _ => return None,
        })
    }
}
