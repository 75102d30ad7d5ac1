//! Running both models: the interface check, synthesized inputs, and the output comparison.

use super::*;
use crate::data::{Dim, InputSpec, Sample};
use crate::error::{Error, Result};
use crate::onnx::model::Model;
use crate::onnx::proto::dtype;
use crate::run::Runner;
use crate::verify::{OutputKind, OutputsComparison, Values, Verification, run_values};
use std::collections::BTreeMap;
use tract_onnx::prelude::{DatumType, Tensor};

pub(super) fn interface(original: &Model, quantized: &Model) -> Vec<String> {
    let mut p = vec![];
    let ports = |m: &Model| -> Vec<crate::info::Port> {
        crate::info::ModelInfo::of(m).map(|i| [i.inputs, i.outputs].concat()).unwrap_or_default()
    };
    let split = |m: &Model| {
        let all = ports(m);
        let n_out = m.graph().output.len();
        let (i, o) = all.split_at(all.len().saturating_sub(n_out));
        (i.to_vec(), o.to_vec())
    };
    let (oi, oo) = split(original);
    let (qi, qo) = split(quantized);
    for (what, a, b) in [("input", &oi, &qi), ("output", &oo, &qo)] {
        let names = |v: &[crate::info::Port]| v.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
        if names(a) != names(b) {
            p.push(format!("graph {what}s are {:?}, the original's are {:?}", names(b), names(a)));
            continue;
        }
        for (x, y) in a.iter().zip(b.iter()) {
            if x.elem_type != y.elem_type {
                p.push(format!("{what} '{}' is {}, the original's is {}", y.name, y.elem_type, x.elem_type));
            }
            if x.shape != y.shape {
                p.push(format!("{what} '{}' has shape {:?}, the original's is {:?}", y.name, y.shape, x.shape));
            }
        }
    }
    p
}

pub(super) fn datum_type(elem_type: i32) -> Option<DatumType> {
    Some(match elem_type {
        dtype::FLOAT => DatumType::F32,
        dtype::UINT8 => DatumType::U8,
        dtype::INT8 => DatumType::I8,
        4 => DatumType::U16,
        5 => DatumType::I16,
        dtype::INT32 => DatumType::I32,
        dtype::INT64 => DatumType::I64,
        dtype::BOOL => DatumType::Bool,
        dtype::FLOAT16 => DatumType::F16,
        dtype::DOUBLE => DatumType::F64,
        12 => DatumType::U32,
        13 => DatumType::U64,
        _ => return None,
    })
}

/// One set of inputs for `model`, made from its declared input shapes (or the shape `shapes`
/// gives for an input name): symbolic or unknown sizes become 1, floats are deterministic
/// pseudo-random values in [-1, 1), integers and booleans are zero (a valid index or mask for
/// any table).
pub fn synthetic_inputs(model: &Model, shapes: &BTreeMap<String, Vec<usize>>) -> Result<Sample> {
    let specs = InputSpec::of_model(model)?;
    if let Some(unknown) = shapes.keys().find(|k| !specs.iter().any(|s| &s.name == *k)) {
        return Err(Error::Option {
            key: "--input-shape".into(),
            message: format!(
                "the model has no input '{unknown}'; its inputs are {}",
                specs.iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    specs
        .iter()
        .map(|s| {
            let declared = || {
                s.dims.iter().map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Symbolic(_) | Dim::Unknown => 1,
                })
            };
            let shape: Vec<usize> = match shapes.get(&s.name) {
                Some(given) => {
                    let fits = given.len() == s.dims.len()
                        && given.iter().zip(&s.dims).all(|(g, d)| !matches!(d, Dim::Fixed(n) if n != g));
                    if !fits {
                        return Err(Error::Option {
                            key: "--input-shape".into(),
                            message: format!(
                                "input '{}' declares shape [{}], which {given:?} does not fit",
                                s.name,
                                s.dims
                                    .iter()
                                    .map(|d| d.fixed().map_or("?".into(), |n| n.to_string()))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        });
                    }
                    given.clone()
                }
                None => declared().collect(),
            };
            let dt = datum_type(s.elem_type).ok_or_else(|| {
                Error::InvalidModel(format!(
                    "input '{}' is {}, which cannot be synthesized",
                    s.name,
                    dtype::name(s.elem_type)
                ))
            })?;
            let what = format!("synthetic input '{}'", s.name);
            let tract_err = |e: tract_onnx::prelude::TractError| crate::run::tract_error(&what, e);
            if dt.is_float() {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = (0..n)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                    })
                    .collect();
                let t = Tensor::from_shape(&shape, &values).map_err(tract_err)?;
                t.cast_to_dt(dt).map(|c| c.into_owned()).map_err(tract_err)
            } else {
                Tensor::zero_dt(dt, &shape).map_err(tract_err)
            }
        })
        .collect()
}

/// The bytes tract runs for `m`: 4-bit tensors widened and blocked constants folded when needed
/// (what `EmbeddedModel::tract_runnable` does), with a note saying so.
pub fn tract_bytes(m: &Model) -> Result<(Vec<u8>, Option<String>)> {
    let bytes = m.to_bytes();
    Ok(match crate::embed::tract_compatible(&bytes)? {
        None => (bytes, None),
        Some((converted, c)) => (
            converted,
            Some(format!(
                "tract has no 4-bit type and no blocked DequantizeLinear: ran it with {} INT4 tensor(s) widened to 8 bits and {} blocked weight(s) folded to float, as include_quantized! does",
                c.widened_int4, c.folded_blocked
            )),
        ),
    })
}

pub(super) fn run_both(original: &Model, quantized: &Model, samples: &[Sample]) -> (Check, Option<Verification>) {
    let names = crate::run::output_names(quantized);
    let (bytes, note) = match tract_bytes(quantized) {
        Ok(b) => b,
        Err(e) => {
            return (Check::new("runs", vec![format!("cannot prepare the quantized model for tract: {e}")]), None);
        }
    };
    let mut q = Runner::new(bytes, names.clone(), &[], "the quantized model");
    let mut f = Runner::for_model(original, &[], "the original model");
    let mut problems = vec![];
    let mut cmp = OutputsComparison::new(names.clone());
    let mut compared = true;
    for (k, s) in samples.iter().enumerate() {
        let qv = match run_values(&mut q, s) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("sample {k}: {}", without_backtrace(&e.to_string())));
                compared = false;
                break;
            }
        };
        for (name, values) in names.iter().zip(&qv) {
            if let Values::Float(values) = values
                && let Some(i) = values.iter().position(|x| !x.is_finite())
            {
                problems.push(format!("sample {k}: output '{name}' holds {} at element {i}", values[i]));
            }
        }
        if !compared {
            continue;
        }
        match run_values(&mut f, s) {
            Ok(fv) => {
                for (i, (a, b)) in fv.iter().zip(&qv).enumerate() {
                    let len = |v: &Values| match v {
                        Values::Float(v) => v.len(),
                        Values::Integer(v) => v.len(),
                    };
                    if len(a) != len(b) || std::mem::discriminant(a) != std::mem::discriminant(b) {
                        problems.push(format!(
                            "sample {k}: output '{}' has {} values, the original's has {} (or their types differ)",
                            names[i],
                            len(b),
                            len(a)
                        ));
                    }
                }
                cmp.add(&fv, &qv);
            }
            // The original not running is not the quantized model's fault: no comparison, noted.
            Err(_) => compared = false,
        }
    }
    if compared {
        for o in cmp.finish(samples.len()).outputs.iter().filter(|o| o.kind == OutputKind::Integer && o.mismatches > 0)
        {
            problems.push(format!(
                "integer output '{}' differs from the original's in {} of {} values: integer outputs must be exact",
                o.name, o.mismatches, o.values
            ));
        }
    }
    let mut check = Check::new("runs", problems);
    let ran = format!("ran {} input set(s) in tract", samples.len());
    check.note = Some(match (&note, compared) {
        (Some(n), true) => format!("{ran}; {n}"),
        (None, true) => ran,
        (n, false) => format!(
            "{ran}; the original model does not run in tract, so outputs were not compared{}",
            n.as_ref().map(|n| format!("; {n}")).unwrap_or_default()
        ),
    });
    if !compared {
        return (check, None);
    }
    (check, Some(cmp.finish(samples.len())))
}
