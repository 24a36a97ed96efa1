//! Training on a stream of batches (activations as a model produces them, no files), with the
//! preprocessing given or estimated from the first batches.

use crate::model::{Preprocess, PreprocessEstimate};
use crate::train::{ExternalStep, StepReport, Trainer};
use crate::{Error, Result};

/// How a streaming trainer gets its preprocessing.
#[derive(Clone, Debug, PartialEq)]
pub enum PreprocessPlan {
    /// The model's own (the identity for a new model).
    Model,
    /// This one.
    Given(Preprocess),
    /// Centring and/or scaling estimated from the first `rows` rows; those batches are kept and
    /// trained on, in order, once the estimate is made.
    Estimate {
        /// Subtract the mean.
        center: bool,
        /// Scale to a root-mean-square row norm of `sqrt(d)`.
        scale: bool,
        /// Rows the estimate is made from.
        rows: usize,
    },
}

/// The estimate still being gathered.
struct Pending {
    center: bool,
    scale: bool,
    rows: usize,
    estimate: PreprocessEstimate,
    batches: Vec<Vec<f32>>,
}

/// A [`Trainer`] fed batch by batch.
pub struct StreamTrainer {
    /// The trainer.
    pub trainer: Trainer,
    pending: Option<Pending>,
}

impl StreamTrainer {
    /// A streaming trainer over `trainer`, its preprocessing set by `plan`.
    pub fn new(mut trainer: Trainer, plan: PreprocessPlan) -> Result<StreamTrainer> {
        let d = trainer.model.input_dim();
        let pending = match plan {
            PreprocessPlan::Model => None,
            PreprocessPlan::Given(p) => {
                trainer.model.set_preprocess(p)?;
                None
            }
            PreprocessPlan::Estimate { center: false, scale: false, .. } => None,
            PreprocessPlan::Estimate { rows: 0, .. } => {
                return Err(Error::invalid("preprocessing", "the estimate needs at least 1 row"))
            }
            PreprocessPlan::Estimate { center, scale, rows } => Some(Pending {
                center,
                scale,
                rows,
                estimate: PreprocessEstimate::new(d),
                batches: Vec::new(),
            }),
        };
        Ok(StreamTrainer { trainer, pending })
    }

    /// `(rows seen, rows needed)` while the preprocessing is still being estimated.
    pub fn estimating(&self) -> Option<(usize, usize)> {
        self.pending.as_ref().map(|p| (p.estimate.rows(), p.rows))
    }

    /// Takes one batch (`n x d`, the data's own space). While the preprocessing is being
    /// estimated the batch is kept and no step is taken (an empty list); the batch that completes
    /// the estimate sets the model's preprocessing and trains on every kept batch in order. Returns
    /// the reports of the steps taken.
    pub fn step(&mut self, x: &[f32]) -> Result<Vec<StepReport>> {
        self.step_with(x, None)
    }

    /// [`StreamTrainer::step`], each step's maths done by `external` when given.
    pub fn step_with(
        &mut self,
        x: &[f32],
        external: Option<&mut dyn ExternalStep>,
    ) -> Result<Vec<StepReport>> {
        self.trainer.model.rows_of(x)?;
        if let Some(p) = &mut self.pending {
            p.estimate.add(x);
            p.batches.push(x.to_vec());
            if p.estimate.rows() < p.rows {
                return Ok(Vec::new());
            }
            return self.flush_with(external);
        }
        Ok(vec![self.trainer.step_on_rows_with(x, external)?])
    }

    /// One step on `n` rows held by `external` on its device ([`ExternalStep::step_held`]);
    /// refused while the preprocessing is being estimated (those rows must be given).
    pub fn step_held(&mut self, n: usize, external: &mut dyn ExternalStep) -> Result<StepReport> {
        if let Some((seen, need)) = self.estimating() {
            return Err(Error::invalid(
                "stream",
                format!("the preprocessing is being estimated ({seen} of {need} rows seen): give the rows to step()"),
            ));
        }
        self.trainer.step_on_held_rows(n, external)
    }

    /// Makes the estimate from the rows seen so far (if one is pending) and trains on the kept
    /// batches; returns the reports of the steps taken.
    pub fn flush(&mut self) -> Result<Vec<StepReport>> {
        self.flush_with(None)
    }

    /// [`StreamTrainer::flush`], each step's maths done by `external` when given.
    pub fn flush_with(&mut self, mut external: Option<&mut dyn ExternalStep>) -> Result<Vec<StepReport>> {
        let Some(p) = self.pending.take() else { return Ok(Vec::new()) };
        if p.estimate.rows() == 0 {
            self.pending = Some(p);
            return Err(Error::invalid("preprocessing", "no rows seen yet to estimate it from"));
        }
        self.trainer.model.set_preprocess(p.estimate.finish(p.center, p.scale))?;
        let mut reports = Vec::with_capacity(p.batches.len());
        for b in &p.batches {
            let ext: Option<&mut dyn ExternalStep> = match &mut external {
                Some(e) => Some(&mut **e),
                None => None,
            };
            reports.push(self.trainer.step_on_rows_with(b, ext)?);
        }
        Ok(reports)
    }

    /// Refuses to checkpoint while batches wait for the estimate (they would be lost).
    pub fn check_settled(&self) -> Result<()> {
        match self.estimating() {
            Some((seen, need)) => Err(Error::invalid(
                "checkpoint",
                format!(
                    "the preprocessing is still being estimated ({seen} of {need} rows seen, not trained on yet): \
                     feed more batches or call flush() first"
                ),
            )),
            None => Ok(()),
        }
    }
}
