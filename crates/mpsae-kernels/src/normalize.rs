//! Row-wise dictionary normalisations, exactly as overcomplete's `DictionaryLayer` applies them.

/// A built-in normalisation of the dictionary's rows (atoms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowNorm {
    /// `W / (‖W_i‖₂ + 1e-8)`.
    L2,
    /// `W / max_i ‖W_i‖₂` (no epsilon).
    MaxL2,
    /// `W / (‖W_i‖₁ + 1e-8)`.
    L1,
    /// `W / max_i ‖W_i‖₁` (no epsilon).
    MaxL1,
}

/// Normalises the `c x d` weights `w` in place (norms accumulated in f64, as the reference's
/// float32 `torch.norm` rounds them no worse).
pub fn normalize_rows(norm: RowNorm, w: &mut [f32], d: usize) {
    if d == 0 {
        return;
    }
    let l2 = |row: &[f32]| row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32;
    let l1 = |row: &[f32]| row.iter().map(|&v| (v as f64).abs()).sum::<f64>() as f32;
    match norm {
        RowNorm::L2 | RowNorm::L1 => {
            let f = if norm == RowNorm::L2 { l2 } else { l1 };
            for row in w.chunks_mut(d) {
                let denom = f(row) + 1e-8;
                row.iter_mut().for_each(|v| *v /= denom);
            }
        }
        RowNorm::MaxL2 | RowNorm::MaxL1 => {
            let f = if norm == RowNorm::MaxL2 { l2 } else { l1 };
            let max = w.chunks(d).map(f).fold(f32::NEG_INFINITY, f32::max);
            w.iter_mut().for_each(|v| *v /= max);
        }
    }
}
