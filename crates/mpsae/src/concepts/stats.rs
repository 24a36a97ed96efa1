//! The statistics of every concept, gathered in one streaming pass over the codes: memory
//! O(c·top + c·samples + distinct parent/child pairs) plus the rows' sparse codes (n·k, kept for
//! the contexts of the examples), never the n x c codes.

use crate::metrics::ReconstructionSums;
use crate::model::Codes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

/// Bins of the activation histogram on each side of zero: |value| from 10^LOG_MIN to 10^LOG_MAX
/// in log steps, plus one bin below and one above.
pub const LOG_BINS: usize = 20;
/// Smallest |value| with a bin of its own (log10).
pub const LOG_MIN: f64 = -3.0;
/// Largest |value| with a bin of its own (log10).
pub const LOG_MAX: f64 = 2.0;
/// Quantiles at which example rows are shown.
pub const QUANTILES: [f64; 5] = [0.05, 0.25, 0.5, 0.75, 0.95];

/// Histogram bin of a non-zero `value`: negatives in `0..LOG_BINS + 2` (largest |value| first),
/// positives in `LOG_BINS + 2..2·(LOG_BINS + 2)` (smallest first).
pub fn value_bin(value: f32) -> usize {
    let side = LOG_BINS + 2;
    let l = (value.abs() as f64).log10();
    let b = if l < LOG_MIN {
        0
    } else if l >= LOG_MAX {
        side - 1
    } else {
        1 + ((l - LOG_MIN) / (LOG_MAX - LOG_MIN) * LOG_BINS as f64) as usize
    };
    if value < 0.0 {
        side - 1 - b
    } else {
        side + b
    }
}

/// A value ordered for heaps: by value, then the earlier row first.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry(f32, usize);
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then(o.1.cmp(&self.1))
    }
}

/// Everything known of one concept after the pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Concept {
    /// Rows whose code on it is not zero.
    pub rows: u64,
    /// Picks of it (a row may pick it more than once).
    pub picks: u64,
    /// Sum of |code| over those rows.
    pub sum_abs: f64,
    /// Rows with a positive code.
    pub positive: u64,
    /// Picks at each pursuit step (0-based).
    pub steps: Vec<u64>,
    /// Histogram of its non-zero codes ([`value_bin`]).
    pub histogram: Vec<u64>,
    /// The rows with the largest codes, largest first (ties: earlier row first).
    pub top: Vec<(f32, usize)>,
    /// Rows at the [`QUANTILES`] of its non-zero codes (from a uniform sample of them).
    pub quantiles: Vec<(f64, f32, usize)>,
    /// Atoms most often picked just before it, with counts (most first; ties: lower atom).
    pub parents: Vec<(u32, u64)>,
    /// Atoms most often picked just after it.
    pub children: Vec<(u32, u64)>,
}

impl Concept {
    /// Share of rows where it fires.
    pub fn frequency(&self, n: usize) -> f64 {
        self.rows as f64 / n.max(1) as f64
    }
    /// Mean |code| where it fires.
    pub fn mean_abs(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            self.sum_abs / self.rows as f64
        }
    }
    /// Share of its codes that are positive.
    pub fn positive_share(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            self.positive as f64 / self.rows as f64
        }
    }
    /// Mean pursuit step of its picks (1-based).
    pub fn mean_step(&self) -> f64 {
        let n: u64 = self.steps.iter().sum();
        if n == 0 {
            0.0
        } else {
            self.steps.iter().enumerate().map(|(t, &c)| (t + 1) as f64 * c as f64).sum::<f64>() / n as f64
        }
    }
}

/// The streaming accumulator.
pub struct Accumulator {
    c: usize,
    k: usize,
    top: usize,
    sample: usize,
    concepts: Vec<Concept>,
    heaps: Vec<BinaryHeap<Reverse<Entry>>>,
    reservoirs: Vec<Vec<Entry>>,
    seen: Vec<u64>,
    pairs: HashMap<(u32, u32), u64>,
    rng: ChaCha8Rng,
    rows: usize,
    /// Every row's picks, kept for the examples' contexts.
    pub atoms: Vec<u32>,
    /// Every row's values.
    pub values: Vec<f32>,
    /// The reconstruction's sums, for the explained variance per step.
    sums: Option<ReconstructionSums>,
}

/// The result of the pass.
pub struct ConceptStats {
    /// Rows seen.
    pub rows: usize,
    /// Pursuit steps.
    pub k: usize,
    /// One entry per concept.
    pub concepts: Vec<Concept>,
    /// Explained variance after each pursuit step (SAEBench's definition, as everywhere:
    /// [`ReconstructionSums`]).
    pub explained_variance_per_step: Vec<f64>,
    /// Every row's picks (`rows x k`, pursuit order) and values.
    pub atoms: Vec<u32>,
    /// See `atoms`.
    pub values: Vec<f32>,
}

impl ConceptStats {
    /// Row `i`'s dense code on concept `j` (its picks of `j` summed).
    pub fn code(&self, i: usize, j: usize) -> f32 {
        let k = self.k;
        (0..k).filter(|&t| self.atoms[i * k + t] == j as u32).fold(0.0, |s, t| s + self.values[i * k + t])
    }
}

impl Accumulator {
    /// An accumulator over `c` concepts and `k` steps keeping `top` rows and a sample of
    /// `sample` codes per concept (seeded).
    pub fn new(c: usize, k: usize, top: usize, sample: usize, seed: u64) -> Self {
        Accumulator {
            c,
            k,
            top,
            sample,
            concepts: (0..c)
                .map(|_| Concept {
                    steps: vec![0; k],
                    histogram: vec![0; 2 * (LOG_BINS + 2)],
                    ..Default::default()
                })
                .collect(),
            heaps: (0..c).map(|_| BinaryHeap::new()).collect(),
            reservoirs: vec![Vec::new(); c],
            seen: vec![0; c],
            pairs: HashMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            rows: 0,
            atoms: Vec::new(),
            values: Vec::new(),
            sums: None,
        }
    }

    /// Adds a batch: its input rows `x` (as encoded), codes and residual energies (`n x k`).
    pub fn add(&mut self, x: &[f32], codes: &Codes, energy: &[f32]) {
        let (k, n) = (self.k, codes.n);
        if n > 0 {
            let d = x.len() / n;
            self.sums.get_or_insert_with(|| ReconstructionSums::new(d, k)).add_energies(x, energy);
        }
        for i in 0..n {
            let row = self.rows + i;
            let atoms = &codes.atoms[i * k..(i + 1) * k];
            for (t, &a) in atoms.iter().enumerate() {
                if a == Codes::NO_ATOM {
                    continue;
                }
                let c = &mut self.concepts[a as usize];
                c.picks += 1;
                c.steps[t] += 1;
                if t > 0 && atoms[t - 1] != Codes::NO_ATOM {
                    *self.pairs.entry((atoms[t - 1], a)).or_default() += 1;
                }
            }
            for (j, v) in codes.row_dense(i) {
                if v == 0.0 {
                    continue;
                }
                let c = &mut self.concepts[j];
                c.rows += 1;
                c.sum_abs += v.abs() as f64;
                c.positive += (v > 0.0) as u64;
                c.histogram[value_bin(v)] += 1;
                let e = Entry(v, row);
                let heap = &mut self.heaps[j];
                if heap.len() < self.top {
                    heap.push(Reverse(e));
                } else if heap.peek().is_some_and(|Reverse(min)| e > *min) {
                    heap.pop();
                    heap.push(Reverse(e));
                }
                // Reservoir sampling (algorithm R).
                self.seen[j] += 1;
                let m = self.seen[j];
                let res = &mut self.reservoirs[j];
                if res.len() < self.sample {
                    res.push(e);
                } else {
                    let r = self.rng.gen_range(0..m) as usize;
                    if r < self.sample {
                        res[r] = e;
                    }
                }
            }
        }
        self.atoms.extend_from_slice(&codes.atoms);
        self.values.extend_from_slice(&codes.values);
        self.rows += n;
    }

    /// The statistics, with `related` parents and children per concept.
    pub fn finish(mut self, related: usize) -> ConceptStats {
        let mut parents: Vec<Vec<(u32, u64)>> = vec![Vec::new(); self.c];
        let mut children: Vec<Vec<(u32, u64)>> = vec![Vec::new(); self.c];
        for (&(p, ch), &n) in &self.pairs {
            parents[ch as usize].push((p, n));
            children[p as usize].push((ch, n));
        }
        let best = |v: &mut Vec<(u32, u64)>| {
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(related);
        };
        for (j, c) in self.concepts.iter_mut().enumerate() {
            let mut top: Vec<(f32, usize)> =
                std::mem::take(&mut self.heaps[j]).into_iter().map(|Reverse(Entry(v, r))| (v, r)).collect();
            top.sort_by(|a, b| Entry(b.0, b.1).cmp(&Entry(a.0, a.1)));
            c.top = top;
            let mut res = std::mem::take(&mut self.reservoirs[j]);
            res.sort();
            c.quantiles = if res.is_empty() {
                Vec::new()
            } else {
                QUANTILES
                    .iter()
                    .map(|&q| {
                        let e = res[((q * (res.len() - 1) as f64).round() as usize).min(res.len() - 1)];
                        (q, e.0, e.1)
                    })
                    .collect()
            };
            best(&mut parents[j]);
            best(&mut children[j]);
            c.parents = std::mem::take(&mut parents[j]);
            c.children = std::mem::take(&mut children[j]);
        }
        ConceptStats {
            rows: self.rows,
            k: self.k,
            concepts: self.concepts,
            explained_variance_per_step: self
                .sums
                .map(|s| s.explained_variance_per_step())
                .unwrap_or_default(),
            atoms: self.atoms,
            values: self.values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random sparse codes: `n` rows, `k` picks among `c` atoms (repeats allowed), signed values.
    fn codes(n: usize, c: usize, k: usize, seed: u64) -> Codes {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let atoms = (0..n * k).map(|_| rng.gen_range(0..c as u32)).collect();
        let values = (0..n * k).map(|_| (rng.gen_range(-1.0f32..3.0) * 100.0).round() / 100.0).collect();
        Codes { n, c, k, atoms, values }
    }

    #[test]
    fn statistics_match_brute_force() {
        let (n, c, k, top) = (300, 12, 4, 7);
        let all = codes(n, c, k, 1);
        let mut acc = Accumulator::new(c, k, top, 10_000, 0);
        // Fed in uneven batches, as the pass does.
        let mut start = 0;
        for len in [1usize, 50, 99, 150] {
            let part = Codes {
                n: len,
                c,
                k,
                atoms: all.atoms[start * k..(start + len) * k].to_vec(),
                values: all.values[start * k..(start + len) * k].to_vec(),
            };
            acc.add(&vec![0.5; len * 3], &part, &vec![0.1; len * k]);
            start += len;
        }
        let stats = acc.finish(3);
        let dense = all.to_dense();
        for j in 0..c {
            let s = &stats.concepts[j];
            let col: Vec<(f32, usize)> =
                (0..n).map(|i| (dense[i * c + j], i)).filter(|(v, _)| *v != 0.0).collect();
            assert_eq!(s.rows, col.len() as u64, "frequency of {j}");
            assert_eq!(s.positive, col.iter().filter(|(v, _)| *v > 0.0).count() as u64);
            let mut want = col.clone();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            want.truncate(top);
            assert_eq!(s.top, want, "top rows of {j}");
            // Pick steps and parents/children by brute force.
            let mut steps = vec![0u64; k];
            let mut parents: HashMap<u32, u64> = HashMap::new();
            let mut children: HashMap<u32, u64> = HashMap::new();
            for i in 0..n {
                for t in 0..k {
                    if all.atoms[i * k + t] == j as u32 {
                        steps[t] += 1;
                        if t > 0 {
                            *parents.entry(all.atoms[i * k + t - 1]).or_default() += 1;
                        }
                        if t + 1 < k {
                            *children.entry(all.atoms[i * k + t + 1]).or_default() += 1;
                        }
                    }
                }
            }
            assert_eq!(s.steps, steps, "pick steps of {j}");
            let best = |m: HashMap<u32, u64>| {
                let mut v: Vec<(u32, u64)> = m.into_iter().collect();
                v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                v.truncate(3);
                v
            };
            assert_eq!(s.parents, best(parents), "parents of {j}");
            assert_eq!(s.children, best(children), "children of {j}");
            // Quantiles: the sample holds every code here, so they are exact order statistics.
            let mut sorted: Vec<Entry> = col.iter().map(|&(v, i)| Entry(v, i)).collect();
            sorted.sort();
            for &(q, v, i) in &s.quantiles {
                let e = sorted[(q * (sorted.len() - 1) as f64).round() as usize];
                assert_eq!((v, i), (e.0, e.1), "quantile {q} of {j}");
            }
            let hist: u64 = s.histogram.iter().sum();
            assert_eq!(hist, s.rows);
        }
        assert_eq!(stats.code(5, stats.atoms[5 * k] as usize), dense[5 * c + stats.atoms[5 * k] as usize]);
    }

    #[test]
    fn value_bins_are_ordered_and_signed() {
        let vals = [-150.0f32, -1.0, -0.01, -1e-5, 1e-5, 0.01, 1.0, 150.0];
        let bins: Vec<usize> = vals.iter().map(|&v| value_bin(v)).collect();
        assert!(bins.windows(2).all(|w| w[0] < w[1]), "{bins:?}");
        assert_eq!(bins[0], 0);
        assert_eq!(*bins.last().unwrap(), 2 * (LOG_BINS + 2) - 1);
    }
}
