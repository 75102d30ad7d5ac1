//! Cross-layer equalization: rescaling the channels between two consecutive convolutions so that
//! both weights have the same range per channel, with the float function unchanged.
//!
//! For `Conv A → [link] → Conv B`, where every link op commutes with a positive per-channel
//! scale (`Relu`, `LeakyRelu`, `PRelu`, `Identity`: `f(x / s) = f(x) / s` for `s > 0`), output
//! channel `c` of A can be divided by `s_c` (its weights and bias) and the weights of B that read
//! input channel `c` multiplied by `s_c`: B sees the same values. With `r1_c` the largest
//! magnitude of A's weights for channel `c` and `r2_c` that of B's weights reading it,
//! `s_c = sqrt(r1_c / r2_c)` gives both `sqrt(r1_c · r2_c)`: a depthwise convolution whose
//! channels differ by orders of magnitude (a folded batch norm makes them so) no longer spends
//! a per-tensor scale, or the activation range between the two, on its largest channel.
//! Chains `A → B → C` are equalized pair by pair, a few rounds, as each pair changes the next.
//!
//! Data-free and exact up to float rounding; only convolutions of the main graph with constant
//! weights whose output has that one reader (not a graph output) take part.

use super::*;
use crate::onnx::graph::Names;

/// Rounds over the pairs (each round equalizes every pair once, in graph order).
const ROUNDS: usize = 8;

/// Link ops between the two convolutions: each commutes with a positive per-channel scale.
const LINKS: [&str; 4] = [ops::RELU, "LeakyRelu", "PRelu", ops::IDENTITY];

/// Equalizes the consecutive convolution pairs of `model`'s main graph (see the module docs).
/// Returns the number of pairs.
pub fn equalize_conv_pairs(model: &mut Model, names: &mut Names) -> usize {
    let pairs = find_pairs(model);
    if pairs.is_empty() {
        return 0;
    }
    let mut convs: HashMap<usize, ConvParams> = HashMap::new();
    {
        let consts = fixed_constants(model);
        let g = model.graph();
        for &(a, b) in &pairs {
            for i in [a, b] {
                if let std::collections::hash_map::Entry::Vacant(e) = convs.entry(i) {
                    match ConvParams::load(&g.node[i], &consts) {
                        Some(p) => {
                            e.insert(p);
                        }
                        None => return 0,
                    }
                }
            }
        }
    }
    for _ in 0..ROUNDS {
        for &(a, b) in &pairs {
            let mut pa = convs.remove(&a).expect("loaded above");
            equalize_pair(&mut pa, convs.get_mut(&b).expect("loaded above"));
            convs.insert(a, pa);
        }
    }
    let g = model.graph_mut();
    let mut order: Vec<usize> = convs.keys().copied().collect();
    order.sort_unstable();
    for i in order {
        let p = convs.remove(&i).expect("listed");
        p.store(g, i, names);
    }
    drop_unused(g);
    pairs.len()
}

/// The `(A, B)` node indices of every pair that can be equalized.
fn find_pairs(model: &Model) -> Vec<(usize, usize)> {
    let g = model.graph();
    let consts = fixed_constants(model);
    let graph_outputs: HashSet<&str> = g.output.iter().filter_map(|v| v.name.as_deref()).collect();
    let readers = crate::onnx::graph::readers(g);
    let only_reader = |t: &str| -> Option<usize> {
        if graph_outputs.contains(t) {
            return None;
        }
        match readers.get(t).map(Vec::as_slice) {
            Some(&[r]) if r != crate::onnx::graph::SUBGRAPH_READER => Some(r),
            _ => None,
        }
    };
    let mut pairs = Vec::new();
    for (a, n) in g.node.iter().enumerate() {
        let Some((dims_a, _)) = ConvParams::shape(n, &consts) else { continue };
        let cout = dims_a[0];
        let mut t = n.output[0].as_str();
        let b = loop {
            let Some(r) = only_reader(t) else { break None };
            let m = &g.node[r];
            if !node_domain(m).is_empty() || m.output.len() != 1 || m.input.first().map(String::as_str) != Some(t) {
                break None;
            }
            let op = m.op_type.as_deref().unwrap_or_default();
            if op == ops::CONV {
                break Some(r);
            }
            if !LINKS.contains(&op) || (op == "PRelu" && !prelu_slope_fits(m, &consts, cout, dims_a.len())) {
                break None;
            }
            t = m.output[0].as_str();
        };
        let Some(b) = b else { continue };
        let Some((dims_b, group_b)) = ConvParams::shape(&g.node[b], &consts) else { continue };
        if dims_b[1] * group_b as i64 == cout && dims_b.len() == dims_a.len() {
            pairs.push((a, b));
        }
    }
    pairs
}

/// A `PRelu` slope that is a constant, one value or one per channel: anything else (a slope
/// fed at run time, or broadcast over other axes) is left alone.
fn prelu_slope_fits(n: &NodeProto, consts: &HashMap<&str, &TensorProto>, channels: i64, rank: usize) -> bool {
    n.input
        .get(1)
        .and_then(|s| consts.get(s.as_str()))
        .is_some_and(|t| per_channel(t, channels as usize, rank).is_some())
}

/// Scales output channel `c` of `a` by `1 / s[c]` and the weights of `b` reading it by `s[c]`.
fn apply(a: &mut ConvParams, b: &mut ConvParams, s: &[f32]) {
    let per_a = a.weight.len() / a.cout();
    for (c, &s) in s.iter().enumerate() {
        if !(s.is_finite() && s > 0.0) || s == 1.0 {
            continue;
        }
        for v in &mut a.weight[c * per_a..(c + 1) * per_a] {
            *v /= s;
        }
        a.bias[c] /= s;
        for r in b.reading(c) {
            for v in &mut b.weight[r] {
                *v *= s;
            }
        }
    }
}

/// One equalization step between `a`'s output channels and `b`'s input channels.
fn equalize_pair(a: &mut ConvParams, b: &mut ConvParams) {
    let per_a = a.weight.len() / a.cout();
    let s: Vec<f32> = (0..a.cout())
        .map(|c| {
            let r1 = a.weight[c * per_a..(c + 1) * per_a].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let r2 = b.reading(c).flat_map(|r| b.weight[r].iter()).fold(0.0f32, |m, v| m.max(v.abs()));
            if r1 > 0.0 && r2 > 0.0 { (r1 as f64 / r2 as f64).sqrt() as f32 } else { 1.0 }
        })
        .collect();
    apply(a, b, &s);
}

impl ConvParams {
    /// Index ranges of the weights that read input channel `c`: one run of taps per output
    /// channel of `c`'s group.
    fn reading(&self, c: usize) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        let cin_pg = self.dims[1] as usize;
        let out_pg = self.cout() / self.group;
        let spatial: usize = self.dims[2..].iter().map(|&d| d as usize).product();
        let (g, l) = (c / cin_pg, c % cin_pg);
        (g * out_pg..(g + 1) * out_pg).map(move |o| (o * cin_pg + l) * spatial..(o * cin_pg + l + 1) * spatial)
    }
}
