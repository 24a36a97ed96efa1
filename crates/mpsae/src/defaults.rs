//! The default values, defined once: the options' table (`crate::run::OPTIONS`) takes its
//! defaults from here, and the CLI's flags and the Python keywords read that table.

/// Number of concepts.
pub const CONCEPTS: usize = 2048;
/// Pursuit steps per row.
pub const K: usize = 16;
/// Epochs over the data.
pub const EPOCHS: usize = 20;
/// Rows per training batch.
pub const BATCH_SIZE: usize = 1024;
/// Adam's learning rate.
pub const LR: f64 = 1e-3;
/// Adam's beta1.
pub const BETA1: f64 = 0.9;
/// Adam's beta2.
pub const BETA2: f64 = 0.999;
/// Adam's epsilon.
pub const EPS: f64 = 1e-8;
/// Global gradient-norm clipping (0: off).
pub const CLIP: f64 = 1.0;
/// Seed of the initialisation, the data order and the dropout masks.
pub const SEED: u64 = 0;
/// Dictionary normalisation.
pub const NORMALIZATION: &str = "l2";
/// Criterion.
pub const CRITERION: &str = "mse";
/// Revive: dead threshold on a code's batch maximum.
pub const REVIVE_THRESHOLD: f32 = 1e-2;
/// Revive: the term applies when more atoms than this are dead.
pub const REVIVE_MIN_DEAD: usize = 10;
/// Revive: weight of the term.
pub const REVIVE_COEF: f64 = 1e-2;
/// Stop after this many non-finite steps in a row.
pub const MAX_BAD_STEPS: u32 = 10;
/// Checkpoint every this many steps (0: only at the end).
pub const CHECKPOINT_EVERY: u64 = 100;
/// Micro-shards of each batch's gradient.
pub const GRADIENT_SHARDS: usize = crate::model::DEFAULT_SHARDS;
/// Rows per batch when encoding or evaluating.
pub const ENCODE_BATCH_SIZE: usize = 4096;
/// Rows a streaming trainer estimates its centring and scaling from.
pub const ESTIMATE_ROWS: usize = 4096;
