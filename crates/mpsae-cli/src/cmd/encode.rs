//! `mpsae encode`.

use crate::common::{load, msg, CliResult, DataArgs, EngineArgs};
use mpsae::encode::{encode_dataset, CodesFormat};
use mpsae::EncodeOptions;
use std::path::PathBuf;

/// Output layout of the codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `indices` (I64, n x k, -1 where a row stopped early) and `values` (F32, n x k) in pursuit order.
    Sparse,
    /// `codes` (F32, n x c), repeated picks summed: the reference's codes matrix.
    Dense,
}

/// Arguments of `mpsae encode`.
#[derive(clap::Args)]
pub struct EncodeArgs {
    /// Run folder, model .safetensors file or SAELens matching_pursuit folder.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Output .safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Pursuit steps (default: the model's k; MP can change its sparsity at inference).
    #[arg(long, short = 'k')]
    k: Option<usize>,
    /// Stop a row once its residual norm is below this fraction of its input norm.
    #[arg(long)]
    tol: Option<f32>,
    /// Output layout.
    #[arg(long, value_enum, default_value = "sparse")]
    format: Format,
    /// Rows per batch.
    #[arg(long, default_value_t = mpsae::defaults::ENCODE_BATCH_SIZE)]
    batch_size: usize,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Runs `mpsae encode`: a shell over [`encode_dataset`].
pub fn run(a: EncodeArgs) -> CliResult<()> {
    if a.batch_size == 0 {
        return Err("invalid --batch-size: must be at least 1".into());
    }
    let mut model = load(&a.model)?;
    model.set_engine(a.engine.engine()?);
    let data = a.data.open()?;
    if data.dim() != model.input_dim() {
        return Err(format!(
            "{}: rows have dimension {}, the model expects {}",
            a.data.data[0].display(),
            data.dim(),
            model.input_dim()
        ));
    }
    let format = match a.format {
        Format::Sparse => CodesFormat::Sparse,
        Format::Dense => CodesFormat::Dense,
    };
    let meta = vec![
        ("model".to_string(), a.model.display().to_string()),
        ("tol".to_string(), a.tol.map_or("none".into(), |t| t.to_string())),
        ("skipped_rows".to_string(), data.stats().skipped.to_string()),
    ];
    let opts = EncodeOptions { k: a.k, tol: a.tol, mask: None };
    let s = encode_dataset(&mut model, &data, &opts, a.batch_size, format, &a.out, &meta, &mut |_| {})
        .map_err(msg)?;
    eprintln!("wrote codes of {} rows (k = {}, {:?}) to {}", s.rows, s.k, a.format, a.out.display());
    Ok(())
}
