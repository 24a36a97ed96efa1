//! Compute kernels of mpsae: the maths of a matching-pursuit sparse autoencoder and nothing else.
//!
//! No model, no I/O, no configuration. The model crate (`mpsae`) is written against one trait,
//! [`backend::Backend`]: the narrow seam a new backend (CUDA) implements. This crate holds two
//! implementations of it: [`backend::CpuBackend`], the fast one, built from the free functions
//! below (row-major `f32` slices, each taking a [`Par`] that says how many threads it may use),
//! and [`backend::ReferenceBackend`], a plain f64 oracle for the tests.
//!
//! - [`backend`]: the trait, its settings, and the CPU backend's planner (`backend/cpu/planner.rs`:
//!   the cost model that picks a pursuit strategy, its learned history, the Gram preparation).
//! - [`normalize`]: the row normalisations of the dictionary.
//! - [`matmul`]: `A · Bᵀ` products and the symmetric Gram matrix `D · Dᵀ` (on [`blas`] when a
//!   system OpenBLAS is present, else on the `gemm` crate).
//! - [`bf16`]: products of bf16-rounded operands (AVX-512 BF16, twice the f32 rate) with a bound on
//!   each entry's error, so that they only ever propose picks.
//! - [`gram`]: the Gram matrix as the pursuit reads it, in f32 or in f16 with per-row error
//!   bounds.
//! - [`pursuit`]: k-step matching pursuit with the signed argmax, in three strategies (plain
//!   per-step correlations, full Gram updates, Gram rows of the picked atoms only) chosen by a
//!   cost model; near ties under the Gram's error bound are re-checked exactly.
//! - [`select`]: the fused correlation update and best/runner-up scan of the Gram pursuit.
//! - [`memory`]: huge-page hints for the buffers read in picked-atom order.
//! - [`backward`]: the exact sparse backward pass through the pursuit, O(n·k·d).
//! - [`adam`]: `torch.optim.Adam` and `torch.nn.utils.clip_grad_norm_`, bit for bit in formula.
//!
//! The hot loops have AVX2 (and F16C) builds chosen at run time ([`has_avx2`]); they compute the
//! same operations in the same order as the portable code, so results do not depend on the CPU.
//!
//! Shapes are the caller's contract: a slice of the wrong length is a bug in the caller and
//! panics (as an index would), never a user-input error; the model crate validates user input.

#![warn(missing_docs)]

/// True when the CPU runs the AVX2 builds of the kernels (checked once by std, then cached).
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines a kernel `$name` from a portable body `$generic`, dispatched at run time to a copy of
/// that body compiled with AVX2 enabled when the CPU has it. The body is `#[inline(always)]`, so the
/// copy is the same code auto-vectorised 8 lanes wide instead of 4. No fused multiply-add is
/// introduced (Rust never contracts `a * b + c`), so both copies give bitwise the same results.
macro_rules! simd_kernel {
    ($(#[$m:meta])* $vis:vis fn $name:ident = $generic:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $(#[$m])*
        #[inline]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if $crate::has_avx2() {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                // SAFETY: the CPU has AVX2 (checked just above).
                return unsafe { avx2($($arg),*) };
            }
            $generic($($arg),*)
        }
    };
}
pub(crate) use simd_kernel;

pub mod adam;
pub mod backend;
pub mod backward;
pub mod bf16;
pub mod blas;
pub mod gram;
pub mod matmul;
pub mod memory;
pub mod nearest;
pub mod normalize;
pub mod pursuit;
pub mod select;

use std::num::NonZeroUsize;

/// How much parallelism a kernel may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// Run on the calling thread only.
    Seq,
    /// Use the current rayon pool, split into at most this many parts.
    Rayon(NonZeroUsize),
}

impl Par {
    /// All the threads of the current rayon pool.
    pub fn rayon() -> Self {
        Par::Rayon(NonZeroUsize::new(rayon::current_num_threads().max(1)).unwrap())
    }

    /// Number of independent parts the work is split into.
    pub fn degree(self) -> usize {
        match self {
            Par::Seq => 1,
            Par::Rayon(n) => n.get(),
        }
    }

    pub(crate) fn to_gemm(self) -> gemm::Parallelism {
        match self {
            Par::Seq => gemm::Parallelism::None,
            Par::Rayon(n) if n.get() == 1 => gemm::Parallelism::None,
            Par::Rayon(n) => gemm::Parallelism::Rayon(n.get()),
        }
    }
}

simd_kernel!(
    /// Dot product with eight independent accumulators (vectorises well, fixed summation order).
    pub fn dot = dot_generic(a: &[f32], b: &[f32]) -> f32
);

#[inline(always)]
pub(crate) fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        let (x, y) = (&a[i * 8..i * 8 + 8], &b[i * 8..i * 8 + 8]);
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

simd_kernel!(
    /// `y += alpha * x`.
    pub fn axpy = axpy_generic(alpha: f32, x: &[f32], y: &mut [f32])
);

#[inline(always)]
pub(crate) fn axpy_generic(alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

simd_kernel!(
    /// `y += alpha * x`, then `y·y`, in one pass; bitwise `axpy` followed by `dot(y, y)`.
    pub fn axpy_sumsq = axpy_sumsq_generic(alpha: f32, x: &[f32], y: &mut [f32]) -> f32
);

#[inline(always)]
pub(crate) fn axpy_sumsq_generic(alpha: f32, x: &[f32], y: &mut [f32]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    // The same lanes and final sum as `dot_generic`.
    let mut acc = [0f32; 8];
    let chunks = y.len() / 8;
    for i in 0..chunks {
        let (xs, ys) = (&x[i * 8..i * 8 + 8], &mut y[i * 8..i * 8 + 8]);
        for l in 0..8 {
            ys[l] += alpha * xs[l];
            acc[l] += ys[l] * ys[l];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 8..y.len() {
        y[i] += alpha * x[i];
        tail += y[i] * y[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

simd_kernel!(
    /// Index and value of the largest entry, the first one on exact ties (as `torch.max` on CPU).
    /// A NaN entry is never chosen over a number; an all-NaN slice gives index 0.
    pub fn argmax = argmax_generic(a: &[f32]) -> (usize, f32)
);

#[inline(always)]
pub(crate) fn argmax_generic(a: &[f32]) -> (usize, f32) {
    // Chunked scan: per-lane maxima, then the first index that holds the overall maximum.
    let mut best = f32::NEG_INFINITY;
    const L: usize = 16;
    let chunks = a.len() / L;
    let mut lane = [f32::NEG_INFINITY; L];
    for i in 0..chunks {
        let s = &a[i * L..i * L + L];
        for l in 0..L {
            lane[l] = if s[l] > lane[l] { s[l] } else { lane[l] };
        }
    }
    for &v in &lane {
        if v > best {
            best = v;
        }
    }
    for &v in &a[chunks * L..] {
        if v > best {
            best = v;
        }
    }
    match a.iter().position(|&v| v == best) {
        Some(i) => (i, best),
        None => (0, a.first().copied().unwrap_or(0.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_first_on_ties_and_signed() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -5.0]), (1, 3.0));
        assert_eq!(argmax(&[-2.0, -1.0, -1.0]), (1, -1.0));
        let mut v = vec![0.0f32; 100];
        v[77] = 2.0;
        v[93] = 2.0;
        assert_eq!(argmax(&v), (77, 2.0));
        assert_eq!(argmax(&[0.0; 40]), (0, 0.0));
        assert_eq!(argmax(&[f32::NAN, 1.0]).0, 1);
    }

    #[test]
    fn dispatched_kernels_match_the_portable_build_bitwise() {
        // On an AVX2 machine the public kernels run the AVX2 build; it must not change a bit.
        for n in [1usize, 7, 16, 33, 384, 577] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 * 0.0137).sin()).collect();
            let y0: Vec<f32> = (0..n).map(|i| ((i * 104729 % 997) as f32 * 0.0211).cos()).collect();
            assert_eq!(dot(&x, &y0).to_bits(), dot_generic(&x, &y0).to_bits());
            assert_eq!(argmax(&y0), argmax_generic(&y0));
            let (mut a, mut b) = (y0.clone(), y0.clone());
            axpy(-0.37, &x, &mut a);
            axpy_generic(-0.37, &x, &mut b);
            assert_eq!(a, b);
            let mut c = y0.clone();
            assert_eq!(axpy_sumsq(-0.37, &x, &mut c).to_bits(), dot_generic(&a, &a).to_bits());
            assert_eq!(c, a);
        }
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5);
    }
}
