//! SAELens's format, both ways: a folder with `cfg.json` (`architecture: "matching_pursuit"`)
//! and `sae_weights.safetensors` (`W_dec` `[d_sae, d_in]`, `b_dec` `[d_in]`).
//!
//! Export: `W_dec` is the model's fused dictionary `normalize(W)·exp(m)`, `b_dec` its mean (zeros
//! without centring), `max_iterations = k`, `residual_threshold = 0`, `stop_on_duplicate_support =
//! false`. A scale is folded: matching pursuit is linear in its input, so on `x - b_dec` SAELens
//! picks the atoms mpsae picks on `(x - mean)·scale`, with every value divided by the scale, and
//! `acts @ W_dec + b_dec` is mpsae's reconstruction.
//!
//! Where the two encoders differ: SAELens takes a ReLU of the correlations and of each value, so
//! a step whose best signed correlation is negative picks an atom with value 0 (and, without
//! `stop_on_duplicate_support`, so does every later step of that row), where mpsae picks the
//! largest signed correlation and subtracts it. Rows whose pursuit never meets a negative best
//! correlation get the same codes from both.
//!
//! Import: a SAELens `matching_pursuit` folder becomes a model with the identity normalisation,
//! `W = W_dec`, no multiplier, `k = max_iterations` (`d_in` when unset) and, when
//! `apply_b_dec_to_input`, the mean `b_dec`.

use crate::config::SaeConfig;
use crate::io::state_dict::{read_tensors, serialize_f32};
use crate::model::{MpSae, Normalization, Preprocess, Provenance};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;

/// SAELens's configuration file.
pub const CONFIG_FILE: &str = "cfg.json";
/// SAELens's weights file.
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";

/// Whether `dir` is meant as a SAELens folder: it holds SAELens's `cfg.json` ([`import`] then
/// names whatever else is missing or wrong).
pub fn is_saelens(dir: &Path) -> bool {
    dir.is_dir() && dir.join(CONFIG_FILE).is_file()
}

/// Writes `model` as the SAELens folder `dir`. A `dir` that exists and holds anything is refused
/// unless `force`; the folder is written under a temporary name beside it and renamed into place,
/// so a failure never leaves a half-written folder (nor touches the old one).
pub fn export(model: &mut MpSae, dir: &Path, force: bool) -> Result<()> {
    crate::io::atomic::write_folder(dir, force, |tmp| write_folder(model, tmp))
}

/// Writes `cfg.json` and the weights of `model` into the folder `dir`.
fn write_folder(model: &mut MpSae, dir: &Path) -> Result<()> {
    let (c, d, k) = (model.nb_concepts(), model.input_dim(), model.config().k);
    model.eval();
    let dict = model.get_dictionary();
    let mean = model.preprocess().mean.clone().unwrap_or_else(|| vec![0.0; d]);
    let p = model.provenance().clone();
    let cfg = json!({
        "architecture": "matching_pursuit",
        "d_in": d,
        "d_sae": c,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": true,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "max_iterations": k,
        "residual_threshold": 0.0,
        "stop_on_duplicate_support": false,
        "metadata": {
            "model_name": p.model,
            "hook_name": p.hook,
            "hook_head_index": Value::Null,
            "context_size": p.context,
            "prepend_bos": p.prepend_bos,
            "exclude_special_tokens": p.exclude_first,
            "sae_lens_training_version": Value::Null,
            "mpsae_version": env!("CARGO_PKG_VERSION"),
            "mpsae_layer": p.layer,
            "mpsae_dtype": p.dtype,
            "mpsae_tokenizer": p.tokenizer,
        },
    });
    let data = serialize_f32(&[("W_dec", vec![c, d], &dict), ("b_dec", vec![d], &mean)], None)?;
    crate::io::atomic::write_atomic(&dir.join(WEIGHTS_FILE), &data)?;
    let text = serde_json::to_string_pretty(&cfg).expect("config serialises");
    crate::io::atomic::write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())
}

/// Opens a SAELens `matching_pursuit` folder as a model (see the module docs).
pub fn import(dir: &Path) -> Result<MpSae> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(&cfg_path, format!("not a SAELens config: {e}")))?;
    let arch = cfg["architecture"].as_str().unwrap_or("");
    if arch != "matching_pursuit" {
        return Err(Error::file(&cfg_path, format!("architecture '{arch}' is not matching_pursuit")));
    }
    let norm = cfg["normalize_activations"].as_str().unwrap_or("none");
    if norm != "none" {
        return Err(Error::file(
            &cfg_path,
            format!("normalize_activations '{norm}' is not supported (only none)"),
        ));
    }
    let size = |key: &str| -> Result<usize> {
        match cfg.get(key) {
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| Error::file(&cfg_path, format!("'{key}' is {v}, not a positive integer"))),
            None => Err(Error::file(&cfg_path, format!("has no '{key}'"))),
        }
    };
    let (d_in, d_sae) = (size("d_in")?, size("d_sae")?);
    let k = match cfg.get("max_iterations") {
        None | Some(Value::Null) => d_in,
        Some(v) => v.as_u64().filter(|&k| k > 0).map(|k| k as usize).ok_or_else(|| {
            Error::file(&cfg_path, format!("max_iterations {v} must be a positive integer (or null)"))
        })?,
    };
    let wpath = dir.join(WEIGHTS_FILE);
    if !wpath.is_file() {
        return Err(Error::file(
            &wpath,
            "no such file: a SAELens folder holds cfg.json and sae_weights.safetensors",
        ));
    }
    let bytes = std::fs::read(&wpath).map_err(|e| Error::io(&wpath, e))?;
    let (mut tensors, _) = read_tensors(&wpath, &bytes)?;
    let w = tensors.remove("W_dec").ok_or_else(|| Error::file(&wpath, "no 'W_dec' tensor"))?;
    if w.shape != [d_sae, d_in] {
        let hint = if w.shape == [d_in, d_sae] { " (transposed?)" } else { "" };
        return Err(Error::file(
            &wpath,
            format!(
                "'W_dec' has shape {:?}, but cfg.json says d_sae = {d_sae} and d_in = {d_in}: expected [{d_sae}, {d_in}]{hint}",
                w.shape
            ),
        ));
    }
    let (c, d) = (d_sae, d_in);
    let mut config = SaeConfig::new(d, c);
    config.k = k;
    config.normalization = Normalization::Identity;
    let mut model =
        MpSae::from_weights(config, w.data, 0.0, 0).map_err(|e| Error::file(&wpath, e.to_string()))?;
    if cfg["apply_b_dec_to_input"].as_bool().unwrap_or(true) {
        if let Some(b) = tensors.remove("b_dec") {
            if b.data.iter().any(|&v| v != 0.0) {
                let pre = Preprocess::from_state(Some((b.shape, b.data)), None, d)
                    .map_err(|e| Error::file(&wpath, e.to_string()))?;
                model.set_preprocess(pre)?;
            }
        }
    }
    let m = &cfg["metadata"];
    let s = |v: &Value| v.as_str().map(str::to_string);
    model.set_provenance(Provenance {
        model: s(&m["model_name"]),
        hook: s(&m["hook_name"]),
        layer: m["mpsae_layer"].as_u64().map(|v| v as usize),
        tokenizer: s(&m["mpsae_tokenizer"]),
        context: m["context_size"].as_u64().map(|v| v as usize),
        prepend_bos: m["prepend_bos"].as_bool(),
        exclude_first: m["exclude_special_tokens"].as_bool(),
        dtype: s(&m["mpsae_dtype"]),
    });
    Ok(model)
}
