//! The range search of groups that lie side by side in the tensor, one group per lane: the
//! blocks along `K` of a `[K, N]` MatMul weight (row `k` of the blocks of columns `n..n + W` is
//! `W` contiguous floats), or its per-column channels. Each lane takes its group's values in
//! their order and does to them exactly what [`search_group`](super::search_group) does to one
//! group (the same `f32` and `f64` operations in the same order, the same candidates judged in
//! the same order), so each lane chooses the same bits; but the per-group work (the range, the
//! candidates, their reciprocals, the judging) runs `W` groups to a register, and the values are
//! read where they lie instead of gathered first.

use super::{COARSE_RATIOS, FINE_STEPS, MAGIC, QType, RangeSearch, SEARCH_SAMPLE, Symmetry, params_for_range};

/// `cols` groups of `rows` values side by side: value `i` of group `c` is
/// `data[start + i * stride + c]`.
#[derive(Clone, Copy)]
pub(in crate::quant) struct Panel<'a> {
    pub data: &'a [f32],
    pub start: usize,
    pub stride: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Panel<'_> {
    /// Whether [`search_panel`] takes these groups: the search would measure all their values
    /// (no sample), so a lane sees exactly what the group's own search would.
    pub fn fits(rows: usize) -> bool {
        (1..=SEARCH_SAMPLE).contains(&rows)
    }
}

/// [`search_params`](super::search_params) of each group of `panel`, into `out` (`panel.cols`
/// of them): the same bits, [`fits`](Panel::fits) provided.
pub(in crate::quant) fn search_panel(
    panel: Panel,
    qtype: QType,
    symmetry: Symmetry,
    search: RangeSearch,
    out: &mut [(f32, i32)],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(k) = Avx512::detect() {
            return each_block::<16, _>(panel, qtype, symmetry, search, out, k);
        }
        if let Some(k) = Avx::detect() {
            return each_block::<8, _>(panel, qtype, symmetry, search, out, k);
        }
    }
    each_block::<8, _>(panel, qtype, symmetry, search, out, Portable)
}

/// Every `W` columns of `panel` through `k`'s [`search_block`]; the last ones, fewer than `W`,
/// copied to a tile whose spare lanes repeat the last column (their results dropped).
#[inline(always)]
fn each_block<const W: usize, K: Kernel<W>>(
    panel: Panel,
    qtype: QType,
    symmetry: Symmetry,
    search: RangeSearch,
    out: &mut [(f32, i32)],
    k: K,
) {
    assert!(Panel::fits(panel.rows) && out.len() == panel.cols && panel.cols > 0);
    assert!(panel.start + (panel.rows - 1) * panel.stride + panel.cols <= panel.data.len());
    let full = panel.cols / W * W;
    for c0 in (0..full).step_by(W) {
        let block = Panel { start: panel.start + c0, cols: W, ..panel };
        out[c0..c0 + W].copy_from_slice(&k.search(block, qtype, symmetry, search));
    }
    if full < panel.cols {
        let n = panel.cols - full;
        let mut tile = vec![0.0f32; panel.rows * W];
        for (i, row) in tile.chunks_exact_mut(W).enumerate() {
            let src = &panel.data[panel.start + i * panel.stride + full..][..n];
            row[..n].copy_from_slice(src);
            row[n..].fill(src[n - 1]);
        }
        let block = Panel { data: &tile, start: 0, stride: W, rows: panel.rows, cols: W };
        out[full..].copy_from_slice(&k.search(block, qtype, symmetry, search)[..n]);
    }
}

/// Candidates, one per lane: scale, its reciprocal, the integer bounds less the zero point (as
/// [`Lanes`](super::Lanes) holds them), and the zero point (an integer, as a float).
#[derive(Clone, Copy)]
struct Cand<const W: usize> {
    scale: [f32; W],
    inv: [f32; W],
    lo: [f32; W],
    hi: [f32; W],
    zp: [f32; W],
}

/// Candidates measured per pass over a block's values.
const PASS: usize = 4;

/// How a block's errors are measured: the same sums, lane by lane, in registers of `W`.
trait Kernel<const W: usize>: Copy {
    /// Squared error of each lane's values under each of `c`'s candidates, as
    /// [`sq_error_one`](super::sq_error_one) sums it.
    fn errors(self, p: Panel, c: [&Cand<W>; PASS]) -> [[f64; W]; PASS];

    /// In the lanes where `valid` is not 0 and `e` is less than `err`: `err = e`, `a = na`,
    /// `b = nb` (one comparison selecting three values: the judging of the candidates).
    fn take_less(
        self,
        err: &mut [f64; W],
        ab: [&mut [f64; W]; 2],
        e: &[f64; W],
        nab: [&[f64; W]; 2],
        valid: &[f64; W],
    ) {
        take_less_portable(err, ab, e, nab, valid)
    }

    /// [`search_group`](super::search_group) of each of the `W` groups of `p`.
    fn search(self, p: Panel, qtype: QType, symmetry: Symmetry, search: RangeSearch) -> [(f32, i32); W];
}

/// The kernel as compiled for the baseline target.
#[derive(Clone, Copy)]
struct Portable;

impl<const W: usize> Kernel<W> for Portable {
    fn errors(self, p: Panel, c: [&Cand<W>; PASS]) -> [[f64; W]; PASS] {
        errors_portable(p, c)
    }
    fn search(self, p: Panel, qtype: QType, symmetry: Symmetry, search: RangeSearch) -> [(f32, i32); W] {
        search_block(self, p, qtype, symmetry, search)
    }
}

/// AVX, which the CPU has: a token only [`Avx::detect`] makes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx(());

#[cfg(target_arch = "x86_64")]
impl Avx {
    fn detect() -> Option<Avx> {
        std::arch::is_x86_feature_detected!("avx").then_some(Avx(()))
    }
}

#[cfg(target_arch = "x86_64")]
impl Kernel<8> for Avx {
    fn errors(self, p: Panel, c: [&Cand<8>; PASS]) -> [[f64; 8]; PASS] {
        // SAFETY: an `Avx` exists only where the CPU has AVX.
        unsafe { errors_avx(p, c) }
    }
    fn take_less(
        self,
        err: &mut [f64; 8],
        ab: [&mut [f64; 8]; 2],
        e: &[f64; 8],
        nab: [&[f64; 8]; 2],
        valid: &[f64; 8],
    ) {
        // SAFETY: an `Avx` exists only where the CPU has AVX.
        unsafe { take_less_avx(err, ab, e, nab, valid) }
    }
    fn search(self, p: Panel, qtype: QType, symmetry: Symmetry, search: RangeSearch) -> [(f32, i32); 8] {
        #[target_feature(enable = "avx")]
        fn run(k: Avx, p: Panel, qtype: QType, symmetry: Symmetry, search: RangeSearch) -> [(f32, i32); 8] {
            search_block(k, p, qtype, symmetry, search)
        }
        // SAFETY: an `Avx` exists only where the CPU has AVX.
        unsafe { run(self, p, qtype, symmetry, search) }
    }
}

/// AVX-512F, which the CPU has: a token only [`Avx512::detect`] makes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx512(());

#[cfg(target_arch = "x86_64")]
impl Avx512 {
    fn detect() -> Option<Avx512> {
        std::arch::is_x86_feature_detected!("avx512f").then_some(Avx512(()))
    }
}

#[cfg(target_arch = "x86_64")]
impl Kernel<16> for Avx512 {
    fn errors(self, p: Panel, c: [&Cand<16>; PASS]) -> [[f64; 16]; PASS] {
        // SAFETY: an `Avx512` exists only where the CPU has AVX-512F.
        unsafe { errors_avx512(p, c) }
    }
    fn take_less(
        self,
        err: &mut [f64; 16],
        ab: [&mut [f64; 16]; 2],
        e: &[f64; 16],
        nab: [&[f64; 16]; 2],
        valid: &[f64; 16],
    ) {
        // SAFETY: an `Avx512` exists only where the CPU has AVX-512F.
        unsafe { take_less_avx512(err, ab, e, nab, valid) }
    }
    fn search(self, p: Panel, qtype: QType, symmetry: Symmetry, search: RangeSearch) -> [(f32, i32); 16] {
        #[target_feature(enable = "avx512f")]
        fn run(k: Avx512, p: Panel, qtype: QType, symmetry: Symmetry, search: RangeSearch) -> [(f32, i32); 16] {
            search_block(k, p, qtype, symmetry, search)
        }
        // SAFETY: an `Avx512` exists only where the CPU has AVX-512F.
        unsafe { run(self, p, qtype, symmetry, search) }
    }
}

/// `search_group` of `W` groups side by side (`p.cols == W`), lane by lane.
#[inline(always)]
fn search_block<const W: usize, K: Kernel<W>>(
    k: K,
    p: Panel,
    qtype: QType,
    symmetry: Symmetry,
    search: RangeSearch,
) -> [(f32, i32); W] {
    debug_assert_eq!(p.cols, W);
    // Each lane's range, as the group's fold finds it (the sign of a zero end aside, which no
    // scale or zero point depends on).
    let (mut lo, mut hi) = ([f32::INFINITY; W], [f32::NEG_INFINITY; W]);
    for i in 0..p.rows {
        let x: &[f32; W] = p.data[p.start + i * p.stride..][..W].try_into().expect("W values");
        for l in 0..W {
            lo[l] = if x[l] < lo[l] { x[l] } else { lo[l] };
            hi[l] = if x[l] > hi[l] { x[l] } else { hi[l] };
        }
    }
    let sym_first = symmetry != Symmetry::Asymmetric;
    let schemes: &[bool] = match symmetry {
        Symmetry::Symmetric => &[true],
        Symmetry::Asymmetric => &[false],
        Symmetry::Auto => &[true, false],
    };
    // The full range is the first scheme's candidate of ratio 1 (`lo * 1.0` is `lo`).
    let first = cand(&lo, &hi, &[1.0; W], qtype, sym_first);
    if search == RangeSearch::Minmax && schemes.len() == 1 {
        return std::array::from_fn(|l| (first.scale[l], first.zp[l] as i32));
    }
    let mut best = Best { err: [f64::INFINITY; W], scale: first.scale.map(f64::from), zp: first.zp.map(f64::from) };
    let all = [1.0; W];
    if search == RangeSearch::Minmax {
        let mut cs = [first; 2];
        for (c, &sym) in cs.iter_mut().zip(schemes) {
            *c = cand(&lo, &hi, &[1.0; W], qtype, sym);
        }
        let errs = errors_of(k, p, &cs[..schemes.len()]);
        for (c, e) in cs.iter().zip(&errs[..schemes.len()]) {
            best.judge(k, c, e, &all);
        }
    } else {
        const N: usize = COARSE_RATIOS.len();
        const F: usize = FINE_STEPS.len();
        let mut coarse = [first; 2 * N];
        for (s, &sym) in schemes.iter().enumerate() {
            for (i, &r) in COARSE_RATIOS.iter().enumerate() {
                if (sym, r) != (sym_first, 1.0) {
                    coarse[s * N + i] = cand(&lo, &hi, &[r; W], qtype, sym);
                }
            }
        }
        let coarse_err = errors_of(k, p, &coarse[..schemes.len() * N]);
        // Each scheme's best coarse ratio per lane, refined in hundredths either side (in the
        // lanes where the refined ratio lies within bounds; the others measure ratio 1, unused).
        let mut fine = [first; 2 * F];
        let mut fine_ok = [[0.0f64; W]; 2 * F];
        for (s, &sym) in schemes.iter().enumerate() {
            let (mut local_e, mut local_r, mut unused) = ([f64::INFINITY; W], [1.0f64; W], [0.0; W]);
            for (e, &r) in coarse_err[s * N..(s + 1) * N].iter().zip(&COARSE_RATIOS) {
                k.take_less(&mut local_e, [&mut local_r, &mut unused], e, [&[r as f64; W], &[0.0; W]], &all);
            }
            for (i, step) in FINE_STEPS.into_iter().enumerate() {
                let mut ratios = [1.0f32; W];
                let ok = &mut fine_ok[s * F + i];
                for l in 0..W {
                    let r = local_r[l] as f32 + step as f32 * 0.01;
                    let valid = (r < 1.0) & (r > 0.3);
                    ok[l] = if valid { 1.0 } else { 0.0 };
                    ratios[l] = if valid { r } else { 1.0 };
                }
                fine[s * F + i] = cand(&lo, &hi, &ratios, qtype, sym);
            }
        }
        let fine_err = errors_of(k, p, &fine[..schemes.len() * F]);
        for s in 0..schemes.len() {
            for i in s * N..(s + 1) * N {
                best.judge(k, &coarse[i], &coarse_err[i], &all);
            }
            for i in s * F..(s + 1) * F {
                best.judge(k, &fine[i], &fine_err[i], &fine_ok[i]);
            }
        }
    }
    // A group of one value (or only equal ones) keeps its full range.
    std::array::from_fn(|l| {
        if lo[l] == hi[l] { (first.scale[l], first.zp[l] as i32) } else { (best.scale[l] as f32, best.zp[l] as i32) }
    })
}

/// Each lane's best candidate so far: the first of the least error (all in `f64`, exactly, so
/// that one comparison selects all three in a register).
struct Best<const W: usize> {
    err: [f64; W],
    scale: [f64; W],
    zp: [f64; W],
}

impl<const W: usize> Best<W> {
    /// Takes candidate `c` (errors `e`) in the lanes where it is valid (`valid` not 0) and has
    /// less error.
    #[inline(always)]
    fn judge<K: Kernel<W>>(&mut self, k: K, c: &Cand<W>, e: &[f64; W], valid: &[f64; W]) {
        let (scale, zp) = (c.scale.map(f64::from), c.zp.map(f64::from));
        k.take_less(&mut self.err, [&mut self.scale, &mut self.zp], e, [&scale, &zp], valid);
    }
}

/// The errors of all of `cs` (at most `2 * COARSE_RATIOS.len()`), [`PASS`] at a time (a short
/// last pass repeats its last candidate).
#[inline(always)]
fn errors_of<const W: usize, K: Kernel<W>>(k: K, p: Panel, cs: &[Cand<W>]) -> [[f64; W]; 2 * COARSE_RATIOS.len()] {
    let mut out = [[0.0; W]; 2 * COARSE_RATIOS.len()];
    for (pass, o) in cs.chunks(PASS).zip(out.chunks_mut(PASS)) {
        let c = std::array::from_fn(|i| &pass[i.min(pass.len() - 1)]);
        let e = k.errors(p, c);
        o[..pass.len()].copy_from_slice(&e[..pass.len()]);
    }
    out
}

/// Per lane `l`, `params_for_range(lo[l] * r[l], hi[l] * r[l], qtype, sym)` (the arithmetic of
/// `Cands::push_ratios`: branch-free, then the lanes whose range is degenerate again one by
/// one), with the reciprocal and bounds the error sums use.
#[inline(always)]
fn cand<const W: usize>(lo: &[f32; W], hi: &[f32; W], r: &[f32; W], qtype: QType, sym: bool) -> Cand<W> {
    let (qmin, qmax) = qtype.range();
    let (fmin, fmax) = (qmin as f32, qmax as f32);
    let mut c = Cand { scale: [1.0; W], inv: [1.0; W], lo: [0.0; W], hi: [0.0; W], zp: [0.0; W] };
    let mut degenerate = [false; W];
    if sym {
        let qpos = ((qmax - qmin) / 2) as f32;
        let zero = qtype.symmetric_zero_point() as f32;
        for l in 0..W {
            let (min, max) = (lo[l] * r[l], hi[l] * r[l]);
            let s = min.abs().max(max.abs()) / qpos;
            c.scale[l] = s;
            c.zp[l] = zero;
            degenerate[l] = (min == max) | !((s > 0.0) & (s < f32::INFINITY));
        }
    } else {
        let steps = (qmax - qmin) as f32;
        for l in 0..W {
            let (min, max) = (lo[l] * r[l], hi[l] * r[l]);
            let (a, b) = (if min < 0.0 { min } else { 0.0 }, if max > 0.0 { max } else { 0.0 });
            let s = (b - a) / steps;
            c.scale[l] = s;
            // `round_even(qmin - a / s) as i32` clamped to the range: where the scale is
            // usable, |a / s| is at most about `steps`, so the float clamp is the same.
            let v = fmin - a / s;
            let z = (v + MAGIC) - MAGIC;
            let z = if z < fmin { fmin } else { z };
            c.zp[l] = if z > fmax { fmax } else { z };
            degenerate[l] = (min == max) | !((s > 0.0) & (s < f32::INFINITY));
        }
    }
    if degenerate.iter().any(|&d| d) {
        for l in 0..W {
            if degenerate[l] {
                let (scale, zp) = params_for_range(lo[l] * r[l], hi[l] * r[l], qtype, sym);
                (c.scale[l], c.zp[l]) = (scale, zp as f32);
            }
        }
    }
    for l in 0..W {
        c.inv[l] = 1.0 / c.scale[l];
        // `(qmin - zp) as f32`: integers, exact either way.
        (c.lo[l], c.hi[l]) = (fmin - c.zp[l], fmax - c.zp[l]);
    }
    c
}

/// The error sums of [`Kernel::errors`], one lane at a time in `f32` per 1024 values, those
/// sums added in `f64`.
// One index walks the candidates' arrays side by side.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn errors_portable<const W: usize>(p: Panel, c: [&Cand<W>; PASS]) -> [[f64; W]; PASS] {
    let mut e = [[0.0f64; W]; PASS];
    for c0 in (0..p.rows).step_by(1024) {
        let mut acc = [[0.0f32; W]; PASS];
        for i in c0..(c0 + 1024).min(p.rows) {
            let x: &[f32; W] = p.data[p.start + i * p.stride..][..W].try_into().expect("W values");
            for k in 0..PASS {
                for l in 0..W {
                    let v = x[l] * c[k].inv[l];
                    let v = if v < c[k].lo[l] { c[k].lo[l] } else { v };
                    let v = if v > c[k].hi[l] { c[k].hi[l] } else { v };
                    let q = (v + MAGIC) - MAGIC;
                    let d = x[l] - q * c[k].scale[l];
                    acc[k][l] += d * d;
                }
            }
        }
        for k in 0..PASS {
            for l in 0..W {
                e[k][l] += acc[k][l] as f64;
            }
        }
    }
    e
}

/// [`errors_portable`] with the 8 lanes in one AVX register: the same operations in the same
/// order on each lane (as `Lanes::errors_avx`), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn errors_avx(p: Panel, c: [&Cand<8>; PASS]) -> [[f64; 8]; PASS] {
    use std::arch::x86_64::*;
    assert!(p.rows > 0 && p.start + (p.rows - 1) * p.stride + 8 <= p.data.len());
    // SAFETY (all loads below): each array holds the 8 floats an unaligned 256-bit load reads.
    let load = |v: &[f32; 8]| unsafe { _mm256_loadu_ps(v.as_ptr()) };
    let inv = c.map(|c| load(&c.inv));
    let lo = c.map(|c| load(&c.lo));
    let hi = c.map(|c| load(&c.hi));
    let scale = c.map(|c| load(&c.scale));
    let magic = _mm256_set1_ps(MAGIC);
    let base = p.data.as_ptr();
    let mut e = [[0.0f64; 8]; PASS];
    for c0 in (0..p.rows).step_by(1024) {
        let mut acc = [_mm256_setzero_ps(); PASS];
        for i in c0..(c0 + 1024).min(p.rows) {
            // SAFETY: row `i < rows` lies within `data` (asserted above).
            let x = unsafe { _mm256_loadu_ps(base.add(p.start + i * p.stride)) };
            for k in 0..PASS {
                let v = _mm256_min_ps(hi[k], _mm256_max_ps(lo[k], _mm256_mul_ps(x, inv[k])));
                let q = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
                let d = _mm256_sub_ps(x, _mm256_mul_ps(q, scale[k]));
                acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(d, d));
            }
        }
        for k in 0..PASS {
            let mut sums = [0.0f32; 8];
            // SAFETY: `sums` holds the 8 floats an unaligned 256-bit store writes.
            unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), acc[k]) };
            for l in 0..8 {
                e[k][l] += sums[l] as f64;
            }
        }
    }
    e
}

/// [`errors_portable`] with the 16 lanes in one AVX-512 register: the same operations in the
/// same order on each lane, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn errors_avx512(p: Panel, c: [&Cand<16>; PASS]) -> [[f64; 16]; PASS] {
    use std::arch::x86_64::*;
    assert!(p.rows > 0 && p.start + (p.rows - 1) * p.stride + 16 <= p.data.len());
    // SAFETY (all loads below): each array holds the 16 floats an unaligned 512-bit load reads.
    let load = |v: &[f32; 16]| unsafe { _mm512_loadu_ps(v.as_ptr()) };
    let inv = c.map(|c| load(&c.inv));
    let lo = c.map(|c| load(&c.lo));
    let hi = c.map(|c| load(&c.hi));
    let scale = c.map(|c| load(&c.scale));
    let magic = _mm512_set1_ps(MAGIC);
    let base = p.data.as_ptr();
    let mut e = [[0.0f64; 16]; PASS];
    for c0 in (0..p.rows).step_by(1024) {
        let mut acc = [_mm512_setzero_ps(); PASS];
        for i in c0..(c0 + 1024).min(p.rows) {
            // SAFETY: row `i < rows` lies within `data` (asserted above).
            let x = unsafe { _mm512_loadu_ps(base.add(p.start + i * p.stride)) };
            for k in 0..PASS {
                let v = _mm512_min_ps(hi[k], _mm512_max_ps(lo[k], _mm512_mul_ps(x, inv[k])));
                let q = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
                let d = _mm512_sub_ps(x, _mm512_mul_ps(q, scale[k]));
                acc[k] = _mm512_add_ps(acc[k], _mm512_mul_ps(d, d));
            }
        }
        for k in 0..PASS {
            let mut sums = [0.0f32; 16];
            // SAFETY: `sums` holds the 16 floats an unaligned 512-bit store writes.
            unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), acc[k]) };
            for l in 0..16 {
                e[k][l] += sums[l] as f64;
            }
        }
    }
    e
}

/// [`Kernel::take_less`], a lane at a time.
#[inline(always)]
fn take_less_portable<const W: usize>(
    err: &mut [f64; W],
    [a, b]: [&mut [f64; W]; 2],
    e: &[f64; W],
    [na, nb]: [&[f64; W]; 2],
    valid: &[f64; W],
) {
    for l in 0..W {
        let take = (valid[l] != 0.0) & (e[l] < err[l]);
        err[l] = if take { e[l] } else { err[l] };
        a[l] = if take { na[l] } else { a[l] };
        b[l] = if take { nb[l] } else { b[l] };
    }
}

/// [`take_less_portable`] in AVX registers of 4 lanes: `e < err` is an ordered comparison
/// (false where either is NaN), `valid != 0` an unordered one, as Rust's operators are.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn take_less_avx(
    err: &mut [f64; 8],
    [a, b]: [&mut [f64; 8]; 2],
    e: &[f64; 8],
    [na, nb]: [&[f64; 8]; 2],
    valid: &[f64; 8],
) {
    use std::arch::x86_64::*;
    for h in [0, 4] {
        // SAFETY: every array holds 8 doubles; lanes h..h + 4 are within them.
        unsafe {
            let (ev, errv) = (_mm256_loadu_pd(e.as_ptr().add(h)), _mm256_loadu_pd(err.as_ptr().add(h)));
            let ok = _mm256_cmp_pd::<_CMP_NEQ_UQ>(_mm256_loadu_pd(valid.as_ptr().add(h)), _mm256_setzero_pd());
            let take = _mm256_and_pd(ok, _mm256_cmp_pd::<_CMP_LT_OQ>(ev, errv));
            _mm256_storeu_pd(err.as_mut_ptr().add(h), _mm256_blendv_pd(errv, ev, take));
            let (av, bv) = (_mm256_loadu_pd(a.as_ptr().add(h)), _mm256_loadu_pd(b.as_ptr().add(h)));
            let (nav, nbv) = (_mm256_loadu_pd(na.as_ptr().add(h)), _mm256_loadu_pd(nb.as_ptr().add(h)));
            _mm256_storeu_pd(a.as_mut_ptr().add(h), _mm256_blendv_pd(av, nav, take));
            _mm256_storeu_pd(b.as_mut_ptr().add(h), _mm256_blendv_pd(bv, nbv, take));
        }
    }
}

/// [`take_less_portable`] in AVX-512 registers of 8 lanes, comparisons as in [`take_less_avx`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn take_less_avx512(
    err: &mut [f64; 16],
    [a, b]: [&mut [f64; 16]; 2],
    e: &[f64; 16],
    [na, nb]: [&[f64; 16]; 2],
    valid: &[f64; 16],
) {
    use std::arch::x86_64::*;
    for h in [0, 8] {
        // SAFETY: every array holds 16 doubles; lanes h..h + 8 are within them.
        unsafe {
            let (ev, errv) = (_mm512_loadu_pd(e.as_ptr().add(h)), _mm512_loadu_pd(err.as_ptr().add(h)));
            let ok = _mm512_cmp_pd_mask::<_CMP_NEQ_UQ>(_mm512_loadu_pd(valid.as_ptr().add(h)), _mm512_setzero_pd());
            let take = ok & _mm512_cmp_pd_mask::<_CMP_LT_OQ>(ev, errv);
            _mm512_storeu_pd(err.as_mut_ptr().add(h), _mm512_mask_blend_pd(take, errv, ev));
            let (av, bv) = (_mm512_loadu_pd(a.as_ptr().add(h)), _mm512_loadu_pd(b.as_ptr().add(h)));
            let (nav, nbv) = (_mm512_loadu_pd(na.as_ptr().add(h)), _mm512_loadu_pd(nb.as_ptr().add(h)));
            _mm512_storeu_pd(a.as_mut_ptr().add(h), _mm512_mask_blend_pd(take, av, nav));
            _mm512_storeu_pd(b.as_mut_ptr().add(h), _mm512_mask_blend_pd(take, bv, nbv));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [QType; 5] = [QType::Int8, QType::Int7, QType::Uint8, QType::Int4, QType::Uint4];

    /// Column `c` of a `rows x cols` tensor: a pattern per column, awkward ones among them.
    fn tensor(rows: usize, cols: usize, seed: u32) -> Vec<f32> {
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng as f32 / u32::MAX as f32 - 0.5
        };
        let mut t = vec![0.0f32; rows * cols];
        for c in 0..cols {
            let v: Vec<f32> = (0..rows).map(|_| next()).collect();
            for (i, &x) in v.iter().enumerate() {
                t[i * cols + c] = match (c + seed as usize) % 12 {
                    0 => x,
                    1 => 0.0,
                    2 => 0.37,
                    3 if i == rows / 2 => -2.5,
                    3 => 0.0,
                    4 => x * 1e30,
                    5 => x * 1e-40,
                    6 => -x.abs() - 0.01,
                    7 => x.abs() + 3.0,
                    8 => x * x * x * 50.0,
                    9 if i % 7 == 0 => x * 400.0,
                    9 => x,
                    10 => (x * 8.0).round() * 0.25,
                    _ => x * 1e-3 + 1e-3,
                };
            }
        }
        t
    }

    fn check<const W: usize, K: Kernel<W>>(k: K, name: &str) {
        for (rows, cols) in [(1, 3), (2, 16), (3, 17), (32, 8), (32, 21), (31, 40), (37, 16), (1030, 19)] {
            let data = tensor(rows, cols, (rows * 31 + cols) as u32);
            // The columns from the second row on, in a wider tensor: a start and a stride.
            let (start, stride) = (cols + 1, cols + 2);
            let mut wide = vec![-7.0f32; start + rows * stride];
            for i in 0..rows {
                wide[start + i * stride..][..cols].copy_from_slice(&data[i * cols..][..cols]);
            }
            for qtype in ALL {
                for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric, Symmetry::Auto] {
                    for search in [RangeSearch::Minmax, RangeSearch::Mse] {
                        let panel = Panel { data: &wide, start, stride, rows, cols };
                        let mut got = vec![(0.0, 0); cols];
                        each_block::<W, K>(panel, qtype, symmetry, search, &mut got, k);
                        for (c, &(s, z)) in got.iter().enumerate() {
                            let xs: Vec<f32> = (0..rows).map(|i| data[i * cols + c]).collect();
                            let (ws, wz) = super::super::search_params(&xs, qtype, symmetry, search);
                            assert_eq!(
                                (s.to_bits(), z),
                                (ws.to_bits(), wz),
                                "{name} {rows}x{cols} column {c} {qtype:?} {symmetry:?} {search:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_group_per_lane_chooses_the_bits_of_its_own_search() {
        check::<8, _>(Portable, "portable");
        check::<4, _>(Portable, "portable, 4 lanes");
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(k) = Avx::detect() {
                check::<8, _>(k, "avx");
            }
            if let Some(k) = Avx512::detect() {
                check::<16, _>(k, "avx512");
            }
        }
    }

    #[test]
    fn the_kernels_sum_as_the_portable_loop() {
        let (rows, cols) = (2100, 16);
        let data = tensor(rows, cols, 5);
        let p = Panel { data: &data, start: 0, stride: cols, rows, cols };
        let mut lo = [0.0f32; 16];
        let mut hi = [0.0f32; 16];
        for l in 0..16 {
            (lo[l], hi[l]) = (-0.3 - l as f32 * 0.01, 0.4 + l as f32 * 0.02);
        }
        let cs: Vec<Cand<16>> = [(0.9, true), (0.7, false), (1.0, false), (0.55, true)]
            .map(|(r, sym)| cand(&lo, &hi, &[r; 16], QType::Int4, sym))
            .into();
        let c = [&cs[0], &cs[1], &cs[2], &cs[3]];
        let want = errors_portable(p, c).map(|r| r.map(f64::to_bits));
        #[cfg(target_arch = "x86_64")]
        {
            if Avx512::detect().is_some() {
                // SAFETY: the CPU has AVX-512F (detected just above).
                let got = unsafe { errors_avx512(p, c) };
                assert_eq!(got.map(|r| r.map(f64::to_bits)), want);
            }
            if Avx::detect().is_some() {
                let half = |c: &Cand<16>| Cand::<8> {
                    scale: c.scale[8..].try_into().unwrap(),
                    inv: c.inv[8..].try_into().unwrap(),
                    lo: c.lo[8..].try_into().unwrap(),
                    hi: c.hi[8..].try_into().unwrap(),
                    zp: c.zp[8..].try_into().unwrap(),
                };
                let h = cs.iter().map(half).collect::<Vec<_>>();
                let p8 = Panel { start: 8, cols: 8, ..p };
                // SAFETY: the CPU has AVX (detected just above).
                let got = unsafe { errors_avx(p8, [&h[0], &h[1], &h[2], &h[3]]) };
                for k in 0..PASS {
                    assert_eq!(got[k].map(f64::to_bits), want[k][8..], "candidate {k}");
                }
            }
        }
    }
}
