//! The exact backward pass through the pursuit, sparse: O(n·k·d), no `n x c` tensor.
//!
//! The argmax has no gradient, so only the picked atoms receive one. With `Dm = D·mask` the
//! encode dictionary and `D` the decode one, going back over the steps `t = k..1` of a row:
//!
//! ```text
//! gv   = g_x_hat·D_j - gr·Dm_j + g_v[t]        (gr = dL/dr_t, starts at dL/dresidual)
//! dD_j  += v·g_x_hat                             (decode: x_hat = Σ v_t D_{j_t})
//! dDm_j += gv·r_{t-1} - v·gr                    (the correlation v = r_{t-1}·Dm_j and the update)
//! gr    += gv·Dm_j                              (r_t = r_{t-1} - v·Dm_j)
//! ```
//!
//! and at the end `dL/dx = gr` (plus the loss's own direct term, added by the caller),
//! `dL/dD = dD + mask·dDm`. The residuals `r_{t-1}` are recomputed from `x` and the picks with the
//! same operations as the forward pass, so they are bitwise the ones the forward used.

use crate::pursuit::NO_ATOM;
use crate::{axpy_generic as axpy, dot_generic as dot, Par};
use rayon::prelude::*;

/// Inputs of the backward pass. Shapes: `x`, `g_x_hat`, `g_residual` are `n x d`; `atoms`,
/// `values`, `g_values` are `n x k`; `dict_encode`, `dict_decode` are `c x d`; `mask` is `c`.
#[derive(Clone, Copy)]
pub struct BackwardInputs<'a> {
    /// Input rows.
    pub x: &'a [f32],
    /// Number of rows.
    pub n: usize,
    /// Row dimension.
    pub d: usize,
    /// Number of atoms.
    pub c: usize,
    /// Number of pursuit steps.
    pub k: usize,
    /// The dictionary the pursuit used (`D·mask` with dropout).
    pub dict_encode: &'a [f32],
    /// The dictionary the decode used (`D`).
    pub dict_decode: &'a [f32],
    /// Dropout mask over atoms (0 or 1), if any.
    pub mask: Option<&'a [f32]>,
    /// Picked atoms, in pursuit order.
    pub atoms: &'a [u32],
    /// Picked values.
    pub values: &'a [f32],
    /// dL/dx_hat.
    pub g_x_hat: &'a [f32],
    /// dL/d(final residual), if the loss depends on it.
    pub g_residual: Option<&'a [f32]>,
    /// dL/d(value of each pick), i.e. dL/dcodes at the picked atoms, if the loss depends on codes.
    pub g_values: Option<&'a [f32]>,
}

/// Per-thread gradient accumulators kept between calls of [`backward`], so that a training loop
/// does not allocate (and page-fault in) a `c x d` buffer per thread at every step.
#[derive(Clone, Debug, Default)]
pub struct BackwardScratch {
    /// Accumulators of the shards beyond the first, all zero between calls.
    parts: Vec<Vec<f32>>,
}

/// The bounds of `shards` micro-shards over `n` rows: shard `s` holds rows
/// `bounds[s]..bounds[s + 1]`, with `bounds[s] = s·n / shards` (some are empty when `n < shards`).
pub fn shard_bounds(n: usize, shards: usize) -> Vec<usize> {
    let shards = shards.max(1);
    (0..=shards).map(|s| s * n / shards).collect()
}

/// Gradients with respect to the dictionary (`c x d`, written to `g_dict`, overwritten) and, when
/// `g_x` is given, to the input through the pursuit (`n x d`, overwritten). Training needs only
/// the first; skipping the second saves an `n x d` buffer.
///
/// The rows are cut into the micro-shards `bounds` (see [`shard_bounds`]): each shard's gradient
/// is accumulated alone, in row order, and the shards are summed along a fixed pairwise tree
/// (`(s0 + s1) + (s2 + s3)`, ...). The result depends on the shards only, never on the number of
/// threads or on scheduling; a process that holds an aligned block of a larger batch's shards
/// computes exactly that block's subtree, so processes can complete the tree between them and
/// get the one-process result bit for bit. The accumulators beyond `g_dict` live in `scratch`.
pub fn backward(
    g: &BackwardInputs,
    bounds: &[usize],
    par: Par,
    g_dict: &mut [f32],
    g_x: Option<&mut [f32]>,
    scratch: &mut BackwardScratch,
) {
    let (n, d, c, k) = (g.n, g.d, g.c, g.k);
    assert_eq!(g.x.len(), n * d);
    assert_eq!(g.atoms.len(), n * k);
    assert_eq!(g.values.len(), n * k);
    assert_eq!(g.g_x_hat.len(), n * d);
    assert_eq!(g_dict.len(), c * d);
    assert!(bounds.len() >= 2 && bounds[0] == 0 && *bounds.last().unwrap() == n, "backward: shard bounds");
    assert!(bounds.windows(2).all(|w| w[0] <= w[1]), "backward: shard bounds");
    if let Some(gx) = &g_x {
        assert_eq!(gx.len(), n * d);
    }
    let parts = bounds.len() - 1;
    g_dict.fill(0.0);
    // The extra accumulators are kept all zero between calls: only the atom rows a shard touched
    // are summed, then zeroed again (a shard of a few hundred rows touches a fraction of them).
    scratch.parts.resize_with(parts - 1, Vec::new);
    for e in scratch.parts.iter_mut() {
        crate::memory::grow_huge(e, c * d, 0f32);
    }
    // Which atoms each shard picked (its accumulator's only non-zero rows).
    let touched: Vec<Vec<bool>> = bounds
        .windows(2)
        .map(|w| {
            let mut t = vec![false; c];
            for &a in &g.atoms[w[0] * k..w[1] * k] {
                if a != NO_ATOM {
                    t[a as usize] = true;
                }
            }
            t
        })
        .collect();
    let extra = &mut scratch.parts;
    {
        let mut accs: Vec<&mut [f32]> = Vec::with_capacity(parts);
        accs.push(g_dict);
        for e in extra.iter_mut() {
            accs.push(e.as_mut_slice());
        }
        let work = |(part, (acc, mut gx)): (usize, (&mut &mut [f32], Option<&mut [f32]>))| {
            let (r0, r1) = (bounds[part], bounds[part + 1]);
            let mut hist = vec![0f32; (k + 1) * d];
            let mut scratch = vec![0f32; if gx.is_some() { 0 } else { d }];
            for row in r0..r1 {
                let gr = match gx.as_deref_mut() {
                    Some(rows) => &mut rows[(row - r0) * d..(row - r0 + 1) * d],
                    None => scratch.as_mut_slice(),
                };
                backward_row(g, row, &mut hist, acc, gr);
            }
        };
        let gx_parts: Vec<Option<&mut [f32]>> = match g_x {
            Some(mut gx) => {
                let mut out = Vec::with_capacity(parts);
                for w in bounds.windows(2) {
                    let (head, tail) = std::mem::take(&mut gx).split_at_mut((w[1] - w[0]) * d);
                    out.push(Some(head));
                    gx = tail;
                }
                out
            }
            None => (0..parts).map(|_| None).collect(),
        };
        let it = accs.iter_mut().zip(gx_parts).enumerate();
        match par {
            Par::Seq => it.for_each(work),
            Par::Rayon(_) => it.collect::<Vec<_>>().into_par_iter().for_each(work),
        }
    }
    // The pairwise tree: part 0 is `g_dict`, part i > 0 is extra[i - 1]. A row a shard did not
    // touch is exactly +0 (sums from +0 never give -0), so skipping it changes no bit.
    let mut accs: Vec<&mut [f32]> = Vec::with_capacity(parts);
    accs.push(g_dict);
    for e in extra.iter_mut() {
        accs.push(e.as_mut_slice());
    }
    let mut touched = touched;
    let mut stride = 1;
    while stride < parts {
        let mut i = 0;
        while i + stride < parts {
            let (l, r) = accs.split_at_mut(i + stride);
            let (tl, tr) = touched.split_at_mut(i + stride);
            add_rows_into(l[i], r[0], &tr[0], d, par);
            tl[i].iter_mut().zip(&tr[0]).for_each(|(a, &b)| *a |= b);
            i += 2 * stride;
        }
        stride *= 2;
    }
    // Back to all zero for the next call.
    for (acc, t) in accs.iter_mut().zip(&touched).skip(1) {
        zero_rows(acc, t, d, par);
    }
}

/// `dst[j] += src[j]` for the atom rows `j` with `rows[j]`.
fn add_rows_into(dst: &mut [f32], src: &[f32], rows: &[bool], d: usize, par: Par) {
    let add = |(j, a): (usize, &mut [f32])| {
        if rows[j] {
            a.iter_mut().zip(&src[j * d..(j + 1) * d]).for_each(|(x, y)| *x += y);
        }
    };
    match par {
        Par::Seq => dst.chunks_mut(d.max(1)).enumerate().for_each(add),
        Par::Rayon(_) => dst.par_chunks_mut(d.max(1)).enumerate().with_min_len(64).for_each(add),
    }
}

/// Zeroes the atom rows `j` with `rows[j]`.
fn zero_rows(acc: &mut [f32], rows: &[bool], d: usize, par: Par) {
    let zero = |(j, a): (usize, &mut [f32])| {
        if rows[j] {
            a.fill(0.0);
        }
    };
    match par {
        Par::Seq => acc.chunks_mut(d.max(1)).enumerate().for_each(zero),
        Par::Rayon(_) => acc.par_chunks_mut(d.max(1)).enumerate().with_min_len(64).for_each(zero),
    }
}

/// The sum of several shards' gradients (`c x d` each, in shard order) along the pairwise tree
/// of [`backward`]: what `backward` over all their rows gives, bit for bit, when each part is an
/// aligned block of shards (a power-of-two count of them).
pub fn tree_sum(parts: &mut [Vec<f32>]) -> Vec<f32> {
    let n = parts.len();
    assert!(n > 0, "tree_sum: no parts");
    let mut stride = 1;
    while stride < n {
        let mut i = 0;
        while i + stride < n {
            let (l, r) = parts.split_at_mut(i + stride);
            l[i].iter_mut().zip(&r[0]).for_each(|(a, b)| *a += b);
            i += 2 * stride;
        }
        stride *= 2;
    }
    std::mem::take(&mut parts[0])
}

crate::simd_kernel!(
    /// One row's backward pass (dispatched to its AVX2 build when the CPU has it).
    fn backward_row = backward_row_generic(
        g: &BackwardInputs,
        row: usize,
        hist: &mut [f32],
        acc: &mut [f32],
        gr: &mut [f32],
    )
);

#[inline(always)]
fn backward_row_generic(g: &BackwardInputs, row: usize, hist: &mut [f32], acc: &mut [f32], gr: &mut [f32]) {
    let (d, k) = (g.d, g.k);
    let atoms = &g.atoms[row * k..(row + 1) * k];
    let values = &g.values[row * k..(row + 1) * k];
    let g_x_hat = &g.g_x_hat[row * d..(row + 1) * d];
    // r_0 .. r_k, recomputed exactly as the forward did.
    hist[..d].copy_from_slice(&g.x[row * d..(row + 1) * d]);
    for t in 0..k {
        let (prev, next) = hist[t * d..(t + 2) * d].split_at_mut(d);
        next.copy_from_slice(prev);
        if atoms[t] != NO_ATOM {
            let j = atoms[t] as usize;
            axpy(-values[t], &g.dict_encode[j * d..(j + 1) * d], next);
        }
    }
    match g.g_residual {
        Some(gres) => gr.copy_from_slice(&gres[row * d..(row + 1) * d]),
        None => gr.fill(0.0),
    }
    for t in (0..k).rev() {
        if atoms[t] == NO_ATOM {
            continue;
        }
        let j = atoms[t] as usize;
        let v = values[t];
        let dj = &g.dict_decode[j * d..(j + 1) * d];
        let dmj = &g.dict_encode[j * d..(j + 1) * d];
        let mut gv = dot(g_x_hat, dj) - dot(gr, dmj);
        if let Some(gvals) = g.g_values {
            gv += gvals[row * k + t];
        }
        let acc_j = &mut acc[j * d..(j + 1) * d];
        let m = g.mask.map_or(1.0, |m| m[j]);
        let r_prev = &hist[t * d..(t + 1) * d];
        if m != 0.0 {
            for i in 0..d {
                acc_j[i] += v * g_x_hat[i] + m * (gv * r_prev[i] - v * gr[i]);
            }
        } else {
            axpy(v, g_x_hat, acc_j);
        }
        axpy(gv, dmj, gr);
    }
}
