//! Files: model weights as overcomplete-compatible safetensors, SAELens's format, atomic writes,
//! and [`load_model`], which opens any of them.

pub mod atomic;
pub mod saelens;
pub mod state_dict;

use crate::model::MpSae;
use crate::{Error, Result};
use std::path::Path;

/// The model file of a run folder (loads into overcomplete's `MpSAE`).
pub const MODEL_FILE: &str = "model.safetensors";

/// A model (with its preprocessing and provenance) from a model file, a run folder (its
/// [`MODEL_FILE`]) or a SAELens `matching_pursuit` folder ([`saelens`]).
pub fn load_model(path: &Path) -> Result<MpSae> {
    let file = if path.is_dir() { path.join(MODEL_FILE) } else { path.to_path_buf() };
    if file.is_file() {
        let (model, _) = state_dict::read_model(&file, None)?;
        return Ok(model);
    }
    if saelens::is_saelens(path) {
        return saelens::import(path);
    }
    Err(Error::file(
        &file,
        "no such model file (give a run folder, a .safetensors model file or a SAELens folder)",
    ))
}
