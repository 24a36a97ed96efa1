//! Evaluation of a model on a dataset: the metrics of `mpsae eval`.

use crate::data::{Dataset, Preprocess};
use crate::metrics::DeadCodeTracker;
use crate::model::{EncodeOptions, MpSae};
use crate::{Error, Result};
use serde::Serialize;

/// Options of [`evaluate`].
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions {
    /// Rows per batch.
    pub batch_size: usize,
    /// Pursuit steps (default: the model's k).
    pub k: Option<usize>,
    /// Per-row stopping tolerance.
    pub tol: Option<f32>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { batch_size: 4096, k: None, tol: None }
    }
}

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

/// Encodes every row of `data` in eval mode and measures the reconstruction.
pub fn evaluate(
    model: &mut MpSae,
    data: &Dataset,
    pre: &Preprocess,
    opts: &EvalOptions,
) -> Result<EvalReport> {
    if data.dim() != model.input_dim() {
        return Err(Error::Shape(format!(
            "data rows have dimension {}, the model expects {}",
            data.dim(),
            model.input_dim()
        )));
    }
    if opts.batch_size == 0 {
        return Err(Error::invalid("batch size", "must be at least 1"));
    }
    let k = opts.k.unwrap_or(model.config().k);
    if k == 0 {
        return Err(Error::invalid("k", "must be at least 1"));
    }
    let (rows, d, c) = (data.rows(), data.dim(), model.nb_concepts());
    model.eval();
    model.prepare_for(rows, k);
    let inv_scale2 = pre.scale.map_or(1.0, |s| 1.0 / (s as f64 * s as f64));
    let (mut sx, mut sxx, mut sse, mut nnz) = (0f64, 0f64, 0f64, 0usize);
    let mut energy = vec![0f64; k];
    let mut tracker = DeadCodeTracker::new(c);
    let (mut raw, mut x) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < rows {
        let len = opts.batch_size.min(rows - start);
        data.read_range(start, len, &mut raw)?;
        x.clone_from(&raw);
        pre.apply(&mut x, d);
        let enc = model.encode_with(&x, &EncodeOptions { k: Some(k), tol: opts.tol, mask: None })?;
        let mut x_hat = model.decode(&enc.codes)?;
        pre.undo(&mut x_hat, d);
        for (a, b) in raw.iter().zip(&x_hat) {
            sx += *a as f64;
            sxx += *a as f64 * *a as f64;
            sse += ((a - b) as f64).powi(2);
        }
        for (t, e) in energy.iter_mut().enumerate() {
            *e += enc.energy.iter().skip(t).step_by(k).map(|&v| v as f64).sum::<f64>() * inv_scale2;
        }
        nnz += (0..len)
            .map(|i| enc.codes.row_dense(i).iter().filter(|(_, v)| v.abs() >= 1e-6).count())
            .sum::<usize>();
        tracker.update(&enc.codes);
        start += len;
    }
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
