//! The one eval-mode encode path over a dataset: read rows, let the model preprocess and pursue
//! them, hand each batch to the caller. `mpsae eval` ([`crate::encode::evaluate()`]), the codes file
//! ([`crate::encode::encode_dataset`]), the concept browser ([`crate::concepts::analyze`]) and the
//! Python package all go through it, so they see the same codes for the same rows.

use crate::data::Dataset;
use crate::model::{EncodeOptions, Encoded, MpSae};
use crate::{Error, Result};

/// One encoded batch.
pub struct EncodedBatch<'a> {
    /// Index of its first row in the dataset.
    pub start: usize,
    /// Its rows, in the data's own space (`len x d`).
    pub rows: &'a [f32],
    /// Their codes (preprocessed space), residuals and energies (data space).
    pub encoded: Encoded,
}

/// Options of [`encode_batches`].
#[derive(Clone, Copy, Debug)]
pub struct PassOptions {
    /// Rows per batch.
    pub batch_size: usize,
    /// Pursuit steps (default: the model's k).
    pub k: Option<usize>,
    /// Per-row stopping tolerance.
    pub tol: Option<f32>,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions { batch_size: crate::defaults::ENCODE_BATCH_SIZE, k: None, tol: None }
    }
}

/// Checks `data` and the options against `model`, returns the number of pursuit steps.
pub fn check(model: &MpSae, data: &Dataset, opts: &PassOptions) -> Result<usize> {
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
        return Err(Error::invalid("k", "the number of pursuit steps must be at least 1"));
    }
    Ok(k)
}

/// Encodes every row of `data` in eval mode, `opts.batch_size` rows at a time, in order, and
/// calls `each` on every batch. Returns the number of pursuit steps used.
pub fn encode_batches(
    model: &mut MpSae,
    data: &Dataset,
    opts: &PassOptions,
    mut each: impl FnMut(&mut MpSae, EncodedBatch<'_>) -> Result<()>,
) -> Result<usize> {
    let k = check(model, data, opts)?;
    let rows = data.rows();
    model.eval();
    model.prepare_for(rows, k);
    let encode = EncodeOptions { k: Some(k), tol: opts.tol, mask: None };
    let mut x = Vec::new();
    let mut start = 0;
    while start < rows {
        let len = opts.batch_size.min(rows - start);
        data.read_range(start, len, &mut x)?;
        let encoded = model.encode_with(&x, &encode)?;
        each(model, EncodedBatch { start, rows: &x, encoded })?;
        start += len;
    }
    Ok(k)
}
