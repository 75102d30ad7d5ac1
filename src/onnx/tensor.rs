//! Tensor values: the one decoder every stage uses to read a `TensorProto`'s numbers (raw bytes
//! or typed fields, 4-bit packing, sizes checked against the dims), and the builders for the
//! tensors the rewrites add.
//!
//! The `*_data` functions say what is wrong without naming the tensor (callers add context:
//! "input 'x' has 3 elements but ..."); [`floats`], [`ints`] and [`finite_floats`] return an
//! [`Error`] that names it.

use crate::error::{Error, Result};
use crate::onnx::proto::{NodeProto, TensorProto, dtype};

/// The tensor a `Constant` node holds in its `value` attribute, if that is how it is written.
pub fn constant_value(node: &NodeProto) -> Option<&TensorProto> {
    if node.op_type.as_deref() != Some("Constant") || !matches!(node.domain.as_deref(), None | Some("")) {
        return None;
    }
    node.attribute.iter().find(|a| a.name.as_deref() == Some("value")).and_then(|a| a.t.as_ref())
}

/// [`constant_value`], to change in place.
pub fn constant_value_mut(node: &mut NodeProto) -> Option<&mut TensorProto> {
    constant_value(node)?;
    node.attribute.iter_mut().find(|a| a.name.as_deref() == Some("value")).and_then(|a| a.t.as_mut())
}

/// The tensor's name, or `<unnamed>`.
pub fn name_of(t: &TensorProto) -> &str {
    t.name.as_deref().unwrap_or("<unnamed>")
}

/// The number of elements its dims say the tensor holds, checked (no negative dimension, no
/// overflow).
pub fn element_count(t: &TensorProto) -> std::result::Result<usize, String> {
    t.dims.iter().try_fold(1usize, |n, &d| {
        let d = usize::try_from(d).map_err(|_| format!("has a negative dimension in {:?}", t.dims))?;
        n.checked_mul(d).ok_or_else(|| format!("has dims {:?} whose element count overflows", t.dims))
    })
}

/// The values of a float32 tensor, from `raw_data` or `float_data`; exactly as many as its dims say.
pub fn float_data(t: &TensorProto) -> std::result::Result<Vec<f32>, String> {
    if t.data_type != Some(dtype::FLOAT) {
        return Err(format!("is {}, not float32", dtype::name(t.data_type.unwrap_or(0))));
    }
    let n = element_count(t)?;
    match t.raw_data.as_deref() {
        Some(raw) if !raw.is_empty() || t.float_data.is_empty() => {
            if Some(raw.len()) != n.checked_mul(4) {
                return Err(format!(
                    "has shape {:?} ({n} floats) but {} bytes of data; the model is truncated or corrupt",
                    t.dims,
                    raw.len()
                ));
            }
            // A payload may be a mapped file larger than memory: never decoded blindly (an
            // allocation failure would abort the process).
            if raw.len() as u64 >= crate::onnx::mapped::MAP_MIN_BYTES
                && let Some(available) = crate::onnx::model::memory_available().filter(|&a| raw.len() as u64 > a)
            {
                return Err(format!(
                    "holds {} bytes of float32 values, more than the {available} bytes of memory available to \
                     decode them; one tensor must fit in memory (weight-only quantization streams the others)",
                    raw.len()
                ));
            }
            Ok(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        }
        _ => {
            if t.float_data.len() != n {
                return Err(format!("has shape {:?} ({n} floats) but {} values", t.dims, t.float_data.len()));
            }
            Ok(t.float_data.clone())
        }
    }
}

/// The values of an integer tensor (int8, uint8, int4, uint4, int32, int64), from `raw_data`
/// (4-bit values unpacked) or the typed fields; exactly as many as its dims say.
pub fn int_data(t: &TensorProto) -> std::result::Result<Vec<i64>, String> {
    let n = element_count(t)?;
    let raw: &[u8] = t.raw_data.as_deref().unwrap_or(&[]);
    let ty = t.data_type.unwrap_or(0);
    if raw.is_empty() && n > 0 {
        let typed: Vec<i64> = match ty {
            dtype::INT64 => t.int64_data.clone(),
            dtype::INT8 | dtype::UINT8 | dtype::INT4 | dtype::UINT4 | dtype::INT32 => {
                t.int32_data.iter().map(|&v| v as i64).collect()
            }
            other => return Err(format!("is {}, not an integer type", dtype::name(other))),
        };
        if typed.len() != n {
            return Err(format!("has {n} elements but {} values", typed.len()));
        }
        return Ok(typed);
    }
    let bytes = |want: usize| {
        if raw.len() == want {
            Ok(())
        } else {
            Err(format!("has {n} elements but {} bytes of data (expected {want})", raw.len()))
        }
    };
    let wide = |size: usize| n.checked_mul(size).ok_or_else(|| format!("has {n} elements, too many to hold"));
    Ok(match ty {
        dtype::INT8 => bytes(n).map(|_| raw.iter().map(|&b| b as i8 as i64).collect())?,
        dtype::UINT8 => bytes(n).map(|_| raw.iter().map(|&b| b as i64).collect())?,
        dtype::INT4 => {
            bytes(n.div_ceil(2)).map(|_| unpack_int4(raw, n, true).into_iter().map(|b| b as i8 as i64).collect())?
        }
        dtype::UINT4 => {
            bytes(n.div_ceil(2)).map(|_| unpack_int4(raw, n, false).into_iter().map(i64::from).collect())?
        }
        dtype::INT32 => bytes(wide(4)?)
            .map(|_| raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect())?,
        dtype::INT64 => bytes(wide(8)?).map(|_| {
            raw.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect()
        })?,
        other => return Err(format!("is {}, not an integer type", dtype::name(other))),
    })
}

fn named<T>(t: &TensorProto, r: std::result::Result<T, String>) -> Result<T> {
    r.map_err(|problem| Error::InvalidModel(format!("tensor '{}' {problem}", name_of(t))))
}

/// [`float_data`], with an error naming the tensor.
pub fn floats(t: &TensorProto) -> Result<Vec<f32>> {
    named(t, float_data(t))
}

/// [`int_data`], with an error naming the tensor.
pub fn ints(t: &TensorProto) -> Result<Vec<i64>> {
    named(t, int_data(t))
}

/// The float values of a tensor that is about to be quantized: complete, and every value finite
/// (a NaN or infinity is an error naming the tensor and the index).
pub fn finite_floats(t: &TensorProto) -> Result<Vec<f32>> {
    let values = floats(t)?;
    // All finite, checked without a branch per value (which vectorizes); the culprit is found
    // only when there is one.
    let finite = |xs: &[f32]| xs.iter().fold(true, |ok, x| ok & x.is_finite());
    if values.chunks(4096).all(finite) {
        return Ok(values);
    }
    if let Some((index, x)) = values.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        let what = if x.is_nan() {
            "NaN"
        } else if *x > 0.0 {
            "+inf"
        } else {
            "-inf"
        };
        return Err(Error::NonFinite { tensor: name_of(t).to_string(), what, index });
    }
    Ok(values)
}

/// Little-endian bytes of `values`, as `raw_data` holds them.
pub fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// An int64 tensor named `name`.
pub fn int64_tensor(name: String, dims: Vec<i64>, values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name),
        data_type: Some(dtype::INT64),
        dims,
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
        ..Default::default()
    }
}

/// A float32 tensor named `name`.
pub fn float_tensor(name: String, dims: Vec<i64>, values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name),
        data_type: Some(dtype::FLOAT),
        dims,
        raw_data: Some(le_bytes(values).into()),
        ..Default::default()
    }
}

/// Packs 4-bit values two per byte as ONNX stores INT4/UINT4: element `2k` in the low nibble of
/// byte `k`, element `2k+1` in the high nibble; an odd count leaves the last high nibble zero.
pub fn pack_int4(values: &[u8]) -> Vec<u8> {
    values.chunks(2).map(|p| (p[0] & 0x0F) | (p.get(1).copied().unwrap_or(0) & 0x0F) << 4).collect()
}

/// Reverses [`pack_int4`]: `n` values, sign-extended when `signed`. `packed` holds at least
/// `n.div_ceil(2)` bytes.
pub fn unpack_int4(packed: &[u8], n: usize, signed: bool) -> Vec<u8> {
    (0..n)
        .map(|i| {
            let nib = (packed[i / 2] >> (4 * (i % 2))) & 0x0F;
            if signed && nib & 0x08 != 0 { nib | 0xF0 } else { nib }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data_type: i32, dims: Vec<i64>, raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: Some("w".into()),
            data_type: Some(data_type),
            dims,
            raw_data: Some(raw.into()),
            ..Default::default()
        }
    }

    #[test]
    fn int4_packing_puts_the_first_value_in_the_low_nibble() {
        // Hand-packed: 1 -> 0x1 low, -1 -> 0xF high; 7 alone in the low nibble of byte 1.
        assert_eq!(pack_int4(&[1, 0xFF, 7]), [0xF1, 0x07]);
        assert_eq!(unpack_int4(&[0xF1, 0x07], 3, true), [1, 0xFF, 7]);
        assert_eq!(unpack_int4(&[0xF1, 0x07], 3, false), [1, 15, 7]);
    }

    #[test]
    fn every_integer_layout_decodes_to_the_same_values() {
        let want = vec![1i64, -1, 7];
        assert_eq!(int_data(&tensor(dtype::INT8, vec![3], vec![1, 0xFF, 7])).unwrap(), want);
        assert_eq!(int_data(&tensor(dtype::INT4, vec![3], vec![0xF1, 0x07])).unwrap(), want);
        let i32s = [1i32, -1, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(int_data(&tensor(dtype::INT32, vec![3], i32s)).unwrap(), want);
        let i64s = TensorProto { int64_data: want.clone(), ..tensor(dtype::INT64, vec![3], vec![]) };
        assert_eq!(int_data(&i64s).unwrap(), want);
        let typed = TensorProto { int32_data: vec![1, -1, 7], ..tensor(dtype::INT8, vec![3], vec![]) };
        assert_eq!(int_data(&typed).unwrap(), want);
        assert_eq!(int_data(&tensor(dtype::UINT8, vec![2], vec![0, 255])).unwrap(), [0, 255]);
    }

    #[test]
    fn sizes_are_checked_against_the_dims() {
        let short = tensor(dtype::INT8, vec![2, 3], vec![0; 5]);
        assert_eq!(int_data(&short).unwrap_err(), "has 6 elements but 5 bytes of data (expected 6)");
        let huge = tensor(dtype::FLOAT, vec![1 << 40, 1 << 40, 3, 3], vec![0; 1024]);
        assert!(float_data(&huge).unwrap_err().contains("overflows"));
        let negative = tensor(dtype::FLOAT, vec![-1, 3], vec![]);
        assert!(floats(&negative).unwrap_err().to_string().contains("tensor 'w' has a negative dimension"));
        let truncated = tensor(dtype::FLOAT, vec![3], vec![0; 8]);
        assert!(floats(&truncated).unwrap_err().to_string().contains("truncated or corrupt"));
        assert_eq!(float_data(&tensor(dtype::FLOAT, vec![2], le_bytes(&[1.5, -2.0]))).unwrap(), [1.5, -2.0]);
    }

    #[test]
    fn non_finite_weights_name_the_tensor_and_index() {
        let t = tensor(dtype::FLOAT, vec![3], le_bytes(&[0.0, f32::NAN, 1.0]));
        match finite_floats(&t).unwrap_err() {
            Error::NonFinite { tensor, what, index } => assert_eq!((tensor.as_str(), what, index), ("w", "NaN", 1)),
            other => panic!("{other}"),
        }
    }
}
