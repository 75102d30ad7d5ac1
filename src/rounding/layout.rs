//! How a weight's output rows and reduction columns map onto its elements, and which vectors of
//! a layer's input its rows are multiplied with: im2col patches for Conv (2-D and 1-D kernels),
//! the scattered taps of ConvTranspose, the rows of a matrix product's data input. Op facts
//! (which input is the weight) come from the op table; the attributes read here are the ones
//! that place a patch (strides, pads, dilations, groups).

use crate::onnx::graph::NodeExt;
use crate::onnx::proto::NodeProto;
use crate::ops;

/// Rows (output channels) and columns (the reduction) of a weight, per input group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Conv `[M, C/g, taps...]`: row `o`, column `c·taps + t`; `groups` groups of `M/g` rows, each
    /// reading its own input group.
    Conv {
        /// Output channels `M`.
        out: usize,
        /// Columns `C/g · taps`.
        cols: usize,
        /// Groups.
        groups: usize,
    },
    /// ConvTranspose `[C, M/g, taps...]`: row `o` (group `o / (M/g)`), column `c·taps + t` for the
    /// group's input channel `c`.
    ConvTranspose {
        /// Input channels per group.
        inputs: usize,
        /// Output channels per group.
        outputs: usize,
        /// Kernel taps.
        taps: usize,
        /// Groups.
        groups: usize,
    },
    /// A matrix `[K, N]` (or `[N, K]` when `transposed`): row `n`, column `k`.
    Matrix {
        /// The reduction `K`.
        k: usize,
        /// The outputs `N`.
        n: usize,
        /// Stored `[N, K]`.
        transposed: bool,
    },
}

impl Layout {
    /// Output rows.
    pub fn rows(&self) -> usize {
        match *self {
            Layout::Conv { out, .. } => out,
            Layout::ConvTranspose { outputs, groups, .. } => outputs * groups,
            Layout::Matrix { n, .. } => n,
        }
    }
    /// Columns of one row (the length of an input vector).
    pub fn cols(&self) -> usize {
        match *self {
            Layout::Conv { cols, .. } => cols,
            Layout::ConvTranspose { inputs, taps, .. } => inputs * taps,
            Layout::Matrix { k, .. } => k,
        }
    }
    /// Input groups (each with its own statistics).
    pub fn groups(&self) -> usize {
        match *self {
            Layout::Conv { groups, .. } | Layout::ConvTranspose { groups, .. } => groups,
            Layout::Matrix { .. } => 1,
        }
    }
    /// The input group row `o` reads.
    pub fn group_of_row(&self, o: usize) -> usize {
        match *self {
            Layout::Conv { out, groups, .. } => o / (out / groups).max(1),
            Layout::ConvTranspose { outputs, .. } => o / outputs.max(1),
            Layout::Matrix { .. } => 0,
        }
    }
    /// Flat index (row-major) of the weight element at row `o`, column `col`.
    pub fn flat(&self, o: usize, col: usize) -> usize {
        match *self {
            Layout::Conv { cols, .. } => o * cols + col,
            Layout::ConvTranspose { inputs, outputs, taps, .. } => {
                let (g, local) = (o / outputs, o % outputs);
                let (c, t) = (col / taps, col % taps);
                ((g * inputs + c) * outputs + local) * taps + t
            }
            Layout::Matrix { k, n, transposed } => {
                if transposed {
                    o * k + col
                } else {
                    col * n + o
                }
            }
        }
    }
}

/// A 2-D sliding window (1-D kernels have height 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    /// Padding at the start of each axis, or `None` for SAME padding (resolved per input size).
    begin: Option<[usize; 2]>,
    /// Padding at the end of each axis (NOTSET / VALID).
    end: [usize; 2],
    same_upper: bool,
}

impl Window {
    /// From a node's attributes and its kernel's spatial dims (from the weight, which
    /// `kernel_shape` must agree with).
    fn of(node: &NodeProto, kernel: &[usize]) -> Option<Window> {
        let two = |v: Vec<i64>, fill: i64| -> Option<Vec<usize>> {
            let v: Vec<i64> = if v.is_empty() { vec![fill; kernel.len()] } else { v };
            v.iter().map(|&x| usize::try_from(x).ok()).collect()
        };
        let ints = |name: &str| node.attr_ints(name).ok().flatten().unwrap_or_default();
        let stride = two(ints("strides"), 1)?;
        let dilation = two(ints("dilations"), 1)?;
        let pads = two(ints("pads"), 0)?;
        if stride.len() != kernel.len() || dilation.len() != kernel.len() || stride.contains(&0) {
            return None;
        }
        let (kernel, stride, dilation) = match kernel.len() {
            1 => ([1, kernel[0]], [1, stride[0]], [1, dilation[0]]),
            2 => ([kernel[0], kernel[1]], [stride[0], stride[1]], [dilation[0], dilation[1]]),
            _ => return None,
        };
        let auto_pad = node.attr_string("auto_pad").ok().flatten().unwrap_or_default();
        let (begin, end) = match auto_pad.as_str() {
            "" | "NOTSET" => match pads.len() {
                2 => (Some([0, pads[0]]), [0, pads[1]]),
                4 => (Some([pads[0], pads[1]]), [pads[2], pads[3]]),
                0 => (Some([0, 0]), [0, 0]),
                _ => return None,
            },
            "VALID" => (Some([0, 0]), [0, 0]),
            "SAME_UPPER" | "SAME_LOWER" => (None, [0, 0]),
            _ => return None,
        };
        Some(Window { kernel, stride, dilation, begin, end, same_upper: auto_pad == "SAME_UPPER" })
    }

    /// Padding at the start and output size of a convolution over `size` ([height, width]).
    fn conv_geometry(&self, size: [usize; 2]) -> ([usize; 2], [usize; 2]) {
        let mut begin = [0; 2];
        let mut out = [0; 2];
        for a in 0..2 {
            let span = (self.kernel[a] - 1) * self.dilation[a] + 1;
            let (b, e) = match self.begin {
                Some(b) => (b[a], self.end[a]),
                None => {
                    let o = size[a].div_ceil(self.stride[a]);
                    let total = ((o.saturating_sub(1)) * self.stride[a] + span).saturating_sub(size[a]);
                    let b = if self.same_upper { total / 2 } else { total - total / 2 };
                    (b, total - b)
                }
            };
            begin[a] = b;
            out[a] = (size[a] + b + e).checked_sub(span).map_or(0, |v| v / self.stride[a] + 1);
        }
        (begin, out)
    }
}

/// What a layer's weight rows are multiplied with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vectors {
    /// im2col patches of a `[N, C, (H,) W]` input.
    Conv(Window),
    /// The taps of a `[N, C, (H,) W]` input that reach each output position.
    ConvTranspose(Window, [usize; 2]),
    /// Rows of the data input (`[..., K]`), or its columns (`[K, M]`, Gemm with `transA`).
    Rows { columns: bool },
}

/// A layer whose output error data-aware rounding minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// Its weight's layout.
    pub layout: Layout,
    vectors: Vectors,
}

impl Layer {
    /// The layer `node` forms with a weight of shape `dims` at its weight input, if its rounding
    /// can be chosen from input statistics (2-D and 1-D convolutions, matrix products with a 2-D
    /// weight).
    pub fn of(node: &NodeProto, dims: &[usize]) -> Option<Layer> {
        let spec = ops::spec(node)?;
        spec.weight?;
        let taps: usize = dims.get(2..)?.iter().product();
        if ops::is(node, ops::CONV) {
            let groups = ops::conv::groups(node);
            let window = Window::of(node, dims.get(2..)?)?;
            if !dims[0].is_multiple_of(groups) {
                return None;
            }
            let layout = Layout::Conv { out: dims[0], cols: dims[1] * taps, groups };
            return Some(Layer { layout, vectors: Vectors::Conv(window) });
        }
        if ops::is(node, ops::CONV_TRANSPOSE) {
            let groups = ops::conv::groups(node);
            let window = Window::of(node, dims.get(2..)?)?;
            let no_shape = node.attr("output_shape").is_none();
            let output_padding = node.attr_ints("output_padding").ok().flatten().unwrap_or_default();
            let extra = match output_padding.len() {
                0 => [0, 0],
                1 => [0, usize::try_from(output_padding[0]).ok()?],
                2 => [usize::try_from(output_padding[0]).ok()?, usize::try_from(output_padding[1]).ok()?],
                _ => return None,
            };
            if window.begin.is_none() || !no_shape || !dims[0].is_multiple_of(groups) {
                return None;
            }
            let layout = Layout::ConvTranspose { inputs: dims[0] / groups, outputs: dims[1], taps, groups };
            return Some(Layer { layout, vectors: Vectors::ConvTranspose(window, extra) });
        }
        if dims.len() != 2 {
            return None;
        }
        if ops::is(node, ops::GEMM) {
            let trans = |a: &str| node.attr_int(a).ok().flatten().unwrap_or(0) != 0;
            let (k, n) = if trans("transB") { (dims[1], dims[0]) } else { (dims[0], dims[1]) };
            let layout = Layout::Matrix { k, n, transposed: trans("transB") };
            return Some(Layer { layout, vectors: Vectors::Rows { columns: trans("transA") } });
        }
        if ops::is(node, ops::MATMUL) {
            let layout = Layout::Matrix { k: dims[0], n: dims[1], transposed: false };
            return Some(Layer { layout, vectors: Vectors::Rows { columns: false } });
        }
        None
    }

    /// Calls `f(group, vectors, count)` for each input group with up to `max` of the input
    /// vectors of a sample `x` of shape `shape` (row-major `[count, cols]`, evenly spaced over
    /// all of them when there are more), reusing `buf`. `None` when the shape does not fit.
    pub fn for_each_group(
        &self,
        x: &[f32],
        shape: &[usize],
        max: usize,
        buf: &mut Vec<f32>,
        mut f: impl FnMut(usize, &[f32], usize),
    ) -> Option<()> {
        let d = self.layout.cols();
        if x.len() != shape.iter().product::<usize>() {
            return None;
        }
        match self.vectors {
            Vectors::Rows { columns } => {
                let k = d;
                let total = if columns {
                    if shape.len() != 2 || shape[0] != k {
                        return None;
                    }
                    shape[1]
                } else {
                    if shape.last() != Some(&k) {
                        return None;
                    }
                    x.len() / k.max(1)
                };
                let n = total.min(max);
                buf.clear();
                for j in 0..n {
                    let r = pick(j, n, total);
                    if columns {
                        buf.extend((0..k).map(|i| x[i * total + r]));
                    } else {
                        buf.extend_from_slice(&x[r * k..(r + 1) * k]);
                    }
                }
                f(0, buf, n);
            }
            Vectors::Conv(w) | Vectors::ConvTranspose(w, _) => {
                let (batch, channels, size) = match shape.len() {
                    3 => (shape[0], shape[1], [1, shape[2]]),
                    4 => (shape[0], shape[1], [shape[2], shape[3]]),
                    _ => return None,
                };
                let groups = self.layout.groups();
                let per_group = channels / groups.max(1);
                let taps = w.kernel[0] * w.kernel[1];
                if per_group * groups != channels || per_group * taps != d {
                    return None;
                }
                let transpose = match self.vectors {
                    Vectors::ConvTranspose(_, extra) => Some(extra),
                    _ => None,
                };
                let (begin, out) = match transpose {
                    None => w.conv_geometry(size),
                    Some(extra) => {
                        let begin = w.begin.unwrap_or([0, 0]);
                        let mut out = [0; 2];
                        for a in 0..2 {
                            let span = (w.kernel[a] - 1) * w.dilation[a] + 1;
                            out[a] = (w.stride[a] * size[a].saturating_sub(1) + extra[a] + span)
                                .checked_sub(begin[a] + w.end[a])?;
                        }
                        (begin, out)
                    }
                };
                let total = batch * out[0] * out[1];
                let n = total.min(max);
                let plane = size[0] * size[1];
                for g in 0..groups {
                    buf.clear();
                    buf.resize(n * d, 0.0);
                    for j in 0..n {
                        let p = pick(j, n, total);
                        let (b, oy, ox) = (p / (out[0] * out[1]), (p / out[1]) % out[0], p % out[1]);
                        let row = &mut buf[j * d..(j + 1) * d];
                        for c in 0..per_group {
                            let base = (b * channels + g * per_group + c) * plane;
                            for ky in 0..w.kernel[0] {
                                for kx in 0..w.kernel[1] {
                                    let at = match transpose {
                                        None => source(oy, ox, ky, kx, &w, begin, size),
                                        Some(_) => scattered(oy, ox, ky, kx, &w, begin, size),
                                    };
                                    if let Some((iy, ix)) = at {
                                        row[(c * w.kernel[0] + ky) * w.kernel[1] + kx] = x[base + iy * size[1] + ix];
                                    }
                                }
                            }
                        }
                    }
                    f(g, buf, n);
                }
            }
        }
        Some(())
    }
}

/// The `j`-th of `n` positions evenly spread over `total`.
fn pick(j: usize, n: usize, total: usize) -> usize {
    if n == total { j } else { ((j as u128 * total as u128) / n as u128) as usize }
}

/// The input position a convolution's tap `(ky, kx)` reads for output `(oy, ox)`.
fn source(
    oy: usize,
    ox: usize,
    ky: usize,
    kx: usize,
    w: &Window,
    begin: [usize; 2],
    size: [usize; 2],
) -> Option<(usize, usize)> {
    let iy = (oy * w.stride[0] + ky * w.dilation[0]).checked_sub(begin[0]).filter(|&v| v < size[0])?;
    let ix = (ox * w.stride[1] + kx * w.dilation[1]).checked_sub(begin[1]).filter(|&v| v < size[1])?;
    Some((iy, ix))
}

/// The input position whose tap `(ky, kx)` a transposed convolution adds to output `(oy, ox)`:
/// `oy = iy·stride − begin + ky·dilation`.
fn scattered(
    oy: usize,
    ox: usize,
    ky: usize,
    kx: usize,
    w: &Window,
    begin: [usize; 2],
    size: [usize; 2],
) -> Option<(usize, usize)> {
    let axis = |o: usize, k: usize, a: usize| -> Option<usize> {
        let v = (o + begin[a]).checked_sub(k * w.dilation[a])?;
        (v % w.stride[a] == 0).then_some(v / w.stride[a]).filter(|&i| i < size[a])
    };
    Some((axis(oy, ky, 0)?, axis(ox, kx, 1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn conv_node(op: &str, group: i64, strides: &[i64], pads: &[i64], dilations: &[i64]) -> NodeProto {
        let mut n = NodeProto { op_type: Some(op.into()), ..Default::default() };
        n.set_attr_int("group", group);
        n.set_attr_ints("strides", strides.to_vec());
        n.set_attr_ints("pads", pads.to_vec());
        n.set_attr_ints("dilations", dilations.to_vec());
        n
    }

    /// The layer's output at every position, as each row times each input vector: the order in
    /// which `for_each_group` visits positions is `[batch, y, x]`.
    fn through_vectors(layer: &Layer, w: &[f32], x: &[f32], shape: &[usize]) -> Vec<Vec<f32>> {
        let layout = layer.layout;
        let d = layout.cols();
        let mut out = vec![Vec::new(); layout.rows()];
        let mut buf = Vec::new();
        layer
            .for_each_group(x, shape, usize::MAX, &mut buf, |g, xs, n| {
                for o in (0..layout.rows()).filter(|&o| layout.group_of_row(o) == g) {
                    for r in 0..n {
                        out[o].push((0..d).map(|c| w[layout.flat(o, c)] * xs[r * d + c]).sum());
                    }
                }
            })
            .expect("the shape fits");
        out
    }

    #[test]
    fn conv_patches_give_the_convolution_computed_by_scattering() {
        // Grouped, strided, padded, dilated: [N=2, C=4, 7, 6] with W [6, 2, 3, 2], 2 groups.
        let node = conv_node(ops::CONV, 2, &[2, 1], &[1, 0, 2, 1], &[1, 2]);
        let (wd, shape) = ([6usize, 2, 3, 2], [2usize, 4, 7, 6]);
        let w = values(wd.iter().product(), 1);
        let x = values(shape.iter().product(), 2);
        let layer = Layer::of(&node, &wd).unwrap();
        assert_eq!(layer.layout, Layout::Conv { out: 6, cols: 12, groups: 2 });
        let got = through_vectors(&layer, &w, &x, &shape);
        // Output size: (7 + 1 + 2 - 3) / 2 + 1 = 4 rows, (6 + 0 + 1 - 3) / 1 + 1 = 5 columns.
        let (oh, ow) = (4, 5);
        let mut want = vec![vec![0.0f32; 2 * oh * ow]; 6];
        for b in 0..2 {
            for ci in 0..4 {
                for iy in 0..7 {
                    for ix in 0..6 {
                        let v = x[((b * 4 + ci) * 7 + iy) * 6 + ix];
                        for o in (ci / 2) * 3..(ci / 2) * 3 + 3 {
                            for ky in 0..3 {
                                for kx in 0..2 {
                                    let (ty, tx) = (iy as i64 + 1 - ky as i64, ix as i64 - 2 * kx as i64);
                                    if ty < 0 || tx < 0 || ty % 2 != 0 || ty / 2 >= oh as i64 || tx >= ow as i64 {
                                        continue;
                                    }
                                    let p = (b * oh + ty as usize / 2) * ow + tx as usize;
                                    want[o][p] += v * w[((o * 2 + ci % 2) * 3 + ky) * 2 + kx];
                                }
                            }
                        }
                    }
                }
            }
        }
        for (g, wnt) in got.iter().zip(&want) {
            assert_eq!(g.len(), wnt.len());
            for (a, b) in g.iter().zip(wnt) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn conv_transpose_taps_give_the_transposed_convolution() {
        // [1, 4, 3, 5] -> ConvTranspose W [4, 3, 2, 3] (2 groups: 6 outputs), stride 2, pads 1.
        let node = conv_node(ops::CONV_TRANSPOSE, 2, &[2, 2], &[1, 1, 0, 1], &[1, 1]);
        let (wd, shape) = ([4usize, 3, 2, 3], [1usize, 4, 3, 5]);
        let w = values(wd.iter().product(), 3);
        let x = values(shape.iter().product(), 4);
        let layer = Layer::of(&node, &wd).unwrap();
        let got = through_vectors(&layer, &w, &x, &shape);
        // Output: 2·(3−1) + 2 − 1 − 0 = 5 rows, 2·(5−1) + 3 − 1 − 1 = 9 columns.
        let (oh, ow) = (5usize, 9usize);
        let mut want = vec![vec![0.0f32; oh * ow]; 6];
        for ci in 0..4 {
            let g = ci / 2;
            for iy in 0..3 {
                for ix in 0..5 {
                    let v = x[(ci * 3 + iy) * 5 + ix];
                    for ol in 0..3 {
                        for ky in 0..2 {
                            for kx in 0..3 {
                                let (oy, ox) = ((iy * 2 + ky) as i64 - 1, (ix * 2 + kx) as i64 - 1);
                                if oy < 0 || ox < 0 || oy >= oh as i64 || ox >= ow as i64 {
                                    continue;
                                }
                                want[g * 3 + ol][oy as usize * ow + ox as usize] +=
                                    v * w[((ci * 3 + ol) * 2 + ky) * 3 + kx];
                            }
                        }
                    }
                }
            }
        }
        for (g, wnt) in got.iter().zip(&want) {
            assert_eq!(g.len(), wnt.len());
            for (a, b) in g.iter().zip(wnt) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn same_padding_and_matrix_inputs() {
        let mut node = conv_node(ops::CONV, 1, &[2, 2], &[], &[1, 1]);
        node.attribute.retain(|a| a.name.as_deref() != Some("pads"));
        node.set_attr_string("auto_pad", "SAME_UPPER");
        let layer = Layer::of(&node, &[1, 1, 3, 3]).unwrap();
        let x = vec![1.0f32; 7 * 7];
        let mut count = 0;
        layer.for_each_group(&x, &[1, 1, 7, 7], usize::MAX, &mut Vec::new(), |_, _, n| count += n).unwrap();
        assert_eq!(count, 16, "ceil(7 / 2)² outputs");
        // Gemm with transA reads columns; MatMul reads rows of the last axis; an even subsample.
        let mut gemm = NodeProto { op_type: Some(ops::GEMM.into()), ..Default::default() };
        gemm.set_attr_int("transA", 1);
        gemm.set_attr_int("transB", 1);
        let layer = Layer::of(&gemm, &[5, 3]).unwrap();
        assert_eq!(layer.layout, Layout::Matrix { k: 3, n: 5, transposed: true });
        let a: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut seen = Vec::new();
        layer.for_each_group(&a, &[3, 4], 2, &mut Vec::new(), |_, xs, n| seen.push((xs.to_vec(), n))).unwrap();
        assert_eq!(seen, vec![(vec![0.0, 4.0, 8.0, 2.0, 6.0, 10.0], 2)]);
        let matmul = NodeProto { op_type: Some(ops::MATMUL.into()), ..Default::default() };
        let layer = Layer::of(&matmul, &[4, 2]).unwrap();
        assert!(layer.for_each_group(&a, &[3, 4], 8, &mut Vec::new(), |_, _, n| assert_eq!(n, 3)).is_some());
        assert!(layer.for_each_group(&a, &[4, 3], 8, &mut Vec::new(), |_, _, _| ()).is_none(), "K mismatch");
    }
}
