//! The options of a training run: criterion, schedule, optimiser, batches, micro-shards.

use crate::criterion::{Criterion, Mse, Revive};
use crate::optim::AdamParams;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The training criterion, by name (a library user can also pass any [`Criterion`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CriterionChoice {
    /// Mean squared error.
    Mse,
    /// MSE plus the revive term of the MpSAE docs.
    Revive {
        /// Dead threshold on a code's batch maximum.
        threshold: f32,
        /// The term applies when more atoms than this are dead.
        min_dead: usize,
        /// Weight of the term.
        coefficient: f64,
    },
}

impl CriterionChoice {
    /// The criterion called `name` (`mse`, `revive` with its three settings).
    pub fn from_name(name: &str, threshold: f32, min_dead: usize, coefficient: f64) -> Result<Self> {
        match name {
            "mse" => Ok(CriterionChoice::Mse),
            "revive" => Ok(CriterionChoice::Revive { threshold, min_dead, coefficient }),
            other => Err(Error::invalid("criterion", format!("'{other}': use mse or revive"))),
        }
    }

    /// The criterion object.
    pub fn build(&self) -> Box<dyn Criterion> {
        match *self {
            CriterionChoice::Mse => Box::new(Mse),
            CriterionChoice::Revive { threshold, min_dead, coefficient } => {
                Box::new(Revive { threshold, min_dead, coefficient })
            }
        }
    }
}

/// The warmup-and-cosine schedule's settings (its base rate is the optimiser's `lr`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleOptions {
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// Learning rate at the end.
    pub final_lr: f64,
    /// Learning rate at the start of the warmup.
    pub start_warmup_lr: f64,
}

impl ScheduleOptions {
    /// The schedule when any of its settings is given (the others default to 0), else none.
    pub fn from_settings(
        warmup_steps: Option<u64>,
        final_lr: Option<f64>,
        start_warmup_lr: Option<f64>,
    ) -> Option<Self> {
        (warmup_steps.is_some() || final_lr.is_some() || start_warmup_lr.is_some()).then(|| ScheduleOptions {
            warmup_steps: warmup_steps.unwrap_or(0),
            final_lr: final_lr.unwrap_or(0.0),
            start_warmup_lr: start_warmup_lr.unwrap_or(0.0),
        })
    }
}

/// Everything that defines a training run besides the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Rows per batch (the last batch of an epoch may be smaller, as `DataLoader`).
    pub batch_size: usize,
    /// Epochs (ignored when `steps` is set).
    pub epochs: usize,
    /// A step budget instead of epochs.
    pub steps: Option<u64>,
    /// Shuffle the rows each epoch (seeded).
    pub shuffle: bool,
    /// Seed of the data order (the model's own generator draws the dropout masks).
    pub seed: u64,
    /// Learning rate.
    pub lr: f64,
    /// Adam's β1.
    pub beta1: f64,
    /// Adam's β2.
    pub beta2: f64,
    /// Adam's ε.
    pub eps: f64,
    /// Global-norm gradient clipping (0 turns it off).
    #[serde(alias = "clip_grad")]
    pub clip: f64,
    /// Cosine schedule with warmup, if any.
    pub schedule: Option<ScheduleOptions>,
    /// The criterion.
    pub criterion: CriterionChoice,
    /// Also report code norm, dictionary norms and gradient norms.
    pub detailed_stats: bool,
    /// Stop after this many non-finite steps in a row.
    pub max_bad_steps: u32,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Micro-shards each batch's gradient is computed in and summed over (a fixed pairwise
    /// tree): the model depends on this count, never on threads or processes. A power of two;
    /// runs over several processes need at least as many shards as processes.
    #[serde(default = "default_shards")]
    pub gradient_shards: usize,
}

fn default_shards() -> usize {
    crate::model::DEFAULT_SHARDS
}

impl Default for TrainOptions {
    fn default() -> Self {
        use crate::defaults as d;
        TrainOptions {
            batch_size: d::BATCH_SIZE,
            epochs: d::EPOCHS,
            steps: None,
            shuffle: true,
            seed: d::SEED,
            lr: d::LR,
            beta1: d::BETA1,
            beta2: d::BETA2,
            eps: d::EPS,
            clip: d::CLIP,
            schedule: None,
            criterion: CriterionChoice::Mse,
            detailed_stats: false,
            max_bad_steps: d::MAX_BAD_STEPS,
            checkpoint_every: d::CHECKPOINT_EVERY,
            gradient_shards: d::GRADIENT_SHARDS,
        }
    }
}

impl TrainOptions {
    /// Checks every option; the error names the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::invalid("batch size", "must be at least 1"));
        }
        if self.steps.is_none() && self.epochs == 0 {
            return Err(Error::invalid("epochs", "must be at least 1 (or give a step budget)"));
        }
        if self.steps == Some(0) {
            return Err(Error::invalid("steps", "must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid("learning rate", format!("{} must be a positive number", self.lr)));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid(name, format!("{b} is not in [0, 1)")));
            }
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(Error::invalid("eps", format!("{} must be >= 0", self.eps)));
        }
        if !(self.clip >= 0.0 && self.clip.is_finite()) {
            return Err(Error::invalid("clip", format!("{} must be >= 0 (0 turns clipping off)", self.clip)));
        }
        if !self.gradient_shards.is_power_of_two() || self.gradient_shards > 1024 {
            return Err(Error::invalid(
                "gradient shards",
                format!("{} must be a power of two from 1 to 1024", self.gradient_shards),
            ));
        }
        if self.max_bad_steps == 0 {
            return Err(Error::invalid("max bad steps", "must be at least 1"));
        }
        if let CriterionChoice::Revive { threshold, coefficient, .. } = self.criterion {
            if !threshold.is_finite() || !coefficient.is_finite() {
                return Err(Error::invalid("revive", "threshold and coefficient must be finite"));
            }
        }
        Ok(())
    }

    /// Adam's hyper-parameters.
    pub fn adam(&self) -> AdamParams {
        AdamParams { lr: self.lr, beta1: self.beta1, beta2: self.beta2, eps: self.eps }
    }

    /// Batches in one epoch of `rows` rows.
    pub fn batches_per_epoch(&self, rows: usize) -> u64 {
        rows.div_ceil(self.batch_size) as u64
    }
}
