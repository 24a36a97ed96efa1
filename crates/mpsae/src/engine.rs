//! How the model runs its kernels: threads, pursuit strategy and memory budget.

use mpsae_kernels::gram::Precision;
use mpsae_kernels::pursuit::{choose_strategy, Strategy, Workload};
use mpsae_kernels::Par;

/// Execution settings of a model (not part of its configuration: they change speed, not results
/// beyond float rounding).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Engine {
    /// Parallelism of every kernel.
    pub par: Par,
    /// Force a pursuit strategy; `None` lets the cost model choose per call.
    pub strategy: Option<Strategy>,
    /// Scratch memory the pursuit may use (Gram matrix, correlations), in bytes.
    pub memory_budget: usize,
    /// Storage of the Gram matrix: f16 (default; half the memory and traffic, picks re-checked
    /// exactly near ties) or f32.
    pub gram_precision: Precision,
}

impl Default for Engine {
    fn default() -> Self {
        Engine { par: Par::rayon(), strategy: None, memory_budget: 8 << 30, gram_precision: Precision::F16 }
    }
}

impl Engine {
    /// The strategy for a pursuit of `n` rows over `c` atoms of dimension `d` with `k` steps.
    /// `gram_cached`: the Gram matrix of the dictionary is already computed; `previous`: what a
    /// similar batch showed, when there was one: the Gram rows the `gram-picked` strategy needs
    /// for its picks ([`mpsae_kernels::pursuit::picked_gram_rows`]) and the strategy it ran
    /// (kept unless another is clearly cheaper).
    pub fn strategy_for(
        &self,
        n: usize,
        c: usize,
        d: usize,
        k: usize,
        gram_cached: bool,
        previous: Option<(usize, Strategy)>,
    ) -> Strategy {
        self.strategy.unwrap_or_else(|| {
            let w = Workload {
                n,
                c,
                d,
                k,
                gram_cached,
                gram_entry_bytes: self.gram_precision.bytes(),
                picked_rows: previous.map(|(rows, _)| rows as f64),
                current: previous.map(|(_, s)| s),
            };
            choose_strategy(&w, self.memory_budget)
        })
    }
}
