//! The spelled-out hard-swish `x * Clip(x + 3, 0, 6) / 6` as one `HardSwish` (or
//! `x * HardSigmoid(x)` below opset 14).

use super::*;
use crate::onnx::graph::{Names, NodeExt};
use crate::onnx::model::Model;
use crate::onnx::proto::{NodeProto, TensorProto, dtype};
use crate::onnx::tensor::finite_floats;
use crate::ops;
use std::collections::{HashMap, HashSet};

/// The value of a float32 constant with one element and at most `rank` dimensions (so that it
/// cannot raise the rank of what it is combined with).
pub(super) fn scalar(consts: &HashMap<&str, &TensorProto>, name: &str, rank: Option<usize>) -> Option<f32> {
    let t = consts.get(name)?;
    if t.data_type != Some(dtype::FLOAT) || t.dims.len() > rank.unwrap_or(1).max(1) {
        return None;
    }
    match finite_floats(t).ok()?.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// The other input of a two-input node one of whose inputs is `x`, if it differs from `x`.
pub(super) fn other_input<'a>(n: &'a NodeProto, x: &str) -> Option<&'a str> {
    match n.input.as_slice() {
        [a, b] if a == x && b != x => Some(b),
        [a, b] if b == x && a != x => Some(a),
        _ => None,
    }
}

pub(super) fn is_op(n: &NodeProto, op: &str) -> bool {
    ops::is(n, op) && n.output.len() == 1
}

/// One spelled-out hard-swish: node indices in the main graph.
pub(super) struct HardSwishChain {
    pub(super) add: usize,
    pub(super) x: String,
    pub(super) clip: usize,
    pub(super) scale: usize,
    pub(super) product: usize,
    /// `x * (clip / 6)` rather than `(x * clip) / 6`.
    pub(super) scale_first: bool,
}

/// How many `x * Clip(x + 3, 0, 6) / 6` chains [`fuse_hard_swish`] would rewrite in `model`.
pub fn hard_swish_chains(model: &Model) -> usize {
    find_hard_swish(model).len()
}

pub(super) fn find_hard_swish(model: &Model) -> Vec<HardSwishChain> {
    let g = model.graph();
    let graph_outputs: HashSet<&str> = g.output.iter().filter_map(|v| v.name.as_deref()).collect();
    let readers = crate::onnx::graph::readers(g);
    let only_reader = |t: &str| match readers.get(t).map(Vec::as_slice) {
        Some(&[r]) if r != crate::onnx::graph::SUBGRAPH_READER && !graph_outputs.contains(t) => Some(r),
        _ => None,
    };
    let consts = fixed_constants(model);
    let producer = producers(g);
    let scope = crate::opset::facts::Scope::of_graph(g, None);
    let mut chains = Vec::new();
    for (ci, clip) in g.node.iter().enumerate() {
        if !is_op(clip, ops::CLIP) {
            continue;
        }
        let Some(&ai) = producer.get(clip.input[0].as_str()) else { continue };
        let add = &g.node[ai];
        if !is_op(add, ops::ADD) || only_reader(&add.output[0]) != Some(ci) {
            continue;
        }
        let x = match add.input.as_slice() {
            [a, b] if !consts.contains_key(a.as_str()) && consts.contains_key(b.as_str()) => a,
            [a, b] if consts.contains_key(a.as_str()) && !consts.contains_key(b.as_str()) => b,
            _ => continue,
        };
        // Constants no wider than x, so that the rewrite keeps the output's shape.
        let rank = scope.rank(x);
        let three = other_input(add, x).and_then(|c| scalar(&consts, c, rank));
        let bound = |k: usize, attr: &str| match clip.input.get(k).filter(|s| !s.is_empty()) {
            Some(name) => scalar(&consts, name, rank),
            None => clip.attr_float(attr).ok().flatten(),
        };
        if three != Some(3.0) || bound(1, "min") != Some(0.0) || bound(2, "max") != Some(6.0) {
            continue;
        }
        let is_sixth = |n: &NodeProto, v: &str| {
            is_op(n, n.op_type.as_deref().unwrap_or(""))
                && match n.op_type.as_deref() {
                    Some(ops::DIV) if n.input.first().map(String::as_str) == Some(v) => {
                        n.input.get(1).and_then(|d| scalar(&consts, d, rank)) == Some(6.0)
                    }
                    Some(ops::MUL) => other_input(n, v)
                        .and_then(|c| scalar(&consts, c, rank))
                        .is_some_and(|c| (c - 1.0 / 6.0).abs() < 1e-6),
                    _ => false,
                }
        };
        let Some(ri) = only_reader(&clip.output[0]) else { continue };
        let r = &g.node[ri];
        let c = &clip.output[0];
        let chain = if is_op(r, ops::MUL) && other_input(r, c) == Some(x) {
            // x * clip, then / 6.
            let Some(si) = only_reader(&r.output[0]) else { continue };
            if !is_sixth(&g.node[si], &r.output[0]) {
                continue;
            }
            HardSwishChain { add: ai, x: x.clone(), clip: ci, scale: si, product: ri, scale_first: false }
        } else if is_sixth(r, c) {
            // clip / 6, then x * that.
            let Some(mi) = only_reader(&r.output[0]) else { continue };
            let m = &g.node[mi];
            if !is_op(m, ops::MUL) || other_input(m, &r.output[0]) != Some(x) {
                continue;
            }
            HardSwishChain { add: ai, x: x.clone(), clip: ci, scale: ri, product: mi, scale_first: true }
        } else {
            continue;
        };
        chains.push(chain);
    }
    chains
}

/// Rewrites every `x * Clip(x + 3, 0, 6) / 6` in the main graph of `model` (the division may
/// also be a multiplication by 1/6, before or after the product) into `HardSwish(x)` when its
/// opset is 14 or later, else into `x * HardSigmoid(x, alpha = 1/6, beta = 0.5)`. The
/// intermediate tensors must have no other reader and not be graph outputs. Returns the number
/// rewritten.
pub fn fuse_hard_swish(model: &mut Model, names: &mut Names) -> usize {
    let plans = find_hard_swish(model);
    let opset = model.opset().unwrap_or(1);
    let g = model.graph_mut();
    let mut dead = HashSet::new();
    for p in &plans {
        // The chain's result: the output of whichever of the product and the scaling comes last.
        let last = if p.scale_first { p.product } else { p.scale };
        let y = g.node[last].output[0].clone();
        let base = g.node[p.add].name.clone().unwrap_or_else(|| y.clone());
        if opset >= 14 {
            g.node[p.add] = NodeProto {
                op_type: Some(ops::HARD_SWISH.into()),
                name: Some(names.fresh(&format!("{base}_hardswish"))),
                input: vec![p.x.clone()],
                output: vec![y],
                ..Default::default()
            };
            dead.extend([p.clip, p.scale, p.product]);
        } else {
            let h = names.fresh(&format!("{y}_hardsigmoid"));
            let mut hs = NodeProto {
                op_type: Some(ops::HARD_SIGMOID.into()),
                name: Some(names.fresh(&format!("{base}_hardsigmoid"))),
                input: vec![p.x.clone()],
                output: vec![h.clone()],
                ..Default::default()
            };
            hs.set_attr_float("alpha", 1.0 / 6.0);
            hs.set_attr_float("beta", 0.5);
            g.node[p.add] = hs;
            let product = &mut g.node[p.product];
            product.input = vec![p.x.clone(), h];
            product.output = vec![y];
            dead.extend([p.clip, p.scale]);
        }
    }
    remove_nodes(g, &dead);
    plans.len()
}
