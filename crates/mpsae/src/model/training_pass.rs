//! The model's training pass: forward in training mode, the criterion, and the exact sparse
//! backward by micro-shards, all on the model's backend.

use crate::criterion::{Criterion, CriterionInput, CriterionOutput};
use crate::model::mp_sae::check_len;
use crate::model::{Encoded, Forward, MpSae};
use crate::{Error, Result};
use mpsae_kernels::backend::DictionaryUse;
use mpsae_kernels::backward::{shard_bounds, BackwardInputs};
use mpsae_kernels::memory::grow_huge;
use mpsae_kernels::pursuit::{Problem, Strategy};
use std::time::Instant;

/// Micro-shards of a training pass when the caller does not say: the backward's result depends on
/// this count only (never on threads or processes), see [`mpsae_kernels::backward::backward`].
pub const DEFAULT_SHARDS: usize = 4;

/// Gradients of a loss with respect to the model's parameters and its input.
#[derive(Clone, Debug)]
pub struct Gradients {
    /// dL/dW (`dictionary._weights`), `c x d`: `exp(m)·dL/dD`, without the normalisation's
    /// Jacobian, as the reference.
    pub weights: Vec<f32>,
    /// dL/dm, present when the multiplier is trained.
    pub multiplier: Option<f32>,
    /// dL/dx, `n x d`; empty unless [`MpSae::set_input_gradient`] asked for it (training does
    /// not need it).
    pub input: Vec<f32>,
}

/// A training-mode forward pass with its loss and gradients.
#[derive(Clone, Debug)]
pub struct TrainingPass {
    /// The forward outputs.
    pub forward: Forward,
    /// The criterion's loss and its parts.
    pub criterion: CriterionOutput,
    /// The gradients.
    pub grads: Gradients,
    /// The pursuit strategy that was used.
    pub strategy: Strategy,
    /// Pursuit steps whose pick was re-checked with exact dot products (a diagnostic of the
    /// Gram strategy, see [`Encoded::rechecks`]).
    pub rechecks: u64,
    /// Gram rows computed by the `gram-picked` strategy (0 for the others).
    pub picked_rows: u64,
    /// Where the time went.
    pub timings: PassTimings,
}

/// Seconds spent in each part of a training pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PassTimings {
    /// Normalising and scaling the dictionary (once per pass).
    pub dictionary: f64,
    /// The Gram matrix (zero unless the Gram strategy ran).
    pub gram: f64,
    /// The pursuit, including its dense correlation products.
    pub pursuit: f64,
    /// The pursuit's dense correlation products (`X·Dᵀ`, and more for the non-Gram strategies).
    pub correlations: f64,
    /// Decode and criterion.
    pub decode_criterion: f64,
    /// The sparse backward pass.
    pub backward: f64,
}

/// The first phase of a training pass ([`MpSae::shard_pass`]): forward outputs, loss, and the
/// gradient with respect to the dictionary `D` before any reduction across processes.
#[derive(Clone, Debug)]
pub struct ShardPass {
    /// The forward outputs of these rows.
    pub forward: Forward,
    /// The criterion's loss (these rows' share of the batch's) and its parts.
    pub criterion: CriterionOutput,
    /// dL/dD of these rows' shards, `c x d` (summed along the micro-shard tree).
    pub dictionary_gradient: Vec<f32>,
    /// The criterion's direct dL/dD of the whole batch (a term on the dictionary itself), added
    /// once to the summed shards by [`MpSae::finish_pass`].
    pub direct_dictionary_gradient: Option<Vec<f32>>,
    /// dL/dx of these rows, `n x d` (empty unless asked for).
    pub input_gradient: Vec<f32>,
    /// The pursuit strategy that was used.
    pub strategy: Strategy,
    /// Re-checked picks (see [`Encoded::rechecks`]).
    pub rechecks: u64,
    /// Gram rows computed by the `gram-picked` strategy.
    pub picked_rows: u64,
    /// Where the time went.
    pub timings: PassTimings,
}

/// Which part of a larger batch a training pass computes, for a trainer that splits one global
/// batch over processes: the pass's rows are `bounds` micro-shards (local row offsets, see
/// [`shard_bounds`]) of a global batch of `batch_rows` rows, over which the criterion averages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// Local row offsets of the micro-shards, from 0 to the pass's row count.
    pub bounds: Vec<usize>,
    /// Rows of the whole (global) batch.
    pub batch_rows: usize,
    /// Index of this pass's first shard among the batch's.
    pub first_shard: usize,
    /// Shards of the whole batch.
    pub total_shards: usize,
}

impl ShardSpec {
    /// The whole batch of `n` rows in `shards` micro-shards, on one process.
    pub fn whole(n: usize, shards: usize) -> ShardSpec {
        ShardSpec {
            bounds: shard_bounds(n, shards),
            batch_rows: n,
            first_shard: 0,
            total_shards: shards.max(1),
        }
    }
}

/// Sums per-process statistics across the processes sharing a batch (nothing on one process).
pub type StatisticsReducer<'a> = dyn FnMut(&mut [f64]) -> Result<()> + 'a;

impl MpSae {
    /// A training-mode forward pass, the criterion (given the training dictionary, as
    /// overcomplete's `train_sae` passes `get_dictionary()`) and the exact sparse backward pass.
    /// `mask` replaces the drawn dropout mask. The model must be in training mode.
    ///
    /// `W` is normalised in place once per pass (the reference does it two or three times; the
    /// extra passes move already-normalised weights by a few ulps at most).
    pub fn training_pass(
        &mut self,
        x: &[f32],
        criterion: &dyn Criterion,
        mask: Option<&[f32]>,
    ) -> Result<TrainingPass> {
        let n = self.rows_of(x)?;
        let spec = ShardSpec::whole(n, DEFAULT_SHARDS);
        let shard = self.shard_pass(x, criterion, mask, &spec, &mut |_| Ok(()))?;
        Ok(self.finish_pass(shard))
    }

    /// The first phase of a training step on the rows `x`, micro-shards of a larger batch
    /// (`spec`): forward, criterion (normalised by the whole batch's rows) and the backward of the
    /// shards, whose dL/dD is their sum along the backward's pairwise tree. Passes over aligned
    /// blocks of one batch's shards, their dL/dD completed along the same tree (a reduction
    /// across processes), then [`MpSae::finish_pass`], give the whole batch's gradients.
    pub fn shard_pass(
        &mut self,
        x: &[f32],
        criterion: &dyn Criterion,
        mask: Option<&[f32]>,
        spec: &ShardSpec,
        reduce: &mut StatisticsReducer,
    ) -> Result<ShardPass> {
        if !self.training {
            return Err(Error::invalid(
                "mode",
                "training_pass needs a model in training mode (call train())",
            ));
        }
        let n = self.rows_of(x)?;
        let b = &spec.bounds;
        if b.len() < 2 || b[0] != 0 || b[b.len() - 1] != n || b.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::Shape(format!("shard bounds {b:?} do not cover the {n} rows of the pass")));
        }
        if spec.batch_rows < n {
            return Err(Error::Shape(format!(
                "a batch of {} rows cannot hold a shard of {n}",
                spec.batch_rows
            )));
        }
        let (c, d, k) = (self.config.nb_concepts, self.config.input_dim, self.config.k);
        let t_start = Instant::now();
        let mask = self.mask_for(mask)?;
        let scale = self.normalize_weights();
        // D = normalize(W)·exp(m) (borrowed from W when exp(m) = 1), and the masked encode one.
        let dict_decode_owned = self.scaled_dictionary(scale, None);
        let dict_decode: &[f32] = dict_decode_owned.as_deref().unwrap_or(&self.weights);
        let dict_encode_owned =
            mask.as_ref().map(|m| self.backend.scale_dictionary(dict_decode, 1.0, Some(m), d));
        let dict_encode: &[f32] = dict_encode_owned.as_deref().unwrap_or(dict_decode);
        let t_dict = t_start.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let p = Problem { x, n, d, dict: dict_encode, c, k, tol: None };
        let run = self.backend.pursuit(&p, DictionaryUse::Transient);
        let t_encode = t0.elapsed().as_secs_f64();
        let (strategy, gram_time) = (run.strategy.unwrap_or(Strategy::Plain), run.gram_seconds);
        let enc = Encoded::from_run(run, n, c, k);
        let (rechecks, picked_rows) = (enc.rechecks, enc.picked_rows);
        let t1 = Instant::now();
        let x_hat = self.backend.decode(dict_decode, d, &enc.codes.atoms, &enc.codes.values, n, k);
        let mut input = CriterionInput {
            x,
            x_hat: &x_hat,
            residual: &enc.residual,
            codes: &enc.codes,
            dictionary: dict_decode,
            n,
            d,
            batch_rows: spec.batch_rows,
            input_gradient: self.input_gradient,
            shards: spec,
            batch: None,
        };
        // Statistics of the whole batch the criterion needs (summed across processes).
        let mut stats = criterion.batch_statistics(&input);
        if let Some(v) = stats.as_mut() {
            reduce(v)?;
        }
        input.batch = stats.as_deref();
        let mut crit = criterion.evaluate(&input);
        check_len("criterion dL/dx_hat", crit.g_x_hat.len(), n * d)?;
        for (name, g, len) in [
            ("criterion dL/dx", &crit.g_x, n * d),
            ("criterion dL/dresidual", &crit.g_residual, n * d),
            ("criterion dL/dcodes", &crit.g_codes, n * k),
            ("criterion dL/ddictionary", &crit.g_dictionary, c * d),
        ] {
            if let Some(g) = g {
                check_len(name, g.len(), len)?;
            }
        }
        let t_decode_criterion = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        // The gradient buffer of an earlier pass when one was handed back (no page faults).
        let mut g_dict = std::mem::take(&mut self.gradient);
        grow_huge(&mut g_dict, c * d, 0f32);
        let mut g_x = if self.input_gradient { vec![0f32; n * d] } else { Vec::new() };
        let grads = BackwardInputs {
            x,
            n,
            d,
            c,
            k,
            dict_encode,
            dict_decode,
            mask: mask.as_deref(),
            atoms: &enc.codes.atoms,
            values: &enc.codes.values,
            g_x_hat: &crit.g_x_hat,
            g_residual: crit.g_residual.as_deref(),
            g_values: crit.g_codes.as_deref(),
        };
        let g_x_out = self.input_gradient.then_some(g_x.as_mut_slice());
        self.backend.backward(&grads, &spec.bounds, &mut g_dict, g_x_out);
        // The criterion's direct dL/dD is the batch's (not these rows'): added once, after the
        // processes' shards are summed (`finish_pass`).
        let direct_dictionary_gradient = crit.g_dictionary.take();
        if let Some(gx) = crit.g_x.as_ref().filter(|_| self.input_gradient) {
            self.backend.add(&mut g_x, gx);
        }
        let timings = PassTimings {
            dictionary: t_dict,
            gram: gram_time,
            pursuit: t_encode - gram_time,
            correlations: enc.correlation_seconds,
            decode_criterion: t_decode_criterion,
            backward: t2.elapsed().as_secs_f64(),
        };
        Ok(ShardPass {
            forward: Forward { residual: enc.residual, codes: enc.codes, x_hat, energy: enc.energy },
            criterion: crit,
            dictionary_gradient: g_dict,
            direct_dictionary_gradient,
            input_gradient: g_x,
            strategy,
            rechecks,
            picked_rows,
            timings,
        })
    }

    /// The last phase of a training pass: the parameters' gradients from the batch's dL/dD
    /// (`dictionary_gradient`, complete over every shard of the batch): dL/dm = Σ dL/dD·D when
    /// the multiplier is trained, and dL/dW = exp(m)·dL/dD. Call it before the weights change.
    pub fn finish_pass(&self, shard: ShardPass) -> TrainingPass {
        let scale = self.multiplier.exp();
        let mut g_dict = shard.dictionary_gradient;
        if let Some(gd) = &shard.direct_dictionary_gradient {
            self.backend.add(&mut g_dict, gd);
        }
        let multiplier = self.config.use_multiplier.then(|| {
            // D as the pass used it: the normalised W (normalised in place by the pass) times exp(m).
            let dict = self.scaled_dictionary(scale, None);
            self.backend.dot(&g_dict, dict.as_deref().unwrap_or(&self.weights)) as f32
        });
        if scale != 1.0 {
            self.backend.scale(&mut g_dict, scale);
        }
        TrainingPass {
            forward: shard.forward,
            criterion: shard.criterion,
            grads: Gradients { weights: g_dict, multiplier, input: shard.input_gradient },
            strategy: shard.strategy,
            rechecks: shard.rechecks,
            picked_rows: shard.picked_rows,
            timings: shard.timings,
        }
    }
}
