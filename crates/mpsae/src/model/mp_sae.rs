//! `MpSae`: overcomplete's `MpSAE`, with the same numbers and a sparse, Gram-accelerated engine.

use crate::config::{EncoderKind, SaeConfig};
use crate::criterion::{Criterion, CriterionInput, CriterionOutput};
use crate::engine::Engine;
use crate::model::{Codes, Normalization};
use crate::{Error, Result};
use mpsae_kernels::backward::{backward, BackwardScratch, Grads};
use mpsae_kernels::gram::{Gram, GramRef};
use mpsae_kernels::memory::{grow_huge, huge_vec};
use mpsae_kernels::pursuit::{picked_gram_rows, pursuit, Output, Problem, Strategy};
use mpsae_kernels::{axpy, Par};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// A Matching Pursuit Sparse Autoencoder.
///
/// Same semantics as overcomplete 0.3.0's `MpSAE` (see the crate docs for the few deliberate
/// differences): the dictionary `D = normalize(W)·exp(m)` (`c x d`, one atom per row) is
/// re-normalised in place before every training-mode use; each row is encoded by `k` greedy steps
/// of matching pursuit with the signed argmax; `x_hat = Σ v_t·D_{j_t}`.
pub struct MpSae {
    config: SaeConfig,
    /// Raw parameter `W` (`dictionary._weights`), `c x d`.
    weights: Vec<f32>,
    /// `m` (`dictionary.multiplier`).
    multiplier: f32,
    /// Encoder parameters (never used by encode): weight `c x d` (untied) and bias `c`.
    encoder_weight: Option<Vec<f32>>,
    encoder_bias: Option<Vec<f32>>,
    training: bool,
    /// Eval mode's fused dictionary `normalize(W)·exp(m)`, and its Gram matrix once computed.
    fused: Option<Vec<f32>>,
    fused_gram: Option<Gram>,
    rng: ChaCha8Rng,
    engine: Engine,
    workspace: Workspace,
    /// Whether training passes also return dL/dx.
    input_gradient: bool,
}

/// Result of [`MpSae::encode`].
#[derive(Clone, Debug)]
pub struct Encoded {
    /// Final residual, `n x d`.
    pub residual: Vec<f32>,
    /// Sparse codes.
    pub codes: Codes,
    /// Squared residual norm of each row after each step, `n x k`.
    pub energy: Vec<f32>,
    /// Seconds of the pursuit spent in dense correlation products.
    pub correlation_seconds: f64,
    /// Pursuit steps whose pick was re-checked with exact dot products (near ties under the
    /// Gram strategy's error bound; a diagnostic).
    pub rechecks: u64,
    /// Gram rows computed by the `gram-picked` strategy (0 for the others).
    pub picked_rows: u64,
}

/// Result of [`MpSae::forward`]: the reference's `(residual, codes, x_hat)`.
#[derive(Clone, Debug)]
pub struct Forward {
    /// Final residual, `n x d` (what the reference calls `pre_codes`).
    pub residual: Vec<f32>,
    /// Sparse codes (dense form: [`Codes::to_dense`]).
    pub codes: Codes,
    /// Reconstruction `codes · D`, `n x d`.
    pub x_hat: Vec<f32>,
    /// Squared residual norm of each row after each step, `n x k`.
    pub energy: Vec<f32>,
}

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

/// Options of an encode beyond the model's own.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncodeOptions<'a> {
    /// Number of pursuit steps (default: the model's `k`). MP can change its sparsity at
    /// inference time.
    pub k: Option<usize>,
    /// Stop a row once its residual norm is at most this fraction of its input norm.
    pub tol: Option<f32>,
    /// An explicit dropout mask over atoms (entries 0 or 1, not rescaled), used instead of a drawn
    /// one in training mode.
    pub mask: Option<&'a [f32]>,
}

impl MpSae {
    /// A new model with the reference's xavier-uniform init (`U(±sqrt(6/(c+d)))`), drawn from a
    /// ChaCha8 generator seeded with `seed` (also the dropout generator's seed).
    pub fn new(config: SaeConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (c, d) = (config.nb_concepts, config.input_dim);
        let bound = (6.0 / (c + d) as f64).sqrt() as f32;
        let weights = (0..c * d).map(|_| rng.gen_range(-bound..=bound)).collect();
        let mut model = MpSae::assemble(config, weights, 0.0, rng);
        model.build_encoder(false);
        Ok(model)
    }

    /// A model with the given raw weights `W` (`c x d`) and multiplier `m` (the reference's
    /// `initializer`, or a loaded state dict).
    pub fn from_weights(config: SaeConfig, weights: Vec<f32>, multiplier: f32, seed: u64) -> Result<Self> {
        config.validate()?;
        let expected = config.nb_concepts * config.input_dim;
        if weights.len() != expected {
            return Err(Error::Shape(format!(
                "initializer has {} values, the dictionary needs {} x {} = {expected}",
                weights.len(),
                config.nb_concepts,
                config.input_dim
            )));
        }
        if !multiplier.is_finite() || weights.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("weights", "contain NaN or infinite values"));
        }
        let mut model = MpSae::assemble(config, weights, multiplier, ChaCha8Rng::seed_from_u64(seed));
        model.build_encoder(false);
        Ok(model)
    }

    fn assemble(config: SaeConfig, weights: Vec<f32>, multiplier: f32, rng: ChaCha8Rng) -> Self {
        MpSae {
            config,
            weights: on_huge_pages(&weights),
            multiplier,
            encoder_weight: None,
            encoder_bias: None,
            training: true,
            fused: None,
            fused_gram: None,
            rng,
            engine: Engine::default(),
            workspace: Workspace::default(),
            input_gradient: false,
        }
    }

    /// Creates the encoder parameters the configuration asks for.
    fn build_encoder(&mut self, copy_from_dictionary: bool) {
        let (c, d) = (self.config.nb_concepts, self.config.input_dim);
        let (weight, bias) = match self.config.encoder {
            EncoderKind::Identity => (false, false),
            EncoderKind::Tied { bias } => (false, bias),
            EncoderKind::Untied { bias } => (true, bias),
        };
        self.encoder_weight = weight.then(|| {
            if copy_from_dictionary {
                self.get_dictionary()
            } else {
                let bound = (6.0 / (c + d) as f64).sqrt() as f32;
                (0..c * d).map(|_| self.rng.gen_range(-bound..=bound)).collect()
            }
        });
        self.encoder_bias = bias.then(|| vec![0.0; c]);
    }

    /// The configuration.
    pub fn config(&self) -> &SaeConfig {
        &self.config
    }

    /// Input dimension `d`.
    pub fn input_dim(&self) -> usize {
        self.config.input_dim
    }

    /// Number of concepts `c`.
    pub fn nb_concepts(&self) -> usize {
        self.config.nb_concepts
    }

    /// The execution settings.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Changes the execution settings (threads, strategy, memory budget).
    pub fn set_engine(&mut self, engine: Engine) {
        if engine.gram_precision != self.engine.gram_precision {
            self.fused_gram = None;
        }
        self.engine = engine;
    }

    /// Hands a finished training pass back, so that the next pass reuses its dictionary-gradient
    /// buffer (`c x d`: at 16384 x 576 that is 38 MB the allocator would otherwise map, fault in
    /// and unmap at every step). Optional; [`crate::train::Trainer`] does it.
    pub fn recycle(&mut self, pass: TrainingPass) {
        let g = pass.grads.weights;
        if g.len() == self.weights.len() {
            self.workspace.gradient = g;
        }
    }

    /// Whether [`MpSae::training_pass`] also computes dL/dx ([`Gradients::input`]); off by
    /// default, since training needs only the parameters' gradients.
    pub fn set_input_gradient(&mut self, on: bool) {
        self.input_gradient = on;
    }

    /// Changes the number of pursuit steps used from now on.
    pub fn set_k(&mut self, k: usize) -> Result<()> {
        if k == 0 {
            return Err(Error::invalid("k", "the number of pursuit steps must be at least 1"));
        }
        self.config.k = k;
        Ok(())
    }

    /// Changes the dropout probability (none, or in `[0, 1)`).
    pub fn set_dropout(&mut self, dropout: Option<f32>) -> Result<()> {
        crate::config::validate_dropout(dropout)?;
        self.config.dropout = dropout;
        Ok(())
    }

    /// Replaces the normalisation (e.g. a custom one after loading a model that used it).
    pub fn set_normalization(&mut self, normalization: Normalization) {
        self.config.normalization = normalization;
        self.invalidate();
    }

    /// The raw parameter `W` (`dictionary._weights`), `c x d`.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The multiplier `m` (`dictionary.multiplier`).
    pub fn multiplier(&self) -> f32 {
        self.multiplier
    }

    /// Mutable access to the trained parameters, `W` and `m` (for optimisers). Invalidates the
    /// eval-mode fused dictionary, which is rebuilt on the next eval-mode use.
    pub fn parameters_mut(&mut self) -> (&mut [f32], &mut f32) {
        self.invalidate();
        (&mut self.weights, &mut self.multiplier)
    }

    /// Sets `W` and `m` (as `load_state_dict` does). Unlike the reference, an eval-mode model
    /// then uses the new weights (its fused dictionary is rebuilt).
    pub fn set_parameters(&mut self, weights: Vec<f32>, multiplier: f32) -> Result<()> {
        if weights.len() != self.weights.len() {
            return Err(Error::Shape(format!(
                "weights have {} values, the dictionary has {}",
                weights.len(),
                self.weights.len()
            )));
        }
        self.weights = on_huge_pages(&weights);
        self.multiplier = multiplier;
        self.invalidate();
        Ok(())
    }

    /// The encoder's parameters `(weight, bias)`, if any (unused by encode).
    pub fn encoder_parameters(&self) -> (Option<&[f32]>, Option<&[f32]>) {
        (self.encoder_weight.as_deref(), self.encoder_bias.as_deref())
    }

    /// Sets the encoder's parameters (from a state dict); shapes must match the configuration.
    pub fn set_encoder_parameters(&mut self, weight: Option<Vec<f32>>, bias: Option<Vec<f32>>) -> Result<()> {
        let (c, d) = (self.config.nb_concepts, self.config.input_dim);
        if weight.as_ref().is_some_and(|w| w.len() != c * d) || bias.as_ref().is_some_and(|b| b.len() != c) {
            return Err(Error::Shape("encoder parameters do not match the dictionary's shape".into()));
        }
        if weight.is_some() != self.encoder_weight.is_some() || bias.is_some() != self.encoder_bias.is_some()
        {
            return Err(Error::Shape("encoder parameters do not match the encoder kind".into()));
        }
        self.encoder_weight = weight;
        self.encoder_bias = bias;
        Ok(())
    }

    /// Ties the encoder to the dictionary (`D` transposed), optionally with a bias, like the
    /// reference's `tied(bias)`. The MP encode never uses an encoder: this only changes the state
    /// dict (keys `encoder.tied_to.*` and `encoder.bias`), for compatibility.
    pub fn tied(&mut self, bias: bool) -> &mut Self {
        self.config.encoder = EncoderKind::Tied { bias };
        self.build_encoder(false);
        self
    }

    /// Gives the encoder its own weights, copied from the current dictionary or xavier-initialised,
    /// like the reference's `untied(bias, copy_from_dictionary)`. Unused by the MP encode, as there.
    pub fn untied(&mut self, bias: bool, copy_from_dictionary: bool) -> &mut Self {
        self.config.encoder = EncoderKind::Untied { bias };
        self.build_encoder(copy_from_dictionary);
        self
    }

    /// Whether the model is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Training mode: the dictionary is re-normalised at every use and dropout applies.
    pub fn train(&mut self) -> &mut Self {
        self.training = true;
        self.invalidate();
        self
    }

    /// Eval mode: normalises `W` in place once and uses the fused dictionary
    /// `normalize(W)·exp(m)` from then on; no dropout. Unlike the reference, the configured dropout
    /// comes back with [`MpSae::train`].
    pub fn eval(&mut self) -> &mut Self {
        if self.training || self.fused.is_none() {
            let d = self.training_dictionary();
            self.fused = Some(on_huge_pages(&d));
            self.fused_gram = None;
        }
        self.training = false;
        // The training Gram is not needed in eval mode (the fused one is built on demand).
        self.workspace.gram = Gram::new();
        self
    }

    fn invalidate(&mut self) {
        self.fused = None;
        self.fused_gram = None;
    }

    /// Normalises `W` in place and returns `W·exp(m)` (the training-mode dictionary).
    fn training_dictionary(&mut self) -> Vec<f32> {
        let scale = self.normalize_weights();
        scaled_dictionary(&self.weights, scale, None, self.config.input_dim)
            .unwrap_or_else(|| self.weights.clone())
    }

    /// The dictionary `c x d`, as the reference's `get_dictionary()`: in training mode `W` is
    /// normalised in place and `normalize(W)·exp(m)` returned; in eval mode the fused dictionary.
    pub fn get_dictionary(&mut self) -> Vec<f32> {
        if self.training {
            self.training_dictionary()
        } else {
            self.ensure_fused().to_vec()
        }
    }

    /// `normalize(W)·exp(m)` without touching `W` (what the next training-mode use will see), or
    /// the fused dictionary in eval mode.
    pub fn clone_dictionary(&self) -> Vec<f32> {
        if let (false, Some(f)) = (self.training, &self.fused) {
            return f.clone();
        }
        let mut w = self.weights.clone();
        self.config.normalization.apply(&mut w, self.config.input_dim);
        let scale = self.multiplier.exp();
        w.iter_mut().for_each(|v| *v *= scale);
        w
    }

    fn ensure_fused(&mut self) -> &[f32] {
        if self.fused.is_none() {
            let d = self.training_dictionary();
            self.fused = Some(on_huge_pages(&d));
            self.fused_gram = None;
        }
        self.fused.as_deref().unwrap()
    }

    /// Computes and keeps the Gram matrix of the eval-mode dictionary, so that encoding many
    /// batches pays for it once. Needs `2·c²` bytes (`4·c²` with an f32 Gram engine); does
    /// nothing in training mode.
    pub fn prepare_gram(&mut self) {
        if self.training || self.fused_gram.is_some() {
            return;
        }
        let (c, d, engine) = (self.config.nb_concepts, self.config.input_dim, self.engine);
        let dict = self.ensure_fused().to_vec();
        let mut g = Gram::new();
        g.compute(&dict, c, d, engine.gram_precision, engine.par);
        self.fused_gram = Some(g);
    }

    fn rows_of(&self, x: &[f32]) -> Result<usize> {
        let d = self.config.input_dim;
        if x.len() % d != 0 {
            return Err(Error::Shape(format!(
                "input has {} values, not a whole number of rows of dimension {d}",
                x.len()
            )));
        }
        Ok(x.len() / d)
    }

    /// Draws the dropout mask of one encode call (one Bernoulli(1-p) per atom, not rescaled).
    fn draw_mask(&mut self) -> Option<Vec<f32>> {
        let p = self.config.dropout?;
        let keep = 1.0 - p as f64;
        Some((0..self.config.nb_concepts).map(|_| if self.rng.gen_bool(keep) { 1.0 } else { 0.0 }).collect())
    }

    /// The generator's position (for checkpoints): seed and word position.
    pub fn rng_state(&self) -> ([u8; 32], u128) {
        (self.rng.get_seed(), self.rng.get_word_pos())
    }

    /// Restores the generator's position saved by [`MpSae::rng_state`].
    pub fn set_rng_state(&mut self, seed: [u8; 32], word_pos: u128) {
        self.rng = ChaCha8Rng::from_seed(seed);
        self.rng.set_word_pos(word_pos);
    }

    /// Encodes `x` (`n x d`, row-major): `k` matching-pursuit steps per row. Returns the final
    /// residual and the sparse codes (the reference's `encode`).
    pub fn encode(&mut self, x: &[f32]) -> Result<Encoded> {
        self.encode_with(x, &EncodeOptions::default())
    }

    /// [`MpSae::encode`] with a different `k`, a tolerance, or an explicit dropout mask.
    pub fn encode_with(&mut self, x: &[f32], opts: &EncodeOptions) -> Result<Encoded> {
        let n = self.rows_of(x)?;
        let k = opts.k.unwrap_or(self.config.k);
        check_encode_options(k, opts.tol)?;
        if self.training {
            let mask = self.mask_for(opts.mask)?;
            let scale = self.normalize_weights();
            let dict = scaled_dictionary(&self.weights, scale, mask.as_deref(), self.config.input_dim);
            let dict = dict.as_deref().unwrap_or(&self.weights);
            let run =
                run_pursuit(&self.engine, &mut self.workspace, &self.config, x, n, dict, k, opts.tol, None);
            Ok(run.encoded)
        } else {
            self.ensure_fused();
            let (dict, gram) = (self.fused.as_deref().unwrap(), self.fused_gram.as_ref().map(Gram::view));
            let run =
                run_pursuit(&self.engine, &mut self.workspace, &self.config, x, n, dict, k, opts.tol, gram);
            Ok(run.encoded)
        }
    }

    /// The dropout mask of one training-mode encode: the given one (checked) or a drawn one.
    fn mask_for(&mut self, given: Option<&[f32]>) -> Result<Option<Vec<f32>>> {
        let c = self.config.nb_concepts;
        match given {
            Some(m) if m.len() != c => {
                Err(Error::Shape(format!("dropout mask has {} entries, not {c}", m.len())))
            }
            Some(m) => Ok(Some(m.to_vec())),
            None => Ok(self.draw_mask()),
        }
    }

    /// Normalises `W` in place (the training-mode `get_dictionary()`), returning `exp(m)`.
    fn normalize_weights(&mut self) -> f32 {
        self.config.normalization.apply(&mut self.weights, self.config.input_dim);
        self.multiplier.exp()
    }

    /// Decodes sparse codes: `x_hat = Σ v_t·D_{j_t}` per row (`n x d`), with the unmasked dictionary.
    pub fn decode(&mut self, codes: &Codes) -> Result<Vec<f32>> {
        if codes.c != self.config.nb_concepts {
            return Err(Error::Shape(format!(
                "codes are over {} atoms, the dictionary has {}",
                codes.c, self.config.nb_concepts
            )));
        }
        if codes.atoms.iter().any(|&a| a != Codes::NO_ATOM && a as usize >= codes.c) {
            return Err(Error::Shape("codes name an atom outside the dictionary".into()));
        }
        let (d, par) = (self.config.input_dim, self.engine.par);
        if self.training {
            let scale = self.normalize_weights();
            let dict = scaled_dictionary(&self.weights, scale, None, d);
            Ok(decode_with(dict.as_deref().unwrap_or(&self.weights), codes, d, par))
        } else {
            Ok(decode_with(self.ensure_fused(), codes, d, par))
        }
    }

    /// `(residual, codes, x_hat)` of `x`, as the reference's `forward`.
    pub fn forward(&mut self, x: &[f32]) -> Result<Forward> {
        let enc = self.encode(x)?;
        let x_hat = self.decode(&enc.codes)?;
        Ok(Forward { residual: enc.residual, codes: enc.codes, x_hat, energy: enc.energy })
    }

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
        if !self.training {
            return Err(Error::invalid(
                "mode",
                "training_pass needs a model in training mode (call train())",
            ));
        }
        let n = self.rows_of(x)?;
        let (c, d, k) = (self.config.nb_concepts, self.config.input_dim, self.config.k);
        let t_start = Instant::now();
        let mask = self.mask_for(mask)?;
        let scale = self.normalize_weights();
        // D = normalize(W)·exp(m) (borrowed from W when exp(m) = 1), and the masked encode one.
        let dict_decode_owned = scaled_dictionary(&self.weights, scale, None, d);
        let dict_decode: &[f32] = dict_decode_owned.as_deref().unwrap_or(&self.weights);
        let dict_encode_owned = mask.as_ref().map(|m| {
            let mut e = on_huge_pages(dict_decode);
            for (row, &keep) in e.chunks_mut(d).zip(m) {
                row.iter_mut().for_each(|v| *v *= keep);
            }
            e
        });
        let dict_encode: &[f32] = dict_encode_owned.as_deref().unwrap_or(dict_decode);
        let t_dict = t_start.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let run =
            run_pursuit(&self.engine, &mut self.workspace, &self.config, x, n, dict_encode, k, None, None);
        let t_encode = t0.elapsed().as_secs_f64();
        let (enc, strategy, gram_time) = (run.encoded, run.strategy, run.gram_seconds);
        let (rechecks, picked_rows) = (enc.rechecks, enc.picked_rows);
        let t1 = Instant::now();
        let x_hat = decode_with(dict_decode, &enc.codes, d, self.engine.par);
        let crit = criterion.evaluate(&CriterionInput {
            x,
            x_hat: &x_hat,
            residual: &enc.residual,
            codes: &enc.codes,
            dictionary: dict_decode,
            n,
            d,
            input_gradient: self.input_gradient,
        });
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
        let mut g_dict = std::mem::take(&mut self.workspace.gradient);
        grow_huge(&mut g_dict, c * d, 0f32);
        let mut g_x = if self.input_gradient { vec![0f32; n * d] } else { Vec::new() };
        let grads = Grads {
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
            g_xhat: &crit.g_x_hat,
            g_residual: crit.g_residual.as_deref(),
            g_values: crit.g_codes.as_deref(),
        };
        let g_x_out = self.input_gradient.then_some(g_x.as_mut_slice());
        backward(&grads, self.engine.par, &mut g_dict, g_x_out, &mut self.workspace.backward);
        if let Some(gd) = &crit.g_dictionary {
            axpy(1.0, gd, &mut g_dict);
        }
        if let Some(gx) = crit.g_x.as_ref().filter(|_| self.input_gradient) {
            axpy(1.0, gx, &mut g_x);
        }
        let multiplier = self
            .config
            .use_multiplier
            .then(|| g_dict.iter().zip(dict_decode).map(|(&g, &w)| g as f64 * w as f64).sum::<f64>() as f32);
        if scale != 1.0 {
            g_dict.iter_mut().for_each(|g| *g *= scale);
        }
        let timings = PassTimings {
            dictionary: t_dict,
            gram: gram_time,
            pursuit: t_encode - gram_time,
            correlations: enc.correlation_seconds,
            decode_criterion: t_decode_criterion,
            backward: t2.elapsed().as_secs_f64(),
        };
        Ok(TrainingPass {
            forward: Forward { residual: enc.residual, codes: enc.codes, x_hat, energy: enc.energy },
            criterion: crit,
            grads: Gradients { weights: g_dict, multiplier, input: g_x },
            strategy,
            rechecks,
            picked_rows,
            timings,
        })
    }
}

/// Reusable buffers of the model's kernels (so repeated calls do not page-fault fresh memory in).
#[derive(Default)]
struct Workspace {
    /// Correlation scratch of the pursuit.
    scratch: Vec<f32>,
    /// Gram rows kept by the `gram-picked` strategy.
    gram_rows: Vec<f32>,
    /// Gram matrix of the training dictionary.
    gram: Gram,
    /// The backward pass's per-thread accumulators.
    backward: BackwardScratch,
    /// A dictionary-gradient buffer handed back by [`MpSae::recycle`].
    gradient: Vec<f32>,
    /// What the last pursuits of each recent shape showed the cost model (consecutive batches of
    /// one dataset pick alike), newest last.
    seen: Vec<Seen>,
    /// The strategy the buffers above were sized for.
    strategy: Option<Strategy>,
}

/// What one pursuit showed: for `n` rows, `k` steps and a cached Gram matrix or not, the Gram rows
/// the `gram-picked` strategy needs for its picks, and the strategy that ran.
#[derive(Clone, Copy)]
struct Seen {
    n: usize,
    k: usize,
    cached: bool,
    rows: usize,
    strategy: Strategy,
}

/// Shapes remembered: a training run's full and last, smaller batch, and an evaluation's.
const SEEN_SHAPES: usize = 4;

/// What [`run_pursuit`] gives back.
struct PursuitRun {
    encoded: Encoded,
    strategy: Strategy,
    gram_seconds: f64,
}

fn check_encode_options(k: usize, tol: Option<f32>) -> Result<()> {
    if k == 0 {
        return Err(Error::invalid("k", "the number of pursuit steps must be at least 1"));
    }
    if let Some(t) = tol {
        if !(t >= 0.0 && t.is_finite()) {
            return Err(Error::invalid("tol", format!("{t} must be a finite number >= 0")));
        }
    }
    Ok(())
}

/// A copy of `v` backed by huge pages where the OS allows: the kernels read dictionary rows in
/// the order of the picked atoms (see [`mpsae_kernels::memory`]).
fn on_huge_pages(v: &[f32]) -> Vec<f32> {
    let mut out = huge_vec(v.len(), 0f32);
    out.copy_from_slice(v);
    out
}

/// `W·scale` with dropped atoms zeroed, or `None` when that is `W` itself (scale 1, no mask).
fn scaled_dictionary(w: &[f32], scale: f32, mask: Option<&[f32]>, d: usize) -> Option<Vec<f32>> {
    if scale == 1.0 && mask.is_none() {
        return None;
    }
    let mut out = huge_vec(w.len(), 0f32);
    out.iter_mut().zip(w).for_each(|(o, &v)| *o = v * scale);
    if let Some(m) = mask {
        for (row, &keep) in out.chunks_mut(d).zip(m) {
            row.iter_mut().for_each(|v| *v *= keep);
        }
    }
    Some(out)
}

/// Runs the pursuit of `x` (`n x d`) over `dict` (`c x d`) with the engine's strategy, computing
/// the Gram matrix into the workspace when that strategy is chosen and none is `cached`.
#[allow(clippy::too_many_arguments)]
fn run_pursuit(
    engine: &Engine,
    ws: &mut Workspace,
    config: &SaeConfig,
    x: &[f32],
    n: usize,
    dict: &[f32],
    k: usize,
    tol: Option<f32>,
    cached: Option<GramRef>,
) -> PursuitRun {
    let (c, d) = (config.nb_concepts, config.input_dim);
    let shape = |s: &Seen| (s.n, s.k, s.cached) == (n, k, cached.is_some());
    let previous = ws.seen.iter().rev().find(|s| shape(s)).map(|s| (s.rows, s.strategy));
    let strategy = engine.strategy_for(n, c, d, k, cached.is_some(), previous);
    if ws.strategy != Some(strategy) {
        // Another strategy's buffers would only add to the peak memory now: gram-picked's larger
        // correlation tile and Gram rows, or the Gram matrix. Plain and Gram share their
        // correlation tiles.
        if ws.strategy == Some(Strategy::GramPicked) || strategy == Strategy::GramPicked {
            ws.scratch = Vec::new();
            ws.gram_rows = Vec::new();
        }
        if strategy != Strategy::Gram {
            ws.gram = Gram::new();
        }
        ws.strategy = Some(strategy);
    }
    let t0 = Instant::now();
    let g = match (strategy, cached) {
        (Strategy::Gram, Some(g)) => Some(g),
        (Strategy::Gram, None) => {
            ws.gram.compute(dict, c, d, engine.gram_precision, engine.par);
            Some(ws.gram.view())
        }
        _ => None,
    };
    let gram_seconds = t0.elapsed().as_secs_f64();
    let mut out = Output {
        scratch: std::mem::take(&mut ws.scratch),
        gram_rows: std::mem::take(&mut ws.gram_rows),
        ..Output::default()
    };
    let p = Problem { x, n, d, dict, c, k, tol };
    pursuit(&p, strategy, g, engine.par, &mut out);
    ws.scratch = std::mem::take(&mut out.scratch);
    ws.gram_rows = std::mem::take(&mut out.gram_rows);
    // The picks are the same whatever the strategy: count the rows `gram-picked` needs for them
    // (it counted them itself when it ran), unless the strategy is forced.
    if engine.strategy.is_none() {
        let rows = match strategy {
            Strategy::GramPicked => out.picked_rows as usize,
            _ => picked_gram_rows(&out.atoms, n, k, c),
        };
        ws.seen.retain(|s| !shape(s));
        if ws.seen.len() == SEEN_SHAPES {
            ws.seen.remove(0);
        }
        ws.seen.push(Seen { n, k, cached: cached.is_some(), rows, strategy });
    }
    let codes = Codes { n, c, k, atoms: out.atoms, values: out.values };
    let encoded = Encoded {
        residual: out.residual,
        codes,
        energy: out.energy,
        correlation_seconds: out.matmul_seconds,
        rechecks: out.rechecks,
        picked_rows: out.picked_rows,
    };
    PursuitRun { encoded, strategy, gram_seconds }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::Shape(format!("{what} has {got} values, expected {want}")));
    }
    Ok(())
}

/// `x_hat` rows from sparse codes and a dictionary.
fn decode_with(dict: &[f32], codes: &Codes, d: usize, par: Par) -> Vec<f32> {
    let mut x_hat = vec![0f32; codes.n * d];
    let row = |(i, out): (usize, &mut [f32])| {
        for (a, v) in codes.row(i) {
            axpy(v, &dict[a * d..(a + 1) * d], out);
        }
    };
    match par {
        Par::Seq => x_hat.chunks_mut(d).enumerate().for_each(row),
        Par::Rayon(_) => {
            use rayon::prelude::*;
            x_hat.par_chunks_mut(d).enumerate().with_min_len(64).for_each(row)
        }
    }
    x_hat
}
