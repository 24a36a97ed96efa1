//! What each concept does to the model's next-token prediction: the tokens its atom promotes and
//! suppresses through the unembedding (`W_dec · W_U`, as SAEDashboard shows them). Computed in
//! Python where the model is (`mpsae.logit_lens`, written as `logit_lens.json` beside the run's
//! model), shown on each concept page by the browser.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file in a run folder.
pub const LOGIT_LENS_FILE: &str = "logit_lens.json";

/// Each concept's most promoted and most suppressed tokens, `(token, logit)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogitLens {
    /// The model whose unembedding was used.
    #[serde(default)]
    pub model: Option<String>,
    /// Whether the tokens are decoded text (`" the"`); older files hold tokenizer pieces, decoded
    /// when read.
    #[serde(default)]
    pub decoded: bool,
    /// Per concept, the tokens with the largest `D_j · W_U`, largest first.
    pub promoted: Vec<Vec<(String, f32)>>,
    /// Per concept, the tokens with the smallest `D_j · W_U`, smallest first.
    pub suppressed: Vec<Vec<(String, f32)>>,
}

impl LogitLens {
    /// Reads `logit_lens.json` of a run folder, if it has one, checked against `c` concepts.
    pub fn read(run: &Path, c: usize) -> Result<Option<LogitLens>> {
        let path = run.join(LOGIT_LENS_FILE);
        if !run.is_dir() || !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut lens: LogitLens = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("not a logit lens file: {e}")))?;
        if !lens.decoded {
            let bpe = lens
                .promoted
                .iter()
                .chain(&lens.suppressed)
                .flatten()
                .any(|(t, _)| t.contains(['\u{120}', '\u{2581}', '\u{10A}']));
            if bpe {
                for (t, _) in lens.promoted.iter_mut().chain(lens.suppressed.iter_mut()).flatten() {
                    *t = super::tokens::decode_piece(t, false);
                }
            }
            lens.decoded = true;
        }
        if lens.promoted.len() != c || lens.suppressed.len() != c {
            return Err(Error::file(
                &path,
                format!("describes {} concepts, the model has {c}", lens.promoted.len()),
            ));
        }
        Ok(Some(lens))
    }
}
