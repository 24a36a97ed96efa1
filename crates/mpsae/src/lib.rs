//! # mpsae: Matching Pursuit Sparse Autoencoders, exact and fast
//!
//! A Rust port of overcomplete 0.3.0's `MpSAE` with the same numbers, an exact sparse backward
//! pass and a Gram-accelerated pursuit. See README.md for the differences from the reference.
//!
//! ```
//! use mpsae::{MpSae, SaeConfig, criterion::Mse};
//! let mut cfg = SaeConfig::new(8, 32);
//! cfg.k = 3;
//! let mut model = MpSae::new(cfg, 0).unwrap();
//! let x: Vec<f32> = (0..5 * 8).map(|i| (i as f32 * 0.7).sin()).collect();
//! let out = model.forward(&x).unwrap();
//! assert_eq!(out.codes.row(0).count(), 3);
//! let pass = model.training_pass(&x, &Mse, None).unwrap();
//! assert_eq!(pass.grads.weights.len(), 32 * 8);
//! ```

#![warn(missing_docs)]

pub mod compare;
pub mod concepts;
pub mod config;
pub mod criterion;
pub mod data;
pub mod defaults;
pub mod encode;
pub mod error;
pub mod io;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod resources;
pub mod run;
pub mod train;

pub use config::{Device, EncoderKind, SaeConfig};
pub use error::{Error, Result};
pub use model::{
    Codes, EncodeOptions, Encoded, Forward, Gradients, MpSae, Normalization, Preprocess, Provenance,
    TrainingPass,
};
pub use mpsae_kernels as kernels;
pub use mpsae_kernels::backend::Settings;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The architecture notes' examples (the library's Rust API), compiled and run as doctests.
#[doc = include_str!("../../../docs/architecture.md")]
#[cfg(doctest)]
pub struct ArchitectureDoctests;
