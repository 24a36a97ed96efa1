//! Files: model weights as overcomplete-compatible safetensors, atomic writes.

pub mod atomic;
pub mod state_dict;
