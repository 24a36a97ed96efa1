//! Checkpoints: model (with its preprocessing), optimiser state, progress, schedule, RNG state in one
//! safetensors file, written atomically so that a killed run never leaves half a file.

use crate::io::atomic::write_atomic;
use crate::io::state_dict::{model_from_bytes, model_to_bytes_with, read_tensors};
use crate::train::{Progress, TrainOptions, Trainer};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of the checkpoint in a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

const STATE_KEY: &str = "mpsae_train_state";

#[derive(Serialize, Deserialize)]
struct TrainState {
    options: TrainOptions,
    progress: Progress,
    adam_step: u64,
    adam_multiplier: (f32, f32),
    rng_seed: Vec<u8>,
    rng_word_pos: String,
}

/// Writes the trainer's whole state to `path`, atomically.
pub fn save(trainer: &Trainer, path: &Path) -> Result<()> {
    let (seed, pos) = trainer.model.rng_state();
    let state = TrainState {
        options: trainer.options.clone(),
        progress: trainer.progress.clone(),
        adam_step: trainer.adam.step,
        adam_multiplier: (trainer.adam.multiplier_exp_avg, trainer.adam.multiplier_exp_avg_sq),
        rng_seed: seed.to_vec(),
        rng_word_pos: pos.to_string(),
    };
    let meta = vec![(STATE_KEY.to_string(), serde_json::to_string(&state).expect("state serialises"))];
    let shape = vec![trainer.model.nb_concepts(), trainer.model.input_dim()];
    let bytes = model_to_bytes_with(
        &trainer.model,
        &meta,
        &[
            ("mpsae.adam.exp_avg", shape.clone(), &trainer.adam.exp_avg),
            ("mpsae.adam.exp_avg_sq", shape, &trainer.adam.exp_avg_sq),
        ],
    )?;
    write_atomic(path, &bytes)
}

/// Restores a trainer from a checkpoint written by [`save`].
pub fn load(path: &Path) -> Result<Trainer> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(path, &bytes)
}

/// [`load`] on the bytes of a file (`path` names it in errors).
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Trainer> {
    let (model, meta) = model_from_bytes(path, bytes, None)?;
    let bad = |m: String| Error::file(path, m);
    let state: TrainState = serde_json::from_str(
        meta.get(STATE_KEY)
            .ok_or_else(|| bad("not a checkpoint (no training state in its metadata)".into()))?,
    )
    .map_err(|e| bad(format!("bad training state: {e}")))?;
    let (mut tensors, _) = read_tensors(path, bytes)?;
    let mut take = |name: &str| -> Result<Vec<f32>> {
        let t = tensors.remove(name).ok_or_else(|| bad(format!("no '{name}' tensor")))?;
        if t.data.len() != model.weights().len() {
            return Err(bad(format!("'{name}' does not match the dictionary's shape")));
        }
        Ok(t.data)
    };
    let exp_avg = take("mpsae.adam.exp_avg")?;
    let exp_avg_sq = take("mpsae.adam.exp_avg_sq")?;
    let seed: [u8; 32] = state.rng_seed.as_slice().try_into().map_err(|_| bad("bad RNG seed".into()))?;
    let pos: u128 = state.rng_word_pos.parse().map_err(|_| bad("bad RNG position".into()))?;
    if state.progress.acc.alive.len() != model.nb_concepts() {
        return Err(bad("training state does not match the dictionary's shape".into()));
    }
    state.options.validate().map_err(|e| bad(e.to_string()))?;
    let mut trainer = Trainer::new(model, state.options)?;
    trainer.model.set_rng_state(seed, pos);
    trainer.progress = state.progress;
    trainer.adam.step = state.adam_step;
    trainer.adam.exp_avg = exp_avg;
    trainer.adam.exp_avg_sq = exp_avg_sq;
    (trainer.adam.multiplier_exp_avg, trainer.adam.multiplier_exp_avg_sq) = state.adam_multiplier;
    Ok(trainer)
}
