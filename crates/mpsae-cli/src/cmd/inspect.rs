//! `mpsae inspect`.

use crate::common::{msg, open_data, CliResult};
use mpsae::io::state_dict::{read_tensors, CONFIG_KEY, PREPROCESS_KEY};
use mpsae::model::{MEAN_KEY, PROVENANCE_KEY, SCALE_KEY};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Arguments of `mpsae inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// A model or checkpoint (.safetensors), a run folder, or a data file (.npy, .safetensors).
    file: PathBuf,
    /// Tensor to read rows from, for .safetensors data.
    #[arg(long)]
    tensor: Option<String>,
}

fn stats(v: &[f32]) -> Value {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let min = v.iter().copied().fold(f32::INFINITY, f32::min);
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let nonfinite = v.iter().filter(|x| !x.is_finite()).count();
    json!({"mean": mean, "std": var.sqrt(), "min": min, "max": max, "nonfinite": nonfinite})
}

/// A harvest folder: its provenance, rows, width, shards (each checked to exist) and whether it
/// ran to its end.
fn harvest_folder(dir: &std::path::Path) -> CliResult<()> {
    let info = mpsae::data::harvest::read(dir).map_err(msg)?;
    let missing: Vec<&String> = info.shards.iter().filter(|s| !dir.join(s).is_file()).collect();
    let out = json!({
        "folder": dir.display().to_string(),
        "kind": "harvest",
        "provenance": info.provenance,
        "rows": info.rows,
        "d": info.d,
        "shards": info.shards.len(),
        "first_shard": info.shards.first(),
        "last_shard": info.shards.last(),
        "complete": info.complete,
        "tokens": dir.join(mpsae::data::harvest::TOKENS_FILE).is_file(),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    if let Some(m) = missing.first() {
        return Err(format!("{}: harvest.json lists {m}, which is missing", dir.display()));
    }
    Ok(())
}

/// Runs `mpsae inspect`. A model or checkpoint is checked as every loader checks it; a problem is
/// shown in the listing and ends the command with one line and a non-zero exit.
pub fn run(a: InspectArgs) -> CliResult<()> {
    let mut path = a.file.clone();
    let mut run_config = None;
    if mpsae::data::harvest::is_harvest(&path) {
        return harvest_folder(&path);
    }
    if path.is_dir() {
        if let Ok(text) = std::fs::read_to_string(path.join("config.json")) {
            run_config = serde_json::from_str::<Value>(&text).ok();
        }
        path = path.join("model.safetensors");
    }
    if !path.exists() {
        return Err(format!("{}: no such file", path.display()));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let out = if ext == "safetensors" {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| format!("{}: not a valid safetensors file ({e})", path.display()))?;
        let mut listing: Vec<Value> = st
            .tensors()
            .iter()
            .map(|(name, v)| json!({"name": name, "dtype": format!("{:?}", v.dtype()), "shape": v.shape()}))
            .collect();
        listing.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let (tensors, meta) = read_tensors(&path, &bytes).map_err(msg)?;
        let mut out = json!({"file": path.display().to_string(), "tensors": listing});
        if tensors.contains_key("dictionary._weights") {
            // The library's checks of every tensor (shapes, finiteness, scale > 0).
            let checked = if meta.contains_key("mpsae_train_state") {
                mpsae::train::checkpoint::load(&path).map(|_| ())
            } else {
                mpsae::io::state_dict::read_model(&path, None).map(|_| ())
            };
            if let Err(e) = checked {
                out["problem"] = json!(e.to_string());
            }
        }
        if let Some(w) = tensors.get("dictionary._weights") {
            let d = w.shape.get(1).copied().unwrap_or(1).max(1);
            let norms: Vec<f32> =
                w.data.chunks(d).map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt()).collect();
            out["kind"] = json!(if meta.contains_key("mpsae_train_state") { "checkpoint" } else { "model" });
            out["concepts"] = json!(w.shape[0]);
            out["input_dim"] = json!(d);
            out["multiplier"] = json!(tensors.get("dictionary.multiplier").map(|m| m.data[0]));
            out["atom_norms"] = stats(&norms);
            out["weights"] = stats(&w.data);
            if let Some(cfg) = meta.get(CONFIG_KEY) {
                out["config"] = serde_json::from_str(cfg).unwrap_or(Value::Null);
            }
            let scale = tensors.get(SCALE_KEY).map(|t| t.data[0]);
            if tensors.contains_key(MEAN_KEY) || scale.is_some() {
                out["preprocess"] = json!({"center": tensors.contains_key(MEAN_KEY), "scale": scale});
            } else if let Some(p) =
                meta.get(PREPROCESS_KEY).and_then(|p| serde_json::from_str::<Value>(p).ok())
            {
                out["preprocess"] = json!({"center": !p["mean"].is_null(), "scale": p["scale"]});
            }
            out["provenance"] =
                meta.get(PROVENANCE_KEY).and_then(|p| serde_json::from_str(p).ok()).unwrap_or(json!({}));
            if let Some(s) = meta.get("mpsae_train_state").and_then(|s| serde_json::from_str::<Value>(s).ok())
            {
                out["progress"] = json!({"step": s["progress"]["step"], "epoch": s["progress"]["epoch"]});
                out["train"] = s["options"].clone();
            }
        } else {
            let data = open_data(std::slice::from_ref(&path), a.tensor.as_deref(), true, false);
            if let Ok(data) = data {
                out["kind"] = json!("data");
                out["data"] = data_stats(&data);
            } else {
                out["kind"] = json!("tensors");
                out["stats"] = tensors.iter().map(|(k, t)| (k.clone(), stats(&t.data))).collect();
            }
            let meta: serde_json::Map<String, Value> =
                meta.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            out["metadata"] = Value::Object(meta);
        }
        out
    } else {
        let data = open_data(std::slice::from_ref(&path), a.tensor.as_deref(), true, false)?;
        let src = &data.sources()[0];
        json!({"file": path.display().to_string(), "kind": "data", "dtype": format!("{:?}", src.elem),
               "shape": [src.rows, src.d], "data": data_stats(&data)})
    };
    let mut out = out;
    if let Some(c) = run_config {
        out["run"] = c;
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    match out.get("problem").and_then(Value::as_str) {
        Some(problem) => Err(problem.to_string()),
        None => Ok(()),
    }
}

fn data_stats(data: &mpsae::data::Dataset) -> Value {
    let s = data.stats();
    let mean_norm = s.mean.iter().map(|m| m * m).sum::<f64>().sqrt();
    json!({
        "rows": s.rows,
        "d": data.dim(),
        "nonfinite_rows": s.skipped,
        "mean_row_norm": s.mean_norm,
        "rms_row_norm": s.mean_sq_norm.sqrt(),
        "norm_of_mean_vector": mean_norm,
    })
}
