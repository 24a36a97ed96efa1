//! The CPU backend: the kernels of this crate (gemm or a system OpenBLAS for the dense products,
//! AVX2 builds of the hot loops), its pursuit planned per call by [`planner::Planner`].

pub mod planner;

use crate::adam::{adam_step, AdamParams};
use crate::backend::{Backend, DictionaryUse, PursuitRun, Settings};
use crate::backward::{backward, BackwardInputs, BackwardScratch};
use crate::bf16::{Bf16Dictionary, Products};
use crate::gram::Gram;
use crate::memory::huge_vec;
use crate::normalize::{normalize_rows, RowNorm};
use crate::pursuit::{pursuit, pursuit_bf16, Output, Problem, Strategy};
use crate::{axpy, Par};
use planner::Planner;
use rayon::prelude::*;
use std::time::Instant;

/// The CPU backend. Keeps its buffers between calls (correlation scratch, `gram-picked`'s Gram
/// rows, the training dictionary's Gram matrix, the backward's shard accumulators), so that a
/// training loop neither allocates nor page-faults them in at every step.
#[derive(Debug)]
pub struct CpuBackend {
    settings: Settings,
    planner: Planner,
    /// Correlation scratch of the pursuit.
    scratch: Vec<f32>,
    /// Gram rows kept by the `gram-picked` strategy.
    gram_rows: Vec<f32>,
    /// Gram matrix of the last transient (training) dictionary.
    gram: Gram,
    /// The backward pass's shard accumulators.
    backward: BackwardScratch,
    /// The bf16 operand of the last dictionary, with its version when it is a stable one (then
    /// reused as is by the next pursuits of that version; a transient one's buffers are refilled).
    bf16: Option<(Option<u64>, Bf16Dictionary)>,
    /// The strategy the buffers above were sized for.
    strategy: Option<Strategy>,
}

impl CpuBackend {
    /// The planner (for diagnostics and benchmarks: which strategy the next call would run).
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// The bf16 operand of `dict` when the settings ask for bf16 products, taken out of `self.bf16`
    /// (the caller puts it back): made once for a step's Gram matrix and pursuit, and kept for a
    /// stable dictionary's next pursuits of its `version` (small encodes would otherwise spend
    /// more on it than on their products); a transient one refills the kept buffers.
    fn bf16_operand(
        &mut self,
        dict: &[f32],
        c: usize,
        d: usize,
        version: Option<u64>,
    ) -> Option<Bf16Dictionary> {
        (self.settings.products == Products::Bf16).then(|| match self.bf16.take() {
            Some((kept, op)) if kept.is_some() && kept == version => op,
            kept => {
                let mut op = kept.map(|(_, op)| op).unwrap_or_default();
                op.fill(dict, c, d, self.settings.par);
                op
            }
        })
    }

    /// Drops the buffers another strategy than `strategy` would keep alive (they would only add
    /// to the peak): `gram-picked`'s larger tile and Gram rows, or the Gram matrix. Plain and
    /// Gram share their correlation tiles.
    fn switch_to(&mut self, strategy: Strategy) {
        if self.strategy == Some(strategy) {
            return;
        }
        if self.strategy == Some(Strategy::GramPicked) || strategy == Strategy::GramPicked {
            self.scratch = Vec::new();
            self.gram_rows = Vec::new();
        }
        if strategy != Strategy::Gram {
            self.gram = Gram::new();
        }
        self.strategy = Some(strategy);
    }
}

impl Backend for CpuBackend {
    fn new(settings: Settings) -> Option<Self> {
        Some(CpuBackend {
            settings,
            planner: Planner::default(),
            scratch: Vec::new(),
            gram_rows: Vec::new(),
            gram: Gram::new(),
            backward: BackwardScratch::default(),
            bf16: None,
            strategy: None,
        })
    }

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn configure(&mut self, settings: Settings) {
        if settings.gram_precision != self.settings.gram_precision
            || settings.products != self.settings.products
        {
            self.planner.forget_stable();
            self.gram = Gram::new();
            self.bf16 = None;
        }
        self.settings = settings;
    }

    fn normalize(&self, norm: RowNorm, weights: &mut [f32], d: usize) {
        normalize_rows(norm, weights, d);
    }

    fn scale_dictionary(&self, weights: &[f32], scale: f32, mask: Option<&[f32]>, d: usize) -> Vec<f32> {
        let mut out = huge_vec(weights.len(), 0f32);
        out.iter_mut().zip(weights).for_each(|(o, &v)| *o = v * scale);
        if let Some(m) = mask {
            for (row, &keep) in out.chunks_mut(d).zip(m) {
                row.iter_mut().for_each(|v| *v *= keep);
            }
        }
        out
    }

    fn prepare(&mut self, dict: &[f32], c: usize, d: usize, rows: usize, k: usize, version: u64) -> bool {
        // The stable Gram matrix and the encodes after it share the dictionary's bf16 operand.
        let operand = self.bf16_operand(dict, c, d, Some(version));
        let ready = self.planner.prepare(&self.settings, dict, c, d, rows, k, version, operand.as_ref());
        self.bf16 = operand.map(|op| (Some(version), op));
        ready
    }

    fn forget(&mut self) {
        self.planner.forget_stable();
    }

    fn pursuit(&mut self, p: &Problem, dictionary: DictionaryUse) -> PursuitRun {
        let settings = self.settings;
        let stable = match dictionary {
            DictionaryUse::Stable(v) => self.planner.stable_gram(v).is_some().then_some(v),
            DictionaryUse::Transient => None,
        };
        let strategy = self.planner.strategy_for(&settings, p.n, p.c, p.d, p.k, stable.is_some());
        self.switch_to(strategy);
        let version = match dictionary {
            DictionaryUse::Stable(v) => Some(v),
            DictionaryUse::Transient => None,
        };
        let operand = self.bf16_operand(p.dict, p.c, p.d, version);
        let t0 = Instant::now();
        let gram = match (strategy, stable) {
            (Strategy::Gram, Some(v)) => self.planner.stable_gram(v).map(Gram::view),
            (Strategy::Gram, None) => {
                let (precision, par) = (settings.gram_precision, settings.par);
                match &operand {
                    Some(op) => self.gram.compute_bf16(p.dict, p.c, p.d, precision, op, par),
                    None => self.gram.compute(p.dict, p.c, p.d, precision, Products::F32, par),
                }
                Some(self.gram.view())
            }
            _ => None,
        };
        let gram_seconds = t0.elapsed().as_secs_f64();
        let mut out = Output {
            scratch: std::mem::take(&mut self.scratch),
            gram_rows: std::mem::take(&mut self.gram_rows),
            ..Output::default()
        };
        match &operand {
            Some(op) => pursuit_bf16(p, strategy, gram, settings.par, op, &mut out),
            None => pursuit(p, strategy, gram, settings.par, Products::F32, &mut out),
        }
        self.bf16 = operand.map(|op| (version, op));
        self.scratch = std::mem::take(&mut out.scratch);
        self.gram_rows = std::mem::take(&mut out.gram_rows);
        if settings.strategy.is_none() {
            self.planner.observe(p.n, p.c, p.k, stable.is_some(), strategy, &out.atoms, out.picked_rows);
        }
        PursuitRun {
            atoms: out.atoms,
            values: out.values,
            residual: out.residual,
            energy: out.energy,
            strategy: Some(strategy),
            gram_seconds,
            correlation_seconds: out.matmul_seconds,
            rechecks: out.rechecks,
            picked_rows: out.picked_rows,
        }
    }

    fn decode(&self, dict: &[f32], d: usize, atoms: &[u32], values: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut x_hat = vec![0f32; n * d];
        let row = |(i, out): (usize, &mut [f32])| {
            for t in 0..k {
                let a = atoms[i * k + t];
                if a != crate::pursuit::NO_ATOM {
                    let a = a as usize;
                    axpy(values[i * k + t], &dict[a * d..(a + 1) * d], out);
                }
            }
        };
        match self.settings.par {
            Par::Seq => x_hat.chunks_mut(d.max(1)).enumerate().for_each(row),
            Par::Rayon(_) => x_hat.par_chunks_mut(d.max(1)).enumerate().with_min_len(64).for_each(row),
        }
        x_hat
    }

    fn backward(
        &mut self,
        g: &BackwardInputs,
        bounds: &[usize],
        g_dict: &mut [f32],
        g_x: Option<&mut [f32]>,
    ) {
        backward(g, bounds, self.settings.par, g_dict, g_x, &mut self.backward);
    }

    fn add(&self, dst: &mut [f32], src: &[f32]) {
        // The AVX2 build of `y += 1·x`: the same sums as the default, bit for bit.
        axpy(1.0, src, dst);
    }

    fn nearest_atoms(
        &self,
        dict: &[f32],
        c: usize,
        d: usize,
        related: usize,
        version: Option<u64>,
    ) -> Vec<Vec<(u32, f32)>> {
        // The Gram matrix prepared for the stable dictionary holds every cosine already.
        match version.and_then(|v| self.planner.stable_gram(v)) {
            Some(g) => crate::nearest::nearest_from_gram(g.view(), c, related),
            None => crate::nearest::nearest_atoms(dict, c, d, related, self.settings.par),
        }
    }

    fn adam_step(
        &self,
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        step: u64,
        hp: &AdamParams,
    ) {
        adam_step(param, grad, m, v, step, hp, self.settings.par);
    }
}
