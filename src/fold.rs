//! Folding per-channel affine ops into the convolution before them.
//!
//! Exporters often leave batch normalization next to the convolution: as a
//! `BatchNormalization` node, or (paddle2onnx) as `Mul` by a per-channel scale then `Add` of a
//! per-channel shift. ONNX Runtime folds these into the convolution when it runs a float model,
//! but not once the convolution's weight sits behind a DequantizeLinear. For static
//! quantization they must be folded first: the raw convolution output, before the scale,
//! has channels of very different magnitudes, and one activation scale for all of them crushes
//! the small ones (PP-OCRv4's detector loses most of its signal that way), while the folded
//! output is what the next layer actually reads.
//!
//! [`fold_conv_affine`] rewrites `Conv → BatchNormalization`, `Conv → Mul(c)` and `Conv → Add(c)`
//! chains (c constant, one value or one per output channel) into a single `Conv` with new
//! weight and bias initializers, when the convolution's output has that one reader and is not a
//! graph output. The folded `Conv` takes over the last absorbed node's output name.
//!
//! Before static quantization three more rewrites run, all exact up to float rounding:
//! - [`fold_affine_into_conv`] folds a per-channel `Mul`/`Add`/`BatchNormalization` that feeds a
//!   `Conv` into that convolution (the scale into the weight's input channels, the shift into the
//!   bias, the latter only when the convolution does not pad: padded zeros would become the
//!   shift; before a padded one, `Mul(s) → Add(t)` becomes `Add(t / s)` and the scale still
//!   folds). paddle2onnx writes such a pair after every hard-swish of PP-LCNet.
//! - [`fuse_hard_swish`] rewrites the spelled-out hard-swish `x * Clip(x + 3, 0, 6) / 6` into
//!   `HardSwish` (opset 14 and later) or `x * HardSigmoid(x)`.
//! - [`decompose_softmax`] writes a `Softmax` over a non-last axis (YOLOv8's DFL head) as
//!   `Exp(x - ReduceMax(x)) / ReduceSum(...)`, which ONNX Runtime runs six times faster.
//!
//! In a quantized model the float ops between a DequantizeLinear and the next QuantizeLinear
//! each make a full pass over an f32 tensor; on PP-OCRv4 the first two rewrites take six of
//! them down to one or two per block.
//!
//! Every rewrite reads only constants that cannot change at run time: an initializer that is
//! also a graph input (IR 4 and later) may be fed by the caller, so it is not folded.

use std::collections::{HashMap, HashSet};

use crate::onnx::graph::{Names, NodeExt, node_domain};
use crate::onnx::model::Model;
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto, dtype};
use crate::onnx::tensor::{constant_value, finite_floats as float_values, float_tensor};
use crate::ops;

/// What one absorbed node does to output channel `o`: `y = x * mul[o] + add[o]`.
struct Affine {
    mul: Vec<f32>,
    add: Vec<f32>,
}

/// Values of a float32 constant that applies per output channel of an NCHW-like tensor of rank
/// `rank`: one value, or `channels` values laid out along axis 1 (`[C,1,1]`, `[1,C,1,1]`).
fn per_channel(t: &TensorProto, channels: usize, rank: usize) -> Option<Vec<f32>> {
    if t.data_type != Some(dtype::FLOAT) {
        return None;
    }
    let v = float_values(t).ok()?;
    if v.len() == 1 && t.dims.len() <= rank {
        return Some(vec![v[0]; channels]);
    }
    if v.len() != channels || t.dims.len() > rank {
        return None;
    }
    // Right-aligned broadcasting: the channel axis (1 of `rank`) is at dims.len() - (rank - 1).
    let axis = t.dims.len().checked_sub(rank - 1)?;
    let ok = t.dims.iter().enumerate().all(|(i, &d)| if i == axis { d as usize == channels } else { d == 1 });
    ok.then_some(v)
}

fn affine_of(n: &NodeProto, x: &str, consts: &HashMap<&str, &TensorProto>, c: usize, rank: usize) -> Option<Affine> {
    if !node_domain(n).is_empty() || n.output.len() != 1 {
        return None;
    }
    let op = n.op_type.as_deref()?;
    let other = |n: &NodeProto| per_channel(consts.get(other_input(n, x)?)?, c, rank);
    match op {
        ops::MUL => Some(Affine { mul: other(n)?, add: vec![0.0; c] }),
        ops::ADD => Some(Affine { mul: vec![1.0; c], add: other(n)? }),
        ops::BATCH_NORMALIZATION => {
            // In training mode the batch's own statistics are used, not the stored ones.
            let training = n.attr_int("training_mode").ok().flatten().unwrap_or(0) != 0;
            if n.input.first().map(String::as_str) != Some(x) || n.input.len() != 5 || training {
                return None;
            }
            let eps =
                n.attribute.iter().find(|a| a.name.as_deref() == Some("epsilon")).and_then(|a| a.f).unwrap_or(1e-5);
            let vals: Option<Vec<Vec<f32>>> = n.input[1..]
                .iter()
                .map(|i| {
                    let t = consts.get(i.as_str())?;
                    let v = (t.data_type == Some(dtype::FLOAT)).then(|| float_values(t).ok()).flatten()?;
                    (v.len() == c).then_some(v)
                })
                .collect();
            let vals = vals?;
            let (scale, bias, mean, var) = (&vals[0], &vals[1], &vals[2], &vals[3]);
            let mul: Vec<f32> =
                (0..c).map(|o| (scale[o] as f64 / (var[o] as f64 + eps as f64).sqrt()) as f32).collect();
            let add = (0..c).map(|o| bias[o] - mean[o] * mul[o]).collect();
            Some(Affine { mul, add })
        }
        _ => None,
    }
}

/// The constants of `model`'s main graph that the rewrites may read: initializers and Constant
/// nodes, without the initializers that are also graph inputs from IR 4 on (a caller may feed
/// those at run time; before IR 4 every initializer had to be listed as an input).
fn fixed_constants(model: &Model) -> HashMap<&str, &TensorProto> {
    let g = model.graph();
    let mut consts = crate::onnx::graph::constants(g);
    if model.proto.ir_version.unwrap_or(0) >= 4 {
        for i in &g.input {
            if let Some(name) = i.name.as_deref() {
                consts.remove(name);
            }
        }
    }
    consts
}

/// Removes the nodes at the indices in `dead`.
fn remove_nodes(g: &mut GraphProto, dead: &HashSet<usize>) {
    let mut k = 0;
    g.node.retain(|_| {
        let keep = !dead.contains(&k);
        k += 1;
        keep
    });
}

/// A float `Conv` with constant weight `[cout, cin / group, k...]` and constant (or no) bias, as
/// values to rewrite.
struct ConvParams {
    weight: Vec<f32>,
    dims: Vec<i64>,
    bias: Vec<f32>,
    group: usize,
}

impl ConvParams {
    /// The weight dims and group of a float `Conv` with a constant weight and a constant (or no)
    /// bias of `cout` values: checked from the tensors' headers, nothing decoded, so that every
    /// convolution of a model can be looked at cheaply and only the ones folded pay for
    /// [`ConvParams::load`].
    fn shape<'a>(n: &NodeProto, consts: &HashMap<&str, &'a TensorProto>) -> Option<(&'a [i64], usize)> {
        if n.op_type.as_deref() != Some(ops::CONV) || !node_domain(n).is_empty() || n.output.len() != 1 {
            return None;
        }
        let w = *consts.get(n.input.get(1)?.as_str())?;
        if w.data_type != Some(dtype::FLOAT) || w.dims.len() < 3 || w.dims.iter().any(|&d| d <= 0) {
            return None;
        }
        let cout = w.dims[0];
        let group = n.attr_int("group").ok().flatten().unwrap_or(1);
        if group < 1 || cout % group != 0 {
            return None;
        }
        if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
            let t = consts.get(b.as_str())?;
            if t.data_type != Some(dtype::FLOAT) || t.dims.iter().product::<i64>() != cout {
                return None;
            }
        }
        Some((&w.dims, group as usize))
    }

    /// The values of a convolution [`ConvParams::shape`] accepts.
    fn load(n: &NodeProto, consts: &HashMap<&str, &TensorProto>) -> Option<ConvParams> {
        let (dims, group) = ConvParams::shape(n, consts)?;
        let weight = float_values(consts[n.input[1].as_str()]).ok()?;
        let bias = match n.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => float_values(consts[b.as_str()]).ok()?,
            None => vec![0.0; dims[0] as usize],
        };
        Some(ConvParams { weight, dims: dims.to_vec(), bias, group })
    }

    fn cout(&self) -> usize {
        self.dims[0] as usize
    }

    /// Writes the values as new initializers and points conv `i` of `g` at them.
    fn store(self, g: &mut GraphProto, i: usize, names: &mut Names) {
        let n = &g.node[i];
        let base = n.name.clone().unwrap_or_else(|| n.output[0].clone());
        let (wn, bn) = (names.fresh(&format!("{base}_W")), names.fresh(&format!("{base}_B")));
        let cout = self.cout() as i64;
        g.initializer.push(float_tensor(wn.clone(), self.dims, &self.weight));
        g.initializer.push(float_tensor(bn.clone(), vec![cout], &self.bias));
        let conv = &mut g.node[i];
        conv.input.truncate(1);
        conv.input.push(wn);
        conv.input.push(bn);
    }
}

/// Folds per-channel affine ops into the `Conv` before them in the main graph of `model` (see
/// the module docs). Returns the number of nodes absorbed. Unused constants are left for the
/// caller to drop.
pub fn fold_conv_affine(model: &mut Model, names: &mut Names) -> usize {
    let mut absorbed = 0;
    loop {
        let step = fold_one_round(model, names);
        if step == 0 {
            return absorbed;
        }
        absorbed += step;
    }
}

fn fold_one_round(model: &mut Model, names: &mut Names) -> usize {
    let mut plans: Vec<(usize, usize, ConvParams)> = Vec::new();
    {
        let g = model.graph();
        let graph_outputs: HashSet<&str> = g.output.iter().filter_map(|v| v.name.as_deref()).collect();
        let readers = crate::onnx::graph::readers(g);
        let consts = fixed_constants(model);
        let mut taken = HashSet::new();
        for (i, n) in g.node.iter().enumerate() {
            let Some((dims, _)) = ConvParams::shape(n, &consts) else { continue };
            let y = &n.output[0];
            if graph_outputs.contains(y.as_str()) {
                continue;
            }
            let Some(&[r]) = readers.get(y).map(Vec::as_slice) else { continue };
            if r == crate::onnx::graph::SUBGRAPH_READER || taken.contains(&r) {
                continue;
            }
            let c = dims[0] as usize;
            let Some(aff) = affine_of(&g.node[r], y, &consts, c, dims.len()) else { continue };
            let Some(mut conv) = ConvParams::load(n, &consts) else { continue };
            let per = conv.weight.len() / c;
            for o in 0..c {
                for v in &mut conv.weight[o * per..(o + 1) * per] {
                    *v *= aff.mul[o];
                }
                conv.bias[o] = conv.bias[o] * aff.mul[o] + aff.add[o];
            }
            taken.insert(r);
            plans.push((i, r, conv));
        }
    }
    let g = model.graph_mut();
    let mut dead = HashSet::new();
    for (i, r, conv) in plans {
        conv.store(g, i, names);
        g.node[i].output[0] = g.node[r].output[0].clone();
        dead.insert(r);
    }
    remove_nodes(g, &dead);
    dead.len()
}

/// Whether a `Conv` node pads its input (explicit non-zero `pads`, or `SAME_*` auto padding).
fn pads(n: &NodeProto) -> bool {
    n.attribute.iter().any(|a| match a.name.as_deref() {
        Some("pads") => a.ints.iter().any(|&p| p != 0),
        Some("auto_pad") => !matches!(a.s.as_deref(), None | Some(b"NOTSET") | Some(b"VALID")),
        _ => false,
    })
}

/// Index of the node in `g` that produces each tensor.
fn producers(g: &GraphProto) -> HashMap<&str, usize> {
    g.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect()
}

/// The size of axis 1 (channels) of tensor `t`, where it is declared or follows from the ops
/// that produce it: a `Conv`'s weight, shape-preserving ops, and elementwise ops whose operands
/// all have known channels. `None` when unknown.
fn channels(
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
struct Swap {
    mul: usize,
    add: usize,
    x: String,
    shift: Vec<f32>,
    scale: Vec<f32>,
    rank: usize,
}

/// One pass over the convolutions: (nodes absorbed, `Mul` → `Add` pairs reordered for the next).
fn fold_into_conv_round(model: &mut Model, names: &mut Names) -> (usize, usize) {
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

/// The value of a float32 constant with one element and at most `rank` dimensions (so that it
/// cannot raise the rank of what it is combined with).
fn scalar(consts: &HashMap<&str, &TensorProto>, name: &str, rank: Option<usize>) -> Option<f32> {
    let t = consts.get(name)?;
    if t.data_type != Some(dtype::FLOAT) || t.dims.len() > rank.unwrap_or(1).max(1) {
        return None;
    }
    match float_values(t).ok()?.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// The other input of a two-input node one of whose inputs is `x`, if it differs from `x`.
fn other_input<'a>(n: &'a NodeProto, x: &str) -> Option<&'a str> {
    match n.input.as_slice() {
        [a, b] if a == x && b != x => Some(b),
        [a, b] if b == x && a != x => Some(a),
        _ => None,
    }
}

fn is_op(n: &NodeProto, op: &str) -> bool {
    n.op_type.as_deref() == Some(op) && node_domain(n).is_empty() && n.output.len() == 1
}

/// One spelled-out hard-swish: node indices in the main graph.
struct HardSwishChain {
    add: usize,
    x: String,
    clip: usize,
    scale: usize,
    product: usize,
    /// `x * (clip / 6)` rather than `(x * clip) / 6`.
    scale_first: bool,
}

/// How many `x * Clip(x + 3, 0, 6) / 6` chains [`fuse_hard_swish`] would rewrite in `model`.
pub fn hard_swish_chains(model: &Model) -> usize {
    find_hard_swish(model).len()
}

fn find_hard_swish(model: &Model) -> Vec<HardSwishChain> {
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

/// Rewrites each `Softmax` over an axis that is not the last (opset 13 and later, where it
/// normalizes that one axis) as `Exp(x - ReduceMax(x)) / ReduceSum(...)` along that axis, in the
/// main graph of `model`, where the input's rank is known. ONNX Runtime computes such a softmax
/// by transposing the axis to the end and back, about six times slower than these five ops
/// (YOLOv8's DFL head: 5.7 ms against 1.0 ms on its [1,16,4,8400] tensor, measured by
/// `scripts/softmax_axis_bench.py`). Exact up to float
/// rounding. Returns the number rewritten.
pub fn decompose_softmax(model: &mut Model, names: &mut Names) -> usize {
    let opset = model.opset().unwrap_or(1);
    if opset < 13 {
        return 0;
    }
    let mut plans = Vec::new();
    {
        let g = model.graph();
        let scope = crate::opset::facts::Scope::of_graph(g, None);
        for (i, n) in g.node.iter().enumerate() {
            if !is_op(n, "Softmax") || n.input.len() != 1 {
                continue;
            }
            let axis = n.attr_int("axis").ok().flatten().unwrap_or(-1);
            let Some(rank) = scope.rank(&n.input[0]) else { continue };
            let axis = if axis < 0 { axis + rank as i64 } else { axis };
            if axis < 0 || axis + 1 >= rank as i64 {
                continue;
            }
            plans.push((i, axis));
        }
    }
    let g = model.graph_mut();
    let count = plans.len();
    // Back to front, so that the indices still to come stay valid.
    for (i, axis) in plans.into_iter().rev() {
        let old = g.node[i].clone();
        let (x, y) = (old.input[0].clone(), old.output[0].clone());
        let base = old.name.clone().unwrap_or_else(|| y.clone());
        let mut fresh = |what: &str| names.fresh(&format!("{base}_{what}"));
        let (max, shifted, exp, sum, axes) =
            (fresh("max"), fresh("shifted"), fresh("exp"), fresh("sum"), fresh("axes"));
        let mut node = |op: &str, input: Vec<String>, output: &str| NodeProto {
            op_type: Some(op.into()),
            name: Some(fresh(&op.to_lowercase())),
            input,
            output: vec![output.to_string()],
            ..Default::default()
        };
        // ReduceMax takes its axes as an attribute before opset 18, ReduceSum before 13.
        let mut reduce_max = node("ReduceMax", vec![x.clone()], &max);
        if opset < 18 {
            reduce_max.set_attr_ints("axes", vec![axis]);
        } else {
            reduce_max.input.push(axes.clone());
        }
        reduce_max.set_attr_int("keepdims", 1);
        let mut reduce_sum = node("ReduceSum", vec![exp.clone(), axes.clone()], &sum);
        reduce_sum.set_attr_int("keepdims", 1);
        let rewritten = [
            reduce_max,
            node(ops::SUB, vec![x, max], &shifted),
            node("Exp", vec![shifted], &exp),
            reduce_sum,
            node(ops::DIV, vec![exp.clone(), sum], &y),
        ];
        g.initializer.push(TensorProto {
            name: Some(axes),
            data_type: Some(dtype::INT64),
            dims: vec![1],
            raw_data: Some(axis.to_le_bytes().to_vec().into()),
            ..Default::default()
        });
        g.node.splice(i..=i, rewritten);
    }
    count
}

/// Removes initializers and Constant nodes nothing reads any more (float biases replaced by int32).
pub fn drop_unused(g: &mut GraphProto) {
    fn used(g: &GraphProto, out: &mut HashSet<String>) {
        for n in &g.node {
            out.extend(n.input.iter().cloned());
            for a in &n.attribute {
                for sub in a.g.iter().chain(&a.graphs) {
                    used(sub, out);
                }
            }
        }
        out.extend(g.output.iter().filter_map(|v| v.name.clone()));
    }
    let mut live = HashSet::new();
    used(g, &mut live);
    g.initializer.retain(|t| t.name.as_ref().is_some_and(|n| live.contains(n)));
    g.node.retain(|n| constant_value(n).is_none() || n.output.iter().any(|o| live.contains(o)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
        float_tensor(name.into(), dims.to_vec(), v)
    }

    fn model_of(g: GraphProto) -> Model {
        let opset = crate::onnx::proto::OperatorSetIdProto { domain: Some(String::new()), version: Some(13) };
        let proto = crate::onnx::proto::ModelProto {
            ir_version: Some(8),
            opset_import: vec![opset],
            graph: Some(g),
            ..Default::default()
        };
        Model { proto, path: None }
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(format!("{op}_{output}")),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    #[test]
    fn conv_mul_add_becomes_one_conv_with_scaled_weight_and_shifted_bias() {
        let g = GraphProto {
            node: vec![
                node("Conv", &["x", "w"], "c"),
                node("Mul", &["c", "s"], "m"),
                node("Add", &["a", "m"], "y"),
                node("Relu", &["y"], "r"),
            ],
            initializer: vec![
                t("w", &[2, 1, 1, 2], &[1.0, 2.0, 3.0, 4.0]),
                t("s", &[1, 2, 1, 1], &[10.0, -1.0]),
                t("a", &[2, 1, 1], &[0.5, 7.0]),
            ],
            ..Default::default()
        };
        let mut m = model_of(g);
        let mut names = Names::of_graph(m.graph());
        assert_eq!(fold_conv_affine(&mut m, &mut names), 2);
        let g = m.graph();
        let ops: Vec<_> = g.node.iter().map(|n| n.op_type.clone().unwrap()).collect();
        assert_eq!(ops, ["Conv", "Relu"]);
        assert_eq!(g.node[0].output, ["y"]);
        let consts = crate::onnx::graph::constants(g);
        let w = float_values(consts[g.node[0].input[1].as_str()]).unwrap();
        let b = float_values(consts[g.node[0].input[2].as_str()]).unwrap();
        assert_eq!(w, [10.0, 20.0, -3.0, -4.0]);
        assert_eq!(b, [0.5, 7.0]);
    }

    #[test]
    fn batch_norm_folds_and_shared_or_non_channel_constants_do_not() {
        let g = GraphProto {
            node: vec![
                node("Conv", &["x", "w", "b"], "c"),
                node("BatchNormalization", &["c", "g", "beta", "mean", "var"], "y"),
                node("Conv", &["y", "w"], "c2"),
                // A per-position constant [1,1,1,2] is not per channel: left alone.
                node("Mul", &["c2", "p"], "z"),
            ],
            initializer: vec![
                t("w", &[2, 2, 1, 1], &[1.0, 0.0, 0.0, 1.0]),
                t("b", &[2], &[1.0, 1.0]),
                t("g", &[2], &[2.0, 1.0]),
                t("beta", &[2], &[0.0, 3.0]),
                t("mean", &[2], &[1.0, 0.0]),
                t("var", &[2], &[4.0 - 1e-5, 1.0 - 1e-5]),
                t("p", &[1, 1, 1, 2], &[1.0, 2.0]),
            ],
            ..Default::default()
        };
        let mut m = model_of(g);
        let mut names = Names::of_graph(m.graph());
        assert_eq!(fold_conv_affine(&mut m, &mut names), 1);
        let g = m.graph();
        assert_eq!(g.node.len(), 3);
        let consts = crate::onnx::graph::constants(g);
        let w = float_values(consts[g.node[0].input[1].as_str()]).unwrap();
        let b = float_values(consts[g.node[0].input[2].as_str()]).unwrap();
        // scale 2/sqrt(4) = 1 and 1/sqrt(1) = 1; bias (1 - 1)*1 + 0 = 0 and (1 - 0)*1 + 3 = 4.
        for (x, e) in w.iter().zip([1.0, 0.0, 0.0, 1.0]) {
            assert!((x - e).abs() < 1e-6, "{w:?}");
        }
        for (x, e) in b.iter().zip([0.0, 4.0]) {
            assert!((x - e).abs() < 1e-6, "{b:?}");
        }
        // The second conv still reads the original weight, which is kept.
        assert_eq!(g.node[1].input[1], "w");
    }
}
