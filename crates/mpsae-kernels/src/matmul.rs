//! Dense products: `A · Bᵀ` (the correlations `X · Dᵀ`) and the Gram matrix `D · Dᵀ`.
//!
//! Both run on the `gemm` crate (runtime AVX-512/AVX2 dispatch), measured fastest on our machines.

use crate::blas::fits;
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
    if let Some(blas) = crate::blas::openblas() {
        if fits(&[m, n, k]) {
            // OpenBLAS runs single-threaded inside rayon tasks over row blocks: one thread pool
            // for everything, so its threads never fight rayon's for the cores.
            let threads = par.degree();
            if threads > 1 && m < COLUMN_SPLIT_ROWS * threads && n >= COLUMN_SPLIT_ROWS * threads {
                // Few rows (gram-picked's per-step products): one column block of `b` per thread,
                // so each call keeps every row (row blocks of a few dozen rows run slowly).
                let cols = n.div_ceil(threads);
                let out_ptr = SendPtr(out.as_mut_ptr());
                (0..n.div_ceil(cols)).into_par_iter().for_each(|i| {
                    let p = out_ptr;
                    let c0 = i * cols;
                    let w = cols.min(n - c0);
                    // SAFETY: task i writes columns c0..c0+w of every row (stride n), disjoint
                    // between tasks; `b` holds those w rows of k floats.
                    unsafe { blas.abt_strided(a, &b[c0 * k..(c0 + w) * k], p.0.add(c0), m, w, k, n) };
                });
                return;
            }
            let parts = match par {
                Par::Seq => 1,
                Par::Rayon(t) => (2 * t.get()).min(m.div_ceil(64)).max(1),
            };
            let rows = m.div_ceil(parts);
            if parts == 1 {
                blas.abt(a, b, out, m, n, k);
            } else {
                out.par_chunks_mut(rows * n).zip(a.par_chunks(rows * k)).for_each(|(o, a)| {
                    blas.abt(a, b, o, a.len() / k, n, k);
                });
            }
            return;
        }
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

/// Below this many rows per thread (and with at least as many columns per thread), a product is
/// split over the threads by columns of `b` instead of rows of `a`: single-threaded OpenBLAS
/// `sgemm` of `m x 4096 x 384` ran at 60 GFLOP/s with 64 rows, 67 with 128 or 256 and 75 with
/// 512 (this machine), so thin row blocks waste a fifth of the rate.
const COLUMN_SPLIT_ROWS: usize = 256;

/// Block size of the symmetric Gram product.
const GRAM_BLOCK: usize = 512;

/// `out[c x c] = d[c x dim] · d[c x dim]ᵀ`, computing only the blocks on and below the diagonal
/// (about half the flops of a full product; single-threaded OpenBLAS or `gemm` per block, blocks
/// spread over rayon) and mirroring them.
pub fn gram(d: &[f32], out: &mut [f32], c: usize, dim: usize, par: Par) {
    assert_eq!(d.len(), c * dim, "gram: dictionary shape");
    assert_eq!(out.len(), c * c, "gram: out shape");
    if c == 0 {
        return;
    }
    if c <= GRAM_BLOCK {
        matmul_abt(d, d, out, c, c, dim, par);
        return;
    }
    let blas = crate::blas::openblas().filter(|_| fits(&[c, c]) && fits(&[c, dim]));
    let nb = c.div_ceil(GRAM_BLOCK);
    // One task per block row i: blocks (i, 0..=i). Each task writes only rows of block i.
    let out_ptr = SendPtr(out.as_mut_ptr());
    let task = |i: usize| {
        let r0 = i * GRAM_BLOCK;
        let rows = GRAM_BLOCK.min(c - r0);
        let cols = (r0 + rows).min(c);
        let p = out_ptr;
        if let Some(blas) = blas {
            // SAFETY: block row i covers rows r0..r0+rows of `out`, disjoint between tasks; the
            // slice below is exactly those rows' first `cols` columns with row stride c.
            unsafe { blas.abt_strided(&d[r0 * dim..], d, p.0.add(r0 * c), rows, cols, dim, c) };
            return;
        }
        // SAFETY: block row i covers rows r0..r0+rows of `out`, disjoint between tasks.
        unsafe {
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
        // Larger rows first for balance.
        Par::Rayon(_) => (0..nb).rev().collect::<Vec<_>>().into_par_iter().for_each(task),
    }
    mirror_lower(out, c, par);
}

/// Copies the lower triangle of a `c x c` row-major matrix onto its upper triangle, by tiles:
/// each tile below the diagonal is read row by row into a small buffer and written back transposed
/// row by row, so both sides stream through memory contiguously. 64 x 64 tiles: the f16 mirror of
/// `gram_probe` took 4.4-6.9 ms at c=4096 and 73-102 ms at c=16384 with them, against 6.3-8.5 and
/// 88-126 ms with 32 x 32 (128 x 128 was no faster than 64).
pub(crate) fn mirror_lower<T: Copy + Default + Send + Sync>(out: &mut [T], c: usize, par: Par) {
    const TILE: usize = 64;
    let nt = c.div_ceil(TILE);
    let out_ptr = SendPtr(out.as_mut_ptr());
    // Task bi writes tile row bi right of the diagonal ((i, j), j > i) from tile column bi below
    // it ((j, i), read-only): no two tasks write the same element, none writes what another reads.
    let task = |bi: usize| {
        let p = out_ptr;
        let i0 = bi * TILE;
        let ih = (i0 + TILE).min(c) - i0;
        let mut buf = [T::default(); TILE * TILE];
        for bj in bi..nt {
            let j0 = bj * TILE;
            let jh = (j0 + TILE).min(c) - j0;
            // buf[jj][ii] = out[j0 + jj][i0 + ii]
            for jj in 0..jh {
                // SAFETY: row j0 + jj, columns i0..i0+ih are inside the matrix and only read here.
                let src = unsafe { std::slice::from_raw_parts(p.0.add((j0 + jj) * c + i0), ih) };
                buf[jj * TILE..jj * TILE + ih].copy_from_slice(src);
            }
            for ii in 0..ih {
                let i = i0 + ii;
                let start = if bj == bi { ii + 1 } else { 0 };
                for jj in start..jh {
                    // SAFETY: (i, j0 + jj) with j0 + jj > i is written only by task bi.
                    unsafe { *p.0.add(i * c + j0 + jj) = buf[jj * TILE + ii] };
                }
            }
        }
    };
    match par {
        Par::Seq => (0..nt).for_each(task),
        Par::Rayon(_) => (0..nt).into_par_iter().with_min_len(4).for_each(task),
    }
}

/// A raw pointer that tasks on other threads may use, each to its own disjoint part of the buffer.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: the users write disjoint regions (stated at each use).
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Sync> Sync for SendPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn naive_abt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] =
                    (0..k).map(|l| a[i * k + l] as f64 * b[j * k + l] as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn abt_and_gram_match_naive() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // The last two split by columns on 2 to 4 threads (few rows, many columns).
        for &(m, n, k) in &[(3, 5, 7), (33, 70, 19), (1, 1, 1), (5, 1100, 9), (260, 1300, 17)] {
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
        // Both back ends (the system BLAS, when present, and the gemm crate).
        for disabled in [false, true] {
            crate::blas::set_disabled(disabled);
            for par in [Par::Seq, Par::rayon()] {
                let mut g = vec![f32::NAN; c * c];
                gram(&d, &mut g, c, dim, par);
                for (x, y) in g.iter().zip(&r) {
                    assert!((x - y).abs() < 1e-5);
                }
            }
        }
        crate::blas::set_disabled(false);
    }
}
