//! Each atom's nearest other atoms by cosine, from the dictionary (blocks of `D·Dᵀ`, never the
//! `c x c` matrix) or from a Gram matrix already at hand.

use crate::gram::GramRef;
use crate::matmul::matmul_abt;
use crate::{dot, Par};
use rayon::prelude::*;

/// The `related` largest entries of `row` other than `skip`, largest first (ties: lower index),
/// by insertion: no row-sized allocation.
fn best_of(row: impl Iterator<Item = f32>, skip: usize, related: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(related + 1);
    for (j, v) in row.enumerate() {
        if related == 0 || j == skip || v.is_nan() || (best.len() == related && v <= best[related - 1].1) {
            continue;
        }
        let at = best.partition_point(|&(_, b)| b >= v);
        best.insert(at, (j as u32, v));
        best.truncate(related);
    }
    best
}

/// Nearest atoms of the `c x d` dictionary `dict` by cosine: `related` per atom, `(atom, cosine)`.
pub fn nearest_atoms(dict: &[f32], c: usize, d: usize, related: usize, par: Par) -> Vec<Vec<(u32, f32)>> {
    let mut unit = dict.to_vec();
    for a in unit.chunks_mut(d.max(1)) {
        let n = dot(a, a).sqrt();
        if n > 0.0 {
            a.iter_mut().for_each(|v| *v /= n);
        }
    }
    let block = 256.min(c.max(1));
    let mut out = Vec::with_capacity(c);
    let mut sims = vec![0f32; block * c];
    for r0 in (0..c).step_by(block) {
        let rows = block.min(c - r0);
        matmul_abt(&unit[r0 * d..(r0 + rows) * d], &unit, &mut sims[..rows * c], rows, c, d, par);
        let picked: Vec<Vec<(u32, f32)>> = sims[..rows * c]
            .par_chunks(c.max(1))
            .enumerate()
            .map(|(i, row)| best_of(row.iter().copied(), r0 + i, related))
            .collect();
        out.extend(picked);
    }
    out
}

/// [`nearest_atoms`] from the Gram matrix `g` of the dictionary: `cos(i, j) = G_ij / √(G_ii·G_jj)`
/// (an f16 Gram gives cosines to about 1e-3, enough to rank neighbours for display).
pub fn nearest_from_gram(g: GramRef, c: usize, related: usize) -> Vec<Vec<(u32, f32)>> {
    let entry = |i: usize, j: usize| match g {
        GramRef::F32 { values, .. } => values[i * c + j],
        GramRef::F16 { values, .. } => values[i * c + j].to_f32(),
    };
    let norms: Vec<f32> = (0..c).map(|i| entry(i, i).max(0.0).sqrt().max(f32::MIN_POSITIVE)).collect();
    (0..c)
        .into_par_iter()
        .map(|i| best_of((0..c).map(|j| entry(i, j) / (norms[i] * norms[j])), i, related))
        .collect()
}
