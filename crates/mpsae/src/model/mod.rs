//! The MP-SAE model: dictionary, normalisation, codes, preprocessing, provenance and the `MpSae`
//! itself.

mod codes;
mod mp_sae;
mod normalization;
mod preprocess;
mod provenance;
mod training_pass;

pub use codes::Codes;
pub use mp_sae::{EncodeOptions, Encoded, Forward, MpSae};
pub use normalization::{Normalization, NormalizeFn};
pub use preprocess::{Preprocess, PreprocessEstimate, MEAN_KEY, SCALE_KEY};
pub use provenance::{Provenance, PROVENANCE_KEY};
pub use training_pass::{Gradients, PassTimings, ShardPass, ShardSpec, TrainingPass, DEFAULT_SHARDS};
