//! The training loop: overcomplete's `train_sae` with checkpoints, resume, a non-finite guard and
//! metrics, emitting events that a front end (the CLI's progress bar, JSON lines) consumes.
//!
//! - `options.rs`: what defines a run (criterion, schedule, optimiser, batches, micro-shards);
//! - `report.rs`: what it reports (steps, epochs) and the progress a checkpoint keeps;
//! - `reduce.rs`: the reduce phase and how processes share a global batch;
//! - `checkpoint.rs`, `evaluate.rs`: checkpoints, and metrics over a whole dataset;
//! - this file: the [`Trainer`], a step in three phases (gradients, reduce, apply).

pub mod checkpoint;
mod options;
mod reduce;
mod report;
mod stream;

pub use checkpoint::CHECKPOINT_FILE;
pub use options::{CriterionChoice, ScheduleOptions, TrainOptions};
pub use reduce::{batch_share, BatchShare, Reducer, SingleProcess};
pub use report::{
    DetailedStats, EpochAccumulator, EpochReport, Observer, Progress, Silent, StepReport, StreamPosition,
};
pub use stream::{PreprocessPlan, StreamTrainer};

use crate::criterion::Criterion;
use crate::data::Dataset;
use crate::metrics::{dead_ratio, DeadCodeTracker, ReconstructionSums};
use crate::model::{MpSae, ShardPass, ShardSpec};
use crate::optim::{clip_gradients, Adam, CosineSchedule};
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::time::Instant;

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
    /// A new run. Batches read from data are preprocessed with the model's own
    /// [`MpSae::preprocess`].
    pub fn new(model: MpSae, options: TrainOptions) -> Result<Trainer> {
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
                stream: None,
            },
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

    /// One step of a stream (batches as a model produces them): `x` in the data's own space is
    /// preprocessed with the model's preprocessing, trained on at the learning rate of the
    /// schedule (over `options.steps`), and the step counted.
    pub fn step_on_rows(&mut self, x: &[f32]) -> Result<StepReport> {
        self.step_on_rows_with(x, None)
    }

    /// [`Trainer::step_on_rows`], the maths done by `external` when given (the PyTorch device
    /// path; it must have been started with [`ExternalStep::start`]).
    pub fn step_on_rows_with(
        &mut self,
        x: &[f32],
        external: Option<&mut dyn ExternalStep>,
    ) -> Result<StepReport> {
        let mut xp = x.to_vec();
        self.model.preprocess().apply(&mut xp, self.model.input_dim());
        self.stream_step(|t, lr| match external {
            Some(ext) => {
                t.model.rows_of(&xp)?;
                let (stats, finite, grad_norm) = ext.step(&xp, lr)?;
                t.record_external(stats, finite, lr, grad_norm)
            }
            None => {
                let criterion = t.options.criterion.build();
                t.step(&xp, criterion.as_ref(), lr)
            }
        })
    }

    /// [`Trainer::step_on_rows_with`] for `n` rows held by `external` on its device
    /// ([`ExternalStep::step_held`]): they never come to the host.
    pub fn step_on_held_rows(&mut self, n: usize, external: &mut dyn ExternalStep) -> Result<StepReport> {
        if n == 0 {
            return Err(Error::Shape("a step needs at least one row".into()));
        }
        self.stream_step(|t, lr| {
            let preprocess = t.model.preprocess().clone();
            let (stats, finite, grad_norm) = external.step_held(n, lr, &preprocess)?;
            t.record_external(stats, finite, lr, grad_norm)
        })
    }

    /// One step of a stream (no planned end: the schedule's total is the step budget, if any):
    /// training mode, the learning rate of this step given to `step`, the step counted.
    fn stream_step(&mut self, step: impl FnOnce(&mut Self, f64) -> Result<StepReport>) -> Result<StepReport> {
        self.model.train();
        let total = self.options.steps.unwrap_or(u64::MAX);
        let lr = self.lr_at(self.progress.step, total);
        let report = step(self, lr)?;
        self.progress.step += 1;
        Ok(report)
    }

    /// Ends the current epoch where it stands (a stream's end): its report, recorded with the
    /// run's epochs; the next step starts a new epoch.
    pub fn end_epoch(&mut self, seconds: f64) -> EpochReport {
        let report = self.finish_epoch(seconds, false);
        self.progress.epoch += 1;
        self.progress.batch_in_epoch = 0;
        report
    }

    /// One training step on the batch `x` (already preprocessed) on one process: the three
    /// phases below with nothing to reduce.
    pub fn step(&mut self, x: &[f32], criterion: &dyn Criterion, lr: f64) -> Result<StepReport> {
        let n = self.model.rows_of(x)?;
        let share = batch_share(n, self.options.gradient_shards, 0, 1);
        self.step_shared(x, &share, n, criterion, lr, &mut SingleProcess)
    }

    /// Phase 1 of a step: the gradient of this process's share of a global batch of
    /// `batch_rows` rows (`x` holds the share's rows, preprocessed); `reducer` sums the batch
    /// statistics a criterion needs across the processes.
    pub fn gradients(
        &mut self,
        x: &[f32],
        share: &BatchShare,
        batch_rows: usize,
        criterion: &dyn Criterion,
        reducer: &mut dyn Reducer,
    ) -> Result<ShardPass> {
        let spec = ShardSpec {
            bounds: share.bounds.clone(),
            batch_rows,
            first_shard: share.first_shard,
            total_shards: share.total_shards,
        };
        self.model.shard_pass(x, criterion, None, &spec, &mut |v| reducer.sum(v))
    }

    /// One step on this process's share of a global batch: gradients (phase 1), `reducer`
    /// (phase 2: the micro-shard tree completed, statistics summed), apply (phase 3: finite
    /// check, dead-code tracking, clip, Adam; the same on every process).
    pub fn step_shared(
        &mut self,
        x: &[f32],
        share: &BatchShare,
        batch_rows: usize,
        criterion: &dyn Criterion,
        lr: f64,
        reducer: &mut dyn Reducer,
    ) -> Result<StepReport> {
        let mut shard = self.gradients(x, share, batch_rows, criterion, reducer)?;
        reducer.complete_tree(&mut shard.dictionary_gradient)?;
        let mut stats = BatchStats::of(x, &shard, self.model.input_dim(), self.model.nb_concepts());
        reducer.sum(&mut stats.values)?;
        let mut pass = self.model.finish_pass(shard);
        let report = self.apply(&mut pass, &stats, lr);
        self.model.recycle(pass);
        Ok(report)
    }

    /// Phase 3: the update from a batch's complete gradients and summed statistics.
    fn apply(&mut self, pass: &mut crate::model::TrainingPass, stats: &BatchStats, lr: f64) -> StepReport {
        let c = self.model.nb_concepts();
        let loss = stats.loss();
        let finite = loss.is_finite()
            && pass.grads.weights.iter().all(|g| g.is_finite())
            && pass.grads.multiplier.is_none_or(|g| g.is_finite());
        let mut grad_norm = f64::NAN;
        let acc = &mut self.progress.acc;
        if finite {
            if self.options.detailed_stats {
                let d = self.model.input_dim();
                let dict = self.model.clone_dictionary();
                let norms: f64 =
                    dict.chunks(d).map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()).sum();
                let nnz = dict.iter().filter(|v| v.abs() >= 1e-6).count() as f64;
                let wn = self.model.weights().iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                let gn = pass.grads.weights.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                let s = &mut acc.detailed;
                s.z_l2 += stats.codes_sq().sqrt();
                s.dictionary_norms += norms / c as f64;
                s.dictionary_sparsity += nnz / dict.len() as f64;
                s.params_norm += wn;
                s.params_grad_norm += gn;
            }
            grad_norm = clip_gradients(self.model.backend(), &mut pass.grads, self.options.clip);
            self.adam.step(&mut self.model, &pass.grads, lr);
        }
        self.account(stats, finite, lr, grad_norm, pass.strategy.name())
    }

    /// The bookkeeping of a step whose update is done (or skipped, when not `finite`): the
    /// epoch's sums, the dead-code tracking, the non-finite counters, the step's report.
    fn account(
        &mut self,
        stats: &BatchStats,
        finite: bool,
        lr: f64,
        grad_norm: f64,
        strategy: &'static str,
    ) -> StepReport {
        let c = self.model.nb_concepts();
        let sums = stats.sums(self.model.preprocess());
        let (loss, r2, l0, ev) = (stats.loss(), sums.r2(), stats.l0(), sums.explained_variance());
        let acc = &mut self.progress.acc;
        if finite {
            let mut tracker = DeadCodeTracker::from_alive(std::mem::take(&mut acc.alive));
            tracker.mark_alive(stats.alive(c));
            acc.alive = tracker.into_alive();
            acc.batches += 1;
            acc.loss += loss;
            acc.r2 += r2;
            acc.l0 += l0;
            acc.sums.merge(&sums);
            self.progress.consecutive_bad = 0;
        } else {
            acc.skipped += 1;
            self.progress.consecutive_bad += 1;
            self.progress.total_bad += 1;
        }
        StepReport {
            step: self.progress.step + 1,
            total_steps: 0,
            epoch: self.progress.epoch + 1,
            lr,
            loss: if finite { loss } else { f64::NAN },
            r2,
            explained_variance: ev,
            l0,
            dead_ratio: dead_ratio(&self.progress.acc.alive),
            rows: stats.rows(),
            skipped: !finite,
            grad_norm,
            strategy,
        }
    }

    /// The report of the current epoch; a `partial` one keeps the epoch's sums (a resumed run
    /// continues them), a whole one starts the next epoch's.
    fn finish_epoch(&mut self, seconds: f64, partial: bool) -> EpochReport {
        let c = self.model.nb_concepts();
        let acc = if partial {
            self.progress.acc.clone()
        } else {
            std::mem::replace(
                &mut self.progress.acc,
                EpochAccumulator { alive: vec![false; c], ..Default::default() },
            )
        };
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
            explained_variance: acc.sums.explained_variance(),
            explained_variance_per_step: acc.sums.explained_variance_per_step(),
            skipped_steps: acc.skipped,
            detailed,
            partial,
        };
        self.progress.epochs.push(report.clone());
        report
    }

    /// Steps of the whole run on `rows` rows: the step budget, or the steps done plus those of the
    /// epochs left (so a run resumed on other data, or with more epochs, trains whole epochs).
    pub fn planned_steps(&self, rows: usize) -> u64 {
        match self.options.steps {
            Some(s) => s,
            None => {
                let per_epoch = self.options.batches_per_epoch(rows);
                let left = (self.options.epochs as u64).saturating_sub(self.progress.epoch as u64);
                (self.progress.step + (left * per_epoch)).saturating_sub(self.progress.batch_in_epoch)
            }
        }
    }

    /// Whether the last epoch report is a partial one of the epoch in progress (a step budget cut
    /// it short): a run that continues the epoch drops it, and reports the whole epoch once.
    pub fn continues_partial_epoch(&self, rows: usize) -> bool {
        let last_partial =
            self.progress.epochs.last().is_some_and(|r| r.partial && r.epoch == self.progress.epoch + 1);
        last_partial && self.progress.step < self.planned_steps(rows)
    }

    /// Runs (or continues) the training on `data` until the step budget or the last epoch,
    /// writing checkpoints as configured. Returns the epoch reports of this call.
    pub fn run(&mut self, data: &Dataset, observer: &mut dyn Observer) -> Result<Vec<EpochReport>> {
        self.run_shared(data, observer, &mut SingleProcess)
    }

    /// [`Trainer::run`] as one of several processes (`reducer` says which and completes each
    /// step with the others): each reads only its share of every global batch; only rank 0
    /// writes checkpoints and reports to `observer`.
    pub fn run_shared(
        &mut self,
        data: &Dataset,
        observer: &mut dyn Observer,
        reducer: &mut dyn Reducer,
    ) -> Result<Vec<EpochReport>> {
        self.run_loop(data, observer, reducer, None)
    }

    /// [`Trainer::run`] with the maths of each step done by `external` (the PyTorch module on a
    /// GPU): the loop, the data order, the schedule, the metrics, the checkpoints, the non-finite
    /// and stop policies are this trainer's. `external` starts from this trainer's model and
    /// optimiser state and hands its own back before every checkpoint and at the end.
    pub fn run_external(
        &mut self,
        data: &Dataset,
        observer: &mut dyn Observer,
        external: &mut dyn ExternalStep,
    ) -> Result<Vec<EpochReport>> {
        external.start(self)?;
        self.run_loop(data, observer, &mut SingleProcess, Some(external))
    }

    /// Records a step whose maths was done elsewhere ([`ExternalStep`]): its batch statistics
    /// (`[loss, rows, entries, Σx, Σx², Σ(x-x̂)², codes with |z| >= 1e-6, Σz², Σ‖r_t‖² for t =
    /// 1..k, then 1 for each atom with a positive code, for the c atoms]`), whether its loss and
    /// gradients were finite (the update was skipped otherwise) and its gradient norm.
    pub fn record_external(
        &mut self,
        stats: Vec<f64>,
        finite: bool,
        lr: f64,
        grad_norm: f64,
    ) -> Result<StepReport> {
        let (c, d, k) = (self.model.nb_concepts(), self.model.input_dim(), self.model.config().k);
        if stats.len() != FIXED + k + d + c {
            return Err(Error::Shape(format!(
                "step statistics have {} values, expected {FIXED} + k + d + c = {}",
                stats.len(),
                FIXED + k + d + c
            )));
        }
        let finite = finite && stats[0].is_finite();
        Ok(self.account(&BatchStats { values: stats, d, c }, finite, lr, grad_norm, "external"))
    }

    fn run_loop(
        &mut self,
        data: &Dataset,
        observer: &mut dyn Observer,
        reducer: &mut dyn Reducer,
        mut external: Option<&mut dyn ExternalStep>,
    ) -> Result<Vec<EpochReport>> {
        let (rank, world) = reducer.rank_and_world();
        if world == 0 || rank >= world || self.options.gradient_shards % world != 0 {
            return Err(Error::invalid(
                "processes",
                format!(
                    "{world} processes cannot share {} gradient shards (use a power of two no larger)",
                    self.options.gradient_shards
                ),
            ));
        }
        let mut observer = RankObserver { inner: observer, reports: rank == 0 };
        let observer: &mut dyn Observer = &mut observer;
        if data.dim() != self.model.input_dim() {
            return Err(Error::Shape(format!(
                "data rows have dimension {}, the model expects {}",
                data.dim(),
                self.model.input_dim()
            )));
        }
        let rows = data.rows();
        let total = self.planned_steps(rows);
        let per_epoch = self.options.batches_per_epoch(rows);
        if self.continues_partial_epoch(rows) {
            self.progress.epochs.pop();
        }
        let start_step = self.progress.step;
        let criterion = self.options.criterion.build();
        let bs = self.options.batch_size;
        let d = data.dim();
        let mut reports = Vec::new();
        let mut batch = Vec::new();
        // The learning rate of an external step launched and not accounted yet.
        let mut pending_lr: Option<f64> = None;
        self.model.train();
        let mut epoch_start = Instant::now();
        while self.progress.step < total {
            let order = epoch_order(rows, self.options.shuffle, self.options.seed, self.progress.epoch);
            while self.progress.batch_in_epoch < per_epoch && self.progress.step < total {
                let b = self.progress.batch_in_epoch as usize;
                let ids = &order[b * bs..((b + 1) * bs).min(rows)];
                let share = batch_share(ids.len(), self.options.gradient_shards, rank, world);
                if let Err(e) = data.read(&ids[share.rows.clone()], &mut batch) {
                    // The data changed under the run: keep what was learnt from it so far.
                    if rank == 0 && self.progress.step > 0 {
                        self.drain_external(&mut external, &mut pending_lr, observer, total)?;
                        self.sync_external(&mut external)?;
                        self.write_checkpoint(observer)?;
                    }
                    return Err(e);
                }
                self.model.preprocess().apply(&mut batch, d);
                let lr = self.lr_at(self.progress.step, total);
                match external.as_deref_mut() {
                    Some(ext) => {
                        let results = ext.step_late(&batch, lr)?;
                        let report = match (results, pending_lr.replace(lr)) {
                            // Pipelined: the results of the step before this one.
                            (Some(res), Some(previous_lr)) => Some(self.record_late(res, previous_lr)?),
                            // Not pipelined: this step's own results, nothing left pending.
                            (Some(res), None) => {
                                pending_lr = None;
                                Some(self.record_external(res.0, res.1, lr, res.2)?)
                            }
                            // The first step of a pipelined stepper: nothing to report yet.
                            (None, _) => None,
                        };
                        if let Some(mut report) = report {
                            report.total_steps = total;
                            observer.on_step(&report);
                        }
                    }
                    None => {
                        let mut report =
                            self.step_shared(&batch, &share, ids.len(), criterion.as_ref(), lr, reducer)?;
                        report.total_steps = total;
                        observer.on_step(&report);
                    }
                };
                self.progress.step += 1;
                self.progress.batch_in_epoch += 1;
                self.check_bad_steps()?;
                if reducer.any(observer.stop_requested())? {
                    let checkpointed = rank == 0 && self.checkpoint_dir.is_some();
                    self.drain_external(&mut external, &mut pending_lr, observer, total)?;
                    self.sync_external(&mut external)?;
                    if checkpointed {
                        self.write_checkpoint(observer)?;
                    }
                    return Err(Error::Interrupted { step: self.progress.step, checkpointed });
                }
                let every = self.options.checkpoint_every;
                if every > 0 && self.progress.step % every == 0 && self.progress.step < total && rank == 0 {
                    if self.checkpoint_dir.is_some() {
                        self.drain_external(&mut external, &mut pending_lr, observer, total)?;
                        self.sync_external(&mut external)?;
                    }
                    self.write_checkpoint(observer)?;
                }
            }
            // The epoch's last step is accounted in it.
            self.drain_external(&mut external, &mut pending_lr, observer, total)?;
            if self.progress.batch_in_epoch >= per_epoch {
                let r = self.finish_epoch(epoch_start.elapsed().as_secs_f64(), false);
                observer.on_epoch(&r);
                reports.push(r);
                self.progress.epoch += 1;
                self.progress.batch_in_epoch = 0;
                epoch_start = Instant::now();
            }
        }
        // A step budget may end mid-epoch: report the partial epoch (when this call trained in it).
        if self.progress.step > start_step && (self.progress.acc.batches > 0 || self.progress.acc.skipped > 0)
        {
            let r = self.finish_epoch(epoch_start.elapsed().as_secs_f64(), true);
            observer.on_epoch(&r);
            reports.push(r);
        }
        self.sync_external(&mut external)?;
        // A call that trained nothing (a finished run resumed) leaves its checkpoint as it was.
        if rank == 0 && self.progress.step > start_step {
            self.write_checkpoint(observer)?;
        }
        Ok(reports)
    }

    /// Accounts a result that arrived one step late ([`ExternalStep::step_late`]): its report
    /// is labelled with the step it belongs to, the one before the current count.
    fn record_late(&mut self, res: (Vec<f64>, bool, f64), lr: f64) -> Result<StepReport> {
        let mut report = self.record_external(res.0, res.1, lr, res.2)?;
        report.step -= 1;
        Ok(report)
    }

    /// Accounts the external step still pending (before an epoch ends, a checkpoint, a stop).
    fn drain_external(
        &mut self,
        external: &mut Option<&mut dyn ExternalStep>,
        pending_lr: &mut Option<f64>,
        observer: &mut dyn Observer,
        total: u64,
    ) -> Result<()> {
        let (Some(ext), Some(lr)) = (external.as_deref_mut(), pending_lr.take()) else {
            return Ok(());
        };
        if let Some(res) = ext.drain()? {
            let mut report = self.record_late(res, lr)?;
            report.total_steps = total;
            observer.on_step(&report);
            self.check_bad_steps()?;
        }
        Ok(())
    }

    /// The non-finite policy's stop: too many bad steps in a row.
    fn check_bad_steps(&self) -> Result<()> {
        if self.progress.consecutive_bad >= self.options.max_bad_steps {
            return Err(Error::Training(format!(
                "{} steps in a row had a non-finite loss or gradient (last at step {}); \
                 the model was left at its last good state{}",
                self.progress.consecutive_bad,
                self.progress.step,
                if self.checkpoint_dir.is_some() { " and the last checkpoint is kept" } else { "" }
            )));
        }
        Ok(())
    }

    fn sync_external(&mut self, external: &mut Option<&mut dyn ExternalStep>) -> Result<()> {
        match external.as_deref_mut() {
            Some(ext) => ext.sync_to(self),
            None => Ok(()),
        }
    }

    /// Writes `checkpoint.safetensors` in the checkpoint folder (atomically), if there is one.
    pub fn write_checkpoint(&mut self, observer: &mut dyn Observer) -> Result<()> {
        if let Some(dir) = self.checkpoint_dir.clone() {
            let path = dir.join(CHECKPOINT_FILE);
            checkpoint::save(self, &path)?;
            observer.on_checkpoint(self.progress.step, &path);
        }
        Ok(())
    }
}

/// The maths of a training step done outside the engine (the PyTorch module on a GPU), for
/// [`Trainer::run_external`]: the trainer keeps everything else.
pub trait ExternalStep {
    /// Takes the trainer's model parameters and optimiser state (a new run's initial weights, or
    /// a resumed run's checkpoint).
    fn start(&mut self, trainer: &Trainer) -> Result<()>;
    /// One optimiser step on the rows `x` (preprocessed, `n x d`) at learning rate `lr`
    /// (forward, the run's criterion, backward, clipping, Adam): returns the batch statistics
    /// (see [`Trainer::record_external`]), whether the loss and gradients were finite (the update
    /// must be skipped when not) and the gradient norm before clipping.
    fn step(&mut self, x: &[f32], lr: f64) -> Result<(Vec<f64>, bool, f64)>;
    /// Launches the step on `x` and returns the results of the step launched before it, if one
    /// is pending: the statistics arrive one step late, so the host reads and copies the next
    /// batch while the device computes (the device then decides itself to skip a non-finite
    /// update). The default is [`ExternalStep::step`]'s results at once.
    fn step_late(&mut self, x: &[f32], lr: f64) -> Result<Option<(Vec<f64>, bool, f64)>> {
        self.step(x, lr).map(Some)
    }
    /// One step on `n` rows the stepper holds itself (on its device, in the data's space: it
    /// applies `preprocess` there), so they never travel through the host; the results as
    /// [`ExternalStep::step`]'s. By default a stepper holds no rows.
    fn step_held(
        &mut self,
        n: usize,
        lr: f64,
        preprocess: &crate::model::Preprocess,
    ) -> Result<(Vec<f64>, bool, f64)> {
        let _ = (n, lr, preprocess);
        Err(Error::invalid("stream", "this stepper holds no rows: give them to step()"))
    }
    /// The results of the step launched last and not returned yet by
    /// [`ExternalStep::step_late`] (none by default).
    fn drain(&mut self) -> Result<Option<(Vec<f64>, bool, f64)>> {
        Ok(None)
    }
    /// Writes the current parameters and optimiser state into `trainer` (before a checkpoint and
    /// at the end).
    fn sync_to(&mut self, trainer: &mut Trainer) -> Result<()>;
}

/// The observer of one of several processes: every process is asked whether to stop (they stop
/// together), only rank 0 reports.
struct RankObserver<'a> {
    inner: &'a mut dyn Observer,
    reports: bool,
}

impl Observer for RankObserver<'_> {
    fn on_step(&mut self, r: &StepReport) {
        if self.reports {
            self.inner.on_step(r);
        }
    }
    fn on_epoch(&mut self, r: &EpochReport) {
        if self.reports {
            self.inner.on_epoch(r);
        }
    }
    fn on_checkpoint(&mut self, step: u64, path: &std::path::Path) {
        if self.reports {
            self.inner.on_checkpoint(step, path);
        }
    }
    fn stop_requested(&mut self) -> bool {
        self.inner.stop_requested()
    }
}

/// The statistics of one step that the processes sum: loss, the reconstruction's sums, L0, the
/// codes' squared norm, the residual energy after each step, the per-dimension sums of the rows,
/// and which atoms fired positively (all on the preprocessed rows).
struct BatchStats {
    /// `[loss, rows, entries, Σx, Σx², Σ(x-x̂)², nonzero codes, Σcodes², energy_1..k,
    /// Σx_1..d, alive_1..c]`.
    values: Vec<f64>,
    d: usize,
    c: usize,
}

/// The names of a step's statistics that every process sums, in order (the device path sends
/// them by these names): then the residual energy after each pursuit step (`energy_1..k`), the
/// per-dimension sums of the rows (`sum_x_1..d`), then 1 for each atom with a positive code
/// (`alive_1..c`).
pub const STEP_STATISTICS: [&str; FIXED] =
    ["loss", "rows", "entries", "sum_x", "sum_x2", "sum_error2", "nonzero_codes", "sum_codes2"];

const FIXED: usize = 8;

impl BatchStats {
    fn of(x: &[f32], pass: &ShardPass, d: usize, c: usize) -> BatchStats {
        let fw = &pass.forward;
        let (n, k) = (fw.codes.n, fw.codes.k);
        let mut v = vec![0f64; FIXED + k + d + c];
        v[0] = pass.criterion.loss;
        v[1] = n as f64;
        v[2] = x.len() as f64;
        for (&a, &b) in x.iter().zip(&fw.x_hat) {
            v[3] += a as f64;
            v[4] += a as f64 * a as f64;
            v[5] += ((a - b) as f64).powi(2);
        }
        for row in x.chunks(d.max(1)) {
            for (s, &a) in v[FIXED + k..FIXED + k + d].iter_mut().zip(row) {
                *s += a as f64;
            }
        }
        for i in 0..n {
            for (atom, value) in fw.codes.row_dense(i) {
                if value.abs() >= 1e-6 {
                    v[6] += 1.0;
                }
                v[7] += value as f64 * value as f64;
                if value > 0.0 {
                    v[FIXED + k + d + atom] = 1.0;
                }
            }
        }
        for t in 0..k {
            v[FIXED + t] = fw.energy.iter().skip(t).step_by(k.max(1)).map(|&e| e as f64).sum();
        }
        BatchStats { values: v, d, c }
    }
    fn loss(&self) -> f64 {
        self.values[0]
    }
    fn k(&self) -> usize {
        self.values.len() - FIXED - self.d - self.c
    }
    fn rows(&self) -> usize {
        self.values[1] as usize
    }
    /// The reconstruction's sums in the data's own space (`p`: the model's preprocessing).
    fn sums(&self, p: &crate::model::Preprocess) -> ReconstructionSums {
        let k = self.k();
        ReconstructionSums {
            rows: self.values[1],
            sum_x: self.values[FIXED + k..FIXED + k + self.d].to_vec(),
            sum_x2: self.values[4],
            sse: self.values[5],
            energy: self.values[FIXED..FIXED + k].to_vec(),
        }
        .to_data_space(p)
    }
    fn l0(&self) -> f64 {
        if self.values[1] == 0.0 {
            0.0
        } else {
            self.values[6] / self.values[1]
        }
    }
    fn codes_sq(&self) -> f64 {
        self.values[7]
    }
    fn alive(&self, c: usize) -> impl Iterator<Item = usize> + '_ {
        let start = self.values.len() - c;
        (0..c).filter(move |&j| self.values[start + j] > 0.0)
    }
}
