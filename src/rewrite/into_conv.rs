//! Folding a per-channel `Mul`/`Add`/`BatchNormalization` that feeds a `Conv` into it.

use super::*;
use crate::onnx::graph::{Names, node_domain};
use crate::onnx::model::Model;
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto};
use crate::onnx::tensor::float_tensor;
use crate::ops;
use std::collections::{HashMap, HashSet};

/// Whether a `Conv` node pads its input (explicit non-zero `pads`, or `SAME_*` auto padding).
pub(super) fn pads(n: &NodeProto) -> bool {
    n.attribute.iter().any(|a| match a.name.as_deref() {
        Some("pads") => a.ints.iter().any(|&p| p != 0),
        Some("auto_pad") => !matches!(a.s.as_deref(), None | Some(b"NOTSET") | Some(b"VALID")),
        _ => false,
    })
}

/// Index of the node in `g` that produces each tensor.
pub(super) fn producers(g: &GraphProto) -> HashMap<&str, usize> {
    g.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect()
}

/// The size of axis 1 (channels) of tensor `t`, where it is declared or follows from the ops
/// that produce it: a `Conv`'s weight, shape-preserving ops, and elementwise ops whose operands
/// all have known channels. `None` when unknown.
pub(super) fn channels(
    g: &GraphProto,
    scope: &crate::opset::facts::Scope,
    producer: &HashMap<&str, usize>,
    consts: &HashMap<&str, &TensorProto>,
    t: &str,
    depth: usize,
) -> Option<usize> {
    if let Some(Some(c)) = scope.dims(t).and_then(|d| d.get(1).copied()) {
        return usize::try_from(c).ok();
    }
    if depth == 0 {
        return None;
    }
    let n = &g.node[*producer.get(t)?];
    if !node_domain(n).is_empty() {
        return None;
    }
    let op = n.op_type.as_deref()?;
    let rank = scope.rank(t)?;
    match op {
        ops::CONV => consts.get(n.input.get(1)?.as_str()).map(|w| w.dims[0] as usize),
        _ if ops::elementwise::UNARY_SAME_SHAPE.contains(&op) => {
            channels(g, scope, producer, consts, &n.input[0], depth - 1)
        }
        _ if ops::elementwise::BROADCAST_ARITHMETIC.contains(&op) => {
            let mut c = 1;
            for i in &n.input {
                let ci = match consts.get(i.as_str()) {
                    // Right-aligned broadcasting: a constant's axis 1 of `rank`, if it has one.
                    Some(k) => {
                        let at = (k.dims.len() + 1).checked_sub(rank);
                        at.and_then(|a| k.dims.get(a)).map_or(1, |&d| d as usize)
                    }
                    None => channels(g, scope, producer, consts, i, depth - 1)?,
                };
                c = c.max(ci);
            }
            Some(c)
        }
        _ => None,
    }
}

/// Folds per-channel affine ops (`Mul`/`Add` of a constant, `BatchNormalization`) into the `Conv`
/// that alone reads their output, in the main graph of `model` (see the module docs). The affine
/// op's input must be known to have the convolution's rank and input channels (a per-channel
/// constant could otherwise broadcast a one-channel tensor to many). Returns the number of nodes
/// absorbed. Unused constants are left for the caller to drop.
pub fn fold_affine_into_conv(model: &mut Model, names: &mut Names) -> usize {
    let mut absorbed = 0;
    loop {
        let (step, swapped) = fold_into_conv_round(model, names);
        if step + swapped == 0 {
            return absorbed;
        }
        absorbed += step;
    }
}

/// `x → Mul(scale) → Add(t) → padded Conv`, to be rewritten as `x → Add(shift = t / scale) →
/// Mul(scale) → Conv` (node indices of the Mul and the Add; `rank` is the weight's).
pub(super) struct Swap {
    pub(super) mul: usize,
    pub(super) add: usize,
    pub(super) x: String,
    pub(super) shift: Vec<f32>,
    pub(super) scale: Vec<f32>,
    pub(super) rank: usize,
}

/// One pass over the convolutions: (nodes absorbed, `Mul` → `Add` pairs reordered for the next).
pub(super) fn fold_into_conv_round(model: &mut Model, names: &mut Names) -> (usize, usize) {
    // (conv, its new values, the absorbed node, the absorbed node's data input)
    let mut plans: Vec<(usize, ConvParams, usize, String)> = Vec::new();
    let mut swaps: Vec<Swap> = Vec::new();
    {
        let g = model.graph();
        let graph_outputs: HashSet<&str> = g.output.iter().filter_map(|v| v.name.as_deref()).collect();
        let readers = crate::onnx::graph::readers(g);
        let consts = fixed_constants(model);
        let producer = producers(g);
        let scope = crate::opset::facts::Scope::of_graph(g, None);
        let only_reader =
            |t: &str, r: usize| !graph_outputs.contains(t) && readers.get(t).map(Vec::as_slice) == Some(&[r][..]);
        let data_input = |n: &NodeProto| -> Option<String> {
            match n.op_type.as_deref() {
                Some(ops::MUL | ops::ADD) => {
                    let mut vars = n.input.iter().filter(|s| !consts.contains_key(s.as_str()));
                    match (vars.next(), vars.next()) {
                        (Some(d), None) => Some(d.clone()),
                        _ => None,
                    }
                }
                Some(ops::BATCH_NORMALIZATION) => n.input.first().cloned(),
                _ => None,
            }
        };
        let mut taken = HashSet::new();
        for (i, n) in g.node.iter().enumerate() {
            let Some((dims, group)) = ConvParams::shape(n, &consts) else { continue };
            let x = &n.input[0];
            if !only_reader(x, i) {
                continue;
            }
            let Some(&p) = producer.get(x.as_str()) else { continue };
            if taken.contains(&p) || taken.contains(&i) {
                continue;
            }
            let pn = &g.node[p];
            let Some(data) = data_input(pn) else { continue };
            let (cin, rank) = (dims[1] as usize * group, dims.len());
            if scope.rank(&data) != Some(rank) || channels(g, &scope, &producer, &consts, &data, 8) != Some(cin) {
                continue;
            }
            let Some(aff) = affine_of(pn, &data, &consts, cin, rank) else { continue };
            if pads(n) && aff.add.iter().any(|&a| a != 0.0) {
                // A padded convolution cannot take a shift, but it can take the scale of a
                // `Mul(s)` before the `Add(t)`: written as `Add(t / s)` then `Mul(s)`, the scale
                // folds next round and one float op is left instead of two.
                if pn.op_type.as_deref() != Some(ops::ADD) || !only_reader(&data, p) {
                    continue;
                }
                let Some(&mi) = producer.get(data.as_str()) else { continue };
                let mn = &g.node[mi];
                if taken.contains(&mi) || mn.op_type.as_deref() != Some(ops::MUL) {
                    continue;
                }
                let Some(x) = data_input(mn) else { continue };
                if scope.rank(&x) != Some(rank) || channels(g, &scope, &producer, &consts, &x, 8) != Some(cin) {
                    continue;
                }
                let Some(scale) = affine_of(mn, &x, &consts, cin, rank) else { continue };
                let shift: Vec<f32> = aff.add.iter().zip(&scale.mul).map(|(t, m)| t / m).collect();
                if shift.iter().any(|v| !v.is_finite()) {
                    continue;
                }
                taken.extend([i, p, mi]);
                swaps.push(Swap { mul: mi, add: p, x, shift, scale: scale.mul, rank });
                continue;
            }
            let Some(mut conv) = ConvParams::load(n, &consts) else { continue };
            // Conv(x * mul + add): weight[o, j] takes mul of input channel c(o, j); bias[o] gains
            // Σ weight[o, j, k] * add[c(o, j)] (from the weight before scaling).
            let (cout, cin_g) = (conv.cout(), conv.dims[1] as usize);
            let per = conv.weight.len() / (cout * cin_g);
            let per_group = cout / conv.group;
            for o in 0..cout {
                let first = (o / per_group) * cin_g;
                let mut shift = 0f64;
                for j in 0..cin_g {
                    let c = first + j;
                    for v in &mut conv.weight[(o * cin_g + j) * per..(o * cin_g + j + 1) * per] {
                        shift += *v as f64 * aff.add[c] as f64;
                        *v *= aff.mul[c];
                    }
                }
                conv.bias[o] += shift as f32;
            }
            taken.insert(i);
            taken.insert(p);
            plans.push((i, conv, p, data));
        }
    }
    let g = model.graph_mut();
    let swapped = swaps.len();
    for Swap { mul: mi, add: ai, x, shift, scale, rank } in swaps {
        let dims: Vec<i64> = std::iter::once(shift.len() as i64).chain(std::iter::repeat_n(1, rank - 2)).collect();
        let base = g.node[ai].name.clone().unwrap_or_else(|| g.node[ai].output[0].clone());
        let (tn, sn) = (names.fresh(&format!("{base}_shift")), names.fresh(&format!("{base}_scale")));
        g.initializer.push(float_tensor(tn.clone(), dims.clone(), &shift));
        g.initializer.push(float_tensor(sn.clone(), dims, &scale));
        // The Mul's slot now computes x + t / s into its old output; the Add's slot scales that.
        let u = g.node[mi].output[0].clone();
        let first = &mut g.node[mi];
        first.op_type = Some(ops::ADD.into());
        first.input = vec![x, tn];
        first.name = Some(names.fresh(&format!("{base}_add")));
        let second = &mut g.node[ai];
        second.op_type = Some(ops::MUL.into());
        second.input = vec![u, sn];
        second.name = Some(names.fresh(&format!("{base}_mul")));
    }
    let mut dead = HashSet::new();
    for (i, conv, p, data) in plans {
        conv.store(g, i, names);
        g.node[i].input[0] = data;
        dead.insert(p);
    }
    remove_nodes(g, &dead);
    (dead.len(), swapped)
}
