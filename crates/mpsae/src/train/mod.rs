//! The training loop: overcomplete's `train_sae` with checkpoints, resume, a non-finite guard and
//! metrics, emitting events that a front end (the CLI's progress bar, JSON lines) consumes.

mod checkpoint;
mod evaluate;

pub use checkpoint::{Checkpoint, CHECKPOINT_FILE};
pub use evaluate::{evaluate, EvalOptions, EvalReport};

use crate::criterion::{Criterion, Mse, Revive};
use crate::data::{Dataset, Preprocess};
use crate::metrics::{dead_ratio, explained_variance_per_step, l0_per_row, r2_score, DeadCodeTracker};
use crate::model::MpSae;
use crate::optim::{clip_gradients, Adam, AdamParams, CosineSchedule};
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// The training criterion, by name (a library user can also pass any [`Criterion`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CriterionChoice {
    /// Mean squared error.
    Mse,
    /// MSE plus the revive term of the MpSAE docs.
    Revive {
        /// Dead threshold on a code's batch maximum.
        threshold: f32,
        /// The term applies when more atoms than this are dead.
        min_dead: usize,
        /// Weight of the term.
        coefficient: f64,
    },
}

impl CriterionChoice {
    /// The criterion object.
    pub fn build(&self) -> Box<dyn Criterion> {
        match *self {
            CriterionChoice::Mse => Box::new(Mse),
            CriterionChoice::Revive { threshold, min_dead, coefficient } => {
                Box::new(Revive { threshold, min_dead, coefficient })
            }
        }
    }
}

/// The warmup-and-cosine schedule's settings (its base rate is the optimiser's `lr`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleOptions {
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// Learning rate at the end.
    pub final_lr: f64,
    /// Learning rate at the start of the warmup.
    pub start_warmup_lr: f64,
}

/// Everything that defines a training run besides the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Rows per batch (the last batch of an epoch may be smaller, as `DataLoader`).
    pub batch_size: usize,
    /// Epochs (ignored when `steps` is set).
    pub epochs: usize,
    /// A step budget instead of epochs.
    pub steps: Option<u64>,
    /// Shuffle the rows each epoch (seeded).
    pub shuffle: bool,
    /// Seed of the data order (the model's own generator draws the dropout masks).
    pub seed: u64,
    /// Learning rate.
    pub lr: f64,
    /// Adam's β1.
    pub beta1: f64,
    /// Adam's β2.
    pub beta2: f64,
    /// Adam's ε.
    pub eps: f64,
    /// Global-norm gradient clipping (0 turns it off).
    pub clip_grad: f64,
    /// Cosine schedule with warmup, if any.
    pub schedule: Option<ScheduleOptions>,
    /// The criterion.
    pub criterion: CriterionChoice,
    /// Also report code norm, dictionary norms and gradient norms.
    pub detailed_stats: bool,
    /// Stop after this many non-finite steps in a row.
    pub max_bad_steps: u32,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            batch_size: 1024,
            epochs: 20,
            steps: None,
            shuffle: true,
            seed: 0,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            clip_grad: 1.0,
            schedule: None,
            criterion: CriterionChoice::Mse,
            detailed_stats: false,
            max_bad_steps: 10,
            checkpoint_every: 0,
        }
    }
}

impl TrainOptions {
    /// Checks every option; the error names the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::invalid("batch size", "must be at least 1"));
        }
        if self.steps.is_none() && self.epochs == 0 {
            return Err(Error::invalid("epochs", "must be at least 1 (or give a step budget)"));
        }
        if self.steps == Some(0) {
            return Err(Error::invalid("steps", "must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid("learning rate", format!("{} must be a positive number", self.lr)));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid(name, format!("{b} is not in [0, 1)")));
            }
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(Error::invalid("eps", format!("{} must be >= 0", self.eps)));
        }
        if !(self.clip_grad >= 0.0 && self.clip_grad.is_finite()) {
            return Err(Error::invalid(
                "clip",
                format!("{} must be >= 0 (0 turns clipping off)", self.clip_grad),
            ));
        }
        if self.max_bad_steps == 0 {
            return Err(Error::invalid("max bad steps", "must be at least 1"));
        }
        if let CriterionChoice::Revive { threshold, coefficient, .. } = self.criterion {
            if !threshold.is_finite() || !coefficient.is_finite() {
                return Err(Error::invalid("revive", "threshold and coefficient must be finite"));
            }
        }
        Ok(())
    }

    /// Adam's hyper-parameters.
    pub fn adam(&self) -> AdamParams {
        AdamParams { lr: self.lr, beta1: self.beta1, beta2: self.beta2, eps: self.eps }
    }

    /// Batches in one epoch of `rows` rows.
    pub fn batches_per_epoch(&self, rows: usize) -> u64 {
        rows.div_ceil(self.batch_size) as u64
    }

    /// Total steps of the run on `rows` rows.
    pub fn total_steps(&self, rows: usize) -> u64 {
        self.steps.unwrap_or(self.epochs as u64 * self.batches_per_epoch(rows))
    }
}

/// What happened at one step.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// Step index (from 1).
    pub step: u64,
    /// Total steps of the run.
    pub total_steps: u64,
    /// Epoch (from 1).
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Loss (NaN when skipped).
    pub loss: f64,
    /// R2 of the batch.
    pub r2: f64,
    /// Average L0 per row of the batch.
    pub l0: f64,
    /// Dead-feature ratio of the epoch so far.
    pub dead_ratio: f64,
    /// Rows in the batch.
    pub rows: usize,
    /// Whether the step was skipped (non-finite loss or gradient).
    pub skipped: bool,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Pursuit strategy used.
    pub strategy: &'static str,
}

/// End-of-epoch metrics, with the reference's definitions.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EpochReport {
    /// Epoch (from 1).
    pub epoch: usize,
    /// Last step of the epoch.
    pub step: u64,
    /// Mean of the batch losses.
    pub avg_loss: f64,
    /// Mean of the batch R2 scores.
    pub r2: f64,
    /// Mean of the batch average L0.
    pub l0: f64,
    /// Fraction of atoms with no positive code in the epoch.
    pub dead_ratio: f64,
    /// Seconds spent in the epoch (this process only, after a resume).
    pub time_epoch: f64,
    /// Explained variance after each pursuit step 1..k (mean over batches).
    pub explained_variance: Vec<f64>,
    /// Steps skipped in the epoch (non-finite).
    pub skipped_steps: u64,
    /// Detailed statistics, when asked: mean code L2 norm, mean atom norm, mean gradient norm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detailed: Option<DetailedStats>,
}

/// overcomplete's `monitoring=2` statistics, averaged over the epoch's steps.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DetailedStats {
    /// L2 norm of the batch's codes (`l2(z)`).
    pub z_l2: f64,
    /// Mean L2 norm of the atoms.
    pub dictionary_norms: f64,
    /// Fraction of dictionary entries with `|v| >= 1e-6`.
    pub dictionary_sparsity: f64,
    /// L2 norm of the weights.
    pub params_norm: f64,
    /// L2 norm of the weights' gradient (before clipping).
    pub params_grad_norm: f64,
}

/// Receives the trainer's events.
pub trait Observer {
    /// After every step.
    fn on_step(&mut self, _report: &StepReport) {}
    /// After every epoch.
    fn on_epoch(&mut self, _report: &EpochReport) {}
    /// After a checkpoint was written.
    fn on_checkpoint(&mut self, _step: u64, _path: &std::path::Path) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Running sums of the current epoch (checkpointed so resumed epochs report the same metrics).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EpochAccumulator {
    /// Batches counted.
    pub batches: u64,
    /// Sum of losses.
    pub loss: f64,
    /// Sum of R2.
    pub r2: f64,
    /// Sum of L0.
    pub l0: f64,
    /// Sum of explained variance per step.
    pub ev: Vec<f64>,
    /// Skipped steps.
    pub skipped: u64,
    /// Atoms seen alive (positive code).
    pub alive: Vec<bool>,
    /// Sums of the detailed statistics.
    pub detailed: DetailedStats,
}

/// Where a run stands: everything needed to continue it exactly.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Steps done.
    pub step: u64,
    /// Current epoch (from 0).
    pub epoch: usize,
    /// Batches done in the current epoch.
    pub batch_in_epoch: u64,
    /// Non-finite steps in a row.
    pub consecutive_bad: u32,
    /// Non-finite steps in total.
    pub total_bad: u64,
    /// The current epoch's sums.
    pub acc: EpochAccumulator,
    /// Reports of the epochs finished so far (a resumed run's metrics are exactly these).
    #[serde(default)]
    pub epochs: Vec<EpochReport>,
}

/// A training run: model, optimiser, options and progress.
pub struct Trainer {
    /// The model.
    pub model: MpSae,
    /// The optimiser state.
    pub adam: Adam,
    /// The options.
    pub options: TrainOptions,
    /// Where the run stands.
    pub progress: Progress,
    /// Preprocessing applied to every batch.
    pub preprocess: Preprocess,
    /// Folder for checkpoints (none: no checkpoints).
    pub checkpoint_dir: Option<PathBuf>,
}

/// The row order of epoch `epoch`.
pub fn epoch_order(rows: usize, shuffle: bool, seed: u64, epoch: usize) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..rows).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch as u64 + 1);
        ids.shuffle(&mut rng);
    }
    ids
}

impl Trainer {
    /// A new run.
    pub fn new(model: MpSae, options: TrainOptions, preprocess: Preprocess) -> Result<Trainer> {
        options.validate()?;
        let adam = Adam::new(options.adam(), model.weights().len());
        let c = model.nb_concepts();
        Ok(Trainer {
            model,
            adam,
            options,
            progress: Progress {
                step: 0,
                epoch: 0,
                batch_in_epoch: 0,
                consecutive_bad: 0,
                total_bad: 0,
                acc: EpochAccumulator { alive: vec![false; c], ..Default::default() },
                epochs: Vec::new(),
            },
            preprocess,
            checkpoint_dir: None,
        })
    }

    /// The learning rate of step `step` (from 0).
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        match self.options.schedule {
            None => self.options.lr,
            Some(s) => CosineSchedule {
                base_lr: self.options.lr,
                final_lr: s.final_lr,
                total_steps: total,
                warmup_steps: s.warmup_steps,
                start_warmup_lr: s.start_warmup_lr,
            }
            .lr(step),
        }
    }

    /// One training step on the batch `x` (already preprocessed): forward, criterion, dead-code
    /// tracker, backward, clip, Adam. A non-finite loss or gradient skips the update.
    pub fn step(&mut self, x: &[f32], criterion: &dyn Criterion, lr: f64) -> Result<StepReport> {
        let mut pass = self.model.training_pass(x, criterion, None)?;
        let fw = &pass.forward;
        let k = fw.codes.k;
        let finite = pass.criterion.loss.is_finite()
            && pass.grads.weights.iter().all(|g| g.is_finite())
            && pass.grads.multiplier.is_none_or(|g| g.is_finite());
        let acc = &mut self.progress.acc;
        let (r2, l0) = (r2_score(x, &fw.x_hat), l0_per_row(&fw.codes, 1e-6));
        let mut grad_norm = f64::NAN;
        if finite {
            let mut tracker = DeadCodeTracker::from_alive(std::mem::take(&mut acc.alive));
            tracker.update(&fw.codes);
            acc.alive = tracker.into_alive();
            if self.options.detailed_stats {
                let dense_sq: f64 = (0..fw.codes.n)
                    .flat_map(|i| fw.codes.row_dense(i))
                    .map(|(_, v)| v as f64 * v as f64)
                    .sum();
                let d = self.model.input_dim();
                let dict = self.model.clone_dictionary();
                let norms: f64 =
                    dict.chunks(d).map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()).sum();
                let nnz = dict.iter().filter(|v| v.abs() >= 1e-6).count() as f64;
                let wn = self.model.weights().iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                let gn = pass.grads.weights.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                let s = &mut acc.detailed;
                s.z_l2 += dense_sq.sqrt();
                s.dictionary_norms += norms / self.model.nb_concepts() as f64;
                s.dictionary_sparsity += nnz / dict.len() as f64;
                s.params_norm += wn;
                s.params_grad_norm += gn;
            }
            grad_norm = clip_gradients(&mut pass.grads, self.options.clip_grad);
            let par = self.model.engine().par;
            self.adam.step(&mut self.model, &pass.grads, lr, par);
            acc.batches += 1;
            acc.loss += pass.criterion.loss;
            acc.r2 += r2;
            acc.l0 += l0;
            let ev = explained_variance_per_step(x, &fw.energy, k);
            if acc.ev.len() != ev.len() {
                acc.ev = vec![0.0; ev.len()];
            }
            acc.ev.iter_mut().zip(&ev).for_each(|(a, b)| *a += b);
            self.progress.consecutive_bad = 0;
        } else {
            acc.skipped += 1;
            self.progress.consecutive_bad += 1;
            self.progress.total_bad += 1;
        }
        let dead_ratio = dead_ratio(&self.progress.acc.alive);
        let report = StepReport {
            step: self.progress.step + 1,
            total_steps: 0,
            epoch: self.progress.epoch + 1,
            lr,
            loss: if finite { pass.criterion.loss } else { f64::NAN },
            r2,
            l0,
            dead_ratio,
            rows: fw.codes.n,
            skipped: !finite,
            grad_norm,
            strategy: pass.strategy.name(),
        };
        self.model.recycle(pass);
        Ok(report)
    }

    fn finish_epoch(&mut self, seconds: f64) -> EpochReport {
        let c = self.model.nb_concepts();
        let acc = std::mem::replace(
            &mut self.progress.acc,
            EpochAccumulator { alive: vec![false; c], ..Default::default() },
        );
        let b = acc.batches.max(1) as f64;
        let detailed = self.options.detailed_stats.then(|| DetailedStats {
            z_l2: acc.detailed.z_l2 / b,
            dictionary_norms: acc.detailed.dictionary_norms / b,
            dictionary_sparsity: acc.detailed.dictionary_sparsity / b,
            params_norm: acc.detailed.params_norm / b,
            params_grad_norm: acc.detailed.params_grad_norm / b,
        });
        let report = EpochReport {
            epoch: self.progress.epoch + 1,
            step: self.progress.step,
            avg_loss: acc.loss / b,
            r2: acc.r2 / b,
            l0: acc.l0 / b,
            dead_ratio: dead_ratio(&acc.alive),
            time_epoch: seconds,
            explained_variance: acc.ev.iter().map(|v| v / b).collect(),
            skipped_steps: acc.skipped,
            detailed,
        };
        self.progress.epochs.push(report.clone());
        report
    }

    /// Runs (or continues) the training on `data` until the step budget or the last epoch,
    /// writing checkpoints as configured. Returns the epoch reports of this call.
    pub fn run(&mut self, data: &Dataset, observer: &mut dyn Observer) -> Result<Vec<EpochReport>> {
        if data.dim() != self.model.input_dim() {
            return Err(Error::Shape(format!(
                "data rows have dimension {}, the model expects {}",
                data.dim(),
                self.model.input_dim()
            )));
        }
        let rows = data.rows();
        let total = self.options.total_steps(rows);
        let per_epoch = self.options.batches_per_epoch(rows);
        let criterion = self.options.criterion.build();
        let bs = self.options.batch_size;
        let d = data.dim();
        let mut reports = Vec::new();
        let mut batch = Vec::new();
        self.model.train();
        let mut epoch_start = Instant::now();
        while self.progress.step < total {
            let order = epoch_order(rows, self.options.shuffle, self.options.seed, self.progress.epoch);
            while self.progress.batch_in_epoch < per_epoch && self.progress.step < total {
                let b = self.progress.batch_in_epoch as usize;
                let ids = &order[b * bs..((b + 1) * bs).min(rows)];
                data.read(ids, &mut batch);
                self.preprocess.apply(&mut batch, d);
                let lr = self.lr_at(self.progress.step, total);
                let mut report = self.step(&batch, criterion.as_ref(), lr)?;
                report.total_steps = total;
                self.progress.step += 1;
                self.progress.batch_in_epoch += 1;
                observer.on_step(&report);
                if self.progress.consecutive_bad >= self.options.max_bad_steps {
                    return Err(Error::Training(format!(
                        "{} steps in a row had a non-finite loss or gradient (last at step {}); \
                         the model was left at its last good state{}",
                        self.progress.consecutive_bad,
                        self.progress.step,
                        if self.checkpoint_dir.is_some() { " and the last checkpoint is kept" } else { "" }
                    )));
                }
                let every = self.options.checkpoint_every;
                if every > 0 && self.progress.step % every == 0 && self.progress.step < total {
                    self.write_checkpoint(observer)?;
                }
            }
            if self.progress.batch_in_epoch >= per_epoch {
                let r = self.finish_epoch(epoch_start.elapsed().as_secs_f64());
                observer.on_epoch(&r);
                reports.push(r);
                self.progress.epoch += 1;
                self.progress.batch_in_epoch = 0;
                epoch_start = Instant::now();
            }
        }
        // A step budget may end mid-epoch: report the partial epoch.
        if self.progress.acc.batches > 0 || self.progress.acc.skipped > 0 {
            let r = self.finish_epoch(epoch_start.elapsed().as_secs_f64());
            observer.on_epoch(&r);
            reports.push(r);
        }
        self.write_checkpoint(observer)?;
        Ok(reports)
    }

    /// Writes `checkpoint.safetensors` in the checkpoint folder (atomically), if there is one.
    pub fn write_checkpoint(&mut self, observer: &mut dyn Observer) -> Result<()> {
        if let Some(dir) = self.checkpoint_dir.clone() {
            let path = dir.join(CHECKPOINT_FILE);
            Checkpoint::save(self, &path)?;
            observer.on_checkpoint(self.progress.step, &path);
        }
        Ok(())
    }
}
