//! Training from Python: `train` (a whole dataset, optionally in a run folder) and
//! `StreamTrainer` (batches as a model produces them), both over the library's trainer.

use crate::errors::IntoPy;
use crate::model::{engine_for, pool, run_in, Model};
use mpsae::data::{DataOptions, Dataset, Elem, NonFinite, Source};
use mpsae::run::{PreprocessChoice, Run, RunRecipe};
use mpsae::train::{
    checkpoint, CriterionChoice, EpochReport, Observer, ScheduleOptions, StepReport, TrainOptions, Trainer,
};
use mpsae::{MpSae, Normalization};
use numpy::{PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::path::PathBuf;

/// The options of a run, from Python keywords (the CLI's names and defaults).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct Options {
    batch_size: usize,
    epochs: usize,
    steps: Option<u64>,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    clip: f64,
    warmup: Option<u64>,
    final_lr: Option<f64>,
    start_warmup_lr: Option<f64>,
    seed: u64,
    shuffle: bool,
    criterion: String,
    revive_threshold: f32,
    revive_min_dead: usize,
    revive_coef: f64,
    detailed_stats: bool,
    max_bad_steps: u32,
    checkpoint_every: u64,
    gradient_shards: usize,
}

impl Options {
    fn train_options(&self) -> PyResult<TrainOptions> {
        let criterion = CriterionChoice::from_name(
            &self.criterion,
            self.revive_threshold,
            self.revive_min_dead,
            self.revive_coef,
        )
        .py()?;
        let schedule = ScheduleOptions::from_settings(self.warmup, self.final_lr, self.start_warmup_lr);
        let o = TrainOptions {
            batch_size: self.batch_size,
            epochs: self.epochs,
            steps: self.steps,
            shuffle: self.shuffle,
            seed: self.seed,
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            clip_grad: self.clip,
            schedule,
            criterion,
            detailed_stats: self.detailed_stats,
            max_bad_steps: self.max_bad_steps,
            checkpoint_every: self.checkpoint_every,
            gradient_shards: self.gradient_shards,
        };
        o.validate().py()?;
        Ok(o)
    }
}

/// The model's own settings, from Python keywords.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct ModelOptions {
    nb_concepts: usize,
    k: usize,
    dropout: Option<f32>,
    normalization: String,
    use_multiplier: bool,
    center: bool,
    scale: bool,
}

/// One data source from Python: a path, or `(name, address, dtype, rows, d)` of a C-contiguous
/// numpy array that the caller keeps alive (and unchanged) while training runs.
#[derive(FromPyObject)]
pub enum DataSource {
    Path(PathBuf),
    Array(String, usize, String, usize, usize),
}

fn open_data(
    sources: Vec<DataSource>,
    tensor: Option<String>,
    skip_nonfinite: bool,
) -> PyResult<(Dataset, Vec<String>)> {
    let opts = DataOptions {
        tensor: tensor.clone(),
        non_finite: if skip_nonfinite { NonFinite::Skip } else { NonFinite::Error },
    };
    let mut all = Vec::new();
    let mut names = Vec::new();
    for s in sources {
        match s {
            DataSource::Path(p) => {
                names.push(p.display().to_string());
                all.push(Source::open(&p, tensor.as_deref()).py()?);
            }
            DataSource::Array(name, address, dtype, rows, d) => {
                let elem = match dtype.as_str() {
                    "float16" => Elem::F16,
                    "float32" => Elem::F32,
                    "float64" => Elem::F64,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "{name}: unsupported dtype {other} (use float16, float32 or float64)"
                        )))
                    }
                };
                names.push(name.clone());
                // SAFETY: the Python caller (`mpsae.train`) holds a reference to the C-contiguous
                // array at `address` until training returns, and does not write to it.
                all.push(unsafe { Source::from_raw(&name, elem, address as *const u8, rows, d) }.py()?);
            }
        }
    }
    if all.is_empty() {
        return Err(PyValueError::new_err("invalid data: no data given"));
    }
    Ok((Dataset::from_sources(all, &opts).py()?, names))
}

/// A report (step or epoch) as a Python dict of its JSON fields.
fn report_dict<'py>(py: Python<'py>, r: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_string(r).expect("report serialises");
    py.import("json")?.call_method1("loads", (json,))
}

/// Calls back into Python between steps: the user's callback, progress lines, Ctrl-C.
struct PyObserver {
    callback: Option<PyObject>,
    progress: bool,
    metrics: Option<PathBuf>,
    /// The first Python error (a raised callback, a signal): the run stops and it is raised.
    error: Option<PyErr>,
    metrics_error: Option<String>,
}

impl Observer for PyObserver {
    fn on_step(&mut self, report: &StepReport) {
        if self.error.is_some() {
            return;
        }
        Python::with_gil(|py| {
            if let Err(e) = py.check_signals() {
                self.error = Some(e);
                return;
            }
            if let Some(cb) = &self.callback {
                let r = report_dict(py, report).and_then(|d| cb.call1(py, (d,)));
                if let Err(e) = r {
                    self.error = Some(e);
                }
            }
        });
    }

    fn on_epoch(&mut self, report: &EpochReport) {
        if let Some(p) = &self.metrics {
            let line = serde_json::to_string(report).expect("report serialises");
            let r = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()));
            if let Err(e) = r {
                self.metrics_error.get_or_insert(format!("{}: {e}", p.display()));
            }
        }
        if self.progress {
            eprintln!(
                "epoch {} step {}: loss {:.6} r2 {:.4} l0 {:.2} dead {:.1}% ({:.1} s)",
                report.epoch,
                report.step,
                report.avg_loss,
                report.r2,
                report.l0,
                100.0 * report.dead_ratio,
                report.time_epoch
            );
        }
    }

    fn stop_requested(&mut self) -> bool {
        self.error.is_some()
    }
}

/// Trains on `sources` (paths or arrays); in the run folder `out` when given (resumable).
/// Returns the model and the per-epoch metrics of this call.
#[pyfunction]
#[pyo3(signature = (sources, model, options, out=None, resume=false, force=false, progress=true, callback=None, threads=None, tensor=None, skip_nonfinite=false))]
#[allow(clippy::too_many_arguments)]
pub fn train<'py>(
    py: Python<'py>,
    sources: Vec<DataSource>,
    model: ModelOptions,
    options: Options,
    out: Option<PathBuf>,
    resume: bool,
    force: bool,
    progress: bool,
    callback: Option<PyObject>,
    threads: Option<usize>,
    tensor: Option<String>,
    skip_nonfinite: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let pool = pool(threads)?;
    let (data, names) = open_data(sources, tensor.clone(), skip_nonfinite)?;
    let (run, mut trainer) = match (&out, resume) {
        (Some(dir), true) => {
            let (run, trainer) = Run::resume(dir).py()?;
            run.config.check_data(&data).py()?;
            (Some(run), trainer)
        }
        (None, true) => return Err(PyValueError::new_err("invalid resume: give the run folder as out=")),
        (dir, false) => {
            let normalization = Normalization::from_name(&model.normalization).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "invalid normalization '{}': use l2, max_l2, l1, max_l1 or identity",
                    model.normalization
                ))
            })?;
            let recipe = RunRecipe {
                concepts: model.nb_concepts,
                k: model.k,
                dropout: model.dropout,
                normalization,
                use_multiplier: model.use_multiplier,
                seed: options.seed,
                options: options.train_options()?,
                preprocess: PreprocessChoice { center: model.center, scale: model.scale },
                data_names: names,
                tensor,
                skip_nonfinite,
            };
            let (trainer, config) = recipe.trainer(&data).py()?;
            let run = match dir {
                Some(d) => Some(Run::create(d, config, force).py()?),
                None => None,
            };
            (run, trainer)
        }
    };
    trainer.model.set_engine(engine_for(&pool));
    if let Some(r) = &run {
        r.attach(&mut trainer);
    }
    let mut observer = PyObserver {
        callback,
        progress,
        metrics: run.as_ref().map(|r| r.metrics_path()),
        error: None,
        metrics_error: None,
    };
    let result = py.allow_threads(|| {
        let _heap = HeapForTraining::new();
        run_in(&pool, || trainer.run(&data, &mut observer))
    });
    if let Some(e) = observer.error.take() {
        return Err(e);
    }
    let reports = result.py()?;
    if let Some(e) = observer.metrics_error {
        return Err(pyo3::exceptions::PyOSError::new_err(e));
    }
    if let Some(r) = &run {
        r.save_model(&trainer).py()?;
    }
    let metrics = reports.iter().map(|r| report_dict(py, r)).collect::<PyResult<Vec<_>>>()?;
    let pre = trainer.preprocess.clone();
    let model = Model { inner: trainer.model, pre, pool };
    PyTuple::new(py, [Py::new(py, model)?.into_any().into_bound(py), metrics.into_pyobject(py)?.into_any()])
}

/// While it lives, glibc keeps the large buffers a training step frees (tens of MB: the CLI
/// does the same for its whole process) in its heap instead of unmapping them, so the next step
/// does not fault them in again; dropped, it restores glibc's defaults and hands the free heap
/// back to the kernel, so the Python process does not keep that memory afterwards.
struct HeapForTraining;

impl HeapForTraining {
    fn new() -> Self {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only sets glibc's allocator parameters (thread-safe in glibc).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
        HeapForTraining
    }
}

impl Drop for HeapForTraining {
    fn drop(&mut self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: as above; malloc_trim only returns free heap pages to the kernel.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
            libc::malloc_trim(0);
        }
    }
}

/// A trainer fed batch by batch (activations as a model produces them).
#[pyclass(module = "mpsae._mpsae")]
pub struct StreamTrainer {
    trainer: Trainer,
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
}

#[pymethods]
impl StreamTrainer {
    /// A new trainer of a model of `input_dim` with `model` and `options` (the schedule, when
    /// used, needs `options.steps`).
    #[new]
    #[pyo3(signature = (input_dim, model, options, threads=None))]
    fn new(
        input_dim: usize,
        model: ModelOptions,
        options: Options,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let normalization = Normalization::from_name(&model.normalization).ok_or_else(|| {
            PyValueError::new_err(format!("invalid normalization '{}'", model.normalization))
        })?;
        let mut cfg = mpsae::SaeConfig::new(input_dim, model.nb_concepts);
        cfg.k = model.k;
        cfg.dropout = model.dropout;
        cfg.normalization = normalization;
        cfg.use_multiplier = model.use_multiplier;
        let o = options.train_options()?;
        if o.schedule.is_some() && o.steps.is_none() {
            return Err(PyValueError::new_err(
                "invalid schedule: a streaming trainer with a schedule needs steps=",
            ));
        }
        let pool = pool(threads)?;
        let mut m = MpSae::new(cfg, options.seed).py()?;
        m.set_engine(engine_for(&pool));
        Ok(StreamTrainer { trainer: Trainer::new(m, o, Default::default()).py()?, pool })
    }

    /// Restores a trainer from a checkpoint file (from `save_checkpoint` or a run folder's).
    #[staticmethod]
    #[pyo3(signature = (path, threads=None))]
    fn from_checkpoint(path: PathBuf, threads: Option<usize>) -> PyResult<Self> {
        let pool = pool(threads)?;
        let mut trainer = checkpoint::load(&path).py()?;
        trainer.model.set_engine(engine_for(&pool));
        Ok(StreamTrainer { trainer, pool })
    }

    /// One training step on `batch` (n x d float32, C-contiguous); returns the step's report.
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        batch: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let d = self.trainer.model.input_dim();
        if batch.shape()[1] != d {
            return Err(PyValueError::new_err(format!(
                "batch rows have dimension {}, the model expects {d}",
                batch.shape()[1]
            )));
        }
        let x = batch.as_slice().map_err(|_| PyValueError::new_err("batch must be C-contiguous float32"))?;
        if x.iter().any(|v| !v.is_finite()) {
            let row = x.chunks(d).position(|r| r.iter().any(|v| !v.is_finite())).unwrap_or(0);
            return Err(PyValueError::new_err(format!("batch: row {row}: NaN or infinite value")));
        }
        let (t, pool) = (&mut self.trainer, &self.pool);
        let report = py
            .allow_threads(|| {
                run_in(pool, || {
                    t.model.train();
                    let total = t.options.steps.unwrap_or(u64::MAX);
                    let lr = t.lr_at(t.progress.step, total);
                    let criterion = t.options.criterion.build();
                    let r = t.step(x, criterion.as_ref(), lr);
                    if r.is_ok() {
                        t.progress.step += 1;
                    }
                    r
                })
            })
            .py()?;
        report_dict(py, &report)
    }

    /// Replaces the model's parameters (a state dict with overcomplete's keys), e.g. to start
    /// from given weights; the optimiser state is left as it is.
    fn load_state_dict(
        &mut self,
        state: std::collections::HashMap<String, numpy::PyReadonlyArrayDyn<'_, f32>>,
    ) -> PyResult<()> {
        let tensors = state
            .into_iter()
            .map(|(k, v)| {
                let shape = v.shape().to_vec();
                (k, mpsae::io::state_dict::Tensor { shape, data: v.as_array().iter().copied().collect() })
            })
            .collect();
        mpsae::io::state_dict::load_state_dict(&mut self.trainer.model, tensors).py()
    }

    /// Steps done.
    #[getter]
    fn steps_done(&self) -> u64 {
        self.trainer.progress.step
    }

    /// Writes a checkpoint (model, optimiser, progress), atomically.
    fn save_checkpoint(&self, path: PathBuf) -> PyResult<()> {
        checkpoint::save(&self.trainer, &path).py()
    }

    /// A copy of the current model.
    fn model(&self) -> PyResult<Model> {
        let m = &self.trainer.model;
        let mut copy =
            MpSae::from_weights(m.config().clone(), m.weights().to_vec(), m.multiplier(), 0).py()?;
        let (w, b) = m.encoder_parameters();
        copy.set_encoder_parameters(w.map(<[f32]>::to_vec), b.map(<[f32]>::to_vec)).py()?;
        copy.set_engine(*m.engine());
        Ok(Model { inner: copy, pre: self.trainer.preprocess.clone(), pool: self.pool.clone() })
    }
}
