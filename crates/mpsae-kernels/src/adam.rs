//! `torch.optim.Adam` (default, single-tensor path) and `torch.nn.utils.clip_grad_norm_`.

use crate::Par;
use rayon::prelude::*;

/// Adam hyper-parameters (torch's defaults from [`Default`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        AdamParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// One Adam update of `param` in place, as torch does it at step `step` (counted from 1):
/// `m ← m + (1-β1)(g-m)`, `v ← β2·v + (1-β2)·g²`,
/// `p ← p - lr/(1-β1^t) · m / (√v/√(1-β2^t) + eps)`.
pub fn adam_step(
    param: &mut [f32],
    grad: &[f32],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    step: u64,
    hp: &AdamParams,
    par: Par,
) {
    assert!(step >= 1, "adam_step: steps count from 1");
    let n = param.len();
    assert!(grad.len() == n && exp_avg.len() == n && exp_avg_sq.len() == n);
    let bc1 = 1.0 - hp.beta1.powi(step.min(i32::MAX as u64) as i32);
    let bc2 = 1.0 - hp.beta2.powi(step.min(i32::MAX as u64) as i32);
    let step_size = (hp.lr / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let w1 = (1.0 - hp.beta1) as f32;
    let b2 = hp.beta2 as f32;
    let w2 = (1.0 - hp.beta2) as f32;
    let eps = hp.eps as f32;
    let update = |(((p, g), m), v): (((&mut [f32], &[f32]), &mut [f32]), &mut [f32])| {
        for i in 0..p.len() {
            let gi = g[i];
            m[i] += w1 * (gi - m[i]);
            v[i] = v[i] * b2 + w2 * gi * gi;
            let denom = v[i].sqrt() / bc2_sqrt + eps;
            p[i] += -step_size * (m[i] / denom);
        }
    };
    const CHUNK: usize = 1 << 14;
    match par {
        Par::Seq => update((((param, grad), exp_avg), exp_avg_sq)),
        Par::Rayon(_) => param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(exp_avg.par_chunks_mut(CHUNK))
            .zip(exp_avg_sq.par_chunks_mut(CHUNK))
            .for_each(update),
    }
}

/// The global L2 norm over several gradient tensors (each norm in f64, then combined).
pub fn global_norm(grads: &[&[f32]]) -> f64 {
    grads
        .iter()
        .map(|g| {
            // Fixed-order chunked sum: deterministic and accurate.
            g.chunks(4096).map(|c| c.iter().map(|&v| v as f64 * v as f64).sum::<f64>()).sum::<f64>()
        })
        .sum::<f64>()
        .sqrt()
}

/// The factor `clip_grad_norm_` multiplies every gradient by: `min(1, max_norm / (total + 1e-6))`.
pub fn clip_coef(total_norm: f64, max_norm: f64) -> f32 {
    (max_norm / (total_norm + 1e-6)).min(1.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_matches_hand_computation() {
        let hp = AdamParams::default();
        let mut p = vec![1.0f32, -2.0];
        let g = [0.5f32, -0.25];
        let (mut m, mut v) = (vec![0f32; 2], vec![0f32; 2]);
        adam_step(&mut p, &g, &mut m, &mut v, 1, &hp, Par::Seq);
        // First step of Adam moves each entry by lr·sign(g) (up to eps).
        assert!((p[0] - (1.0 - 1e-3)).abs() < 1e-7);
        assert!((p[1] - (-2.0 + 1e-3)).abs() < 1e-7);
        assert!((clip_coef(global_norm(&[&g]), 1.0) - 1.0).abs() < 1e-7);
        let big = [3.0f32, 4.0];
        assert!((clip_coef(global_norm(&[&big]), 1.0) - 0.2).abs() < 1e-6);
    }
}
