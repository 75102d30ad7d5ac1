//! Q/DQ type checks: scales constant, float, finite and positive; zero points of the input's
//! type and the scale's shape; scale shapes that fit the axis or blocks; data sizes that match.

use super::*;
use crate::onnx::graph::{node_label, walk_graphs};
use crate::onnx::model::Model;
use crate::onnx::proto::{TensorProto, dtype};
use crate::onnx::tensor::{float_data, int_data};
use crate::ops::quantized::layout_of;
use crate::ops::{self};
use std::collections::HashMap;

/// Every constant tensor of the model by name: initializers and `Constant` values, all graphs.
pub(super) fn constants(m: &Model) -> HashMap<String, &TensorProto> {
    let mut map = HashMap::new();
    walk_graphs(m.graph(), &mut |_, g| {
        for t in &g.initializer {
            if let Some(n) = &t.name {
                map.insert(n.clone(), t);
            }
        }
        for n in &g.node {
            if let (Some(t), Some(out)) = (crate::onnx::tensor::constant_value(n), n.output.first()) {
                map.insert(out.clone(), t);
            }
        }
    });
    map
}

pub(super) const QUANTIZED_TYPES: [i32; 5] = [dtype::INT8, dtype::UINT8, dtype::INT4, dtype::UINT4, dtype::INT32];

pub(super) fn types(m: &Model) -> Vec<String> {
    let consts = constants(m);
    let mut p = vec![];
    walk_graphs(m.graph(), &mut |_, g| {
        for n in g.node.iter().filter(|n| is_qdq(n)) {
            let op = n.op_type.as_deref().unwrap_or("");
            let label = format!("{op} '{}'", node_label(n));
            if !(2..=3).contains(&n.input.len()) || n.output.len() != 1 {
                p.push(format!("{label} has {} inputs and {} outputs", n.input.len(), n.output.len()));
                continue;
            }
            let (x_name, s_name) = (&n.input[0], &n.input[1]);
            let zp_name = n.input.get(2).filter(|z| !z.is_empty());
            let Some(scale) = consts.get(s_name) else {
                p.push(format!("{label}: scale '{s_name}' is not a constant; quantize-rs, tract and ORT's fast paths need constant scales"));
                continue;
            };
            match scale.data_type.unwrap_or(0) {
                dtype::FLOAT => match float_data(scale).ok() {
                    None => p.push(format!(
                        "{label}: scale '{s_name}' has shape {:?} but its data does not match",
                        scale.dims
                    )),
                    Some(values) => {
                        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
                            p.push(format!(
                                "{label}: scale '{s_name}' element {i} is {v}; every scale must be finite and > 0 (a zero scale erases the weight)"
                            ));
                        }
                    }
                },
                dtype::FLOAT16 | dtype::DOUBLE | 16 => {}
                other => p.push(format!("{label}: scale '{s_name}' is {}, not a float type", dtype::name(other))),
            }
            let x = consts.get(x_name);
            let zp = zp_name.and_then(|z| consts.get(z));
            if let (Some(z), Some(name)) = (zp, zp_name) {
                if z.dims != scale.dims {
                    p.push(format!(
                        "{label}: zero point '{name}' has shape {:?} but the scale has {:?}",
                        z.dims, scale.dims
                    ));
                }
                if let Err(e) = int_data(z) {
                    p.push(format!("{label}: zero point '{name}' {e}"));
                }
            }
            if op == ops::DEQUANTIZE_LINEAR {
                let Some(x) = x else { continue };
                let xt = x.data_type.unwrap_or(0);
                if !QUANTIZED_TYPES.contains(&xt) {
                    p.push(format!("{label}: input '{x_name}' is {}, not an integer type", dtype::name(xt)));
                    continue;
                }
                if let Err(e) = int_data(x) {
                    p.push(format!("{label}: input '{x_name}' {e}"));
                }
                if let (Some(z), Some(name)) = (zp, zp_name)
                    && z.data_type != Some(xt)
                {
                    p.push(format!(
                        "{label}: zero point '{name}' is {} but input '{x_name}' is {}; they must be the same type",
                        dtype::name(z.data_type.unwrap_or(0)),
                        dtype::name(xt)
                    ));
                }
                if let Err(e) = layout_of(n, x, scale) {
                    p.push(format!("{label}: {e}"));
                }
            } else if let Some(z) = zp
                && !matches!(z.data_type, Some(dtype::INT8 | dtype::UINT8 | dtype::INT4 | dtype::UINT4 | 4 | 5))
            {
                p.push(format!(
                    "{label}: zero point '{}' is {}, not an integer type",
                    zp_name.map(String::as_str).unwrap_or(""),
                    dtype::name(z.data_type.unwrap_or(0))
                ));
            }
        }
    });
    p
}
