//! The numeric core: scales and zero points, quantized values, their error (4-bit packing is the
//! storage format, in `onnx::tensor`).
//!
//! Guarantees, checked by the tests below: zero is exactly representable; a slice that is all
//! zero or holds one constant value dequantizes exactly; every other value comes back within half
//! a step (`scale / 2`) of where it was, unless it lay outside the range the scale covers.

use serde::Serialize;

mod layout;
mod search;
use layout::{Layout, PanelAt};
pub use search::search_params;

/// Integer type of the quantized values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QType {
    /// Signed 8-bit, -128..=127.
    Int8,
    /// Signed 7-bit values, -64..=63, stored as int8: the weights of ops that ONNX Runtime runs
    /// as u8×s8 integer kernels, which on x86 without VNNI add pairs of products in saturating
    /// 16-bit lanes (255 × 64 × 2 fits, 255 × 127 × 2 does not).
    Int7,
    /// Unsigned 8-bit, 0..=255.
    Uint8,
    /// Signed 4-bit, -8..=7.
    Int4,
    /// Unsigned 4-bit, 0..=15.
    Uint4,
}

impl QType {
    /// The type for `bits` (4 or 8), signed or not.
    pub fn from_bits(bits: u8, signed: bool) -> Option<QType> {
        Some(match (bits, signed) {
            (8, true) => QType::Int8,
            (8, false) => QType::Uint8,
            (4, true) => QType::Int4,
            (4, false) => QType::Uint4,
            _ => return None,
        })
    }
    /// Smallest and largest representable value.
    pub fn range(self) -> (i32, i32) {
        match self {
            QType::Int8 => (-128, 127),
            QType::Int7 => (-64, 63),
            QType::Uint8 => (0, 255),
            QType::Int4 => (-8, 7),
            QType::Uint4 => (0, 15),
        }
    }
    /// Bits per value.
    pub fn bits(self) -> u8 {
        match self {
            QType::Int8 | QType::Int7 | QType::Uint8 => 8,
            QType::Int4 | QType::Uint4 => 4,
        }
    }
    /// Whether the type is signed.
    pub fn signed(self) -> bool {
        matches!(self, QType::Int8 | QType::Int7 | QType::Int4)
    }
    /// Zero point of the symmetric scheme: 0 for signed types, the middle for unsigned ones.
    pub fn symmetric_zero_point(self) -> i32 {
        match self {
            QType::Int8 | QType::Int7 | QType::Int4 => 0,
            QType::Uint8 => 128,
            QType::Uint4 => 8,
        }
    }
    /// The ONNX element type the values are stored as: 4-bit types are widened to 8-bit bytes
    /// unless `native_int4`.
    pub fn onnx_dtype(self, native_int4: bool) -> i32 {
        use crate::onnx::proto::dtype;
        match (self, native_int4) {
            (QType::Int8 | QType::Int7, _) | (QType::Int4, false) => dtype::INT8,
            (QType::Uint8, _) | (QType::Uint4, false) => dtype::UINT8,
            (QType::Int4, true) => dtype::INT4,
            (QType::Uint4, true) => dtype::UINT4,
        }
    }
}

/// How many scales a tensor gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Granularity {
    /// One scale for the whole tensor.
    PerTensor,
    /// One scale per index along `axis`.
    PerAxis {
        /// The channel axis.
        axis: usize,
    },
    /// One scale per `block` consecutive elements along `axis`, for each position on the others.
    Blocked {
        /// The blocked (reduction) axis.
        axis: usize,
        /// Elements per block.
        block: usize,
    },
}

/// Quantized values with their scales and zero points.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    /// One byte per value: two's complement for signed types (4-bit values sign-extended).
    pub values: Vec<u8>,
    /// Scales, in the row-major order of `param_dims`.
    pub scales: Vec<f32>,
    /// Zero points, same layout as `scales`.
    pub zero_points: Vec<i32>,
    /// Shape of `scales`/`zero_points`: empty for per-tensor, `[C]` per-axis, the tensor's shape
    /// with the blocked axis divided (rounded up) by the block size when blocked.
    pub param_dims: Vec<usize>,
}

impl Quantized {
    /// Dequantized value of element `i` whose group (scale index) is `g`.
    pub fn dequantize_at(&self, i: usize, g: usize, qtype: QType) -> f32 {
        let q = decode(self.values[i], qtype);
        (q - self.zero_points[g]) as f32 * self.scales[g]
    }
}

/// The integer held in a value byte.
pub fn decode(byte: u8, qtype: QType) -> i32 {
    if qtype.signed() { byte as i8 as i32 } else { byte as i32 }
}

/// `v.round_ties_even()`, inline: adding and subtracting 1.5·2^23 rounds half to even for
/// |v| < 2^22 (the library's function is a call per value on baseline x86-64). Larger values
/// stay larger than any integer type's range, so they clamp the same.
#[inline(always)]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if v.abs() < 4_194_304.0 { (v + MAGIC) - MAGIC } else { v }
}

/// `fn $name(args) -> ret`, calling the `#[inline(always)]` kernel `$imp` compiled for AVX
/// where the CPU has it, else as built: the kernel then runs 8 floats to a register. Every
/// operation is the same IEEE one either way (Rust never fuses a multiply and an add), so the
/// results are the same bits on any machine.
macro_rules! vectorized {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $ret:ty)? = $imp:path;) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx") {
                #[target_feature(enable = "avx")]
                fn avx($($a: $t),*) $(-> $ret)? {
                    $imp($($a),*)
                }
                // SAFETY: the CPU has AVX (checked just above).
                return unsafe { avx($($a),*) };
            }
            $imp($($a),*)
        }
    };
}
use vectorized;

fn encode(q: i32, qtype: QType) -> u8 {
    if qtype.signed() { q as i8 as u8 } else { q as u8 }
}

/// Walks a row-major tensor of shape `dims` and yields, for each flat index, its group index
/// under `gran`; returns the group count and the groups' shape.
fn groups(dims: &[usize], gran: Granularity) -> (usize, Vec<usize>) {
    match gran {
        Granularity::PerTensor => (1, vec![]),
        Granularity::PerAxis { axis } => (dims[axis], vec![dims[axis]]),
        Granularity::Blocked { axis, block } => {
            let mut d = dims.to_vec();
            d[axis] = dims[axis].div_ceil(block);
            (d.iter().product(), d)
        }
    }
}

/// Calls `f(flat_index_range_start, len, group)` for runs of consecutive elements sharing a group.
fn for_each_run(dims: &[usize], gran: Granularity, mut f: impl FnMut(usize, usize, usize)) {
    let n: usize = dims.iter().product();
    match gran {
        Granularity::PerTensor => f(0, n, 0),
        Granularity::PerAxis { axis } => {
            let inner: usize = dims[axis + 1..].iter().product();
            let a = dims[axis];
            let outer = n.checked_div(inner * a).unwrap_or(0);
            for o in 0..outer {
                for k in 0..a {
                    f((o * a + k) * inner, inner, k);
                }
            }
        }
        Granularity::Blocked { axis, block } => {
            let inner: usize = dims[axis + 1..].iter().product();
            let a = dims[axis];
            let nb = a.div_ceil(block);
            let outer: usize = dims[..axis].iter().product();
            for o in 0..outer {
                for ai in 0..a {
                    let row = (o * a + ai) * inner;
                    let gbase = (o * nb + ai / block) * inner;
                    for j in 0..inner {
                        f(row + j, 1, gbase + j);
                    }
                }
            }
        }
    }
}

/// Group index of every element (for checks and tests; quantization itself streams runs).
#[cfg(test)]
pub fn group_of_each(dims: &[usize], gran: Granularity) -> Vec<usize> {
    let mut out = vec![0; dims.iter().product()];
    for_each_run(dims, gran, |s, len, g| out[s..s + len].fill(g));
    out
}

/// Scale and zero point for values spanning `[min, max]`.
pub fn params_for_range(min: f32, max: f32, qtype: QType, symmetric: bool) -> (f32, i32) {
    let (qmin, qmax) = qtype.range();
    if min == max {
        // Zero or one constant value: a unit step of exactly |c| makes it exact.
        return match min {
            0.0 => (1.0, if symmetric { qtype.symmetric_zero_point() } else { qmin.max(0) }),
            c if symmetric => (c.abs(), qtype.symmetric_zero_point()),
            c if c > 0.0 => (c, qmin.max(0).min(qmax - 1)),
            c => (c.abs(), (qmin + 1).max(1).min(qmax)),
        };
    }
    let (scale, zp) = if symmetric {
        let amax = min.abs().max(max.abs());
        let qpos = (qmax - qmin) / 2;
        (amax / qpos as f32, qtype.symmetric_zero_point())
    } else {
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let scale = (hi - lo) / (qmax - qmin) as f32;
        // Inline rounding: where it differs (|v| >= 2^22, or NaN for a scale that underflowed
        // and is replaced below), the clamp gives the same zero point.
        let zp = round_even(qmin as f32 - lo / scale) as i32;
        (scale, zp.clamp(qmin, qmax))
    };
    if scale > 0.0 && scale.is_finite() {
        (scale, zp)
    } else {
        // The range is below what f32 steps can express: quantize everything to zero.
        (1.0, if symmetric { qtype.symmetric_zero_point() } else { qmin.max(0) })
    }
}

/// Quantizes `data` (row-major, shape `dims`, all finite) to `qtype` with one scale per group of
/// `gran`, each spanning its group's full range (the reference the searched ranges are tested
/// against).
#[cfg(test)]
pub fn quantize(data: &[f32], dims: &[usize], qtype: QType, gran: Granularity, symmetric: bool) -> Quantized {
    let symmetry = if symmetric { Symmetry::Symmetric } else { Symmetry::Asymmetric };
    quantize_searched(data, dims, qtype, gran, symmetry, RangeSearch::Minmax, None)
}

/// Which zero points a weight's scales may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Symmetry {
    /// Zero point 0 (the middle for unsigned types): what integer kernels want.
    Symmetric,
    /// A zero point per scale, the range spanning min..max (widened to hold 0).
    Asymmetric,
    /// Per scale, whichever of the two reconstructs the values with less squared error.
    #[default]
    Auto,
}

/// How each scale's range is chosen from the values it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RangeSearch {
    /// The full range of the values: nothing is clipped.
    Minmax,
    /// The range, shrunk from the full one, whose reconstruction has the least squared error
    /// (clipping a few outliers buys a finer step for all the other values).
    #[default]
    Mse,
}

/// [`quantize_measured`] without its figure (the tests' reference path).
#[cfg(test)]
pub fn quantize_searched(
    data: &[f32],
    dims: &[usize],
    qtype: QType,
    gran: Granularity,
    symmetry: Symmetry,
    search: RangeSearch,
    mean_axis: Option<usize>,
) -> Quantized {
    quantize_measured(data, dims, qtype, gran, symmetry, search, mean_axis).0
}

/// Quantizes `data` (row-major, shape `dims`, all finite) like [`quantize`], but picks each
/// group's scale and zero point with [`search_params`] (the weights' path), and returns the
/// result's [`sqnr_db`] too, measured on the values while they are still grouped (the same
/// figure up to the order of the sums: last digits) instead of in a pass of its own.
pub fn quantize_measured(
    data: &[f32],
    dims: &[usize],
    qtype: QType,
    gran: Granularity,
    symmetry: Symmetry,
    search: RangeSearch,
    mean_axis: Option<usize>,
) -> (Quantized, f64) {
    debug_assert_eq!(data.len(), dims.iter().product::<usize>());
    let (_, param_dims) = groups(dims, gran);
    // Each group's values side by side (a per-axis group along an inner axis is strided).
    let layout = Layout::new(dims, gran);
    let grouped = layout.gather(data);
    let params = match layout.panels(8).filter(|ps| ps.iter().all(|p| search::Panel::fits(p.rows))) {
        // Groups side by side in the tensor: searched a group per lane, where they lie.
        Some(panels) => search_panels(data, &panels, layout.groups(), qtype, symmetry, search),
        None => {
            use rayon::prelude::*;
            (0..layout.groups())
                .into_par_iter()
                .map(|g| search_params(&grouped[layout.range(g)], qtype, symmetry, search))
                .collect()
        }
    };
    let mut values = vec![0u8; data.len()];
    round_groups(&grouped, &mut values, &layout, &params, qtype);
    match (mean_axis, gran) {
        (None, _) => {}
        // One scale for the tensor: keep each output channel's mean.
        (Some(axis), Granularity::PerTensor) => {
            let units = Layout::new(dims, Granularity::PerAxis { axis });
            let mut unit_values = units.gather(&values).into_owned();
            preserve_sums(&units.gather(data), &mut unit_values, &units, &params, qtype);
            values = units.scatter(unit_values);
        }
        // Otherwise each scale's.
        (Some(_), _) => preserve_sums(&grouped, &mut values, &layout, &params, qtype),
    }
    let (signal, noise) = error_sums(&grouped, &values, &layout, &params, qtype);
    let sqnr = if noise == 0.0 { f64::INFINITY } else { 10.0 * (signal / noise).log10() };
    drop(grouped);
    let values = layout.scatter(values);
    let (scales, zero_points) = params.into_iter().unzip();
    (Quantized { values, scales, zero_points, param_dims }, sqnr)
}

/// [`search_params`] of every group of `panels` (as [`Layout::panels`] gives them, covering all
/// `groups` of `data`), in parallel runs of a few hundred columns of a panel.
fn search_panels(
    data: &[f32],
    panels: &[PanelAt],
    groups: usize,
    qtype: QType,
    symmetry: Symmetry,
    search: RangeSearch,
) -> Vec<(f32, i32)> {
    use rayon::prelude::*;
    const RUN: usize = 256;
    let mut params = vec![(0.0f32, 0i32); groups];
    let mut runs = Vec::new();
    let mut rest = &mut params[..];
    for p in panels {
        debug_assert_eq!(p.first, groups - rest.len());
        let (mine, after) = rest.split_at_mut(p.cols);
        for (i, out) in mine.chunks_mut(RUN).enumerate() {
            let (start, stride, rows, cols) = (p.start + i * RUN, p.stride, p.rows, out.len());
            runs.push((search::Panel { data, start, stride, rows, cols }, out));
        }
        rest = after;
    }
    assert!(rest.is_empty(), "the panels cover every group");
    runs.into_par_iter().for_each(|(panel, out)| search::search_panel(panel, qtype, symmetry, search, out));
    params
}

vectorized! {
    /// The sums of squares of the values and of their reconstruction errors (what [`sqnr_db`]
    /// adds up), with `grouped`, `values` in `layout`'s group-major order: four lanes of sums.
    fn error_sums(grouped: &[f32], values: &[u8], layout: &Layout, params: &[(f32, i32)], qtype: QType) -> (f64, f64) =
        error_sums_with;
}

#[inline(always)]
fn error_sums_with(grouped: &[f32], values: &[u8], layout: &Layout, params: &[(f32, i32)], qtype: QType) -> (f64, f64) {
    let signed = qtype.signed();
    let (mut signal, mut noise) = ([0.0f64; 4], [0.0f64; 4]);
    let mut add = |l: usize, x: f32, v: u8, scale: f32, zp: i32| {
        let q = if signed { v as i8 as i32 } else { v as i32 };
        let (x, y) = (x as f64, ((q - zp) as f32 * scale) as f64);
        signal[l] += x * x;
        noise[l] += (x - y) * (x - y);
    };
    for (g, &(scale, zp)) in params.iter().enumerate() {
        let r = layout.range(g);
        let (xs, vs) = (&grouped[r.clone()], &values[r]);
        let (xc, vc) = (xs.chunks_exact(4), vs.chunks_exact(4));
        let (xr, vr) = (xc.remainder(), vc.remainder());
        for (x4, v4) in xc.zip(vc) {
            for l in 0..4 {
                add(l, x4[l], v4[l], scale, zp);
            }
        }
        for (&x, &v) in xr.iter().zip(vr) {
            add(0, x, v, scale, zp);
        }
    }
    ((signal[0] + signal[1]) + (signal[2] + signal[3]), (noise[0] + noise[1]) + (noise[2] + noise[3]))
}

vectorized! {
    /// Rounds each group of `grouped` (in `layout`'s group-major order) with its `params` into
    /// `values`, in the same order.
    fn round_groups(grouped: &[f32], values: &mut [u8], layout: &Layout, params: &[(f32, i32)], qtype: QType) =
        round_groups_with;
}

#[inline(always)]
fn round_groups_with(grouped: &[f32], values: &mut [u8], layout: &Layout, params: &[(f32, i32)], qtype: QType) {
    for (g, &(scale, zp)) in params.iter().enumerate() {
        let r = layout.range(g);
        round_group(&grouped[r.clone()], &mut values[r], scale, zp, qtype);
    }
}

/// Rounds `xs` to `qtype` under one `(scale, zp)` into `out`: the integer nearest `x / scale`
/// (half to even) plus `zp`, clamped to the type's range. Clamping the rounded quotient to the
/// range less `zp` (integers, exact in f32) before adding `zp` gives the same integers.
/// The integer's byte is the low byte of `q + 1.5·2^23` as a float (exact for |q| < 2^22): two's
/// complement for negative `q`, as [`encode`] stores it.
#[inline(always)]
fn round_group(xs: &[f32], out: &mut [u8], scale: f32, zp: i32, qtype: QType) {
    let (qmin, qmax) = qtype.range();
    let (lo, hi) = ((qmin - zp) as f32, (qmax - zp) as f32);
    let shift = zp as f32 + 12_582_912.0;
    for (v, &x) in out.iter_mut().zip(xs) {
        // x / scale is finite or infinite, never NaN (x is finite, scale positive and finite).
        let r = round_even(x / scale);
        let r = if r < lo { lo } else { r };
        let r = if r > hi { hi } else { r };
        *v = (r + shift).to_bits() as u8;
    }
}

vectorized! {
    /// Re-rounds, in each unit of `units` (elements whose rounding errors should sum to zero: the
    /// groups of the scales, or the channels of a per-tensor scale), the values that lay closest
    /// to half a step so the unit's rounding errors sum to (nearly) zero. A layer whose input has
    /// a large mean then sees almost no mean shift from its quantized weights. Each flip moves
    /// one value one step toward the side it was nearest to rounding to, the cheapest flips
    /// first. `data` and `values` are in the units' group-major order; `params` holds a scale
    /// and zero point per unit, or one for them all.
    fn preserve_sums(data: &[f32], values: &mut [u8], units: &Layout, params: &[(f32, i32)], qtype: QType) =
        preserve_sums_with;
}

#[inline(always)]
fn preserve_sums_with(data: &[f32], values: &mut [u8], units: &Layout, params: &[(f32, i32)], qtype: QType) {
    let (mut err, mut cand) = (Vec::new(), Vec::new());
    for u in 0..units.groups() {
        let r = units.range(u);
        let (xs, vs) = (&data[r.clone()], &mut values[r]);
        let (scale, zp) = params[if params.len() == 1 { 0 } else { u }];
        // Rounding error of each value, in steps (positive: rounded down).
        err.clear();
        err.extend(xs.iter().zip(vs.iter()).map(|(&x, &v)| (x / scale) as f64 - (decode(v, qtype) - zp) as f64));
        let k = rounded_sum(&err) as i64;
        if k == 0 {
            continue;
        }
        let up = k > 0;
        // The values that can move that way, without a branch per value: first only those
        // whose error is at least `floor`, set so that about 4k of them pass (the k largest
        // are then among them), all of them if fewer than k do.
        let k_abs = k.unsigned_abs() as usize;
        movable(&err, vs, up, 0.5 - 4.0 * k_abs as f64 / vs.len() as f64, qtype, &mut cand);
        if cand.len() < k_abs {
            movable(&err, vs, up, 0.0, qtype, &mut cand);
        }
        // The `take` cheapest flips: the largest errors, the earlier value first among equals
        // (a total order, so the chosen set is the one a full sort would give).
        let take = k_abs.min(cand.len());
        let cheaper = |a: &usize, b: &usize| err[*b].abs().total_cmp(&err[*a].abs()).then(a.cmp(b));
        if take <= 4 {
            // A few flips (the usual case in a small group): pick them one by one.
            for t in 0..take {
                let m = (t..cand.len()).min_by(|&a, &b| cheaper(&cand[a], &cand[b])).expect("t < take <= len");
                cand.swap(t, m);
            }
        } else if take < cand.len() {
            cand.select_nth_unstable_by(take, cheaper);
        }
        for &j in &cand[..take] {
            vs[j] = encode(decode(vs[j], qtype) + if up { 1 } else { -1 }, qtype);
        }
    }
}

/// Into `cand`, the indices of the values that can move up (or down) one step and were
/// rounded the other way by at least `floor` steps, without a branch per value.
#[inline(always)]
fn movable(err: &[f64], vs: &[u8], up: bool, floor: f64, qtype: QType, cand: &mut Vec<usize>) {
    let (qmin, qmax) = qtype.range();
    let signed = qtype.signed();
    cand.clear();
    // Eight values tested at a time into a mask (few pass), then the passing indices in order.
    for (c, (e8, v8)) in err.chunks(8).zip(vs.chunks(8)).enumerate() {
        let mut mask = 0u32;
        for (l, (&e, &v)) in e8.iter().zip(v8).enumerate() {
            let q = if signed { v as i8 as i32 } else { v as i32 };
            let ok = if up { (e >= floor) & (e > 0.0) & (q < qmax) } else { (-e >= floor) & (e < 0.0) & (q > qmin) };
            mask |= (ok as u32) << l;
        }
        while mask != 0 {
            cand.push(c * 8 + mask.trailing_zeros() as usize);
            mask &= mask - 1;
        }
    }
}

/// `err.iter().sum::<f64>().round()`, the same integer: summed in four lanes (which
/// vectorizes), the sequential sum taken only when the lanes' total lies too near a half for
/// the two to be sure to round alike. Either order's sum is within (n - 1)·2^-53·Σ|e| of the
/// exact one; the margin below is four times their distance apart at most.
#[inline(always)]
fn rounded_sum(err: &[f64]) -> f64 {
    let (mut sums, mut mags) = ([0.0f64; 4], [0.0f64; 4]);
    let chunks = err.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..4 {
            sums[l] += c[l];
            mags[l] += c[l].abs();
        }
    }
    let (mut sum, mut mag) = ((sums[0] + sums[1]) + (sums[2] + sums[3]), (mags[0] + mags[1]) + (mags[2] + mags[3]));
    for &e in rest {
        sum += e;
        mag += e.abs();
    }
    let margin = 4.0 * err.len() as f64 * f64::EPSILON * mag;
    if sum.is_finite() && mag.is_finite() && (sum - sum.floor() - 0.5).abs() > margin {
        sum.round()
    } else {
        err.iter().sum::<f64>().round()
    }
}

/// Signal-to-quantization-noise ratio (dB) of `q` against the `data` it was made from: infinite
/// when the representation is exact.
pub fn sqnr_db(data: &[f32], dims: &[usize], q: &Quantized, qtype: QType, gran: Granularity) -> f64 {
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for_each_run(dims, gran, |s, len, g| {
        for (i, &x) in data.iter().enumerate().skip(s).take(len) {
            let x = x as f64;
            let e = x - q.dequantize_at(i, g, qtype) as f64;
            signal += x * x;
            noise += e * e;
        }
    });
    if noise == 0.0 { f64::INFINITY } else { 10.0 * (signal / noise).log10() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::tensor::{pack_int4, unpack_int4};
    use proptest::prelude::*;

    const ALL: [QType; 5] = [QType::Int8, QType::Int7, QType::Uint8, QType::Int4, QType::Uint4];

    fn roundtrip_ok(data: &[f32], dims: &[usize], qtype: QType, gran: Granularity, sym: bool) -> Result<(), String> {
        let q = quantize(data, dims, qtype, gran, sym);
        let groups = group_of_each(dims, gran);
        for (i, &x) in data.iter().enumerate() {
            let g = groups[i];
            let y = q.dequantize_at(i, g, qtype);
            let s = q.scales[g];
            // Half a step, plus float rounding of the product (a few ulps of the value).
            let tol = s / 2.0 + x.abs().max(y.abs()) * 4.0 * f32::EPSILON;
            if (x - y).abs() > tol {
                return Err(format!("{qtype:?} {gran:?} sym={sym}: x={x} y={y} scale={s} zp={}", q.zero_points[g]));
            }
        }
        Ok(())
    }

    #[test]
    fn rounded_sums_round_as_the_sequential_sum_does() {
        let mut seed = 0x2545_f491_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for n in [1, 3, 4, 5, 32, 33, 2048, 4099] {
            for trial in 0..200 {
                let mut err: Vec<f64> = (0..n).map(|_| next() - 0.5).collect();
                if trial % 3 == 0 {
                    // Put the sequential sum on a half exactly, or within an ulp of one.
                    let s: f64 = err.iter().sum();
                    err[0] += (s.floor() + 0.5) - s + [0.0, 1e-16, -1e-16][trial % 9 / 3];
                }
                if trial % 7 == 0 {
                    err[n / 2] *= 1e3; // a clipped value, many steps off
                }
                assert_eq!(rounded_sum(&err), err.iter().sum::<f64>().round(), "n = {n}, trial {trial}");
            }
        }
    }

    #[test]
    fn groups_side_by_side_are_searched_as_one_by_one() {
        // Blocks along a leading axis, searched a group per lane where they lie: the same bits
        // as each group's own search on its gathered values.
        let mut rng = 0x1234_5679_u32;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng as f32 / u32::MAX as f32 - 0.5
        };
        let shapes: [&[usize]; 5] = [&[70, 21], &[33, 40], &[64, 16], &[2, 45, 9], &[5, 3, 17]];
        for dims in shapes {
            let n: usize = dims.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|i| match i % 97 {
                    0 => 0.0,
                    1 => next() * 1e4,
                    _ => next() * if i % 5 == 0 { 1e-6 } else { 1.0 },
                })
                .collect();
            let last = dims.len() - 1;
            let grans =
                [Granularity::Blocked { axis: 0, block: 32 }, Granularity::Blocked { axis: last - 1, block: 7 }];
            for gran in grans {
                let layout = Layout::new(dims, gran);
                let panels = layout.panels(8).expect("blocks along a leading axis are side by side");
                let grouped = layout.gather(&data);
                for qtype in ALL {
                    for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric, Symmetry::Auto] {
                        for search in [RangeSearch::Minmax, RangeSearch::Mse] {
                            let got = search_panels(&data, &panels, layout.groups(), qtype, symmetry, search);
                            let want: Vec<(f32, i32)> = (0..layout.groups())
                                .map(|g| search_params(&grouped[layout.range(g)], qtype, symmetry, search))
                                .collect();
                            let bits = |v: &[(f32, i32)]| v.iter().map(|&(s, z)| (s.to_bits(), z)).collect::<Vec<_>>();
                            assert_eq!(bits(&got), bits(&want), "{dims:?} {gran:?} {qtype:?} {symmetry:?} {search:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn inline_rounding_is_round_half_to_even() {
        let mut v = vec![0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 4_194_303.5, -4_194_303.5, 4_194_304.5, 1e30, -1e30];
        v.extend((0..100_000).map(|i| (i as f32 - 50_000.0) * 0.013_7));
        for x in v {
            let clamp = |r: f32| (r as i32).saturating_add(3).clamp(-128, 127);
            assert_eq!(clamp(round_even(x)), clamp(x.round_ties_even()), "{x}");
            if x.abs() < 4_194_304.0 {
                assert_eq!(round_even(x), x.round_ties_even(), "{x}");
            }
        }
    }

    #[test]
    fn sqnr_is_infinite_when_exact_and_about_6_db_per_bit() {
        let exact = [0.0, 1.0, -1.0, 0.0];
        let q = quantize(&exact, &[4], QType::Int8, Granularity::PerTensor, true);
        assert_eq!(sqnr_db(&exact, &[4], &q, QType::Int8, Granularity::PerTensor), f64::INFINITY);
        let ramp: Vec<f32> = (0..4096).map(|i| (i as f32 / 4095.0) * 2.0 - 1.0).collect();
        let at = |qtype| {
            let q = quantize(&ramp, &[4096], qtype, Granularity::PerTensor, true);
            sqnr_db(&ramp, &[4096], &q, qtype, Granularity::PerTensor)
        };
        let (s8, s4) = (at(QType::Int8), at(QType::Int4));
        // A uniform signal over the full range: 6.02 dB per bit (minus the symmetric scheme's lost level).
        assert!((s8 - 6.02 * 8.0).abs() < 1.5, "{s8}");
        assert!((s8 - s4 - 6.02 * 4.0).abs() < 2.5, "{s8} {s4}");
    }

    #[test]
    fn the_measured_sqnr_is_sqnr_db_up_to_the_order_of_the_sums() {
        let data: Vec<f32> = (0..24 * 70).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.4) * 0.37).collect();
        let dims = [24, 70];
        let grans = [
            Granularity::PerTensor,
            Granularity::PerAxis { axis: 0 },
            Granularity::PerAxis { axis: 1 },
            Granularity::Blocked { axis: 0, block: 32 },
            Granularity::Blocked { axis: 1, block: 32 },
        ];
        for qtype in ALL {
            for gran in grans {
                for (search, mean) in [(RangeSearch::Minmax, None), (RangeSearch::Mse, Some(1))] {
                    let (q, sqnr) = quantize_measured(&data, &dims, qtype, gran, Symmetry::Auto, search, mean);
                    assert_eq!(q, quantize_searched(&data, &dims, qtype, gran, Symmetry::Auto, search, mean));
                    let want = sqnr_db(&data, &dims, &q, qtype, gran);
                    assert!((sqnr - want).abs() < 1e-9 * want.abs(), "{qtype:?} {gran:?}: {sqnr} vs {want}");
                }
            }
        }
        let exact = [0.0, 1.0, -1.0, 0.0];
        let (_, sqnr) = quantize_measured(
            &exact,
            &[4],
            QType::Int8,
            Granularity::PerTensor,
            Symmetry::Symmetric,
            RangeSearch::Minmax,
            None,
        );
        assert_eq!(sqnr, f64::INFINITY);
    }

    #[test]
    fn zero_is_exact_in_every_scheme() {
        let data = [-1.7f32, 0.0, 0.3, 2.9, 0.0, -0.01];
        for qtype in ALL {
            for sym in [true, false] {
                let q = quantize(&data, &[6], qtype, Granularity::PerTensor, sym);
                assert_eq!(q.dequantize_at(1, 0, qtype), 0.0, "{qtype:?} sym={sym}");
                assert_eq!(q.dequantize_at(4, 0, qtype), 0.0);
            }
        }
    }

    #[test]
    fn all_zero_and_constant_slices_are_exact() {
        // Channel 0 all zero, channel 1 constant positive, channel 2 constant negative.
        let data = [0.0, 0.0, 0.1234567, 0.1234567, -3.3e-5, -3.3e-5];
        for qtype in ALL {
            for sym in [true, false] {
                let q = quantize(&data, &[3, 2], qtype, Granularity::PerAxis { axis: 0 }, sym);
                for (i, &x) in data.iter().enumerate() {
                    assert_eq!(q.dequantize_at(i, i / 2, qtype), x, "{qtype:?} sym={sym} i={i}");
                }
            }
        }
    }

    #[test]
    fn symmetric_int8_uses_127_steps_each_side() {
        let q = quantize(&[-2.0, 1.0, 0.5], &[3], QType::Int8, Granularity::PerTensor, true);
        assert_eq!(q.zero_points, vec![0]);
        assert!((q.scales[0] - 2.0 / 127.0).abs() < 1e-9);
        assert_eq!(decode(q.values[0], QType::Int8), -127);
        assert_eq!(decode(q.values[1], QType::Int8), 64); // 63.5 rounds to even
    }

    #[test]
    fn asymmetric_uint8_spans_min_to_max() {
        let q = quantize(&[-1.0, 3.0], &[2], QType::Uint8, Granularity::PerTensor, false);
        assert!((q.scales[0] - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(q.zero_points[0], 64); // round(255/4) = 63.75 -> 64
        assert_eq!(q.values, vec![0, 255]);
    }

    #[test]
    fn per_axis_groups_follow_the_axis() {
        assert_eq!(group_of_each(&[2, 3], Granularity::PerAxis { axis: 0 }), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(group_of_each(&[2, 3], Granularity::PerAxis { axis: 1 }), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn blocked_groups_split_the_axis_and_keep_the_others() {
        // shape [2, 5], blocks of 2 along axis 1: scale shape [2, 3]
        let g = group_of_each(&[2, 5], Granularity::Blocked { axis: 1, block: 2 });
        assert_eq!(g, vec![0, 0, 1, 1, 2, 3, 3, 4, 4, 5]);
        // shape [5, 2], blocks of 2 along axis 0: scale shape [3, 2]
        let g = group_of_each(&[5, 2], Granularity::Blocked { axis: 0, block: 2 });
        assert_eq!(g, vec![0, 1, 0, 1, 2, 3, 2, 3, 4, 5]);
        let q = quantize(&[0.0; 10], &[5, 2], QType::Int4, Granularity::Blocked { axis: 0, block: 2 }, true);
        assert_eq!(q.param_dims, vec![3, 2]);
    }

    #[test]
    fn int4_packing_puts_the_first_value_in_the_low_nibble() {
        // -1 (0xF), 2, -8 (0x8): bytes 0x2F, 0x08
        let vals = [encode(-1, QType::Int4), encode(2, QType::Int4), encode(-8, QType::Int4)];
        assert_eq!(pack_int4(&vals), vec![0x2F, 0x08]);
        assert_eq!(unpack_int4(&[0x2F, 0x08], 3, true), vals.to_vec());
        assert_eq!(pack_int4(&[15, 0, 1]), vec![0x0F, 0x01]);
    }

    #[test]
    fn hand_computed_values_in_every_granularity() {
        // Per-axis symmetric int4 (-8..7, 7 steps each side): channel 0 max |x| 1.0 -> scale 1/7,
        // -0.3 / (1/7) = -2.1 -> -2; channel 1 max 3.5 -> scale 0.5, 3.5 -> 7.
        let q = quantize(&[1.0, -0.3, 0.0, 3.5], &[2, 2], QType::Int4, Granularity::PerAxis { axis: 0 }, true);
        let ints: Vec<i32> = q.values.iter().map(|&b| decode(b, QType::Int4)).collect();
        assert_eq!(ints, [7, -2, 0, 7]);
        assert_eq!(q.scales, [1.0 / 7.0, 0.5]);
        // Asymmetric uint8 over [0.5, 2.5]: the range is widened to hold 0, scale 2.5/255, zp 0.
        let q = quantize(&[0.5, 2.5], &[2], QType::Uint8, Granularity::PerTensor, false);
        assert_eq!((q.zero_points[0], q.values.clone()), (0, vec![51, 255]));
        // 7-bit weights: -63..63.
        let q = quantize(&[-2.0, 1.5], &[2], QType::Int7, Granularity::PerTensor, true);
        let ints: Vec<i32> = q.values.iter().map(|&b| decode(b, QType::Int7)).collect();
        assert_eq!((q.scales[0], ints), (2.0 / 63.0, vec![-63, 47])); // 47.25
        // Blocks of 2 along axis 1 of [1, 4], symmetric int8: blocks [1, -2] and [4, 0.5].
        let q =
            quantize(&[1.0, -2.0, 4.0, 0.5], &[1, 4], QType::Int8, Granularity::Blocked { axis: 1, block: 2 }, true);
        let ints: Vec<i32> = q.values.iter().map(|&b| decode(b, QType::Int8)).collect();
        assert_eq!(q.scales, [2.0 / 127.0, 4.0 / 127.0]);
        assert_eq!(ints, [64, -127, 127, 16]); // 63.5 -> 64, 15.875 -> 16
    }

    #[test]
    fn ranges_below_what_f32_steps_express_quantize_to_zero() {
        // A range of 1e-45 gives a zero scale: everything maps to zero, never a NaN scale.
        let (scale, zp) = params_for_range(0.0, 1e-45, QType::Int8, true);
        assert_eq!((scale, zp), (1.0, 0));
        let (scale, zp) = params_for_range(-1e-45, 0.0, QType::Uint8, false);
        assert_eq!((scale, zp), (1.0, 0));
    }

    fn mse(data: &[f32], dims: &[usize], q: &Quantized, qtype: QType, gran: Granularity) -> f64 {
        let groups = group_of_each(dims, gran);
        data.iter().enumerate().map(|(i, &x)| ((x - q.dequantize_at(i, groups[i], qtype)) as f64).powi(2)).sum()
    }

    #[test]
    fn an_outlier_is_clipped_when_that_lowers_the_error() {
        // 1000 values spread over ±0.2 and one outlier at 0.8: int4 min-max spends most of its
        // 7 steps a side on the outlier; the search shrinks the range, clips the outlier, and
        // the total error drops.
        let mut data: Vec<f32> = (0..1000).map(|i| ((i * 37 % 1000) as f32 / 1000.0 - 0.5) * 0.4).collect();
        data.push(0.8);
        let dims = [data.len()];
        let g = Granularity::PerTensor;
        let plain = quantize(&data, &dims, QType::Int4, g, true);
        let searched = quantize_searched(&data, &dims, QType::Int4, g, Symmetry::Symmetric, RangeSearch::Mse, None);
        assert!(searched.scales[0] < plain.scales[0] * 0.99, "{} vs {}", searched.scales[0], plain.scales[0]);
        assert_eq!(searched.zero_points, vec![0]);
        assert!(mse(&data, &dims, &searched, QType::Int4, g) < 0.6 * mse(&data, &dims, &plain, QType::Int4, g));
    }

    #[test]
    fn auto_takes_asymmetric_for_one_sided_groups_and_symmetric_for_balanced_ones() {
        // Channel 0 is all positive (asymmetric uses every step), channel 1 spans -1..1 evenly.
        let mut data: Vec<f32> = (0..64).map(|i| 0.2 + i as f32 / 64.0).collect();
        data.extend((0..64).map(|i| (i as f32 - 31.5) / 31.5));
        let g = Granularity::PerAxis { axis: 0 };
        let q = quantize_searched(&data, &[2, 64], QType::Int8, g, Symmetry::Auto, RangeSearch::Minmax, None);
        assert_ne!(q.zero_points[0], 0, "one-sided channel should be asymmetric");
        assert_eq!(q.zero_points[1], 0, "balanced channel should be symmetric");
    }

    #[test]
    fn searched_ranges_keep_zero_and_constants_exact() {
        let data = [0.0, 0.0, 0.1234567, 0.1234567, -3.3e-5, -3.3e-5, -1.0, 0.0];
        for qtype in ALL {
            for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric, Symmetry::Auto] {
                let g = Granularity::PerAxis { axis: 0 };
                let q = quantize_searched(&data, &[4, 2], qtype, g, symmetry, RangeSearch::Mse, None);
                for (i, &x) in data.iter().enumerate() {
                    if x == 0.0 || i < 6 {
                        assert_eq!(q.dequantize_at(i, i / 2, qtype), x, "{qtype:?} {symmetry:?} i={i}");
                    }
                }
                if symmetry == Symmetry::Symmetric {
                    assert!(q.zero_points.iter().all(|&z| z == qtype.symmetric_zero_point()));
                }
            }
        }
    }

    #[test]
    fn mean_preserving_rounding_keeps_each_channel_sum_within_half_a_step() {
        // 16 output channels of 72 values: plain rounding leaves each channel's errors summing
        // to a random walk of a few steps; re-rounding the values nearest half a step brings
        // every channel's sum within half a step, per-channel or under one per-tensor scale.
        let data: Vec<f32> = (0..16 * 72).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.37).collect();
        let dims = [16, 72];
        for gran in [Granularity::PerAxis { axis: 0 }, Granularity::PerTensor] {
            let run = |axis| {
                quantize_searched(&data, &dims, QType::Int8, gran, Symmetry::Symmetric, RangeSearch::Minmax, axis)
            };
            let sums = |q: &Quantized| -> Vec<f64> {
                (0..16)
                    .map(|c| {
                        let g = if gran == Granularity::PerTensor { 0 } else { c };
                        (0..72)
                            .map(|j| (data[c * 72 + j] - q.dequantize_at(c * 72 + j, g, QType::Int8)) as f64)
                            .sum::<f64>()
                            / q.scales[g] as f64
                    })
                    .collect()
            };
            let (plain, kept) = (sums(&run(None)), sums(&run(Some(0))));
            assert!(kept.iter().all(|s| s.abs() <= 0.5 + 1e-3), "{gran:?}: {kept:?}");
            assert!(plain.iter().any(|s| s.abs() > 1.0), "{gran:?}: plain sums too small to test: {plain:?}");
            // Far smaller sums overall.
            let total = |v: &[f64]| v.iter().map(|s| s.abs()).sum::<f64>();
            assert!(total(&plain) > 2.0 * total(&kept), "{plain:?} vs {kept:?}");
        }
    }

    fn gran_strategy(rank: usize) -> impl Strategy<Value = Granularity> {
        prop_oneof![
            Just(Granularity::PerTensor),
            (0..rank).prop_map(|axis| Granularity::PerAxis { axis }),
            (0..rank, 1usize..5).prop_map(|(axis, block)| Granularity::Blocked { axis, block }),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip_error_is_at_most_half_a_step(
            (dims, data, gran) in prop::collection::vec(1usize..5, 1..4).prop_flat_map(|dims| {
                let n: usize = dims.iter().product();
                let rank = dims.len();
                (Just(dims), prop::collection::vec(-1e3f32..1e3, n), gran_strategy(rank))
            }),
            qi in 0usize..ALL.len(),
            sym in any::<bool>(),
        ) {
            roundtrip_ok(&data, &dims, ALL[qi], gran, sym).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn the_search_is_never_worse_than_min_max(
            (dims, data, gran) in prop::collection::vec(1usize..6, 1..4).prop_flat_map(|dims| {
                let n: usize = dims.iter().product();
                let rank = dims.len();
                (Just(dims), prop::collection::vec(-1e3f32..1e3, n), gran_strategy(rank))
            }),
            qi in 0usize..ALL.len(),
        ) {
            let qtype = ALL[qi];
            let auto = quantize_searched(&data, &dims, qtype, gran, Symmetry::Auto, RangeSearch::Mse, None);
            let e_auto = mse(&data, &dims, &auto, qtype, gran);
            for sym in [true, false] {
                let plain = quantize(&data, &dims, qtype, gran, sym);
                let e_plain = mse(&data, &dims, &plain, qtype, gran);
                prop_assert!(e_auto <= e_plain * (1.0 + 1e-9) + 1e-12, "auto {} > min-max {} (sym={})", e_auto, e_plain, sym);
            }
            // Deterministic.
            prop_assert_eq!(quantize_searched(&data, &dims, qtype, gran, Symmetry::Auto, RangeSearch::Mse, None), auto);
        }

        #[test]
        fn int4_pack_roundtrips(vals in prop::collection::vec(-8i32..8, 0..40)) {
            let bytes: Vec<u8> = vals.iter().map(|&v| encode(v, QType::Int4)).collect();
            let packed = pack_int4(&bytes);
            prop_assert_eq!(packed.len(), bytes.len().div_ceil(2));
            prop_assert_eq!(unpack_int4(&packed, bytes.len(), true), bytes);
        }
    }
}
