//! Training from Python: `train` (a whole dataset, optionally in a run folder) and
//! `StreamTrainer` (batches as a model produces them), both over the library's trainer.

use crate::errors::IntoPy;
use crate::model::{engine_for, model_copy, pool, run_in, Model};
use mpsae::data::{DataOptions, Dataset, Elem, NonFinite, Source};
use mpsae::run::{RunOptions, Session, SessionRequest, Spelling};
use mpsae::train::{
    checkpoint, EpochReport, Observer, PreprocessPlan, StepReport, StreamTrainer as LibStreamTrainer, Trainer,
};
use mpsae::{MpSae, Preprocess, Provenance};
use numpy::{IntoPyArray, PyReadonlyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::path::PathBuf;

/// The options given as Python keywords (a JSON object, by name; `null`: none for an optional
/// one): the library's table fills in the rest and checks the names.
pub(crate) fn options_from(given: &str) -> PyResult<(RunOptions, Vec<String>)> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(given).map_err(|e| PyValueError::new_err(format!("invalid options: {e}")))?;
    let options = RunOptions::with_given(&map).py()?;
    Ok((options, map.keys().cloned().collect()))
}

/// The training options' table (`mpsae::run::OPTIONS`): one dict per option with its name,
/// group, kind, default, help and CLI flag.
#[pyfunction]
pub fn options<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    let rows: Vec<serde_json::Value> = mpsae::run::OPTIONS
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name, "group": s.group, "kind": s.kind, "default": s.default_value(),
                "help": s.help, "flag": format!("--{}", s.flag()),
            })
        })
        .collect();
    py.import("json")?.call_method1("loads", (serde_json::Value::from(rows).to_string(),))
}

/// The library's defaults of every option, by Python keyword.
#[pyfunction]
pub fn defaults<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    let json = py.import("json")?;
    json.call_method1(
        "loads",
        (serde_json::Value::Object(mpsae::run::options::keyword_defaults()).to_string(),),
    )
}

pub(crate) fn provenance_from(json: Option<&str>) -> PyResult<Provenance> {
    match json {
        None => Ok(Provenance::default()),
        Some(j) => {
            serde_json::from_str(j).map_err(|e| PyValueError::new_err(format!("invalid provenance: {e}")))
        }
    }
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
                for file in mpsae::data::harvest::expand(std::slice::from_ref(&p)).py()? {
                    all.push(Source::open(&file, tensor.as_deref()).py()?);
                }
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
pub(crate) fn report_dict<'py>(py: Python<'py>, r: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_string(r).expect("report serialises");
    py.import("json")?.call_method1("loads", (json,))
}

/// Calls back into Python between steps: the user's callback, progress lines, Ctrl-C.
struct PyObserver {
    callback: Option<PyObject>,
    progress: bool,
    /// The first Python error (a raised callback, a signal): the run stops and it is raised.
    error: Option<PyErr>,
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
        if self.progress {
            eprintln!(
                "epoch {} step {}: loss {:.6} explained variance {:.4} r2 {:.4} l0 {:.2} dead {:.1}% ({:.1} s)",
                report.epoch,
                report.step,
                report.avg_loss,
                report.explained_variance,
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

/// Trains on `sources` (paths or arrays); in the run folder `out` when given (resumable), through
/// the library's [`Session`]. Returns the model and the per-epoch metrics of this call.
#[pyfunction]
#[pyo3(signature = (sources, options, out=None, resume=false, force=false, progress=true, callback=None, threads=None, tensor=None, skip_nonfinite=false, allow_changes=false, allow_data_change=false, provenance=None, stepper=None))]
#[allow(clippy::too_many_arguments)]
pub fn train<'py>(
    py: Python<'py>,
    sources: Vec<DataSource>,
    options: &str,
    out: Option<PathBuf>,
    resume: bool,
    force: bool,
    progress: bool,
    callback: Option<PyObject>,
    threads: Option<usize>,
    tensor: Option<String>,
    skip_nonfinite: bool,
    allow_changes: bool,
    allow_data_change: bool,
    provenance: Option<String>,
    stepper: Option<PyObject>,
) -> PyResult<Bound<'py, PyTuple>> {
    let pool = pool(threads)?;
    let (options, given) = options_from(options)?;
    let (data, names) = open_data(sources, tensor.clone(), skip_nonfinite)?;
    let mut request = SessionRequest::new(options, given, Spelling::Python);
    request.provenance = match provenance {
        Some(_) => provenance_from(provenance.as_deref())?,
        None => mpsae::data::harvest::provenance_of(&names.iter().map(PathBuf::from).collect::<Vec<_>>()),
    };
    request.out = out;
    request.resume = resume;
    request.force = force;
    request.allow_changes = allow_changes;
    request.allow_data_change = allow_data_change;
    request.data_names = names;
    request.tensor = tensor;
    request.skip_nonfinite = skip_nonfinite;
    request.settings = engine_for(&pool);
    let mut session = Session::open(&request, data).py()?;
    if progress {
        for note in &session.notes {
            eprintln!("note: {note}");
        }
    }
    let mut observer = PyObserver { callback, progress, error: None };
    let mut external = stepper.map(|obj| PyStepper { obj, error: None });
    let result = py.allow_threads(|| {
        let _heap = HeapForTraining::new();
        run_in(&pool, || match &mut external {
            Some(ext) => session.run_external(&mut observer, ext),
            None => session.run(&mut observer),
        })
    });
    if let Some(e) = external.as_mut().and_then(|x| x.error.take()) {
        return Err(e);
    }
    if let Some(e) = observer.error.take() {
        return Err(e);
    }
    let reports = result.py()?;
    session.finish(&reports).py()?;
    let metrics = reports.iter().map(|r| report_dict(py, r)).collect::<PyResult<Vec<_>>>()?;
    let model = Model { inner: session.trainer.model, pool };
    PyTuple::new(py, [Py::new(py, model)?.into_any().into_bound(py), metrics.into_pyobject(py)?.into_any()])
}

/// The maths of each step done by a Python object (the PyTorch device path,
/// `mpsae.torch_train`): `start(state)`, `step(batch, lr) -> (stats, finite, grad_norm)`,
/// `state() -> state`, and where it has them `step_late(batch, lr)` (the step before's results
/// or None) and `drain()` (see `mpsae.torch_train.Stepper`).
pub(crate) struct PyStepper {
    pub(crate) obj: PyObject,
    /// The first Python error: the run stops and it is raised.
    pub(crate) error: Option<PyErr>,
}

impl PyStepper {
    fn fail(&mut self, e: PyErr) -> mpsae::Error {
        let msg = e.to_string();
        self.error.get_or_insert(e);
        mpsae::Error::Training(format!("the device step failed: {msg}"))
    }
}

fn to_array<'py>(py: Python<'py>, v: &[f32], shape: Vec<usize>) -> Bound<'py, PyAny> {
    numpy::ndarray::ArrayD::from_shape_vec(shape, v.to_vec()).unwrap().into_pyarray(py).into_any()
}

impl mpsae::train::ExternalStep for PyStepper {
    fn start(&mut self, trainer: &Trainer) -> mpsae::Result<()> {
        let r = Python::with_gil(|py| -> PyResult<()> {
            let m = &trainer.model;
            let (c, d) = (m.nb_concepts(), m.input_dim());
            let state = pyo3::types::PyDict::new(py);
            state.set_item("weights", to_array(py, m.weights(), vec![c, d]))?;
            state.set_item("multiplier", m.multiplier())?;
            state.set_item("exp_avg", to_array(py, &trainer.adam.exp_avg, vec![c, d]))?;
            state.set_item("exp_avg_sq", to_array(py, &trainer.adam.exp_avg_sq, vec![c, d]))?;
            state.set_item("adam_step", trainer.adam.step)?;
            state.set_item(
                "multiplier_moments",
                (trainer.adam.multiplier_exp_avg, trainer.adam.multiplier_exp_avg_sq),
            )?;
            state.set_item("config", serde_json::to_string(m.config()).expect("config serialises"))?;
            state.set_item("options", serde_json::to_string(&trainer.options).expect("options serialise"))?;
            self.obj.call_method1(py, "start", (state,))?;
            Ok(())
        });
        r.map_err(|e| self.fail(e))
    }

    fn step(&mut self, x: &[f32], lr: f64) -> mpsae::Result<(Vec<f64>, bool, f64)> {
        let r = Python::with_gil(|py| -> PyResult<(Vec<f64>, bool, f64)> {
            py.check_signals()?;
            let out = self.obj.call_method1(py, "step", (x.to_vec().into_pyarray(py), lr))?;
            out.extract(py)
        });
        r.map_err(|e| self.fail(e))
    }

    fn step_late(&mut self, x: &[f32], lr: f64) -> mpsae::Result<Option<(Vec<f64>, bool, f64)>> {
        let r = Python::with_gil(|py| -> PyResult<Option<(Vec<f64>, bool, f64)>> {
            py.check_signals()?;
            if !self.obj.bind(py).hasattr("step_late")? {
                let out = self.obj.call_method1(py, "step", (x.to_vec().into_pyarray(py), lr))?;
                return Ok(Some(out.extract(py)?));
            }
            let out = self.obj.call_method1(py, "step_late", (x.to_vec().into_pyarray(py), lr))?;
            out.extract(py)
        });
        r.map_err(|e| self.fail(e))
    }

    fn step_held(
        &mut self,
        n: usize,
        lr: f64,
        preprocess: &mpsae::model::Preprocess,
    ) -> mpsae::Result<(Vec<f64>, bool, f64)> {
        let r = Python::with_gil(|py| -> PyResult<(Vec<f64>, bool, f64)> {
            py.check_signals()?;
            let mean = preprocess.mean.as_ref().map(|m| m.clone().into_pyarray(py));
            let out = self.obj.call_method1(py, "step_held", (n, lr, mean, preprocess.scale))?;
            out.extract(py)
        });
        r.map_err(|e| self.fail(e))
    }

    fn drain(&mut self) -> mpsae::Result<Option<(Vec<f64>, bool, f64)>> {
        let r = Python::with_gil(|py| -> PyResult<Option<(Vec<f64>, bool, f64)>> {
            if !self.obj.bind(py).hasattr("drain")? {
                return Ok(None);
            }
            self.obj.call_method0(py, "drain")?.extract(py)
        });
        r.map_err(|e| self.fail(e))
    }

    fn sync_to(&mut self, trainer: &mut Trainer) -> mpsae::Result<()> {
        let r = Python::with_gil(|py| -> PyResult<()> {
            let state = self.obj.call_method0(py, "state")?;
            let state = state.bind(py);
            let array = |key: &str| -> PyResult<Vec<f32>> {
                let a: PyReadonlyArrayDyn<f32> = state.get_item(key)?.extract()?;
                Ok(a.as_array().iter().copied().collect())
            };
            let (w, ea, eas) = (array("weights")?, array("exp_avg")?, array("exp_avg_sq")?);
            let m: f32 = state.get_item("multiplier")?.extract()?;
            let step: u64 = state.get_item("adam_step")?.extract()?;
            let (ma, mas): (f32, f32) = state.get_item("multiplier_moments")?.extract()?;
            let cd = trainer.model.weights().len();
            if w.len() != cd || ea.len() != cd || eas.len() != cd {
                return Err(PyValueError::new_err("the device state does not match the dictionary's shape"));
            }
            trainer.model.set_parameters(w, m).py()?;
            trainer.adam.exp_avg = ea;
            trainer.adam.exp_avg_sq = eas;
            trainer.adam.step = step;
            trainer.adam.multiplier_exp_avg = ma;
            trainer.adam.multiplier_exp_avg_sq = mas;
            Ok(())
        });
        r.map_err(|e| self.fail(e))
    }
}

/// While it lives, glibc keeps the large buffers a training step frees (tens of MB: the CLI
/// does the same for its whole process) in its heap instead of unmapping them, so the next step
/// does not fault them in again; dropped, it restores glibc's defaults and hands the free heap
/// back to the kernel, so the Python process does not keep that memory afterwards.
pub(crate) struct HeapForTraining;

impl HeapForTraining {
    pub(crate) fn new() -> Self {
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

/// A trainer fed batch by batch (activations as a model produces them), over the library's
/// [`LibStreamTrainer`].
#[pyclass(module = "mpsae._mpsae")]
pub struct StreamTrainer {
    stream: LibStreamTrainer,
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
}

pub(crate) fn reports_list<'py>(py: Python<'py>, reports: &[StepReport]) -> PyResult<Vec<Bound<'py, PyAny>>> {
    reports.iter().map(|r| report_dict(py, r)).collect()
}

#[pymethods]
impl StreamTrainer {
    /// A new trainer of a model of `input_dim` with `model` and `options` (the schedule, when
    /// used, needs `options.steps`). The preprocessing: `mean`/`scale` given, or centring and
    /// scaling (`model.center`, `model.scale`) estimated from the first `estimate_rows` rows.
    #[new]
    #[pyo3(signature = (input_dim, options, threads=None, mean=None, scale=None, estimate_rows=mpsae::defaults::ESTIMATE_ROWS, provenance=None))]
    fn new(
        input_dim: usize,
        options: &str,
        threads: Option<usize>,
        mean: Option<numpy::PyReadonlyArray1<'_, f32>>,
        scale: Option<f32>,
        estimate_rows: usize,
        provenance: Option<String>,
    ) -> PyResult<Self> {
        let (model, _) = options_from(options)?;
        let cfg = model.model_config(input_dim).py()?;
        let o = model.train_options().py()?;
        if o.schedule.is_some() && o.steps.is_none() {
            return Err(PyValueError::new_err(
                "invalid schedule: a streaming trainer with a schedule needs steps=",
            ));
        }
        let given = mean.is_some() || scale.is_some();
        if given && (model.center || model.scale) {
            return Err(PyValueError::new_err(
                "invalid preprocessing: give mean=/scale= or center=/scale=True to estimate them, not both",
            ));
        }
        let plan = if given {
            PreprocessPlan::Given(Preprocess { mean: mean.map(|m| m.as_array().to_vec()), scale })
        } else {
            PreprocessPlan::Estimate { center: model.center, scale: model.scale, rows: estimate_rows }
        };
        let pool = pool(threads)?;
        let mut m = MpSae::new(cfg, model.seed).py()?;
        m.set_engine(engine_for(&pool));
        m.set_provenance(provenance_from(provenance.as_deref())?);
        let stream = LibStreamTrainer::new(Trainer::new(m, o).py()?, plan).py()?;
        Ok(StreamTrainer { stream, pool })
    }

    /// Restores a trainer from a checkpoint file (from `save_checkpoint` or a run folder's).
    #[staticmethod]
    #[pyo3(signature = (path, threads=None))]
    fn from_checkpoint(path: PathBuf, threads: Option<usize>) -> PyResult<Self> {
        let pool = pool(threads)?;
        let mut trainer = checkpoint::load(&path).py()?;
        trainer.model.set_engine(engine_for(&pool));
        Ok(StreamTrainer { stream: LibStreamTrainer::new(trainer, PreprocessPlan::Model).py()?, pool })
    }

    /// Takes `batch` (n x d float32, C-contiguous, the data's own space); returns the reports of
    /// the steps taken (none while the preprocessing is being estimated; every kept batch once
    /// the estimate is made).
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        batch: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let d = self.stream.trainer.model.input_dim();
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
        let (stream, pool) = (&mut self.stream, &self.pool);
        let reports = py.allow_threads(|| run_in(pool, || stream.step(x))).py()?;
        reports_list(py, &reports)
    }

    /// Makes the pending preprocessing estimate from the rows seen so far and trains on them.
    fn flush<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let (stream, pool) = (&mut self.stream, &self.pool);
        let reports = py.allow_threads(|| run_in(pool, || stream.flush())).py()?;
        reports_list(py, &reports)
    }

    /// `(rows seen, rows needed)` while the preprocessing is being estimated, else None.
    #[getter]
    fn estimating(&self) -> Option<(usize, usize)> {
        self.stream.estimating()
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
        mpsae::io::state_dict::load_state_dict(&mut self.stream.trainer.model, tensors).py()
    }

    /// Steps done.
    #[getter]
    fn steps_done(&self) -> u64 {
        self.stream.trainer.progress.step
    }

    /// Writes a checkpoint (model, optimiser, progress), atomically.
    fn save_checkpoint(&self, path: PathBuf) -> PyResult<()> {
        self.stream.check_settled().py()?;
        checkpoint::save(&self.stream.trainer, &path).py()
    }

    /// A copy of the current model (with its preprocessing and provenance).
    fn model(&self) -> PyResult<Model> {
        model_copy(&self.stream.trainer.model, self.pool.clone())
    }
}

/// Evaluates `model` on `sources` as `mpsae eval` does: the metrics dict.
#[pyfunction]
#[pyo3(signature = (model, sources, k=None, tol=None, batch_size=mpsae::defaults::ENCODE_BATCH_SIZE, tensor=None))]
pub fn evaluate<'py>(
    py: Python<'py>,
    model: &mut Model,
    sources: Vec<DataSource>,
    k: Option<usize>,
    tol: Option<f32>,
    batch_size: usize,
    tensor: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let (data, _) = open_data(sources, tensor, false)?;
    let opts = mpsae::encode::EvalOptions { batch_size, k, tol };
    let (inner, pool) = (&mut model.inner, &model.pool);
    let report = py.allow_threads(|| run_in(pool, || mpsae::encode::evaluate(inner, &data, &opts))).py()?;
    report_dict(py, &report)
}

/// The metrics of a reconstruction from its sums (the library's one definition,
/// `mpsae::metrics::ReconstructionSums`): `explained_variance`, `explained_variance_per_step`,
/// `mse`, `r2`. For Python code that gathers the sums itself (the splice evaluation).
#[pyfunction]
#[pyo3(signature = (rows, sum_x, sum_x2, sse, energy))]
pub fn reconstruction_metrics<'py>(
    py: Python<'py>,
    rows: f64,
    sum_x: Vec<f64>,
    sum_x2: f64,
    sse: f64,
    energy: Vec<f64>,
) -> PyResult<Bound<'py, PyAny>> {
    let sums = mpsae::metrics::ReconstructionSums { rows, sum_x, sum_x2, sse, energy };
    let v = serde_json::json!({
        "explained_variance": sums.explained_variance(),
        "explained_variance_per_step": sums.explained_variance_per_step(),
        "mse": sums.mse(),
        "r2": sums.r2(),
    });
    report_dict(py, &v)
}
