//! A training session: the one open-or-resume of a run, for every front end (`mpsae train`, its
//! MPI ranks, `mpsae.train` and the PyTorch device path).
//!
//! [`Session::open`] takes what the caller asked ([`SessionRequest`]: the options table's values,
//! which of them were given, the run folder and the resume policy) and the data; it creates or
//! resumes the run folder, applies the resume policy, and holds the run, the trainer and the
//! data. [`Session::run`] (or [`Session::run_shared`] with a [`Reducer`], or
//! [`Session::run_external`] with an [`ExternalStep`]) trains, writing `metrics.jsonl` through
//! [`Run::append_metrics`], the file's only writer; [`Session::finish`] saves the model and
//! returns the summary a front end prints.

use crate::data::Dataset;
use crate::model::Provenance;
use crate::run::{describe_data, ResumeRequest, Run, RunOptions, Spelling};
use crate::train::{
    checkpoint, EpochReport, ExternalStep, Observer, Reducer, StepReport, Trainer, CHECKPOINT_FILE,
};
use crate::{Error, Result, Settings};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// What a front end asks of a training session.
#[derive(Clone, Debug)]
pub struct SessionRequest {
    /// The run folder (`None`: train in memory only).
    pub out: Option<PathBuf>,
    /// Every option's value (the defaults where none was given).
    pub options: RunOptions,
    /// The names of the options the caller gave (the resume policy compares only these).
    pub given: Vec<String>,
    /// Continue the run in `out` from its checkpoint.
    pub resume: bool,
    /// Start a new run in `out` even if it holds one.
    pub force: bool,
    /// With `resume`: apply training options that differ from the run's.
    pub allow_changes: bool,
    /// With `resume`: continue on other data.
    pub allow_data_change: bool,
    /// How messages spell options.
    pub spelling: Spelling,
    /// Whether this process writes the run folder (rank 0 of an MPI job; the others read it).
    pub writer: bool,
    /// The names of the data for `config.json` (paths, or an array's description).
    pub data_names: Vec<String>,
    /// Tensor read from `.safetensors` data files.
    pub tensor: Option<String>,
    /// Rows with NaN or infinite values were left out of the data.
    pub skip_nonfinite: bool,
    /// Where the activations came from (empty when unknown).
    pub provenance: Provenance,
    /// How the kernels run.
    pub settings: Settings,
}

impl SessionRequest {
    /// A request with `options`, every other field at its default (no folder, a new run, written
    /// by this process).
    pub fn new(options: RunOptions, given: Vec<String>, spelling: Spelling) -> SessionRequest {
        SessionRequest {
            out: None,
            options,
            given,
            resume: false,
            force: false,
            allow_changes: false,
            allow_data_change: false,
            spelling,
            writer: true,
            data_names: Vec::new(),
            tensor: None,
            skip_nonfinite: false,
            provenance: Provenance::default(),
            settings: Settings::default(),
        }
    }
}

/// The data the run in `dir` recorded, for a resume that names no data: its files (the names in
/// `config.json` that are files), the tensor and the non-finite policy. A folder with no run to
/// resume is an error that says so.
pub fn recorded_data(dir: &Path) -> Result<(Vec<PathBuf>, Option<String>, bool)> {
    let ckpt = dir.join(CHECKPOINT_FILE);
    if !ckpt.exists() {
        return Err(Error::file(&ckpt, "no checkpoint to resume from"));
    }
    let config = Run::read_config(dir)?;
    let files = config.data.iter().map(PathBuf::from).filter(|p| p.exists()).collect();
    Ok((files, config.tensor.clone(), config.skip_nonfinite))
}

/// `1 epoch`, `3 epochs`.
fn epochs(n: usize) -> String {
    format!("{n} epoch{}", if n == 1 { "" } else { "s" })
}

/// An open training session.
pub struct Session {
    /// The run folder, locked (`None` in memory, and on the MPI ranks that do not write it).
    pub run: Option<Run>,
    /// The trainer.
    pub trainer: Trainer,
    /// The data.
    pub data: Dataset,
    /// Notes for the user (options changed on resume, a lock taken over, rows left out).
    pub notes: Vec<String>,
    spelling: Spelling,
    out: Option<PathBuf>,
}

impl Session {
    /// Opens the session of `request` on `data`: a new run (in `request.out` when given), or the
    /// run in `request.out` resumed under the library's resume policy ([`ResumeRequest`]).
    pub fn open(request: &SessionRequest, data: Dataset) -> Result<Session> {
        let r = request;
        let mut notes = Vec::new();
        let (run, mut trainer) = match (&r.out, r.resume) {
            (None, true) => {
                return Err(Error::invalid(
                    "resume",
                    match r.spelling {
                        Spelling::Cli => "give the run folder with --out",
                        Spelling::Python => "give the run folder as out=",
                    },
                ))
            }
            (Some(dir), true) => {
                let (run, mut trainer, config) = if r.writer {
                    let (run, trainer) = Run::resume(dir)?;
                    let config = run.config.clone();
                    (Some(run), trainer, config)
                } else {
                    (None, checkpoint::load(&dir.join(CHECKPOINT_FILE))?, Run::read_config(dir)?)
                };
                let resume = ResumeRequest {
                    options: r.options.clone(),
                    given: r.given.clone(),
                    allow_changes: r.allow_changes,
                    allow_data_change: r.allow_data_change,
                    spelling: r.spelling,
                };
                notes.extend(resume.apply(&config, &data, &mut trainer)?);
                (run, trainer)
            }
            (dir, false) => {
                let (trainer, config) = r.options.new_run(
                    &data,
                    r.data_names.clone(),
                    r.tensor.clone(),
                    r.skip_nonfinite,
                    r.provenance.clone(),
                )?;
                let run = match dir {
                    Some(d) if r.writer => Some(Run::create(d, config, r.force)?),
                    _ => None,
                };
                (run, trainer)
            }
        };
        if let Some(owner) = run.as_ref().and_then(Run::took_over) {
            notes.push(format!("took over the lock of a process that is gone ({owner})"));
        }
        if r.writer && data.stats().skipped > 0 {
            notes.push(format!("left out {} rows with NaN or infinite values", data.stats().skipped));
        }
        trainer.model.set_engine(r.settings);
        if let Some(run) = &run {
            run.attach(&mut trainer);
        }
        if r.resume {
            let rows = data.rows();
            let (step, planned) = (trainer.progress.step, trainer.planned_steps(rows));
            if step >= planned {
                let more = match (trainer.options.steps, r.spelling) {
                    (Some(s), Spelling::Cli) => {
                        format!("its budget of {s} steps; raise --steps (with --allow-changes)")
                    }
                    (Some(s), Spelling::Python) => {
                        format!("its budget of {s} steps; raise steps= (with allow_changes=True)")
                    }
                    (None, Spelling::Cli) => {
                        format!(
                            "its {}; raise --epochs (with --allow-changes)",
                            epochs(trainer.options.epochs)
                        )
                    }
                    (None, Spelling::Python) => {
                        format!(
                            "its {}; raise epochs= (with allow_changes=True)",
                            epochs(trainer.options.epochs)
                        )
                    }
                };
                notes.push(format!("nothing to train: the run has done {more} to train more"));
            } else {
                let epochs_left = if trainer.options.steps.is_none() {
                    let left = trainer.options.epochs.saturating_sub(trainer.progress.epoch);
                    format!(" ({} to go, on {rows} rows)", epochs(left))
                } else {
                    String::new()
                };
                notes.push(format!("continuing at step {step} of {planned}{epochs_left}"));
            }
            if trainer.continues_partial_epoch(rows) {
                // The epoch cut short by the old budget is reported whole once it ends.
                let mut epochs = trainer.progress.epochs.clone();
                epochs.pop();
                if let Some(run) = &run {
                    run.rewrite_metrics(&epochs)?;
                }
            }
        }
        Ok(Session { run, trainer, data, notes, spelling: r.spelling, out: r.out.clone() })
    }

    /// Steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        self.trainer.planned_steps(self.data.rows())
    }

    /// Trains until the run's budget; `observer` sees every step and epoch, and the epochs'
    /// metrics go to the run folder's `metrics.jsonl`. Returns this call's epoch reports.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<Vec<EpochReport>> {
        let mut w = MetricsWriter { run: self.run.as_ref(), inner: observer, error: None };
        let reports = self.trainer.run(&self.data, &mut w);
        w.finish(reports)
    }

    /// [`Session::run`] as one of several processes: first checks that every process holds the
    /// same data, options and state (the error names what differs), then trains with `reducer`.
    pub fn run_shared(
        &mut self,
        observer: &mut dyn Observer,
        reducer: &mut dyn Reducer,
    ) -> Result<Vec<EpochReport>> {
        self.check_agreement(reducer)?;
        let mut w = MetricsWriter { run: self.run.as_ref(), inner: observer, error: None };
        let reports = self.trainer.run_shared(&self.data, &mut w, reducer);
        w.finish(reports)
    }

    /// [`Session::run`] with each step's maths done by `external` (the PyTorch device path).
    pub fn run_external(
        &mut self,
        observer: &mut dyn Observer,
        external: &mut dyn ExternalStep,
    ) -> Result<Vec<EpochReport>> {
        let mut w = MetricsWriter { run: self.run.as_ref(), inner: observer, error: None };
        let reports = self.trainer.run_external(&self.data, &mut w, external);
        w.finish(reports)
    }

    /// Checks that every process of `reducer` holds the same data, options, model and step.
    pub fn check_agreement(&self, reducer: &mut dyn Reducer) -> Result<()> {
        let mine = json!({
            "data": describe_data(&self.data)?,
            "options": self.trainer.options,
            "model": self.trainer.model.config(),
            "step": self.trainer.progress.step,
        });
        let all = reducer.all_gather(mine.to_string().as_bytes())?;
        let parse = |b: &[u8]| -> Result<Value> {
            serde_json::from_slice(b).map_err(|e| Error::Training(format!("a process's description: {e}")))
        };
        let first = parse(&all[0])?;
        for (rank, bytes) in all.iter().enumerate().skip(1) {
            let other = parse(bytes)?;
            if other != first {
                let key = ["data", "options", "model", "step"]
                    .into_iter()
                    .find(|k| other[k] != first[k])
                    .unwrap_or("?");
                return Err(Error::invalid(
                    "processes",
                    format!(
                        "rank {rank} sees other {key} than rank 0: {} against {}",
                        other[key], first[key]
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What to tell a user whose run was interrupted after `step`: what was kept and how to
    /// continue.
    pub fn interrupted_message(&self, step: u64, checkpointed: bool) -> String {
        let how = if checkpointed { "the checkpoint holds it" } else { "no checkpoint was written" };
        let cont = match (&self.out, self.spelling) {
            (Some(o), Spelling::Cli) => {
                format!("; continue with: mpsae train --resume --out {}", o.display())
            }
            (Some(o), Spelling::Python) => {
                format!("; continue with resume=True, out={:?}", o.display().to_string())
            }
            (None, _) => String::new(),
        };
        format!("interrupted after step {step} ({how}){cont}")
    }

    /// Saves the model in the run folder (when this process writes one) and returns the run's
    /// summary: the model file, steps, rows, shape and the last epoch's metrics.
    pub fn finish(&self, reports: &[EpochReport]) -> Result<Value> {
        let model_file = match &self.run {
            Some(run) => Some(run.save_model(&self.trainer)?),
            None => None,
        };
        Ok(run_summary(&self.trainer, model_file, self.data.rows() as u64, reports.last()))
    }

    /// The run folder, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.run.as_ref().map(Run::dir)
    }
}

/// The summary a front end prints at a run's end: the model file, steps, rows, shape and the last
/// epoch's metrics (`last`: the last epoch this call trained).
pub(crate) fn run_summary(
    trainer: &Trainer,
    model: Option<PathBuf>,
    rows: u64,
    last: Option<&EpochReport>,
) -> Value {
    json!({
        "model": model.map(|p| p.display().to_string()),
        "steps": trainer.progress.step,
        "skipped_steps": trainer.progress.total_bad,
        "rows": rows,
        "d": trainer.model.input_dim(),
        "concepts": trainer.model.nb_concepts(),
        "k": trainer.model.config().k,
        "loss": last.map(|r| r.avg_loss),
        "explained_variance": last.map(|r| r.explained_variance),
        "explained_variance_per_step": last.map(|r| r.explained_variance_per_step.clone()),
        "r2": last.map(|r| r.r2),
        "l0": last.map(|r| r.l0),
        "dead_ratio": last.map(|r| r.dead_ratio),
    })
}

/// Writes every epoch's report to the run's `metrics.jsonl`, then passes everything on.
struct MetricsWriter<'a> {
    run: Option<&'a Run>,
    inner: &'a mut dyn Observer,
    error: Option<Error>,
}

impl MetricsWriter<'_> {
    /// The run's result, or the first error writing the metrics.
    fn finish(self, reports: Result<Vec<EpochReport>>) -> Result<Vec<EpochReport>> {
        let reports = reports?;
        match self.error {
            Some(e) => Err(e),
            None => Ok(reports),
        }
    }
}

impl Observer for MetricsWriter<'_> {
    fn on_step(&mut self, r: &StepReport) {
        self.inner.on_step(r)
    }
    fn on_epoch(&mut self, r: &EpochReport) {
        if let Some(run) = self.run {
            if let Err(e) = run.append_metrics(r) {
                self.error.get_or_insert(e);
            }
        }
        self.inner.on_epoch(r)
    }
    fn on_checkpoint(&mut self, step: u64, path: &Path) {
        self.inner.on_checkpoint(step, path)
    }
    fn stop_requested(&mut self) -> bool {
        self.inner.stop_requested()
    }
}
