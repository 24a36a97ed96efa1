//! Metrics with overcomplete's definitions: plain functions.

use crate::model::Codes;

/// `r2_score(x, x_hat) = 1 - mean((x - x_hat)²) / (mean((x - mean(x))²) + 1e-6)`, where `mean(x)`
/// is the **global scalar** mean over all entries (the reference's definition).
pub fn r2_score(x: &[f32], x_hat: &[f32]) -> f64 {
    let n = x.len().max(1) as f64;
    let ss_res = x.iter().zip(x_hat).map(|(&a, &b)| ((a - b) as f64).powi(2)).sum::<f64>() / n;
    1.0 - ss_res / (variance_scalar(x) + 1e-6)
}

/// `mean((x - mean(x))²)` with the global scalar mean.
pub fn variance_scalar(x: &[f32]) -> f64 {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n
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

/// Explained variance after each pursuit step `1..=k`: `1 - mean(r_t²) / (var(x) + 1e-6)`, the R2
/// of the partial reconstruction after `t` steps (the last one equals the model's R2 up to
/// rounding). `energy` is the pursuit's `n x k` squared residual norms.
pub fn explained_variance_per_step(x: &[f32], energy: &[f32], k: usize) -> Vec<f64> {
    let nd = x.len().max(1) as f64;
    let var = variance_scalar(x) + 1e-6;
    (0..k)
        .map(|t| {
            let sum: f64 = energy.iter().skip(t).step_by(k.max(1)).map(|&e| e as f64).sum();
            1.0 - sum / nd / var
        })
        .collect()
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
    fn explained_variance_per_step_is_partial_r2() {
        let x = [1.0, -1.0, 1.0, -1.0]; // n = 2, d = 2, var = 1
        let energy = [1.0, 0.5, 2.0, 0.0]; // k = 2: step 1 sum 3, step 2 sum 0.5
        let ev = explained_variance_per_step(&x, &energy, 2);
        assert!((ev[0] - (1.0 - 0.75 / (1.0 + 1e-6))).abs() < 1e-9);
        assert!((ev[1] - (1.0 - 0.125 / (1.0 + 1e-6))).abs() < 1e-9);
    }
}
