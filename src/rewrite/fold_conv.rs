//! Folding `Conv → BatchNormalization / Mul(c) / Add(c)` chains into the convolution.

use super::*;
use crate::onnx::graph::Names;
use crate::onnx::model::Model;
use std::collections::HashSet;

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

pub(super) fn fold_one_round(model: &mut Model, names: &mut Names) -> usize {
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
