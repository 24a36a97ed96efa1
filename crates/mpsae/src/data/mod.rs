//! Activation data: `.npy` and `.safetensors` files, memory-mapped (data larger than RAM trains),
//! validated once, converted to f32 batch by batch; and the preprocessing (centring, scaling).

pub mod convert;
mod dataset;
mod npy;
mod preprocess;
mod source;

pub use dataset::{DataOptions, DataStats, Dataset, NonFinite};
pub use npy::{npy_header, parse_npy_header, write_npy_f32, NpyHeader};
pub use preprocess::Preprocess;
pub use source::{Elem, Source};
