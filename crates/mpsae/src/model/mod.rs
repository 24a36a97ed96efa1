//! The MP-SAE model: dictionary, normalisation, codes and the `MpSae` itself.

mod codes;
mod mp_sae;
mod normalization;

pub use codes::Codes;
pub use mp_sae::{EncodeOptions, Encoded, Forward, Gradients, MpSae, PassTimings, TrainingPass};
pub use normalization::{Normalization, NormalizeFn};
