//! Compute kernels of mpsae: the maths of a matching-pursuit sparse autoencoder and nothing else.
//!
//! No model, no I/O, no configuration: free functions over row-major `f32` slices, each taking a
//! [`Par`] that says how many threads it may use. The model crate (`mpsae`) is written against
//! these functions, so that another backend (CUDA) can provide the same operations later.
//!
//! - [`matmul`]: `A · Bᵀ` products and the symmetric Gram matrix `D · Dᵀ` (on [`blas`] when a
//!   system OpenBLAS is present, else on the `gemm` crate).
//! - [`pursuit`]: k-step matching pursuit with the signed argmax, in three strategies (plain
//!   per-step correlations, full Gram updates, Gram rows of the picked atoms only) chosen by a
//!   cost model.
//! - [`backward`]: the exact sparse backward pass through the pursuit, O(n·k·d).
//! - [`adam`]: `torch.optim.Adam` and `torch.nn.utils.clip_grad_norm_`, bit for bit in formula.
//!
//! Shapes are the caller's contract: a slice of the wrong length is a bug in the caller and
//! panics (as an index would), never a user-input error; the model crate validates user input.

#![warn(missing_docs)]

pub mod adam;
pub mod backward;
pub mod blas;
pub mod matmul;
pub mod pursuit;

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

/// Dot product with four independent accumulators (vectorises well, fixed summation order).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
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

/// `y += alpha * x`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Index and value of the largest entry, the first one on exact ties (as `torch.max` on CPU).
/// A NaN entry is never chosen over a number; an all-NaN slice gives index 0.
#[inline]
pub fn argmax(a: &[f32]) -> (usize, f32) {
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

/// `y += alpha * x`, then the index and value of the largest entry of the new `y` (first index on
/// exact ties, NaN never chosen), in one pass over `y`.
#[inline]
pub fn axpy_argmax(alpha: f32, x: &[f32], y: &mut [f32]) -> (usize, f32) {
    debug_assert_eq!(x.len(), y.len());
    const L: usize = 8;
    let mut best_v = [f32::NEG_INFINITY; L];
    let mut best_i = [0u32; L];
    let chunks = y.len() / L;
    for ch in 0..chunks {
        let base = ch * L;
        let (ys, xs) = (&mut y[base..base + L], &x[base..base + L]);
        for l in 0..L {
            let v = ys[l] + alpha * xs[l];
            ys[l] = v;
            let better = v > best_v[l];
            best_v[l] = if better { v } else { best_v[l] };
            best_i[l] = if better { (base + l) as u32 } else { best_i[l] };
        }
    }
    let (mut bi, mut bv) = (usize::MAX, f32::NEG_INFINITY);
    for l in 0..L {
        let i = best_i[l] as usize;
        if best_v[l] > bv || (best_v[l] == bv && best_v[l] > f32::NEG_INFINITY && i < bi) {
            bv = best_v[l];
            bi = i;
        }
    }
    for i in chunks * L..y.len() {
        let v = y[i] + alpha * x[i];
        y[i] = v;
        if v > bv {
            bv = v;
            bi = i;
        }
    }
    if bi == usize::MAX {
        // Every entry is NaN or -inf: fall back to the plain scan's answer.
        return argmax(y);
    }
    (bi, bv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_axpy_argmax_matches_the_two_passes() {
        for n in [1usize, 7, 8, 9, 33, 100] {
            for seed in 0..20u32 {
                let x: Vec<f32> =
                    (0..n).map(|i| (((i as u32 * 2654435761u32) ^ seed) % 7) as f32 - 3.0).collect();
                let y0: Vec<f32> =
                    (0..n).map(|i| (((i as u32 * 40503u32) ^ (seed * 7)) % 5) as f32).collect();
                let alpha = if seed % 2 == 0 { 0.5 } else { -1.0 };
                let mut a = y0.clone();
                axpy(alpha, &x, &mut a);
                let want = argmax(&a);
                let mut b = y0.clone();
                assert_eq!(axpy_argmax(alpha, &x, &mut b), want, "n {n} seed {seed}");
                assert_eq!(a, b);
            }
        }
        let mut y = vec![f32::NAN; 10];
        assert_eq!(axpy_argmax(1.0, &[0.0; 10], &mut y).0, 0);
    }

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
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5);
    }
}
