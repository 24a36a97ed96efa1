//! The reference backend: the oracle the tests hold the CPU backend to. Straightforward loops,
//! every sum accumulated in f64, no Gram matrix, no threads, no tiles: slow and obviously right.

use crate::adam::{adam_step, AdamParams};
use crate::backend::{Backend, DictionaryUse, PursuitRun, Settings};
use crate::backward::BackwardInputs;
use crate::normalize::{normalize_rows, RowNorm};
use crate::pursuit::{Problem, Strategy, NO_ATOM};
use crate::Par;

/// The plain, f64-accumulating backend (`--device reference`).
#[derive(Debug)]
pub struct ReferenceBackend {
    settings: Settings,
}

/// `Σ a·b` in f64, left to right.
fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

impl Backend for ReferenceBackend {
    fn new(settings: Settings) -> Option<Self> {
        Some(ReferenceBackend { settings })
    }

    fn name(&self) -> &'static str {
        "reference"
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn configure(&mut self, settings: Settings) {
        self.settings = settings;
    }

    fn normalize(&self, norm: RowNorm, weights: &mut [f32], d: usize) {
        normalize_rows(norm, weights, d);
    }

    fn scale_dictionary(&self, weights: &[f32], scale: f32, mask: Option<&[f32]>, d: usize) -> Vec<f32> {
        let mut out: Vec<f32> = weights.iter().map(|&v| v * scale).collect();
        if let Some(m) = mask {
            for (j, row) in out.chunks_mut(d).enumerate() {
                row.iter_mut().for_each(|v| *v *= m[j]);
            }
        }
        out
    }

    fn prepare(&mut self, _: &[f32], _: usize, _: usize, _: usize, _: usize, _: u64) -> bool {
        false
    }

    fn forget(&mut self) {}

    fn pursuit(&mut self, p: &Problem, _: DictionaryUse) -> PursuitRun {
        let (n, d, c, k) = (p.n, p.d, p.c, p.k);
        let mut run = PursuitRun {
            atoms: vec![NO_ATOM; n * k],
            values: vec![0.0; n * k],
            residual: p.x.to_vec(),
            energy: vec![0.0; n * k],
            strategy: Some(Strategy::Plain),
            ..PursuitRun::default()
        };
        let mut corr = vec![0f64; c];
        for i in 0..n {
            let r = &mut run.residual[i * d..(i + 1) * d];
            let input_sq = dot64(r, r);
            // Stop once ‖r‖² <= tol²·‖x‖² (a zero row at once).
            let stop = match p.tol {
                Some(t) if t > 0.0 => Some(((t as f64) * (t as f64) * input_sq).max(f64::MIN_POSITIVE)),
                _ => None,
            };
            let mut energy = input_sq;
            for t in 0..k {
                if stop.is_some_and(|s| energy <= s) {
                    run.energy[i * k + t] = energy as f32;
                    continue;
                }
                for (j, cj) in corr.iter_mut().enumerate() {
                    *cj = dot64(r, &p.dict[j * d..(j + 1) * d]);
                }
                // Largest signed correlation, first index on exact ties, NaN never chosen.
                let mut best = 0;
                for j in 1..c {
                    if corr[j] > corr[best] || corr[best].is_nan() && !corr[j].is_nan() {
                        best = j;
                    }
                }
                let v = corr[best] as f32;
                let atom = &p.dict[best * d..(best + 1) * d];
                r.iter_mut().zip(atom).for_each(|(ri, &a)| *ri -= v * a);
                energy = dot64(r, r);
                run.atoms[i * k + t] = best as u32;
                run.values[i * k + t] = v;
                run.energy[i * k + t] = energy as f32;
            }
        }
        run
    }

    fn decode(&self, dict: &[f32], d: usize, atoms: &[u32], values: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut x_hat = vec![0f32; n * d];
        for i in 0..n {
            for col in 0..d {
                let mut s = 0f64;
                for t in 0..k {
                    let a = atoms[i * k + t];
                    if a != NO_ATOM {
                        s += values[i * k + t] as f64 * dict[a as usize * d + col] as f64;
                    }
                }
                x_hat[i * d + col] = s as f32;
            }
        }
        x_hat
    }

    fn backward(
        &mut self,
        g: &BackwardInputs,
        bounds: &[usize],
        g_dict: &mut [f32],
        g_x: Option<&mut [f32]>,
    ) {
        let (n, d, c, k) = (g.n, g.d, g.c, g.k);
        assert!(
            bounds.len() >= 2 && bounds[0] == 0 && *bounds.last().unwrap() == n,
            "backward: shard bounds"
        );
        let mut g_x = g_x;
        // One f64 accumulator per shard, summed along the same pairwise tree as the CPU backend.
        let parts = bounds.len() - 1;
        let mut shard_acc: Vec<Vec<f64>> = vec![vec![0f64; c * d]; parts];
        for (s, acc) in shard_acc.iter_mut().enumerate() {
            for row in bounds[s]..bounds[s + 1] {
                let atoms = &g.atoms[row * k..(row + 1) * k];
                let values = &g.values[row * k..(row + 1) * k];
                let g_x_hat = &g.g_x_hat[row * d..(row + 1) * d];
                // Residuals r_0..r_k, as the forward computed them.
                let mut hist = vec![g.x[row * d..(row + 1) * d].to_vec()];
                for t in 0..k {
                    let mut next = hist[t].clone();
                    if atoms[t] != NO_ATOM {
                        let j = atoms[t] as usize;
                        next.iter_mut()
                            .zip(&g.dict_encode[j * d..(j + 1) * d])
                            .for_each(|(r, &a)| *r -= values[t] * a);
                    }
                    hist.push(next);
                }
                let mut gr: Vec<f64> = match g.g_residual {
                    Some(gres) => gres[row * d..(row + 1) * d].iter().map(|&v| v as f64).collect(),
                    None => vec![0.0; d],
                };
                for t in (0..k).rev() {
                    if atoms[t] == NO_ATOM {
                        continue;
                    }
                    let j = atoms[t] as usize;
                    let v = values[t] as f64;
                    let dj = &g.dict_decode[j * d..(j + 1) * d];
                    let dmj = &g.dict_encode[j * d..(j + 1) * d];
                    let mut gv: f64 =
                        (0..d).map(|i| g_x_hat[i] as f64 * dj[i] as f64 - gr[i] * dmj[i] as f64).sum();
                    if let Some(gvals) = g.g_values {
                        gv += gvals[row * k + t] as f64;
                    }
                    let m = g.mask.map_or(1.0, |m| m[j] as f64);
                    for i in 0..d {
                        acc[j * d + i] += v * g_x_hat[i] as f64 + m * (gv * hist[t][i] as f64 - v * gr[i]);
                    }
                    for i in 0..d {
                        gr[i] += gv * dmj[i] as f64;
                    }
                }
                if let Some(gx) = g_x.as_deref_mut() {
                    gx[row * d..(row + 1) * d].iter_mut().zip(&gr).for_each(|(o, &v)| *o = v as f32);
                }
            }
        }
        // The tree, in f32 like the CPU backend's accumulators after each shard.
        let mut parts32: Vec<Vec<f32>> =
            shard_acc.into_iter().map(|a| a.into_iter().map(|v| v as f32).collect()).collect();
        let sum = crate::backward::tree_sum(&mut parts32);
        g_dict.copy_from_slice(&sum);
    }

    fn nearest_atoms(
        &self,
        dict: &[f32],
        c: usize,
        d: usize,
        related: usize,
        _: Option<u64>,
    ) -> Vec<Vec<(u32, f32)>> {
        let norm: Vec<f64> = dict.chunks(d.max(1)).map(|a| dot64(a, a).sqrt()).collect();
        (0..c)
            .map(|i| {
                let mut all: Vec<(u32, f32)> = (0..c)
                    .filter(|&j| j != i)
                    .map(|j| {
                        let cos = dot64(&dict[i * d..(i + 1) * d], &dict[j * d..(j + 1) * d])
                            / (norm[i] * norm[j]).max(f64::MIN_POSITIVE);
                        (j as u32, cos as f32)
                    })
                    .collect();
                all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                all.truncate(related);
                all
            })
            .collect()
    }

    fn adam_step(
        &self,
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        step: u64,
        hp: &AdamParams,
    ) {
        adam_step(param, grad, m, v, step, hp, Par::Seq);
    }
}
