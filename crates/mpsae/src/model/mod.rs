//! The MP-SAE model: dictionary, normalisation, codes and the `MpSae` itself.

mod codes;
mod mp_sae;
mod normalization;
mod training_pass;

pub use codes::Codes;
pub use mp_sae::{EncodeOptions, Encoded, Forward, MpSae};
pub use normalization::{Normalization, NormalizeFn};
pub use training_pass::{Gradients, PassTimings, ShardPass, ShardSpec, TrainingPass, DEFAULT_SHARDS};
