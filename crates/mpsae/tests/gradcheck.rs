//! Finite-difference checks of the sparse backward pass on small random problems.
//!
//! With the `identity` normalisation the dictionary is `W·exp(m)`, so the analytic gradient (which
//! omits the normalisation's Jacobian, as the reference) is the true derivative and central
//! differences must agree with it, for `W`, `m` and `x`, under every criterion shape: MSE (x_hat
//! and x), revive (residual and dictionary), a code penalty (codes), with and without dropout.

use mpsae::criterion::{Criterion, CriterionInput, CriterionOutput, Mse, Revive};
use mpsae::kernels::pursuit::Strategy;
use mpsae::{MpSae, Normalization, SaeConfig, Settings};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// MSE plus `lambda·Σ codes²` (exercises the gradient with respect to the codes).
struct CodePenalty(f64);

impl Criterion for CodePenalty {
    fn name(&self) -> String {
        "code-penalty".into()
    }
    fn evaluate(&self, input: &CriterionInput) -> CriterionOutput {
        let mut out = Mse.evaluate(input);
        let dense = input.codes.to_dense();
        out.loss += self.0 * dense.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
        let c = input.codes.c;
        out.g_codes = Some(input.codes.gradient_of_dense(|i, a| (2.0 * self.0) as f32 * dense[i * c + a]));
        out
    }
}

struct Case {
    d: usize,
    c: usize,
    k: usize,
    n: usize,
    multiplier: f32,
    mask: bool,
}

fn model_for(case: &Case, w: &[f32], m: f32, strategy: Strategy) -> MpSae {
    let mut cfg = SaeConfig::new(case.d, case.c);
    cfg.k = case.k;
    cfg.normalization = Normalization::Identity;
    cfg.use_multiplier = true;
    let mut model = MpSae::from_weights(cfg, w.to_vec(), m, 0).unwrap();
    model.set_input_gradient(true);
    model.set_engine(Settings { strategy: Some(strategy), ..Settings::default() });
    model
}

fn check(case: Case, criterion: &dyn Criterion, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (d, c, n) = (case.d, case.c, case.n);
    let w: Vec<f32> = (0..c * d).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let x: Vec<f32> = (0..n * d).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let mask: Option<Vec<f32>> = case.mask.then(|| (0..c).map(|i| (i % 3 != 1) as u8 as f32).collect());
    for strategy in [Strategy::Plain, Strategy::Gram] {
        let mut model = model_for(&case, &w, case.multiplier, strategy);
        let pass = model.training_pass(&x, criterion, mask.as_deref()).unwrap();
        let loss_at = |w: &[f32], m: f32, x: &[f32]| -> (f64, Vec<u32>) {
            let mut model = model_for(&case, w, m, strategy);
            let p = model.training_pass(x, criterion, mask.as_deref()).unwrap();
            (p.criterion.loss, p.forward.codes.atoms)
        };
        let eps = 2e-3f32;
        let mut checked = 0;
        for trial in 0..6 {
            // A random direction in (W, m, x).
            let vw: Vec<f32> = (0..c * d).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let vm: f32 = rng.gen_range(-1.0..1.0);
            let vx: Vec<f32> = (0..n * d).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let shift = |s: f32| {
                let w2: Vec<f32> = w.iter().zip(&vw).map(|(a, b)| a + s * b).collect();
                let x2: Vec<f32> = x.iter().zip(&vx).map(|(a, b)| a + s * b).collect();
                loss_at(&w2, case.multiplier + s * vm, &x2)
            };
            let (lp, pp) = shift(eps);
            let (lm, pm) = shift(-eps);
            if pp != pass.forward.codes.atoms || pm != pass.forward.codes.atoms {
                continue; // the perturbation changed a pick: the loss is not smooth there
            }
            let fd = (lp - lm) / (2.0 * eps as f64);
            let analytic =
                pass.grads.weights.iter().zip(&vw).map(|(g, v)| *g as f64 * *v as f64).sum::<f64>()
                    + pass.grads.multiplier.unwrap() as f64 * vm as f64
                    + pass.grads.input.iter().zip(&vx).map(|(g, v)| *g as f64 * *v as f64).sum::<f64>();
            let err = (fd - analytic).abs();
            assert!(
                err <= 2e-2 * analytic.abs().max(fd.abs()) + 1e-5,
                "{} {strategy:?} trial {trial}: finite difference {fd}, analytic {analytic}",
                criterion.name()
            );
            checked += 1;
        }
        assert!(checked >= 3, "too few smooth directions ({checked})");
    }
}

#[test]
fn mse_gradients_match_finite_differences() {
    check(Case { d: 6, c: 12, k: 3, n: 4, multiplier: 0.0, mask: false }, &Mse, 1);
    check(Case { d: 5, c: 9, k: 7, n: 3, multiplier: 0.3, mask: false }, &Mse, 2);
}

#[test]
fn masked_gradients_match_finite_differences() {
    check(Case { d: 6, c: 12, k: 3, n: 4, multiplier: -0.2, mask: true }, &Mse, 3);
}

#[test]
fn revive_gradients_match_finite_differences() {
    // c = 40 atoms, few rows: many dead atoms, so the revive branch is taken.
    let crit = Revive { coefficient: 0.5, ..Revive::default() };
    check(Case { d: 6, c: 40, k: 2, n: 3, multiplier: 0.1, mask: false }, &crit, 4);
}

#[test]
fn code_gradients_match_finite_differences() {
    check(Case { d: 6, c: 10, k: 4, n: 5, multiplier: 0.0, mask: false }, &CodePenalty(0.05), 5);
}
