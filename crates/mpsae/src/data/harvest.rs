//! Harvest folders: the activations `mpsae.harvest` reads out of a model, as shards in order,
//! with `tokens.tsv` (which token each row is) and `harvest.json` (where they came from). Every
//! command that takes data files takes such a folder in their place: its shards, in order.

use crate::model::Provenance;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The description file of a harvest folder.
pub const HARVEST_FILE: &str = "harvest.json";
/// The token table of a harvest folder.
pub const TOKENS_FILE: &str = "tokens.tsv";

/// `harvest.json`: where the rows came from (the [`Provenance`] fields at its top level) and the
/// shard files that hold them, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HarvestInfo {
    /// Model, hook, layer, tokenizer, context, BOS and first-position policy, dtype.
    #[serde(flatten)]
    pub provenance: Provenance,
    /// Rows written.
    #[serde(default)]
    pub rows: usize,
    /// Row dimension.
    #[serde(default)]
    pub d: usize,
    /// The shard files (relative to the folder), in order.
    pub shards: Vec<String>,
    /// Whether the harvest ran to its end.
    #[serde(default)]
    pub complete: bool,
}

/// Whether `path` is a harvest folder.
pub fn is_harvest(path: &Path) -> bool {
    path.is_dir() && path.join(HARVEST_FILE).is_file()
}

/// Reads a harvest folder's `harvest.json`.
pub fn read(dir: &Path) -> Result<HarvestInfo> {
    let path = dir.join(HARVEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let info: HarvestInfo = serde_json::from_str(&text)
        .map_err(|e| Error::file(&path, format!("not a harvest description: {e}")))?;
    if info.shards.is_empty() {
        return Err(Error::file(&path, "lists no shard: the harvest wrote no rows yet"));
    }
    Ok(info)
}

/// The data files of `paths`: a harvest folder stands for its shards, in order; a folder that
/// is not one is refused; files are kept.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        if is_harvest(p) {
            out.extend(read(p)?.shards.iter().map(|s| p.join(s)));
        } else if p.is_dir() {
            return Err(Error::file(
                p,
                format!("is a folder without {HARVEST_FILE}: give data files or a harvest folder"),
            ));
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The provenance of `paths` when they are one harvest folder (empty otherwise).
pub fn provenance_of(paths: &[PathBuf]) -> Provenance {
    match paths {
        [p] if is_harvest(p) => read(p).map(|i| i.provenance).unwrap_or_default(),
        _ => Provenance::default(),
    }
}

/// The token table of `paths` when they are one harvest folder that has one.
pub fn tokens_of(paths: &[PathBuf]) -> Option<PathBuf> {
    match paths {
        [p] if is_harvest(p) && p.join(TOKENS_FILE).is_file() => Some(p.join(TOKENS_FILE)),
        _ => None,
    }
}
