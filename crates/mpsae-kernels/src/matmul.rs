//! Dense products: `A · Bᵀ` (the correlations `X · Dᵀ`) and the Gram matrix `D · Dᵀ`.
//!
//! Both run on the `gemm` crate (runtime AVX-512/AVX2 dispatch), measured fastest on our machines.

use crate::Par;
use rayon::prelude::*;

/// `out[m x n] = a[m x k] · b[n x k]ᵀ` (all row-major; `out` is overwritten).
pub fn matmul_abt(a: &[f32], b: &[f32], out: &mut [f32], m: usize, n: usize, k: usize, par: Par) {
    assert_eq!(a.len(), m * k, "matmul_abt: lhs shape");
    assert_eq!(b.len(), n * k, "matmul_abt: rhs shape");
    assert_eq!(out.len(), m * n, "matmul_abt: out shape");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: the three slices have exactly the lengths the strides below address.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par.to_gemm(),
        );
    }
}

/// Block size of the symmetric Gram product.
const GRAM_BLOCK: usize = 512;

/// `out[c x c] = d[c x dim] · d[c x dim]ᵀ`, computing only the blocks on and below the diagonal
/// (about half the flops of a full product) and mirroring them.
pub fn gram(d: &[f32], out: &mut [f32], c: usize, dim: usize, par: Par) {
    assert_eq!(d.len(), c * dim, "gram: dictionary shape");
    assert_eq!(out.len(), c * c, "gram: out shape");
    if c <= GRAM_BLOCK {
        matmul_abt(d, d, out, c, c, dim, par);
        return;
    }
    let nb = c.div_ceil(GRAM_BLOCK);
    // One task per block row i: blocks (i, 0..=i). Each task writes only rows of block i.
    let out_ptr = SendPtr(out.as_mut_ptr());
    let task = |i: usize| {
        let r0 = i * GRAM_BLOCK;
        let rows = GRAM_BLOCK.min(c - r0);
        let cols = (r0 + rows).min(c);
        // SAFETY: block row i covers rows r0..r0+rows of `out`, disjoint between tasks.
        unsafe {
            let p = out_ptr;
            gemm::gemm(
                rows,
                cols,
                dim,
                p.0.add(r0 * c),
                1,
                c as isize,
                false,
                d.as_ptr().add(r0 * dim),
                1,
                dim as isize,
                d.as_ptr(),
                dim as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    match par {
        Par::Seq => (0..nb).for_each(task),
        Par::Rayon(_) => {
            // Larger rows first for balance.
            (0..nb)
                .rev()
                .collect::<Vec<_>>()
                .into_par_iter()
                .for_each(task);
        }
    }
    // Mirror the lower triangle into the upper one.
    let out_ptr = SendPtr(out.as_mut_ptr());
    let mirror = |i: usize| {
        let p = out_ptr;
        for j in (i + 1)..c {
            // SAFETY: element (i, j) with j > i is written only by task i; (j, i) is read only.
            unsafe {
                *p.0.add(i * c + j) = *p.0.add(j * c + i);
            }
        }
    };
    match par {
        Par::Seq => (0..c).for_each(mirror),
        Par::Rayon(_) => (0..c).into_par_iter().with_min_len(64).for_each(mirror),
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn naive_abt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|l| a[i * k + l] as f64 * b[j * k + l] as f64)
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn abt_and_gram_match_naive() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for &(m, n, k) in &[(3, 5, 7), (33, 70, 19), (1, 1, 1)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            for par in [Par::Seq, Par::rayon()] {
                let mut out = vec![0f32; m * n];
                matmul_abt(&a, &b, &mut out, m, n, k, par);
                let r = naive_abt(&a, &b, m, n, k);
                for (x, y) in out.iter().zip(&r) {
                    assert!((x - y).abs() < 1e-5);
                }
            }
        }
        let (c, dim) = (1100, 9);
        let d: Vec<f32> = (0..c * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let r = naive_abt(&d, &d, c, c, dim);
        for par in [Par::Seq, Par::rayon()] {
            let mut g = vec![f32::NAN; c * c];
            gram(&d, &mut g, c, dim, par);
            for (x, y) in g.iter().zip(&r) {
                assert!((x - y).abs() < 1e-5);
            }
        }
    }
}
