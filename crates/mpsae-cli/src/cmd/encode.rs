//! `mpsae encode`.

use crate::common::{load, msg, CliResult, DataArgs, EngineArgs};
use mpsae::io::atomic::write_atomic;
use mpsae::kernels::pursuit::Strategy;
use mpsae::{Codes, EncodeOptions};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
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
    /// Run folder or model .safetensors file.
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
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Runs `mpsae encode`.
pub fn run(a: EncodeArgs) -> CliResult<()> {
    if a.batch_size == 0 {
        return Err("invalid --batch-size: must be at least 1".into());
    }
    let (mut model, pre) = load(&a.model)?;
    model.set_engine(a.engine.engine()?);
    let data = a.data.open()?;
    let (rows, d, c) = (data.rows(), data.dim(), model.nb_concepts());
    if d != model.input_dim() {
        return Err(format!(
            "{}: rows have dimension {d}, the model expects {}",
            a.data.data[0].display(),
            model.input_dim()
        ));
    }
    let k = a.k.unwrap_or(model.config().k);
    model.eval();
    if model.engine().strategy_for(rows, c, d, k, false, None) == Strategy::Gram {
        model.prepare_gram();
    }
    let mut indices: Vec<i64> = Vec::new();
    let mut values: Vec<f32> = Vec::new();
    let mut dense: Vec<f32> = Vec::new();
    if a.format == Format::Dense {
        dense = vec![0.0; rows.checked_mul(c).ok_or("dense output too large")?];
    }
    let mut x = Vec::new();
    let mut start = 0;
    while start < rows {
        let len = a.batch_size.min(rows - start);
        data.read_range(start, len, &mut x);
        pre.apply(&mut x, d);
        let enc =
            model.encode_with(&x, &EncodeOptions { k: Some(k), tol: a.tol, mask: None }).map_err(msg)?;
        let codes: &Codes = &enc.codes;
        match a.format {
            Format::Sparse => {
                indices.extend(codes.atoms.iter().map(|&j| if j == Codes::NO_ATOM { -1 } else { j as i64 }));
                values.extend_from_slice(&codes.values);
            }
            Format::Dense => {
                for i in 0..len {
                    let row = &mut dense[(start + i) * c..(start + i + 1) * c];
                    for (j, v) in codes.row(i) {
                        row[j] += v;
                    }
                }
            }
        }
        start += len;
    }
    let bytes_f32 = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    // (name, dtype, shape, little-endian bytes) of each output tensor.
    let tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = match a.format {
        Format::Sparse => vec![
            ("indices", Dtype::I64, vec![rows, k], indices.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ("values", Dtype::F32, vec![rows, k], bytes_f32(&values)),
        ],
        Format::Dense => vec![("codes", Dtype::F32, vec![rows, c], bytes_f32(&dense))],
    };
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, b)| {
            Ok((name.to_string(), TensorView::new(*dtype, shape.clone(), b).map_err(msg)?))
        })
        .collect::<CliResult<Vec<(String, TensorView)>>>()?;
    let meta: HashMap<String, String> = [
        ("model".to_string(), a.model.display().to_string()),
        ("k".to_string(), k.to_string()),
        ("tol".to_string(), a.tol.map_or("none".into(), |t| t.to_string())),
        ("format".to_string(), format!("{:?}", a.format).to_lowercase()),
        ("concepts".to_string(), c.to_string()),
        ("skipped_rows".to_string(), data.stats().skipped.to_string()),
    ]
    .into_iter()
    .collect();
    let bytes = safetensors::serialize(views, &Some(meta)).map_err(msg)?;
    write_atomic(&a.out, &bytes).map_err(msg)?;
    eprintln!("wrote codes of {rows} rows (k = {k}, {:?}) to {}", a.format, a.out.display());
    Ok(())
}
