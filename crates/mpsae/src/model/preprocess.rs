//! The model's preprocessing: centring and scaling, part of the model's state.
//!
//! A model trained with `--center`/`--scale` holds the mean (SAELens's `b_dec`) and the scale
//! it was trained with. Every encode applies them (`x' = (x - mean)·scale`) and every decode
//! undoes them (`x = x'/scale + mean`): codes live in the preprocessed space, reconstructions and
//! residuals in the data's own space. A model built from scratch has none (the identity), so
//! overcomplete parity and state-dict interop are unchanged. Saved as the tensors
//! [`MEAN_KEY`] and [`SCALE_KEY`] of the model file and of every state dict that has them.

use crate::data::DataStats;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// State-dict key of the mean (`[d]`).
pub const MEAN_KEY: &str = "preprocess.mean";
/// State-dict key of the scale (`[]`).
pub const SCALE_KEY: &str = "preprocess.scale";

/// `x' = (x - mean)·scale`, undone on reconstructions as `x = x'/scale + mean`.
///
/// `scale` makes the root-mean-square row norm of the (centred) data equal to `sqrt(d)`, so
/// learning rates and thresholds transfer between models and layers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Per-dimension mean subtracted first, if centring.
    pub mean: Option<Vec<f32>>,
    /// Factor applied after centring, if scaling.
    pub scale: Option<f32>,
}

impl Preprocess {
    /// Estimates the preprocessing from data statistics.
    pub fn from_stats(stats: &DataStats, center: bool, scale: bool) -> Preprocess {
        Preprocess::from_moments(&stats.mean, stats.mean_sq_norm, center, scale)
    }

    /// Estimates the preprocessing from the per-dimension mean and the mean squared row norm.
    pub fn from_moments(mean: &[f64], mean_sq_norm: f64, center: bool, scale: bool) -> Preprocess {
        let d = mean.len();
        let mean_sq: f64 = mean.iter().map(|m| m * m).sum();
        let centred = center.then(|| mean.iter().map(|&m| m as f32).collect());
        let ms = if center { (mean_sq_norm - mean_sq).max(0.0) } else { mean_sq_norm };
        let scale = scale.then(|| if ms > 0.0 { ((d as f64) / ms).sqrt() as f32 } else { 1.0 });
        Preprocess { mean: centred, scale }
    }

    /// Whether it does anything.
    pub fn is_identity(&self) -> bool {
        self.mean.is_none() && self.scale.is_none()
    }

    /// Checks it against rows of dimension `d`: the mean has `d` finite values, the scale is
    /// finite and positive.
    pub fn validate(&self, d: usize) -> Result<()> {
        if let Some(m) = &self.mean {
            if m.len() != d {
                return Err(Error::Shape(format!(
                    "the preprocessing mean has {} values, the rows {d}",
                    m.len()
                )));
            }
            if m.iter().any(|v| !v.is_finite()) {
                return Err(Error::invalid("preprocessing", "the mean holds NaN or infinite values"));
            }
        }
        if let Some(s) = self.scale {
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::invalid("preprocessing", format!("scale {s} must be finite and > 0")));
            }
        }
        Ok(())
    }

    /// Applies it to `n x d` rows in place.
    pub fn apply(&self, x: &mut [f32], d: usize) {
        if self.is_identity() {
            return;
        }
        let s = self.scale.unwrap_or(1.0);
        for row in x.chunks_mut(d) {
            match &self.mean {
                Some(m) => row.iter_mut().zip(m).for_each(|(v, m)| *v = (*v - m) * s),
                None => row.iter_mut().for_each(|v| *v *= s),
            }
        }
    }

    /// Maps reconstructions back to the data's space, in place.
    pub fn undo(&self, x: &mut [f32], d: usize) {
        if self.is_identity() {
            return;
        }
        let s = self.scale.unwrap_or(1.0);
        for row in x.chunks_mut(d) {
            match &self.mean {
                Some(m) => row.iter_mut().zip(m).for_each(|(v, m)| *v = *v / s + m),
                None => row.iter_mut().for_each(|v| *v /= s),
            }
        }
    }

    /// Maps differences (residuals) back to the data's space, in place: the mean cancels, only
    /// the scale is undone.
    pub fn undo_difference(&self, x: &mut [f32]) {
        if let Some(s) = self.scale {
            x.iter_mut().for_each(|v| *v /= s);
        }
    }

    /// The factor that maps squared norms of differences back to the data's space (`1/scale²`).
    pub fn energy_factor(&self) -> f32 {
        self.scale.map_or(1.0, |s| 1.0 / (s * s))
    }

    /// Its state-dict entries `(key, shape, values)`: none for the identity.
    pub fn state_dict(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        if let Some(m) = &self.mean {
            out.push((MEAN_KEY.to_string(), vec![m.len()], m.clone()));
        }
        if let Some(s) = self.scale {
            out.push((SCALE_KEY.to_string(), vec![], vec![s]));
        }
        out
    }

    /// From the entries of a state dict (`None` where a key is absent), checked against `d`.
    pub fn from_state(
        mean: Option<(Vec<usize>, Vec<f32>)>,
        scale: Option<(Vec<usize>, Vec<f32>)>,
        d: usize,
    ) -> Result<Preprocess> {
        let mean = match mean {
            Some((shape, _)) if shape != [d] => {
                return Err(Error::Shape(format!("'{MEAN_KEY}' has shape {shape:?}, expected [{d}]")))
            }
            Some((_, v)) => Some(v),
            None => None,
        };
        let scale = match scale {
            Some((shape, v)) if !(shape.is_empty() || shape == [1]) || v.len() != 1 => {
                return Err(Error::Shape(format!("'{SCALE_KEY}' has shape {shape:?}, expected []")))
            }
            Some((_, v)) => Some(v[0]),
            None => None,
        };
        let p = Preprocess { mean, scale };
        p.validate(d)?;
        Ok(p)
    }
}

/// Estimates a preprocessing from rows seen one batch at a time (a streaming trainer's first
/// batches): per-dimension sums and the sum of squared row norms, in f64.
#[derive(Clone, Debug)]
pub struct PreprocessEstimate {
    sum: Vec<f64>,
    sum_sq_norm: f64,
    rows: usize,
}

impl PreprocessEstimate {
    /// An empty estimate for rows of dimension `d`.
    pub fn new(d: usize) -> Self {
        PreprocessEstimate { sum: vec![0.0; d], sum_sq_norm: 0.0, rows: 0 }
    }

    /// Adds `n x d` rows.
    pub fn add(&mut self, x: &[f32]) {
        let d = self.sum.len();
        for row in x.chunks_exact(d) {
            let mut sq = 0f64;
            for (s, &v) in self.sum.iter_mut().zip(row) {
                *s += v as f64;
                sq += v as f64 * v as f64;
            }
            self.sum_sq_norm += sq;
            self.rows += 1;
        }
    }

    /// Rows seen.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The preprocessing these rows give (as [`Preprocess::from_stats`] on the same rows).
    pub fn finish(&self, center: bool, scale: bool) -> Preprocess {
        let n = self.rows.max(1) as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        Preprocess::from_moments(&mean, self.sum_sq_norm / n, center, scale)
    }
}
