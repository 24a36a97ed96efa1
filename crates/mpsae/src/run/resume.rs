//! The resume policy, for every front end: what a caller may change when it continues a run.
//!
//! Model options (concepts, k, dropout, normalisation, multiplier, centring, scaling, seed) never
//! change: a resumed run keeps its model. Training options that differ from the run's are refused,
//! naming each, unless changes are allowed; then they apply. Other data is refused unless data
//! changes are allowed (the width must still match). The CLI (`--resume`, `--allow-changes`,
//! `--allow-data-change`) and Python (`resume=True`, `allow_changes=`, `allow_data_change=`) call
//! [`ResumeRequest::apply`].

use crate::data::Dataset;
use crate::run::{RunConfig, RunRecipe};
use crate::train::Trainer;
use crate::{Error, Result};

/// How option names are spelt in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    /// `--batch-size 8`.
    Cli,
    /// `batch_size=8`.
    Python,
}

impl Spelling {
    fn option(self, name: &str, value: &str) -> String {
        match self {
            Spelling::Cli => format!("--{} {value}", name.replace('_', "-")),
            Spelling::Python => format!("{name}={value}"),
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
    /// The options as the caller would start a new run (its defaults where it gave none).
    pub recipe: RunRecipe,
    /// The names of the options the caller gave: `concepts`, `k`, `dropout`, `normalization`,
    /// `multiplier`, `center`, `scale`, `seed`, and the training options `epochs`, `steps`,
    /// `batch_size`, `lr`, `beta1`, `beta2`, `eps`, `clip`, `shuffle`, `criterion`,
    /// `detailed_stats`, `max_bad_steps`, `checkpoint_every`, `gradient_shards`, `schedule`.
    pub given: Vec<String>,
    /// Apply training options that differ from the run's.
    pub allow_changes: bool,
    /// Continue on data other than the run's.
    pub allow_data_change: bool,
    /// How messages spell option names.
    pub spelling: Spelling,
}

impl ResumeRequest {
    fn given(&self, name: &str) -> bool {
        self.given.iter().any(|g| g == name)
    }

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
        let (r, m) = (&self.recipe, &config.model);
        let model_options: [(&str, &str, String, String); 8] = [
            ("concepts", "nb_concepts", r.concepts.to_string(), m.nb_concepts.to_string()),
            ("k", "k", r.k.to_string(), m.k.to_string()),
            ("dropout", "dropout", format!("{:?}", r.dropout), format!("{:?}", m.dropout)),
            ("normalization", "normalization", r.normalization.name(), m.normalization.name()),
            ("multiplier", "use_multiplier", r.use_multiplier.to_string(), m.use_multiplier.to_string()),
            ("center", "center", r.preprocess.center.to_string(), config.preprocess.center.to_string()),
            ("scale", "scale", r.preprocess.scale.to_string(), config.preprocess.scale.to_string()),
            ("seed", "seed", r.seed.to_string(), config.train.seed.to_string()),
        ];
        for (name, py_name, new, old) in model_options {
            if self.given(name) && new != old {
                let shown = if sp == Spelling::Python { py_name } else { name };
                return Err(Error::invalid(
                    "resume",
                    format!(
                        "{} differs from the run's {old}: a resumed run keeps its model and seed (start a new one with {})",
                        sp.option(shown, &new),
                        sp.start_over()
                    ),
                ));
            }
        }
        let new = &r.options;
        let old = trainer.options.clone();
        let mut changed = old.clone();
        let mut differs = Vec::new();
        macro_rules! field {
            ($name:literal, $($f:ident).+) => {
                if self.given($name) && format!("{:?}", new.$($f).+) != format!("{:?}", old.$($f).+) {
                    differs.push(format!("{} (the run's: {:?})", sp.option($name, &format!("{:?}", new.$($f).+)), old.$($f).+));
                    changed.$($f).+ = new.$($f).+.clone();
                }
            };
        }
        field!("epochs", epochs);
        field!("steps", steps);
        field!("batch_size", batch_size);
        field!("lr", lr);
        field!("beta1", beta1);
        field!("beta2", beta2);
        field!("eps", eps);
        field!("clip", clip_grad);
        field!("shuffle", shuffle);
        field!("criterion", criterion);
        field!("detailed_stats", detailed_stats);
        field!("max_bad_steps", max_bad_steps);
        field!("checkpoint_every", checkpoint_every);
        field!("gradient_shards", gradient_shards);
        if self.given("schedule") && new.schedule != old.schedule {
            differs.push(format!("the schedule {:?} (the run's: {:?})", new.schedule, old.schedule));
            changed.schedule = new.schedule;
        }
        if differs.is_empty() {
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
        changed.validate()?;
        trainer.adam.params = changed.adam();
        trainer.options = changed;
        Ok(vec![format!("resuming with {}", differs.join(", "))])
    }
}
