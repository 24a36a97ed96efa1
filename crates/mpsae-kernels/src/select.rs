//! Atom selection of the Gram pursuit: the correlation update `a += alpha·G[j]` fused with a scan
//! that returns the best entry **and** the runner-up value, in one pass over `a`.
//!
//! The runner-up tells the pursuit whether the best entry is certain: when the correlations carry
//! a known error bound `e` (an f16 Gram matrix, float rounding), any entry within `2e` of the best
//! might be the true maximum, and those few are re-checked with exact dot products. When the
//! runner-up is further away than that, no second pass is needed.
//!
//! The Gram row comes in f32 or in f16 ([`half::f16`], half the memory traffic: the update is
//! memory-bound). Each kernel has a portable body and an AVX2 (+F16C) body chosen at run time;
//! both compute `a[i] + alpha·g[i]` with one multiply and one add, so they agree bitwise.
//!
//! The fused update also records the largest entry of each block of [`BLOCK`] entries
//! (`bmax`): the index of the best is then looked for in the first block that holds it, and the
//! re-check's search for every entry above a threshold ([`for_each_at_least_in_blocks`]) reads the
//! block maxima and only the blocks they point to (with bf16 products most steps are re-checked:
//! a full pass over the correlations each time cost as much as the dot products it leads to).

use half::f16;

/// Result of a selection scan over `a`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Top2 {
    /// Index of the largest entry (the first one on exact ties; `usize::MAX` when every entry is
    /// NaN or `-inf`).
    pub index: usize,
    /// The largest entry (`-inf` when there is none).
    pub value: f32,
    /// The largest entry among all the others (equal to `value` on a tie; `-inf` if none).
    pub second: f32,
}

/// Top-2 bookkeeping of one entry `v` at index `i` (NaN never enters).
#[inline(always)]
fn push(t: &mut Top2, i: usize, v: f32) {
    if v > t.value {
        t.second = t.value;
        t.value = v;
        t.index = i;
    } else if v > t.second {
        t.second = v;
    }
}

const EMPTY: Top2 = Top2 { index: usize::MAX, value: f32::NEG_INFINITY, second: f32::NEG_INFINITY };

/// Entries per block of the block maxima.
pub const BLOCK: usize = 64;

/// Number of block maxima of `n` entries (the last block may be partial).
pub fn blocks(n: usize) -> usize {
    n.div_ceil(BLOCK)
}

/// `bmax[b]` = the largest entry of block `b` of `a` (`-inf` when it holds only NaN).
pub fn block_maxima(a: &[f32], bmax: &mut [f32]) {
    assert_eq!(bmax.len(), blocks(a.len()), "block_maxima: lengths");
    for (m, blk) in bmax.iter_mut().zip(a.chunks(BLOCK)) {
        *m = blk.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    }
}

/// [`for_each_at_least`] over `a` whose block maxima are `bmax`: only the blocks whose maximum
/// reaches the threshold are read.
pub fn for_each_at_least_in_blocks(a: &[f32], bmax: &[f32], threshold: f32, mut f: impl FnMut(usize)) {
    assert_eq!(bmax.len(), blocks(a.len()), "for_each_at_least_in_blocks: lengths");
    for_each_at_least(bmax, threshold, |b| {
        let start = b * BLOCK;
        for_each_at_least(&a[start..(start + BLOCK).min(a.len())], threshold, |i| f(start + i));
    });
}

/// Scan of `a` without update.
pub fn top2(a: &[f32]) -> Top2 {
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx2() {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { x86::top2(a) };
    }
    portable::top2(a)
}

/// Calls `f(i)` for every index with `a[i] >= threshold` (never for NaN), in increasing order.
pub fn for_each_at_least(a: &[f32], threshold: f32, mut f: impl FnMut(usize)) {
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx2() {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { x86::for_each_at_least(a, threshold, &mut f) };
    }
    portable::for_each_at_least(a, threshold, f)
}

/// `a += alpha·g` (f32 Gram row), then the top-2 scan of the new `a`, and its block maxima into
/// `bmax` ([`blocks`]`(a.len())` of them).
pub fn update_top2(alpha: f32, g: &[f32], a: &mut [f32], bmax: &mut [f32]) -> Top2 {
    assert_eq!(g.len(), a.len(), "update_top2: lengths");
    assert_eq!(bmax.len(), blocks(a.len()), "update_top2: block maxima");
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx2() {
        // SAFETY: AVX2 is present (checked just above); lengths are equal.
        return unsafe { x86::update_top2_f32(alpha, g, a, bmax) };
    }
    portable::update_top2(alpha, g, a, bmax, |x| x)
}

/// `a += alpha·g` (f16 Gram row, widened exactly to f32), then the top-2 scan of the new `a`, and
/// its block maxima into `bmax`.
pub fn update_top2_f16(alpha: f32, g: &[f16], a: &mut [f32], bmax: &mut [f32]) -> Top2 {
    assert_eq!(g.len(), a.len(), "update_top2_f16: lengths");
    assert_eq!(bmax.len(), blocks(a.len()), "update_top2_f16: block maxima");
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx2() && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: AVX2 and F16C are present (checked just above); lengths are equal.
        return unsafe { x86::update_top2_f16(alpha, g, a, bmax) };
    }
    portable::update_top2(alpha, g, a, bmax, f16::to_f32)
}

/// The scalar kernels, used where AVX2 is missing (and by the tests everywhere).
mod portable {
    use super::{push, Top2, EMPTY};

    pub(super) fn top2(a: &[f32]) -> Top2 {
        let mut t = EMPTY;
        for (i, &v) in a.iter().enumerate() {
            push(&mut t, i, v);
        }
        t
    }

    pub(super) fn for_each_at_least(a: &[f32], threshold: f32, mut f: impl FnMut(usize)) {
        for (i, &v) in a.iter().enumerate() {
            if v >= threshold {
                f(i);
            }
        }
    }

    pub(super) fn update_top2<T: Copy>(
        alpha: f32,
        g: &[T],
        a: &mut [f32],
        bmax: &mut [f32],
        widen: impl Fn(T) -> f32,
    ) -> Top2 {
        let mut t = EMPTY;
        for (i, (y, &x)) in a.iter_mut().zip(g).enumerate() {
            *y += alpha * widen(x);
            push(&mut t, i, *y);
        }
        super::block_maxima(a, bmax);
        t
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{push, Top2, EMPTY};
    use half::f16;
    use std::arch::x86_64::*;

    /// Lane state of the vector scan: per lane the best value and index, and the runner-up.
    struct Lanes {
        b1: __m256,
        b2: __m256,
        i1: __m256i,
        idx: __m256i,
    }

    impl Lanes {
        #[inline(always)]
        unsafe fn new() -> Self {
            Lanes {
                b1: _mm256_set1_ps(f32::NEG_INFINITY),
                b2: _mm256_set1_ps(f32::NEG_INFINITY),
                i1: _mm256_setzero_si256(),
                idx: _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            }
        }

        /// Takes the next 8 entries (indices `idx..idx+8`).
        #[inline(always)]
        unsafe fn push(&mut self, v: __m256) {
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(v, self.b1);
            // max(v, b2) keeps b2 when v is NaN; a new best pushes the old one down.
            let nb2 = _mm256_blendv_ps(_mm256_max_ps(v, self.b2), self.b1, gt);
            self.b1 = _mm256_blendv_ps(self.b1, v, gt);
            self.i1 = _mm256_castps_si256(_mm256_blendv_ps(
                _mm256_castsi256_ps(self.i1),
                _mm256_castsi256_ps(self.idx),
                gt,
            ));
            self.b2 = nb2;
            self.idx = _mm256_add_epi32(self.idx, _mm256_set1_epi32(8));
        }

        /// Merges the lanes into the scalar answer (first index among equal bests).
        #[inline(always)]
        unsafe fn finish(&self) -> Top2 {
            let (mut b1, mut b2, mut i1) = ([0f32; 8], [0f32; 8], [0i32; 8]);
            _mm256_storeu_ps(b1.as_mut_ptr(), self.b1);
            _mm256_storeu_ps(b2.as_mut_ptr(), self.b2);
            _mm256_storeu_si256(i1.as_mut_ptr() as *mut __m256i, self.i1);
            let mut best: Option<usize> = None;
            for l in 0..8 {
                if b1[l] > f32::NEG_INFINITY {
                    best = match best {
                        Some(w) if b1[w] > b1[l] || (b1[w] == b1[l] && i1[w] < i1[l]) => Some(w),
                        _ => Some(l),
                    };
                }
            }
            let mut t = EMPTY;
            if let Some(w) = best {
                t.index = i1[w] as usize;
                t.value = b1[w];
            }
            for l in 0..8 {
                let other = if Some(l) == best { f32::NEG_INFINITY } else { b1[l] };
                t.second = t.second.max(other).max(b2[l]);
            }
            t
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn for_each_at_least(a: &[f32], threshold: f32, f: &mut impl FnMut(usize)) {
        let n = a.len();
        let t = _mm256_set1_ps(threshold);
        let chunks = n / 8;
        for ch in 0..chunks {
            let v = _mm256_loadu_ps(a.as_ptr().add(ch * 8));
            let mut mask = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(v, t)) as u32;
            while mask != 0 {
                f(ch * 8 + mask.trailing_zeros() as usize);
                mask &= mask - 1;
            }
        }
        for (i, &v) in a.iter().enumerate().skip(chunks * 8) {
            if v >= threshold {
                f(i);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn top2(a: &[f32]) -> Top2 {
        let n = a.len();
        let chunks = n / 8;
        let mut lanes = Lanes::new();
        for ch in 0..chunks {
            lanes.push(_mm256_loadu_ps(a.as_ptr().add(ch * 8)));
        }
        let mut t = lanes.finish();
        for (i, &v) in a.iter().enumerate().skip(chunks * 8) {
            push(&mut t, i, v);
        }
        t
    }

    /// The fused update-and-scan over `a`, the Gram row read 8 entries at a time by `load(chunk)`
    /// and entry by entry by `tail(i)`.
    ///
    /// The scan keeps per lane only the best and the runner-up values (`max`/`min`, no index and
    /// no blend), in two independent sets of lanes so that consecutive chunks do not wait on each
    /// other; the index of the best is found afterwards by a scan for its first occurrence, which
    /// stops early. NaN never enters: `max_ps`/`min_ps` return their second operand when either is
    /// NaN, and the operands are ordered for that.
    /// Largest lane of `v` (no NaN in `v`).
    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)))
    }

    #[inline(always)]
    unsafe fn update_top2_with(
        alpha: f32,
        a: &mut [f32],
        bmax: &mut [f32],
        load: impl Fn(usize) -> __m256,
        tail: impl Fn(usize) -> f32,
    ) -> Top2 {
        let n = a.len();
        let chunks = n / 8;
        let al = _mm256_set1_ps(alpha);
        let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
        let (mut b1, mut b2, mut c1, mut c2) = (ninf, ninf, ninf, ninf);
        let ap = a.as_mut_ptr();
        let step = |ch: usize, b1: &mut __m256, b2: &mut __m256| -> __m256 {
            let v = _mm256_add_ps(_mm256_loadu_ps(ap.add(ch * 8)), _mm256_mul_ps(al, load(ch)));
            _mm256_storeu_ps(ap.add(ch * 8), v);
            // min_ps(b1, v) is v (NaN) when v is NaN, and max_ps(NaN, b2) is b2.
            *b2 = _mm256_max_ps(_mm256_min_ps(*b1, v), *b2);
            // max_ps(v, b1) is b1 when v is NaN.
            *b1 = _mm256_max_ps(v, *b1);
            v
        };
        // Whole blocks of 8 chunks, each with its maximum.
        const PER: usize = super::BLOCK / 8;
        let full = chunks / PER;
        for blk in 0..full {
            let (mut m0, mut m1) = (ninf, ninf);
            for q in (0..PER).step_by(2) {
                let ch = blk * PER + q;
                m0 = _mm256_max_ps(step(ch, &mut b1, &mut b2), m0);
                m1 = _mm256_max_ps(step(ch + 1, &mut c1, &mut c2), m1);
            }
            *bmax.get_unchecked_mut(blk) = hmax(_mm256_max_ps(m0, m1));
        }
        let mut m = ninf;
        for ch in full * PER..chunks {
            m = _mm256_max_ps(step(ch, &mut b1, &mut b2), m);
        }
        let mut last = hmax(m);
        // Merge the two lane sets: best of the bests; runner-up of both sets and the lesser best.
        let m2 = _mm256_max_ps(_mm256_max_ps(b2, c2), _mm256_min_ps(b1, c1));
        let m1 = _mm256_max_ps(b1, c1);
        let (mut v1, mut v2) = ([0f32; 8], [0f32; 8]);
        _mm256_storeu_ps(v1.as_mut_ptr(), m1);
        _mm256_storeu_ps(v2.as_mut_ptr(), m2);
        let (mut best, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        let mut add = |v: f32| {
            if v > best {
                second = best;
                best = v;
            } else if v > second {
                second = v;
            }
        };
        v1.iter().for_each(|&v| add(v));
        for (i, y) in a.iter_mut().enumerate().skip(chunks * 8) {
            *y += alpha * tail(i);
            add(*y);
            if *y > last {
                last = *y;
            }
        }
        if full < bmax.len() {
            bmax[full] = last;
        }
        for &v in &v2 {
            second = second.max(v);
        }
        if best == f32::NEG_INFINITY {
            return Top2 { second, ..EMPTY };
        }
        // The first index holding the best value: in the first block whose maximum it is.
        let blk = bmax.iter().position(|&m| m == best).unwrap_or(0);
        let start = blk * super::BLOCK;
        let index = (start..n).find(|&i| a[i] == best).unwrap_or(usize::MAX);
        Top2 { index, value: best, second }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn update_top2_f32(alpha: f32, g: &[f32], a: &mut [f32], bmax: &mut [f32]) -> Top2 {
        let gp = g.as_ptr();
        update_top2_with(alpha, a, bmax, |ch| _mm256_loadu_ps(gp.add(ch * 8)), |i| g[i])
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn update_top2_f16(alpha: f32, g: &[f16], a: &mut [f32], bmax: &mut [f32]) -> Top2 {
        let gp = g.as_ptr() as *const __m128i;
        update_top2_with(alpha, a, bmax, |ch| _mm256_cvtph_ps(_mm_loadu_si128(gp.add(ch))), |i| g[i].to_f32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scalar definition: best (first on ties), and the max over every other index.
    fn naive(a: &[f32]) -> Top2 {
        let mut t = EMPTY;
        for (i, &v) in a.iter().enumerate() {
            if v > t.value {
                t.value = v;
                t.index = i;
            }
        }
        for (i, &v) in a.iter().enumerate() {
            if i != t.index && v > t.second {
                t.second = v;
            }
        }
        t
    }

    #[test]
    fn fused_updates_match_the_definition_and_the_plain_update() {
        for n in [1usize, 5, 8, 9, 16, 31, 100, 4099] {
            for seed in 0..12u32 {
                let g: Vec<f32> = (0..n)
                    .map(|i| ((((i as u32).wrapping_mul(2654435761) ^ seed) % 9) as f32 - 4.0) * 0.25)
                    .collect();
                let mut y0: Vec<f32> =
                    (0..n).map(|i| (((i as u32).wrapping_mul(40503) ^ (seed * 7)) % 5) as f32).collect();
                if seed % 3 == 0 {
                    y0[n / 2] = f32::NAN;
                }
                let alpha = if seed % 2 == 0 { 0.5 } else { -1.0 };
                let mut want_a = y0.clone();
                want_a.iter_mut().zip(&g).for_each(|(y, x)| *y += alpha * x);
                let want = naive(&want_a);
                let mut want_bmax = vec![0f32; blocks(n)];
                block_maxima(&want_a, &mut want_bmax);
                let mut bmax = vec![f32::NAN; blocks(n)];
                let mut a = y0.clone();
                assert_eq!(update_top2(alpha, &g, &mut a, &mut bmax), want, "f32 n {n} seed {seed}");
                assert_eq!(bmax, want_bmax, "f32 block maxima n {n} seed {seed}");
                let mut b = y0.clone();
                let mut bmax = vec![f32::NAN; blocks(n)];
                assert_eq!(
                    portable::update_top2(alpha, &g, &mut b, &mut bmax, |x| x),
                    want,
                    "portable n {n} seed {seed}"
                );
                assert_eq!(bmax, want_bmax);
                assert_eq!(portable::top2(&want_a), want);
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
                assert_eq!(
                    a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want_a.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
                // These values are exact in f16, so the f16 row gives the same answer.
                let g16: Vec<f16> = g.iter().map(|&v| f16::from_f32(v)).collect();
                let mut a = y0.clone();
                let mut bmax = vec![f32::NAN; blocks(n)];
                assert_eq!(update_top2_f16(alpha, &g16, &mut a, &mut bmax), want, "f16 n {n} seed {seed}");
                assert_eq!(bmax, want_bmax);
                let mut b = y0.clone();
                assert_eq!(portable::update_top2(alpha, &g16, &mut b, &mut bmax, f16::to_f32), want);
                assert_eq!(top2(&want_a), want);
                assert_eq!(top2(&y0), naive(&y0));
            }
        }
        let mut y = vec![f32::NAN; 10];
        let mut bmax = [0f32; 1];
        assert_eq!(update_top2(1.0, &[0.0; 10], &mut y, &mut bmax).index, usize::MAX);
        assert_eq!(bmax[0], f32::NEG_INFINITY);
        // Dense hits, and sparse ones (whole 32-entry blocks without any), with a NaN.
        for (len, modulus) in [(37usize, 11usize), (1000, 97), (77, 1009)] {
            let a: Vec<f32> = (0..len).map(|i| ((i * 7) % modulus) as f32).chain([f32::NAN, 9.0]).collect();
            let (mut got, mut got_portable) = (Vec::new(), Vec::new());
            for_each_at_least(&a, 8.0, |i| got.push(i));
            portable::for_each_at_least(&a, 8.0, |i| got_portable.push(i));
            let want: Vec<usize> = (0..a.len()).filter(|&i| a[i] >= 8.0).collect();
            assert_eq!(got, want);
            assert_eq!(got_portable, want);
            let mut bmax = vec![0f32; blocks(a.len())];
            block_maxima(&a, &mut bmax);
            let mut in_blocks = Vec::new();
            for_each_at_least_in_blocks(&a, &bmax, 8.0, |i| in_blocks.push(i));
            assert_eq!(in_blocks, want);
        }
        // A tie shows as a runner-up equal to the best.
        let t = top2(&[1.0, 3.0, 0.0, 3.0]);
        assert_eq!((t.index, t.value, t.second), (1, 3.0, 3.0));
    }
}
