//! Which atoms of one dictionary reappear in another: a one-to-one matching of atoms by absolute
//! cosine (the Hungarian assignment, as the mean correlation coefficient of SAELens's synthetic
//! evaluations), its MCC, the share of matches above 0.9 and 0.7, and each atom's best match
//! without the one-to-one constraint. `mpsae compare RUN_A RUN_B` and `mpsae.compare` call
//! [`compare`]; the result is written beside run A (`compare.json`), where the concept browser
//! shows it.

use crate::model::MpSae;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file of a run folder that holds its comparison with another run.
pub const COMPARE_FILE: &str = "compare.json";

/// The largest cosine matrix compared (entries, f32): 2^28 (1 GiB), e.g. 16384 x 16384.
pub const MAX_ENTRIES: usize = 1 << 28;

/// One atom's match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// The atom of the other dictionary.
    pub atom: usize,
    /// The signed cosine between the two atoms.
    pub cosine: f32,
}

/// The comparison of dictionary A with dictionary B.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Where B comes from (a run folder's name, for the browser).
    pub other: String,
    /// Atoms of A and of B.
    pub concepts: (usize, usize),
    /// Mean absolute cosine of the one-to-one matches (`min(c_A, c_B)` pairs): the MCC.
    pub mcc: f64,
    /// Share of the matched pairs with `|cos| > 0.9`, and `> 0.7`.
    pub above_0_9: f64,
    /// See `above_0_9`.
    pub above_0_7: f64,
    /// For each atom of A, its one-to-one match in B (`None` when B has fewer atoms and this one
    /// is left over).
    pub matched: Vec<Option<Match>>,
    /// For each atom of A, its best match in B by absolute cosine (several atoms of A may share
    /// one).
    pub best: Vec<Match>,
}

/// Rows of `dict` (`c x d`) scaled to unit norm (a zero row stays zero).
fn unit_rows(dict: &[f32], d: usize) -> Vec<f32> {
    let mut out = dict.to_vec();
    for row in out.chunks_mut(d.max(1)) {
        let n = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v = (*v as f64 / n) as f32);
        }
    }
    out
}

/// Compares the eval-mode dictionaries of `a` and `b` (of the same width); `other` names `b`.
pub fn compare(a: &mut MpSae, b: &mut MpSae, other: &str) -> Result<Comparison> {
    let d = a.input_dim();
    if b.input_dim() != d {
        return Err(Error::invalid(
            "compare",
            format!(
                "the dictionaries have widths {d} and {}: only atoms of one space compare",
                b.input_dim()
            ),
        ));
    }
    let (ca, cb) = (a.nb_concepts(), b.nb_concepts());
    if ca.saturating_mul(cb) > MAX_ENTRIES {
        return Err(Error::invalid(
            "compare",
            format!("{ca} x {cb} atoms make a cosine matrix of more than {MAX_ENTRIES} entries"),
        ));
    }
    a.eval();
    b.eval();
    let (da, db) = (unit_rows(&a.get_dictionary(), d), unit_rows(&b.get_dictionary(), d));
    // The cosine matrix, one row of A at a time (dot products in f64, stored in f32).
    let cos: Vec<f32> = {
        use rayon::prelude::*;
        let mut m = vec![0f32; ca * cb];
        m.par_chunks_mut(cb.max(1)).zip(da.par_chunks(d.max(1))).for_each(|(row, x)| {
            for (out, y) in row.iter_mut().zip(db.chunks(d.max(1))) {
                *out = x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>() as f32;
            }
        });
        m
    };
    let best: Vec<Match> = cos
        .chunks(cb.max(1))
        .map(|row| {
            let (atom, &cosine) = row
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()).then(y.0.cmp(&x.0)))
                .unwrap_or((0, &0.0));
            Match { atom, cosine }
        })
        .collect();
    // One-to-one: the assignment maximising Σ|cos|, on the smaller side's rows.
    let transpose = ca > cb;
    let (rows, cols) = if transpose { (cb, ca) } else { (ca, cb) };
    let cost = |i: usize, j: usize| -> f64 {
        let v = if transpose { cos[j * cb + i] } else { cos[i * cb + j] };
        1.0 - v.abs() as f64
    };
    let assignment = assign(rows, cols, cost);
    let mut matched = vec![None; ca];
    for (i, &j) in assignment.iter().enumerate() {
        let (x, y) = if transpose { (j, i) } else { (i, j) };
        matched[x] = Some(Match { atom: y, cosine: cos[x * cb + y] });
    }
    let pairs: Vec<f64> = matched.iter().flatten().map(|m| m.cosine.abs() as f64).collect();
    let n = pairs.len().max(1) as f64;
    Ok(Comparison {
        other: other.to_string(),
        concepts: (ca, cb),
        mcc: pairs.iter().sum::<f64>() / n,
        above_0_9: pairs.iter().filter(|&&v| v > 0.9).count() as f64 / n,
        above_0_7: pairs.iter().filter(|&&v| v > 0.7).count() as f64 / n,
        matched,
        best,
    })
}

/// The minimum-cost assignment of each of `rows` rows to a distinct one of `cols >= rows`
/// columns: the Hungarian algorithm with potentials and shortest augmenting paths (`O(rows²
/// cols)` at worst, far less when most rows have a clear best column). Returns each row's column.
pub fn assign(rows: usize, cols: usize, cost: impl Fn(usize, usize) -> f64) -> Vec<usize> {
    assert!(rows <= cols, "more rows than columns");
    let inf = f64::INFINITY;
    // Column 0 is a virtual one; rows and columns are numbered from 1 in the search.
    let mut u = vec![0f64; rows + 1];
    let mut v = vec![0f64; cols + 1];
    let mut owner = vec![0usize; cols + 1]; // the row (1-based) assigned to a column, 0: none
    let mut way = vec![0usize; cols + 1];
    let mut minv = vec![inf; cols + 1];
    let mut used = vec![false; cols + 1];
    for i in 1..=rows {
        owner[0] = i;
        let mut j0 = 0usize;
        minv.iter_mut().for_each(|m| *m = inf);
        used.iter_mut().for_each(|x| *x = false);
        loop {
            used[j0] = true;
            let i0 = owner[j0];
            let mut delta = inf;
            let mut j1 = 0usize;
            for j in 1..=cols {
                if used[j] {
                    continue;
                }
                let cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
                if cur < minv[j] {
                    minv[j] = cur;
                    way[j] = j0;
                }
                if minv[j] < delta {
                    delta = minv[j];
                    j1 = j;
                }
            }
            for j in 0..=cols {
                if used[j] {
                    u[owner[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if owner[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            owner[j0] = owner[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut out = vec![0usize; rows];
    for j in 1..=cols {
        if owner[j] > 0 {
            out[owner[j] - 1] = j - 1;
        }
    }
    out
}

/// Writes `cmp` as the comparison file of the run folder `dir`.
pub fn write(cmp: &Comparison, dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join(COMPARE_FILE);
    let text = serde_json::to_string(cmp).expect("a comparison serialises");
    crate::io::atomic::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// The comparison written in the run folder `dir`, if any, checked against `c` atoms.
pub fn read(dir: &Path, c: usize) -> Result<Option<Comparison>> {
    let path = dir.join(COMPARE_FILE);
    if !dir.is_dir() || !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let cmp: Comparison =
        serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("not a comparison: {e}")))?;
    if cmp.best.len() != c {
        return Err(Error::file(&path, format!("compares {} atoms, the model has {c}", cmp.best.len())));
    }
    Ok(Some(cmp))
}

#[cfg(test)]
mod tests {
    use super::assign;

    fn brute(rows: usize, cols: usize, cost: &dyn Fn(usize, usize) -> f64) -> f64 {
        // Every injective map of rows into columns.
        fn go(
            i: usize,
            rows: usize,
            cols: usize,
            used: &mut Vec<bool>,
            cost: &dyn Fn(usize, usize) -> f64,
        ) -> f64 {
            if i == rows {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for j in 0..cols {
                if !used[j] {
                    used[j] = true;
                    best = best.min(cost(i, j) + go(i + 1, rows, cols, used, cost));
                    used[j] = false;
                }
            }
            best
        }
        go(0, rows, cols, &mut vec![false; cols], cost)
    }

    #[test]
    fn assignments_are_optimal_on_random_matrices() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) % 1000) as f64 / 1000.0
        };
        for trial in 0..200 {
            let rows = 1 + trial % 6;
            let cols = rows + trial % 3;
            // Coarse values make ties common.
            let m: Vec<f64> = (0..rows * cols).map(|_| (next() * 4.0).floor()).collect();
            let cost = |i: usize, j: usize| m[i * cols + j];
            let a = assign(rows, cols, cost);
            let mut seen = a.clone();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), rows, "columns used twice: {a:?}");
            let total: f64 = a.iter().enumerate().map(|(i, &j)| cost(i, j)).sum();
            assert_eq!(total, brute(rows, cols, &cost), "trial {trial}: {m:?} -> {a:?}");
        }
    }
}
