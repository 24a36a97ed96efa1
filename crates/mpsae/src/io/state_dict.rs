//! The model as a safetensors file with overcomplete's state-dict keys.
//!
//! | key | shape | when |
//! |---|---|---|
//! | `dictionary._weights` | `[c, d]` F32 | always |
//! | `dictionary.multiplier` | `[]` F32 | always (a buffer holding 0 when not trained) |
//! | `encoder.weight` | `[c, d]` F32 | untied encoder |
//! | `encoder.bias` | `[c]` F32 | encoder with a bias |
//! | `encoder.tied_to._weights`, `encoder.tied_to.multiplier` | as the dictionary | tied encoder |
//! | `preprocess.mean` | `[d]` F32 | a model trained with centring |
//! | `preprocess.scale` | `[]` F32 | a model trained with scaling |
//!
//! so `MpSAE.load_state_dict(safetensors.torch.load_file(path))` takes a file written here, and a
//! file saved by overcomplete loads here. The rest of the configuration (k, dropout,
//! normalisation, ...) is kept as JSON in the safetensors metadata under `mpsae_config`, the
//! provenance under `mpsae_provenance`. A model without preprocessing has no `preprocess.*` keys,
//! so its file is an overcomplete state dict; files of mpsae 0.1 kept the preprocessing as JSON
//! metadata (`mpsae_preprocess`), still read.

use crate::config::{EncoderKind, SaeConfig};
use crate::io::atomic::write_atomic;
use crate::model::{MpSae, Preprocess, MEAN_KEY, PROVENANCE_KEY, SCALE_KEY};
use crate::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// Metadata key of the model configuration.
pub const CONFIG_KEY: &str = "mpsae_config";
/// Metadata key under which older files kept the preprocessing (JSON of
/// [`crate::model::Preprocess`]); read, no longer written.
pub const PREPROCESS_KEY: &str = "mpsae_preprocess";

/// One tensor read from a file, converted to f32.
#[derive(Clone, Debug)]
pub struct Tensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// The serialized bytes of a model (see the module docs), with `extra` metadata entries.
pub fn model_to_bytes(model: &MpSae, extra: &[(String, String)]) -> Result<Vec<u8>> {
    model_to_bytes_with(model, extra, &[])
}

/// [`model_to_bytes`] plus extra f32 tensors `(name, shape, values)`; their names must start with
/// `mpsae.` so that [`read_model`] can tell them from state-dict keys.
pub fn model_to_bytes_with(
    model: &MpSae,
    extra: &[(String, String)],
    tensors: &[(&str, Vec<usize>, &[f32])],
) -> Result<Vec<u8>> {
    let entries = state_dict(model);
    let mut all: Vec<(&str, Vec<usize>, &[f32])> =
        entries.iter().map(|(name, shape, v)| (name.as_str(), shape.clone(), v.as_slice())).collect();
    debug_assert!(tensors.iter().all(|(name, _, _)| name.starts_with("mpsae.")));
    all.extend(tensors.iter().cloned());
    let config = serde_json::to_string(model.config()).expect("config serialises");
    let mut meta: HashMap<String, String> = extra.iter().cloned().collect();
    meta.insert(CONFIG_KEY.into(), config);
    if !model.provenance().is_empty() {
        meta.insert(PROVENANCE_KEY.into(), serde_json::to_string(model.provenance()).expect("serialises"));
    }
    meta.insert("format".into(), "pt".into());
    serialize_f32(&all, Some(meta))
}

/// The safetensors bytes of f32 tensors `(name, shape, values)`, in order, with `meta`.
pub fn serialize_f32(
    tensors: &[(&str, Vec<usize>, &[f32])],
    meta: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (name.to_string(), TensorView::new(Dtype::F32, shape.clone(), b).expect("shape matches data"))
        })
        .collect();
    safetensors::serialize(views, &meta)
        .map_err(|e| Error::Shape(format!("cannot serialise the tensors: {e}")))
}

/// The model's state dict, `(key, shape, values)` in overcomplete's keys and order, then the
/// preprocessing's keys when it has any (see the module docs).
pub fn state_dict(model: &MpSae) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (c, d) = (model.nb_concepts(), model.input_dim());
    let (w, m) = (model.weights().to_vec(), vec![model.multiplier()]);
    let mut out = vec![("dictionary._weights".to_string(), vec![c, d], w.clone())];
    out.push(("dictionary.multiplier".to_string(), vec![], m.clone()));
    let (ew, eb) = model.encoder_parameters();
    if let Some(ew) = ew {
        out.push(("encoder.weight".into(), vec![c, d], ew.to_vec()));
    }
    if let Some(eb) = eb {
        out.push(("encoder.bias".into(), vec![c], eb.to_vec()));
    }
    if matches!(model.config().encoder, EncoderKind::Tied { .. }) {
        out.push(("encoder.tied_to._weights".into(), vec![c, d], w));
        out.push(("encoder.tied_to.multiplier".into(), vec![], m));
    }
    out.extend(model.preprocess().state_dict());
    out
}

/// Takes the preprocessing's entries out of `tensors` (identity where they are absent).
fn take_preprocess(tensors: &mut HashMap<String, Tensor>, d: usize) -> Result<Preprocess> {
    let mean = tensors.remove(MEAN_KEY).map(|t| (t.shape, t.data));
    let scale = tensors.remove(SCALE_KEY).map(|t| (t.shape, t.data));
    Preprocess::from_state(mean, scale, d)
}

/// Loads a state dict (overcomplete's keys, as [`state_dict`] gives them) into `model`, strictly:
/// every key of the model must be there with its shape, and no other key. The preprocessing keys
/// are optional: the state dict's preprocessing replaces the model's (none: the identity).
pub fn load_state_dict(model: &mut MpSae, mut tensors: HashMap<String, Tensor>) -> Result<()> {
    let preprocess = take_preprocess(&mut tensors, model.input_dim())
        .map_err(|e| Error::invalid("state dict", e.to_string()))?;
    let want: Vec<_> =
        state_dict(model).into_iter().filter(|(k, _, _)| k != MEAN_KEY && k != SCALE_KEY).collect();
    for (name, shape, _) in &want {
        match tensors.get(name) {
            None => return Err(Error::invalid("state dict", format!("missing key '{name}'"))),
            Some(t) if &t.shape != shape && !(shape.is_empty() && t.data.len() == 1) => {
                return Err(Error::invalid(
                    "state dict",
                    format!("'{name}' has shape {:?}, the model expects {shape:?}", t.shape),
                ))
            }
            _ => {}
        }
    }
    if let Some(extra) = tensors.keys().find(|k| !want.iter().any(|(n, _, _)| n == *k)) {
        return Err(Error::invalid("state dict", format!("unexpected key '{extra}'")));
    }
    let w = tensors.remove("dictionary._weights").unwrap().data;
    let m = tensors.remove("dictionary.multiplier").unwrap().data[0];
    if !m.is_finite() || w.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("state dict", "the weights contain NaN or infinite values"));
    }
    model.set_parameters(w, m)?;
    let ew = tensors.remove("encoder.weight").map(|t| t.data);
    let eb = tensors.remove("encoder.bias").map(|t| t.data);
    model.set_encoder_parameters(ew, eb)?;
    model.set_preprocess(preprocess)
}

/// Saves the model (atomically) with overcomplete's state-dict keys.
pub fn save_model(model: &MpSae, path: &Path, extra: &[(String, String)]) -> Result<()> {
    write_atomic(path, &model_to_bytes(model, extra)?)
}

/// Reads every tensor and the metadata of a safetensors file (f32, f16, bf16 or f64 tensors are
/// converted to f32; other dtypes are reported).
pub fn read_tensors(path: &Path, bytes: &[u8]) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file ({e})")))?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file ({e})")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = crate::data::convert::to_f32(view.dtype(), view.data())
            .map_err(|msg| Error::file(path, format!("tensor '{name}': {msg}")))?;
        out.insert(name, Tensor { shape: view.shape().to_vec(), data });
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Loads a model file. The configuration comes from the file's metadata when mpsae wrote it;
/// for a plain overcomplete state dict, pass `config` (its shapes must match), or the shapes give
/// `d` and `c` with the reference's defaults (`k = 1`, `l2`, no dropout, multiplier trained if
/// non-zero). Also returns the file's metadata.
pub fn read_model(path: &Path, config: Option<SaeConfig>) -> Result<(MpSae, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    model_from_bytes(path, &bytes, config)
}

/// [`read_model`] on the bytes of a file (`path` names it in errors).
pub fn model_from_bytes(
    path: &Path,
    bytes: &[u8],
    config: Option<SaeConfig>,
) -> Result<(MpSae, HashMap<String, String>)> {
    let (mut tensors, meta) = read_tensors(path, bytes)?;
    let w = tensors
        .remove("dictionary._weights")
        .ok_or_else(|| Error::file(path, "no 'dictionary._weights' tensor: not an MP-SAE state dict"))?;
    if w.shape.len() != 2 || w.shape[0] == 0 || w.shape[1] == 0 {
        return Err(Error::file(
            path,
            format!("'dictionary._weights' has shape {:?}, expected [c, d]", w.shape),
        ));
    }
    let (c, d) = (w.shape[0], w.shape[1]);
    let m = match tensors.remove("dictionary.multiplier") {
        Some(t) if t.data.len() == 1 && t.shape.is_empty() => t.data[0],
        Some(t) => {
            return Err(Error::file(
                path,
                format!("'dictionary.multiplier' has shape {:?}, expected []", t.shape),
            ))
        }
        None => {
            return Err(Error::file(path, "no 'dictionary.multiplier' tensor (a state dict always has it)"))
        }
    };
    let encoder_weight = tensors.remove("encoder.weight");
    let encoder_bias = tensors.remove("encoder.bias");
    let tied = tensors.remove("encoder.tied_to._weights").is_some();
    tensors.remove("encoder.tied_to.multiplier");
    let mut cfg = match (meta.get(CONFIG_KEY), config) {
        (_, Some(cfg)) => cfg,
        (Some(json), None) => serde_json::from_str::<SaeConfig>(json)
            .map_err(|e| Error::file(path, format!("bad '{CONFIG_KEY}' metadata: {e}")))?,
        (None, None) => {
            let mut cfg = SaeConfig::new(d, c);
            cfg.use_multiplier = m != 0.0;
            cfg
        }
    };
    if !meta.contains_key(CONFIG_KEY) {
        cfg.encoder = match (tied, &encoder_weight, &encoder_bias) {
            (true, _, b) => EncoderKind::Tied { bias: b.is_some() },
            (false, Some(_), b) => EncoderKind::Untied { bias: b.is_some() },
            _ => EncoderKind::Identity,
        };
    }
    if cfg.input_dim != d || cfg.nb_concepts != c {
        return Err(Error::file(
            path,
            format!(
                "dictionary is {c} x {d} but the configuration says {} x {}",
                cfg.nb_concepts, cfg.input_dim
            ),
        ));
    }
    let mut model = MpSae::from_weights(cfg, w.data, m, 0).map_err(|e| Error::file(path, e.to_string()))?;
    let check = |t: &Option<Tensor>, shape: &[usize], name: &str| -> Result<()> {
        match t {
            Some(t) if t.shape != shape => {
                Err(Error::file(path, format!("'{name}' has shape {:?}, expected {shape:?}", t.shape)))
            }
            _ => Ok(()),
        }
    };
    check(&encoder_weight, &[c, d], "encoder.weight")?;
    check(&encoder_bias, &[c], "encoder.bias")?;
    model
        .set_encoder_parameters(encoder_weight.map(|t| t.data), encoder_bias.map(|t| t.data))
        .map_err(|e| Error::file(path, e.to_string()))?;
    let mut preprocess = take_preprocess(&mut tensors, d).map_err(|e| Error::file(path, e.to_string()))?;
    if preprocess.is_identity() {
        if let Some(json) = meta.get(PREPROCESS_KEY) {
            preprocess = serde_json::from_str(json)
                .map_err(|e| Error::file(path, format!("bad '{PREPROCESS_KEY}' metadata: {e}")))?;
        }
    }
    model.set_preprocess(preprocess).map_err(|e| Error::file(path, e.to_string()))?;
    if let Some(json) = meta.get(PROVENANCE_KEY) {
        let p = serde_json::from_str(json)
            .map_err(|e| Error::file(path, format!("bad '{PROVENANCE_KEY}' metadata: {e}")))?;
        model.set_provenance(p);
    }
    if let Some(name) = tensors.keys().find(|k| !k.starts_with("mpsae.")) {
        return Err(Error::file(path, format!("unexpected tensor '{name}' in an MP-SAE state dict")));
    }
    Ok((model, meta))
}
