//! `mpsae eval`.

use crate::common::{is_terminal, load, msg, CliResult, DataArgs, EngineArgs};
use mpsae::encode::{evaluate, EvalOptions};
use std::path::PathBuf;

/// Arguments of `mpsae eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Run folder, model .safetensors file or SAELens matching_pursuit folder.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Pursuit steps (default: the model's k).
    #[arg(long, short = 'k')]
    k: Option<usize>,
    /// Stop a row once its residual norm is below this fraction of its input norm.
    #[arg(long)]
    tol: Option<f32>,
    /// Rows per batch.
    #[arg(long, default_value_t = mpsae::defaults::ENCODE_BATCH_SIZE)]
    batch_size: usize,
    /// Print JSON even on a terminal.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Runs `mpsae eval`.
pub fn run(a: EvalArgs) -> CliResult<()> {
    let mut model = load(&a.model)?;
    model.set_engine(a.engine.engine()?);
    let data = a.data.open()?;
    let opts = EvalOptions { batch_size: a.batch_size, k: a.k, tol: a.tol };
    let r = evaluate(&mut model, &data, &opts).map_err(msg)?;
    if a.json || !is_terminal() {
        let mut v = serde_json::to_value(&r).unwrap();
        v["skipped_rows"] = data.stats().skipped.into();
        println!("{v}");
    } else {
        println!("rows                {}", r.rows);
        println!("k                   {}", r.k);
        println!("explained variance  {:.4}   (SAEBench's: 1 - Σ‖x - x̂‖² / Σ‖x - μ‖²)", r.explained_variance);
        println!("mse                 {:.6e}", r.mse);
        println!("r2_score            {:.4}   (overcomplete's, global scalar mean)", r.r2);
        println!("l0                  {:.2}", r.l0);
        println!("dead ratio          {:.1}%", 100.0 * r.dead_ratio);
        println!("explained variance after each pursuit step:");
        for (t, ev) in r.explained_variance_per_step.iter().enumerate() {
            println!("  step {:>3}  {:.4}", t + 1, ev);
        }
    }
    Ok(())
}
