//! `encode` of a whole dataset, streamed batch by batch into a safetensors codes file.
//!
//! The header is known before the first batch (the shapes are), so the file is pre-sized and each
//! batch's codes are written at their offsets: memory holds one batch, never the n x k or n x c
//! codes. The file is written under a temporary name and renamed when complete.

use crate::data::Dataset;
use crate::encode::pass::{check, encode_batches, PassOptions};
use crate::io::atomic::is_temporary;
use crate::model::{Codes, EncodeOptions, MpSae};
use crate::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// Layout of a codes file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodesFormat {
    /// `indices` (I64, n x k, -1 where a row stopped early) and `values` (F32, n x k) in pursuit
    /// order.
    Sparse,
    /// `codes` (F32, n x c), repeated picks summed: the reference's codes matrix.
    Dense,
}

/// What [`encode_dataset`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct EncodeSummary {
    /// Rows encoded.
    pub rows: usize,
    /// Pursuit steps.
    pub k: usize,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Encodes every row of `data` in eval mode (the model's preprocessing applied), `batch_size` rows at a
/// time, into the safetensors file `out`; `meta` goes into its metadata. `progress` is called
/// with the rows done after each batch.
pub fn encode_dataset(
    model: &mut MpSae,
    data: &Dataset,
    opts: &EncodeOptions,
    batch_size: usize,
    format: CodesFormat,
    out: &Path,
    meta: &[(String, String)],
    progress: &mut dyn FnMut(usize),
) -> Result<EncodeSummary> {
    let pass = PassOptions { batch_size, k: opts.k, tol: opts.tol };
    let k = check(model, data, &pass)?;
    let (rows, c) = (data.rows(), model.nb_concepts());
    let too_big = || Error::invalid("output", "the codes do not fit in a file (too many rows)");
    // (name, dtype, shape, bytes per element), in file order.
    let tensors: Vec<(&str, &str, [usize; 2], usize)> = match format {
        CodesFormat::Sparse => vec![("indices", "I64", [rows, k], 8), ("values", "F32", [rows, k], 4)],
        CodesFormat::Dense => vec![("codes", "F32", [rows, c], 4)],
    };
    let mut header = BTreeMap::new();
    let mut offsets = Vec::new();
    let mut at = 0usize;
    for (name, dtype, shape, size) in &tensors {
        let len = shape[0].checked_mul(shape[1]).and_then(|v| v.checked_mul(*size)).ok_or_else(too_big)?;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + len]}),
        );
        offsets.push(at);
        at = at.checked_add(len).ok_or_else(too_big)?;
    }
    let mut m: BTreeMap<String, String> = meta.iter().cloned().collect();
    m.insert("k".into(), k.to_string());
    m.insert("concepts".into(), c.to_string());
    m.insert("format".into(), format!("{format:?}").to_lowercase());
    header.insert("__metadata__".to_string(), serde_json::to_value(&m).expect("metadata serialises"));
    let mut head = serde_json::to_vec(&header).expect("header serialises");
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let data_start = 8 + head.len() as u64;
    let total = data_start + at as u64;

    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::resources::check_disk(dir, total, "the codes")?;
    let name = out.file_name().ok_or_else(|| Error::file(out, "is not a file path"))?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    debug_assert!(is_temporary(&tmp.file_name().unwrap().to_string_lossy()));
    let io = |e: std::io::Error| Error::io(out, e);
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.set_len(total).map_err(io)?;
        f.write_all(&(head.len() as u64).to_le_bytes()).map_err(io)?;
        f.write_all(&head).map_err(io)?;
        let mut buf = Vec::new();
        encode_batches(model, data, &pass, |_, batch| {
            let (start, codes) = (batch.start, &batch.encoded.codes);
            let len = codes.n;
            match format {
                CodesFormat::Sparse => {
                    buf.clear();
                    for &j in &codes.atoms {
                        let v: i64 = if j == Codes::NO_ATOM { -1 } else { j as i64 };
                        buf.extend_from_slice(&v.to_le_bytes());
                    }
                    f.seek(SeekFrom::Start(data_start + (offsets[0] + start * k * 8) as u64)).map_err(io)?;
                    f.write_all(&buf).map_err(io)?;
                    buf.clear();
                    codes.values.iter().for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
                    f.seek(SeekFrom::Start(data_start + (offsets[1] + start * k * 4) as u64)).map_err(io)?;
                    f.write_all(&buf).map_err(io)?;
                }
                CodesFormat::Dense => {
                    buf.clear();
                    let mut row = vec![0f32; c];
                    for i in 0..len {
                        row.iter_mut().for_each(|v| *v = 0.0);
                        for (j, v) in codes.row(i) {
                            row[j] += v;
                        }
                        row.iter().for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
                    }
                    f.seek(SeekFrom::Start(data_start + (offsets[0] + start * c * 4) as u64)).map_err(io)?;
                    f.write_all(&buf).map_err(io)?;
                }
            }
            progress(start + len);
            Ok(())
        })?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, out).map_err(io)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok(EncodeSummary { rows, k, bytes: total })
}
