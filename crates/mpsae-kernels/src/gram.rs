//! The Gram matrix `G = D·Dᵀ` as the pursuit reads it: in f32, or in f16 with a per-row bound on
//! the rounding error.
//!
//! Each Gram-pursuit step streams one row of `G` per input row (`a -= v·G[j]`), so the pursuit
//! is bound by memory traffic at small `c` and large `k`; stored in f16 the matrix is half the
//! bytes to read (and to hold). The f16 values are not used blindly: for each row `j` the largest
//! conversion error `δ_j = max_i |G[j,i] - f16(G[j,i])|` is kept, the pursuit adds `|v|·δ_j` to
//! the row's error bound at every update, and every atom whose correlation is within twice the
//! bound of the best is re-checked with an exact dot product ([`crate::pursuit`]). The picks are
//! therefore the ones the f32 matrix gives, up to f32 rounding.
//!
//! A dictionary whose atoms are too long for f16's range (squared norm 2¹⁴ or more) gets an f32
//! matrix whatever was asked.
//!
//! With [`Products::Bf16`] the entries are products of the bf16-rounded atoms ([`crate::bf16`],
//! twice the f32 rate): each row's bound then also holds the product's bound against the f32
//! atoms, `max_i bound(j, i)`, whatever the storage.

use crate::bf16::{self, Bf16Dictionary, Products};
use crate::matmul::{gram as gram_f32, matmul_abt, mirror_lower, SendPtr};
use crate::memory::grow_huge;
use crate::{dot, Par};
use half::f16;
use rayon::prelude::*;

/// Storage precision of a Gram matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// 4 bytes an entry, exact to the product's rounding.
    F32,
    /// 2 bytes an entry, with per-row error bounds (the default: half the memory and traffic).
    #[default]
    F16,
}

impl Precision {
    /// Bytes per entry.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    /// Short name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

/// A borrowed Gram matrix, `c x c` row-major.
#[derive(Clone, Copy, Debug)]
pub enum GramRef<'a> {
    /// f32 entries and, per row, a bound on their error (zero for f32 products).
    F32 {
        /// The entries.
        values: &'a [f32],
        /// `δ_j` of each row.
        row_error: &'a [f32],
    },
    /// f16 entries and, per row, a bound on their error: the largest conversion error of that
    /// row, plus the product's bound with bf16 products.
    F16 {
        /// The entries.
        values: &'a [f16],
        /// `δ_j` of each row.
        row_error: &'a [f32],
    },
}

impl GramRef<'_> {
    /// Number of entries (`c²`).
    pub fn len(&self) -> usize {
        match self {
            GramRef::F32 { values, .. } => values.len(),
            GramRef::F16 { values, .. } => values.len(),
        }
    }

    /// True when the matrix has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The per-row error bounds `δ_j`.
    pub fn row_error(&self) -> &[f32] {
        match self {
            GramRef::F32 { row_error, .. } | GramRef::F16 { row_error, .. } => row_error,
        }
    }
}

/// An owned Gram matrix, reusable across dictionaries of the same shape (no reallocation).
#[derive(Clone, Debug, Default)]
pub struct Gram {
    c: usize,
    f32s: Vec<f32>,
    f16s: Vec<f16>,
    row_error: Vec<f32>,
    precision: Precision,
}

/// Rows of one task of the f16 build (a block row of the lower triangle).
const BLOCK: usize = 512;
/// Columns computed at once inside a block row (bounds the f32 buffer at 2 MiB per task; 1024,
/// 2048 and 4096 columns built the Gram equally fast in `gram_probe`).
const COLS: usize = 1024;

impl Gram {
    /// An empty matrix.
    pub fn new() -> Self {
        Gram::default()
    }

    /// Number of atoms `c` (the matrix is `c x c`).
    pub fn atoms(&self) -> usize {
        self.c
    }

    /// The precision actually stored (f32 when f16 was asked but cannot hold the entries).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * self.f32s.capacity() + 2 * self.f16s.capacity() + 4 * self.row_error.capacity()
    }

    /// The matrix, borrowed for the pursuit.
    pub fn view(&self) -> GramRef<'_> {
        match self.precision {
            Precision::F32 => GramRef::F32 { values: &self.f32s, row_error: &self.row_error },
            Precision::F16 => GramRef::F16 { values: &self.f16s, row_error: &self.row_error },
        }
    }

    /// Computes `D·Dᵀ` of `dict` (`c x dim`, one atom per row) in the asked storage precision
    /// from products of the asked operand precision, reusing this matrix's buffers. Only the lower
    /// triangle is multiplied (half the flops).
    pub fn compute(
        &mut self,
        dict: &[f32],
        c: usize,
        dim: usize,
        precision: Precision,
        products: Products,
        par: Par,
    ) {
        match products {
            Products::F32 => self.compute_with(dict, c, dim, precision, None, par),
            Products::Bf16 => {
                let operand = Bf16Dictionary::new(dict, c, dim, par);
                self.compute_with(dict, c, dim, precision, Some(&operand), par)
            }
        }
    }

    /// [`Gram::compute`] with bf16 products from the prepared operand of `dict` (shared with the
    /// pursuit that reads this matrix).
    pub fn compute_bf16(
        &mut self,
        dict: &[f32],
        c: usize,
        dim: usize,
        precision: Precision,
        operand: &Bf16Dictionary,
        par: Par,
    ) {
        assert!(operand.atoms() == c && operand.dim() == dim, "Gram::compute_bf16: operand shape");
        self.compute_with(dict, c, dim, precision, Some(operand), par)
    }

    fn compute_with(
        &mut self,
        dict: &[f32],
        c: usize,
        dim: usize,
        precision: Precision,
        operand: Option<&Bf16Dictionary>,
        par: Par,
    ) {
        assert_eq!(dict.len(), c * dim, "Gram::compute: dictionary shape");
        self.c = c;
        let longest = dict.chunks(dim.max(1)).map(|a| dot(a, a)).fold(0f32, f32::max);
        let precision =
            if precision == Precision::F16 && longest < 16384.0 { Precision::F16 } else { Precision::F32 };
        self.precision = precision;
        self.row_error.clear();
        self.row_error.resize(c, 0.0);
        // bf16 operands (and each atom's norms for the bound), when asked.
        let operands = operand.filter(|_| c > 0 && dim > 0);
        let product =
            |r0: usize, rows: usize, c0: usize, w: usize, out: &mut [f32], ldc: usize| match operands {
                Some(o) => bf16::abt(o.rows(), r0, rows, o.panels(), c0, w, out, ldc),
                None => matmul_abt_strided(
                    &dict[r0 * dim..(r0 + rows) * dim],
                    &dict[c0 * dim..(c0 + w) * dim],
                    out,
                    rows,
                    w,
                    dim,
                    ldc,
                ),
            };
        match precision {
            Precision::F32 => {
                self.f16s = Vec::new();
                grow_huge(&mut self.f32s, c * c, 0.0);
                if operands.is_some() {
                    lower_blocks_f32(&mut self.f32s, c, par, &product);
                } else {
                    gram_f32(dict, &mut self.f32s, c, dim, par);
                }
            }
            Precision::F16 => {
                self.f32s = Vec::new();
                grow_huge(&mut self.f16s, c * c, f16::ZERO);
                compute_f16(c, par, &product, &mut self.f16s, &mut self.row_error);
            }
        }
        if let Some(o) = operands {
            let (a, (norm, err)) = (o.rows(), o.maxima());
            for ((e, &n), &x) in self.row_error.iter_mut().zip(a.norms()).zip(a.errors()) {
                *e += bf16::entry_bound(dim, n, x, norm, err);
            }
        }
    }
}

/// `out[m x n]` (row stride `ldc`) `= a·bᵀ` in f32, single-threaded.
fn matmul_abt_strided(a: &[f32], b: &[f32], out: &mut [f32], m: usize, n: usize, k: usize, ldc: usize) {
    if ldc == n {
        matmul_abt(a, b, &mut out[..m * n], m, n, k, Par::Seq);
    } else {
        let mut buf = vec![0f32; m * n];
        matmul_abt(a, b, &mut buf, m, n, k, Par::Seq);
        for (dst, src) in out.chunks_mut(ldc).zip(buf.chunks(n)) {
            dst[..n].copy_from_slice(src);
        }
    }
}

/// The lower block rows of an f32 matrix by `product(r0, rows, c0, w, out, ldc)` written in place,
/// then the mirror onto the upper triangle.
fn lower_blocks_f32<F>(out: &mut [f32], c: usize, par: Par, product: &F)
where
    F: Fn(usize, usize, usize, usize, &mut [f32], usize) + Sync,
{
    let nb = c.div_ceil(BLOCK);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let task = |i: usize| {
        let r0 = i * BLOCK;
        let rows = BLOCK.min(c - r0);
        let cols = r0 + rows;
        let p = out_ptr;
        // SAFETY: block row i covers rows r0..r0+rows of `out`, disjoint between tasks; the slice
        // ends at the last of its columns.
        let dst = unsafe { std::slice::from_raw_parts_mut(p.0.add(r0 * c), (rows - 1) * c + cols) };
        product(r0, rows, 0, cols, dst, c);
    };
    match par {
        Par::Seq => (0..nb).for_each(task),
        Par::Rayon(_) => (0..nb).rev().collect::<Vec<_>>().into_par_iter().for_each(task),
    }
    mirror_lower(out, c, par);
}

/// Lower block rows by `product(r0, rows, c0, w, out, ldc)` in f32, rounded to f16 as they come,
/// with the row/column error maxima (set into `row_error`), each chunk mirrored onto the upper
/// triangle while it is in cache, which spares a pass over the whole matrix afterwards (one run
/// each of `gram_probe -- 16384 576`: 486 ms with bf16 products and 910 with f32 ones, against 502
/// and 995 with the separate pass; run-to-run noise there is about 10 %).
fn compute_f16<F>(c: usize, par: Par, product: &F, out: &mut [f16], row_error: &mut [f32])
where
    F: Fn(usize, usize, usize, usize, &mut [f32], usize) + Sync,
{
    let nb = c.div_ceil(BLOCK);
    let out_ptr = SendPtr(out.as_mut_ptr());
    // Block row i: rows r0..r0+rows, columns 0..r0+rows (the diagonal block whole). Returns the
    // row maxima of its rows and the column maxima of its columns.
    let task = |i: usize| -> (usize, Vec<f32>, Vec<f32>) {
        let r0 = i * BLOCK;
        let rows = BLOCK.min(c - r0);
        let cols = r0 + rows;
        let mut rmax = vec![0f32; rows];
        let mut cmax = vec![0f32; cols];
        let mut buf = vec![0f32; rows * COLS.min(cols)];
        let p = out_ptr;
        let mut c0 = 0;
        while c0 < cols {
            let w = COLS.min(cols - c0);
            let buf = &mut buf[..rows * w];
            product(r0, rows, c0, w, buf, w);
            for (ii, src) in buf.chunks(w).enumerate() {
                // SAFETY: row r0 + ii, columns c0..c0+w: inside the matrix, written only by this
                // task (block rows are disjoint).
                let dst = unsafe { std::slice::from_raw_parts_mut(p.0.add((r0 + ii) * c + c0), w) };
                rmax[ii] = rmax[ii].max(round_to_f16(src, dst, &mut cmax[c0..c0 + w]));
            }
            // SAFETY: the chunk's entries below the diagonal go to rows c0..c0+w, columns
            // r0..r0+rows, above the diagonal: no other task writes there (block row i'' < i writes
            // its own rows only up to column r0, later block rows never reach these rows), and no
            // task reads them.
            unsafe { mirror_chunk(p, c, r0, rows, c0, w) };
            c0 += w;
        }
        (r0, rmax, cmax)
    };
    let parts: Vec<(usize, Vec<f32>, Vec<f32>)> = match par {
        Par::Seq => (0..nb).map(task).collect(),
        // Larger block rows first for balance.
        Par::Rayon(_) => (0..nb).rev().collect::<Vec<_>>().into_par_iter().map(task).collect(),
    };
    row_error.fill(0.0);
    for (r0, rmax, cmax) in &parts {
        for (e, &m) in row_error[*r0..].iter_mut().zip(rmax) {
            *e = e.max(m);
        }
        // Column j of the lower triangle is row j of the upper one, after the mirror.
        for (e, &m) in row_error.iter_mut().zip(cmax) {
            *e = e.max(m);
        }
    }
}

/// Copies the entries `(i, j)`, `j < i`, of rows `r0..r0+rows` and columns `c0..c0+w` of the
/// `c x c` matrix at `p` onto `(j, i)`, by 64 x 64 tiles (read row by row, written transposed row
/// by row: both sides contiguous).
///
/// # Safety
/// The ranges lie inside the matrix; nothing else reads or writes the destination entries (or
/// writes the source ones) meanwhile.
unsafe fn mirror_chunk<T: Copy + Default>(
    p: SendPtr<T>,
    c: usize,
    r0: usize,
    rows: usize,
    c0: usize,
    w: usize,
) {
    const TILE: usize = 64;
    let mut buf = [T::default(); TILE * TILE];
    for j0 in (c0..c0 + w).step_by(TILE) {
        let jh = TILE.min(c0 + w - j0);
        for i0 in (r0..r0 + rows).step_by(TILE) {
            let ih = TILE.min(r0 + rows - i0);
            if j0 >= i0 + ih - 1 {
                // No entry of this tile is below the diagonal.
                continue;
            }
            for ii in 0..ih {
                let src = std::slice::from_raw_parts(p.0.add((i0 + ii) * c + j0), jh);
                buf[ii * TILE..ii * TILE + jh].copy_from_slice(src);
            }
            for jj in 0..jh {
                let j = j0 + jj;
                // Entries (i, j) with i > j: ii from j + 1 - i0 when the tile straddles the diagonal.
                let start = (j + 1).saturating_sub(i0).min(ih);
                let dst = p.0.add(j * c + i0);
                for ii in start..ih {
                    *dst.add(ii) = buf[ii * TILE + jj];
                }
            }
        }
    }
}

/// `dst = f16(src)` (round to nearest even); returns the largest absolute rounding error and
/// raises `col_max[i]` to the error of entry `i`. A NaN or infinite entry counts as an infinite
/// error.
fn round_to_f16(src: &[f32], dst: &mut [f16], col_max: &mut [f32]) -> f32 {
    assert!(src.len() == dst.len() && src.len() == col_max.len(), "round_to_f16: lengths");
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx2() && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: AVX2 and F16C are present (checked just above); lengths are equal.
        return unsafe { round_to_f16_x86(src, dst, col_max) };
    }
    let mut m = 0f32;
    for ((&x, y), cm) in src.iter().zip(dst.iter_mut()).zip(col_max.iter_mut()) {
        *y = f16::from_f32(x);
        m = m.max(entry_error(x, y.to_f32()));
        *cm = cm.max(entry_error(x, y.to_f32()));
    }
    m
}

#[inline(always)]
fn entry_error(x: f32, y: f32) -> f32 {
    let e = (x - y).abs();
    if e.is_finite() {
        e
    } else {
        f32::INFINITY
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn round_to_f16_x86(src: &[f32], dst: &mut [f16], col_max: &mut [f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = src.len();
    let chunks = n / 8;
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let inf = _mm256_set1_ps(f32::INFINITY);
    let mut m = _mm256_setzero_ps();
    for ch in 0..chunks {
        let x = _mm256_loadu_ps(src.as_ptr().add(ch * 8));
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        _mm_storeu_si128(dst.as_mut_ptr().add(ch * 8) as *mut __m128i, h);
        let e = _mm256_and_ps(_mm256_sub_ps(x, _mm256_cvtph_ps(h)), abs_mask);
        // NaN (from inf - inf or a NaN entry) and inf become inf.
        let bad = _mm256_cmp_ps::<_CMP_NLT_UQ>(e, inf);
        let e = _mm256_blendv_ps(e, inf, bad);
        m = _mm256_max_ps(m, e);
        let cm = col_max.as_mut_ptr().add(ch * 8);
        _mm256_storeu_ps(cm, _mm256_max_ps(_mm256_loadu_ps(cm), e));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), m);
    let mut m = lanes.iter().fold(0f32, |a, &b| a.max(b));
    for i in chunks * 8..n {
        dst[i] = f16::from_f32(src[i]);
        let e = entry_error(src[i], dst[i].to_f32());
        m = m.max(e);
        col_max[i] = col_max[i].max(e);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn rounding_kernel_matches_the_portable_rounding() {
        let src: Vec<f32> =
            (0..37).map(|i| (i as f32 * 0.731).sin() * 3.0).chain([f32::NAN, 1e6, -0.0]).collect();
        let mut dst = vec![f16::ZERO; src.len()];
        let mut cmax = vec![0f32; src.len()];
        let m = round_to_f16(&src, &mut dst, &mut cmax);
        assert_eq!(m, f32::INFINITY);
        for (i, (&x, y)) in src.iter().zip(&dst).enumerate() {
            assert_eq!(y.to_bits(), f16::from_f32(x).to_bits(), "entry {i}");
            assert_eq!(cmax[i], entry_error(x, f16::from_f32(x).to_f32()), "entry {i}");
        }
    }

    #[test]
    fn f16_matrix_is_the_f32_one_within_its_row_bounds() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for &(c, dim) in &[(1usize, 3usize), (37, 8), (1300, 24)] {
            let dict: Vec<f32> = (0..c * dim).map(|_| rng.gen_range(-0.5..0.5)).collect();
            let mut exact = vec![0f32; c * c];
            gram_f32(&dict, &mut exact, c, dim, Par::Seq);
            for (par, products) in
                [(Par::Seq, Products::F32), (Par::rayon(), Products::F32), (Par::rayon(), Products::Bf16)]
            {
                let mut g = Gram::new();
                g.compute(&dict, c, dim, Precision::F16, products, par);
                assert_eq!(g.precision(), Precision::F16);
                let GramRef::F16 { values, row_error } = g.view() else { panic!("f16 expected") };
                let mut worst = 0f32;
                for i in 0..c {
                    for j in 0..c {
                        let (x, y) = (values[i * c + j].to_f32(), exact[i * c + j]);
                        // Symmetric, and within the row's bound (up to the product's own rounding).
                        assert_eq!(values[i * c + j], values[j * c + i]);
                        assert!((x - y).abs() <= row_error[i] + 1e-6, "({i},{j}) {x} {y} {}", row_error[i]);
                        worst = worst.max((x - y).abs());
                    }
                    // f16 rounding of entries below 1; bf16 rounding of atoms of norm about 1.4.
                    let loosest = if products == Products::Bf16 { 0.03 } else { 1e-3 };
                    assert!(row_error[i] <= loosest, "{} {}", row_error[i], products.name());
                }
                if c > 1 {
                    assert!(worst > 0.0, "the f16 rounding must show");
                }
            }
        }
        // Atoms too long for f16: an f32 matrix.
        let dict = vec![200f32; 2 * 3];
        let mut g = Gram::new();
        g.compute(&dict, 2, 3, Precision::F16, Products::F32, Par::Seq);
        assert_eq!(g.precision(), Precision::F32);
        assert!(matches!(g.view(), GramRef::F32 { values, .. } if values[0] == 120000.0));
    }
}
