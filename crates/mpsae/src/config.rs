//! The model's configuration, validated when it is built.

use crate::model::Normalization;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which backend runs the model's maths (see `mpsae_kernels::backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The fast CPU backend.
    #[default]
    Cpu,
    /// The plain f64 oracle backend (slow; for checking results).
    Reference,
}

impl Device {
    /// The backend's name (`cpu`, `reference`).
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Reference => "reference",
        }
    }

    /// The device called `name`; an unknown one (or one this build lacks, such as `cuda`) is an
    /// error that says which exist.
    pub fn from_name(name: &str) -> Result<Device> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "reference" => Ok(Device::Reference),
            other => Err(Error::invalid(
                "device",
                mpsae_kernels::backend::by_name(other, Default::default()).err().unwrap_or_default(),
            )),
        }
    }
}

/// The encoder module of the reference. `MpSae::encode` never uses it (matching pursuit needs no
/// encoder); it exists so that state dicts match overcomplete's, key for key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EncoderKind {
    /// `IdentityEncoder`: no parameters (the reference's default).
    #[default]
    Identity,
    /// `tied(bias)`: the encoder is the dictionary's transpose (state dict repeats the dictionary
    /// under `encoder.tied_to.*`), with an optional zero-initialised bias `encoder.bias`.
    Tied {
        /// Whether `encoder.bias` exists.
        bias: bool,
    },
    /// `untied(bias, copy_from_dictionary)`: its own `encoder.weight` `[c, d]` and optional bias.
    Untied {
        /// Whether `encoder.bias` exists.
        bias: bool,
    },
}

/// Everything that defines an MP-SAE besides its weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaeConfig {
    /// Input dimension `d`.
    pub input_dim: usize,
    /// Number of concepts (atoms) `c`.
    pub nb_concepts: usize,
    /// Number of pursuit steps `k` (> 0).
    pub k: usize,
    /// Dropout probability over atoms in training mode, in `[0, 1)`, or none.
    pub dropout: Option<f32>,
    /// Dictionary normalisation.
    pub normalization: Normalization,
    /// Whether the multiplier `m` (atoms scaled by `exp(m)`) is trained.
    pub use_multiplier: bool,
    /// The (unused by encode) encoder module.
    #[serde(default)]
    pub encoder: EncoderKind,
    /// Where the maths runs.
    #[serde(default)]
    pub device: Device,
}

impl SaeConfig {
    /// A configuration with the reference's defaults (`k = 1`, no dropout, `l2`, no multiplier).
    pub fn new(input_dim: usize, nb_concepts: usize) -> Self {
        SaeConfig {
            input_dim,
            nb_concepts,
            k: 1,
            dropout: None,
            normalization: Normalization::L2,
            use_multiplier: false,
            encoder: EncoderKind::Identity,
            device: Device::Cpu,
        }
    }

    /// Checks every field; the error names the first bad one and says why.
    pub fn validate(&self) -> Result<()> {
        if self.input_dim == 0 {
            return Err(Error::invalid("input dimension", "must be at least 1"));
        }
        if self.nb_concepts == 0 {
            return Err(Error::invalid("number of concepts", "must be at least 1"));
        }
        if self.nb_concepts > u32::MAX as usize - 1 {
            return Err(Error::invalid("number of concepts", "must fit in 32 bits"));
        }
        if self.k == 0 {
            return Err(Error::invalid("k", "the number of pursuit steps must be at least 1"));
        }
        validate_dropout(self.dropout)?;
        Ok(())
    }
}

/// A dropout probability must be none or in `[0, 1)`.
pub fn validate_dropout(p: Option<f32>) -> Result<()> {
    if let Some(p) = p {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid("dropout", format!("{p} is not in [0, 1)")));
        }
    }
    Ok(())
}
