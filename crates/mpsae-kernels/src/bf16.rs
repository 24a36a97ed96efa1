//! Dense products of bf16-rounded operands accumulated in f32 (AVX-512 BF16's `vdpbf16ps`: twice
//! the f32 rate on the CPUs that have it), with a bound on how far each entry is from the product
//! of the f32 operands.
//!
//! The pursuit never takes such a product at its word: a correlation only proposes a pick, its
//! bound joins the guard that sends near ties to exact dot products ([`crate::pursuit`]), and the
//! value of a pick is always the exact `r·D_j`. Picks and values are therefore bit for bit the
//! ones f32 products give; only the share of re-checked steps grows.
//!
//! The bound. With `x̂ = bf16(x)`, `e_x = x - x̂` (and the same for `y`),
//! `x·y - x̂·ŷ = e_x·y + x̂·e_y`, so by Cauchy-Schwarz
//! `|x·y - x̂·ŷ| <= ‖e_x‖(‖ŷ‖ + ‖e_y‖) + ‖x̂‖‖e_y‖`. The products `x̂_l·ŷ_l` are exact in f32 (8-bit
//! significands); summing `d` of them in f32, in any order, adds at most `γ_{d+2}·‖x̂‖‖ŷ‖`; the
//! instruction flushes subnormal inputs and results to zero, at most `2^-126` per term and per
//! addition. [`entry_bound`] is the sum of these, with a margin for the f32 rounding of the norms.
//!
//! Operands: [`Bf16Rows`] (row-major bf16 pairs, the left operand, with each row's norms) and
//! [`Bf16Panels`] (the right operand regrouped in panels of [`NR`] rows, as the micro-kernel reads
//! it). [`abt`] multiplies a range of rows by a range of panels; without AVX-512 BF16 a portable
//! loop computes the same sums (only [`Products::Bf16`] asked explicitly runs it: the default takes
//! bf16 products only where the hardware has them).

use crate::matmul::SendPtr;
use crate::Par;
use rayon::prelude::*;

/// Operand precision of the dense products (correlations `X·Dᵀ`, the Gram matrix, `gram-picked`'s
/// rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Products {
    /// f32 operands (OpenBLAS or the `gemm` crate).
    F32,
    /// bf16-rounded operands, f32 accumulation, with error bounds.
    Bf16,
}

impl Products {
    /// bf16 where the CPU has AVX-512 BF16, else f32; `MPSAE_PRODUCTS=f32` or `bf16` overrides.
    pub fn auto() -> Self {
        match std::env::var("MPSAE_PRODUCTS").as_deref() {
            Ok("f32") => Products::F32,
            Ok("bf16") => Products::Bf16,
            _ if hardware() => Products::Bf16,
            _ => Products::F32,
        }
    }

    /// Short name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Products::F32 => "f32",
            Products::Bf16 => "bf16",
        }
    }

    /// Parses `"f32"`, `"bf16"` or `"auto"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(Products::F32),
            "bf16" => Some(Products::Bf16),
            "auto" => Some(Products::auto()),
            _ => None,
        }
    }
}

impl Default for Products {
    fn default() -> Self {
        Products::auto()
    }
}

/// True when the CPU has AVX-512 BF16 (the fast kernel runs).
pub fn hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Columns of the right operand per panel (two 16-lane accumulators per row of the micro-kernel).
pub const NR: usize = 32;
/// Rows of the micro-kernel: 24 of the 32 vector registers accumulate (6, 12 and 14 rows ran alike
/// in a one-off comparison on a Zen 4 core). The product as a whole: `bf16_probe`.
const MR: usize = 12;
/// Rows of the left operand per pass over the panels (kept in L2 while the panels stream by).
const MC: usize = 264;

/// `bf16(v)` as bits, round to nearest even; NaN stays NaN (quiet).
#[inline(always)]
fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

#[inline(always)]
fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Rows converted to bf16 (pairs of consecutive entries packed in a `u32`, the last one padded with
/// zero when the dimension is odd), with each row's `‖x̂‖` and `‖x - x̂‖`.
#[derive(Clone, Debug, Default)]
pub struct Bf16Rows {
    pairs: Vec<u32>,
    rows: usize,
    d: usize,
    kp: usize,
    norm: Vec<f32>,
    error: Vec<f32>,
}

impl Bf16Rows {
    /// `x` (`rows x d`, row-major) in bf16.
    pub fn new(x: &[f32], rows: usize, d: usize, par: Par) -> Self {
        let mut r = Bf16Rows::default();
        r.fill(x, rows, d, par);
        r
    }

    /// Converts `x` into this buffer (reusing its memory).
    pub fn fill(&mut self, x: &[f32], rows: usize, d: usize, par: Par) {
        assert_eq!(x.len(), rows * d, "Bf16Rows: shape");
        let kp = d.div_ceil(2);
        (self.rows, self.d, self.kp) = (rows, d, kp);
        self.pairs.resize(rows * kp, 0);
        self.norm.resize(rows, 0.0);
        self.error.resize(rows, 0.0);
        if rows == 0 || d == 0 {
            self.norm.fill(0.0);
            self.error.fill(0.0);
            return;
        }
        type Row<'a> = ((&'a mut [u32], &'a [f32]), (&'a mut f32, &'a mut f32));
        let row = |((dst, src), (norm, error)): Row| {
            let (mut nn, mut ee) = (0f32, 0f32);
            for (q, p) in dst.iter_mut().enumerate() {
                let lo = src[2 * q];
                let hi = if 2 * q + 1 < d { src[2 * q + 1] } else { 0.0 };
                let (hl, hh) = (to_bf16(lo), to_bf16(hi));
                let (rl, rh) = (from_bf16(hl), from_bf16(hh));
                nn += rl * rl + rh * rh;
                ee += (lo - rl) * (lo - rl) + (hi - rh) * (hi - rh);
                *p = hl as u32 | (hh as u32) << 16;
            }
            *norm = nn.sqrt();
            *error = ee.sqrt();
        };
        let it =
            (self.pairs.chunks_mut(kp).zip(x.chunks(d))).zip(self.norm.iter_mut().zip(self.error.iter_mut()));
        match par {
            Par::Seq => it.for_each(row),
            Par::Rayon(_) => {
                let v: Vec<_> = it.collect();
                v.into_par_iter().with_min_len(64).for_each(row)
            }
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// `‖x̂_i‖` of each row.
    pub fn norms(&self) -> &[f32] {
        &self.norm
    }

    /// `‖x_i - x̂_i‖` of each row.
    pub fn errors(&self) -> &[f32] {
        &self.error
    }

    /// Largest `‖x̂_i‖` and largest `‖x_i - x̂_i‖` (NaN rows make both NaN).
    pub fn maxima(&self) -> (f32, f32) {
        let max = |v: &[f32]| {
            v.iter().fold(0f32, |m, &x| if x.is_nan() || m.is_nan() { f32::NAN } else { m.max(x) })
        };
        (max(&self.norm), max(&self.error))
    }

    /// The bf16 pairs of row `i`.
    fn row(&self, i: usize) -> &[u32] {
        &self.pairs[i * self.kp..(i + 1) * self.kp]
    }

    /// A copy of rows `rows` (in that order), as the left operand of a product.
    pub fn gather(&self, rows: &[u32]) -> Bf16Rows {
        let mut out = Bf16Rows { rows: rows.len(), d: self.d, kp: self.kp, ..Bf16Rows::default() };
        out.pairs.reserve(rows.len() * self.kp);
        for &j in rows {
            let j = j as usize;
            out.pairs.extend_from_slice(self.row(j));
            out.norm.push(self.norm[j]);
            out.error.push(self.error[j]);
        }
        out
    }
}

/// The right operand of a product, in panels of [`NR`] rows: panel `p` holds, for each pair `q`,
/// the `q`-th pairs of its rows side by side (zero rows pad the last panel).
#[derive(Clone, Debug, Default)]
pub struct Bf16Panels {
    data: Vec<u32>,
    n: usize,
    kp: usize,
}

impl Bf16Panels {
    /// The panels of `rows`.
    pub fn new(rows: &Bf16Rows, par: Par) -> Self {
        let mut p = Bf16Panels::default();
        p.fill(rows, par);
        p
    }

    /// The panels of `rows`, into this buffer (reusing its memory).
    pub fn fill(&mut self, rows: &Bf16Rows, par: Par) {
        let (n, kp) = (rows.rows, rows.kp);
        let np = n.div_ceil(NR);
        let data = &mut self.data;
        data.resize(np * kp * NR, 0);
        if n % NR != 0 {
            // The padding lanes of the last panel are zero.
            data[(np - 1) * kp * NR..].fill(0);
        }
        if kp > 0 {
            let panel = |(p, dst): (usize, &mut [u32])| {
                for lane in 0..NR.min(n - p * NR) {
                    let src = rows.row(p * NR + lane);
                    for (q, &v) in src.iter().enumerate() {
                        dst[q * NR + lane] = v;
                    }
                }
            };
            match par {
                Par::Seq => data.chunks_mut(kp * NR).enumerate().for_each(panel),
                Par::Rayon(_) => data.par_chunks_mut(kp * NR).enumerate().for_each(panel),
            }
        }
        (self.n, self.kp) = (n, kp);
    }
}

/// A dictionary (`c x d`, one atom per row) as the operand of bf16 products: its rows (the left
/// operand of its Gram rows) and panels (the right operand of every correlation), with the
/// largest atom norm and rounding error, against which every correlation's bound is taken.
/// Prepared once per dictionary (a training step's Gram matrix and pursuit share it; the CPU
/// backend keeps the one of a fixed dictionary between encodes).
#[derive(Clone, Debug, Default)]
pub struct Bf16Dictionary {
    rows: Bf16Rows,
    panels: Bf16Panels,
    max_norm: f32,
    max_error: f32,
}

impl Bf16Dictionary {
    /// The operand of `dict`.
    pub fn new(dict: &[f32], c: usize, d: usize, par: Par) -> Self {
        let mut o = Bf16Dictionary::default();
        o.fill(dict, c, d, par);
        o
    }

    /// The operand of `dict`, into this one's buffers (a training loop's dictionary changes at
    /// every step: no fresh allocation each time).
    pub fn fill(&mut self, dict: &[f32], c: usize, d: usize, par: Par) {
        self.rows.fill(dict, c, d, par);
        self.panels.fill(&self.rows, par);
        (self.max_norm, self.max_error) = self.rows.maxima();
    }

    /// Number of atoms.
    pub fn atoms(&self) -> usize {
        self.rows.rows()
    }

    /// Atom dimension.
    pub fn dim(&self) -> usize {
        self.rows.dim()
    }

    /// The atoms as rows (with their norms and rounding errors).
    pub fn rows(&self) -> &Bf16Rows {
        &self.rows
    }

    /// The atoms as panels.
    pub fn panels(&self) -> &Bf16Panels {
        &self.panels
    }

    /// Largest `‖d̂_i‖` and largest `‖d_i - d̂_i‖`.
    pub fn maxima(&self) -> (f32, f32) {
        (self.max_norm, self.max_error)
    }

    /// Per row of `x` (in bf16), the bound of its bf16 products with every atom.
    pub fn bounds(&self, x: &Bf16Rows) -> Vec<f32> {
        x.norms()
            .iter()
            .zip(x.errors())
            .map(|(&n, &e)| entry_bound(x.d, n, e, self.max_norm, self.max_error))
            .collect()
    }

    /// `out = x·Dᵀ` (`rows x c`) in bf16, `x` converted into `buf` first, single-threaded;
    /// returns each row's bound.
    pub fn correlate(
        &self,
        x: &[f32],
        rows: usize,
        d: usize,
        out: &mut [f32],
        buf: &mut Bf16Rows,
    ) -> Vec<f32> {
        buf.fill(x, rows, d, Par::Seq);
        abt(buf, 0, rows, &self.panels, 0, self.panels.n, out, self.panels.n);
        self.bounds(buf)
    }
}

/// Bound on `|x·y - fl(x̂·ŷ)|` for rows of dimension `d` from `‖x̂‖`, `‖e_x‖`, `‖ŷ‖`, `‖e_y‖`
/// (see the module docs). Monotone in each argument, so maxima over a set of rows bound every
/// entry against that set. NaN when an argument is NaN, infinite when one is.
pub fn entry_bound(d: usize, x_norm: f32, x_err: f32, y_norm: f32, y_err: f32) -> f32 {
    let terms = d as f32 + 2.0;
    let rounding = terms * f32::EPSILON * x_norm * y_norm;
    let flushed = 2.0 * terms * f32::MIN_POSITIVE * (1.0 + x_norm + y_norm);
    (x_err * (y_norm + y_err) + x_norm * y_err + rounding) * 1.001 + flushed
}

/// `out[i·ldc + j] = x̂_{r0+i}·ŷ_{c0+j}` for `i < rows`, `j < cols`: rows `r0..r0+rows` of `a`
/// against rows `c0..c0+cols` of the panels `b` (`c0` a multiple of [`NR`]). Single-threaded.
#[allow(clippy::too_many_arguments)]
pub fn abt(
    a: &Bf16Rows,
    r0: usize,
    rows: usize,
    b: &Bf16Panels,
    c0: usize,
    cols: usize,
    out: &mut [f32],
    ldc: usize,
) {
    assert_eq!(a.kp, b.kp, "bf16 abt: dimensions");
    assert!(r0 + rows <= a.rows && c0 + cols <= b.n, "bf16 abt: ranges");
    assert_eq!(c0 % NR, 0, "bf16 abt: column start off a panel");
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(ldc >= cols && out.len() >= (rows - 1) * ldc + cols, "bf16 abt: output");
    // SAFETY: `out` holds `rows` rows of `cols` entries at stride `ldc` (checked above).
    unsafe { abt_raw(a, r0, rows, b, c0, cols, out.as_mut_ptr(), ldc) }
}

/// [`abt`] into a raw output (for tasks writing disjoint column ranges of one matrix).
///
/// # Safety
/// The ranges of `a` and `b` are valid (checked by the caller) and `out` is valid for writes of
/// `rows` rows of `cols` entries at stride `ldc`, written by nothing else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn abt_raw(
    a: &Bf16Rows,
    r0: usize,
    rows: usize,
    b: &Bf16Panels,
    c0: usize,
    cols: usize,
    out: *mut f32,
    ldc: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if hardware() {
        // SAFETY: the CPU has AVX-512F and AVX-512 BF16 (checked); the rest is the caller's.
        return x86::abt(a, r0, rows, b, c0, cols, out, ldc);
    }
    abt_portable(a, r0, rows, b, c0, cols, out, ldc);
}

/// [`abt`] over the threads of `par`: split by panels of columns when there are few rows, by rows
/// otherwise. `out` holds `rows` rows of stride `ldc`.
pub fn abt_par(a: &Bf16Rows, r0: usize, rows: usize, b: &Bf16Panels, out: &mut [f32], ldc: usize, par: Par) {
    let cols = b.n;
    let threads = par.degree();
    if threads == 1 || rows == 0 || cols == 0 {
        abt(a, r0, rows, b, 0, cols, out, ldc);
        return;
    }
    assert!(ldc >= cols && out.len() >= (rows - 1) * ldc + cols, "bf16 abt_par: output");
    if rows >= 4 * MR * threads {
        let per = rows.div_ceil(4 * threads).next_multiple_of(MR);
        out[..(rows - 1) * ldc + cols].par_chunks_mut(per * ldc).enumerate().for_each(|(i, o)| {
            let r = per.min(rows - i * per);
            abt(a, r0 + i * per, r, b, 0, cols, o, ldc);
        });
        return;
    }
    assert_eq!(a.kp, b.kp, "bf16 abt_par: dimensions");
    assert!(r0 + rows <= a.rows, "bf16 abt_par: rows");
    let per = cols.div_ceil(2 * threads).next_multiple_of(NR);
    let p = SendPtr(out.as_mut_ptr());
    (0..cols.div_ceil(per)).into_par_iter().for_each(|i| {
        let c0 = i * per;
        let w = per.min(cols - c0);
        // The whole wrapper, not its raw pointer field, is captured (it is what is Send).
        #[allow(clippy::redundant_locals)]
        let p = p;
        // SAFETY: task i writes columns c0..c0+w (a whole number of panels) of each row, disjoint
        // between tasks, inside `out` (checked above); the row range was checked above.
        unsafe { abt_raw(a, r0, rows, b, c0, w, p.0.add(c0), ldc) };
    });
}

/// The same sums without the instruction: per pair, the low then the high product added to an f32
/// accumulator (each product exact).
///
/// # Safety
/// As [`abt_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn abt_portable(
    a: &Bf16Rows,
    r0: usize,
    rows: usize,
    b: &Bf16Panels,
    c0: usize,
    cols: usize,
    out: *mut f32,
    ldc: usize,
) {
    let kp = a.kp;
    for i in 0..rows {
        let x = a.row(r0 + i);
        for j in 0..cols {
            let col = c0 + j;
            let panel = &b.data[(col / NR) * kp * NR..];
            let lane = col % NR;
            let mut acc = 0f32;
            for (q, &xv) in x.iter().enumerate() {
                let yv = panel[q * NR + lane];
                acc += from_bf16(xv as u16) * from_bf16(yv as u16);
                acc += from_bf16((xv >> 16) as u16) * from_bf16((yv >> 16) as u16);
            }
            *out.add(i * ldc + j) = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Bf16Panels, Bf16Rows, MC, MR, NR};
    use std::arch::x86_64::*;

    /// `MR x NR` tile: `out[r·ldc + j] = Σ_q a[r·kp + q] · b[q·NR + j]` (bf16 pairs).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn micro(a: *const u32, kp: usize, b: *const u32, out: *mut f32, ldc: usize) {
        let mut acc0 = [_mm512_setzero_ps(); MR];
        let mut acc1 = [_mm512_setzero_ps(); MR];
        for q in 0..kp {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR) as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR + 16) as *const _));
            for r in 0..MR {
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * kp + q) as i32));
                acc0[r] = _mm512_dpbf16_ps(acc0[r], x, b0);
                acc1[r] = _mm512_dpbf16_ps(acc1[r], x, b1);
            }
        }
        for r in 0..MR {
            _mm512_storeu_ps(out.add(r * ldc), acc0[r]);
            _mm512_storeu_ps(out.add(r * ldc + 16), acc1[r]);
        }
    }

    /// See [`super::abt`]; partial tiles go through a local tile (and a zero-padded copy of the
    /// last rows).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn abt(
        a: &Bf16Rows,
        r0: usize,
        rows: usize,
        b: &Bf16Panels,
        c0: usize,
        cols: usize,
        out: *mut f32,
        ldc: usize,
    ) {
        let kp = a.kp;
        let mut tile = [0f32; MR * NR];
        let mut pad: Vec<u32> = Vec::new();
        let full_rows = rows / MR * MR;
        if full_rows < rows {
            pad = vec![0u32; MR * kp];
            pad[..(rows - full_rows) * kp].copy_from_slice(&a.pairs[(r0 + full_rows) * kp..(r0 + rows) * kp]);
        }
        let p0 = c0 / NR;
        let panels = cols.div_ceil(NR);
        let mut i0 = 0;
        while i0 < rows {
            let ih = MC.min(rows - i0);
            for p in 0..panels {
                let bp = b.data.as_ptr().add((p0 + p) * kp * NR);
                let w = NR.min(cols - p * NR);
                let mut i = i0;
                while i < i0 + ih {
                    let h = MR.min(rows - i);
                    let ap = if h == MR { a.pairs.as_ptr().add((r0 + i) * kp) } else { pad.as_ptr() };
                    let dst = out.add(i * ldc + p * NR);
                    if h == MR && w == NR {
                        micro(ap, kp, bp, dst, ldc);
                    } else {
                        micro(ap, kp, bp, tile.as_mut_ptr(), NR);
                        for r in 0..h {
                            std::ptr::copy_nonoverlapping(tile.as_ptr().add(r * NR), dst.add(r * ldc), w);
                        }
                    }
                    i += MR;
                }
            }
            i0 += ih;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn exact(x: &[f32], y: &[f32]) -> f64 {
        x.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    #[test]
    fn rounding_is_round_to_nearest_even() {
        for v in [1.0f32, -3.3, 1e-30, 6.5e37, 0.0, -0.0, 1.003_906_2, 1.011_718_8, f32::INFINITY] {
            assert_eq!(to_bf16(v), half::bf16::from_f32(v).to_bits(), "{v}");
        }
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn products_are_within_their_bound_of_the_exact_ones() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        // Odd dimensions, partial panels and tiles, several row blocks.
        for &(m, n, d) in &[(1usize, 1usize, 1usize), (13, 33, 7), (300, 70, 64), (25, 100, 577)] {
            let x: Vec<f32> = (0..m * d).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let y: Vec<f32> = (0..n * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let (xr, yr) = (Bf16Rows::new(&x, m, d, Par::Seq), Bf16Rows::new(&y, n, d, Par::rayon()));
            let panels = Bf16Panels::new(&yr, Par::rayon());
            for par in [Par::Seq, Par::rayon()] {
                let ldc = n + 3;
                let mut out = vec![f32::NAN; m * ldc];
                abt_par(&xr, 0, m, &panels, &mut out, ldc, par);
                let mut portable = vec![f32::NAN; m * ldc];
                // SAFETY: `portable` holds m rows of n entries at stride ldc.
                unsafe { abt_portable(&xr, 0, m, &panels, 0, n, portable.as_mut_ptr(), ldc) };
                let mut seen = 0f64;
                for i in 0..m {
                    for j in 0..n {
                        let e = exact(&x[i * d..(i + 1) * d], &y[j * d..(j + 1) * d]);
                        let got = out[i * ldc + j] as f64;
                        let b = entry_bound(d, xr.norms()[i], xr.errors()[i], yr.norms()[j], yr.errors()[j]);
                        assert!((got - e).abs() <= b as f64, "({i},{j}) {got} {e} {b}");
                        assert!((portable[i * ldc + j] as f64 - e).abs() <= b as f64);
                        seen = seen.max((got - e).abs());
                    }
                }
                if d > 1 {
                    assert!(seen > 0.0, "bf16 rounding must show");
                }
            }
        }
    }

    #[test]
    fn column_ranges_and_gathered_rows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let (m, d) = (70, 9);
        let x: Vec<f32> = (0..m * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let xr = Bf16Rows::new(&x, m, d, Par::Seq);
        let panels = Bf16Panels::new(&xr, Par::Seq);
        let mut whole = vec![0f32; m * m];
        abt(&xr, 0, m, &panels, 0, m, &mut whole, m);
        // Symmetric: the same pairs in the same order on both sides.
        for i in 0..m {
            for j in 0..m {
                assert_eq!(whole[i * m + j].to_bits(), whole[j * m + i].to_bits());
            }
        }
        let g = xr.gather(&[29, 3, 3]);
        let mut part = vec![0f32; 3 * (m - NR)];
        abt(&g, 0, 3, &panels, NR, m - NR, &mut part, m - NR);
        for (r, &src) in [29usize, 3, 3].iter().enumerate() {
            for j in NR..m {
                assert_eq!(part[r * (m - NR) + j - NR].to_bits(), whole[src * m + j].to_bits());
            }
        }
        assert_eq!(g.norms(), &[xr.norms()[29], xr.norms()[3], xr.norms()[3]]);
    }

    #[test]
    fn non_finite_rows_give_non_finite_bounds() {
        let x = [1.0f32, f32::NAN, 0.5, f32::INFINITY];
        let r = Bf16Rows::new(&x, 2, 2, Par::Seq);
        assert!(r.errors()[0].is_nan() && r.errors()[1].is_nan());
        let b = entry_bound(2, r.norms()[1], r.errors()[1], 1.0, 0.0);
        assert!(
            b.is_nan() || b == f32::INFINITY,
            "a NaN or infinite bound sends every pick to the exact check"
        );
    }
}
