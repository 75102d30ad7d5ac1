//! Matching arrays with the model's inputs: cutting them into samples, checking shapes and
//! symbols, converting element types.

use std::collections::HashMap;
use std::path::Path;

use tract_onnx::prelude::{DatumType, Tensor, f16};

use super::*;
use crate::error::{Error, Result};

/// How one input's array is cut into samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Split {
    /// Rank + 1: sample `i` is `array[i]`.
    Stacked(usize),
    /// The input's rank: sample `i` is `array[i..i + 1]`.
    Batch(usize),
    /// The input's rank, one complete input used by every sample.
    Shared,
}

impl Split {
    /// Samples in the array, `None` when it is one sample that can be shared by all.
    pub(super) fn count(self) -> Option<usize> {
        match self {
            Split::Stacked(n) => Some(n),
            Split::Batch(n) if n > 1 => Some(n),
            _ => None,
        }
    }
}

/// An input's array, checked and converted, ready to be cut into samples.
pub(super) struct Prepared {
    pub(super) tensor: Tensor,
    pub(super) split: Split,
}

impl Prepared {
    pub(super) fn sample(&self, i: usize) -> std::result::Result<Tensor, String> {
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

pub(super) fn dims_text(dims: &[Dim]) -> String {
    crate::onnx::shape::shape_text(dims)
}

/// Decides how `shape` splits into samples for `spec`, and the shape of one sample.
pub(super) fn split_of(spec: &InputSpec, shape: &[usize]) -> std::result::Result<(Split, Vec<usize>), String> {
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
pub(super) fn datum_type(elem_type: i32) -> std::result::Result<Option<DatumType>, String> {
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
pub(super) fn locate(flat: usize, split: Split, sample_shape: &[usize]) -> String {
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
pub(super) fn convert(
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

pub(super) fn numpy_name(onnx_name: &str) -> &str {
    match onnx_name {
        "bool" => "bool_",
        n => n,
    }
}

pub(super) fn int_range(t: DatumType) -> (i128, i128) {
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
pub(super) type Symbols = HashMap<String, (usize, String)>;

/// Checks `sample_shape` against `spec.dims` and records its symbolic sizes.
pub(super) fn check_shape(
    spec: &InputSpec,
    sample_shape: &[usize],
    symbols: &mut Symbols,
) -> std::result::Result<(), String> {
    for (i, (dim, &size)) in spec.dims.iter().zip(sample_shape).enumerate() {
        match dim {
            Dim::Fixed(d) if *d != size => {
                return Err(format!(
                    "dim {i}: expected {d}, found {size} (expected shape {}, found {sample_shape:?} per sample)",
                    dims_text(&spec.dims)
                ));
            }
            Dim::Symbolic(s) => match symbols.get(s) {
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
pub(super) fn assemble(
    path: &Path,
    inputs: &[InputSpec],
    arrays: Vec<RawArray>,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
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
