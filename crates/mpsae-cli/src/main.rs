//! `mpsae`: train, encode, evaluate and inspect Matching Pursuit Sparse Autoencoders.

mod cmd;
mod common;
mod progress;

use clap::{Parser, Subcommand};
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
    /// Benchmark training and encoding throughput, with the time split and the machine's sgemm.
    Bench(cmd::bench::BenchArgs),
}

fn main() -> ExitCode {
    common::tune_allocator();
    let cli = Cli::parse();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
