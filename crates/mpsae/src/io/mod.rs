//! Files: model weights as overcomplete-compatible safetensors, SAELens's format, atomic writes.

pub mod atomic;
pub mod saelens;
pub mod state_dict;
