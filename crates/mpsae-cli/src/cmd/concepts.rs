//! `mpsae concepts`: the concept browser of a trained model, a static site.

use crate::common::{load, msg, open_data, CliResult, EngineArgs};
use indicatif::{ProgressBar, ProgressStyle};
use mpsae::concepts::tokens::TokenTable;
use mpsae::concepts::{analyze, site, ConceptOptions};
use std::path::PathBuf;

/// The token table of the embedded demo data.
static DEMO_TOKENS: &str = include_str!("../../../../data/minilm_l3_demo.tokens.tsv");

/// Arguments of `mpsae concepts`.
#[derive(clap::Args)]
pub struct ConceptsArgs {
    /// Run folder (its model.safetensors and metrics.jsonl) or model .safetensors file.
    #[arg(long)]
    model: PathBuf,
    /// Activation files (none: the embedded demo data).
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Tensor to read from .safetensors data files.
    #[arg(long)]
    tensor: Option<String>,
    /// What each row is (.tokens.tsv: doc, window, pos, token; or image, patch_row, patch_col);
    /// default: the tokens.tsv of a harvest folder given as --data.
    /// Default: the demo data's, when no --data is given.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Folder holding the images a patch table names (their crops are shown).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Output folder of the site.
    #[arg(long)]
    out: PathBuf,
    /// Top examples per concept.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = mpsae::defaults::ENCODE_BATCH_SIZE)]
    batch_size: usize,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The concept browser's analysis of `model` (loaded from `model_path`) on `data`: every
/// concept's statistics, its logit lens and its comparison when the run has them. Shared by
/// `mpsae concepts` and `mpsae export --format neuronpedia`.
pub fn analysis(
    model_path: &std::path::Path,
    model: &mut mpsae::MpSae,
    data_files: &[PathBuf],
    tensor: Option<&str>,
    tokens: Option<&PathBuf>,
    top: usize,
    batch_size: usize,
) -> CliResult<mpsae::concepts::Analysis> {
    let data = open_data(data_files, tensor, false, true)?;
    let tokens = match (tokens, data_files.is_empty()) {
        (Some(p), _) => Some(TokenTable::read(p).map_err(msg)?),
        (None, true) => {
            Some(TokenTable::parse("minilm_l3_demo.tokens.tsv".as_ref(), DEMO_TOKENS).map_err(msg)?)
        }
        // A harvest folder brings its token table.
        (None, false) => mpsae::data::harvest::tokens_of(data_files)
            .map(|p| TokenTable::read(&p))
            .transpose()
            .map_err(msg)?,
    };
    let bar = if crate::common::is_terminal() {
        let b = ProgressBar::new(data.rows() as u64);
        b.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} rows {per_sec} ETA {eta}").unwrap());
        Some(b)
    } else {
        None
    };
    let opts = ConceptOptions { top, batch_size, ..ConceptOptions::default() };
    let mut analysis = analyze(model, &data, tokens, &opts, &mut |done| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    })
    .map_err(msg)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    analysis.logit_lens =
        mpsae::concepts::logit_lens::LogitLens::read(model_path, model.nb_concepts()).map_err(msg)?;
    analysis.comparison = mpsae::compare::read(model_path, model.nb_concepts()).map_err(msg)?;
    Ok(analysis)
}

/// Runs `mpsae concepts`.
pub fn run(a: ConceptsArgs) -> CliResult<()> {
    let mut model = load(&a.model)?;
    model.set_engine(a.engine.engine()?);
    if let Some(dir) = &a.images {
        if !dir.is_dir() {
            return Err(format!("{}: no such images folder", dir.display()));
        }
    }
    let metrics = if a.model.is_dir() { mpsae::run::read_metrics(&a.model).map_err(msg)? } else { None };
    if metrics.is_none() {
        eprintln!("note: no metrics.jsonl beside the model: the overview has no training curves");
    }
    let t0 = std::time::Instant::now();
    let analysis =
        analysis(&a.model, &mut model, &a.data, a.tensor.as_deref(), a.tokens.as_ref(), a.top, a.batch_size)?;
    let t1 = std::time::Instant::now();
    let title = format!("mpsae concepts: {}", a.model.display());
    site::write(&analysis, metrics.as_deref(), a.images.as_deref(), &a.out, &title).map_err(msg)?;
    if std::env::var_os("MPSAE_TIMING").is_some() {
        eprintln!("analysis {:.2} s, site {:.2} s", (t1 - t0).as_secs_f64(), t1.elapsed().as_secs_f64());
    }
    println!("{}", a.out.join("index.html").display());
    Ok(())
}
