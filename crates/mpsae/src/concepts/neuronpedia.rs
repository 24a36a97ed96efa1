//! A Neuronpedia-ready export of a run: the SAELens weights plus the feature dashboards, from the
//! concept browser's analysis, in the layout Neuronpedia's import reads (its
//! `neuronpedia-utils` exports): `MODEL/SOURCE/{release,model,sourceset,source}.jsonl`,
//! `features/batch-N.jsonl.gz` and `activations/batch-N.jsonl.gz` (one JSON object a line,
//! gzipped), and `saelens/` (cfg.json, sae_weights.safetensors).
//!
//! A feature record carries its frequency (`frac_nonzero`), its activation histogram
//! (`freq_hist_data_bar_*`), the tokens it promotes and suppresses (`pos_str`, `neg_str`, from
//! the run's logit lens when it has one) and its nearest atoms (`topkCosSim*`); an activation
//! record is one top example: the tokens of its context (decoded text) and the concept's value on
//! each.

use super::stats::{LOG_BINS, LOG_MAX, LOG_MIN};
use super::tokens::RowInfo;
use super::Analysis;
use crate::model::MpSae;
use crate::{Error, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Features per batch file.
pub const BATCH: usize = 128;
/// The creator id written in every record (Neuronpedia replaces it with the uploader's).
pub const CREATOR: &str = "mpsae";

/// `SmolLM2 135M Instruct` -> `smollm2-135m-instruct`: Neuronpedia's ids are lower-case with dashes.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let t = out.trim_matches('-').to_string();
    if t.is_empty() {
        "model".into()
    } else {
        t
    }
}

fn gz_lines(path: &Path, records: &[Value]) -> Result<()> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(5));
    for r in records {
        let line = serde_json::to_string(r).expect("records serialise");
        enc.write_all(line.as_bytes()).and_then(|_| enc.write_all(b"\n")).map_err(|e| Error::io(path, e))?;
    }
    let bytes = enc.finish().map_err(|e| Error::io(path, e))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

fn jsonl(path: &Path, record: &Value) -> Result<()> {
    std::fs::write(path, format!("{record}\n")).map_err(|e| Error::io(path, e))
}

/// The activation histogram of a concept's positive values: bar heights and the values at the
/// bars' centres (log-spaced, as the browser's histogram).
fn histogram(h: &[u64]) -> (Vec<f64>, Vec<f64>) {
    let side = LOG_BINS + 2;
    let step = (LOG_MAX - LOG_MIN) / LOG_BINS as f64;
    let centre = |b: usize| -> f64 {
        match b {
            0 => 10f64.powf(LOG_MIN - step / 2.0),
            b if b == side - 1 => 10f64.powf(LOG_MAX + step / 2.0),
            b => 10f64.powf(LOG_MIN + (b as f64 - 0.5) * step),
        }
    };
    let (mut heights, mut values) = (Vec::new(), Vec::new());
    for b in 0..side {
        let n = h.get(side + b).copied().unwrap_or(0);
        if n > 0 {
            heights.push(n as f64);
            values.push(centre(b));
        }
    }
    (heights, values)
}

/// Writes the export of `model` and its analysis `a` under `out` (refused when `out` holds
/// anything, unless `force`; written under a temporary name and renamed into place). Returns the
/// source folder (`out/MODEL/SOURCE`).
pub fn export(a: &Analysis, model: &mut MpSae, out: &Path, force: bool, context: usize) -> Result<PathBuf> {
    let tokens = a.tokens.as_ref().filter(|t| !t.is_images()).ok_or_else(|| {
        Error::invalid("neuronpedia", "the export needs the rows' tokens (a harvest folder or --tokens)")
    })?;
    let p = model.provenance().clone();
    let model_id = slug(p.model.as_deref().unwrap_or("model"));
    let (_, c, _) = a.shape;
    let set = format!("mpsae-{}", if c % 1024 == 0 { format!("{}k", c / 1024) } else { c.to_string() });
    let source_id = format!("{}-{set}", p.layer.unwrap_or(0));
    crate::io::atomic::write_folder(out, force, |tmp| {
        let root = tmp.join(&model_id).join(&source_id);
        std::fs::create_dir_all(root.join("features")).map_err(|e| Error::io(&root, e))?;
        std::fs::create_dir_all(root.join("activations")).map_err(|e| Error::io(&root, e))?;
        let now = "1970-01-01T00:00:00";
        let hook = p.hook.clone().unwrap_or_default();
        jsonl(
            &root.join("release.jsonl"),
            &json!({"name": set, "description": format!("mpsae MP-SAE, {c} concepts at {hook}"),
            "creatorName": CREATOR, "creatorId": CREATOR, "visibility": "PUBLIC", "urls": [], "createdAt": now}),
        )?;
        jsonl(
            &root.join("model.jsonl"),
            &json!({"id": model_id, "instruct": model_id.contains("instruct"),
            "creatorId": CREATOR, "displayName": p.model, "displayNameShort": p.model, "dimension": model.input_dim(),
            "createdAt": now, "updatedAt": now}),
        )?;
        jsonl(
            &root.join("sourceset.jsonl"),
            &json!({"modelId": model_id, "name": set, "creatorId": CREATOR,
            "creatorName": CREATOR, "releaseName": set, "visibility": "PUBLIC",
            "description": format!("{hook} - {c} concepts (mpsae)"), "createdAt": now}),
        )?;
        jsonl(
            &root.join("source.jsonl"),
            &json!({"id": source_id, "modelId": model_id, "setName": set,
            "creatorId": CREATOR, "hasDashboards": true, "visibility": "PUBLIC",
            "num_tokens_in_prompt": p.context, "createdAt": now}),
        )?;
        let n = a.stats.rows;
        for (b, start) in (0..c).step_by(BATCH).enumerate() {
            let mut features = Vec::new();
            let mut activations = Vec::new();
            for j in start..(start + BATCH).min(c) {
                let s = &a.stats.concepts[j];
                let (heights, values) = histogram(&s.histogram);
                let (pos, neg) = match &a.logit_lens {
                    Some(l) => (l.promoted[j].clone(), l.suppressed[j].clone()),
                    None => (Vec::new(), Vec::new()),
                };
                let max_act = s.top.first().map_or(0.0, |t| t.0);
                features.push(json!({
                    "modelId": model_id, "layer": source_id, "index": j.to_string(), "creatorId": CREATOR,
                    "createdAt": now, "maxActApprox": max_act, "hasVector": false, "vector": [],
                    "topkCosSimIndices": a.nearest[j].iter().map(|x| x.0).collect::<Vec<_>>(),
                    "topkCosSimValues": a.nearest[j].iter().map(|x| x.1).collect::<Vec<_>>(),
                    "pos_str": pos.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
                    "pos_values": pos.iter().map(|x| x.1).collect::<Vec<_>>(),
                    "neg_str": neg.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
                    "neg_values": neg.iter().map(|x| x.1).collect::<Vec<_>>(),
                    "frac_nonzero": s.frequency(n),
                    "freq_hist_data_bar_heights": heights, "freq_hist_data_bar_values": values,
                    "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
                    "decoder_weights_dist": [],
                }));
                for (e, &(value, row)) in s.top.iter().enumerate() {
                    let rows = tokens.context(row, context);
                    let texts: Vec<String> = rows
                        .iter()
                        .map(|&r| match tokens.rows.get(r) {
                            Some(RowInfo::Token { token, .. }) => token.clone(),
                            _ => String::new(),
                        })
                        .collect();
                    let vals: Vec<f32> = rows.iter().map(|&r| a.stats.code(r, j)).collect();
                    let at = rows.iter().position(|&r| r == row).unwrap_or(0);
                    let min = vals.iter().copied().fold(f32::INFINITY, f32::min);
                    activations.push(json!({
                        "id": format!("{source_id}-{j}-{e}"), "tokens": texts, "index": j.to_string(),
                        "layer": source_id, "modelId": model_id, "maxValue": value, "maxValueTokenIndex": at,
                        "minValue": min, "values": vals, "creatorId": CREATOR, "createdAt": now,
                    }));
                }
            }
            gz_lines(&root.join("features").join(format!("batch-{b}.jsonl.gz")), &features)?;
            gz_lines(&root.join("activations").join(format!("batch-{b}.jsonl.gz")), &activations)?;
        }
        crate::io::saelens::export(model, &root.join("saelens"), true)
    })?;
    Ok(out.join(model_id).join(source_id))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_slugs() {
        assert_eq!(super::slug("Smollm2 135M 8k Lc100K Mix1 Ep2"), "smollm2-135m-8k-lc100k-mix1-ep2");
        assert_eq!(super::slug("HuggingFaceTB/SmolLM2-135M"), "huggingfacetb-smollm2-135m");
        assert_eq!(super::slug(""), "model");
    }
}
