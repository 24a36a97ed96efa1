//! Activation data: `.npy` and `.safetensors` files, memory-mapped (data larger than RAM trains),
//! validated once, converted to f32 batch by batch. (The preprocessing is the model's:
//! [`crate::model::Preprocess`].)

pub mod convert;
mod dataset;
pub mod harvest;
mod npy;
mod source;

pub use dataset::{DataOptions, DataStats, Dataset, NonFinite};
pub use npy::{npy_header, parse_npy_header, write_npy_f32, NpyHeader};
pub use source::{Elem, Source};
