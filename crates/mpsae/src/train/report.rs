//! What a training run reports: per step, per epoch, and the progress a checkpoint keeps.

use serde::{Deserialize, Serialize};

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
    /// overcomplete's `r2_score` of the batch (data space).
    pub r2: f64,
    /// The batch's explained variance (SAEBench's definition, [`crate::metrics::ReconstructionSums`]).
    pub explained_variance: f64,
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

/// An explained variance as a number; `null` (written for NaN) and the per-step lists of
/// versions before 0.2 (another definition) read as NaN.
fn number_or_older_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(v.as_f64().unwrap_or(f64::NAN))
}

/// End-of-epoch metrics.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EpochReport {
    /// Epoch (from 1).
    pub epoch: usize,
    /// Last step of the epoch.
    pub step: u64,
    /// Mean of the batch losses.
    pub avg_loss: f64,
    /// Mean of the batch `r2_score`s (overcomplete's definition, in the data's space: kept for
    /// parity).
    pub r2: f64,
    /// Mean of the batch average L0.
    pub l0: f64,
    /// Fraction of atoms with no positive code in the epoch.
    pub dead_ratio: f64,
    /// Seconds spent in the epoch (this process only, after a resume).
    pub time_epoch: f64,
    /// The epoch's explained variance (SAEBench's definition over all the epoch's rows, in the
    /// data's space: [`crate::metrics::ReconstructionSums`]); the headline figure.
    #[serde(deserialize_with = "number_or_older_list")]
    pub explained_variance: f64,
    /// The same after each pursuit step 1..k.
    #[serde(default)]
    pub explained_variance_per_step: Vec<f64>,
    /// Steps skipped in the epoch (non-finite).
    pub skipped_steps: u64,
    /// Detailed statistics, when asked: mean code L2 norm, mean atom norm, mean gradient norm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detailed: Option<DetailedStats>,
    /// The epoch was cut short by a step budget: a resumed run that continues it replaces this
    /// report with the whole epoch's (an epoch is numbered once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
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
    /// Asked after every step: `true` stops the run there (a checkpoint is written when the
    /// run has a folder) with [`crate::Error::Interrupted`].
    fn stop_requested(&mut self) -> bool {
        false
    }
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
    /// The epoch's reconstruction sums (data space), for its explained variance.
    #[serde(default)]
    pub sums: crate::metrics::ReconstructionSums,
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
    /// Where a run fed by a stream stands in it (`None` for a run on data files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamPosition>,
}

/// How far a run fed by a stream ([`crate::run::StreamRun`]) has read it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamPosition {
    /// Rows of the stream taken so far (trained on).
    pub rows: u64,
    /// Whether the stream was read to its end and the run finished.
    pub finished: bool,
}
