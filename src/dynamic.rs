//! Dynamic quantization: activations quantized at run time. Each MatMul or Gemm whose weight the
//! weight pass quantized to 8-bit symmetric values (a DequantizeLinear of an int8 initializer,
//! one scale or one per output column) becomes
//!
//! ```text
//! X ─ DynamicQuantizeLinear ─┬─ Xq ─┐
//!                            ├─ Xzp ┼─ MatMulInteger(Xq, Wq, Xzp) ─ Cast(float) ─┐
//!                            └─ Xs ─┴─ Mul(Xs, Ws) ─────────────────────────────┴─ Mul ─ Y
//! ```
//!
//! the form ONNX Runtime fuses into one `DynamicQuantizeMatMul` (or `MatMulIntegerToFloat`,
//! with a following constant bias `Add`) kernel. Matrix products of two activations (attention
//! scores) and everything else stay float; Gather tables and convolutions keep the weight
//! pass's DequantizeLinear.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::Result;
use crate::onnx::graph::{Names, NodeExt};
use crate::onnx::model::Model;
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto, dtype};
use crate::onnx::tensor::{float_tensor, floats};
use crate::ops::{self, DEQUANTIZE_LINEAR};

/// What dynamic quantization did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DynamicReport {
    /// MatMul / Gemm nodes now running on integers, by op type.
    pub integer_nodes: usize,
    /// DynamicQuantizeLinear nodes written (one per product).
    pub input_quantizers: usize,
    /// Matrix products with a quantized weight left on their DequantizeLinear, and why.
    pub left: Vec<(String, String)>,
}

/// A weight written by the weight pass: `DequantizeLinear(q, scale)` with 8-bit values.
struct Weight<'a> {
    q: &'a TensorProto,
    scale: &'a str,
    scale_len: usize,
    axis: Option<usize>,
}

fn weight_of<'a>(g: &'a GraphProto, inits: &HashMap<&str, usize>, dq: &'a NodeProto) -> Option<Weight<'a>> {
    if dq.attr("block_size").is_some() || dq.input.len() > 2 && !dq.input[2].is_empty() {
        return None; // blocked, or with zero points: MatMulInteger takes neither here
    }
    let q = &g.initializer[*inits.get(dq.input.first()?.as_str())?];
    let scale = &g.initializer[*inits.get(dq.input.get(1)?.as_str())?];
    if q.data_type != Some(dtype::INT8) || q.dims.len() != 2 {
        return None;
    }
    let scale_len = scale.dims.iter().product::<i64>().max(1) as usize;
    let axis = match dq.attr("axis").and_then(|a| a.i) {
        _ if scale.dims.is_empty() || scale_len == 1 => None,
        Some(a) if a < 0 => Some((a + 2) as usize),
        Some(a) => Some(a as usize),
        None => Some(1),
    };
    Some(Weight { q, scale: dq.input[1].as_str(), scale_len, axis })
}

/// Rewrites the main graph's matrix products with quantized weights as integer products of
/// inputs quantized at run time.
pub fn make_dynamic(model: &mut Model) -> Result<DynamicReport> {
    let mut names = Names::of_graph(model.graph());
    let g = model.graph_mut();
    let inits: HashMap<&str, usize> =
        g.initializer.iter().enumerate().filter_map(|(i, t)| Some((t.name.as_deref()?, i))).collect();
    let dqs: HashMap<&str, &NodeProto> = g
        .node
        .iter()
        .filter(|n| ops::is(n, DEQUANTIZE_LINEAR))
        .filter_map(|n| Some((n.output.first()?.as_str(), n)))
        .collect();
    let mut report = DynamicReport::default();
    // Per node: the nodes replacing it; new initializers.
    let mut replace: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        let gemm = ops::is(n, ops::GEMM);
        if !(gemm || ops::is(n, ops::MATMUL)) {
            continue;
        }
        let label = n.name.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| n.output[0].clone());
        let Some(dq) = n.input.get(1).and_then(|w| dqs.get(w.as_str())) else { continue };
        let Some(w) = weight_of(g, &inits, dq) else {
            report.left.push((label, "its weight is not 8-bit symmetric per-tensor or per-column".into()));
            continue;
        };
        let (k, cols) = (w.q.dims[0], w.q.dims[1]);
        let (mut alpha, mut beta, mut trans_b) = (1.0f32, 1.0f32, false);
        if gemm {
            if n.attr_int("transA")?.unwrap_or(0) != 0 {
                report.left.push((label, "Gemm with transA".into()));
                continue;
            }
            trans_b = n.attr_int("transB")?.unwrap_or(0) != 0;
            alpha = n.attr_float("alpha")?.unwrap_or(1.0);
            beta = n.attr_float("beta")?.unwrap_or(1.0);
        }
        // The scales must run along the output columns.
        let out_axis = if trans_b { 0 } else { 1 };
        if w.axis.is_some_and(|a| a != out_axis) {
            report.left.push((label, "its weight's scales do not run along the output columns".into()));
            continue;
        }
        let bias = if gemm { n.input.get(2).filter(|c| !c.is_empty()) } else { None };
        let bias_value = match bias {
            Some(c) if beta != 1.0 => match inits.get(c.as_str()) {
                Some(&ci) => Some(floats(&g.initializer[ci])?.iter().map(|v| v * beta).collect::<Vec<f32>>()),
                None => {
                    report.left.push((label, "Gemm with beta != 1 on a computed C".into()));
                    continue;
                }
            },
            _ => None,
        };
        let base = n.output[0].clone();
        let fresh = |names: &mut Names, suffix: &str| names.fresh(&format!("{base}_{suffix}"));
        // B as [K, N] int8.
        let b_name = if trans_b {
            let (rows, kk) = (k as usize, cols as usize); // stored [N, K]
            let src = w.q.raw_data.as_deref().unwrap_or(&[]);
            if src.len() != rows * kk {
                report.left.push((label, "its int8 weight has no raw data".into()));
                continue;
            }
            let mut t = vec![0u8; src.len()];
            for r in 0..rows {
                for c in 0..kk {
                    t[c * rows + r] = src[r * kk + c];
                }
            }
            let name = fresh(&mut names, "weight_kn");
            new_inits.push(TensorProto {
                name: Some(name.clone()),
                data_type: Some(dtype::INT8),
                dims: vec![cols, k],
                raw_data: Some(t.into()),
                ..Default::default()
            });
            name
        } else {
            w.q.name.clone().unwrap_or_default()
        };
        let scale_name = if alpha != 1.0 {
            let s = floats(g.initializer.get(inits[w.scale]).expect("scale is an initializer"))?;
            let name = fresh(&mut names, "weight_scale_alpha");
            let dims = if w.scale_len == 1 { vec![] } else { vec![w.scale_len as i64] };
            new_inits.push(float_tensor(name.clone(), dims, &s.iter().map(|v| v * alpha).collect::<Vec<_>>()));
            name
        } else {
            w.scale.to_string()
        };
        let x = n.input[0].clone();
        let mut nodes = Vec::new();
        // Each product quantizes its input itself, even where products share one (attention's
        // Q/K/V): ONNX Runtime fuses only a DynamicQuantizeLinear read by one product into
        // DynamicQuantizeMatMul. On all-MiniLM-L6-v2 sharing measured the same speed.
        let [xq, xs, xzp] = ["input_quantized", "input_scale", "input_zero_point"].map(|s| fresh(&mut names, s));
        nodes.push(names.node(
            &base,
            ops::DYNAMIC_QUANTIZE_LINEAR,
            vec![x.clone()],
            vec![xq.clone(), xs.clone(), xzp.clone()],
        ));
        report.input_quantizers += 1;
        let product = fresh(&mut names, "integer_product");
        let product_f = fresh(&mut names, "integer_product_float");
        let scale = fresh(&mut names, "output_scale");
        nodes.push(names.node(&base, ops::MATMUL_INTEGER, vec![xq, b_name, xzp], vec![product.clone()]));
        let mut cast = names.node(&base, ops::CAST, vec![product], vec![product_f.clone()]);
        cast.set_attr_int("to", dtype::FLOAT as i64);
        nodes.push(cast);
        nodes.push(names.node(&base, ops::MUL, vec![xs, scale_name], vec![scale.clone()]));
        match bias {
            None => nodes.push(names.node(&base, ops::MUL, vec![product_f, scale], vec![base.clone()])),
            Some(c) => {
                let scaled = fresh(&mut names, "scaled");
                nodes.push(names.node(&base, ops::MUL, vec![product_f, scale], vec![scaled.clone()]));
                let c = match bias_value {
                    Some(v) => {
                        let name = fresh(&mut names, "bias_beta");
                        let dims = g.initializer[inits[c.as_str()]].dims.clone();
                        new_inits.push(float_tensor(name.clone(), dims, &v));
                        name
                    }
                    None => c.clone(),
                };
                nodes.push(names.node(&base, ops::ADD, vec![scaled, c], vec![base.clone()]));
            }
        }
        report.integer_nodes += 1;
        replace.insert(i, nodes);
    }
    if replace.is_empty() {
        return Ok(report);
    }
    let old = std::mem::take(&mut g.node);
    for (i, n) in old.into_iter().enumerate() {
        match replace.remove(&i) {
            Some(nodes) => g.node.extend(nodes),
            None => g.node.push(n),
        }
    }
    g.initializer.extend(new_inits);
    drop_unread_dequantizers(g);
    crate::rewrite::drop_unused(g);
    Ok(report)
}

/// Removes the DequantizeLinear nodes whose outputs nothing reads any more.
fn drop_unread_dequantizers(g: &mut GraphProto) {
    let mut read: std::collections::HashSet<String> = g.output.iter().filter_map(|v| v.name.clone()).collect();
    crate::onnx::graph::walk_graphs(g, &mut |_, sub| {
        for n in &sub.node {
            read.extend(n.input.iter().cloned());
        }
    });
    g.node.retain(|n| !ops::is(n, DEQUANTIZE_LINEAR) || n.output.iter().any(|o| read.contains(o)));
}
