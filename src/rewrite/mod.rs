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

// Merging runs before the outlier split, which observes samples with tract.
#[cfg_attr(not(feature = "tract"), allow(dead_code))]
mod dedupe;
mod equalize;
mod fold_conv;
mod hard_swish;
mod into_conv;
mod outliers;
mod softmax;

use std::collections::{HashMap, HashSet};

use crate::onnx::graph::{Names, NodeExt, node_domain};
use crate::onnx::model::Model;
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto, dtype};
use crate::onnx::tensor::{constant_value, finite_floats, float_tensor};
use crate::ops;
#[cfg(feature = "tract")]
pub use dedupe::merge_duplicate_nodes;
pub use equalize::equalize_conv_pairs;
pub use fold_conv::fold_conv_affine;
use hard_swish::*;
pub use hard_swish::{fuse_hard_swish, hard_swish_chains};
pub use into_conv::fold_affine_into_conv;
use into_conv::*;
pub use outliers::OutlierSplit;
#[cfg(feature = "tract")]
pub use outliers::split_outlier_channels;
pub use softmax::decompose_softmax;

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
    let v = finite_floats(t).ok()?;
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
                    let v = (t.data_type == Some(dtype::FLOAT)).then(|| finite_floats(t).ok()).flatten()?;
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
        let weight = finite_floats(consts[n.input[1].as_str()]).ok()?;
        let bias = match n.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => finite_floats(consts[b.as_str()]).ok()?,
            None => vec![0.0; dims[0] as usize],
        };
        Some(ConvParams { weight, dims: dims.to_vec(), bias, group })
    }

    fn cout(&self) -> usize {
        self.dims[0] as usize
    }

    /// Writes the values as new initializers and points conv `i` of `g` at them. A weight or
    /// bias only this convolution reads keeps its name (the old value moves to a fresh name that
    /// nothing reads), so that the names a user sees in the float model (`exclude`, `include`,
    /// `layer-bits`, the report) still name the folded tensors; a shared one gets a new name.
    fn store(self, g: &mut GraphProto, i: usize, names: &mut Names) {
        let n = &g.node[i];
        let base = n.name.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| n.output[0].clone());
        let old_w = n.input.get(1).cloned().unwrap_or_default();
        let old_b = n.input.get(2).cloned().unwrap_or_default();
        let wn = take_over(g, i, &old_w, names).unwrap_or_else(|| names.fresh(&format!("{base}_W")));
        let bn = take_over(g, i, &old_b, names).unwrap_or_else(|| names.fresh(&format!("{base}_B")));
        let cout = self.cout() as i64;
        g.initializer.push(float_tensor(wn.clone(), self.dims, &self.weight));
        g.initializer.push(float_tensor(bn.clone(), vec![cout], &self.bias));
        let conv = &mut g.node[i];
        conv.input.truncate(1);
        conv.input.push(wn);
        conv.input.push(bn);
    }
}

/// `name` (a constant input of node `i`) for a new value, when node `i` is its only reader in
/// `g` (no other node, subgraph or graph output reads it): the constant now holding it is
/// renamed to a fresh name nothing reads (dropped with the other unused constants).
fn take_over(g: &mut GraphProto, i: usize, name: &str, names: &mut Names) -> Option<String> {
    if name.is_empty() || g.output.iter().any(|o| o.name.as_deref() == Some(name)) {
        return None;
    }
    if crate::onnx::graph::readers(g).get(name).map(Vec::as_slice) != Some(&[i]) {
        return None;
    }
    let dead = names.fresh(&format!("{name}_unfolded"));
    if let Some(t) = g.initializer.iter_mut().find(|t| t.name.as_deref() == Some(name)) {
        t.name = Some(dead);
    } else if let Some(c) =
        g.node.iter_mut().find(|n| constant_value(n).is_some() && n.output.first().map(String::as_str) == Some(name))
    {
        c.output[0] = dead;
    } else {
        return None;
    }
    Some(name.to_string())
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

/// What the prepare step did to the float model before quantization.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// BatchNormalization / per-channel Mul and Add nodes folded into a convolution.
    pub folded_nodes: usize,
    /// Spelled-out hard-swish chains written as one op.
    pub fused_hard_swish: usize,
    /// Softmax nodes over a non-last axis written as Exp / ReduceSum.
    pub decomposed_softmax: usize,
    /// The opset raise done for HardSwish, if any.
    pub upgrade: Option<crate::opset::Upgrade>,
    /// Convolution pairs equalized (cross-layer equalization, when asked for).
    pub equalized_pairs: usize,
}

/// The prepare step: the rewrites a job asks for, in order. `fold` folds affine ops into the
/// convolution before them; `static_rewrites` (static quantization with graph rewrites on) also
/// raises the opset to 14 for HardSwish where the model spells it out, fuses hard-swish, writes
/// a softmax over a middle axis as elementwise ops and folds affine ops into the convolution
/// after them; `equalize` then equalizes consecutive convolutions (`equalize`); `drop_constants`
/// removes the constants nothing reads any more.
pub fn prepare(model: &mut Model, fold: bool, static_rewrites: bool, equalize: bool, drop_constants: bool) -> Prepared {
    let mut done = Prepared::default();
    if static_rewrites && model.opset().is_some_and(|v| v < 14) && hard_swish_chains(model) > 0 {
        // HardSwish (opset 14) is one float op where `x * HardSigmoid(x)` is two, and ONNX
        // Runtime gives each float reader of a quantized tensor its own DequantizeLinear: worth
        // raising the opset for. A model that cannot be raised is left as it is (the upgrade
        // changes nothing when it fails) and gets the two-op form.
        done.upgrade = crate::opset::upgrade(&mut model.proto, 14).ok();
    }
    if !fold {
        return done;
    }
    let mut names = Names::of_graph(model.graph());
    done.folded_nodes = fold_conv_affine(model, &mut names);
    if static_rewrites {
        done.fused_hard_swish = fuse_hard_swish(model, &mut names);
        done.decomposed_softmax = decompose_softmax(model, &mut names);
        done.folded_nodes += fold_affine_into_conv(model, &mut names);
    }
    if equalize {
        done.equalized_pairs = equalize_conv_pairs(model, &mut names);
    }
    // Constants the rewrites replaced (a Mul/Add reordering replaces some without folding).
    if done.folded_nodes > 0 || drop_constants {
        drop_unused(model.graph_mut());
    }
    done
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
        let w = finite_floats(consts[g.node[0].input[1].as_str()]).unwrap();
        let b = finite_floats(consts[g.node[0].input[2].as_str()]).unwrap();
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
        let w = finite_floats(consts[g.node[0].input[1].as_str()]).unwrap();
        let b = finite_floats(consts[g.node[0].input[2].as_str()]).unwrap();
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
