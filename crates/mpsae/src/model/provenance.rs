//! Where a model's activations came from: the source model, the hook (or layer), the tokenizer,
//! the context length and the dtype of the harvested rows. Empty when unknown (activations from
//! a file somebody else wrote). Carried by the model, saved in its file (metadata
//! [`PROVENANCE_KEY`]) and in a run's `config.json`, shown by `mpsae inspect`; a harvest fills
//! it, and SAELens export writes it into `cfg.json`'s metadata.

use serde::{Deserialize, Serialize};

/// Metadata key of the provenance in a model file (JSON of [`Provenance`]).
pub const PROVENANCE_KEY: &str = "mpsae_provenance";

/// Where the activations a model was trained on came from (every field optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The model the activations were read from (a Hugging Face name or path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The module path whose output was read (`model.layers.14`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    /// The layer number, when the hook is a layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// The tokenizer (name or path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Tokens per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
    /// Whether a beginning-of-sequence token was put before each window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepend_bos: Option<bool>,
    /// Whether each window's first position was left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_first: Option<bool>,
    /// The dtype the rows were stored in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

impl Provenance {
    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == Provenance::default()
    }
}
