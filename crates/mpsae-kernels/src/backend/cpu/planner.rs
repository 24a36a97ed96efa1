//! The CPU backend's planner: which pursuit strategy each call runs, and the Gram matrix it
//! prepares for a dictionary that stays fixed.
//!
//! Three pieces, all here:
//! - the cost model ([`strategy_costs`], [`choose_strategy`]): estimated work and memory of each
//!   [`Strategy`] for a [`Workload`], with weights measured on the development machine;
//! - its learned history ([`Planner`]): the picks are the same whatever the strategy, so after
//!   each batch the planner counts the Gram rows `gram-picked` would need for them
//!   ([`picked_gram_rows`]) and plans the next batch of that shape with that count;
//! - the Gram preparation: the Gram matrix of a stable (eval-mode) dictionary is computed once,
//!   when the planner would run the Gram strategy on it, and reused until the dictionary changes.

use crate::backend::Settings;
use crate::bf16::{Bf16Dictionary, Products};
use crate::gram::Gram;
use crate::pursuit::{picked_gram_rows, picked_tile_rows, tile_rows, Strategy};

/// Estimated cost of each strategy, in flop-equivalents, and the bytes of scratch it needs.
#[derive(Clone, Copy, Debug)]
pub struct StrategyCost {
    /// Which strategy this is.
    pub strategy: Strategy,
    /// Estimated work, in flop-equivalents of the `X·Dmᵀ` product (other work weighted by its
    /// measured time).
    pub flops: f64,
    /// Scratch memory needed, in bytes.
    pub bytes: f64,
}

// The cost model counts work in flops of the `X·Dmᵀ` product; the other kinds of work are
// weighted by their time against it, as measured with `mpsae bench` on the development machine
// (2-core AVX2 EPYC; BENCHMARKS.md): the Gram strategy's update of one correlation (a row held in
// cache, `a -= v·G[j]` streaming the Gram row: 0.18-0.2 ns, i.e. about 25 flops at 130 GFLOP/s
// with an f16 row, a third more with an f32 one), `gram-picked`'s (the `n x c` correlations
// streamed from memory at every step: 0.66-0.78 ns, about 90 flops), the plain strategy's
// argmax scan of one correlation after each product (0.5-0.6 ns, about 60 flops), a flop of the
// Gram matrix's block-triangular product (1.4 flops of `X·Dmᵀ`: smaller blocks), and a flop of
// `gram-picked`'s per-step products of the new rows, modelled as 1.4 + 32 / rows per thread
// (measured: 0.95-1.25 at c=4096 and at k=4 with batch 1024, 1.45-1.5 with thousands of
// 64 KiB rows at c=16384, batch 4096, and up to 1.8 when a step has 100 rows).
/// The weights of each kind of work, in flops of an f32 `X·Dmᵀ`.
#[derive(Clone, Copy, Debug)]
struct Weights {
    /// A flop of `X·Dmᵀ` (and of the plain strategy's products).
    first: f64,
    /// A flop of the Gram matrix.
    gram_flop: f64,
    /// A flop of `gram-picked`'s rows is `picked_flop + picked_small / rows per thread`.
    picked_flop: f64,
    picked_small: f64,
    /// One Gram-strategy correlation update with an f16 Gram row (a third more with an f32 one).
    gram_update: f64,
    /// One `gram-picked` correlation update.
    picked_update: f64,
    /// One plain-strategy correlation scan.
    plain_scan: f64,
}

/// With f32 products, measured on the AVX2 machine (above).
const F32_WEIGHTS: Weights = Weights {
    first: 1.0,
    gram_flop: 1.4,
    picked_flop: 1.4,
    picked_small: 32.0,
    gram_update: 25.0,
    picked_update: 90.0,
    plain_scan: 60.0,
};

// With bf16 products ([`Products::Bf16`]) the weights are those measured on a CPU that has them
// (2-core Zen 4, `mpsae bench` at 576 / 16384 / 16 with batches 1024 and 4096, against its f32
// sgemm rate of 186-200 GFLOP/s): `X·Dmᵀ` 195-206 ms for 77 GFLOP (0.5), the Gram matrix 455-490 ms
// for 155 GFLOP (0.6), `gram-picked`'s rows 366 ms for 129 GFLOP with about 230 rows per thread and
// step (0.45 + 16 / rows per thread), and, with the looser bounds re-checking 93 % of the steps,
// a Gram update 0.23-0.26 ns (47), a `gram-picked` update 0.48-0.50 ns (94), a plain scan 0.22 ns
// (42).
/// With bf16 products, measured on a CPU that has them.
const BF16_WEIGHTS: Weights = Weights {
    first: 0.5,
    gram_flop: 0.6,
    picked_flop: 0.45,
    picked_small: 16.0,
    gram_update: 47.0,
    picked_update: 94.0,
    plain_scan: 42.0,
};

/// What the cost model needs to know of a pursuit.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Rows.
    pub n: usize,
    /// Atoms.
    pub c: usize,
    /// Row dimension.
    pub d: usize,
    /// Pursuit steps.
    pub k: usize,
    /// The Gram matrix is already available (inference with a fixed dictionary), so its cost is
    /// not counted.
    pub gram_cached: bool,
    /// Bytes of one Gram entry (4 for f32, 2 for f16).
    pub gram_entry_bytes: usize,
    /// Gram rows [`Strategy::GramPicked`] would compute, when known from the picks of a similar
    /// batch ([`picked_gram_rows`]); otherwise estimated as if picks were spread evenly over the
    /// atoms, which real activations are not (they favour some atoms, so fewer rows are needed).
    pub picked_rows: Option<f64>,
    /// Worker threads the pursuit runs on (the caller's [`crate::Par`], not the rayon pool's size).
    pub threads: usize,
    /// Operand precision of the dense products.
    pub products: Products,
    /// The strategy the previous similar batch ran, whose buffers are in place: it is kept unless
    /// another is estimated [`SWITCH_GAIN`] cheaper, so that batches near the break-even point do
    /// not flip between strategies (and re-allocate their buffers) at every step.
    pub current: Option<Strategy>,
}

/// How much cheaper (as a fraction of its estimated work) another strategy must be to replace
/// the one in use.
pub const SWITCH_GAIN: f64 = 0.1;

/// The cost model behind [`choose_strategy`]: estimated work and memory of each strategy.
pub fn strategy_costs(w: &Workload) -> [StrategyCost; 3] {
    let gram_entry = w.gram_entry_bytes as f64;
    // One tile of correlations per worker thread.
    let threads = w.threads.max(1);
    let tile_bytes = 4.0 * w.c as f64 * (tile_rows(w.n, w.c, threads) * threads) as f64;
    let (n, c, d, k) = (w.n as f64, w.c as f64, w.d as f64, w.k as f64);
    let wt = match w.products {
        Products::F32 => F32_WEIGHTS,
        Products::Bf16 => BF16_WEIGHTS,
    };
    let first = wt.first * 2.0 * n * c * d;
    let updates = n * (k - 1.0).max(0.0) * c;
    let gram_update = wt.gram_update * if w.gram_entry_bytes > 2 { 4.0 / 3.0 } else { 1.0 };
    // Expected number of distinct atoms among n picks spread over c atoms.
    let distinct = c * (1.0 - (-n / c).exp());
    let picked_rows = w.picked_rows.unwrap_or((k - 1.0).max(0.0) * distinct);
    let rows_per_thread = picked_rows / (k - 1.0).max(1.0) / threads as f64;
    let picked_flop_weight = wt.picked_flop + wt.picked_small / rows_per_thread.max(1.0);
    let gram_flops = if w.gram_cached { 0.0 } else { wt.gram_flop * c * c * d };
    [
        StrategyCost {
            strategy: Strategy::Plain,
            flops: (first + wt.plain_scan * n * c) * k,
            bytes: tile_bytes,
        },
        StrategyCost {
            strategy: Strategy::Gram,
            flops: gram_flops + first + gram_update * updates,
            bytes: gram_entry * c * c + tile_bytes,
        },
        StrategyCost {
            strategy: Strategy::GramPicked,
            flops: first + picked_flop_weight * 2.0 * picked_rows * c * d + wt.picked_update * updates,
            // One tile of correlations, and the Gram rows of the atoms picked before the last
            // step, up to 2n of them.
            bytes: 4.0
                * ((picked_tile_rows(w.n, w.c) * w.c) as f64
                    + ((k - 1.0).max(1.0) * distinct).min(2.0 * n).min(c) * c),
        },
    ]
}

/// The cheapest strategy whose scratch fits in `memory_budget` bytes (Plain always fits).
pub fn choose_strategy(w: &Workload, memory_budget: usize) -> Strategy {
    if w.k <= 1 {
        return Strategy::Plain;
    }
    let costs = strategy_costs(w);
    let fits = |s: &&StrategyCost| s.strategy == Strategy::Plain || s.bytes <= memory_budget as f64;
    let best = costs.iter().filter(fits).min_by(|a, b| a.flops.total_cmp(&b.flops));
    let current = costs.iter().filter(fits).find(|s| Some(s.strategy) == w.current);
    match (best, current) {
        (Some(b), Some(cur)) if b.flops > (1.0 - SWITCH_GAIN) * cur.flops => cur.strategy,
        (Some(b), _) => b.strategy,
        _ => Strategy::Plain,
    }
}

/// What one pursuit showed: for `n` rows, `k` steps and a cached Gram matrix or not, the Gram rows
/// the `gram-picked` strategy needs for its picks, and the strategy that ran.
#[derive(Clone, Copy, Debug)]
struct Seen {
    n: usize,
    k: usize,
    cached: bool,
    rows: usize,
    strategy: Strategy,
}

/// Shapes remembered: a training run's full and last, smaller batch, and an evaluation's.
const SEEN_SHAPES: usize = 4;

/// The planner's state: what recent pursuits showed, and the Gram matrix of a stable dictionary.
#[derive(Debug, Default)]
pub struct Planner {
    /// Newest last.
    seen: Vec<Seen>,
    /// The Gram matrix of the stable dictionary `version`, when one was prepared.
    stable: Option<(u64, Gram)>,
}

impl Planner {
    /// The strategy for a pursuit of `n` rows over `c` atoms of dimension `d` with `k` steps,
    /// under `settings` (a forced strategy wins), remembering what similar batches showed.
    /// `cached`: a Gram matrix of the dictionary is at hand.
    pub fn strategy_for(
        &self,
        settings: &Settings,
        n: usize,
        c: usize,
        d: usize,
        k: usize,
        cached: bool,
    ) -> Strategy {
        if let Some(s) = settings.strategy {
            return s;
        }
        let previous = self.seen.iter().rev().find(|s| (s.n, s.k, s.cached) == (n, k, cached));
        let w = Workload {
            n,
            c,
            d,
            k,
            gram_cached: cached,
            gram_entry_bytes: settings.gram_precision.bytes(),
            products: settings.products,
            picked_rows: previous.map(|s| s.rows as f64),
            current: previous.map(|s| s.strategy),
            threads: settings.par.degree(),
        };
        choose_strategy(&w, settings.memory_budget)
    }

    /// Records what a pursuit showed: the Gram rows `gram-picked` computed (`picked_rows`, when it
    /// ran) or would have computed for the picks `atoms` (`n x k`).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        n: usize,
        c: usize,
        k: usize,
        cached: bool,
        strategy: Strategy,
        atoms: &[u32],
        picked_rows: u64,
    ) {
        let rows = match strategy {
            Strategy::GramPicked => picked_rows as usize,
            _ => picked_gram_rows(atoms, n, k, c),
        };
        self.seen.retain(|s| (s.n, s.k, s.cached) != (n, k, cached));
        if self.seen.len() == SEEN_SHAPES {
            self.seen.remove(0);
        }
        self.seen.push(Seen { n, k, cached, rows, strategy });
    }

    /// The Gram matrix prepared for the stable dictionary `version`, if any.
    pub fn stable_gram(&self, version: u64) -> Option<&Gram> {
        self.stable.as_ref().filter(|(v, _)| *v == version).map(|(_, g)| g)
    }

    /// Prepares (computes and keeps) the Gram matrix of the stable dictionary `version` when the
    /// planner would run the Gram strategy for `rows` rows of `k` steps over it, from the
    /// dictionary's bf16 operand when given. Returns whether a Gram matrix of it is now at hand.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &mut self,
        settings: &Settings,
        dict: &[f32],
        c: usize,
        d: usize,
        rows: usize,
        k: usize,
        version: u64,
        operand: Option<&Bf16Dictionary>,
    ) -> bool {
        if self.stable_gram(version).is_some() {
            return true;
        }
        self.stable = None;
        if self.strategy_for(settings, rows, c, d, k, false) != Strategy::Gram {
            return false;
        }
        let mut g = Gram::new();
        match operand {
            Some(op) => g.compute_bf16(dict, c, d, settings.gram_precision, op, settings.par),
            None => g.compute(dict, c, d, settings.gram_precision, settings.products, settings.par),
        }
        self.stable = Some((version, g));
        true
    }

    /// Drops the prepared Gram matrix (its dictionary changed, or the precision did).
    pub fn forget_stable(&mut self) {
        self.stable = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_model_follows_the_observed_picked_rows() {
        // SmolLM2-like batch, k=4, 16384 atoms: the picks of real rows share atoms, so few Gram
        // rows are needed and gram-picked wins; spread-out picks need the whole Gram matrix.
        let w = |picked_rows| Workload {
            n: 1024,
            c: 16384,
            d: 576,
            k: 4,
            gram_cached: false,
            gram_entry_bytes: 2,
            products: Products::F32,
            picked_rows,
            current: None,
            threads: 2,
        };
        assert_eq!(choose_strategy(&w(Some(1068.0)), 8 << 30), Strategy::GramPicked);
        assert_ne!(choose_strategy(&w(Some(12000.0)), 8 << 30), Strategy::GramPicked);
        // With 4096 atoms and 16 steps the Gram matrix is cheap: gram-picked only pays with very
        // few rows.
        let w16 = |picked_rows| Workload { c: 4096, k: 16, ..w(picked_rows) };
        assert_eq!(choose_strategy(&w16(Some(1587.0)), 8 << 30), Strategy::Gram);
        assert_eq!(choose_strategy(&w16(None), 8 << 30), Strategy::Gram);
        // Near the break-even point the strategy in use stays; far from it, the cheaper one wins.
        let cost = |w: &Workload, s| strategy_costs(w).iter().find(|c| c.strategy == s).unwrap().flops;
        let near = (100..4096)
            .map(|rows| w16(Some(rows as f64)))
            .find(|w| {
                let (picked, gram) = (cost(w, Strategy::GramPicked), cost(w, Strategy::Gram));
                picked < gram && picked > (1.0 - SWITCH_GAIN) * gram
            })
            .expect("a batch near the break-even point");
        assert_eq!(choose_strategy(&near, 8 << 30), Strategy::GramPicked);
        assert_eq!(
            choose_strategy(&Workload { current: Some(Strategy::Gram), ..near }, 8 << 30),
            Strategy::Gram
        );
        let far = w16(Some(100.0));
        assert_eq!(
            choose_strategy(&Workload { current: Some(Strategy::Gram), ..far }, 8 << 30),
            Strategy::GramPicked
        );
    }

    #[test]
    fn cost_model_prefers_gram_for_big_batches_and_respects_memory() {
        let w = |n, c, d, k, gram_cached, gram_entry_bytes| Workload {
            n,
            c,
            d,
            k,
            gram_cached,
            gram_entry_bytes,
            products: Products::F32,
            picked_rows: None,
            current: None,
            threads: 2,
        };
        assert_eq!(choose_strategy(&w(4096, 16384, 768, 16, false, 4), 8 << 30), Strategy::Gram);
        assert_ne!(choose_strategy(&w(4096, 65536, 768, 16, false, 2), 8 << 30), Strategy::Gram);
        assert_eq!(choose_strategy(&w(1024, 16384, 768, 1, false, 2), 8 << 30), Strategy::Plain);
        assert_eq!(choose_strategy(&w(64, 16384, 768, 16, true, 2), 8 << 30), Strategy::Gram);
        // 32768 atoms: 4 GiB of f32 Gram, 2 GiB in f16.
        assert_ne!(choose_strategy(&w(4096, 32768, 768, 32, false, 4), 3 << 30), Strategy::Gram);
        assert_eq!(choose_strategy(&w(4096, 32768, 768, 32, false, 2), 3 << 30), Strategy::Gram);
    }

    #[test]
    fn bf16_weights_choose_what_was_measured_fastest() {
        // `mpsae bench --d 576 --c 16384 --k 16 --products bf16` on a Zen 4 (SmolLM2 rows): batch
        // 1024 needed 6.66 Gram rows per batch row, gram-picked ran in 542 ms against the Gram
        // strategy's 609; batch 4096 needed 1.31, the Gram strategy ran in 992 against 1135.
        let w = |n: usize, rows_per_row: f64| Workload {
            n,
            c: 16384,
            d: 576,
            k: 16,
            gram_cached: false,
            gram_entry_bytes: 2,
            products: Products::Bf16,
            picked_rows: Some(rows_per_row * n as f64),
            current: None,
            threads: 2,
        };
        assert_eq!(choose_strategy(&w(1024, 6.66), 8 << 30), Strategy::GramPicked);
        assert_eq!(choose_strategy(&w(4096, 1.31), 8 << 30), Strategy::Gram);
        // bf16 halves the dense work, not the updates: every strategy is cheaper than with f32.
        for (n, r) in [(1024, 6.66), (4096, 1.31)] {
            let (b, f) =
                (strategy_costs(&w(n, r)), strategy_costs(&Workload { products: Products::F32, ..w(n, r) }));
            for (b, f) in b.iter().zip(&f) {
                assert!(b.flops < f.flops, "{:?}", b.strategy);
            }
        }
    }
}
