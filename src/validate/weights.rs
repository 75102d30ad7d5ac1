//! Every dequantized weight against the float weight of the same name.

use super::*;
use crate::onnx::graph::walk_graphs;
use crate::onnx::model::Model;
use crate::onnx::proto::dtype;
use crate::onnx::tensor::float_data;
use crate::ops::quantized::{Layout, dequantized, layout_of};
use crate::ops::{self};
use crate::verify::Comparison;

/// Dequantizes every DequantizeLinear of constants and compares it with the original float
/// constant of the same name. Weights whose data is broken are left out (the type check names them).
/// A folded weight keeps its name but holds other values (batch norm folded into it, and for
/// static models the affine ops before it): it is compared with the original as quantize-rs
/// prepares it, folded for weight-only and for static jobs; of the forms its name has, the closest
/// is the one it was made from.
pub(super) fn weight_errors(original: &Model, quantized: &Model) -> Vec<WeightComparison> {
    let prepared = |static_rewrites: bool| {
        let mut m = original.clone();
        crate::rewrite::prepare(&mut m, true, static_rewrites, false, false);
        m
    };
    let (folded, folded_static) = (prepared(false), prepared(true));
    let forms = [constants(original), constants(&folded), constants(&folded_static)];
    let consts = constants(quantized);
    let mut out = vec![];
    walk_graphs(quantized.graph(), &mut |_, g| {
        for n in g.node.iter().filter(|n| is_qdq(n) && n.op_type.as_deref() == Some(ops::DEQUANTIZE_LINEAR)) {
            let (Some(name), Some(x), Some(scale)) = (
                n.output.first(),
                n.input.first().and_then(|i| consts.get(i)),
                n.input.get(1).and_then(|i| consts.get(i)),
            ) else {
                continue;
            };
            let zp = n.input.get(2).filter(|z| !z.is_empty()).and_then(|z| consts.get(z)).copied();
            let (Some(deq), Ok(layout)) = (dequantized(n, x, scale, zp), layout_of(n, x, scale)) else { continue };
            let compared = forms.iter().filter_map(|f| {
                let reference = f.get(name).and_then(|t| float_data(t).ok())?;
                (reference.len() == deq.len()).then(|| {
                    let mut c = Comparison::default();
                    c.add(&reference, &deq);
                    c.finish(1)
                })
            });
            let Some(v) = compared.max_by(|a, b| a.snr_db.total_cmp(&b.snr_db)) else { continue };
            out.push(WeightComparison {
                name: name.clone(),
                stored_as: dtype::name(x.data_type.unwrap_or(0)).into(),
                granularity: match layout {
                    Layout::PerTensor => "per-tensor",
                    Layout::PerAxis(_) => "per-axis",
                    Layout::Blocked(..) => "blocked",
                }
                .into(),
                elements: deq.len(),
                snr_db: v.snr_db,
                max_abs: v.max_abs,
            });
        }
    });
    out
}
