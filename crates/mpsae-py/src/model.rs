//! `Model`: an `MpSae` from Python, on numpy arrays.

use crate::errors::IntoPy;
use mpsae::io::state_dict::{load_state_dict, save_model, state_dict, Tensor};
use mpsae::model::Codes;
use mpsae::{Device, EncodeOptions, MpSae, Normalization, Preprocess, Provenance, SaeConfig};
use mpsae_kernels::Par;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

/// A rayon pool of `threads` threads, or none for the global pool.
pub fn pool(threads: Option<usize>) -> PyResult<Option<Arc<rayon::ThreadPool>>> {
    match threads {
        None => Ok(None),
        Some(0) => Err(PyValueError::new_err("invalid threads: must be at least 1")),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map(|p| Some(Arc::new(p)))
            .map_err(|e| PyValueError::new_err(format!("cannot start {n} threads: {e}"))),
    }
}

/// Runs `f` in `pool` (or the global pool).
pub fn run_in<T: Send>(pool: &Option<Arc<rayon::ThreadPool>>, f: impl FnOnce() -> T + Send) -> T {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

/// The engine settings for `pool`'s thread count.
pub fn engine_for(pool: &Option<Arc<rayon::ThreadPool>>) -> mpsae::Settings {
    let par = match pool {
        Some(p) => Par::Rayon(NonZeroUsize::new(p.current_num_threads().max(1)).unwrap()),
        None => Par::rayon(),
    };
    mpsae::Settings { par, ..mpsae::Settings::default() }
}

/// A Python model holding a copy of `m` (its preprocessing, provenance and engine settings).
pub fn model_copy(m: &mpsae::MpSae, pool: Option<Arc<rayon::ThreadPool>>) -> PyResult<Model> {
    let bytes = mpsae::io::state_dict::model_to_bytes(m, &[]).py()?;
    let (mut copy, _) =
        mpsae::io::state_dict::model_from_bytes(std::path::Path::new("<model>"), &bytes, None).py()?;
    copy.set_engine(*m.engine());
    Ok(Model { inner: copy, pool })
}

/// An MP-SAE (the engine's `MpSae`, which carries its preprocessing and provenance).
#[pyclass(module = "mpsae._mpsae")]
pub struct Model {
    pub(crate) inner: MpSae,
    pub(crate) pool: Option<Arc<rayon::ThreadPool>>,
}

fn rows_of<'a>(x: &'a PyReadonlyArray2<f32>) -> PyResult<&'a [f32]> {
    x.as_slice().map_err(|_| PyValueError::new_err("input must be a C-contiguous float32 array"))
}

/// Atoms as i64 (-1 for no pick) from the engine's codes.
fn atoms_i64(codes: &Codes) -> Vec<i64> {
    codes.atoms.iter().map(|&a| if a == Codes::NO_ATOM { -1 } else { a as i64 }).collect()
}

#[pymethods]
impl Model {
    /// A new model (xavier-uniform init from `seed`).
    #[new]
    #[pyo3(signature = (input_dim, nb_concepts, k=1, dropout=None, normalization="l2", use_multiplier=false, device="cpu", seed=0, threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        input_dim: usize,
        nb_concepts: usize,
        k: usize,
        dropout: Option<f32>,
        normalization: &str,
        use_multiplier: bool,
        device: &str,
        seed: u64,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let mut cfg = SaeConfig::new(input_dim, nb_concepts);
        cfg.k = k;
        cfg.dropout = dropout;
        cfg.normalization = Normalization::parse(normalization).py()?;
        cfg.use_multiplier = use_multiplier;
        cfg.device = Device::from_name(device).py()?;
        let pool = pool(threads)?;
        let mut inner = MpSae::new(cfg, seed).py()?;
        inner.set_engine(engine_for(&pool));
        Ok(Model { inner, pool })
    }

    /// Loads a model file (`model.safetensors`) or the model of a run folder.
    #[staticmethod]
    #[pyo3(signature = (path, threads=None))]
    fn load(path: PathBuf, threads: Option<usize>) -> PyResult<Self> {
        let mut inner = mpsae::io::load_model(&path).py()?;
        let pool = pool(threads)?;
        inner.set_engine(engine_for(&pool));
        Ok(Model { inner, pool })
    }

    /// Saves the model (overcomplete's state-dict keys, the CLI's format), atomically.
    fn save(&self, path: PathBuf) -> PyResult<()> {
        save_model(&self.inner, &path, &[]).py()
    }

    #[getter]
    fn input_dim(&self) -> usize {
        self.inner.input_dim()
    }
    #[getter]
    fn nb_concepts(&self) -> usize {
        self.inner.nb_concepts()
    }
    #[getter]
    fn k(&self) -> usize {
        self.inner.config().k
    }
    #[setter]
    fn set_k(&mut self, k: usize) -> PyResult<()> {
        self.inner.set_k(k).py()
    }
    #[getter]
    fn dropout(&self) -> Option<f32> {
        self.inner.config().dropout
    }
    #[getter]
    fn normalization(&self) -> String {
        self.inner.config().normalization.name()
    }
    #[getter]
    fn use_multiplier(&self) -> bool {
        self.inner.config().use_multiplier
    }
    #[getter]
    fn device(&self) -> &'static str {
        self.inner.backend().name()
    }
    #[getter]
    fn training(&self) -> bool {
        self.inner.is_training()
    }
    /// The model's preprocessing: (mean or None, scale or None).
    #[getter]
    fn preprocess<'py>(&self, py: Python<'py>) -> (Option<Bound<'py, PyArray1<f32>>>, Option<f32>) {
        let p = self.inner.preprocess();
        (p.mean.clone().map(|m| m.into_pyarray(py)), p.scale)
    }

    /// Sets the model's preprocessing (mean or None, scale or None).
    #[pyo3(signature = (mean=None, scale=None))]
    fn set_preprocess(
        &mut self,
        mean: Option<PyReadonlyArray1<'_, f32>>,
        scale: Option<f32>,
    ) -> PyResult<()> {
        let mean = mean.map(|m| m.as_array().to_vec());
        self.inner.set_preprocess(Preprocess { mean, scale }).py()
    }

    /// Where the activations came from, as JSON (`{}` when unknown).
    #[getter]
    fn provenance(&self) -> String {
        serde_json::to_string(self.inner.provenance()).expect("provenance serialises")
    }

    /// Sets the provenance from JSON (the fields of `mpsae::Provenance`).
    fn set_provenance(&mut self, json: &str) -> PyResult<()> {
        let p: Provenance = serde_json::from_str(json)
            .map_err(|e| PyValueError::new_err(format!("invalid provenance: {e}")))?;
        self.inner.set_provenance(p);
        Ok(())
    }

    /// Training mode.
    fn train_mode(&mut self) {
        self.inner.train();
    }
    /// Eval mode.
    fn eval_mode(&mut self) {
        self.inner.eval();
    }

    /// Sparse encode, the model's preprocessing applied: (residual n x d in the data's space,
    /// atoms n x k int64 with -1 after an early stop, values n x k).
    #[pyo3(signature = (x, k=None, tol=None))]
    #[allow(clippy::type_complexity)]
    fn encode_sparse<'py>(
        &mut self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        k: Option<usize>,
        tol: Option<f32>,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>)> {
        let (n, d) = (x.shape()[0], x.shape()[1]);
        if d != self.inner.input_dim() {
            return Err(PyValueError::new_err(format!(
                "input rows have dimension {d}, the model expects {}",
                self.inner.input_dim()
            )));
        }
        let rows = rows_of(&x)?;
        let (model, pool) = (&mut self.inner, &self.pool);
        let opts = EncodeOptions { k, tol, mask: None };
        let enc = py.allow_threads(|| run_in(pool, || model.encode_with(rows, &opts))).py()?;
        let k = enc.codes.k;
        let atoms = atoms_i64(&enc.codes);
        Ok((
            numpy::ndarray::Array2::from_shape_vec((n, d), enc.residual).unwrap().into_pyarray(py),
            numpy::ndarray::Array2::from_shape_vec((n, k), atoms).unwrap().into_pyarray(py),
            numpy::ndarray::Array2::from_shape_vec((n, k), enc.codes.values).unwrap().into_pyarray(py),
        ))
    }

    /// Dense codes (n x c, repeated picks summed) from sparse ones.
    fn densify<'py>(
        &self,
        py: Python<'py>,
        atoms: PyReadonlyArray2<'py, i64>,
        values: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let codes = self.codes_from(&atoms, &values)?;
        let (n, c) = (codes.n, codes.c);
        Ok(numpy::ndarray::Array2::from_shape_vec((n, c), codes.to_dense()).unwrap().into_pyarray(py))
    }

    /// Decode sparse codes: x_hat (n x d), in the data's space.
    fn decode_sparse<'py>(
        &mut self,
        py: Python<'py>,
        atoms: PyReadonlyArray2<'py, i64>,
        values: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let codes = self.codes_from(&atoms, &values)?;
        let (n, d) = (codes.n, self.inner.input_dim());
        let (model, pool) = (&mut self.inner, &self.pool);
        let x_hat = py.allow_threads(|| run_in(pool, || model.decode(&codes))).py()?;
        Ok(numpy::ndarray::Array2::from_shape_vec((n, d), x_hat).unwrap().into_pyarray(py))
    }

    /// The dictionary (c x d), as overcomplete's `get_dictionary()`.
    fn get_dictionary<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyArray2<f32>> {
        let (c, d) = (self.inner.nb_concepts(), self.inner.input_dim());
        numpy::ndarray::Array2::from_shape_vec((c, d), self.inner.get_dictionary()).unwrap().into_pyarray(py)
    }

    /// The state dict: overcomplete's keys, numpy float32 arrays.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (name, shape, values) in state_dict(&self.inner) {
            let a = numpy::ndarray::ArrayD::from_shape_vec(shape, values).unwrap().into_pyarray(py);
            out.set_item(name, a)?;
        }
        Ok(out)
    }

    /// Loads a state dict (strict: the model's keys and shapes, no others).
    fn load_state_dict(&mut self, state: HashMap<String, PyReadonlyArrayDyn<'_, f32>>) -> PyResult<()> {
        let tensors = state
            .into_iter()
            .map(|(k, v)| {
                let shape = v.shape().to_vec();
                let data = v.as_array().iter().copied().collect();
                (k, Tensor { shape, data })
            })
            .collect();
        load_state_dict(&mut self.inner, tensors).py()
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "Model(input_dim={}, nb_concepts={}, k={}, normalization='{}', device='{}', training={})",
            c.input_dim,
            c.nb_concepts,
            c.k,
            c.normalization.name(),
            self.inner.backend().name(),
            self.inner.is_training()
        )
    }
}

impl Model {
    fn codes_from(&self, atoms: &PyReadonlyArray2<i64>, values: &PyReadonlyArray2<f32>) -> PyResult<Codes> {
        if atoms.shape() != values.shape() {
            return Err(PyValueError::new_err(format!(
                "indices {:?} and values {:?} differ in shape",
                atoms.shape(),
                values.shape()
            )));
        }
        let (n, k) = (atoms.shape()[0], atoms.shape()[1]);
        let c = self.inner.nb_concepts();
        let mut ids = Vec::with_capacity(n * k);
        for &a in atoms.as_array().iter() {
            if a == -1 {
                ids.push(Codes::NO_ATOM);
            } else if a < 0 || a as usize >= c {
                return Err(PyValueError::new_err(format!(
                    "atom index {a} is outside the dictionary of {c}"
                )));
            } else {
                ids.push(a as u32);
            }
        }
        let vals: Vec<f32> = values.as_array().iter().copied().collect();
        Ok(Codes { n, c, k, atoms: ids, values: vals })
    }
}

/// The library's check of a preprocessing given as state-dict entries (`(shape, values)` of
/// `preprocess.mean` and `preprocess.scale`, None where absent) for rows of width `d`: the
/// torch module's `load_state_dict` and `set_preprocess` call it, so every door refuses the
/// same tensors with the same message.
#[pyfunction]
#[pyo3(signature = (mean, scale, d))]
#[allow(clippy::type_complexity)]
pub fn check_preprocess(
    mean: Option<(Vec<usize>, Vec<f32>)>,
    scale: Option<(Vec<usize>, Vec<f32>)>,
    d: usize,
) -> PyResult<()> {
    mpsae::Preprocess::from_state(mean, scale, d).map(|_| ()).py()
}

/// Matches the atoms of `a` one to one with those of `b` by absolute cosine
/// (`mpsae::compare::compare`): the comparison as a dict; written into `write_to` (run A's
/// folder, where the concept browser shows it) when given.
#[pyfunction]
#[pyo3(signature = (a, b, other, write_to=None))]
pub fn compare<'py>(
    py: Python<'py>,
    a: &mut Model,
    b: &mut Model,
    other: &str,
    write_to: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    let (ma, mb) = (&mut a.inner, &mut b.inner);
    let cmp = py.allow_threads(|| mpsae::compare::compare(ma, mb, other)).py()?;
    if let Some(dir) = write_to {
        mpsae::compare::write(&cmp, &dir).py()?;
    }
    let json = serde_json::to_string(&cmp).expect("a comparison serialises");
    py.import("json")?.call_method1("loads", (json,))
}
