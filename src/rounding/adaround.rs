//! AdaRound-style rounding (Nagel et al., "Up or Down? Adaptive Rounding for Post-Training
//! Quantization", 2020), on the same statistics as [`super::gptq`]: each weight either rounds
//! down or up, chosen by gradient descent on a soft rounding variable `h ∈ [0, 1]` per weight
//! (a stretched sigmoid of a free variable), minimising each row's output error
//! `(w̃ − w)ᵀ H (w̃ − w)` on the layer's input second moments `H` plus a regulariser that pushes
//! every `h` to 0 or 1 as its exponent anneals from 20 to 2. The layer's own output error only
//! (no activation function), so `H` is all it needs. Scales and zero points are kept; a row
//! whose result is worse on `H` than round-to-nearest keeps round-to-nearest.
//!
//! Measured against GPTQ on the real models (BENCHMARKS.md, "Data-aware weights"); GPTQ is the
//! default, this is `weight-rounding = "adaround"`.

use rayon::prelude::*;

use super::gptq::{LayerStats, Refined, encode, param_index, row_blocks};
use crate::quant::{Granularity, QType, Quantized, decode};

/// Gradient steps per block of rows.
const STEPS: usize = 400;
/// Steps before the regulariser starts (AdaRound's warm-up: 20%).
const WARMUP: usize = STEPS / 5;
/// Regulariser weight (AdaRound's λ), against the output error normalised per weight.
const LAMBDA: f32 = 0.01;
/// Adam's step size on the free variables.
const LEARNING_RATE: f32 = 0.02;
/// The sigmoid's stretch: `h = clamp(σ(v)·(ζ − γ) + γ, 0, 1)`.
const ZETA: f32 = 1.1;
/// See [`ZETA`].
const GAMMA: f32 = -0.1;
/// Rows optimised together.
const ROW_BLOCK: usize = 16;

/// Re-chooses the integers of `q` (quantized from `w`, shape `dims`) by adaptive rounding on
/// `stats`; `None` when the statistics do not fit the weight.
pub fn refine(
    w: &[f32],
    dims: &[usize],
    q: &mut Quantized,
    qtype: QType,
    gran: Granularity,
    stats: &LayerStats,
) -> Option<Refined> {
    let layout = stats.layout;
    let (rows, d) = (layout.rows(), layout.cols());
    if rows * d != w.len() || w.len() != q.values.len() || stats.h.len() != layout.groups() * d * d || d == 0 {
        return None;
    }
    let n = stats.vectors.max(1) as f32;
    // Per group: the full symmetric H / n (the statistics fill the lower triangle only).
    let hs: Vec<Vec<f32>> = (0..layout.groups())
        .map(|g| {
            let h = &stats.h[g * d * d..(g + 1) * d * d];
            let mut full = vec![0.0f32; d * d];
            for i in 0..d {
                for j in 0..=i {
                    let v = h[i * d + j] / n;
                    full[i * d + j] = v;
                    full[j * d + i] = v;
                }
            }
            full
        })
        .collect();
    let blocks = row_blocks(layout, ROW_BLOCK);
    let (qmin, qmax) = qtype.range();
    let q_ref = &*q;
    let results: Vec<Vec<Row>> = blocks
        .par_iter()
        .map(|(g, range)| {
            let h = &hs[*g];
            let r = range.len();
            // Per element: flat index, scale, integer bounds less the zero point, floor of w/s.
            let mut flat = vec![0usize; r * d];
            let mut scale = vec![0.0f32; r * d];
            let mut lo = vec![0.0f32; r * d];
            let mut hi = vec![0.0f32; r * d];
            let mut floor = vec![0.0f32; r * d];
            let mut zps = vec![0i32; r * d];
            let mut v = vec![0.0f32; r * d];
            for (k, o) in range.clone().enumerate() {
                for c in 0..d {
                    let e = k * d + c;
                    let i = layout.flat(o, c);
                    let p = param_index(i, dims, gran);
                    let (s, z) = (q_ref.scales[p], q_ref.zero_points[p]);
                    let x = w[i] / s;
                    flat[e] = i;
                    scale[e] = s;
                    zps[e] = z;
                    (lo[e], hi[e]) = ((qmin - z) as f32, (qmax - z) as f32);
                    floor[e] = x.floor();
                    // Start where the soft rounding reproduces w: h = x − floor(x).
                    let frac = ((x - x.floor()) - GAMMA) / (ZETA - GAMMA);
                    let frac = frac.clamp(1e-4, 1.0 - 1e-4);
                    v[e] = (frac / (1.0 - frac)).ln();
                }
            }
            // Normalise the output error per weight, so λ means the same on every layer.
            let mean_diag = (0..d).map(|i| h[i * d + i]).sum::<f32>() / d as f32;
            let mean_s2 = scale.iter().map(|s| s * s).sum::<f32>() / scale.len() as f32;
            let norm = (mean_diag * mean_s2).max(f32::MIN_POSITIVE);
            let (mut m1, mut m2) = (vec![0.0f32; r * d], vec![0.0f32; r * d]);
            let mut err = vec![0.0f32; r * d];
            let mut grad = vec![0.0f32; r * d];
            let (b1, b2) = (0.9f32, 0.999f32);
            for step in 0..STEPS {
                // Soft values and their errors.
                for e in 0..r * d {
                    let hv = soft(v[e]);
                    let qv = (floor[e] + hv).clamp(lo[e], hi[e]);
                    err[e] = scale[e] * qv - w[flat[e]];
                }
                // grad = 2 E H / norm, row by row (H symmetric).
                matmul(&err, h, &mut grad, r, d);
                let beta = if step < WARMUP {
                    None
                } else {
                    let t = (step - WARMUP) as f32 / (STEPS - WARMUP) as f32;
                    Some(20.0 + (2.0 - 20.0) * t)
                };
                let (c1, c2) = (1.0 - b1.powi(step as i32 + 1), 1.0 - b2.powi(step as i32 + 1));
                for e in 0..r * d {
                    let sig = 1.0 / (1.0 + (-v[e]).exp());
                    let stretched = sig * (ZETA - GAMMA) + GAMMA;
                    let hv = stretched.clamp(0.0, 1.0);
                    let qv = floor[e] + hv;
                    let inside_range = qv > lo[e] && qv < hi[e];
                    let mut gh = if inside_range { 2.0 * grad[e] * scale[e] / norm } else { 0.0 };
                    if let Some(beta) = beta {
                        let u = 2.0 * hv - 1.0;
                        gh += LAMBDA * -beta * u.abs().powf(beta - 1.0) * u.signum() * 2.0;
                    }
                    let dv =
                        if stretched > 0.0 && stretched < 1.0 { gh * (ZETA - GAMMA) * sig * (1.0 - sig) } else { 0.0 };
                    m1[e] = b1 * m1[e] + (1.0 - b1) * dv;
                    m2[e] = b2 * m2[e] + (1.0 - b2) * dv * dv;
                    v[e] -= LEARNING_RATE * (m1[e] / c1) / ((m2[e] / c2).sqrt() + 1e-8);
                }
            }
            // Hard rounding, and each row's error with it and with round-to-nearest (f64).
            (0..r)
                .map(|k| {
                    let row = k * d..(k + 1) * d;
                    let chosen: Vec<i32> = row
                        .clone()
                        .map(|e| ((floor[e] + if soft(v[e]) >= 0.5 { 1.0 } else { 0.0 }).clamp(lo[e], hi[e])) as i32)
                        .collect();
                    let delta_chosen: Vec<f64> = row
                        .clone()
                        .zip(&chosen)
                        .map(|(e, &c)| w[flat[e]] as f64 - c as f64 * scale[e] as f64)
                        .collect();
                    let delta_near: Vec<f64> = row
                        .clone()
                        .map(|e| {
                            let near = decode(q_ref.values[flat[e]], qtype) - zps[e];
                            w[flat[e]] as f64 - near as f64 * scale[e] as f64
                        })
                        .collect();
                    let (e_near, e_chosen) = (quadratic(&delta_near, h, d), quadratic(&delta_chosen, h, d));
                    if e_chosen < e_near {
                        let bytes =
                            row.zip(&chosen).map(|(e, &c)| (flat[e], encode((c + zps[e]) as i64, qtype))).collect();
                        (bytes, e_near, e_chosen)
                    } else {
                        (Vec::new(), e_near, e_near)
                    }
                })
                .collect()
        })
        .collect();
    let mut total = Refined { nearest: 0.0, chosen: 0.0 };
    for (bytes, near, chosen) in results.into_iter().flatten() {
        for (i, b) in bytes {
            q.values[i] = b;
        }
        total.nearest += near;
        total.chosen += chosen;
    }
    Some(total)
}

/// Per row: the bytes to write, its output error with round-to-nearest and with the rounding kept.
type Row = (Vec<(usize, u8)>, f64, f64);

/// The soft rounding `h(v)`.
fn soft(v: f32) -> f32 {
    (1.0 / (1.0 + (-v).exp()) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
}

/// `out = a · h` for `a` of `rows × d` and `h` of `d × d` (row-major), through ndarray's product.
fn matmul(a: &[f32], h: &[f32], out: &mut [f32], rows: usize, d: usize) {
    use tract_onnx::prelude::tract_ndarray::{ArrayView2, ArrayViewMut2, linalg::general_mat_mul};
    let a = ArrayView2::from_shape((rows, d), a).expect("rows·d values");
    let h = ArrayView2::from_shape((d, d), h).expect("d·d values");
    let mut o = ArrayViewMut2::from_shape((rows, d), out).expect("rows·d values");
    general_mat_mul(1.0, &a, &h, 0.0, &mut o);
}

/// `δᵀ H δ` in f64.
fn quadratic(delta: &[f64], h: &[f32], d: usize) -> f64 {
    let mut total = 0.0;
    for i in 0..d {
        let mut row = 0.0;
        for j in 0..d {
            row += h[i * d + j] as f64 * delta[j];
        }
        total += delta[i] * row;
    }
    total
}
