//! Writing the plan into the graph: QuantizeLinear→DequantizeLinear pairs on the selected
//! activations and int32 biases in the layout ONNX Runtime fuses into integer kernels.

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::onnx::graph::{Names, NodeExt};
use crate::onnx::model::Model;
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto, dtype};
use crate::onnx::tensor::constant_value;
use crate::ops;
use crate::quant::QType;

pub(super) fn scalar(name: String, data_type: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto { name: Some(name), data_type: Some(data_type), raw_data: Some(raw.into()), ..Default::default() }
}

pub(super) fn qdq_pair(
    names: &mut Names,
    t: &str,
    r: &ActivationRange,
    qtype: QType,
) -> (Vec<NodeProto>, Vec<TensorProto>, String) {
    let s = names.fresh(&format!("{t}_scale"));
    let z = names.fresh(&format!("{t}_zero_point"));
    let q_out = names.fresh(&format!("{t}_quantized"));
    let dq_out = names.fresh(&format!("{t}_dequantized"));
    let zp_byte = if qtype.signed() { r.zero_point as i8 as u8 } else { r.zero_point as u8 };
    let inits = vec![
        scalar(s.clone(), dtype::FLOAT, r.scale.to_le_bytes().to_vec()),
        scalar(z.clone(), qtype.onnx_dtype(false), vec![zp_byte]),
    ];
    let q = NodeProto {
        name: Some(names.fresh(&format!("{t}_QuantizeLinear"))),
        op_type: Some(ops::QUANTIZE_LINEAR.into()),
        input: vec![t.to_string(), s.clone(), z.clone()],
        output: vec![q_out.clone()],
        ..Default::default()
    };
    let dq = NodeProto {
        name: Some(names.fresh(&format!("{t}_DequantizeLinear"))),
        op_type: Some(ops::DEQUANTIZE_LINEAR.into()),
        input: vec![q_out, s, z],
        output: vec![dq_out.clone()],
        ..Default::default()
    };
    (vec![q, dq], inits, dq_out)
}

/// Inserts a Q→DQ pair after each selected activation (every reader switches to the DQ output),
/// and rewrites float biases of quantized Conv/Gemm nodes as int32. Returns the bias count.
pub(super) fn rewrite(model: &mut Model, sel: &Selection, ranges: &[ActivationRange], qtype: QType) -> usize {
    let mut names = Names::of_graph(model.graph());
    let g = model.graph_mut();
    let by_name: HashMap<&str, &ActivationRange> = ranges.iter().map(|r| (r.tensor.as_str(), r)).collect();
    let mut pairs: HashMap<String, (Vec<NodeProto>, String)> = HashMap::new();
    let mut new_inits = Vec::new();
    for t in &sel.tensors {
        let (nodes, inits, dq_out) = qdq_pair(&mut names, t, by_name[t.as_str()], qtype);
        new_inits.extend(inits);
        pairs.insert(t.clone(), (nodes, dq_out));
    }
    let biases = quantize_biases(g, sel, &by_name, &pairs, &mut names, &mut new_inits);
    // Readers switch to the dequantized value; the Q node itself keeps reading the float tensor.
    let dq_of: HashMap<&str, &str> = pairs.iter().map(|(t, (_, d))| (t.as_str(), d.as_str())).collect();
    for n in g.node.iter_mut() {
        for input in n.input.iter_mut() {
            if let Some(d) = dq_of.get(input.as_str()) {
                *input = d.to_string();
            }
        }
    }
    // Place each pair right after the node producing its tensor (graph inputs: at the start).
    let mut pending: BTreeMap<String, Vec<NodeProto>> = pairs.into_iter().map(|(t, (n, _))| (t, n)).collect();
    let mut nodes = Vec::with_capacity(g.node.len() + 2 * pending.len());
    let graph_inputs: Vec<String> = g.input.iter().filter_map(|v| v.name.clone()).collect();
    for i in graph_inputs {
        if let Some(p) = pending.remove(&i) {
            nodes.extend(p);
        }
    }
    for n in std::mem::take(&mut g.node) {
        let outs = n.output.clone();
        nodes.push(n);
        for o in outs {
            if let Some(p) = pending.remove(&o) {
                nodes.extend(p);
            }
        }
    }
    g.node = nodes;
    g.initializer.extend(new_inits);
    biases
}

/// Conv/Gemm biases become int32 with scale = input scale × weight scale, so ONNX Runtime can fuse
/// the node into an integer kernel.
pub(super) fn quantize_biases(
    g: &mut GraphProto,
    sel: &Selection,
    ranges: &HashMap<&str, &ActivationRange>,
    pairs: &HashMap<String, (Vec<NodeProto>, String)>,
    names: &mut Names,
    new_inits: &mut Vec<TensorProto>,
) -> usize {
    let weights = dequantized_weights(g);
    let inits: HashMap<String, usize> =
        g.initializer.iter().enumerate().filter_map(|(i, t)| t.name.clone().map(|n| (n, i))).collect();
    let mut count = 0;
    let mut dq_nodes = Vec::new();
    for &i in &sel.nodes {
        let n = &g.node[i];
        if ops::spec(n).and_then(|s| s.int32_bias) != Some(2) || n.input.len() < 3 || n.input[2].is_empty() {
            continue;
        }
        let (x, w, b) = (&n.input[0], &n.input[1], &n.input[2]);
        let (Some(xr), Some(wdq)) = (ranges.get(x.as_str()), weights.get(w)) else { continue };
        if !pairs.contains_key(x) {
            continue;
        }
        // The weight's scales (and axis) from its DequantizeLinear; only per-tensor/per-axis.
        if wdq.attr("block_size").is_some() {
            continue;
        }
        let Some(ws) = wdq.input.get(1).and_then(|s| inits.get(s)).map(|&k| &g.initializer[k]) else { continue };
        let Ok(w_scales) = crate::onnx::tensor::finite_floats(ws) else { continue };
        let Some(bt) = inits
            .get(b)
            .map(|&k| &g.initializer[k])
            .or_else(|| g.node.iter().find(|c| c.output.first() == Some(b)).and_then(constant_value))
        else {
            continue;
        };
        let Ok(bias) = crate::onnx::tensor::finite_floats(bt) else { continue };
        if bt.dims.len() != 1 || (w_scales.len() != 1 && w_scales.len() != bias.len()) {
            continue;
        }
        let scales: Vec<f32> =
            (0..bias.len()).map(|c| xr.scale * w_scales[if w_scales.len() == 1 { 0 } else { c }]).collect();
        let q: Option<Vec<i32>> = bias
            .iter()
            .zip(&scales)
            .map(|(&v, &s)| {
                let q = (v as f64 / s as f64).round();
                (s > 0.0 && q.abs() < i32::MAX as f64).then_some(q as i32)
            })
            .collect();
        let Some(q) = q else { continue };
        let qb = names.fresh(&format!("{b}_quantized"));
        let sb = names.fresh(&format!("{b}_scale"));
        let out = names.fresh(&format!("{b}_dequantized"));
        new_inits.push(TensorProto {
            name: Some(qb.clone()),
            data_type: Some(dtype::INT32),
            dims: bt.dims.clone(),
            raw_data: Some(q.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
            ..Default::default()
        });
        new_inits.push(TensorProto {
            name: Some(sb.clone()),
            data_type: Some(dtype::FLOAT),
            dims: bt.dims.clone(),
            raw_data: Some(crate::onnx::tensor::le_bytes(&scales).into()),
            ..Default::default()
        });
        let mut dq = NodeProto {
            name: Some(names.fresh(&format!("{b}_DequantizeLinear"))),
            op_type: Some(ops::DEQUANTIZE_LINEAR.into()),
            input: vec![qb, sb],
            output: vec![out.clone()],
            ..Default::default()
        };
        dq.set_attr_int("axis", 0);
        dq_nodes.push((i, dq, out));
        count += 1;
    }
    // Insert each bias DQ just before its node (indices shift as we go, so go from the back).
    dq_nodes.sort_by_key(|(i, _, _)| std::cmp::Reverse(*i));
    for (i, dq, out) in dq_nodes {
        g.node[i].input[2] = out;
        g.node.insert(i, dq);
    }
    crate::rewrite::drop_unused(g);
    count
}
