//! `mpsae`: train, encode, evaluate and inspect Matching Pursuit Sparse Autoencoders.

mod cmd;
mod common;
#[cfg(feature = "mpi")]
mod distributed;
mod progress;
mod signals;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

/// Matching Pursuit Sparse Autoencoders on neural-network activations.
#[derive(Parser)]
#[command(name = "mpsae", version, about, long_about = None)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train an MP-SAE on activation files (or the embedded demo data).
    Train(cmd::train::TrainArgs),
    /// Encode rows into sparse codes (safetensors).
    Encode(cmd::encode::EncodeArgs),
    /// Measure a model on data (MSE, R2, L0, dead ratio, explained variance per step).
    Eval(cmd::eval::EvalArgs),
    /// Show what a model, checkpoint or data file holds.
    Inspect(cmd::inspect::InspectArgs),
    /// Write the concept browser of a model: a static site of what each concept fires on.
    Concepts(cmd::concepts::ConceptsArgs),
    /// Write a model in another tool's format (SAELens).
    Export(cmd::export::ExportArgs),
    /// Match the atoms of two runs one to one by absolute cosine (MCC, shares above 0.9/0.7).
    Compare(cmd::compare::CompareArgs),
    /// Benchmark training and encoding throughput, with the time split and the machine's sgemm.
    Bench(cmd::bench::BenchArgs),
}

fn main() -> ExitCode {
    // A closed pipe (`mpsae inspect RUN | head -3`) ends the process quietly, as it does `ls`,
    // instead of a panic in println!.
    #[cfg(unix)]
    // SAFETY: setting SIGPIPE's disposition to the default before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    common::tune_allocator();
    // OpenBLAS's idle worker threads spin for ~2^28 cycles after each call by default, taking the
    // cores from the rayon work that follows; make them sleep at once (unless the user chose).
    // Set here, before any other thread exists.
    if std::env::var_os("OPENBLAS_THREAD_TIMEOUT").is_none() {
        std::env::set_var("OPENBLAS_THREAD_TIMEOUT", "4");
    }
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if let Err(e) = common::init_threads(cli.threads) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(a),
        Command::Encode(a) => cmd::encode::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Concepts(a) => cmd::concepts::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Compare(a) => cmd::compare::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An empty message: another process of an MPI job said it already.
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            signals::exit_code().map_or(ExitCode::FAILURE, ExitCode::from)
        }
    }
}

/// clap's help and version as clap prints them; a usage error as one line and exit code 1, like
/// every other error.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            eprintln!(
                "error: no command given: use train, encode, eval, inspect, concepts, export, compare or bench (see mpsae --help)"
            );
            ExitCode::FAILURE
        }
        _ => {
            let text = e.render().to_string();
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments").trim();
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("error: {line} (see mpsae --help)");
            ExitCode::FAILURE
        }
    }
}
