//! Runs owned by the library: the run folder of a training (typed configuration, metrics,
//! atomic checkpoints, the final model, a lock), and the whole-dataset calls `encode` and
//! `evaluate`. The command line and the Python package are thin shells over these.
//!
//! A run folder holds `config.json` ([`RunConfig`]), `metrics.jsonl` (one [`EpochReport`] per
//! line), `checkpoint.safetensors` (written atomically), `model.safetensors` (at the end) and,
//! while a process writes it, `run.lock` ([`lock`]).

pub mod lock;
pub mod options;
mod resume;
mod session;
mod stream;

pub use crate::io::MODEL_FILE;
pub use lock::{RunLock, LOCK_FILE};
pub use options::{RunOptions, OPTIONS};
pub use resume::{ResumeRequest, Spelling};
pub use session::{recorded_data, Session, SessionRequest};
pub use stream::{StreamRequest, StreamRun};

use crate::config::SaeConfig;
use crate::data::Dataset;
use crate::io::atomic::write_atomic;
use crate::io::state_dict::save_model;
use crate::model::{Preprocess, Provenance};
use crate::train::{checkpoint, EpochReport, TrainOptions, Trainer, CHECKPOINT_FILE};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File names in a run folder.
pub const CONFIG_FILE: &str = "config.json";
/// Per-epoch metrics, one JSON object a line (written only by [`Run::append_metrics`]).
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Whether the data was centred and scaled before training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PreprocessChoice {
    /// The data mean was subtracted.
    pub center: bool,
    /// Rows were scaled to a root-mean-square norm of `sqrt(d)`.
    pub scale: bool,
}

/// One data file of a run, as it was when the run started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Its path (or the name of in-memory data).
    pub path: String,
    /// Rows it holds.
    pub rows: usize,
    /// Row dimension.
    pub d: usize,
    /// Content fingerprint ([`crate::data::Source::fingerprint`]).
    pub fingerprint: String,
}

/// The data files of `data`, with their fingerprints.
pub fn describe_data(data: &Dataset) -> Result<Vec<DataFile>> {
    data.sources()
        .iter()
        .map(|s| {
            Ok(DataFile {
                path: s.path.display().to_string(),
                rows: s.rows,
                d: s.d,
                fingerprint: s.fingerprint()?,
            })
        })
        .collect()
}

/// What a run was trained on and with: `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The mpsae version that started the run.
    pub mpsae_version: String,
    /// The model's configuration.
    pub model: SaeConfig,
    /// The training options.
    pub train: TrainOptions,
    /// The data files (or the embedded demo data's name).
    pub data: Vec<String>,
    /// Tensor read from `.safetensors` data files.
    #[serde(default)]
    pub tensor: Option<String>,
    /// Rows with NaN or infinite values were left out.
    #[serde(default)]
    pub skip_nonfinite: bool,
    /// Rows trained on.
    pub rows: usize,
    /// Rows left out (non-finite).
    #[serde(default)]
    pub skipped_rows: usize,
    /// Preprocessing.
    #[serde(default)]
    pub preprocess: PreprocessChoice,
    /// The data files with their sizes and fingerprints (runs of older versions have none).
    #[serde(default)]
    pub files: Vec<DataFile>,
    /// Where the activations came from (empty when unknown).
    #[serde(default, skip_serializing_if = "Provenance::is_empty")]
    pub provenance: Provenance,
    /// For a run fed by a stream ([`StreamRun`]): what defines the stream (model, hook,
    /// inputs, windows, shuffling), which a resumed run must be fed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<serde_json::Value>,
}

impl RunConfig {
    /// Checks that `data` is what this run was trained on: files, rows, widths and content
    /// fingerprints. The error names what differs and how to continue anyway.
    pub fn check_data(&self, data: &Dataset) -> Result<()> {
        self.check_data_with_hint(data, Spelling::Cli.allow_data_change())
    }

    /// [`RunConfig::check_data`], naming `allow` as the way to continue anyway.
    pub(crate) fn check_data_with_hint(&self, data: &Dataset, allow: &str) -> Result<()> {
        let now = describe_data(data)?;
        if !self.files.is_empty() {
            let hint = format!("(to continue on other data on purpose, resume with {allow})");
            if now.len() != self.files.len() {
                return Err(Error::invalid(
                    "data",
                    format!("{} files given, the run was trained on {} {hint}", now.len(), self.files.len()),
                ));
            }
            for (a, b) in now.iter().zip(&self.files) {
                if (a.rows, a.d) != (b.rows, b.d) {
                    return Err(Error::file(
                        &a.path,
                        format!(
                            "holds {} x {} rows, the run was trained on {} with {} x {} {hint}",
                            a.rows, a.d, b.path, b.rows, b.d
                        ),
                    ));
                }
                if a.fingerprint != b.fingerprint {
                    return Err(Error::file(
                        &a.path,
                        format!(
                            "is not the data the run was trained on ({}: its content differs) {hint}",
                            b.path
                        ),
                    ));
                }
            }
        }
        if data.dim() != self.model.input_dim {
            return Err(Error::invalid(
                "data",
                format!(
                    "rows have dimension {}, the run was trained on {}",
                    data.dim(),
                    self.model.input_dim
                ),
            ));
        }
        if data.rows() != self.rows {
            return Err(Error::invalid(
                "data",
                format!(
                    "{} rows, the run was trained on {} ({})",
                    data.rows(),
                    self.rows,
                    self.data.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// An open run folder, locked for writing while this value lives.
#[derive(Debug)]
pub struct Run {
    dir: PathBuf,
    /// Its configuration.
    pub config: RunConfig,
    lock: RunLock,
}

impl Run {
    /// Starts a new run in `dir` (created if needed): refuses a folder that holds a run unless
    /// `force`, writes `config.json`, clears old metrics.
    pub fn create(dir: &Path, config: RunConfig, force: bool) -> Result<Run> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::io(dir, std::io::Error::new(e.kind(), format!("cannot create the run folder: {e}")))
        })?;
        let lock = RunLock::acquire(dir)?;
        if dir.join(CHECKPOINT_FILE).exists() && !force {
            return Err(Error::file(
                dir,
                "already holds a run: resume it, or start over with force (--force)".to_string(),
            ));
        }
        // Room for the checkpoint (weights, Adam's two moments) and the model.
        let cd = (config.model.nb_concepts as u64) * (config.model.input_dim as u64) * 4;
        crate::resources::check_disk(dir, cd * 4, "the checkpoint and the model")?;
        remove_stale_temporaries(dir);
        let _ = std::fs::remove_file(dir.join(METRICS_FILE));
        let text = serde_json::to_string_pretty(&config).expect("config serialises");
        write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())?;
        Ok(Run { dir: dir.to_path_buf(), config, lock })
    }

    /// Reads the configuration of the run in `dir` (no lock: for readers).
    pub fn read_config(dir: &Path) -> Result<RunConfig> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("not a run configuration: {e}")))
    }

    /// Reopens the run in `dir` to continue it: takes the lock, loads the checkpoint, checks it
    /// against `config.json`, and rewrites the metrics file with the epochs the checkpoint has
    /// finished (lines written after it by an interrupted run are written again).
    pub fn resume(dir: &Path) -> Result<(Run, Trainer)> {
        let ckpt = dir.join(CHECKPOINT_FILE);
        if !ckpt.exists() {
            return Err(Error::file(&ckpt, "no checkpoint to resume from"));
        }
        let lock = RunLock::acquire(dir)?;
        let config = Run::read_config(dir)?;
        let trainer = checkpoint::load(&ckpt)?;
        if trainer.model.config().input_dim != config.model.input_dim
            || trainer.model.nb_concepts() != config.model.nb_concepts
        {
            return Err(Error::file(&ckpt, "does not match the run's config.json (dictionary shape)"));
        }
        remove_stale_temporaries(dir);
        let run = Run { dir: dir.to_path_buf(), config, lock };
        run.rewrite_metrics(&trainer.progress.epochs)?;
        Ok((run, trainer))
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join(METRICS_FILE)
    }

    /// Path of the final model.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// A note when a stale lock (a process that is gone) was taken over.
    pub fn took_over(&self) -> Option<&str> {
        self.lock.took_over.as_deref()
    }

    /// Makes `trainer` write its checkpoints in this folder.
    pub fn attach(&self, trainer: &mut Trainer) {
        trainer.checkpoint_dir = Some(self.dir.clone());
    }

    /// Appends one epoch's metrics.
    pub fn append_metrics(&self, report: &EpochReport) -> Result<()> {
        use std::io::Write;
        let path = self.metrics_path();
        let line = serde_json::to_string(report).expect("report serialises");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(f, "{line}").map_err(|e| Error::io(&path, e))
    }

    /// Rewrites the metrics file with these epochs.
    pub fn rewrite_metrics(&self, epochs: &[EpochReport]) -> Result<()> {
        let mut out = String::new();
        for e in epochs {
            out.push_str(&serde_json::to_string(e).expect("report serialises"));
            out.push('\n');
        }
        write_atomic(&self.metrics_path(), out.as_bytes())
    }

    /// Writes the final model (with its preprocessing and provenance), atomically.
    pub fn save_model(&self, trainer: &Trainer) -> Result<PathBuf> {
        let path = self.model_path();
        save_model(&trainer.model, &path, &[])?;
        Ok(path)
    }
}

/// The epochs recorded in the run folder `dir` (its `metrics.jsonl`, one epoch report a line);
/// `None` when it has none.
pub fn read_metrics(dir: &Path) -> Result<Option<Vec<EpochReport>>> {
    let path = dir.join(METRICS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        out.push(serde_json::from_str(line).map_err(|e| Error::file(&path, format!("line {}: {e}", i + 1)))?);
    }
    Ok(Some(out))
}

/// The preprocessing of a new run on `data`.
pub fn preprocess_for(data: &Dataset, choice: PreprocessChoice) -> Preprocess {
    Preprocess::from_stats(data.stats(), choice.center, choice.scale)
}

/// Removes the temporary files of atomic writes ([`write_atomic`]) that a killed process left.
pub fn remove_stale_temporaries(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if crate::io::atomic::is_temporary(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
