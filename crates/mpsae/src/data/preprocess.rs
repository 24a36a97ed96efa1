//! Preprocessing users expect on real activations: centring and scaling, saved with the model.

use crate::data::DataStats;
use serde::{Deserialize, Serialize};

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
        let d = stats.mean.len();
        let mean_sq: f64 = stats.mean.iter().map(|m| m * m).sum();
        let mean = center.then(|| stats.mean.iter().map(|&m| m as f32).collect());
        let ms = if center { (stats.mean_sq_norm - mean_sq).max(0.0) } else { stats.mean_sq_norm };
        let scale = scale.then(|| if ms > 0.0 { ((d as f64) / ms).sqrt() as f32 } else { 1.0 });
        Preprocess { mean, scale }
    }

    /// Whether it does anything.
    pub fn is_identity(&self) -> bool {
        self.mean.is_none() && self.scale.is_none()
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
}
