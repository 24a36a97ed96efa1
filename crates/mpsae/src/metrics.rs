//! Metrics, each defined once: the field's explained variance ([`ReconstructionSums`], the
//! headline figure of every door), and overcomplete's definitions kept for parity (`r2_score`,
//! L0, the dead-code tracker).

use crate::model::{Codes, Preprocess};
use serde::{Deserialize, Serialize};

/// The sums a reconstruction's metrics come from, over any number of rows (added batch by batch,
/// merged across processes): per-dimension sums of `x`, `Σ‖x‖²`, `Σ‖x - x̂‖²` and the residual
/// energy `Σ‖r_t‖²` after each pursuit step.
///
/// Its **explained variance** is SAEBench's core metric `explained_variance` (SAEBench PR #61,
/// SAELens PRs #443 and #710): `1 - Σ‖x - x̂‖² / Σ‖x - μ‖²`, with `μ` the per-dimension mean over
/// all the rows, both sums over all the rows (not a mean of per-row or per-batch ratios).
/// Invariant under a model's centring and scaling, so it is the same in the data's space and the
/// preprocessed one. `r2` is overcomplete's `r2_score` (a global scalar mean), kept for parity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionSums {
    /// Rows.
    pub rows: f64,
    /// `Σ_i x_id`, per dimension.
    pub sum_x: Vec<f64>,
    /// `Σ_i ‖x_i‖²`.
    pub sum_x2: f64,
    /// `Σ_i ‖x_i - x̂_i‖²`.
    pub sse: f64,
    /// `Σ_i ‖r_i,t‖²` after each pursuit step `t = 1..k`.
    pub energy: Vec<f64>,
}

impl ReconstructionSums {
    /// Empty sums for rows of width `d` and `k` pursuit steps.
    pub fn new(d: usize, k: usize) -> Self {
        ReconstructionSums { rows: 0.0, sum_x: vec![0.0; d], sum_x2: 0.0, sse: 0.0, energy: vec![0.0; k] }
    }

    /// Adds `n x d` rows `x`, their reconstructions `x_hat` and their pursuit's `n x k` residual
    /// energies.
    pub fn add(&mut self, x: &[f32], x_hat: &[f32], energy: &[f32]) {
        self.add_rows(x);
        self.sse += x.iter().zip(x_hat).map(|(&a, &b)| ((a - b) as f64).powi(2)).sum::<f64>();
        self.add_energy(energy);
    }

    /// Adds `n x d` rows `x` whose pursuit left the `n x k` residual energies `energy` (the last
    /// step's is `‖x - x̂‖²`), when the reconstructions themselves are not at hand.
    pub fn add_energies(&mut self, x: &[f32], energy: &[f32]) {
        self.add_rows(x);
        let k = self.energy.len();
        if k > 0 {
            self.sse += energy.iter().skip(k - 1).step_by(k).map(|&v| v as f64).sum::<f64>();
        }
        self.add_energy(energy);
    }

    fn add_rows(&mut self, x: &[f32]) {
        for row in x.chunks(self.sum_x.len().max(1)) {
            self.rows += 1.0;
            for (s, &a) in self.sum_x.iter_mut().zip(row) {
                *s += a as f64;
                self.sum_x2 += a as f64 * a as f64;
            }
        }
    }

    fn add_energy(&mut self, energy: &[f32]) {
        let k = self.energy.len();
        for (t, e) in self.energy.iter_mut().enumerate() {
            *e += energy.iter().skip(t).step_by(k).map(|&v| v as f64).sum::<f64>();
        }
    }

    /// Adds another set of sums (of rows of the same width).
    pub fn merge(&mut self, other: &ReconstructionSums) {
        if self.sum_x.is_empty() {
            *self = other.clone();
            return;
        }
        self.rows += other.rows;
        self.sum_x.iter_mut().zip(&other.sum_x).for_each(|(a, b)| *a += b);
        self.sum_x2 += other.sum_x2;
        self.sse += other.sse;
        if self.energy.len() != other.energy.len() {
            self.energy.resize(self.energy.len().max(other.energy.len()), 0.0);
        }
        self.energy.iter_mut().zip(&other.energy).for_each(|(a, b)| *a += b);
    }

    /// These sums, made on rows preprocessed by `p` (`x' = (x - mean)·scale`), in the data's own
    /// space.
    pub fn to_data_space(&self, p: &Preprocess) -> ReconstructionSums {
        let s = p.scale.map_or(1.0, |s| s as f64);
        let n = self.rows;
        let zero = vec![0f32; self.sum_x.len()];
        let m = p.mean.as_deref().unwrap_or(&zero);
        let cross: f64 = m.iter().zip(&self.sum_x).map(|(&m, &sx)| m as f64 * sx).sum();
        let m2: f64 = m.iter().map(|&m| (m as f64).powi(2)).sum();
        ReconstructionSums {
            rows: n,
            sum_x: self.sum_x.iter().zip(m).map(|(&sx, &m)| sx / s + n * m as f64).collect(),
            sum_x2: self.sum_x2 / (s * s) + 2.0 * cross / s + n * m2,
            sse: self.sse / (s * s),
            energy: self.energy.iter().map(|e| e / (s * s)).collect(),
        }
    }

    /// `Σ‖x - μ‖²` with the per-dimension mean `μ`.
    pub fn total_variance(&self) -> f64 {
        if self.rows == 0.0 {
            return 0.0;
        }
        let mean_sq: f64 = self.sum_x.iter().map(|s| s * s).sum::<f64>() / self.rows;
        (self.sum_x2 - mean_sq).max(0.0)
    }

    /// The explained variance (see the type's docs); NaN when the rows have no variance.
    pub fn explained_variance(&self) -> f64 {
        self.ratio(self.sse)
    }

    /// The explained variance of the partial reconstruction after each pursuit step.
    pub fn explained_variance_per_step(&self) -> Vec<f64> {
        self.energy.iter().map(|&e| self.ratio(e)).collect()
    }

    fn ratio(&self, residual: f64) -> f64 {
        let total = self.total_variance();
        if total > 0.0 {
            1.0 - residual / total
        } else {
            f64::NAN
        }
    }

    /// Entries (`rows x d`).
    pub fn entries(&self) -> f64 {
        self.rows * self.sum_x.len() as f64
    }

    /// `mean((x - x̂)²)` over all entries.
    pub fn mse(&self) -> f64 {
        self.sse / self.entries().max(1.0)
    }

    /// `mean((x - mean(x))²)` over all entries, with the global scalar mean (the reference's).
    pub fn scalar_variance(&self) -> f64 {
        let nd = self.entries().max(1.0);
        let mean = self.sum_x.iter().sum::<f64>() / nd;
        (self.sum_x2 / nd - mean * mean).max(0.0)
    }

    /// overcomplete's `r2_score` over these rows (global scalar mean, `+ 1e-6`).
    pub fn r2(&self) -> f64 {
        1.0 - self.mse() / (self.scalar_variance() + 1e-6)
    }
}

/// `r2_score(x, x_hat) = 1 - mean((x - x_hat)²) / (mean((x - mean(x))²) + 1e-6)`, where `mean(x)`
/// is the **global scalar** mean over all entries (the reference's definition;
/// [`ReconstructionSums::r2`] over the entries).
pub fn r2_score(x: &[f32], x_hat: &[f32]) -> f64 {
    let mut sums = ReconstructionSums::new(1, 0);
    sums.add(x, x_hat, &[]);
    sums.r2()
}

/// `mean((x - mean(x))²)` with the global scalar mean ([`ReconstructionSums::scalar_variance`]).
pub fn variance_scalar(x: &[f32]) -> f64 {
    let mut sums = ReconstructionSums::new(1, 0);
    sums.add(x, x, &[]);
    sums.scalar_variance()
}

/// Average number of codes with `|code| >= threshold` per row (`l0_eps(z, 0).sum()`; the
/// reference uses `threshold = 1e-6`). Repeated picks of an atom count once, on their sum.
pub fn l0_per_row(codes: &Codes, threshold: f32) -> f64 {
    if codes.n == 0 {
        return 0.0;
    }
    let total: usize =
        (0..codes.n).map(|i| codes.row_dense(i).iter().filter(|(_, v)| v.abs() >= threshold).count()).sum();
    total as f64 / codes.n as f64
}

/// `1 - mean(alive)` of an alive mask (0 for an empty one).
pub fn dead_ratio(alive: &[bool]) -> f64 {
    if alive.is_empty() {
        return 0.0;
    }
    1.0 - alive.iter().filter(|&&a| a).count() as f64 / alive.len() as f64
}

/// overcomplete's `DeadCodeTracker`: an atom is alive once it has had a **positive** code;
/// the dead ratio is the fraction never seen alive.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadCodeTracker {
    alive: Vec<bool>,
}

impl DeadCodeTracker {
    /// A tracker over `c` atoms, all dead.
    pub fn new(c: usize) -> Self {
        DeadCodeTracker { alive: vec![false; c] }
    }

    /// A tracker resuming from a saved alive mask.
    pub fn from_alive(alive: Vec<bool>) -> Self {
        DeadCodeTracker { alive }
    }

    /// The alive mask, consumed.
    pub fn into_alive(self) -> Vec<bool> {
        self.alive
    }

    /// Marks the atoms with a positive dense code in some row as alive.
    pub fn update(&mut self, codes: &Codes) {
        for i in 0..codes.n {
            for (a, v) in codes.row_dense(i) {
                if v > 0.0 {
                    self.alive[a] = true;
                }
            }
        }
    }

    /// Marks the given atoms as alive (positive codes seen elsewhere, e.g. on other processes).
    pub fn mark_alive(&mut self, atoms: impl Iterator<Item = usize>) {
        for a in atoms {
            self.alive[a] = true;
        }
    }

    /// `1 - mean(alive)`.
    pub fn dead_ratio(&self) -> f64 {
        dead_ratio(&self.alive)
    }

    /// Which atoms are alive.
    pub fn alive(&self) -> &[bool] {
        &self.alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(atoms: Vec<u32>, values: Vec<f32>, n: usize, c: usize) -> Codes {
        let k = atoms.len() / n;
        Codes { n, c, k, atoms, values }
    }

    #[test]
    fn r2_uses_the_global_scalar_mean() {
        // x = [[0, 2], [2, 4]]: global mean 2, var = (4 + 0 + 0 + 4)/4 = 2.
        let x = [0.0, 2.0, 2.0, 4.0];
        let x_hat = [0.0, 2.0, 2.0, 3.0]; // ss_res = 1/4
        assert!((r2_score(&x, &x_hat) - (1.0 - 0.25 / (2.0 + 1e-6))).abs() < 1e-12);
        assert!((variance_scalar(&x) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn l0_counts_distinct_atoms_on_their_sums() {
        // Row 0 picks atom 1 twice (sum 0.5, counts once) and atom 2 with 1e-7 (below threshold);
        // row 1 picks atom 0 twice, cancelling exactly (not counted), then atom 3.
        let c = codes(vec![1, 1, 2, 0, 0, 3], vec![0.25, 0.25, 1e-7, 0.5, -0.5, 2.0], 2, 4);
        assert!((l0_per_row(&c, 1e-6) - 1.0).abs() < 1e-12);
        let c = codes(vec![1, 2, 0, 3], vec![1.0, 1.0, 1.0, 0.0], 2, 4);
        assert!((l0_per_row(&c, 1e-6) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn dead_tracker_counts_positive_codes_only() {
        let c = codes(vec![0, 1, 2, 2], vec![1.0, -1.0, 0.5, -0.5], 2, 4);
        let mut t = DeadCodeTracker::new(4);
        t.update(&c);
        // atom 0 positive; atom 1 negative only; atom 2 sums to 0 in row 1 (0.5 - 0.5); atom 3 unused.
        assert_eq!(t.alive(), &[true, false, false, false]);
        assert!((t.dead_ratio() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn explained_variance_is_the_fields_with_a_per_dimension_mean() {
        // Rows [1, -1] and [-1, 1]: per-dimension mean 0, Σ‖x - μ‖² = 4. k = 2: the residual
        // energies sum to 3 after step 1 and 0.5 after step 2 (the reconstruction's).
        let x = [1.0, -1.0, -1.0, 1.0];
        let energy = [1.0, 0.5, 2.0, 0.0];
        let mut sums = ReconstructionSums::new(2, 2);
        sums.add_energies(&x, &energy);
        let ev = sums.explained_variance_per_step();
        assert!((ev[0] - 0.25).abs() < 1e-12 && (ev[1] - 0.875).abs() < 1e-12, "{ev:?}");
        assert!((sums.explained_variance() - 0.875).abs() < 1e-12);
        // A centring and a scaling leave it unchanged.
        let p = Preprocess { mean: Some(vec![0.5, -2.0]), scale: Some(3.0) };
        assert!((sums.to_data_space(&p).explained_variance() - 0.875).abs() < 1e-12);
    }
}
