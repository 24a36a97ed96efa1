//! One or many data files seen as one matrix of rows, validated and summarised in one pass.

use crate::data::Source;
use crate::{Error, Result};
use rayon::prelude::*;
use std::path::PathBuf;

/// What to do with rows holding NaN or infinite values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonFinite {
    /// Refuse the data, naming the file and the first bad row.
    #[default]
    Error,
    /// Leave such rows out (their count is in [`DataStats::skipped`]).
    Skip,
}

/// Options for opening data.
#[derive(Clone, Debug, Default)]
pub struct DataOptions {
    /// Tensor to read from `.safetensors` files (default: the file's only 2-D tensor).
    pub tensor: Option<String>,
    /// Policy for non-finite rows.
    pub non_finite: NonFinite,
}

/// Statistics of the usable rows, from the validation pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataStats {
    /// Usable rows.
    pub rows: usize,
    /// Rows left out (non-finite values).
    pub skipped: usize,
    /// Per-dimension mean.
    pub mean: Vec<f64>,
    /// Mean squared row norm.
    pub mean_sq_norm: f64,
    /// Mean row norm.
    pub mean_norm: f64,
}

/// Rows of one or more files with the same dimension.
#[derive(Debug)]
pub struct Dataset {
    sources: Vec<Source>,
    /// First global row of each source.
    starts: Vec<usize>,
    /// Global ids of the usable rows, when some were skipped.
    keep: Option<Vec<usize>>,
    d: usize,
    stats: DataStats,
}

struct Partial {
    sum: Vec<f64>,
    sq: f64,
    norm: f64,
    rows: usize,
    bad: Vec<usize>,
    error: Option<Error>,
}

impl Dataset {
    /// Opens, checks and summarises the files (a harvest folder stands for its shards, in order,
    /// see [`super::harvest`]). Every row is read once (in parallel).
    pub fn open(paths: &[PathBuf], opts: &DataOptions) -> Result<Dataset> {
        if paths.is_empty() {
            return Err(Error::invalid("data", "no data file given"));
        }
        let files = super::harvest::expand(paths)?;
        let sources =
            files.iter().map(|p| Source::open(p, opts.tensor.as_deref())).collect::<Result<Vec<_>>>()?;
        Dataset::from_sources(sources, opts)
    }

    /// Checks and summarises already opened sources (see [`Dataset::open`]).
    pub fn from_sources(all: Vec<Source>, opts: &DataOptions) -> Result<Dataset> {
        if all.is_empty() {
            return Err(Error::invalid("data", "no data file given"));
        }
        let paths: Vec<PathBuf> = all.iter().map(|s| s.path.clone()).collect();
        let mut sources: Vec<Source> = Vec::with_capacity(all.len());
        for s in all {
            let p = &s.path;
            if let Some(first) = sources.first() {
                let first: &Source = first;
                if s.d != first.d {
                    return Err(Error::file(
                        p.clone(),
                        format!("rows have dimension {}, but {} has {}", s.d, first.path.display(), first.d),
                    ));
                }
            }
            sources.push(s);
        }
        let d = sources[0].d;
        let mut starts = Vec::with_capacity(sources.len());
        let mut total = 0usize;
        for s in &sources {
            starts.push(total);
            total += s.rows;
        }
        let mut sum = vec![0f64; d];
        let (mut sq, mut norm, mut rows, mut bad_all) = (0f64, 0f64, 0usize, Vec::new());
        for (si, s) in sources.iter().enumerate() {
            const CHUNK: usize = 4096;
            let parts: Vec<Partial> = (0..s.rows.div_ceil(CHUNK))
                .into_par_iter()
                .map(|c| {
                    let mut p = Partial {
                        sum: vec![0f64; d],
                        sq: 0.0,
                        norm: 0.0,
                        rows: 0,
                        bad: Vec::new(),
                        error: None,
                    };
                    let (r0, r1) = (c * CHUNK, ((c + 1) * CHUNK).min(s.rows));
                    let mut chunk = vec![0f32; (r1 - r0) * d];
                    if let Err(e) = s.read_rows(r0, r1 - r0, &mut chunk) {
                        p.error = Some(e);
                        return p;
                    }
                    for (i, row) in (r0..r1).zip(chunk.chunks(d)) {
                        if row.iter().any(|v| !v.is_finite()) {
                            p.bad.push(i);
                            continue;
                        }
                        let mut n2 = 0f64;
                        for (acc, &v) in p.sum.iter_mut().zip(row) {
                            *acc += v as f64;
                            n2 += v as f64 * v as f64;
                        }
                        p.sq += n2;
                        p.norm += n2.sqrt();
                        p.rows += 1;
                    }
                    p
                })
                .collect();
            for mut p in parts {
                if let Some(e) = p.error.take() {
                    return Err(e);
                }
                // Parts come in row order, so the first bad row of the first bad part is the file's first.
                if let (Some(&i), NonFinite::Error) = (p.bad.first(), opts.non_finite) {
                    let mut row = vec![0f32; d];
                    s.read_row(i, &mut row)?;
                    let col = row.iter().position(|v| !v.is_finite()).unwrap_or(0);
                    return Err(Error::Row {
                        path: s.path.clone(),
                        row: i,
                        message: format!(
                            "value {} at column {col} is not finite (skip such rows with --skip-nonfinite / NonFinite::Skip)",
                            row[col]
                        ),
                    });
                }
                sum.iter_mut().zip(&p.sum).for_each(|(a, b)| *a += b);
                sq += p.sq;
                norm += p.norm;
                rows += p.rows;
                bad_all.extend(p.bad.iter().map(|&i| starts[si] + i));
            }
        }
        if rows == 0 {
            return Err(Error::file(&paths[0], "no usable rows (every row holds NaN or infinite values)"));
        }
        let keep = (!bad_all.is_empty()).then(|| {
            let mut it = bad_all.iter().peekable();
            (0..total)
                .filter(|i| {
                    if it.peek() == Some(&i) {
                        it.next();
                        false
                    } else {
                        true
                    }
                })
                .collect()
        });
        let stats = DataStats {
            rows,
            skipped: bad_all.len(),
            mean: sum.iter().map(|s| s / rows as f64).collect(),
            mean_sq_norm: sq / rows as f64,
            mean_norm: norm / rows as f64,
        };
        Ok(Dataset { sources, starts, keep, d, stats })
    }

    /// Row dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Usable rows.
    pub fn rows(&self) -> usize {
        self.stats.rows
    }

    /// Statistics of the usable rows.
    pub fn stats(&self) -> &DataStats {
        &self.stats
    }

    /// The files.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Reads usable rows `ids` (indices in `0..rows()`) as f32 into `out` (`ids.len() x d`).
    pub fn read(&self, ids: &[usize], out: &mut Vec<f32>) -> Result<()> {
        self.check()?;
        out.resize(ids.len() * self.d, 0.0);
        let d = self.d;
        out.par_chunks_mut(d).zip(ids.par_iter()).with_min_len(256).try_for_each(|(o, &id)| {
            let (s, i) = self.locate(id);
            self.sources[s].read_row(i, o)
        })
    }

    /// Checks that no file behind the dataset changed since it was opened (see [`Source::check`]).
    pub fn check(&self) -> Result<()> {
        self.sources.iter().try_for_each(Source::check)
    }

    /// The source and row within it of usable row `id`.
    fn locate(&self, id: usize) -> (usize, usize) {
        let g = match &self.keep {
            Some(k) => k[id],
            None => id,
        };
        let s = self.starts.partition_point(|&st| st <= g) - 1;
        (s, g - self.starts[s])
    }

    /// Rows `start..start + len` (of the usable rows) into `out`, read in long runs.
    pub fn read_range(&self, start: usize, len: usize, out: &mut Vec<f32>) -> Result<()> {
        if self.keep.is_some() {
            let ids: Vec<usize> = (start..start + len).collect();
            return self.read(&ids, out);
        }
        self.check()?;
        let d = self.d;
        out.resize(len * d, 0.0);
        // Runs of at most 1024 rows within one source, read in parallel.
        let mut runs = Vec::new();
        let mut at = start;
        while at < start + len {
            let (s, i) = self.locate(at);
            let n = (self.sources[s].rows - i).min(start + len - at).min(1024);
            runs.push((at - start, s, i, n));
            at += n;
        }
        let mut slices = Vec::with_capacity(runs.len());
        let mut rest = out.as_mut_slice();
        for &(_, _, _, n) in &runs {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(n * d);
            slices.push(head);
            rest = tail;
        }
        slices.into_par_iter().zip(runs).try_for_each(|(o, (_, s, i, n))| self.sources[s].read_rows(i, n, o))
    }
}
