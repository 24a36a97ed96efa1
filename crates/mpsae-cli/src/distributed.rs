//! `mpirun -np N mpsae train ...`: the trainer's reduce phase over MPI (the `mpi` feature).
//!
//! Every rank computes the gradient of its aligned block of each global batch's micro-shards;
//! [`MpiReducer::complete_tree`] finishes the batch's pairwise shard tree by a reduce-scatter
//! (recursive halving: at level `l`, rank `r` and rank `r ^ 2^l` add their subtree sums on one
//! half of the segment each holds, the tree's operands element by element) and an all-gather
//! back up the levels, so every rank ends with the bits one process computes while sending
//! about twice the gradient's size, whatever the number of ranks (recursive doubling of the
//! whole gradient would send it log2(N) times).
//! Statistics are all-gathered and summed in rank order on every rank. `mpsae train` runs the
//! library's session with this reducer (`cmd::train`).

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

    /// Waits until every rank is here.
    pub fn barrier(&self) {
        self.world.barrier();
    }

    /// Says `e` and ends the whole job.
    pub fn abort(&self, e: &str) -> ! {
        eprintln!("error: {e}");
        self.world.abort(1)
    }
}

impl Reducer for MpiReducer {
    fn rank_and_world(&self) -> (usize, usize) {
        (self.rank, self.size)
    }

    fn complete_tree(&mut self, grad: &mut [f32]) -> mpsae::Result<()> {
        let t = std::time::Instant::now();
        self.other.resize(grad.len().div_ceil(2), 0.0);
        // Reduce-scatter by recursive halving: at level `l` this rank and `rank ^ 2^l` each keep
        // one half of the segment they hold and add the other's copy of it (the pairwise tree's
        // operands, element by element), sending away the half they do not keep.
        let (mut lo, mut hi) = (0, grad.len());
        let mut levels = Vec::new();
        let mut stride = 1;
        while stride < self.size {
            let peer = self.rank ^ stride;
            let p = self.world.process_at_rank(peer as i32);
            let mid = lo + (hi - lo) / 2;
            let (keep, send) =
                if self.rank & stride == 0 { ((lo, mid), (mid, hi)) } else { ((mid, hi), (lo, mid)) };
            let theirs = &mut self.other[..keep.1 - keep.0];
            mpi::point_to_point::send_receive_into(&grad[send.0..send.1], &p, theirs, &p);
            // Addition is commutative bit for bit: both ranks get left + right.
            grad[keep.0..keep.1].iter_mut().zip(theirs.iter()).for_each(|(a, b)| *a += b);
            levels.push((peer, keep, send));
            (lo, hi) = keep;
            stride *= 2;
        }
        // All-gather: back up the levels, each rank sends the part it completed and receives the
        // part its peer completed.
        for (peer, keep, send) in levels.into_iter().rev() {
            let p = self.world.process_at_rank(peer as i32);
            let (mine, theirs) = if keep.0 < send.0 {
                let (a, b) = grad.split_at_mut(send.0);
                (&a[keep.0..keep.1], &mut b[..send.1 - send.0])
            } else {
                let (a, b) = grad.split_at_mut(keep.0);
                (&b[..keep.1 - keep.0], &mut a[send.0..send.1])
            };
            mpi::point_to_point::send_receive_into(mine, &p, theirs, &p);
        }
        self.seconds += t.elapsed().as_secs_f64();
        Ok(())
    }

    fn all_gather(&mut self, mine: &[u8]) -> mpsae::Result<Vec<Vec<u8>>> {
        let mut lens = vec![0u64; self.size];
        self.world.all_gather_into(&(mine.len() as u64), &mut lens[..]);
        let max = *lens.iter().max().unwrap_or(&0) as usize;
        let mut padded = mine.to_vec();
        padded.resize(max, 0);
        let mut all = vec![0u8; max * self.size];
        self.world.all_gather_into(&padded[..], &mut all[..]);
        Ok(all.chunks(max.max(1)).zip(&lens).map(|(c, &l)| c[..l as usize].to_vec()).collect())
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
