//! Evaluation of a model on a dataset: the metrics of `mpsae eval`.

use crate::data::Dataset;
use crate::encode::pass::{check, encode_batches, PassOptions};
use crate::metrics::DeadCodeTracker;
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
    /// `mean((x - x_hat)²)` over all entries.
    pub mse: f64,
    /// `1 - mse / (var(x) + 1e-6)` with the global scalar mean (the reference's R2).
    pub r2: f64,
    /// Average number of non-zero codes (`|z| >= 1e-6`) per row.
    pub l0: f64,
    /// Fraction of atoms with no positive code on the whole dataset.
    pub dead_ratio: f64,
    /// Explained variance (R2 of the partial reconstruction) after each step 1..k.
    pub explained_variance: Vec<f64>,
}

/// Encodes every row of `data` in eval mode (the model's preprocessing applied) and measures
/// the reconstruction in the data's own space.
pub fn evaluate(model: &mut MpSae, data: &Dataset, opts: &EvalOptions) -> Result<EvalReport> {
    let k = check(model, data, opts)?;
    let (rows, d, c) = (data.rows(), data.dim(), model.nb_concepts());
    let (mut sx, mut sxx, mut sse, mut nnz) = (0f64, 0f64, 0f64, 0usize);
    let mut energy = vec![0f64; k];
    let mut tracker = DeadCodeTracker::new(c);
    encode_batches(model, data, opts, |model, batch| {
        let enc = &batch.encoded;
        let x_hat = model.decode(&enc.codes)?;
        for (a, b) in batch.rows.iter().zip(&x_hat) {
            sx += *a as f64;
            sxx += *a as f64 * *a as f64;
            sse += ((a - b) as f64).powi(2);
        }
        for (t, e) in energy.iter_mut().enumerate() {
            *e += enc.energy.iter().skip(t).step_by(k).map(|&v| v as f64).sum::<f64>();
        }
        nnz += (0..enc.codes.n)
            .map(|i| enc.codes.row_dense(i).iter().filter(|(_, v)| v.abs() >= 1e-6).count())
            .sum::<usize>();
        tracker.update(&enc.codes);
        Ok(())
    })?;
    let nd = (rows * d) as f64;
    let mean = sx / nd;
    let var = (sxx / nd - mean * mean).max(0.0);
    let mse = sse / nd;
    Ok(EvalReport {
        rows,
        k,
        mse,
        r2: 1.0 - mse / (var + 1e-6),
        l0: nnz as f64 / rows as f64,
        dead_ratio: tracker.dead_ratio(),
        explained_variance: energy.iter().map(|e| 1.0 - e / nd / (var + 1e-6)).collect(),
    })
}
