//! The range search: each group's scale and zero point among the allowed symmetries and, with
//! [`RangeSearch::Mse`], ranges shrunk from the full one, by squared reconstruction error.
//!
//! The candidates are measured side by side: all of them in one pass over the values, [`LANES`]
//! per vector register, each lane summing its own errors in the values' order exactly as one
//! candidate alone would, so the figures (and the choice) are the same bits as measuring them
//! one at a time, while the lanes run in vector registers.

use super::{QType, RangeSearch, Symmetry, params_for_range, round_even};

mod lanes;
pub(super) use lanes::{Panel, search_panel};

/// Values a range search measures its candidates on: all of them up to this many, else an
/// evenly strided subset of about this many (the full range's ends are always kept).
const SEARCH_SAMPLE: usize = 16384;

/// Shrink ratios tried first; the best is then refined in steps of 0.01 either side.
const COARSE_RATIOS: [f32; 11] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5];

/// Refinement steps around the best coarse ratio, in hundredths.
const FINE_STEPS: [i32; 8] = [-4, -3, -2, -1, 1, 2, 3, 4];

/// Candidates measured per pass over the values.
const LANES: usize = 8;

super::vectorized! {
    /// Scale and zero point for the values `xs` of one group: among the allowed symmetries and,
    /// with [`RangeSearch::Mse`], ranges shrunk from the full one, those with the least squared
    /// reconstruction error. The full range of the first allowed symmetry wins ties, so the
    /// result is never worse than min-max and is deterministic.
    pub fn search_params(xs: &[f32], qtype: QType, symmetry: Symmetry, search: RangeSearch) -> (f32, i32) =
        search_group;
}

#[inline(always)]
fn search_group(xs: &[f32], qtype: QType, symmetry: Symmetry, search: RangeSearch) -> (f32, i32) {
    let (lo, hi) = xs.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
    let sym_first = symmetry != Symmetry::Asymmetric;
    let full = params_for_range(lo, hi, qtype, sym_first);
    let schemes: &[bool] = match symmetry {
        Symmetry::Symmetric => &[true],
        Symmetry::Asymmetric => &[false],
        Symmetry::Auto => &[true, false],
    };
    // One min-max candidate is the full range itself, whatever its error.
    if lo == hi || (search == RangeSearch::Minmax && schemes.len() == 1) {
        return full;
    }
    let (qmin, qmax) = qtype.range();
    let sample: Vec<f32>;
    let xs = if xs.len() > SEARCH_SAMPLE {
        sample = xs.iter().step_by(xs.len().div_ceil(SEARCH_SAMPLE)).copied().chain([lo, hi]).collect();
        &sample[..]
    } else {
        xs
    };
    // Candidates are judged in order (ties go to the earlier one): with Mse, a scheme's coarse
    // ratios then its fine ones, scheme after scheme. Fixed arrays: a group may be 32 values.
    let mut best = (f64::INFINITY, full);
    let mut judge = |c: &Cands, range: std::ops::Range<usize>, errs: &[f64]| {
        for i in range {
            if errs[i] < best.0 {
                best = (errs[i], (c.scale[i], c.zp[i]));
            }
        }
    };
    if search == RangeSearch::Minmax {
        let mut c = Cands::new();
        for &sym in schemes {
            c.push_ratios(lo, hi, &[1.0], qtype, sym);
        }
        let errs = c.errors(xs, qmin, qmax);
        judge(&c, 0..c.len, &errs);
        return best.1;
    }
    const N: usize = COARSE_RATIOS.len();
    let mut coarse = Cands::new();
    for &sym in schemes {
        coarse.push_ratios(lo, hi, &COARSE_RATIOS, qtype, sym);
    }
    let coarse_err = coarse.errors(xs, qmin, qmax);
    // Each scheme's best coarse ratio, refined in hundredths either side.
    let mut fine = Cands::new();
    let mut fine_ends = [0usize; 2];
    for (s, &sym) in schemes.iter().enumerate() {
        let mut local = (f64::INFINITY, 1.0f32);
        for (&e, &r) in coarse_err[s * N..(s + 1) * N].iter().zip(&COARSE_RATIOS) {
            if e < local.0 {
                local = (e, r);
            }
        }
        let (mut ratios, mut n) = ([0.0f32; FINE_STEPS.len()], 0);
        for k in FINE_STEPS {
            let r = local.1 + k as f32 * 0.01;
            if r < 1.0 && r > 0.3 {
                ratios[n] = r;
                n += 1;
            }
        }
        fine.push_ratios(lo, hi, &ratios[..n], qtype, sym);
        fine_ends[s] = fine.len;
    }
    let fine_err = fine.errors(xs, qmin, qmax);
    for s in 0..schemes.len() {
        judge(&coarse, s * N..(s + 1) * N, &coarse_err);
        judge(&fine, if s == 0 { 0 } else { fine_ends[s - 1] }..fine_ends[s], &fine_err);
    }
    best.1
}

/// Most candidates measured together: every coarse ratio of both schemes.
const MAX_CANDS: usize = 2 * COARSE_RATIOS.len();

/// Candidate ranges side by side: the scale and zero point of each.
struct Cands {
    scale: [f32; MAX_CANDS],
    zp: [i32; MAX_CANDS],
    len: usize,
}

impl Cands {
    fn new() -> Cands {
        Cands { scale: [1.0; MAX_CANDS], zp: [0; MAX_CANDS], len: 0 }
    }

    /// Appends `params_for_range(lo * r, hi * r, qtype, sym)` for each ratio `r`: the same
    /// arithmetic without its branches, which it takes instead when a range is degenerate.
    #[inline(always)]
    fn push_ratios(&mut self, lo: f32, hi: f32, ratios: &[f32], qtype: QType, sym: bool) {
        let (qmin, qmax) = qtype.range();
        let at = self.len..self.len + ratios.len();
        let (scale, zp) = (&mut self.scale[at.clone()], &mut self.zp[at]);
        let mut degenerate = false;
        let lanes = scale.iter_mut().zip(zp.iter_mut()).zip(ratios);
        if sym {
            let (qpos, zero) = (((qmax - qmin) / 2) as f32, qtype.symmetric_zero_point());
            for ((s, z), &r) in lanes {
                let (min, max) = (lo * r, hi * r);
                (*s, *z) = (min.abs().max(max.abs()) / qpos, zero);
                let usable = (*s > 0.0) & (*s < f32::INFINITY);
                degenerate |= (min == max) | !usable;
            }
        } else {
            let steps = (qmax - qmin) as f32;
            for ((s, z), &r) in lanes {
                let (min, max) = (lo * r, hi * r);
                let (l, h) = (min.min(0.0), max.max(0.0));
                *s = (h - l) / steps;
                *z = (round_even(qmin as f32 - l / *s) as i32).clamp(qmin, qmax);
                let usable = (*s > 0.0) & (*s < f32::INFINITY);
                degenerate |= (min == max) | !usable;
            }
        }
        if degenerate {
            for ((s, z), &r) in scale.iter_mut().zip(zp.iter_mut()).zip(ratios) {
                (*s, *z) = params_for_range(lo * r, hi * r, qtype, sym);
            }
        }
        self.len += ratios.len();
    }

    /// Squared reconstruction error of `xs` under each candidate, as [`sq_error_one`] measures
    /// it: every candidate in one pass over the values, [`LANES`] per register.
    #[inline(always)]
    fn errors(&self, xs: &[f32], qmin: i32, qmax: i32) -> [f64; MAX_CANDS] {
        match self.len.div_ceil(LANES) {
            0 => [0.0; MAX_CANDS],
            1 => self.errors_in::<1>(xs, qmin, qmax),
            2 => self.errors_in::<2>(xs, qmin, qmax),
            _ => self.errors_in::<{ MAX_CANDS.div_ceil(LANES) }>(xs, qmin, qmax),
        }
    }

    /// [`Cands::errors`] with the candidates in `K` registers of [`LANES`].
    #[inline(always)]
    fn errors_in<const K: usize>(&self, xs: &[f32], qmin: i32, qmax: i32) -> [f64; MAX_CANDS] {
        let mut lanes = Lanes::<K> {
            scale: [[1.0; LANES]; K],
            inv: [[1.0; LANES]; K],
            lo: [[0.0; LANES]; K],
            hi: [[0.0; LANES]; K],
        };
        for k in 0..K {
            for l in 0..LANES {
                // Spare lanes repeat the last candidate; their sums are dropped.
                let i = (k * LANES + l).min(self.len - 1);
                let (scale, zp) = (self.scale[i], self.zp[i]);
                lanes.scale[k][l] = scale;
                lanes.inv[k][l] = 1.0 / scale;
                (lanes.lo[k][l], lanes.hi[k][l]) = ((qmin - zp) as f32, (qmax - zp) as f32);
            }
        }
        let errs = lanes.errors(xs);
        let mut out = [0.0; MAX_CANDS];
        for (i, o) in out.iter_mut().enumerate().take(self.len) {
            *o = errs[i / LANES][i % LANES];
        }
        out
    }
}

/// `K` registers of [`LANES`] candidates: scale, its reciprocal, and the integer bounds less the
/// zero point. The registers are independent sums, so a pass over the values keeps the core's
/// adders busy instead of waiting on one sum's latency.
struct Lanes<const K: usize> {
    scale: [[f32; LANES]; K],
    inv: [[f32; LANES]; K],
    lo: [[f32; LANES]; K],
    hi: [[f32; LANES]; K],
}

/// Adding and subtracting 1.5·2^23 rounds to an integer, half to even, for |v| < 2^22.
const MAGIC: f32 = 12_582_912.0;

impl<const K: usize> Lanes<K> {
    /// Squared error of `xs` under each lane's candidate: per lane, an `f32` sum per 1024
    /// values, those sums added in `f64`.
    #[inline(always)]
    fn errors(&self, xs: &[f32]) -> [[f64; LANES]; K] {
        #[cfg(target_arch = "x86_64")]
        {
            // Two registers of candidates in one 512-bit one: worth it from two up.
            if K >= 2 && std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked just above).
                return unsafe { self.errors_avx512(xs) };
            }
            if std::arch::is_x86_feature_detected!("avx") {
                // SAFETY: the CPU has AVX (checked just above).
                return unsafe { self.errors_avx(xs) };
            }
        }
        self.errors_portable(xs)
    }

    /// [`Lanes::errors_avx`] with two of its registers side by side in one 512-bit register
    /// (the last one twice when `K` is odd, its second sums dropped): the same operations in
    /// the same order on each lane, so the same bits, in about half the instructions.
    // One index walks the pairs' registers side by side.
    #[allow(clippy::needless_range_loop)]
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn errors_avx512(&self, xs: &[f32]) -> [[f64; LANES]; K] {
        use std::arch::x86_64::*;
        const { assert!(LANES == 8) };
        let pairs = K.div_ceil(2);
        let zero = _mm512_setzero_ps();
        let (mut inv, mut lo, mut hi, mut scale) = ([zero; K], [zero; K], [zero; K], [zero; K]);
        for j in 0..pairs {
            let (a, b) = (2 * j, (2 * j + 1).min(K - 1));
            let join = |v: &[[f32; LANES]; K]| {
                let mut both = [0.0f32; 2 * LANES];
                both[..LANES].copy_from_slice(&v[a]);
                both[LANES..].copy_from_slice(&v[b]);
                both
            };
            let (i16, l16, h16, s16) = (join(&self.inv), join(&self.lo), join(&self.hi), join(&self.scale));
            // SAFETY: each array holds the 16 floats an unaligned 512-bit load reads.
            unsafe {
                inv[j] = _mm512_loadu_ps(i16.as_ptr());
                lo[j] = _mm512_loadu_ps(l16.as_ptr());
                hi[j] = _mm512_loadu_ps(h16.as_ptr());
                scale[j] = _mm512_loadu_ps(s16.as_ptr());
            }
        }
        let magic = _mm512_set1_ps(MAGIC);
        let mut e = [[0.0f64; LANES]; K];
        for chunk in xs.chunks(1024) {
            let mut c = [zero; K];
            for &x in chunk {
                let x = _mm512_set1_ps(x);
                for j in 0..pairs {
                    // As in `errors_avx`: max(lo, v), then min(hi, v), the same operand order.
                    let v = _mm512_min_ps(hi[j], _mm512_max_ps(lo[j], _mm512_mul_ps(x, inv[j])));
                    let q = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
                    let d = _mm512_sub_ps(x, _mm512_mul_ps(q, scale[j]));
                    c[j] = _mm512_add_ps(c[j], _mm512_mul_ps(d, d));
                }
            }
            for j in 0..pairs {
                let mut sums = [0.0f32; 2 * LANES];
                // SAFETY: `sums` holds the 16 floats an unaligned 512-bit store writes.
                unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), c[j]) };
                for (h, k) in [2 * j, 2 * j + 1].into_iter().enumerate().filter(|&(_, k)| k < K) {
                    for l in 0..LANES {
                        e[k][l] += sums[h * LANES + l] as f64;
                    }
                }
            }
        }
        e
    }

    /// [`Lanes::errors_portable`] with each register's 8 lanes in one AVX register (compiled,
    /// the portable loop holds them in two halves): the same operations in the same order on
    /// each lane, so the same bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    fn errors_avx(&self, xs: &[f32]) -> [[f64; LANES]; K] {
        use std::arch::x86_64::*;
        const { assert!(LANES == 8) };
        let (mut inv, mut lo, mut hi, mut scale) =
            ([_mm256_setzero_ps(); K], [_mm256_setzero_ps(); K], [_mm256_setzero_ps(); K], [_mm256_setzero_ps(); K]);
        for k in 0..K {
            // SAFETY: each array holds the 8 floats an unaligned 256-bit load reads.
            unsafe {
                inv[k] = _mm256_loadu_ps(self.inv[k].as_ptr());
                lo[k] = _mm256_loadu_ps(self.lo[k].as_ptr());
                hi[k] = _mm256_loadu_ps(self.hi[k].as_ptr());
                scale[k] = _mm256_loadu_ps(self.scale[k].as_ptr());
            }
        }
        let magic = _mm256_set1_ps(MAGIC);
        let mut e = [[0.0f64; LANES]; K];
        for chunk in xs.chunks(1024) {
            let mut c = [_mm256_setzero_ps(); K];
            for &x in chunk {
                let x = _mm256_set1_ps(x);
                for k in 0..K {
                    // max(lo, v) is `if v < lo { lo } else { v }`, min(hi, v) `if v > hi { hi } else { v }`.
                    let v = _mm256_min_ps(hi[k], _mm256_max_ps(lo[k], _mm256_mul_ps(x, inv[k])));
                    let q = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
                    let d = _mm256_sub_ps(x, _mm256_mul_ps(q, scale[k]));
                    c[k] = _mm256_add_ps(c[k], _mm256_mul_ps(d, d));
                }
            }
            for k in 0..K {
                let mut sums = [0.0f32; LANES];
                // SAFETY: `sums` holds the 8 floats an unaligned 256-bit store writes.
                unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), c[k]) };
                for l in 0..LANES {
                    e[k][l] += sums[l] as f64;
                }
            }
        }
        e
    }

    // One index walks five arrays side by side.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn errors_portable(&self, xs: &[f32]) -> [[f64; LANES]; K] {
        let mut e = [[0.0f64; LANES]; K];
        for chunk in xs.chunks(1024) {
            let mut c = [[0.0f32; LANES]; K];
            for &x in chunk {
                for k in 0..K {
                    for l in 0..LANES {
                        // `(x * inv).clamp(lo, hi)`, then round half to even (see `sq_error_one`).
                        let v = x * self.inv[k][l];
                        let v = if v < self.lo[k][l] { self.lo[k][l] } else { v };
                        let v = if v > self.hi[k][l] { self.hi[k][l] } else { v };
                        let q = (v + MAGIC) - MAGIC;
                        let d = x - q * self.scale[k][l];
                        c[k][l] += d * d;
                    }
                }
            }
            for k in 0..K {
                for l in 0..LANES {
                    e[k][l] += c[k][l] as f64;
                }
            }
        }
        e
    }
}

/// Squared reconstruction error of `xs` under `(scale, zp)` (rounded through the reciprocal:
/// a search figure, the stored values are rounded as `quantize_searched` does): the reference
/// that [`Cands::errors`] computes several at a time.
#[cfg(test)]
fn sq_error_one(xs: &[f32], scale: f32, zp: i32, qmin: i32, qmax: i32) -> f64 {
    let inv = 1.0 / scale;
    let (lo, hi) = ((qmin - zp) as f32, (qmax - zp) as f32);
    let mut e = 0.0f64;
    for chunk in xs.chunks(1024) {
        let mut c = 0.0f32;
        for &x in chunk {
            // Clamping to integer bounds first gives the same as after rounding; adding and
            // subtracting 1.5·2^23 rounds half to even for |v| < 2^22.
            const MAGIC: f32 = 12_582_912.0;
            let q = ((x * inv).clamp(lo, hi) + MAGIC) - MAGIC;
            let d = x - q * scale;
            c += d * d;
        }
        e += c as f64;
    }
    e
}

/// The search as it was written before the candidates were measured side by side, one
/// candidate at a time: [`search_params`] must choose the same bits.
#[cfg(test)]
fn search_params_one_at_a_time(xs: &[f32], qtype: QType, symmetry: Symmetry, search: RangeSearch) -> (f32, i32) {
    let (lo, hi) = xs.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
    let sym_first = symmetry != Symmetry::Asymmetric;
    if lo == hi {
        return params_for_range(lo, hi, qtype, sym_first);
    }
    let (qmin, qmax) = qtype.range();
    let sample: Vec<f32>;
    let xs = if xs.len() > SEARCH_SAMPLE {
        sample = xs.iter().step_by(xs.len().div_ceil(SEARCH_SAMPLE)).copied().chain([lo, hi]).collect();
        &sample[..]
    } else {
        xs
    };
    let schemes: &[bool] = match symmetry {
        Symmetry::Symmetric => &[true],
        Symmetry::Asymmetric => &[false],
        Symmetry::Auto => &[true, false],
    };
    let mut best = (f64::INFINITY, params_for_range(lo, hi, qtype, sym_first));
    let try_ratio = |r: f32, sym: bool, best: &mut (f64, (f32, i32))| {
        let p = params_for_range(lo * r, hi * r, qtype, sym);
        let e = sq_error_one(xs, p.0, p.1, qmin, qmax);
        if e < best.0 {
            *best = (e, p);
        }
        e
    };
    for &sym in schemes {
        if search == RangeSearch::Minmax {
            try_ratio(1.0, sym, &mut best);
            continue;
        }
        let mut local = (f64::INFINITY, 1.0f32);
        for r in COARSE_RATIOS {
            let e = try_ratio(r, sym, &mut best);
            if e < local.0 {
                local = (e, r);
            }
        }
        for k in FINE_STEPS {
            let r = local.1 + k as f32 * 0.01;
            if r < 1.0 && r > 0.3 {
                try_ratio(r, sym, &mut best);
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [QType; 5] = [QType::Int8, QType::Int7, QType::Uint8, QType::Int4, QType::Uint4];

    #[test]
    fn avx_lanes_sum_as_portable_ones() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            let mut rng = 0x9e37_79b9_u32;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                rng
            };
            for n in [1, 7, 32, 1024, 1025, 5000] {
                let xs: Vec<f32> = (0..n).map(|_| (next() as f32 / u32::MAX as f32 - 0.5) * 3.0).collect();
                let mut l = Lanes::<3> {
                    scale: [[1.0; LANES]; 3],
                    inv: [[1.0; LANES]; 3],
                    lo: [[0.0; LANES]; 3],
                    hi: [[0.0; LANES]; 3],
                };
                for k in 0..3 {
                    for i in 0..LANES {
                        l.scale[k][i] = 0.001 + (next() % 1000) as f32 * 1e-4;
                        l.inv[k][i] = 1.0 / l.scale[k][i];
                        let zp = (next() % 9) as i32 - 4;
                        (l.lo[k][i], l.hi[k][i]) = ((-8 - zp) as f32, (7 - zp) as f32);
                    }
                }
                let portable = l.errors_portable(&xs).map(|r| r.map(f64::to_bits));
                // SAFETY: the CPU has AVX (checked above).
                let avx = unsafe { l.errors_avx(&xs) };
                assert_eq!(avx.map(|r| r.map(f64::to_bits)), portable, "n = {n}");
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    let wide = unsafe { l.errors_avx512(&xs) };
                    assert_eq!(wide.map(|r| r.map(f64::to_bits)), portable, "avx512, n = {n}");
                    // An even count of registers too (no half repeated).
                    let two = Lanes::<2> {
                        scale: [l.scale[0], l.scale[1]],
                        inv: [l.inv[0], l.inv[1]],
                        lo: [l.lo[0], l.lo[1]],
                        hi: [l.hi[0], l.hi[1]],
                    };
                    // SAFETY: as above.
                    let wide = unsafe { two.errors_avx512(&xs) };
                    assert_eq!(
                        wide.map(|r| r.map(f64::to_bits)),
                        two.errors_portable(&xs).map(|r| r.map(f64::to_bits)),
                        "avx512 K=2, n = {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn lanes_sum_each_candidate_as_it_would_alone() {
        let xs: Vec<f32> = (0..5000).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.4) * 0.37).collect();
        let mut c = Cands::new();
        for i in 0..MAX_CANDS {
            (c.scale[i], c.zp[i]) = (0.001 * (i + 1) as f32, i as i32 % 5 - 2);
        }
        c.len = MAX_CANDS;
        let got = c.errors(&xs, -128, 127);
        for ((&s, &z), e) in c.scale.iter().zip(&c.zp).zip(got) {
            assert_eq!(e.to_bits(), sq_error_one(&xs, s, z, -128, 127).to_bits(), "scale {s} zp {z}");
        }
    }

    #[test]
    fn candidates_are_the_ranges_params_for_range_gives() {
        let ranges = [(-1.0f32, 2.0f32), (0.5, 3.0), (-3.0, -0.25), (-1e-45, 1e-45), (0.0, 1e-40), (-7.0, 7.0)];
        for qtype in ALL {
            for sym in [true, false] {
                for (lo, hi) in ranges {
                    let mut c = Cands::new();
                    c.push_ratios(lo, hi, &COARSE_RATIOS, qtype, sym);
                    for (i, &r) in COARSE_RATIOS.iter().enumerate() {
                        let (s, z) = params_for_range(lo * r, hi * r, qtype, sym);
                        assert_eq!((c.scale[i].to_bits(), c.zp[i]), (s.to_bits(), z), "{qtype:?} {sym} {lo} {hi} {r}");
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn the_search_chooses_the_same_bits_as_one_candidate_at_a_time(
            xs in prop::collection::vec(prop_oneof![-1e3f32..1e3, -1e-3f32..1e-3, Just(0.0f32)], 1..300),
            qi in 0usize..ALL.len(),
            si in 0usize..3,
            mse in any::<bool>(),
        ) {
            let symmetry = [Symmetry::Symmetric, Symmetry::Asymmetric, Symmetry::Auto][si];
            let search = if mse { RangeSearch::Mse } else { RangeSearch::Minmax };
            let (a, b) = (search_params(&xs, ALL[qi], symmetry, search), search_params_one_at_a_time(&xs, ALL[qi], symmetry, search));
            prop_assert_eq!((a.0.to_bits(), a.1), (b.0.to_bits(), b.1));
        }
    }
}
