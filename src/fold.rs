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

use std::collections::{HashMap, HashSet};

use crate::analyse::constant_value;
use crate::graph::{Names, node_domain};
use crate::proto::{GraphProto, NodeProto, TensorProto, dtype};
use crate::quantize::float_values;

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
    let other = |n: &NodeProto| -> Option<Vec<f32>> {
        let [a, b] = n.input.as_slice() else { return None };
        let other = if a == x && b != x {
            b
        } else if b == x && a != x {
            a
        } else {
            return None;
        };
        per_channel(consts.get(other.as_str())?, c, rank)
    };
    match op {
        "Mul" => Some(Affine { mul: other(n)?, add: vec![0.0; c] }),
        "Add" => Some(Affine { mul: vec![1.0; c], add: other(n)? }),
        "BatchNormalization" => {
            if n.input.first().map(String::as_str) != Some(x) || n.input.len() != 5 {
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

fn float_tensor(name: String, dims: Vec<i64>, values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name),
        data_type: Some(dtype::FLOAT),
        dims,
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
        ..Default::default()
    }
}

/// Folds per-channel affine ops into the `Conv` before them in the main graph of `g` (see the
/// module docs). Returns the number of nodes absorbed. Unused constants are left for the caller
/// to drop.
pub fn fold_conv_affine(g: &mut GraphProto, names: &mut Names) -> usize {
    let mut absorbed = 0;
    loop {
        let step = fold_one_round(g, names);
        if step == 0 {
            return absorbed;
        }
        absorbed += step;
    }
}

fn fold_one_round(g: &mut GraphProto, names: &mut Names) -> usize {
    let graph_outputs: HashSet<String> = g.output.iter().filter_map(|v| v.name.clone()).collect();
    let readers = crate::graph::readers(g);
    let mut plans: Vec<(usize, usize, Affine)> = Vec::new();
    {
        let consts = crate::graph::constants(g);
        let mut taken = HashSet::new();
        for (i, n) in g.node.iter().enumerate() {
            if n.op_type.as_deref() != Some("Conv") || !node_domain(n).is_empty() || n.output.len() != 1 {
                continue;
            }
            let Some(w) = n.input.get(1).and_then(|w| consts.get(w.as_str())) else { continue };
            if w.data_type != Some(dtype::FLOAT) || w.dims.len() < 3 {
                continue;
            }
            if n.input.get(2).is_some_and(|b| !b.is_empty() && !consts.contains_key(b.as_str())) {
                continue;
            }
            let y = &n.output[0];
            if graph_outputs.contains(y) {
                continue;
            }
            let Some(&[r]) = readers.get(y).map(Vec::as_slice) else { continue };
            if r == crate::graph::SUBGRAPH_READER {
                continue;
            }
            if taken.contains(&r) {
                continue;
            }
            let c = w.dims[0] as usize;
            if let Some(aff) = affine_of(&g.node[r], y, &consts, c, w.dims.len()) {
                taken.insert(r);
                plans.push((i, r, aff));
            }
        }
    }
    if plans.is_empty() {
        return 0;
    }
    let mut new_inits = Vec::new();
    let mut dead = HashSet::new();
    for (i, r, aff) in &plans {
        let consts = crate::graph::constants(g);
        let n = &g.node[*i];
        let w = consts[n.input[1].as_str()];
        let c = w.dims[0] as usize;
        let Ok(mut wv) = float_values(w) else { continue };
        let per = wv.len() / c.max(1);
        let mut bv = match n.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match float_values(consts[b.as_str()]) {
                Ok(v) if v.len() == c => v,
                _ => continue,
            },
            None => vec![0.0; c],
        };
        for o in 0..c {
            for v in &mut wv[o * per..(o + 1) * per] {
                *v *= aff.mul[o];
            }
            bv[o] = bv[o] * aff.mul[o] + aff.add[o];
        }
        let w_dims = w.dims.clone();
        let base = n.name.clone().unwrap_or_else(|| n.output[0].clone());
        let wn = names.fresh(&format!("{base}_W"));
        let bn = names.fresh(&format!("{base}_B"));
        new_inits.push(float_tensor(wn.clone(), w_dims, &wv));
        new_inits.push(float_tensor(bn.clone(), vec![c as i64], &bv));
        let out = g.node[*r].output[0].clone();
        let conv = &mut g.node[*i];
        conv.input.truncate(1);
        conv.input.push(wn);
        conv.input.push(bn);
        conv.output[0] = out;
        dead.insert(*r);
    }
    let count = dead.len();
    let mut k = 0;
    g.node.retain(|_| {
        let keep = !dead.contains(&k);
        k += 1;
        keep
    });
    g.initializer.extend(new_inits);
    count
}

/// Removes initializers and Constant nodes nothing reads any more (float biases replaced by int32).
pub(crate) fn drop_unused(g: &mut GraphProto) {
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
        let mut g = GraphProto {
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
        let mut names = Names::of_graph(&g);
        assert_eq!(fold_conv_affine(&mut g, &mut names), 2);
        let ops: Vec<_> = g.node.iter().map(|n| n.op_type.clone().unwrap()).collect();
        assert_eq!(ops, ["Conv", "Relu"]);
        assert_eq!(g.node[0].output, ["y"]);
        let consts = crate::graph::constants(&g);
        let w = float_values(consts[g.node[0].input[1].as_str()]).unwrap();
        let b = float_values(consts[g.node[0].input[2].as_str()]).unwrap();
        assert_eq!(w, [10.0, 20.0, -3.0, -4.0]);
        assert_eq!(b, [0.5, 7.0]);
    }

    #[test]
    fn batch_norm_folds_and_shared_or_non_channel_constants_do_not() {
        let mut g = GraphProto {
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
        let mut names = Names::of_graph(&g);
        assert_eq!(fold_conv_affine(&mut g, &mut names), 1);
        assert_eq!(g.node.len(), 3);
        let consts = crate::graph::constants(&g);
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
