//! The optimiser (Adam, as `torch.optim.Adam`), gradient clipping and the learning-rate schedule.

use crate::model::{Gradients, MpSae};
pub use mpsae_kernels::adam::AdamParams;
use mpsae_kernels::adam::{adam_step, clip_coef};
use mpsae_kernels::backend::Backend;
use mpsae_kernels::Par;
use serde::{Deserialize, Serialize};

/// Adam's state for an MP-SAE's parameters (`W` and, when trained, `m`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    /// Hyper-parameters (`lr` is the base rate; a schedule may scale it per step).
    #[serde(with = "adam_params_serde")]
    pub params: AdamParams,
    /// Steps taken so far.
    pub step: u64,
    /// First moment of `W`, `c x d`.
    #[serde(skip)]
    pub exp_avg: Vec<f32>,
    /// Second moment of `W`, `c x d`.
    #[serde(skip)]
    pub exp_avg_sq: Vec<f32>,
    /// First moment of `m`.
    pub multiplier_exp_avg: f32,
    /// Second moment of `m`.
    pub multiplier_exp_avg_sq: f32,
}

mod adam_params_serde {
    use super::AdamParams;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    #[derive(Serialize, Deserialize)]
    struct P {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    }
    pub fn serialize<S: Serializer>(p: &AdamParams, s: S) -> Result<S::Ok, S::Error> {
        P { lr: p.lr, beta1: p.beta1, beta2: p.beta2, eps: p.eps }.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AdamParams, D::Error> {
        let p = P::deserialize(d)?;
        Ok(AdamParams { lr: p.lr, beta1: p.beta1, beta2: p.beta2, eps: p.eps })
    }
}

impl Adam {
    /// Fresh state for a dictionary of `len = c·d` weights.
    pub fn new(params: AdamParams, len: usize) -> Self {
        Adam {
            params,
            step: 0,
            exp_avg: vec![0.0; len],
            exp_avg_sq: vec![0.0; len],
            multiplier_exp_avg: 0.0,
            multiplier_exp_avg_sq: 0.0,
        }
    }

    /// One update of the model's parameters with `grads`, at learning rate `lr`. The multiplier
    /// is updated only when it has a gradient (the model trains it).
    pub fn step(&mut self, model: &mut MpSae, grads: &Gradients, lr: f64) {
        self.step += 1;
        let hp = AdamParams { lr, ..self.params };
        let (w, m, backend) = model.parameters_and_backend();
        backend.adam_step(w, &grads.weights, &mut self.exp_avg, &mut self.exp_avg_sq, self.step, &hp);
        if let Some(gm) = grads.multiplier {
            let (mut p, mut a, mut v) = ([*m], [self.multiplier_exp_avg], [self.multiplier_exp_avg_sq]);
            adam_step(&mut p, &[gm], &mut a, &mut v, self.step, &hp, Par::Seq);
            *m = p[0];
            self.multiplier_exp_avg = a[0];
            self.multiplier_exp_avg_sq = v[0];
        }
    }
}

/// The global L2 norm of the parameter gradients (`W`, and `m` when trained), on `backend`.
pub fn gradient_norm(backend: &dyn Backend, grads: &Gradients) -> f64 {
    let m = grads.multiplier.map(|g| g as f64 * g as f64).unwrap_or(0.0);
    (backend.sum_of_squares(&grads.weights) + m).sqrt()
}

/// `clip_grad_norm_(parameters, max_norm)`: scales the parameter gradients so that their global
/// norm is at most `max_norm`; returns the norm before clipping. `max_norm <= 0` turns it off.
pub fn clip_gradients(backend: &dyn Backend, grads: &mut Gradients, max_norm: f64) -> f64 {
    let total = gradient_norm(backend, grads);
    if max_norm > 0.0 {
        let coef = clip_coef(total, max_norm);
        backend.scale(&mut grads.weights, coef);
        if let Some(g) = grads.multiplier.as_mut() {
            *g *= coef;
        }
    }
    total
}

/// overcomplete's `CosineScheduler`: linear warmup from `start_warmup_lr` to `base_lr` over
/// `warmup_steps` (numpy `linspace`, both ends included), then a half cosine from `base_lr` down to
/// `final_lr` at `total_steps`; `final_lr` after that. Values are rounded to f32, as the reference
/// stores them in a float32 tensor.
///
/// As in `train_sae`, the schedule is stepped *after* each optimiser step, so step 0 runs at the
/// optimiser's own rate (`base_lr`) and step `s >= 1` at `value(s)`: see [`CosineSchedule::lr`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    /// Learning rate after warmup (and the optimiser's initial rate).
    pub base_lr: f64,
    /// Final learning rate.
    pub final_lr: f64,
    /// Total steps of the run.
    pub total_steps: u64,
    /// Warmup steps.
    pub warmup_steps: u64,
    /// Learning rate at the start of the warmup.
    pub start_warmup_lr: f64,
}

impl CosineSchedule {
    /// `scheduler[it]` of the reference.
    pub fn value(&self, it: u64) -> f64 {
        if it >= self.total_steps {
            return self.final_lr;
        }
        let v = if it < self.warmup_steps {
            if self.warmup_steps == 1 {
                self.start_warmup_lr
            } else {
                let f = it as f64 / (self.warmup_steps - 1) as f64;
                self.start_warmup_lr + (self.base_lr - self.start_warmup_lr) * f
            }
        } else {
            let len = (self.total_steps - self.warmup_steps) as f64;
            let i = (it - self.warmup_steps) as f64;
            self.final_lr
                + 0.5 * (self.base_lr - self.final_lr) * (1.0 + (std::f64::consts::PI * i / len).cos())
        };
        v as f32 as f64
    }

    /// The learning rate used by the optimiser step `step` (from 0) under `train_sae`.
    pub fn lr(&self, step: u64) -> f64 {
        if step == 0 {
            self.base_lr
        } else {
            self.value(step)
        }
    }
}
