//! The backend seam: the narrow set of operations the model, its criteria and its trainer need,
//! behind one trait, so that the maths can run elsewhere (a GPU) without touching them.
//!
//! # What a backend provides
//!
//! A [`Backend`] owns every buffer and cache of its maths: the correlation scratch, the Gram
//! matrix of a stable dictionary, the backward pass's shard accumulators, and the planner that
//! chooses a pursuit strategy. Its callers pass row-major `f32` slices in and get vectors back;
//! they never see a strategy decision unless they force one in [`Settings`]. The operations:
//!
//! | operation | what | file of the CPU backend |
//! |---|---|---|
//! | [`Backend::normalize`] | row normalisation of the weights | `normalize.rs` |
//! | [`Backend::scale_dictionary`] | `W·exp(m)`, dropout mask | `backend/cpu/mod.rs` |
//! | [`Backend::prepare`] | Gram matrix of a stable dictionary, when the planner would use it | `backend/cpu/planner.rs` |
//! | [`Backend::pursuit`] | `k` matching-pursuit steps (correlations, argmax, residual) | `pursuit.rs`, `select.rs`, `gram.rs`, `matmul.rs` |
//! | [`Backend::decode`] | `x_hat = Σ v·D_j` | `backend/cpu/mod.rs` |
//! | [`Backend::backward`] | the exact sparse backward, by micro-shards | `backward.rs` |
//! | [`Backend::dot`], [`Backend::sum_of_squares`], [`Backend::scale`], [`Backend::add`] | the multiplier gradient, clipping, criteria's direct terms | `backend/cpu/mod.rs` |
//! | [`Backend::adam_step`] | `torch.optim.Adam`'s update | `adam.rs` |
//! | [`Backend::nearest_atoms`] | atoms' nearest neighbours by cosine (the concept browser) | `nearest.rs` |
//!
//! # Adding a backend
//!
//! 1. Implement [`Backend`] for a new type in its own module (or crate): `new` returns `None`
//!    where it cannot run (no device, no driver), `name` is what users type (`--device NAME`).
//! 2. Keep the semantics of [`ReferenceBackend`], the plain oracle: same picks (first index on
//!    exact ties, a NaN never chosen over a number), values as the exact `r·D_j`, gradients of
//!    [`crate::backward`] summed along the same micro-shard tree.
//! 3. Register it in [`by_name`] and add its name to the parity tests' backend list: every
//!    golden file and the property test against the reference backend then run on it.
//!
//! Buffers cross the seam as host slices today; a device backend uploads what it needs and keeps
//! its own copies (it can key them on the stable dictionary's version, as the CPU backend keys its
//! Gram matrix).

pub mod cpu;
pub mod reference;

pub use cpu::CpuBackend;
pub use reference::ReferenceBackend;

use crate::adam::AdamParams;
use crate::backward::BackwardInputs;
use crate::bf16::Products;
use crate::gram::Precision;
use crate::normalize::RowNorm;
use crate::pursuit::{Problem, Strategy};
use crate::Par;

/// Execution settings of a backend: they change speed and memory, not results (beyond float
/// rounding of the correlations, which never decide a pick on their own).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Parallelism of every kernel.
    pub par: Par,
    /// Force a pursuit strategy; `None` lets the planner choose per call.
    pub strategy: Option<Strategy>,
    /// Scratch memory the pursuit may use (Gram matrix, correlations), in bytes.
    pub memory_budget: usize,
    /// Storage of the Gram matrix: f16 (default; half the memory and traffic, picks re-checked
    /// exactly near ties) or f32.
    pub gram_precision: Precision,
    /// Operand precision of the dense products: bf16 (the default where the CPU has AVX-512 BF16:
    /// twice the rate; their error bound sends near ties to exact dot products, same picks and
    /// values) or f32.
    pub products: Products,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            par: Par::rayon(),
            strategy: None,
            memory_budget: 8 << 30,
            gram_precision: Precision::F16,
            products: Products::auto(),
        }
    }
}

/// Whether the dictionary of a pursuit stays fixed across calls (eval mode: the backend may keep
/// what it derived from it, keyed by the version) or changes at every call (training mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DictionaryUse {
    /// Used once.
    Transient,
    /// The same dictionary as every other call with this version.
    Stable(u64),
}

/// What a pursuit gives back.
#[derive(Clone, Debug, Default)]
pub struct PursuitRun {
    /// Picked atoms, `n x k` in pursuit order ([`crate::pursuit::NO_ATOM`] after an early stop).
    pub atoms: Vec<u32>,
    /// Picked values, `n x k`.
    pub values: Vec<f32>,
    /// Final residual, `n x d`.
    pub residual: Vec<f32>,
    /// Squared residual norm of each row after each step, `n x k`.
    pub energy: Vec<f32>,
    /// The strategy that ran (the reference backend reports [`Strategy::Plain`]).
    pub strategy: Option<Strategy>,
    /// Seconds spent computing a Gram matrix for this call.
    pub gram_seconds: f64,
    /// Seconds spent in dense correlation products.
    pub correlation_seconds: f64,
    /// Picks re-checked with exact dot products (near ties under a Gram error bound).
    pub rechecks: u64,
    /// Gram rows computed by the `gram-picked` strategy.
    pub picked_rows: u64,
}

/// The maths of an MP-SAE on one kind of hardware. See the module docs.
pub trait Backend: Send + Sync {
    /// The backend, or `None` where it cannot run here.
    fn new(settings: Settings) -> Option<Self>
    where
        Self: Sized;

    /// Its name, as users select it.
    fn name(&self) -> &'static str;

    /// The execution settings.
    fn settings(&self) -> &Settings;

    /// Changes the execution settings (a new Gram precision drops the prepared Gram matrix).
    fn configure(&mut self, settings: Settings);

    /// Normalises the rows of the `c x d` weights in place.
    fn normalize(&self, norm: RowNorm, weights: &mut [f32], d: usize);

    /// `weights·scale` with the rows of dropped atoms (`mask[j] == 0`) zeroed.
    fn scale_dictionary(&self, weights: &[f32], scale: f32, mask: Option<&[f32]>, d: usize) -> Vec<f32>;

    /// Prepares for pursuits of about `rows` rows and `k` steps over the stable dictionary
    /// `version` (`dict`, `c x d`): the CPU backend computes its Gram matrix when it would use it.
    /// Returns whether something was prepared.
    #[allow(clippy::too_many_arguments)]
    fn prepare(&mut self, dict: &[f32], c: usize, d: usize, rows: usize, k: usize, version: u64) -> bool;

    /// Forgets what was prepared for stable dictionaries.
    fn forget(&mut self);

    /// `k` steps of matching pursuit of `p.x` over `p.dict`.
    fn pursuit(&mut self, p: &Problem, dictionary: DictionaryUse) -> PursuitRun;

    /// `x_hat` (`n x d`): row `i` is `Σ_t values[i,t]·dict[atoms[i,t]]` over its picks.
    fn decode(&self, dict: &[f32], d: usize, atoms: &[u32], values: &[f32], n: usize, k: usize) -> Vec<f32>;

    /// The exact sparse backward pass by micro-shards (`bounds`, see
    /// [`crate::backward::shard_bounds`]): dL/dD into `g_dict` (overwritten) and, when given,
    /// dL/dx through the pursuit into `g_x` (overwritten). Same tree as [`crate::backward::backward`].
    fn backward(&mut self, g: &BackwardInputs, bounds: &[usize], g_dict: &mut [f32], g_x: Option<&mut [f32]>);

    /// `Σ a·b`, accumulated in f64 in a fixed order (chunks of 4096 summed in order). The
    /// default runs on the host; a device backend overrides it.
    fn dot(&self, a: &[f32], b: &[f32]) -> f64 {
        dot_f64(a, b)
    }

    /// `Σ v²`, accumulated as [`Backend::dot`] (clipping's norm).
    fn sum_of_squares(&self, v: &[f32]) -> f64 {
        dot_f64(v, v)
    }

    /// `v *= s`.
    fn scale(&self, v: &mut [f32], s: f32) {
        v.iter_mut().for_each(|x| *x *= s);
    }

    /// `dst += src`.
    fn add(&self, dst: &mut [f32], src: &[f32]) {
        dst.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
    }

    /// Each atom's `related` nearest other atoms by cosine, `(atom, cosine)` closest first, of
    /// the `c x d` dictionary `dict`, which is the stable dictionary `version` when given.
    fn nearest_atoms(
        &self,
        dict: &[f32],
        c: usize,
        d: usize,
        related: usize,
        version: Option<u64>,
    ) -> Vec<Vec<(u32, f32)>>;

    /// One Adam update of `param` (see [`crate::adam::adam_step`]).
    #[allow(clippy::too_many_arguments)]
    fn adam_step(
        &self,
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        step: u64,
        hp: &AdamParams,
    );
}

/// The names [`by_name`] knows.
pub const BACKENDS: [&str; 2] = ["cpu", "reference"];

/// The backend called `name`, with `settings`; an error names the known ones, or says why the
/// backend cannot run here.
pub fn by_name(name: &str, settings: Settings) -> Result<Box<dyn Backend>, String> {
    let made: Option<Box<dyn Backend>> = match name {
        "cpu" => CpuBackend::new(settings).map(|b| Box::new(b) as Box<dyn Backend>),
        "reference" => ReferenceBackend::new(settings).map(|b| Box::new(b) as Box<dyn Backend>),
        "cuda" => return Err("device 'cuda': this build has no CUDA backend (known: cpu, reference)".into()),
        other => return Err(format!("unknown device '{other}' (known: {})", BACKENDS.join(", "))),
    };
    made.ok_or_else(|| format!("device '{name}' cannot run on this machine"))
}

/// `Σ a·b` in f64, in chunks of 4096 summed in order (deterministic, accurate).
pub(crate) fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    a.chunks(4096)
        .zip(b.chunks(4096))
        .map(|(x, y)| x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>())
        .sum()
}
