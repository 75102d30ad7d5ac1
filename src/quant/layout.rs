//! Group-major order: a tensor's elements rearranged so that each scale's values lie side by
//! side, in the order they have in the tensor. The per-column channels of a `[K, N]` MatMul
//! weight, or its blocks along `K`, are strided in the tensor; gathering them once, a tile at a
//! time, lets the search, the rounding and the mean-preserving pass read each group as one
//! contiguous slice. Pure rearrangement: the values are the same bits.

use std::borrow::Cow;
use std::ops::Range;

use super::Granularity;

/// How a row-major tensor's flat elements map to the groups of a [`Granularity`]: the tensor
/// seen as `[outer, axis, inner]` around its quantization axis.
pub(super) struct Layout {
    kind: Kind,
    outer: usize,
    axis: usize,
    inner: usize,
    len: usize,
}

/// Groups side by side in a tensor (see [`Layout::panels`]): value `i` of group `first + c`
/// (`c < cols`, `i < rows`) is the tensor's element `start + i * stride + c`.
#[derive(Clone, Copy, Debug)]
pub(super) struct PanelAt {
    pub start: usize,
    pub stride: usize,
    pub rows: usize,
    pub cols: usize,
    pub first: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Whole,
    PerAxis,
    Blocked(usize),
}

impl Layout {
    pub fn new(dims: &[usize], gran: Granularity) -> Layout {
        let len = dims.iter().product();
        let around = |axis: usize| (dims[..axis].iter().product(), dims[axis], dims[axis + 1..].iter().product());
        let (kind, (outer, axis, inner)) = match gran {
            Granularity::PerTensor => (Kind::Whole, (1, len, 1)),
            Granularity::PerAxis { axis } => (Kind::PerAxis, around(axis)),
            Granularity::Blocked { axis, block } => (Kind::Blocked(block.max(1)), around(axis)),
        };
        Layout { kind, outer, axis, inner, len }
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        match self.kind {
            Kind::Whole => 1,
            Kind::PerAxis => self.axis,
            Kind::Blocked(block) => self.outer * self.axis.div_ceil(block) * self.inner,
        }
    }

    /// Where group `g` lies in group-major order.
    pub fn range(&self, g: usize) -> Range<usize> {
        match self.kind {
            Kind::Whole => 0..self.len,
            Kind::PerAxis => {
                let n = self.outer * self.inner;
                g * n..(g + 1) * n
            }
            Kind::Blocked(block) => {
                let nb = self.axis.div_ceil(block);
                let (j, ob) = (g % self.inner, g / self.inner);
                let (o, b) = (ob / nb, ob % nb);
                let rows = block.min(self.axis - b * block);
                let start = (o * self.axis + b * block) * self.inner + j * rows;
                start..start + rows
            }
        }
    }

    /// The groups as panels of groups side by side in the tensor's own order, when they lie so
    /// (blocks along an axis that is not the last), at least `min_cols` to a panel. The panels'
    /// groups follow each other in order. (The per-axis
    /// channels along a last axis lie so too, but are long: their search is the candidates'
    /// error loop, which reads the gathered channel faster than the strided rows.)
    pub fn panels(&self, min_cols: usize) -> Option<Vec<PanelAt>> {
        let (outer, axis, inner) = (self.outer, self.axis, self.inner);
        match self.kind {
            Kind::Blocked(block) if inner >= min_cols && inner > 1 => {
                let nb = axis.div_ceil(block);
                let mut out = Vec::with_capacity(outer * nb);
                for o in 0..outer {
                    for b in 0..nb {
                        let rows = block.min(axis - b * block);
                        out.push(PanelAt {
                            start: (o * axis + b * block) * inner,
                            stride: inner,
                            rows,
                            cols: inner,
                            first: (o * nb + b) * inner,
                        });
                    }
                }
                Some(out)
            }
            _ => None,
        }
    }

    /// Whether group-major order is the tensor's own order.
    fn is_flat(&self) -> bool {
        match self.kind {
            Kind::Whole => true,
            Kind::PerAxis => self.outer == 1,
            Kind::Blocked(_) => self.inner == 1,
        }
    }

    /// `flat` (the tensor's order) in group-major order; borrowed when that is the same order.
    pub fn gather<'a, T: Element>(&self, flat: &'a [T]) -> Cow<'a, [T]> {
        if self.is_flat() {
            return Cow::Borrowed(flat);
        }
        let mut out = vec![T::default(); flat.len()];
        self.each_block(|src, dst, rows, cols, chunk| {
            transpose(&flat[src..], cols * chunk, &mut out[dst..], rows * chunk, rows, cols, chunk)
        });
        Cow::Owned(out)
    }

    /// The inverse of [`Layout::gather`]: group-major `grouped` back in the tensor's order.
    pub fn scatter<T: Element>(&self, grouped: Vec<T>) -> Vec<T> {
        if self.is_flat() {
            return grouped;
        }
        let mut out = vec![T::default(); grouped.len()];
        self.each_block(|src, dst, rows, cols, chunk| {
            transpose(&grouped[dst..], rows * chunk, &mut out[src..], cols * chunk, cols, rows, chunk)
        });
        out
    }

    /// The rearrangement as transposes: calls `f(flat_start, grouped_start, rows, cols, chunk)`
    /// for each `rows x cols` matrix of `chunk`-element runs at `flat_start` that group-major
    /// order holds transposed at `grouped_start`.
    fn each_block(&self, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        let (outer, axis, inner) = (self.outer, self.axis, self.inner);
        match self.kind {
            Kind::Whole => f(0, 0, 1, self.len, 1),
            // [outer, axis] runs of `inner` become [axis, outer].
            Kind::PerAxis => f(0, 0, outer, axis, inner),
            // Per outer index and block, [rows, inner] becomes [inner, rows].
            Kind::Blocked(block) => {
                for o in 0..outer {
                    for b0 in (0..axis).step_by(block) {
                        let start = (o * axis + b0) * inner;
                        f(start, start, block.min(axis - b0), inner, 1);
                    }
                }
            }
        }
    }
}

/// What a layout moves: values copied bit for bit.
pub(super) trait Element: Copy + Default {
    /// [`transpose_tiled`] of single elements, faster where a type knows how.
    fn transpose_single(
        src: &[Self],
        src_stride: usize,
        dst: &mut [Self],
        dst_stride: usize,
        rows: usize,
        cols: usize,
    ) {
        transpose_tiled(src, src_stride, dst, dst_stride, rows, cols, 1);
    }
}

impl Element for u8 {
    fn transpose_single(src: &[u8], src_stride: usize, dst: &mut [u8], dst_stride: usize, rows: usize, cols: usize) {
        #[cfg(target_arch = "x86_64")]
        if rows >= 16 && cols >= 16 {
            transpose_u8_sse2(src, src_stride, dst, dst_stride, rows, cols);
            return;
        }
        transpose_tiled(src, src_stride, dst, dst_stride, rows, cols, 1);
    }
}

/// [`transpose_tiled`] of bytes, 16x16 blocks at a time in SSE2 registers (every x86-64 CPU
/// has them): four rounds of interleaving register `i` with register `i + 8`, each of which
/// rotates a byte's 8-bit (row, column) index left by one, so four swap row and column. The
/// edges that do not fill a block are copied one by one.
#[cfg(target_arch = "x86_64")]
fn transpose_u8_sse2(src: &[u8], src_stride: usize, dst: &mut [u8], dst_stride: usize, rows: usize, cols: usize) {
    use std::arch::x86_64::*;
    // Every read and write below lies within these extents.
    assert!(rows > 0 && cols > 0 && src_stride >= cols && dst_stride >= rows);
    assert!((rows - 1) * src_stride + cols <= src.len() && (cols - 1) * dst_stride + rows <= dst.len());
    let (rows16, cols16) = (rows / 16 * 16, cols / 16 * 16);
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    for r0 in (0..rows16).step_by(16) {
        for c0 in (0..cols16).step_by(16) {
            // SAFETY: rows r0..r0 + 16 and columns c0..c0 + 16 are within the extents asserted
            // above, on both sides (transposed for `dst`); SSE2 is part of x86-64.
            unsafe {
                let mut v = [_mm_setzero_si128(); 16];
                for (i, r) in v.iter_mut().enumerate() {
                    *r = _mm_loadu_si128(sp.add((r0 + i) * src_stride + c0) as *const __m128i);
                }
                for _ in 0..4 {
                    let mut w = [_mm_setzero_si128(); 16];
                    for i in 0..8 {
                        w[2 * i] = _mm_unpacklo_epi8(v[i], v[i + 8]);
                        w[2 * i + 1] = _mm_unpackhi_epi8(v[i], v[i + 8]);
                    }
                    v = w;
                }
                for (j, r) in v.iter().enumerate() {
                    _mm_storeu_si128(dp.add((c0 + j) * dst_stride + r0) as *mut __m128i, *r);
                }
            }
        }
    }
    // The edges: the last rows % 16 rows, and the last cols % 16 columns of the others.
    for r in 0..rows {
        let from = if r < rows16 { cols16 } else { 0 };
        for c in from..cols {
            dst[c * dst_stride + r] = src[r * src_stride + c];
        }
    }
}

#[cfg(test)]
impl Element for u32 {}

impl Element for f32 {
    fn transpose_single(src: &[f32], src_stride: usize, dst: &mut [f32], dst_stride: usize, rows: usize, cols: usize) {
        #[cfg(target_arch = "x86_64")]
        if rows >= 8 && cols >= 8 && std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above).
            unsafe { transpose_f32_avx(src, src_stride, dst, dst_stride, rows, cols) };
            return;
        }
        transpose_tiled(src, src_stride, dst, dst_stride, rows, cols, 1);
    }
}

/// [`transpose_tiled`] of `f32`s, 8x8 blocks at a time in AVX registers (shuffles only: the
/// bits move unchanged); the edges that do not fill a block are copied one by one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn transpose_f32_avx(src: &[f32], src_stride: usize, dst: &mut [f32], dst_stride: usize, rows: usize, cols: usize) {
    use std::arch::x86_64::*;
    // Every read and write below lies within these extents.
    assert!(rows > 0 && cols > 0 && src_stride >= cols && dst_stride >= rows);
    assert!((rows - 1) * src_stride + cols <= src.len() && (cols - 1) * dst_stride + rows <= dst.len());
    let (rows8, cols8) = (rows / 8 * 8, cols / 8 * 8);
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    for c0 in (0..cols8).step_by(8) {
        for r0 in (0..rows8).step_by(8) {
            // SAFETY: rows r0..r0 + 8 and columns c0..c0 + 8 are within the extents asserted
            // above, on both sides (transposed for `dst`).
            unsafe {
                macro_rules! row {
                    ($i:expr) => {
                        _mm256_loadu_ps(sp.add((r0 + $i) * src_stride + c0))
                    };
                }
                let (a0, a1, a2, a3) = (row!(0), row!(1), row!(2), row!(3));
                let (a4, a5, a6, a7) = (row!(4), row!(5), row!(6), row!(7));
                let (t0, t1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
                let (t2, t3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
                let (t4, t5) = (_mm256_unpacklo_ps(a4, a5), _mm256_unpackhi_ps(a4, a5));
                let (t6, t7) = (_mm256_unpacklo_ps(a6, a7), _mm256_unpackhi_ps(a6, a7));
                let (s0, s1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
                let (s2, s3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
                let (s4, s5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
                let (s6, s7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
                let out = [
                    _mm256_permute2f128_ps::<0x20>(s0, s4),
                    _mm256_permute2f128_ps::<0x20>(s1, s5),
                    _mm256_permute2f128_ps::<0x20>(s2, s6),
                    _mm256_permute2f128_ps::<0x20>(s3, s7),
                    _mm256_permute2f128_ps::<0x31>(s0, s4),
                    _mm256_permute2f128_ps::<0x31>(s1, s5),
                    _mm256_permute2f128_ps::<0x31>(s2, s6),
                    _mm256_permute2f128_ps::<0x31>(s3, s7),
                ];
                for (j, v) in out.into_iter().enumerate() {
                    _mm256_storeu_ps(dp.add((c0 + j) * dst_stride + r0), v);
                }
            }
        }
    }
    // The edges: the last rows % 8 rows, and the last cols % 8 columns of the others.
    for r in 0..rows {
        let from = if r < rows8 { cols8 } else { 0 };
        for c in from..cols {
            dst[c * dst_stride + r] = src[r * src_stride + c];
        }
    }
}

/// Copies the `rows x cols` matrix of `chunk`-element runs at `src` (a row every `src_stride`
/// elements) transposed to `dst` (a row every `dst_stride` elements), a tile at a time so that
/// both sides stay in cache.
fn transpose<T: Element>(
    src: &[T],
    src_stride: usize,
    dst: &mut [T],
    dst_stride: usize,
    rows: usize,
    cols: usize,
    chunk: usize,
) {
    if chunk == 1 {
        T::transpose_single(src, src_stride, dst, dst_stride, rows, cols);
    } else {
        transpose_tiled(src, src_stride, dst, dst_stride, rows, cols, chunk);
    }
}

/// [`transpose`] without a type's own way.
fn transpose_tiled<T: Copy>(
    src: &[T],
    src_stride: usize,
    dst: &mut [T],
    dst_stride: usize,
    rows: usize,
    cols: usize,
    chunk: usize,
) {
    if chunk > 1 {
        for r in 0..rows {
            for c in 0..cols {
                let (s, d) = (r * src_stride + c * chunk, c * dst_stride + r * chunk);
                dst[d..d + chunk].copy_from_slice(&src[s..s + chunk]);
            }
        }
        return;
    }
    // Tiles of 128 bytes a side (16 for bytes, whose tiles are then 16 rows of 16).
    let tile = (128 / size_of::<T>().max(1)).clamp(16, 32);
    if rows <= 2 * tile {
        // Short destination rows (a block): read the source a row at a time.
        for c0 in (0..cols).step_by(tile) {
            let c1 = (c0 + tile).min(cols);
            for r in 0..rows {
                let row = &src[r * src_stride + c0..r * src_stride + c1];
                for (c, &x) in (c0..c1).zip(row) {
                    dst[c * dst_stride + r] = x;
                }
            }
        }
        return;
    }
    // Else write the destination a row at a time.
    for c0 in (0..cols).step_by(tile) {
        let c1 = (c0 + tile).min(cols);
        for r0 in (0..rows).step_by(tile) {
            let r1 = (r0 + tile).min(rows);
            for c in c0..c1 {
                let out = &mut dst[c * dst_stride + r0..c * dst_stride + r1];
                for (r, y) in (r0..r1).zip(out) {
                    *y = src[r * src_stride + c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_granularities(dims: &[usize]) -> Vec<Granularity> {
        let mut out = vec![Granularity::PerTensor];
        for axis in 0..dims.len() {
            out.push(Granularity::PerAxis { axis });
            for block in [1, 2, 3, 32] {
                out.push(Granularity::Blocked { axis, block });
            }
        }
        out
    }

    #[test]
    fn float_transposes_move_every_bit() {
        for (rows, cols) in [(8, 8), (9, 17), (32, 2048), (2048, 32), (70, 37), (3, 40)] {
            for pad in [0, 5] {
                let (ss, ds) = (cols + pad, rows + pad);
                let src: Vec<f32> = (0..rows * ss)
                    .map(|i| f32::from_bits(0x7fc0_0001 ^ (i as u32).wrapping_mul(2_654_435_761)))
                    .collect();
                let mut dst = vec![0.0f32; cols * ds];
                f32::transpose_single(&src, ss, &mut dst, ds, rows, cols);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(
                            dst[c * ds + r].to_bits(),
                            src[r * ss + c].to_bits(),
                            "{rows}x{cols} pad {pad} at {r},{c}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn byte_transposes_move_every_byte() {
        for (rows, cols) in [(16, 16), (17, 33), (32, 2048), (2048, 32), (70, 37), (3, 40), (40, 3)] {
            for pad in [0, 5] {
                let (ss, ds) = (cols + pad, rows + pad);
                let src: Vec<u8> =
                    (0..rows * ss).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]).collect();
                let mut dst = vec![0u8; cols * ds];
                u8::transpose_single(&src, ss, &mut dst, ds, rows, cols);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(dst[c * ds + r], src[r * ss + c], "{rows}x{cols} pad {pad} at {r},{c}");
                    }
                }
            }
        }
    }

    #[test]
    fn groups_hold_their_members_in_tensor_order_and_scatter_inverts_gather() {
        for dims in [vec![7], vec![5, 3], vec![70, 37], vec![2, 3, 4], vec![3, 1, 5, 2], vec![33, 2, 65]] {
            let n: usize = dims.iter().product();
            let flat: Vec<u32> = (0..n as u32).collect();
            for gran in all_granularities(&dims) {
                let layout = Layout::new(&dims, gran);
                let grouped = layout.gather(&flat);
                let of_each = crate::quant::group_of_each(&dims, gran);
                assert_eq!(layout.groups(), of_each.iter().max().map_or(0, |m| m + 1), "{dims:?} {gran:?}");
                for g in 0..layout.groups() {
                    let want: Vec<u32> = (0..n as u32).filter(|&i| of_each[i as usize] == g).collect();
                    assert_eq!(&grouped[layout.range(g)], &want[..], "{dims:?} {gran:?} group {g}");
                }
                assert_eq!(layout.scatter(grouped.into_owned()), flat, "{dims:?} {gran:?}");
            }
        }
    }
}
