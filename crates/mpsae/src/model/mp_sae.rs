//! `MpSae`: overcomplete's `MpSAE`, with the same numbers and a sparse, Gram-accelerated engine.

use crate::config::{Device, EncoderKind, SaeConfig};
use crate::model::{Codes, Normalization, Preprocess, Provenance};
use crate::Settings;
use crate::{Error, Result};
use mpsae_kernels::backend::{self, Backend, DictionaryUse, PursuitRun};
use mpsae_kernels::memory::huge_vec;
use mpsae_kernels::pursuit::Problem;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A Matching Pursuit Sparse Autoencoder.
///
/// Same semantics as overcomplete 0.3.0's `MpSAE` (see the crate docs for the few deliberate
/// differences): the dictionary `D = normalize(W)·exp(m)` (`c x d`, one atom per row) is
/// re-normalised in place before every training-mode use; each row is encoded by `k` greedy steps
/// of matching pursuit with the signed argmax; `x_hat = Σ v_t·D_{j_t}`.
///
/// The model carries what defines it beyond the dictionary: its [`Preprocess`] (centring and
/// scaling, applied by every encode and undone by every decode; the identity for a model built
/// from scratch) and the [`Provenance`] of its activations.
pub struct MpSae {
    pub(crate) config: SaeConfig,
    /// Raw parameter `W` (`dictionary._weights`), `c x d`.
    pub(crate) weights: Vec<f32>,
    /// `m` (`dictionary.multiplier`).
    pub(crate) multiplier: f32,
    /// Encoder parameters (never used by encode): weight `c x d` (untied) and bias `c`.
    encoder_weight: Option<Vec<f32>>,
    encoder_bias: Option<Vec<f32>>,
    pub(crate) training: bool,
    /// Eval mode's fused dictionary `normalize(W)·exp(m)`.
    fused: Option<Vec<f32>>,
    /// Version of the fused dictionary (the backend keys what it derives from it on this).
    fused_version: u64,
    rng: ChaCha8Rng,
    /// Where the maths runs.
    pub(crate) backend: Box<dyn Backend>,
    /// A dictionary-gradient buffer handed back by [`MpSae::recycle`].
    pub(crate) gradient: Vec<f32>,
    /// Whether training passes also return dL/dx.
    pub(crate) input_gradient: bool,
    /// Centring and scaling of the rows (identity unless trained with them).
    preprocess: Preprocess,
    /// Where the activations came from.
    provenance: Provenance,
}

/// Result of [`MpSae::encode`].
#[derive(Clone, Debug)]
pub struct Encoded {
    /// Final residual `x - x_hat`, `n x d`, in the data's own space.
    pub residual: Vec<f32>,
    /// Sparse codes (in the preprocessed space).
    pub codes: Codes,
    /// Squared residual norm of each row after each step, `n x k`, in the data's own space.
    pub energy: Vec<f32>,
    /// Seconds of the pursuit spent in dense correlation products.
    pub correlation_seconds: f64,
    /// Pursuit steps whose pick was re-checked with exact dot products (near ties under the
    /// Gram strategy's error bound; a diagnostic).
    pub rechecks: u64,
    /// Gram rows computed by the `gram-picked` strategy (0 for the others).
    pub picked_rows: u64,
}

impl Encoded {
    /// The encode result of a backend's pursuit of `n` rows over `c` atoms with `k` steps.
    pub(crate) fn from_run(run: PursuitRun, n: usize, c: usize, k: usize) -> Encoded {
        Encoded {
            residual: run.residual,
            codes: Codes { n, c, k, atoms: run.atoms, values: run.values },
            energy: run.energy,
            correlation_seconds: run.correlation_seconds,
            rechecks: run.rechecks,
            picked_rows: run.picked_rows,
        }
    }
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
        check_dictionary_size(&config)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (c, d) = (config.nb_concepts, config.input_dim);
        let bound = (6.0 / (c + d) as f64).sqrt() as f32;
        let weights = (0..c * d).map(|_| rng.gen_range(-bound..=bound)).collect();
        let mut model = MpSae::assemble(config, weights, 0.0, rng)?;
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
        let mut model = MpSae::assemble(config, weights, multiplier, ChaCha8Rng::seed_from_u64(seed))?;
        model.build_encoder(false);
        Ok(model)
    }

    fn assemble(config: SaeConfig, weights: Vec<f32>, multiplier: f32, rng: ChaCha8Rng) -> Result<Self> {
        let backend = backend::by_name(config.device.name(), Settings::default())
            .map_err(|e| Error::invalid("device", e))?;
        Ok(MpSae {
            config,
            weights: on_huge_pages(&weights),
            multiplier,
            encoder_weight: None,
            encoder_bias: None,
            training: true,
            fused: None,
            fused_version: 0,
            rng,
            backend,
            gradient: Vec::new(),
            input_gradient: false,
            preprocess: Preprocess::default(),
            provenance: Provenance::default(),
        })
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

    /// The preprocessing every encode applies and every decode undoes.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Sets the preprocessing (checked against the input dimension).
    pub fn set_preprocess(&mut self, preprocess: Preprocess) -> Result<()> {
        preprocess.validate(self.config.input_dim)?;
        self.preprocess = preprocess;
        Ok(())
    }

    /// Where the activations came from (empty when unknown).
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// Sets where the activations came from.
    pub fn set_provenance(&mut self, provenance: Provenance) {
        self.provenance = provenance;
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
    pub fn engine(&self) -> &Settings {
        self.backend.settings()
    }

    /// Changes the execution settings (threads, strategy, memory budget, Gram precision).
    pub fn set_engine(&mut self, engine: Settings) {
        self.backend.configure(engine);
    }

    /// The backend the maths runs on.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Moves the model to another backend (`cpu`, `reference`), keeping the execution settings.
    pub fn set_device(&mut self, device: Device) -> Result<()> {
        let settings = *self.backend.settings();
        self.backend = backend::by_name(device.name(), settings).map_err(|e| Error::invalid("device", e))?;
        self.config.device = device;
        Ok(())
    }

    /// Hands a finished training pass back, so that the next pass reuses its dictionary-gradient
    /// buffer (`c x d`: at 16384 x 576 that is 38 MB the allocator would otherwise map, fault in
    /// and unmap at every step). Optional; [`crate::train::Trainer`] does it.
    pub fn recycle(&mut self, pass: crate::model::TrainingPass) {
        let g = pass.grads.weights;
        if g.len() == self.weights.len() {
            self.gradient = g;
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

    /// [`MpSae::parameters_mut`] and the backend, for an optimiser that updates them there.
    pub fn parameters_and_backend(&mut self) -> (&mut [f32], &mut f32, &dyn Backend) {
        self.invalidate();
        (&mut self.weights, &mut self.multiplier, self.backend.as_ref())
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
            self.fused = None;
            self.ensure_fused();
        }
        self.training = false;
        self
    }

    fn invalidate(&mut self) {
        self.fused = None;
        self.backend.forget();
    }

    /// Normalises `W` in place and returns `W·exp(m)` (the training-mode dictionary).
    fn training_dictionary(&mut self) -> Vec<f32> {
        let scale = self.normalize_weights();
        self.scaled_dictionary(scale, None).unwrap_or_else(|| self.weights.clone())
    }

    /// `W·scale` with dropped atoms zeroed, or `None` when that is `W` itself (scale 1, no mask).
    pub(crate) fn scaled_dictionary(&self, scale: f32, mask: Option<&[f32]>) -> Option<Vec<f32>> {
        if scale == 1.0 && mask.is_none() {
            return None;
        }
        Some(self.backend.scale_dictionary(&self.weights, scale, mask, self.config.input_dim))
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
        self.config.normalization.apply_on(self.backend.as_ref(), &mut w, self.config.input_dim);
        let scale = self.multiplier.exp();
        w.iter_mut().for_each(|v| *v *= scale);
        w
    }

    fn ensure_fused(&mut self) -> &[f32] {
        if self.fused.is_none() {
            let d = self.training_dictionary();
            self.fused = Some(on_huge_pages(&d));
            self.fused_version += 1;
            self.backend.forget();
        }
        self.fused.as_deref().unwrap()
    }

    /// Each atom's `related` nearest other atoms by cosine, `(atom, cosine)` closest first (in
    /// eval mode from the Gram matrix the backend prepared, when it did).
    pub fn nearest_atoms(&mut self, related: usize) -> Vec<Vec<(u32, f32)>> {
        let (c, d) = (self.config.nb_concepts, self.config.input_dim);
        if self.training {
            let dict = self.clone_dictionary();
            return self.backend.nearest_atoms(&dict, c, d, related, None);
        }
        self.ensure_fused();
        let dict = self.fused.as_deref().unwrap();
        self.backend.nearest_atoms(dict, c, d, related, Some(self.fused_version))
    }

    /// Prepares the backend for encoding about `rows` rows with `k` steps in eval mode, so that
    /// encoding them batch by batch pays once for what the backend derives from the dictionary
    /// (the CPU backend's Gram matrix, `2·c²` bytes, when its planner would use it for that many
    /// rows). Optional: every eval-mode encode prepares for its own batch. Does nothing in
    /// training mode.
    pub fn prepare_for(&mut self, rows: usize, k: usize) {
        if self.training {
            return;
        }
        let (c, d) = (self.config.nb_concepts, self.config.input_dim);
        self.ensure_fused();
        let dict = self.fused.as_deref().unwrap();
        self.backend.prepare(dict, c, d, rows, k, self.fused_version);
    }

    pub(crate) fn rows_of(&self, x: &[f32]) -> Result<usize> {
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
    ///
    /// `x` is in the data's own space: the model's preprocessing is applied first; the codes are
    /// in the preprocessed space, the residual and the energies in the data's.
    pub fn encode_with(&mut self, x: &[f32], opts: &EncodeOptions) -> Result<Encoded> {
        if self.preprocess.is_identity() {
            return self.pursue(x, opts);
        }
        self.rows_of(x)?;
        let mut xp = x.to_vec();
        self.preprocess.apply(&mut xp, self.config.input_dim);
        let mut enc = self.pursue(&xp, opts)?;
        self.preprocess.undo_difference(&mut enc.residual);
        let f = self.preprocess.energy_factor();
        enc.energy.iter_mut().for_each(|e| *e *= f);
        Ok(enc)
    }

    /// The pursuit of rows already in the preprocessed space.
    fn pursue(&mut self, x: &[f32], opts: &EncodeOptions) -> Result<Encoded> {
        let n = self.rows_of(x)?;
        let k = opts.k.unwrap_or(self.config.k);
        check_encode_options(k, opts.tol)?;
        let (c, d) = (self.config.nb_concepts, self.config.input_dim);
        if self.training {
            let mask = self.mask_for(opts.mask)?;
            let scale = self.normalize_weights();
            let dict = self.scaled_dictionary(scale, mask.as_deref());
            let dict = dict.as_deref().unwrap_or(&self.weights);
            let p = Problem { x, n, d, dict, c, k, tol: opts.tol };
            Ok(Encoded::from_run(self.backend.pursuit(&p, DictionaryUse::Transient), n, c, k))
        } else {
            self.prepare_for(n, k);
            let dict = self.fused.as_deref().unwrap();
            let p = Problem { x, n, d, dict, c, k, tol: opts.tol };
            let run = self.backend.pursuit(&p, DictionaryUse::Stable(self.fused_version));
            Ok(Encoded::from_run(run, n, c, k))
        }
    }

    /// The dropout mask of one training-mode encode: the given one (checked) or a drawn one.
    pub(crate) fn mask_for(&mut self, given: Option<&[f32]>) -> Result<Option<Vec<f32>>> {
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
    pub(crate) fn normalize_weights(&mut self) -> f32 {
        self.config.normalization.apply_on(self.backend.as_ref(), &mut self.weights, self.config.input_dim);
        self.multiplier.exp()
    }

    /// Decodes sparse codes: `x_hat = Σ v_t·D_{j_t}` per row (`n x d`), with the unmasked
    /// dictionary, mapped back to the data's own space (the preprocessing undone).
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
        let d = self.config.input_dim;
        let (n, k) = (codes.n, codes.k);
        let mut x_hat = if self.training {
            let scale = self.normalize_weights();
            let dict = self.scaled_dictionary(scale, None);
            let dict = dict.as_deref().unwrap_or(&self.weights);
            self.backend.decode(dict, d, &codes.atoms, &codes.values, n, k)
        } else {
            self.ensure_fused();
            let dict = self.fused.as_deref().unwrap();
            self.backend.decode(dict, d, &codes.atoms, &codes.values, n, k)
        };
        self.preprocess.undo(&mut x_hat, d);
        Ok(x_hat)
    }

    /// `(residual, codes, x_hat)` of `x`, as the reference's `forward` (residual and `x_hat` in
    /// the data's own space, codes in the preprocessed one).
    pub fn forward(&mut self, x: &[f32]) -> Result<Forward> {
        let enc = self.encode(x)?;
        let x_hat = self.decode(&enc.codes)?;
        Ok(Forward { residual: enc.residual, codes: enc.codes, x_hat, energy: enc.energy })
    }
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
pub(crate) fn on_huge_pages(v: &[f32]) -> Vec<f32> {
    let mut out = huge_vec(v.len(), 0f32);
    out.copy_from_slice(v);
    out
}

/// Refuses a dictionary whose weights alone could not be held (before allocating them).
fn check_dictionary_size(config: &SaeConfig) -> Result<()> {
    let bytes =
        (config.nb_concepts as u64).checked_mul(config.input_dim as u64).and_then(|v| v.checked_mul(4));
    let have = crate::resources::available_memory();
    match (bytes, have) {
        (None, _) => Err(Error::invalid("size", "the dictionary's c x d does not fit in 64 bits")),
        (Some(b), Some(h)) if b > h => Err(Error::invalid(
            "size",
            format!(
                "a {} x {} dictionary needs {} of memory but this machine has {} available",
                config.nb_concepts,
                config.input_dim,
                crate::resources::gib(b),
                crate::resources::gib(h)
            ),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::Shape(format!("{what} has {got} values, expected {want}")));
    }
    Ok(())
}
