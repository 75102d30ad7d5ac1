//! Splitting a matrix product's outlier input channels into a small float product.
//!
//! A transformer's activations carry a few channels whose values reach ten or more times the
//! others' (all-MiniLM-L6-v2: one channel of the FFN's GELU output at 24.6 where 99.9% of values
//! stay under 3). One scale per tensor, which DynamicQuantizeLinear and static activation
//! ranges both use, then spends its 256 levels on those channels and crushes the rest. Per input
//! `X` whose channel maxima (observed on samples) put a few channels above
//! [`OUTLIER_RATIO`] times the median channel, each product `Y = X·W` becomes
//!
//! ```text
//! Y = (X ⊙ keep)·W_kept + Gather(X, outliers)·W[outliers]
//! ```
//!
//! exact up to float rounding: `keep` zeroes the outlier channels, `W_kept` is `W` with their
//! rows zeroed, and the second product, a few rows deep, stays float. The first is quantized
//! as usual, on a range the outliers no longer set. For a Gemm the side product is a Gemm
//! whose `C` input is the main product's output, which spares the Add.

// Only static data, which tract observes, finds outliers; without it the split is never run.
#![cfg_attr(not(feature = "tract"), allow(dead_code))]

use std::collections::{BTreeMap, HashMap};

use crate::onnx::graph::{Names, NodeExt};
use crate::onnx::model::Model;
use crate::onnx::proto::{NodeProto, TensorProto, dtype};
use crate::onnx::tensor::{finite_floats, float_tensor, int64_tensor};
use crate::ops;

/// A channel is an outlier when its largest magnitude passes this many times the median
/// channel's.
pub const OUTLIER_RATIO: f32 = 4.0;
/// At most this many outlier channels per input (the largest ones): the float product stays
/// a few rows deep.
pub const MAX_OUTLIERS: usize = 8;

/// What [`split_outlier_channels`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutlierSplit {
    /// Products split.
    pub products: usize,
    /// Distinct inputs whose outlier channels were split off.
    pub inputs: usize,
    /// Outlier channels over those inputs.
    pub channels: usize,
    /// The weights of the float side products, which must stay float.
    #[serde(skip)]
    pub float_weights: Vec<String>,
    /// Observed on random token ids (dynamic quantization without samples), not on samples.
    pub probed: bool,
}

/// The outlier channels of a tensor with channel maxima `absmax`, ascending.
pub fn outlier_channels(absmax: &[f32]) -> Vec<usize> {
    let mut sorted: Vec<f32> = absmax.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.len() < 4 * MAX_OUTLIERS {
        return Vec::new(); // too narrow for a median to mean much
    }
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    if median <= 0.0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..absmax.len()).filter(|&i| absmax[i] > OUTLIER_RATIO * median).collect();
    idx.sort_by(|&a, &b| absmax[b].total_cmp(&absmax[a]));
    idx.truncate(MAX_OUTLIERS);
    idx.sort_unstable();
    idx
}

/// Splits the outlier input channels of every MatMul (2-D constant weight) and Gemm (no
/// `transA`) of the main graph whose input has maxima in `absmax`.
pub fn split_outlier_channels(
    model: &mut Model,
    names: &mut Names,
    absmax: &HashMap<String, Vec<f32>>,
) -> OutlierSplit {
    let mut done = OutlierSplit::default();
    let g = model.graph_mut();
    let readers = crate::onnx::graph::readers(g);
    let inits: HashMap<String, usize> =
        g.initializer.iter().enumerate().filter_map(|(i, t)| Some((t.name.clone()?, i))).collect();
    let graph_inputs: std::collections::HashSet<&str> = g.input.iter().filter_map(|v| v.name.as_deref()).collect();
    // Per input: (keep-mask output, gather output, the nodes computing them).
    let mut split_inputs: BTreeMap<String, (String, String, Vec<NodeProto>)> = BTreeMap::new();
    let mut before: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut after: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    let mut replaced_weights: Vec<(usize, TensorProto)> = Vec::new();
    let mut retarget: HashMap<usize, (String, String)> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        let gemm = ops::is(n, ops::GEMM);
        if !(gemm || ops::is(n, ops::MATMUL)) || n.output.len() != 1 {
            continue;
        }
        let (Some(x), Some(w)) = (n.input.first(), n.input.get(1)) else { continue };
        let Some(&wi) = inits.get(w) else { continue };
        let wt = &g.initializer[wi];
        if wt.data_type != Some(dtype::FLOAT) || wt.dims.len() != 2 || graph_inputs.contains(w.as_str()) {
            continue;
        }
        let trans_b = gemm && n.attr_int("transB").ok().flatten().unwrap_or(0) != 0;
        if gemm && n.attr_int("transA").ok().flatten().unwrap_or(0) != 0 {
            continue;
        }
        let (k, cols) = if trans_b { (wt.dims[1], wt.dims[0]) } else { (wt.dims[0], wt.dims[1]) };
        let Some(maxima) = absmax.get(x).filter(|m| m.len() as i64 == k) else { continue };
        let idx = outlier_channels(maxima);
        if idx.is_empty() || readers.get(w).map(Vec::len) != Some(1) {
            continue;
        }
        let Ok(values) = finite_floats(wt) else { continue };
        let (k, cols) = (k as usize, cols as usize);
        let at = |row: usize, col: usize| if trans_b { col * k + row } else { row * cols + col };
        let mut kept = values.clone();
        let mut side = Vec::with_capacity(idx.len() * cols);
        for &r in &idx {
            for c in 0..cols {
                kept[at(r, c)] = 0.0;
            }
        }
        // The side weight holds the outlier rows, in the same orientation as `W`.
        if trans_b {
            for c in 0..cols {
                side.extend(idx.iter().map(|&r| values[at(r, c)]));
            }
        } else {
            for &r in &idx {
                side.extend((0..cols).map(|c| values[at(r, c)]));
            }
        }
        let base = n.output[0].clone();
        let (xm, xo) = match split_inputs.get(x) {
            Some((xm, xo, _)) => (xm.clone(), xo.clone()),
            None => {
                let keep: Vec<f32> = (0..k).map(|c| if idx.contains(&c) { 0.0 } else { 1.0 }).collect();
                let keep_name = names.fresh(&format!("{x}_inlier_mask"));
                let idx_name = names.fresh(&format!("{x}_outlier_channels"));
                new_inits.push(float_tensor(keep_name.clone(), vec![k as i64], &keep));
                let idx64: Vec<i64> = idx.iter().map(|&c| c as i64).collect();
                new_inits.push(int64_tensor(idx_name.clone(), vec![idx.len() as i64], &idx64));
                let (xm, xo) = (names.fresh(&format!("{x}_inliers")), names.fresh(&format!("{x}_outliers")));
                let mut gather = names.node(&xo, ops::GATHER, vec![x.clone(), idx_name], vec![xo.clone()]);
                gather.set_attr_int("axis", -1);
                let nodes = vec![names.node(&xm, ops::MUL, vec![x.clone(), keep_name], vec![xm.clone()]), gather];
                done.inputs += 1;
                done.channels += idx.len();
                split_inputs.insert(x.clone(), (xm.clone(), xo.clone(), nodes.clone()));
                before.entry(i).or_default().extend(nodes);
                (xm, xo)
            }
        };
        let side_w = names.fresh(&format!("{w}_outlier_rows"));
        let side_dims = if trans_b { vec![cols as i64, idx.len() as i64] } else { vec![idx.len() as i64, cols as i64] };
        new_inits.push(float_tensor(side_w.clone(), side_dims, &side));
        replaced_weights.push((wi, float_tensor(w.clone(), wt.dims.clone(), &kept)));
        let (yi, yo) = (names.fresh(&format!("{base}_inliers")), names.fresh(&format!("{base}_outliers")));
        if gemm {
            // One Gemm adds the side product to the main one (its C input): no separate Add
            // pass over the output.
            let mut side_node = names.node(&yo, ops::GEMM, vec![xo, side_w.clone(), yi.clone()], vec![base.clone()]);
            if trans_b {
                side_node.set_attr_int("transB", 1);
            }
            if let Some(alpha) = n.attr_float("alpha").ok().flatten() {
                side_node.set_attr_float("alpha", alpha);
            }
            after.entry(i).or_default().push(side_node);
        } else {
            let side_node = names.node(&yo, ops::MATMUL, vec![xo, side_w.clone()], vec![yo.clone()]);
            after
                .entry(i)
                .or_default()
                .extend([side_node, names.node(&base, ops::ADD, vec![yi.clone(), yo], vec![base.clone()])]);
        }
        done.float_weights.push(side_w);
        done.products += 1;
        // The main product now reads the inliers and writes `yi`.
        retarget.insert(i, (xm, yi));
    }
    if done.products == 0 {
        return done;
    }
    for (wi, t) in replaced_weights {
        g.initializer[wi] = t;
    }
    g.initializer.extend(new_inits);
    let old = std::mem::take(&mut g.node);
    for (i, mut n) in old.into_iter().enumerate() {
        g.node.extend(before.remove(&i).unwrap_or_default());
        if let Some((xm, yi)) = retarget.remove(&i) {
            n.input[0] = xm;
            n.output[0] = yi;
        }
        g.node.push(n);
        g.node.extend(after.remove(&i).unwrap_or_default());
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_are_the_channels_far_above_the_median_largest_first_at_most_eight() {
        let mut m = vec![1.0f32; 64];
        m[3] = 4.5;
        m[10] = 3.9; // under 4x the median
        assert_eq!(outlier_channels(&m), vec![3]);
        for (i, c) in (20..30).enumerate() {
            m[c] = 10.0 + i as f32;
        }
        // Ten candidates above 4x: the eight largest, in channel order.
        assert_eq!(outlier_channels(&m), (22..30).collect::<Vec<_>>());
        // Too narrow to judge, or all zero: none.
        assert!(outlier_channels(&[1.0, 50.0, 1.0]).is_empty());
        assert!(outlier_channels(&[0.0; 64]).is_empty());
    }
}
