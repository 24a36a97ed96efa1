//! The resume policy, for every front end: what a caller may change when it continues a run.
//!
//! Model options (concepts, k, dropout, normalisation, multiplier, centring, scaling, seed) never
//! change: a resumed run keeps its model. Training options that differ from the run's are refused,
//! naming each, unless changes are allowed; then they apply. Other data is refused unless data
//! changes are allowed (the width must still match). The CLI (`--resume`, `--allow-changes`,
//! `--allow-data-change`) and Python (`resume=True`, `allow_changes=`, `allow_data_change=`) call
//! [`ResumeRequest::apply`].

use crate::data::Dataset;
use crate::run::options::{Group, OPTIONS};
use crate::run::{RunConfig, RunOptions};
use crate::train::Trainer;
use crate::{Error, Result};
use serde_json::Value;

/// How option names are spelt in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    /// `--batch-size 8`.
    Cli,
    /// `batch_size=8`.
    Python,
}

impl Spelling {
    /// `name` set to `value` as this front end spells it (`--batch-size 8`, `--no-shuffle`,
    /// `batch_size=8`, `shuffle=False`).
    pub fn option(self, name: &str, value: &str) -> String {
        let spec = crate::run::options::spec(name);
        let switch = spec.is_some_and(|s| s.kind == crate::run::options::Kind::Switch);
        match (self, switch, value) {
            (Spelling::Cli, true, "true") => format!("--{}", name.replace('_', "-")),
            (Spelling::Cli, true, _) => format!("--no-{}", name.replace('_', "-")),
            (Spelling::Cli, false, _) => format!("--{} {value}", name.replace('_', "-")),
            (Spelling::Python, true, v) => format!("{name}={}", if v == "true" { "True" } else { "False" }),
            (Spelling::Python, false, _) => format!("{name}={value}"),
        }
    }

    fn allow_changes(self) -> &'static str {
        match self {
            Spelling::Cli => "--allow-changes",
            Spelling::Python => "allow_changes=True",
        }
    }

    pub(crate) fn allow_data_change(self) -> &'static str {
        match self {
            Spelling::Cli => "--allow-data-change",
            Spelling::Python => "allow_data_change=True",
        }
    }

    fn start_over(self) -> &'static str {
        match self {
            Spelling::Cli => "--force",
            Spelling::Python => "force=True",
        }
    }
}

/// What a caller asks of a run it resumes.
#[derive(Clone, Debug)]
pub struct ResumeRequest {
    /// The options as the caller would start a new run (the defaults where it gave none).
    pub options: RunOptions,
    /// The names of the options the caller gave (rows of [`crate::run::OPTIONS`]): only these
    /// are compared with the run's.
    pub given: Vec<String>,
    /// Apply training options that differ from the run's.
    pub allow_changes: bool,
    /// Continue on data other than the run's.
    pub allow_data_change: bool,
    /// How messages spell option names.
    pub spelling: Spelling,
}

/// A value as a user typed it: `64`, `0.5`, `revive`, `none`.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "none".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl ResumeRequest {
    /// Checks `data` and the options given against the run (`config`, `trainer` restored from its
    /// checkpoint) and applies the allowed changes to `trainer`. Returns notes to show (the
    /// changes applied).
    pub fn apply(&self, config: &RunConfig, data: &Dataset, trainer: &mut Trainer) -> Result<Vec<String>> {
        let sp = self.spelling;
        if !self.allow_data_change {
            config.check_data_with_hint(data, sp.allow_data_change())?;
        } else if data.dim() != config.model.input_dim {
            return Err(Error::invalid(
                "data",
                format!(
                    "rows have dimension {}, the run's model expects {}",
                    data.dim(),
                    config.model.input_dim
                ),
            ));
        }
        self.apply_options(config, trainer)
    }

    /// The options half of [`ResumeRequest::apply`] (a run fed by a stream checks its stream
    /// instead of data files): model options never change; training options that differ are
    /// refused unless changes are allowed, then applied to `trainer`.
    pub fn apply_options(&self, config: &RunConfig, trainer: &mut Trainer) -> Result<Vec<String>> {
        let sp = self.spelling;
        let run = RunOptions::of_run(config, &trainer.options).to_map();
        let asked = self.options.to_map();
        let mut merged = run.clone();
        let mut differs = Vec::new();
        for spec in OPTIONS.iter().filter(|s| self.given.iter().any(|g| g == s.name)) {
            let (new, old) = (&asked[spec.name], &run[spec.name]);
            if new == old {
                continue;
            }
            if spec.group == Group::Model {
                return Err(Error::invalid(
                    "resume",
                    format!(
                        "{} differs from the run's {}: a resumed run keeps its model and seed (start a new one with {})",
                        sp.option(spec.name, &shown(new)),
                        shown(old),
                        sp.start_over()
                    ),
                ));
            }
            differs.push(format!("{} (the run's: {})", sp.option(spec.name, &shown(new)), shown(old)));
            merged.insert(spec.name.to_string(), new.clone());
        }
        let changed = RunOptions::with_given(&merged)?.train_options()?;
        if differs.is_empty() || changed == trainer.options {
            return Ok(Vec::new());
        }
        if !self.allow_changes {
            return Err(Error::invalid(
                "resume",
                format!(
                    "{} differ{} from the run's options (resume with {} to apply {})",
                    differs.join(", "),
                    if differs.len() == 1 { "s" } else { "" },
                    sp.allow_changes(),
                    if differs.len() == 1 { "it" } else { "them" }
                ),
            ));
        }
        trainer.adam.params = changed.adam();
        trainer.options = changed;
        Ok(vec![format!("resuming with {}", differs.join(", "))])
    }
}
