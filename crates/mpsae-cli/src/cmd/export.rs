//! `mpsae export`.

use crate::common::{load, msg, CliResult};
use std::path::PathBuf;

/// Formats `mpsae export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormat {
    /// SAELens's folder: cfg.json (architecture matching_pursuit) and sae_weights.safetensors.
    Saelens,
    /// Neuronpedia's import layout: the SAELens weights plus gzipped JSONL batches of feature
    /// dashboards (top activations with tokens and values, logit lens, histograms), from the
    /// concept browser's analysis of --data.
    Neuronpedia,
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
    /// Neuronpedia: the activation files (or harvest folder) the dashboards are made from.
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Neuronpedia: the rows' token table (default: the harvest folder's).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Neuronpedia: top activations per feature.
    #[arg(long, default_value_t = 20)]
    top: usize,
}

/// Runs `mpsae export`: a shell over [`mpsae::io::saelens::export`].
pub fn run(a: ExportArgs) -> CliResult<()> {
    let mut model = load(&a.model)?;
    match a.format {
        ExportFormat::Saelens => mpsae::io::saelens::export(&mut model, &a.out, a.force).map_err(msg)?,
        ExportFormat::Neuronpedia => {
            if a.data.is_empty() {
                return Err("--format neuronpedia needs --data: the rows the dashboards are made from".into());
            }
            let analysis = crate::cmd::concepts::analysis(
                &a.model,
                &mut model,
                &a.data,
                None,
                a.tokens.as_ref(),
                a.top,
                mpsae::defaults::ENCODE_BATCH_SIZE,
            )?;
            let source = mpsae::concepts::neuronpedia::export(&analysis, &mut model, &a.out, a.force, 8)
                .map_err(msg)?;
            println!("{}", source.display());
        }
    }
    eprintln!("wrote {} ({:?})", a.out.display(), a.format);
    Ok(())
}
