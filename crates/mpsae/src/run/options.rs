//! The options of a training run, defined once: [`OPTIONS`] is the table (name, group, kind,
//! default, help) that the CLI's flags (`mpsae train --lr`), the Python keywords
//! (`mpsae.train(lr=...)`, `mpsae.defaults()`) and the resume policy all read, and
//! [`RunOptions`] holds one value per row, under the same names.
//!
//! A name is the Python keyword, the field of [`RunOptions`] and, with dashes, the CLI's flag
//! (`batch_size`, `--batch-size`); a boolean whose default is true is turned off on the command
//! line by `--no-NAME` (`--no-shuffle`).

use crate::config::SaeConfig;
use crate::data::Dataset;
use crate::defaults as d;
use crate::model::MpSae;
use crate::model::{Normalization, Provenance};
use crate::run::{describe_data, preprocess_for, PreprocessChoice, RunConfig};
use crate::train::Trainer;
use crate::train::{CriterionChoice, ScheduleOptions, TrainOptions};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What an option changes: the model (fixed once a run starts) or how it is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// The model and its preprocessing (never changed by a resume).
    Model,
    /// The optimiser, batches, schedule and criterion (changed on resume only when allowed).
    Training,
}

/// The type of an option's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A non-negative integer.
    Integer,
    /// A number.
    Number,
    /// A boolean (a switch on the command line).
    Switch,
    /// A name among a few.
    Name,
    /// An integer, or none.
    OptionalInteger,
    /// A number, or none.
    OptionalNumber,
}

/// One row of the table.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct OptionSpec {
    /// The Python keyword and [`RunOptions`] field; the CLI's flag with dashes.
    pub name: &'static str,
    /// Model or training option.
    pub group: Group,
    /// Its type.
    pub kind: Kind,
    /// Its default.
    pub default: DefaultValue,
    /// One line of help (the CLI's `--help`, the Python docstrings).
    pub help: &'static str,
    /// The CLI's one-letter flag, if any.
    pub short: Option<char>,
    /// An older CLI spelling still accepted.
    pub alias: Option<&'static str>,
}

impl OptionSpec {
    /// The CLI's long flag, without the leading dashes: the name with dashes, `no-NAME` for a
    /// switch that is on by default.
    pub fn flag(&self) -> String {
        let dashed = self.name.replace('_', "-");
        if matches!(self.default, DefaultValue::Bool(true)) {
            format!("no-{dashed}")
        } else {
            dashed
        }
    }

    /// The default as a JSON value.
    pub fn default_value(&self) -> Value {
        match self.default {
            DefaultValue::None => Value::Null,
            DefaultValue::Int(v) => Value::from(v),
            DefaultValue::Num(v) => Value::from(v),
            DefaultValue::Num32(v) => serde_json::to_value(v).expect("finite"),
            DefaultValue::Bool(v) => Value::from(v),
            DefaultValue::Name(v) => Value::from(v),
        }
    }
}

/// An option's default value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DefaultValue {
    /// None (an optional option left out).
    None,
    /// An integer.
    Int(u64),
    /// A number (f64).
    Num(f64),
    /// A number kept as f32.
    Num32(f32),
    /// A boolean.
    Bool(bool),
    /// A name.
    Name(&'static str),
}

macro_rules! spec {
    ($name:literal, $group:ident, $kind:ident, $default:expr, $help:literal) => {
        spec!($name, $group, $kind, $default, $help, None, None)
    };
    ($name:literal, $group:ident, $kind:ident, $default:expr, $help:literal, $short:expr, $alias:expr) => {
        OptionSpec {
            name: $name,
            group: Group::$group,
            kind: Kind::$kind,
            default: $default,
            help: $help,
            short: $short,
            alias: $alias,
        }
    };
}

/// Every option of a training run, in the order `--help` lists them. The defaults are the
/// constants of [`crate::defaults`] (a test checks that each equals [`RunOptions::default`]).
pub const OPTIONS: &[OptionSpec] = &[
    spec!("nb_concepts", Model, Integer, DefaultValue::Int(d::CONCEPTS as u64), "Number of concepts (dictionary atoms).", Some('c'), Some("concepts")),
    spec!("k", Model, Integer, DefaultValue::Int(d::K as u64), "Matching pursuit steps per row.", Some('k'), None),
    spec!("dropout", Model, OptionalNumber, DefaultValue::None, "Dropout probability over atoms while training, in [0, 1)."),
    spec!("normalization", Model, Name, DefaultValue::Name(d::NORMALIZATION), "Dictionary normalisation: l2, max_l2, l1, max_l1, identity."),
    spec!("use_multiplier", Model, Switch, DefaultValue::Bool(false), "Train the multiplier (atoms scaled by exp(m)).", None, Some("multiplier")),
    spec!("center", Model, Switch, DefaultValue::Bool(false), "Subtract the data mean (estimated from the data; saved with the model)."),
    spec!("scale", Model, Switch, DefaultValue::Bool(false), "Scale rows so that their root-mean-square norm is sqrt(d) (saved with the model)."),
    spec!("seed", Model, Integer, DefaultValue::Int(d::SEED), "Seed of the initialisation, the data order and the dropout masks."),
    spec!("epochs", Training, Integer, DefaultValue::Int(d::EPOCHS as u64), "Epochs over the data."),
    spec!("steps", Training, OptionalInteger, DefaultValue::None, "A step budget instead of epochs."),
    spec!("batch_size", Training, Integer, DefaultValue::Int(d::BATCH_SIZE as u64), "Rows per batch."),
    spec!("lr", Training, Number, DefaultValue::Num(d::LR), "Learning rate (Adam)."),
    spec!("beta1", Training, Number, DefaultValue::Num(d::BETA1), "Adam beta1."),
    spec!("beta2", Training, Number, DefaultValue::Num(d::BETA2), "Adam beta2."),
    spec!("eps", Training, Number, DefaultValue::Num(d::EPS), "Adam epsilon."),
    spec!("clip", Training, Number, DefaultValue::Num(d::CLIP), "Global gradient-norm clipping (0 turns it off)."),
    spec!("warmup", Training, OptionalInteger, DefaultValue::None, "Warmup steps of the cosine schedule (giving any schedule option turns it on)."),
    spec!("final_lr", Training, OptionalNumber, DefaultValue::None, "Final learning rate of the cosine schedule."),
    spec!("start_warmup_lr", Training, OptionalNumber, DefaultValue::None, "Learning rate at the start of the warmup."),
    spec!("shuffle", Training, Switch, DefaultValue::Bool(true), "Shuffle the rows each epoch (seeded); --no-shuffle keeps the data order."),
    spec!("criterion", Training, Name, DefaultValue::Name(d::CRITERION), "Criterion: mse, or revive (MSE plus the MpSAE docs' auxiliary term for dead codes)."),
    spec!("revive_threshold", Training, Number, DefaultValue::Num32(d::REVIVE_THRESHOLD), "Revive: codes whose batch maximum is below this are dead."),
    spec!("revive_min_dead", Training, Integer, DefaultValue::Int(d::REVIVE_MIN_DEAD as u64), "Revive: the term applies when more than this many codes are dead."),
    spec!("revive_coef", Training, Number, DefaultValue::Num(d::REVIVE_COEF), "Revive: weight of the term."),
    spec!("detailed_stats", Training, Switch, DefaultValue::Bool(false), "Also report code norm, dictionary norms and gradient norms per epoch."),
    spec!("max_bad_steps", Training, Integer, DefaultValue::Int(d::MAX_BAD_STEPS as u64), "Stop after this many non-finite steps in a row."),
    spec!("checkpoint_every", Training, Integer, DefaultValue::Int(d::CHECKPOINT_EVERY), "Write a checkpoint every this many steps (0: only at the end)."),
    spec!("gradient_shards", Training, Integer, DefaultValue::Int(d::GRADIENT_SHARDS as u64), "Micro-shards of each batch's gradient (a power of two): the model depends on this count, never on threads or processes."),
];

/// The row of `name`, if it is an option.
pub fn spec(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|s| s.name == name)
}

/// One value for every row of [`OPTIONS`], under its name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented by its row of OPTIONS
pub struct RunOptions {
    pub nb_concepts: usize,
    pub k: usize,
    pub dropout: Option<f32>,
    pub normalization: String,
    pub use_multiplier: bool,
    pub center: bool,
    pub scale: bool,
    pub seed: u64,
    pub epochs: usize,
    pub steps: Option<u64>,
    pub batch_size: usize,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub clip: f64,
    pub warmup: Option<u64>,
    pub final_lr: Option<f64>,
    pub start_warmup_lr: Option<f64>,
    pub shuffle: bool,
    pub criterion: String,
    pub revive_threshold: f32,
    pub revive_min_dead: usize,
    pub revive_coef: f64,
    pub detailed_stats: bool,
    pub max_bad_steps: u32,
    pub checkpoint_every: u64,
    pub gradient_shards: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions::with_given(&Map::new()).expect("the table's defaults are valid")
    }
}

/// The table's defaults as one JSON object, by name.
pub fn defaults() -> Map<String, Value> {
    OPTIONS.iter().map(|s| (s.name.to_string(), s.default_value())).collect()
}

/// Every default the Python keywords take: the table's, and the encode batch size and the rows a
/// streaming trainer estimates its preprocessing from (`mpsae.defaults()`).
pub fn keyword_defaults() -> Map<String, Value> {
    let mut all = defaults();
    all.insert("encode_batch_size".into(), Value::from(d::ENCODE_BATCH_SIZE));
    all.insert("estimate_rows".into(), Value::from(d::ESTIMATE_ROWS));
    all
}

impl RunOptions {
    /// The defaults with `given` (options by name; `null` for an optional one means none) laid
    /// over them. An unknown name or a value of the wrong type is an error naming it.
    pub fn with_given(given: &Map<String, Value>) -> Result<RunOptions> {
        let mut all = defaults();
        for (name, value) in given {
            let Some(s) = spec(name) else {
                let known: Vec<&str> = OPTIONS.iter().map(|s| s.name).collect();
                return Err(Error::invalid(
                    "option",
                    format!("unknown option '{name}' (known: {})", known.join(", ")),
                ));
            };
            all.insert(s.name.to_string(), value.clone());
        }
        serde_json::from_value(Value::Object(all)).map_err(|e| Error::invalid("option", e.to_string()))
    }

    /// The options as a JSON object, by name.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self).expect("options serialise") {
            Value::Object(m) => m,
            _ => unreachable!("a struct serialises to an object"),
        }
    }

    /// The options of a run: its model and preprocessing (`config`) and its training options
    /// (`train`, the checkpoint's, which a resume with changes may have changed).
    pub fn of_run(config: &RunConfig, train: &TrainOptions) -> RunOptions {
        let defaults = RunOptions::default();
        let (revive_threshold, revive_min_dead, revive_coef, criterion) = match train.criterion {
            CriterionChoice::Mse => {
                (defaults.revive_threshold, defaults.revive_min_dead, defaults.revive_coef, "mse")
            }
            CriterionChoice::Revive { threshold, min_dead, coefficient } => {
                (threshold, min_dead, coefficient, "revive")
            }
        };
        let m = &config.model;
        RunOptions {
            nb_concepts: m.nb_concepts,
            k: m.k,
            dropout: m.dropout,
            normalization: m.normalization.name(),
            use_multiplier: m.use_multiplier,
            center: config.preprocess.center,
            scale: config.preprocess.scale,
            seed: config.train.seed,
            epochs: train.epochs,
            steps: train.steps,
            batch_size: train.batch_size,
            lr: train.lr,
            beta1: train.beta1,
            beta2: train.beta2,
            eps: train.eps,
            clip: train.clip,
            warmup: train.schedule.map(|s| s.warmup_steps),
            final_lr: train.schedule.map(|s| s.final_lr),
            start_warmup_lr: train.schedule.map(|s| s.start_warmup_lr),
            shuffle: train.shuffle,
            criterion: criterion.to_string(),
            revive_threshold,
            revive_min_dead,
            revive_coef,
            detailed_stats: train.detailed_stats,
            max_bad_steps: train.max_bad_steps,
            checkpoint_every: train.checkpoint_every,
            gradient_shards: train.gradient_shards,
        }
    }

    /// The dictionary normalisation named.
    pub fn normalization(&self) -> Result<Normalization> {
        Normalization::parse(&self.normalization)
    }

    /// The training options, validated.
    pub fn train_options(&self) -> Result<TrainOptions> {
        let criterion = CriterionChoice::from_name(
            &self.criterion,
            self.revive_threshold,
            self.revive_min_dead,
            self.revive_coef,
        )?;
        let o = TrainOptions {
            batch_size: self.batch_size,
            epochs: self.epochs,
            steps: self.steps,
            shuffle: self.shuffle,
            seed: self.seed,
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            clip: self.clip,
            schedule: ScheduleOptions::from_settings(self.warmup, self.final_lr, self.start_warmup_lr),
            criterion,
            detailed_stats: self.detailed_stats,
            max_bad_steps: self.max_bad_steps,
            checkpoint_every: self.checkpoint_every,
            gradient_shards: self.gradient_shards,
        };
        o.validate()?;
        Ok(o)
    }

    /// The configuration of a model of `input_dim` with these options.
    pub fn model_config(&self, input_dim: usize) -> Result<SaeConfig> {
        let mut cfg = SaeConfig::new(input_dim, self.nb_concepts);
        cfg.k = self.k;
        cfg.dropout = self.dropout;
        cfg.normalization = self.normalization()?;
        cfg.use_multiplier = self.use_multiplier;
        Ok(cfg)
    }

    /// The trainer of a new run with these options on `data` (named `data_names` in its
    /// `config.json`), and the configuration its folder records. The memory a step needs is
    /// checked first.
    pub fn new_run(
        &self,
        data: &Dataset,
        data_names: Vec<String>,
        tensor: Option<String>,
        skip_nonfinite: bool,
        provenance: Provenance,
    ) -> Result<(Trainer, RunConfig)> {
        let mut trainer = self.new_trainer(data.dim(), data.rows(), &provenance)?;
        let preprocess = PreprocessChoice { center: self.center, scale: self.scale };
        trainer.model.set_preprocess(preprocess_for(data, preprocess))?;
        let config = RunConfig {
            mpsae_version: env!("CARGO_PKG_VERSION").to_string(),
            model: trainer.model.config().clone(),
            train: trainer.options.clone(),
            data: data_names,
            tensor,
            skip_nonfinite,
            rows: data.rows(),
            skipped_rows: data.stats().skipped,
            preprocess,
            files: describe_data(data)?,
            provenance,
            stream: None,
        };
        Ok((trainer, config))
    }

    /// A new run fed by a stream of rows of width `input_dim` (its preprocessing, when asked for,
    /// is estimated from the stream's first rows: [`crate::train::PreprocessPlan`]): the trainer and
    /// the run's configuration, `stream` recorded as what defines the stream.
    pub fn new_stream_run(
        &self,
        input_dim: usize,
        data_name: String,
        provenance: Provenance,
        stream: serde_json::Value,
    ) -> Result<(Trainer, RunConfig)> {
        // The stream is read once, in its own order (its shuffle buffer's).
        let once = RunOptions { epochs: 1, shuffle: false, ..self.clone() };
        let trainer = once.new_trainer(input_dim, self.batch_size, &provenance)?;
        let config = RunConfig {
            mpsae_version: env!("CARGO_PKG_VERSION").to_string(),
            model: trainer.model.config().clone(),
            train: trainer.options.clone(),
            data: vec![data_name],
            tensor: None,
            skip_nonfinite: false,
            rows: 0,
            skipped_rows: 0,
            preprocess: PreprocessChoice { center: self.center, scale: self.scale },
            files: Vec::new(),
            provenance,
            stream: Some(stream),
        };
        Ok((trainer, config))
    }

    /// The trainer of a new run on rows of width `d` (`rows` of them at most in a batch), after
    /// the memory check; its model has no preprocessing yet.
    fn new_trainer(&self, d: usize, rows: usize, provenance: &Provenance) -> Result<Trainer> {
        let options = self.train_options()?;
        let settings = crate::Settings::default();
        crate::resources::MemoryPlan::training(
            self.nb_concepts,
            d,
            self.k,
            options.batch_size.min(rows),
            options.gradient_shards,
            settings.par.degree(),
            settings.gram_precision.bytes(),
            settings.memory_budget,
        )
        .check("training")?;
        let mut model = MpSae::new(self.model_config(d)?, self.seed)?;
        model.set_provenance(provenance.clone());
        Trainer::new(model, options)
    }
}
