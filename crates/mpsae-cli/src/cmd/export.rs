//! `mpsae export`.

use crate::common::{load, msg, CliResult};
use std::path::PathBuf;

/// Formats `mpsae export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormat {
    /// SAELens's folder: cfg.json (architecture matching_pursuit) and sae_weights.safetensors.
    Saelens,
}

/// Arguments of `mpsae export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Run folder or model file.
    model: PathBuf,
    /// Format to write.
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// Folder to write (refused when it holds anything, unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Replace the folder --out if it holds anything (the old one is removed only once the new
    /// one is complete).
    #[arg(long)]
    force: bool,
}

/// Runs `mpsae export`: a shell over [`mpsae::io::saelens::export`].
pub fn run(a: ExportArgs) -> CliResult<()> {
    let mut model = load(&a.model)?;
    match a.format {
        ExportFormat::Saelens => mpsae::io::saelens::export(&mut model, &a.out, a.force).map_err(msg)?,
    }
    eprintln!("wrote {} ({:?})", a.out.display(), a.format);
    Ok(())
}
