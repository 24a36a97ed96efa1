//! `mpsae compare`: which atoms of run A reappear in run B.

use crate::common::{load, msg, CliResult};
use std::path::PathBuf;

/// Arguments of `mpsae compare`.
#[derive(clap::Args)]
pub struct CompareArgs {
    /// Run A (a run folder, model file or SAELens folder): its atoms are matched.
    a: PathBuf,
    /// Run B: the atoms they are matched to.
    b: PathBuf,
    /// Do not write compare.json into run A's folder (where the concept browser shows each
    /// atom's match).
    #[arg(long)]
    no_write: bool,
    /// Print the whole comparison (every atom's match) as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `mpsae compare`: a shell over [`mpsae::compare::compare`].
pub fn run(a: CompareArgs) -> CliResult<()> {
    let (mut ma, mut mb) = (load(&a.a)?, load(&a.b)?);
    let name =
        a.b.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| a.b.display().to_string());
    let cmp = mpsae::compare::compare(&mut ma, &mut mb, &name).map_err(msg)?;
    if a.json {
        println!("{}", serde_json::to_string(&cmp).map_err(msg)?);
    } else {
        println!(
            "{}",
            serde_json::json!({
                "a": a.a.display().to_string(), "b": a.b.display().to_string(),
                "concepts": cmp.concepts, "mcc": cmp.mcc,
                "matched_above_0_9": cmp.above_0_9, "matched_above_0_7": cmp.above_0_7,
            })
        );
    }
    if !a.no_write && a.a.is_dir() {
        let path = mpsae::compare::write(&cmp, &a.a).map_err(msg)?;
        eprintln!("wrote {} (the concept pages of {} show each atom's match)", path.display(), a.a.display());
    }
    Ok(())
}
