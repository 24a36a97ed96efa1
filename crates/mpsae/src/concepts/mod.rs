//! The concept browser: what each atom of a dictionary fires on, as a static site.
//!
//! [`analyze`] encodes the data once (streaming, batch by batch) and gathers per concept its
//! frequency, values, pursuit steps, top rows, quantile samples, parents and children
//! ([`stats`]); [`site::write`] turns that, the rows' tokens or image patches ([`tokens`]) and the
//! run's metrics into pages that open from the file system, with charts drawn here ([`svg`]).

pub mod logit_lens;
pub mod neuronpedia;
pub mod site;
pub mod stats;
pub mod svg;
pub mod tokens;

use crate::data::Dataset;
use crate::encode::pass::{encode_batches, PassOptions};
use crate::model::MpSae;
use crate::{Error, Result};
use stats::{Accumulator, ConceptStats};
use std::collections::HashMap;
use tokens::{RowInfo, TokenTable};

/// Options of the analysis.
#[derive(Clone, Copy, Debug)]
pub struct ConceptOptions {
    /// Top rows kept per concept.
    pub top: usize,
    /// Codes sampled per concept for the quantile examples.
    pub sample: usize,
    /// Parents, children and nearest atoms shown per concept.
    pub related: usize,
    /// Tokens of context on each side of an example.
    pub context: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Seed of the sampling.
    pub seed: u64,
}

impl Default for ConceptOptions {
    fn default() -> Self {
        ConceptOptions {
            top: 20,
            sample: 256,
            related: 8,
            context: 8,
            batch_size: crate::defaults::ENCODE_BATCH_SIZE,
            seed: 0,
        }
    }
}

/// What the pass found, ready to be written.
pub struct Analysis {
    /// Per-concept statistics.
    pub stats: ConceptStats,
    /// Nearest atoms of each concept by cosine, `(atom, cosine)`, closest first.
    pub nearest: Vec<Vec<(u32, f32)>>,
    /// The rows' tokens or patches, when given.
    pub tokens: Option<TokenTable>,
    /// For each token text: the concepts firing most often on it, `(concept, rows)`.
    pub token_index: Vec<(String, Vec<(u32, u64)>)>,
    /// The model's shape: `(d, c, k)`.
    pub shape: (usize, usize, usize),
    /// The tokens each concept promotes and suppresses through the model's unembedding, when
    /// the run has them ([`logit_lens`]).
    pub logit_lens: Option<logit_lens::LogitLens>,
    /// Each atom's matches in another run, when the run has a comparison
    /// ([`crate::compare`]).
    pub comparison: Option<crate::compare::Comparison>,
}

/// Encodes every row of `data` in eval mode (the model's preprocessing applied), gathering every
/// concept's statistics; `progress` gets the rows done after each batch.
pub fn analyze(
    model: &mut MpSae,
    data: &Dataset,
    tokens: Option<TokenTable>,
    opts: &ConceptOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Analysis> {
    let (rows, d, c, k) = (data.rows(), data.dim(), model.nb_concepts(), model.config().k);
    if d != model.input_dim() {
        return Err(Error::Shape(format!(
            "data rows have dimension {d}, the model expects {}",
            model.input_dim()
        )));
    }
    if let Some(t) = &tokens {
        if t.rows.len() != rows {
            return Err(Error::invalid(
                "tokens",
                format!("the token table has {} rows but the data has {rows} (they must describe the same rows, in order)", t.rows.len()),
            ));
        }
    }
    if opts.batch_size == 0 || opts.top == 0 {
        return Err(Error::invalid("concept options", "batch size and top must be at least 1"));
    }
    let mut acc = Accumulator::new(c, k, opts.top, opts.sample.max(1), opts.seed);
    let (mut t_encode, mut t_add) = (0.0, 0.0);
    let pass = PassOptions { batch_size: opts.batch_size, k: Some(k), tol: None };
    let mut t = std::time::Instant::now();
    encode_batches(model, data, &pass, |_, batch| {
        t_encode += t.elapsed().as_secs_f64();
        let enc = &batch.encoded;
        acc.add(batch.rows, &enc.codes, &enc.energy);
        t_add += t.elapsed().as_secs_f64();
        progress(batch.start + enc.codes.n);
        t = std::time::Instant::now();
        Ok(())
    })?;
    let timing = std::env::var_os("MPSAE_TIMING").is_some();
    let t = std::time::Instant::now();
    let stats = acc.finish(opts.related);
    let nearest = model.nearest_atoms(opts.related);
    let t_nearest = t.elapsed().as_secs_f64();
    let token_index = tokens.as_ref().map(|t| index_tokens(t, &stats)).unwrap_or_default();
    if timing {
        eprintln!(
            "encode {t_encode:.2} s, statistics {:.2} s, nearest atoms {t_nearest:.2} s",
            t_add - t_encode
        );
    }
    Ok(Analysis { stats, nearest, tokens, token_index, shape: (d, c, k), logit_lens: None, comparison: None })
}

/// For each token text, the concepts that fire on most of its rows (at most 8).
fn index_tokens(t: &TokenTable, stats: &ConceptStats) -> Vec<(String, Vec<(u32, u64)>)> {
    let k = stats.k;
    let mut by: HashMap<String, HashMap<u32, u64>> = HashMap::new();
    for (i, info) in t.rows.iter().enumerate() {
        let RowInfo::Token { .. } = info else { continue };
        let m = by.entry(t.label(i)).or_default();
        let mut seen: Vec<u32> = Vec::with_capacity(k);
        for &a in &stats.atoms[i * k..(i + 1) * k] {
            if a != crate::model::Codes::NO_ATOM && !seen.contains(&a) && stats.code(i, a as usize) != 0.0 {
                seen.push(a);
                *m.entry(a).or_default() += 1;
            }
        }
    }
    let mut out: Vec<(String, Vec<(u32, u64)>)> = by
        .into_iter()
        .map(|(tok, m)| {
            let mut v: Vec<(u32, u64)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(8);
            (tok, v)
        })
        .collect();
    out.sort();
    out
}
