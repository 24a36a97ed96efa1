//! `mpsae train`.

use crate::common::{msg, open_data, CliResult, EngineArgs, DEMO_NAME};
use crate::progress::{ProgressMode, Reporter};
use mpsae::defaults;
use mpsae::run::{PreprocessChoice, ResumeRequest, Run, RunRecipe, Spelling};
use mpsae::train::Trainer;
use mpsae::train::{CriterionChoice, ScheduleOptions, TrainOptions};
use mpsae::Normalization;
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `mpsae train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Activation files (.npy f16/f32/f64, .safetensors f16/bf16/f32); none: the embedded demo data.
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Tensor to read from .safetensors data files (default: the file's only 2-D tensor).
    #[arg(long)]
    tensor: Option<String>,
    /// Leave out rows with NaN or infinite values (default: refuse the data).
    #[arg(long)]
    skip_nonfinite: bool,
    /// Number of concepts (dictionary atoms).
    #[arg(long, short = 'c', default_value_t = defaults::CONCEPTS)]
    concepts: usize,
    /// Matching pursuit steps per row.
    #[arg(long, short = 'k', default_value_t = defaults::K)]
    k: usize,
    /// Epochs over the data.
    #[arg(long, default_value_t = defaults::EPOCHS)]
    epochs: usize,
    /// A step budget instead of epochs.
    #[arg(long)]
    steps: Option<u64>,
    /// Rows per batch.
    #[arg(long, default_value_t = defaults::BATCH_SIZE)]
    batch_size: usize,
    /// Learning rate (Adam).
    #[arg(long, default_value_t = defaults::LR)]
    lr: f64,
    /// Adam beta1.
    #[arg(long, default_value_t = defaults::BETA1)]
    beta1: f64,
    /// Adam beta2.
    #[arg(long, default_value_t = defaults::BETA2)]
    beta2: f64,
    /// Adam epsilon.
    #[arg(long, default_value_t = defaults::EPS)]
    eps: f64,
    /// Global gradient-norm clipping (0 turns it off).
    #[arg(long, default_value_t = defaults::CLIP)]
    clip: f64,
    /// Warmup steps of the cosine schedule (giving any schedule option turns it on).
    #[arg(long)]
    warmup: Option<u64>,
    /// Final learning rate of the cosine schedule.
    #[arg(long)]
    final_lr: Option<f64>,
    /// Learning rate at the start of the warmup.
    #[arg(long)]
    start_warmup_lr: Option<f64>,
    /// Dropout probability over atoms while training, in [0, 1).
    #[arg(long)]
    dropout: Option<f32>,
    /// Seed of the initialisation, the data order and the dropout masks.
    #[arg(long, default_value_t = defaults::SEED)]
    seed: u64,
    /// Keep the data order (no shuffling).
    #[arg(long)]
    no_shuffle: bool,
    /// Dictionary normalisation: l2, max_l2, l1, max_l1, identity.
    #[arg(long, default_value = defaults::NORMALIZATION)]
    normalization: String,
    /// Train the multiplier (atoms scaled by exp(m)).
    #[arg(long)]
    multiplier: bool,
    /// Criterion: mse, or revive (MSE plus the MpSAE docs' auxiliary term for dead codes).
    #[arg(long, default_value = defaults::CRITERION)]
    criterion: String,
    /// Revive: codes whose batch maximum is below this are dead.
    #[arg(long, default_value_t = defaults::REVIVE_THRESHOLD)]
    revive_threshold: f32,
    /// Revive: the term applies when more than this many codes are dead.
    #[arg(long, default_value_t = defaults::REVIVE_MIN_DEAD)]
    revive_min_dead: usize,
    /// Revive: weight of the term.
    #[arg(long, default_value_t = defaults::REVIVE_COEF)]
    revive_coef: f64,
    /// Subtract the data mean (estimated from the data; saved with the model).
    #[arg(long)]
    center: bool,
    /// Scale rows so that their root-mean-square norm is sqrt(d) (saved with the model).
    #[arg(long)]
    scale: bool,
    /// Also report code norm, dictionary norms and gradient norms per epoch.
    #[arg(long)]
    detailed_stats: bool,
    /// Write a checkpoint every this many steps (0: only at the end).
    #[arg(long, default_value_t = defaults::CHECKPOINT_EVERY)]
    checkpoint_every: u64,
    /// Micro-shards of each batch's gradient (a power of two): the model depends on this count,
    /// never on threads or processes.
    #[arg(long, default_value_t = defaults::GRADIENT_SHARDS)]
    gradient_shards: usize,
    /// Stop after this many non-finite steps in a row.
    #[arg(long, default_value_t = defaults::MAX_BAD_STEPS)]
    max_bad_steps: u32,
    /// Run folder (model.safetensors, config.json, metrics.jsonl, checkpoint.safetensors).
    #[arg(long, default_value = "runs/mpsae")]
    out: PathBuf,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start a new run in --out even if it already holds one.
    #[arg(long)]
    force: bool,
    /// With --resume: continue on data other than the run's (other files, rows or content).
    #[arg(long)]
    allow_data_change: bool,
    /// With --resume: apply the training options given that differ from the run's (--steps,
    /// --epochs, --lr, --clip, ...); model options (--concepts, -k, ...) can never change.
    #[arg(long)]
    allow_changes: bool,
    #[command(flatten)]
    engine: EngineArgs,
    /// Progress display.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
}

#[cfg(feature = "mpi")]
impl TrainArgs {
    /// The progress display asked for.
    pub fn progress_mode(&self) -> ProgressMode {
        self.progress
    }
}

fn build_options(a: &TrainArgs) -> CliResult<TrainOptions> {
    let criterion =
        CriterionChoice::from_name(&a.criterion, a.revive_threshold, a.revive_min_dead, a.revive_coef)
            .map_err(msg)?;
    let schedule = ScheduleOptions::from_settings(a.warmup, a.final_lr, a.start_warmup_lr);
    let o = TrainOptions {
        batch_size: a.batch_size,
        epochs: a.epochs,
        steps: a.steps,
        shuffle: !a.no_shuffle,
        seed: a.seed,
        lr: a.lr,
        beta1: a.beta1,
        beta2: a.beta2,
        eps: a.eps,
        clip_grad: a.clip,
        schedule,
        criterion,
        detailed_stats: a.detailed_stats,
        max_bad_steps: a.max_bad_steps,
        checkpoint_every: a.checkpoint_every,
        gradient_shards: a.gradient_shards,
    };
    o.validate().map_err(msg)?;
    Ok(o)
}

fn data_names(files: &[PathBuf]) -> Vec<String> {
    if files.is_empty() {
        vec![DEMO_NAME.to_string()]
    } else {
        files.iter().map(|p| p.display().to_string()).collect()
    }
}

/// The options of `a` as a new run's recipe (for a new run, and for what a resume is asked).
fn recipe(a: &TrainArgs) -> CliResult<RunRecipe> {
    let normalization = Normalization::from_name(&a.normalization).ok_or_else(|| {
        format!("invalid --normalization '{}': use l2, max_l2, l1, max_l1 or identity", a.normalization)
    })?;
    Ok(RunRecipe {
        concepts: a.concepts,
        k: a.k,
        dropout: a.dropout,
        normalization,
        use_multiplier: a.multiplier,
        seed: a.seed,
        options: build_options(a)?,
        preprocess: PreprocessChoice { center: a.center, scale: a.scale },
        data_names: data_names(&a.data),
        tensor: a.tensor.clone(),
        skip_nonfinite: a.skip_nonfinite,
        provenance: mpsae::data::harvest::provenance_of(&a.data),
    })
}

/// The library's names of the options the user typed (flags spelt as the library names them).
fn given_options(given: &dyn Fn(&str) -> bool) -> Vec<String> {
    let flags = [
        ("concepts", "concepts"),
        ("k", "k"),
        ("dropout", "dropout"),
        ("normalization", "normalization"),
        ("multiplier", "multiplier"),
        ("center", "center"),
        ("scale", "scale"),
        ("seed", "seed"),
        ("epochs", "epochs"),
        ("steps", "steps"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("beta1", "beta1"),
        ("beta2", "beta2"),
        ("eps", "eps"),
        ("clip", "clip"),
        ("no_shuffle", "shuffle"),
        ("criterion", "criterion"),
        ("revive_threshold", "criterion"),
        ("revive_min_dead", "criterion"),
        ("revive_coef", "criterion"),
        ("detailed_stats", "detailed_stats"),
        ("max_bad_steps", "max_bad_steps"),
        ("checkpoint_every", "checkpoint_every"),
        ("gradient_shards", "gradient_shards"),
        ("warmup", "schedule"),
        ("final_lr", "schedule"),
        ("start_warmup_lr", "schedule"),
    ];
    flags.iter().filter(|(flag, _)| given(flag)).map(|(_, name)| name.to_string()).collect()
}

/// A training about to run: the run folder (on the process that writes it), the trainer and the
/// data.
pub struct Prepared {
    /// The run folder, locked (`None` on the processes of an MPI job other than rank 0).
    pub run: Option<Run>,
    /// The trainer, its engine set.
    pub trainer: Trainer,
    /// The data.
    pub data: mpsae::data::Dataset,
}

/// Opens or creates the run of `a`; `writer` is the process that owns the run folder.
pub fn prepare(a: &TrainArgs, given: &dyn Fn(&str) -> bool, writer: bool) -> CliResult<Prepared> {
    let engine = a.engine.engine()?;
    let (run, mut trainer, data, _) = if a.resume {
        let (run, trainer, config) = if writer {
            let (run, trainer) = Run::resume(&a.out).map_err(msg)?;
            let config = run.config.clone();
            (Some(run), trainer, config)
        } else {
            let trainer =
                mpsae::train::checkpoint::load(&a.out.join(mpsae::train::CHECKPOINT_FILE)).map_err(msg)?;
            (None, trainer, Run::read_config(&a.out).map_err(msg)?)
        };
        // The data: as given, or as recorded in config.json.
        let data = if a.data.is_empty() {
            let files: Vec<PathBuf> =
                config.data.iter().filter(|s| *s != DEMO_NAME).map(PathBuf::from).collect();
            open_data(&files, config.tensor.as_deref(), config.skip_nonfinite, true)?
        } else {
            open_data(&a.data, a.tensor.as_deref(), a.skip_nonfinite, true)?
        };
        let request = ResumeRequest {
            recipe: recipe(a)?,
            given: given_options(given),
            allow_changes: a.allow_changes,
            allow_data_change: a.allow_data_change,
            spelling: Spelling::Cli,
        };
        let mut trainer = trainer;
        for note in request.apply(&config, &data, &mut trainer).map_err(msg)? {
            eprintln!("note: {note}");
        }
        (run, trainer, data, config)
    } else {
        let data = open_data(&a.data, a.tensor.as_deref(), a.skip_nonfinite, true)?;
        let recipe = recipe(a)?;
        let (trainer, config) = recipe.trainer(&data).map_err(msg)?;
        let run =
            if writer { Some(Run::create(&a.out, config.clone(), a.force).map_err(msg)?) } else { None };
        (run, trainer, data, config)
    };
    if let Some(owner) = run.as_ref().and_then(Run::took_over) {
        eprintln!("note: took over the lock of a process that is gone ({owner})");
    }
    if writer && data.stats().skipped > 0 {
        eprintln!("note: left out {} rows with NaN or infinite values", data.stats().skipped);
    }
    trainer.model.set_engine(engine);
    if let Some(r) = &run {
        r.attach(&mut trainer);
    }
    Ok(Prepared { run, trainer, data })
}

/// The error of an interrupted run: what happened and how to continue.
pub fn interrupted(a: &TrainArgs, step: u64, checkpointed: bool) -> String {
    let how = if checkpointed { "the checkpoint holds it" } else { "no checkpoint was written" };
    format!(
        "interrupted after step {step} ({how}); continue with: mpsae train --resume --out {}",
        a.out.display()
    )
}

/// Saves the model and prints the run's summary (one JSON line), with `extra` fields.
pub fn finish(
    p: &Prepared,
    reports: &[mpsae::train::EpochReport],
    extra: serde_json::Value,
) -> CliResult<()> {
    let run = p.run.as_ref().expect("the writing process has the run");
    let model_file = run.save_model(&p.trainer).map_err(msg)?;
    let last = reports.last();
    let mut summary = json!({
        "model": model_file.display().to_string(),
        "steps": p.trainer.progress.step,
        "skipped_steps": p.trainer.progress.total_bad,
        "rows": p.data.rows(),
        "d": p.data.dim(),
        "concepts": p.trainer.model.nb_concepts(),
        "k": p.trainer.model.config().k,
        "loss": last.map(|r| r.avg_loss),
        "r2": last.map(|r| r.r2),
        "l0": last.map(|r| r.l0),
        "dead_ratio": last.map(|r| r.dead_ratio),
        "explained_variance": last.map(|r| r.explained_variance.clone()),
    });
    if let (Some(o), Some(e)) = (summary.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("{summary}");
    Ok(())
}

/// Runs `mpsae train`: a shell over the library's [`Run`] and [`Trainer`] (over MPI when the
/// `mpi` feature is built and the command runs under `mpirun` with several processes).
pub fn run(a: TrainArgs, given: &dyn Fn(&str) -> bool) -> CliResult<()> {
    #[cfg(feature = "mpi")]
    {
        let universe = mpi::initialize().ok_or("MPI could not be initialised")?;
        let world = universe.world();
        if mpi::traits::Communicator::size(&world) > 1 {
            return crate::distributed::train(&a, given, world);
        }
    }
    let mut p = prepare(&a, given, true)?;
    let metrics = p.run.as_ref().map(Run::metrics_path);
    let total = p.trainer.options.total_steps(p.data.rows());
    let mut reporter = Reporter::new(a.progress, total, p.trainer.progress.step, metrics.as_deref());
    crate::signals::install();
    let result = p.trainer.run(&p.data, &mut reporter);
    reporter.finish();
    let reports = match result {
        Err(mpsae::Error::Interrupted { step, checkpointed }) => {
            return Err(interrupted(&a, step, checkpointed))
        }
        r => r.map_err(msg)?,
    };
    if let Some(e) = reporter.error {
        return Err(e);
    }
    finish(&p, &reports, json!({}))
}
