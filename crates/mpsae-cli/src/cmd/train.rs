//! `mpsae train`: parse the flags, open the library's training [`Session`], print its summary.

use crate::common::{msg, open_data, CliResult, EngineArgs};
use crate::progress::{ProgressMode, Reporter};
use mpsae::run::options::{DefaultValue, Kind, OptionSpec};
use mpsae::run::{recorded_data, RunOptions, Session, SessionRequest, Spelling, OPTIONS};
use serde_json::{json, Map, Value};
use std::path::PathBuf;

/// Arguments of `mpsae train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Activation files (.npy f16/f32/f64, .safetensors f16/bf16/f32) or harvest folders; none:
    /// the embedded demo data (or, with --resume, the run's own data).
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Tensor to read from .safetensors data files (default: the file's only 2-D tensor).
    #[arg(long)]
    tensor: Option<String>,
    /// Leave out rows with NaN or infinite values (default: refuse the data).
    #[arg(long)]
    skip_nonfinite: bool,
    /// The training options (the library's table, `mpsae::run::OPTIONS`).
    #[command(flatten)]
    options: TableOptions,
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
    /// --epochs, --lr, --clip, ...); model options (--nb-concepts, -k, ...) can never change.
    #[arg(long)]
    allow_changes: bool,
    #[command(flatten)]
    engine: EngineArgs,
    /// Progress display.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
}

/// The options of the library's table as flags: each row is one flag, its help and default
/// the table's; parsing keeps the values the user typed, by name.
#[derive(Clone, Debug, Default)]
pub struct TableOptions {
    /// The options typed on the command line, by name.
    given: Map<String, Value>,
}

fn arg_of(s: &'static OptionSpec) -> clap::Arg {
    use clap::{value_parser, Arg, ArgAction};
    let mut arg = Arg::new(s.name).long(s.flag()).help(s.help).value_name(s.name.to_uppercase());
    if let Some(c) = s.short {
        arg = arg.short(c);
    }
    if let Some(a) = s.alias {
        arg = arg.alias(a);
    }
    let default = s.default_value();
    arg = match s.kind {
        Kind::Switch => arg.action(ArgAction::SetTrue),
        Kind::Integer | Kind::OptionalInteger => arg.value_parser(value_parser!(u64)),
        Kind::Number | Kind::OptionalNumber => arg.value_parser(value_parser!(f64)),
        Kind::Name => arg.value_parser(value_parser!(String)),
    };
    if s.kind != Kind::Switch && !default.is_null() {
        let shown = match &default {
            Value::String(v) => v.clone(),
            v => v.to_string(),
        };
        arg = arg.default_value(shown);
    }
    arg
}

impl clap::FromArgMatches for TableOptions {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Map::new();
        for s in OPTIONS {
            if m.value_source(s.name) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            let v = match s.kind {
                // `--no-NAME` turns off a switch that is on by default.
                Kind::Switch => json!(m.get_flag(s.name) != matches!(s.default, DefaultValue::Bool(true))),
                Kind::Integer | Kind::OptionalInteger => json!(m.get_one::<u64>(s.name).copied()),
                Kind::Number | Kind::OptionalNumber => json!(m.get_one::<f64>(s.name).copied()),
                Kind::Name => json!(m.get_one::<String>(s.name).cloned()),
            };
            given.insert(s.name.to_string(), v);
        }
        Ok(TableOptions { given })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for TableOptions {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        OPTIONS.iter().fold(cmd, |cmd, s| cmd.arg(arg_of(s)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Runs `mpsae train`: a shell over the library's [`Session`] (over MPI when the `mpi` feature
/// is built and the command runs under `mpirun` with several processes).
pub fn run(a: TrainArgs) -> CliResult<()> {
    #[cfg(feature = "mpi")]
    {
        let universe = mpi::initialize().ok_or("MPI could not be initialised")?;
        let world = universe.world();
        if mpi::traits::Communicator::size(&world) > 1 {
            return train_ranks(&a, crate::distributed::MpiReducer::new(world));
        }
    }
    let mut session = open(&a, true)?;
    let mut reporter = Reporter::new(a.progress, session.total_steps(), session.trainer.progress.step);
    crate::signals::install();
    let result = session.run(&mut reporter);
    reporter.finish();
    let reports = match result {
        Err(mpsae::Error::Interrupted { step, checkpointed }) => {
            return Err(session.interrupted_message(step, checkpointed))
        }
        r => r.map_err(msg)?,
    };
    println!("{}", session.finish(&reports).map_err(msg)?);
    Ok(())
}

/// The session `a` asks for; `writer`: this process writes the run folder.
fn open(a: &TrainArgs, writer: bool) -> CliResult<Session> {
    let options = RunOptions::with_given(&a.options.given).map_err(msg)?;
    // Resumed without data: the run's own files.
    let (files, tensor, skip) = if a.resume && a.data.is_empty() {
        recorded_data(&a.out).map_err(msg)?
    } else {
        (a.data.clone(), a.tensor.clone(), a.skip_nonfinite)
    };
    let data = open_data(&files, tensor.as_deref(), skip, true)?;
    let data_names = if a.data.is_empty() {
        vec![crate::common::DEMO_NAME.to_string()]
    } else {
        a.data.iter().map(|p| p.display().to_string()).collect()
    };
    let mut request = SessionRequest::new(options, a.options.given.keys().cloned().collect(), Spelling::Cli);
    request.out = Some(a.out.clone());
    request.resume = a.resume;
    request.force = a.force;
    request.allow_changes = a.allow_changes;
    request.allow_data_change = a.allow_data_change;
    request.writer = writer;
    request.provenance = mpsae::data::harvest::provenance_of(&a.data);
    request.data_names = data_names;
    request.tensor = a.tensor.clone();
    request.skip_nonfinite = a.skip_nonfinite;
    request.settings = a.engine.engine()?;
    let session = Session::open(&request, data).map_err(msg)?;
    if writer {
        for note in &session.notes {
            eprintln!("note: {note}");
        }
    }
    Ok(session)
}

/// `mpsae train` as one rank of an MPI job: rank 0 creates or locks the run folder first, the
/// others then read it; the session checks that all agree, rank 0 writes and reports.
#[cfg(feature = "mpi")]
fn train_ranks(a: &TrainArgs, mut reducer: crate::distributed::MpiReducer) -> CliResult<()> {
    use mpsae::train::Reducer;
    let (rank, size) = reducer.rank_and_world();
    let mut session = None;
    for turn in [true, false] {
        if turn == (rank == 0) {
            match open(a, rank == 0) {
                Ok(s) => session = Some(s),
                Err(e) => reducer.abort(&format!("rank {rank} of {size}: {e}")),
            }
        }
        reducer.barrier();
    }
    let mut session = session.expect("every rank opened its session");
    if let Err(e) = session.check_agreement(&mut reducer) {
        // Every rank compares the same descriptions: all refuse; rank 0 says why, and the others
        // wait until it has (a rank that exits first makes mpirun kill the rest).
        if rank == 0 {
            eprintln!("error: {e}");
        }
        reducer.barrier();
        return Err(String::new());
    }
    let mode = if rank == 0 { a.progress } else { ProgressMode::Quiet };
    let mut reporter = Reporter::new(mode, session.total_steps(), session.trainer.progress.step);
    crate::signals::install();
    let t = std::time::Instant::now();
    let result = session.run_shared(&mut reporter, &mut reducer);
    reporter.finish();
    let seconds = t.elapsed().as_secs_f64();
    let reports = match result {
        Ok(r) => r,
        Err(mpsae::Error::Interrupted { step, checkpointed }) => {
            if rank == 0 {
                eprintln!("error: {}", session.interrupted_message(step, checkpointed));
            }
            std::process::exit(crate::signals::exit_code().unwrap_or(1) as i32)
        }
        Err(e) => reducer.abort(&format!("rank {rank} of {size}: {e}")),
    };
    if rank == 0 {
        let mut summary = session.finish(&reports).map_err(msg)?;
        if let Some(o) = summary.as_object_mut() {
            o.insert("processes".into(), json!(size));
            o.insert("seconds".into(), json!(seconds));
            o.insert("communication_seconds".into(), json!(reducer.seconds));
        }
        println!("{summary}");
    }
    Ok(())
}
