//! Row-wise dictionary normalisations, exactly as overcomplete's `DictionaryLayer` applies them.

use mpsae_kernels::backend::Backend;
use mpsae_kernels::normalize::RowNorm;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A user normalisation: rewrites the `c x d` weights in place (`d` is the row length).
pub type NormalizeFn = dyn Fn(&mut [f32], usize) + Send + Sync;

/// How the dictionary's atoms (rows) are normalised before every training-mode use.
#[derive(Clone, Default)]
pub enum Normalization {
    /// `W / (‖W_i‖₂ + 1e-8)` (the default).
    #[default]
    L2,
    /// `W / max_i ‖W_i‖₂` (no epsilon).
    MaxL2,
    /// `W / (‖W_i‖₁ + 1e-8)`.
    L1,
    /// `W / max_i ‖W_i‖₁` (no epsilon).
    MaxL1,
    /// Unchanged.
    Identity,
    /// A user function, with a name for configuration files. A model using it can be saved, but
    /// loading it back needs the function again ([`crate::MpSae::set_normalization`]).
    Custom(String, Arc<NormalizeFn>),
}

impl fmt::Debug for Normalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl PartialEq for Normalization {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Normalization {
    /// The name used in configuration files and on the command line (`custom:NAME` for a user
    /// function).
    pub fn name(&self) -> String {
        match self {
            Normalization::L2 => "l2".into(),
            Normalization::MaxL2 => "max_l2".into(),
            Normalization::L1 => "l1".into(),
            Normalization::MaxL1 => "max_l1".into(),
            Normalization::Identity => "identity".into(),
            Normalization::Custom(n, _) => format!("custom:{n}"),
        }
    }

    /// Parses a built-in normalisation name (`l2`, `max_l2`, `l1`, `max_l1`, `identity`); any
    /// other is an error that lists them.
    pub fn parse(name: &str) -> crate::Result<Self> {
        Ok(match name {
            "l2" => Normalization::L2,
            "max_l2" => Normalization::MaxL2,
            "l1" => Normalization::L1,
            "max_l1" => Normalization::MaxL1,
            "identity" => Normalization::Identity,
            other => {
                return Err(crate::Error::invalid(
                    "normalization",
                    format!("'{other}' is not built in: use l2, max_l2, l1, max_l1 or identity"),
                ))
            }
        })
    }

    /// The backend's built-in normalisation this is, or `None` for `Identity` and custom ones.
    pub fn row_norm(&self) -> Option<RowNorm> {
        match self {
            Normalization::L2 => Some(RowNorm::L2),
            Normalization::MaxL2 => Some(RowNorm::MaxL2),
            Normalization::L1 => Some(RowNorm::L1),
            Normalization::MaxL1 => Some(RowNorm::MaxL1),
            Normalization::Identity | Normalization::Custom(..) => None,
        }
    }

    /// Normalises the `c x d` weights in place on `backend` (a custom function runs on the host).
    pub fn apply_on(&self, backend: &dyn Backend, w: &mut [f32], d: usize) {
        if d == 0 {
            return;
        }
        match (self.row_norm(), self) {
            (Some(norm), _) => backend.normalize(norm, w, d),
            (None, Normalization::Custom(_, f)) => f(w, d),
            _ => {}
        }
    }
}

impl Serialize for Normalization {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Normalization {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Normalization::parse(&name).map_err(|e| {
            serde::de::Error::custom(format!("{e} (a custom one must be set again after loading)"))
        })
    }
}
