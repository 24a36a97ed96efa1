//! Evaluation of a model on a dataset: the metrics of `mpsae eval`.

use crate::data::Dataset;
use crate::encode::pass::{check, encode_batches, PassOptions};
use crate::metrics::{DeadCodeTracker, ReconstructionSums};
use crate::model::MpSae;
use crate::Result;
use serde::Serialize;

/// Options of [`evaluate`]: those of the encode pass it runs.
pub type EvalOptions = PassOptions;

/// Metrics over a whole dataset, in the data's own space (preprocessing undone).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvalReport {
    /// Rows evaluated.
    pub rows: usize,
    /// Pursuit steps used.
    pub k: usize,
    /// The explained variance (SAEBench's `explained_variance`: `1 - Σ‖x - x̂‖² / Σ‖x - μ‖²` over
    /// all rows, `μ` the per-dimension mean; [`ReconstructionSums`]): the headline figure.
    pub explained_variance: f64,
    /// The same after each pursuit step 1..k.
    pub explained_variance_per_step: Vec<f64>,
    /// `mean((x - x_hat)²)` over all entries.
    pub mse: f64,
    /// overcomplete's `r2_score` (`1 - mse / (var(x) + 1e-6)`, global scalar mean), for parity.
    pub r2: f64,
    /// Average number of non-zero codes (`|z| >= 1e-6`) per row.
    pub l0: f64,
    /// Fraction of atoms with no positive code on the whole dataset.
    pub dead_ratio: f64,
}

/// Encodes every row of `data` in eval mode (the model's preprocessing applied) and measures
/// the reconstruction in the data's own space.
pub fn evaluate(model: &mut MpSae, data: &Dataset, opts: &EvalOptions) -> Result<EvalReport> {
    let k = check(model, data, opts)?;
    let (rows, d, c) = (data.rows(), data.dim(), model.nb_concepts());
    let mut sums = ReconstructionSums::new(d, k);
    let mut nnz = 0usize;
    let mut tracker = DeadCodeTracker::new(c);
    encode_batches(model, data, opts, |model, batch| {
        let enc = &batch.encoded;
        let x_hat = model.decode(&enc.codes)?;
        sums.add(batch.rows, &x_hat, &enc.energy);
        nnz += (0..enc.codes.n)
            .map(|i| enc.codes.row_dense(i).iter().filter(|(_, v)| v.abs() >= 1e-6).count())
            .sum::<usize>();
        tracker.update(&enc.codes);
        Ok(())
    })?;
    Ok(EvalReport {
        rows,
        k,
        explained_variance: sums.explained_variance(),
        explained_variance_per_step: sums.explained_variance_per_step(),
        mse: sums.mse(),
        r2: sums.r2(),
        l0: nnz as f64 / rows.max(1) as f64,
        dead_ratio: tracker.dead_ratio(),
    })
}
