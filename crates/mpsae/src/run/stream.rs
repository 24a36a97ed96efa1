//! A run fed by a stream of rows (a model's activations as its forward passes produce them, no
//! copy on disk): a normal run folder (`config.json` with the stream's definition,
//! `metrics.jsonl`, checkpoints, the model) whose checkpoints record how many rows of the stream
//! were trained on, so that a resumed run continues the stream exactly where its checkpoint was
//! taken. The stream itself (windows, forward passes, the shuffle buffer) is the caller's:
//! `mpsae.train_from_model` in Python.
//!
//! The resume policy is the library's ([`ResumeRequest::apply_options`]); in place of the data
//! files, the stream's definition must be the run's.

use crate::model::Provenance;
use crate::run::session::run_summary;
use crate::run::{ResumeRequest, Run, RunOptions, Spelling, CONFIG_FILE};
use crate::train::{
    checkpoint, EpochReport, ExternalStep, PreprocessPlan, StepReport, StreamPosition, StreamTrainer,
    Trainer, CHECKPOINT_FILE,
};
use crate::{Error, Result, Settings};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Instant;

/// What a front end asks of a run fed by a stream.
#[derive(Clone, Debug)]
pub struct StreamRequest {
    /// The run folder.
    pub out: PathBuf,
    /// Every option's value (the defaults where none was given).
    pub options: RunOptions,
    /// The names of the options the caller gave (a resume compares only these).
    pub given: Vec<String>,
    /// The rows' width.
    pub input_dim: usize,
    /// Rows the preprocessing (centring, scaling) is estimated from, when the options ask for it.
    pub estimate_rows: usize,
    /// Continue the run in `out` from its checkpoint (a folder with none starts from the
    /// stream's beginning).
    pub resume: bool,
    /// Start a new run in `out` even if it holds one.
    pub force: bool,
    /// With `resume`: apply training options that differ from the run's.
    pub allow_changes: bool,
    /// How messages spell options.
    pub spelling: Spelling,
    /// Where the activations come from.
    pub provenance: Provenance,
    /// What defines the stream (model, hook, inputs, windows, shuffling): a resumed run must be
    /// fed the same.
    pub stream: Value,
    /// A short name of the stream for `config.json`'s data list.
    pub data_name: String,
    /// How the kernels run.
    pub settings: Settings,
}

/// An open run fed by a stream; its folder is locked while it lives.
pub struct StreamRun {
    run: Run,
    /// The trainer (with the preprocessing estimate while it is being made).
    pub stream: StreamTrainer,
    /// Rows of the stream taken so far: trained on, or held for the preprocessing estimate.
    rows: u64,
    /// Notes for the user (a resume, options changed, a lock taken over).
    pub notes: Vec<String>,
    started: Instant,
}

/// The first key at which two stream definitions differ, with both values.
fn first_difference(a: &Value, b: &Value) -> String {
    match (a.as_object(), b.as_object()) {
        (Some(x), Some(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (u, v) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                if u != v {
                    return format!("{k} {u} (the run's: {v})");
                }
            }
            "nothing".into()
        }
        _ => format!("{a} (the run's: {b})"),
    }
}

impl StreamRun {
    /// Opens the run of `request`: a new one, or the one in `request.out` resumed from its
    /// checkpoint (the stream's definition and the options given checked against the run's).
    pub fn open(request: &StreamRequest) -> Result<StreamRun> {
        let r = request;
        let dir = &r.out;
        let mut notes = Vec::new();
        let has_checkpoint = dir.join(CHECKPOINT_FILE).exists();
        if r.resume && !has_checkpoint && dir.join(CONFIG_FILE).exists() {
            let config = Run::read_config(dir)?;
            match &config.stream {
                Some(s) if *s == r.stream => {
                    notes.push("no checkpoint was written yet: the stream starts from its beginning".into())
                }
                Some(s) => {
                    return Err(Error::file(
                        dir,
                        format!("holds a run of another stream: {}", first_difference(&r.stream, s)),
                    ))
                }
                None => return Err(Error::file(dir, "holds a run trained on data files, not on a stream")),
            }
        }
        let (run, mut stream) = if r.resume && has_checkpoint {
            let (run, mut trainer) = Run::resume(dir)?;
            match &run.config.stream {
                Some(s) if *s == r.stream => {}
                Some(s) => {
                    return Err(Error::file(
                        dir,
                        format!(
                            "holds a run of another stream: {} (start a new run with {})",
                            first_difference(&r.stream, s),
                            match r.spelling {
                                Spelling::Cli => "--force",
                                Spelling::Python => "force=True",
                            }
                        ),
                    ))
                }
                None => return Err(Error::file(dir, "holds a run trained on data files, not on a stream")),
            }
            if run.config.model.input_dim != r.input_dim {
                return Err(Error::invalid(
                    "stream",
                    format!(
                        "rows of width {}, the run's model takes {}",
                        r.input_dim, run.config.model.input_dim
                    ),
                ));
            }
            let resume = ResumeRequest {
                options: r.options.clone(),
                given: r.given.clone(),
                allow_changes: r.allow_changes,
                allow_data_change: false,
                spelling: r.spelling,
            };
            notes.extend(resume.apply_options(&run.config, &mut trainer)?);
            let position = trainer.progress.stream.unwrap_or_default();
            notes.push(if position.finished {
                format!("the run has read its whole stream ({} rows): nothing to train", position.rows)
            } else {
                format!(
                    "continuing at step {} after {} rows of the stream",
                    trainer.progress.step, position.rows
                )
            });
            (run, StreamTrainer::new(trainer, PreprocessPlan::Model)?)
        } else {
            let (trainer, config) = r.options.new_stream_run(
                r.input_dim,
                r.data_name.clone(),
                r.provenance.clone(),
                r.stream.clone(),
            )?;
            let run = Run::create(dir, config, r.force)?;
            let plan = PreprocessPlan::Estimate {
                center: r.options.center,
                scale: r.options.scale,
                rows: r.estimate_rows,
            };
            (run, StreamTrainer::new(trainer, plan)?)
        };
        if let Some(owner) = run.took_over() {
            notes.push(format!("took over the lock of a process that is gone ({owner})"));
        }
        stream.trainer.model.set_engine(r.settings);
        run.attach(&mut stream.trainer);
        let rows = stream.trainer.progress.stream.map_or(0, |p| p.rows);
        Ok(StreamRun { run, stream, rows, notes, started: Instant::now() })
    }

    /// Rows of the stream taken so far (a resumed run continues after them).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether the run has read its whole stream.
    pub fn finished(&self) -> bool {
        self.stream.trainer.progress.stream.is_some_and(|p| p.finished)
    }

    /// The trainer.
    pub fn trainer(&self) -> &Trainer {
        &self.stream.trainer
    }

    /// The run folder.
    pub fn dir(&self) -> &std::path::Path {
        self.run.dir()
    }

    /// Trains on the next `x` rows of the stream (`n x d`, the data's own space), the maths done
    /// by `external` when given (started by the caller); writes a checkpoint every
    /// `checkpoint_every` steps. Returns the reports of the steps taken (none while the
    /// preprocessing is being estimated). Too many non-finite steps in a row stop the run.
    pub fn step(
        &mut self,
        x: &[f32],
        mut external: Option<&mut dyn ExternalStep>,
    ) -> Result<Vec<StepReport>> {
        if self.finished() {
            return Err(Error::invalid("stream", "the run has read its whole stream already"));
        }
        let n = self.stream.trainer.model.rows_of(x)?;
        let before = self.stream.trainer.progress.step;
        let ext: Option<&mut dyn ExternalStep> = match &mut external {
            Some(e) => Some(&mut **e),
            None => None,
        };
        let reports = self.stream.step_with(x, ext)?;
        self.rows += n as u64;
        self.after_steps(before, &reports, external)?;
        Ok(reports)
    }

    /// [`StreamRun::step`] for the stream's next `n` rows, held by `external` on its device
    /// (they never come to the host); refused while the preprocessing is being estimated.
    pub fn step_held(&mut self, n: usize, external: &mut dyn ExternalStep) -> Result<Vec<StepReport>> {
        if self.finished() {
            return Err(Error::invalid("stream", "the run has read its whole stream already"));
        }
        let before = self.stream.trainer.progress.step;
        let reports = vec![self.stream.step_held(n, &mut *external)?];
        self.rows += n as u64;
        self.after_steps(before, &reports, Some(external))?;
        Ok(reports)
    }

    /// The checks and checkpoints after steps `before..` were taken.
    fn after_steps(
        &mut self,
        before: u64,
        reports: &[StepReport],
        external: Option<&mut dyn ExternalStep>,
    ) -> Result<()> {
        let t = &self.stream.trainer;
        if t.progress.consecutive_bad >= t.options.max_bad_steps {
            return Err(Error::Training(format!(
                "{} steps in a row had a non-finite loss or gradient (last at step {}); the last checkpoint is kept",
                t.progress.consecutive_bad, t.progress.step
            )));
        }
        let every = t.options.checkpoint_every;
        let crossed = every > 0 && !reports.is_empty() && t.progress.step / every > before / every;
        if crossed {
            self.checkpoint(external)?;
        }
        Ok(())
    }

    /// Writes a checkpoint with the stream's position (the device state first synced from
    /// `external`); none while the preprocessing estimate holds rows not trained on yet (a
    /// resumed run reads them again).
    pub fn checkpoint(&mut self, external: Option<&mut dyn ExternalStep>) -> Result<bool> {
        if self.stream.estimating().is_some() {
            return Ok(false);
        }
        if let Some(ext) = external {
            ext.sync_to(&mut self.stream.trainer)?;
        }
        let finished = self.finished();
        self.stream.trainer.progress.stream = Some(StreamPosition { rows: self.rows, finished });
        checkpoint::save(&self.stream.trainer, &self.run.dir().join(CHECKPOINT_FILE))?;
        Ok(true)
    }

    /// Ends the run at the stream's end: trains on rows still held for the estimate, records
    /// the epoch (the stream read once) in `metrics.jsonl`, writes the last checkpoint and the
    /// model. Returns the epoch's report and the run's summary.
    pub fn finish(
        &mut self,
        mut external: Option<&mut dyn ExternalStep>,
    ) -> Result<(Option<EpochReport>, Value)> {
        let mut report = None;
        if !self.finished() {
            if self.stream.estimating().is_some() {
                if self.rows == 0 {
                    return Err(Error::invalid("stream", "the stream gave no rows"));
                }
                let before = self.stream.trainer.progress.step;
                let ext: Option<&mut dyn ExternalStep> = match &mut external {
                    Some(e) => Some(&mut **e),
                    None => None,
                };
                let reports = self.stream.flush_with(ext)?;
                self.after_steps(before, &reports, None)?;
            }
            if let Some(ext) = external.as_mut() {
                ext.sync_to(&mut self.stream.trainer)?;
            }
            if self.stream.trainer.progress.acc.batches > 0 || self.stream.trainer.progress.acc.skipped > 0 {
                let r = self.stream.trainer.end_epoch(self.started.elapsed().as_secs_f64());
                self.run.append_metrics(&r)?;
                report = Some(r);
            }
            self.stream.trainer.progress.stream = Some(StreamPosition { rows: self.rows, finished: true });
            checkpoint::save(&self.stream.trainer, &self.run.dir().join(CHECKPOINT_FILE))?;
        }
        // A finished run resumed keeps its model file as it is.
        let model = match (report.is_none() && self.run.model_path().exists(), self.run.model_path()) {
            (true, path) => path,
            (false, _) => self.run.save_model(&self.stream.trainer)?,
        };
        let summary = run_summary(&self.stream.trainer, Some(model), self.rows, report.as_ref());
        Ok((report, summary))
    }
}
