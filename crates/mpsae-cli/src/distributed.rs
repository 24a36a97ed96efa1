//! `mpirun -np N mpsae train ...`: the trainer's reduce phase over MPI (the `mpi` feature).
//!
//! Every rank computes the gradient of its aligned block of each global batch's micro-shards;
//! [`MpiReducer::complete_tree`] finishes the batch's pairwise shard tree by recursive doubling
//! (at level `l`, rank `r` exchanges its subtree sum with rank `r ^ 2^l` and both add the left
//! one to the right one, in that order), so every rank ends with the bits one process computes.
//! Statistics are all-gathered and summed in rank order on every rank.

use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpsae::train::Reducer;

/// The reduce phase over an MPI communicator.
pub struct MpiReducer {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Receive buffer of the tree exchange (kept between steps: `c x d`).
    other: Vec<f32>,
    /// Seconds spent communicating (for measurements).
    pub seconds: f64,
}

impl MpiReducer {
    /// The reducer of `world`.
    pub fn new(world: SimpleCommunicator) -> Self {
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        MpiReducer { world, rank, size, other: Vec::new(), seconds: 0.0 }
    }

    /// Every rank's bytes (all-gathered; lengths may differ).
    pub fn gather_bytes(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        let mut lens = vec![0u64; self.size];
        self.world.all_gather_into(&(mine.len() as u64), &mut lens[..]);
        let max = *lens.iter().max().unwrap_or(&0) as usize;
        let mut padded = mine.to_vec();
        padded.resize(max, 0);
        let mut all = vec![0u8; max * self.size];
        self.world.all_gather_into(&padded[..], &mut all[..]);
        all.chunks(max.max(1)).zip(&lens).map(|(c, &l)| c[..l as usize].to_vec()).collect()
    }
}

impl Reducer for MpiReducer {
    fn rank_and_world(&self) -> (usize, usize) {
        (self.rank, self.size)
    }

    fn complete_tree(&mut self, grad: &mut [f32]) -> mpsae::Result<()> {
        let t = std::time::Instant::now();
        self.other.resize(grad.len(), 0.0);
        let mut stride = 1;
        while stride < self.size {
            let peer = self.rank ^ stride;
            let p = self.world.process_at_rank(peer as i32);
            mpi::point_to_point::send_receive_into(&grad[..], &p, &mut self.other[..], &p);
            // The left subtree (lower ranks) plus the right one, the same operands on both ranks.
            if self.rank < peer {
                grad.iter_mut().zip(&self.other).for_each(|(a, b)| *a += b);
            } else {
                grad.iter_mut().zip(&self.other).for_each(|(a, &b)| *a = b + *a);
            }
            stride *= 2;
        }
        self.seconds += t.elapsed().as_secs_f64();
        Ok(())
    }

    fn sum(&mut self, values: &mut [f64]) -> mpsae::Result<()> {
        let t = std::time::Instant::now();
        let mut all = vec![0f64; values.len() * self.size];
        self.world.all_gather_into(&values[..], &mut all[..]);
        values.iter_mut().for_each(|v| *v = 0.0);
        for part in all.chunks(values.len().max(1)) {
            values.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        self.seconds += t.elapsed().as_secs_f64();
        Ok(())
    }
}

/// `mpsae train` as one rank of an MPI job: every rank prepares the same trainer and checks that
/// all agree (data, options, state); rank 0 writes the run folder and reports.
pub fn train(
    a: &crate::cmd::train::TrainArgs,
    given: &dyn Fn(&str) -> bool,
    world: SimpleCommunicator,
) -> crate::common::CliResult<()> {
    use crate::cmd::train::{finish, interrupted, prepare};
    let mut reducer = MpiReducer::new(world);
    let (rank, size) = (reducer.rank, reducer.size);
    let fail = |reducer: &MpiReducer, e: String| -> crate::common::CliResult<()> {
        eprintln!("error: rank {rank} of {size}: {e}");
        reducer.world.abort(1)
    };
    // Rank 0 creates or locks the folder first; the others then read it.
    let mut p = None;
    for turn in [true, false] {
        if turn == (rank == 0) {
            match prepare(a, given, rank == 0) {
                Ok(x) => p = Some(x),
                Err(e) => return fail(&reducer, e),
            }
        }
        reducer.world.barrier();
    }
    let mut p = p.expect("prepared");
    // Every rank must see the same data, options and state.
    let mine = serde_json::json!({
        "data": mpsae::run::describe_data(&p.data).map_err(crate::common::msg)?,
        "options": p.trainer.options,
        "model": p.trainer.model.config(),
        "step": p.trainer.progress.step,
    });
    let all = reducer.gather_bytes(mine.to_string().as_bytes());
    let first: serde_json::Value = serde_json::from_slice(&all[0]).expect("rank 0's description");
    for (r, bytes) in all.iter().enumerate().skip(1) {
        let other: serde_json::Value = serde_json::from_slice(bytes).expect("a rank's description");
        if other != first {
            let key = ["data", "options", "model", "step"]
                .into_iter()
                .find(|k| other[k] != first[k])
                .unwrap_or("?");
            // Every rank compares the same descriptions: all refuse; rank 0 says why.
            let e = format!("rank {r} sees other {key} than rank 0: {} against {}", other[key], first[key]);
            return Err(if rank == 0 { e } else { String::new() });
        }
    }
    let total = p.trainer.options.total_steps(p.data.rows());
    let metrics = p.run.as_ref().map(mpsae::run::Run::metrics_path);
    let mode = if rank == 0 { a.progress_mode() } else { crate::progress::ProgressMode::Quiet };
    let mut reporter =
        crate::progress::Reporter::new(mode, total, p.trainer.progress.step, metrics.as_deref());
    crate::signals::install();
    let t = std::time::Instant::now();
    let result = p.trainer.run_shared(&p.data, &mut reporter, &mut reducer);
    reporter.finish();
    let seconds = t.elapsed().as_secs_f64();
    let reports = match result {
        Ok(r) => r,
        Err(mpsae::Error::Interrupted { step, checkpointed }) => {
            if rank == 0 {
                eprintln!("error: {}", interrupted(a, step, checkpointed));
            }
            std::process::exit(crate::signals::exit_code().unwrap_or(1) as i32)
        }
        Err(e) => return fail(&reducer, e.to_string()),
    };
    if rank == 0 {
        finish(
            &p,
            &reports,
            serde_json::json!({"processes": size, "seconds": seconds, "communication_seconds": reducer.seconds}),
        )?;
    }
    Ok(())
}
