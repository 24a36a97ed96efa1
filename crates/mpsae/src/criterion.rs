//! Training criteria: the loss and its gradients with respect to everything it reads.
//!
//! Every criterion has overcomplete's signature `criterion(x, x_hat, residual, codes,
//! dictionary)` and returns, besides the loss, the gradients the sparse backward needs.

use crate::model::Codes;

/// What a criterion reads. Matrices are row-major: `x`, `x_hat`, `residual` are `n x d`,
/// `dictionary` is `c x d` (the training dictionary, `normalize(W)·exp(m)`).
#[derive(Clone, Copy)]
pub struct CriterionInput<'a> {
    /// The input batch.
    pub x: &'a [f32],
    /// The reconstruction.
    pub x_hat: &'a [f32],
    /// The final pursuit residual (`x - x_hat` up to rounding).
    pub residual: &'a [f32],
    /// The sparse codes.
    pub codes: &'a Codes,
    /// The dictionary.
    pub dictionary: &'a [f32],
    /// Rows.
    pub n: usize,
    /// Row dimension.
    pub d: usize,
    /// Rows of the whole batch the loss averages over: `n` unless these rows are a shard of a
    /// batch split over processes, whose losses and gradients then add up to the batch's.
    pub batch_rows: usize,
    /// The micro-shards of these rows within the whole batch.
    pub shards: &'a crate::model::ShardSpec,
    /// The whole batch's statistics ([`Criterion::batch_statistics`], summed over processes).
    pub batch: Option<&'a [f64]>,
    /// Whether the caller wants dL/dx: when false a criterion may leave
    /// [`CriterionOutput::g_x`] out (training does not need it).
    pub input_gradient: bool,
}

/// A criterion's loss and gradients. Absent gradients are zero.
#[derive(Clone, Debug, Default)]
pub struct CriterionOutput {
    /// The loss.
    pub loss: f64,
    /// dL/dx_hat, `n x d`.
    pub g_x_hat: Vec<f32>,
    /// dL/dx through the loss's own use of `x`, `n x d`.
    pub g_x: Option<Vec<f32>>,
    /// dL/dresidual, `n x d`.
    pub g_residual: Option<Vec<f32>>,
    /// dL/d(value of each pick), `n x k` (see [`Codes::gradient_of_dense`]).
    pub g_codes: Option<Vec<f32>>,
    /// dL/ddictionary, `c x d`.
    pub g_dictionary: Option<Vec<f32>>,
    /// Named parts of the loss, for logs (`recon`, `revive`, ...).
    pub parts: Vec<(&'static str, f64)>,
}

/// A training loss. Implement it to train with your own objective.
pub trait Criterion: Send + Sync {
    /// Short name for logs and configuration files.
    fn name(&self) -> String;
    /// The loss and its gradients.
    fn evaluate(&self, input: &CriterionInput) -> CriterionOutput;

    /// Statistics over the whole batch that [`Criterion::evaluate`] needs beyond these rows, as
    /// a vector the processes sharing the batch sum (exactly, when each fills the slots of its
    /// own shards and leaves the others 0). `None` (the default): the criterion is a sum over
    /// rows and needs none.
    fn batch_statistics(&self, _input: &CriterionInput) -> Option<Vec<f64>> {
        None
    }
}

/// The mean squared error `mean((x - x_hat)²)` over all `n·d` entries (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Mse;

/// Loss and gradients of the MSE, shared by the criteria that build on it.
fn mse_parts(input: &CriterionInput) -> (f64, Vec<f32>, Option<Vec<f32>>) {
    let nd = (input.batch_rows.max(input.n) * input.d).max(1) as f64;
    let scale = (2.0 / nd) as f32;
    let mut sum = 0f64;
    let mut g_x_hat = Vec::with_capacity(input.x.len());
    for (&a, &b) in input.x.iter().zip(input.x_hat) {
        let diff = a - b;
        sum += diff as f64 * diff as f64;
        g_x_hat.push(-scale * diff);
    }
    // dL/dx = -dL/dx_hat, bit for bit (the negation is exact).
    let g_x = input.input_gradient.then(|| g_x_hat.iter().map(|&g| -g).collect());
    (sum / nd, g_x_hat, g_x)
}

impl Criterion for Mse {
    fn name(&self) -> String {
        "mse".into()
    }

    fn evaluate(&self, input: &CriterionInput) -> CriterionOutput {
        let (loss, g_x_hat, g_x) = mse_parts(input);
        CriterionOutput { loss, g_x_hat, g_x, parts: vec![("recon", loss)], ..Default::default() }
    }
}

/// The auxiliary "revive" loss of overcomplete's MpSAE documentation:
/// `mse - coefficient · mean((residual · dictionaryᵀ)[:, dead])`, where an atom is dead in the
/// batch when its largest code over the batch (`codes.amax(0)`, zeros included) is below
/// `threshold`, and the term is applied only when more than `min_dead` atoms are dead.
#[derive(Clone, Copy, Debug)]
pub struct Revive {
    /// Atoms whose batch maximum code is below this are dead (1e-2).
    pub threshold: f32,
    /// The term applies when strictly more atoms than this are dead (10).
    pub min_dead: usize,
    /// Weight of the term (1e-2).
    pub coefficient: f64,
}

impl Default for Revive {
    fn default() -> Self {
        Revive { threshold: 1e-2, min_dead: 10, coefficient: 1e-2 }
    }
}

impl Revive {
    /// The batch's dead-atom mask (`codes.amax(0) < threshold`).
    pub fn dead_mask(&self, codes: &Codes) -> Vec<bool> {
        let mut block = vec![0f64; 2 * codes.c];
        fill_block(&mut block, codes, 0..codes.n, None);
        self.from_statistics(&block, codes.c, 0, codes.n).0
    }
}

/// One shard's slot of the revive statistics over `rows`: each atom's largest code and the
/// number of rows coding it, then (with `residual`, rows of width `d`) the residuals' sum.
fn fill_block(
    block: &mut [f64],
    codes: &Codes,
    rows: std::ops::Range<usize>,
    residual: Option<(&[f32], usize)>,
) {
    let c = codes.c;
    block[..c].iter_mut().for_each(|m| *m = f64::NEG_INFINITY);
    for i in rows {
        for (a, value) in codes.row_dense(i) {
            block[a] = block[a].max(value as f64);
            block[c + a] += 1.0;
        }
        if let Some((res, d)) = residual {
            block[2 * c..].iter_mut().zip(&res[i * d..(i + 1) * d]).for_each(|(t, &x)| *t += x as f64);
        }
    }
}

impl Revive {
    /// Slots of one shard in the batch statistics: the atoms' largest code, the number of rows
    /// with a code on each atom, and the sum of the residuals.
    fn slot(c: usize, d: usize) -> usize {
        2 * c + d
    }

    /// From the batch statistics: the dead mask, and the sum of the batch's residuals (shards
    /// added in order, so that it does not depend on which process computed which shard).
    fn from_statistics(&self, stats: &[f64], c: usize, d: usize, n: usize) -> (Vec<bool>, Vec<f64>) {
        let slot = Revive::slot(c, d);
        let mut max = vec![f64::NEG_INFINITY; c];
        let mut rows_with = vec![0f64; c];
        let mut sum_r = vec![0f64; d];
        for s in stats.chunks(slot) {
            for a in 0..c {
                max[a] = max[a].max(s[a]);
                rows_with[a] += s[c + a];
            }
            sum_r.iter_mut().zip(&s[2 * c..]).for_each(|(t, v)| *t += v);
        }
        let dead = (0..c)
            .map(|a| {
                let m = if (rows_with[a] as usize) < n { max[a].max(0.0) } else { max[a] };
                (m as f32) < self.threshold
            })
            .collect();
        (dead, sum_r)
    }
}

impl Criterion for Revive {
    fn name(&self) -> String {
        "revive".into()
    }

    fn batch_statistics(&self, input: &CriterionInput) -> Option<Vec<f64>> {
        let (c, d) = (input.codes.c, input.d);
        let spec = input.shards;
        let slot = Revive::slot(c, d);
        let mut v = vec![0f64; slot * spec.total_shards];
        for (s, w) in spec.bounds.windows(2).enumerate() {
            let block = &mut v[(spec.first_shard + s) * slot..(spec.first_shard + s + 1) * slot];
            fill_block(block, input.codes, w[0]..w[1], Some((input.residual, d)));
        }
        Some(v)
    }

    fn evaluate(&self, input: &CriterionInput) -> CriterionOutput {
        let (recon, g_x_hat, g_x) = mse_parts(input);
        let mut out = CriterionOutput {
            loss: recon,
            g_x_hat,
            g_x,
            parts: vec![("recon", recon)],
            ..Default::default()
        };
        let (n, d) = (input.batch_rows.max(input.n), input.d);
        // The whole batch's dead mask and residual sum (this call's rows alone when no batch
        // statistics were gathered).
        let own;
        let stats = match input.batch {
            Some(s) => s,
            None => {
                own = self.batch_statistics(input).expect("revive has batch statistics");
                &own
            }
        };
        let (dead, sum_r) = self.from_statistics(stats, input.codes.c, d, n);
        let ndead = dead.iter().filter(|&&b| b).count();
        if ndead <= self.min_dead || n == 0 {
            return out;
        }
        // mean over n·ndead of r_i·D_j = (Σ_i r_i)·(Σ_dead D_j) / (n·ndead).
        let mut sum_d = vec![0f64; d];
        for (atom, _) in input.dictionary.chunks(d).zip(&dead).filter(|(_, &b)| b) {
            sum_d.iter_mut().zip(atom).for_each(|(s, &v)| *s += v as f64);
        }
        let denom = (n * ndead) as f64;
        let term = sum_r.iter().zip(&sum_d).map(|(a, b)| a * b).sum::<f64>() / denom;
        // These rows' share of the batch's term, so that the processes' losses add up to it.
        out.loss = recon - self.coefficient * term * (input.n as f64 / n as f64);
        out.parts.push(("revive", term));
        let coef = -self.coefficient / denom;
        let g_row: Vec<f32> = sum_d.iter().map(|&s| (coef * s) as f32).collect();
        out.g_residual = Some(g_row.iter().copied().cycle().take(input.n * d).collect());
        let g_atom: Vec<f32> = sum_r.iter().map(|&s| (coef * s) as f32).collect();
        let mut g_dict = vec![0f32; input.dictionary.len()];
        for (row, _) in g_dict.chunks_mut(d).zip(&dead).filter(|(_, &b)| b) {
            row.copy_from_slice(&g_atom);
        }
        out.g_dictionary = Some(g_dict);
        out
    }
}
