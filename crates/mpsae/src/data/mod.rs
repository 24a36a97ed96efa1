//! Activation data: `.npy` and `.safetensors` files, memory-mapped, converted to f32 per batch.

pub mod convert;
