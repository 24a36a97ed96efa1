//! The reduce phase of a training step, and how one global batch is shared between processes.
//!
//! A step runs in three phases: each process computes the gradient of its micro-shards of the
//! global batch ([`crate::MpSae::shard_pass`]), a [`Reducer`] completes the micro-shard tree of
//! dL/dD and sums the step's statistics across processes, then every process applies the same
//! update (clip, Adam, schedule). Since the shards and their summation tree are fixed by the
//! options, not by the number of processes, the model is bitwise the same on 1, 2 or 4 of them.

use crate::Result;
use mpsae_kernels::backward::shard_bounds;
use std::ops::Range;

/// Completes what one process computed of a global batch with what the others did.
pub trait Reducer {
    /// This process's rank and the number of processes.
    fn rank_and_world(&self) -> (usize, usize);

    /// `grad` holds dL/dD of this process's aligned block of micro-shards (its subtree of the
    /// batch's pairwise tree); on return it holds the whole batch's, the same on every process,
    /// summed along the same tree as one process would.
    fn complete_tree(&mut self, grad: &mut [f32]) -> Result<()>;

    /// Sums per-process statistics so that every process holds the totals.
    fn sum(&mut self, values: &mut [f64]) -> Result<()>;

    /// Every process's bytes, in rank order (lengths may differ).
    fn all_gather(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }

    /// Whether any process says `flag` (so that all stop at the same step).
    fn any(&mut self, flag: bool) -> Result<bool> {
        let mut v = [flag as u8 as f64];
        self.sum(&mut v)?;
        Ok(v[0] > 0.0)
    }
}

/// One process: nothing to reduce.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Reducer for SingleProcess {
    fn rank_and_world(&self) -> (usize, usize) {
        (0, 1)
    }
    fn complete_tree(&mut self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn sum(&mut self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

/// This process's part of a global batch of `rows` rows cut into `shards` micro-shards, when
/// `world` processes share it: rank `r` takes the aligned block of shards
/// `[r·shards/world, (r+1)·shards/world)` (so `world` must divide `shards`, both powers of two).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchShare {
    /// Rows of the global batch this process computes (positions in the batch).
    pub rows: Range<usize>,
    /// The micro-shard bounds of those rows, as local offsets from 0.
    pub bounds: Vec<usize>,
    /// Index of the first of those shards among the batch's.
    pub first_shard: usize,
    /// Shards of the batch.
    pub total_shards: usize,
}

/// The share of rank `rank` of `world` in a batch of `rows` rows cut into `shards` micro-shards.
pub fn batch_share(rows: usize, shards: usize, rank: usize, world: usize) -> BatchShare {
    assert!(
        world >= 1 && rank < world && shards % world == 0,
        "batch_share: {world} processes, {shards} shards"
    );
    let all = shard_bounds(rows, shards);
    let per = shards / world;
    let (s0, s1) = (rank * per, (rank + 1) * per);
    let start = all[s0];
    BatchShare {
        rows: start..all[s1],
        bounds: all[s0..=s1].iter().map(|b| b - start).collect(),
        first_shard: s0,
        total_shards: shards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_order_with_the_global_bounds() {
        for rows in [0usize, 1, 5, 64, 1000, 1023] {
            for world in [1usize, 2, 4] {
                let all = shard_bounds(rows, 4);
                let mut next = 0;
                for rank in 0..world {
                    let s = batch_share(rows, 4, rank, world);
                    assert_eq!(s.rows.start, next);
                    next = s.rows.end;
                    for (i, b) in s.bounds.iter().enumerate() {
                        assert_eq!(b + s.rows.start, all[rank * 4 / world + i]);
                    }
                }
                assert_eq!(next, rows);
            }
        }
    }
}
