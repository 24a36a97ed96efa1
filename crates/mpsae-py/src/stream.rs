//! `StreamRun`: a run folder fed by a stream of rows (`mpsae.train_from_model`), over the
//! library's [`LibStreamRun`].

use crate::errors::IntoPy;
use crate::model::{engine_for, model_copy, pool, run_in, Model};
use crate::training::{options_from, provenance_from, report_dict, reports_list, PyStepper};
use mpsae::run::{Spelling, StreamRequest, StreamRun as LibStreamRun};
use mpsae::train::ExternalStep;
use numpy::{PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;

/// A run fed by a stream: its folder stays locked until `close()` (or the object is gone).
#[pyclass(module = "mpsae._mpsae")]
pub struct StreamRun {
    inner: Option<LibStreamRun>,
    pool: Option<Arc<rayon::ThreadPool>>,
    stepper: Option<PyStepper>,
    started: bool,
}

impl StreamRun {
    fn open(&mut self) -> PyResult<&mut LibStreamRun> {
        self.inner.as_mut().ok_or_else(|| PyValueError::new_err("the stream run is closed"))
    }

    /// Starts the device stepper on the trainer's state, once.
    fn start_stepper(&mut self) -> PyResult<()> {
        if self.started {
            return Ok(());
        }
        if let (Some(st), Some(run)) = (self.stepper.as_mut(), self.inner.as_ref()) {
            let r = st.start(run.trainer());
            if let Err(e) = r {
                return Err(st.error.take().unwrap_or_else(|| PyValueError::new_err(e.to_string())));
            }
        }
        self.started = true;
        Ok(())
    }

    /// The Python error of the stepper (when it raised), else the library's.
    fn error(&mut self, e: mpsae::Error) -> PyErr {
        match self.stepper.as_mut().and_then(|s| s.error.take()) {
            Some(err) => err,
            None => Err::<(), _>(e).py().unwrap_err(),
        }
    }
}

#[pymethods]
impl StreamRun {
    /// Opens (or resumes) the run folder `out` for a stream of rows of width `input_dim`;
    /// `stream` (JSON) defines the stream; `stepper` does each step's maths (the device path).
    #[new]
    #[pyo3(signature = (out, options, input_dim, stream, data_name, provenance=None, resume=false, force=false, allow_changes=false, estimate_rows=mpsae::defaults::ESTIMATE_ROWS, threads=None, stepper=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        out: PathBuf,
        options: &str,
        input_dim: usize,
        stream: &str,
        data_name: String,
        provenance: Option<String>,
        resume: bool,
        force: bool,
        allow_changes: bool,
        estimate_rows: usize,
        threads: Option<usize>,
        stepper: Option<PyObject>,
    ) -> PyResult<Self> {
        let pool = pool(threads)?;
        let (options, given) = options_from(options)?;
        let stream: serde_json::Value = serde_json::from_str(stream)
            .map_err(|e| PyValueError::new_err(format!("invalid stream: {e}")))?;
        let request = StreamRequest {
            out,
            options,
            given,
            input_dim,
            estimate_rows,
            resume,
            force,
            allow_changes,
            spelling: Spelling::Python,
            provenance: provenance_from(provenance.as_deref())?,
            stream,
            data_name,
            settings: engine_for(&pool),
        };
        let inner = LibStreamRun::open(&request).py()?;
        Ok(StreamRun {
            inner: Some(inner),
            pool,
            stepper: stepper.map(|obj| PyStepper { obj, error: None }),
            started: false,
        })
    }

    /// Rows of the stream taken so far (a resumed run continues after them).
    #[getter]
    fn rows(&mut self) -> PyResult<u64> {
        Ok(self.open()?.rows())
    }

    /// Whether the run has read its whole stream.
    #[getter]
    fn finished(&mut self) -> PyResult<bool> {
        Ok(self.open()?.finished())
    }

    /// Steps done.
    #[getter]
    fn steps_done(&mut self) -> PyResult<u64> {
        Ok(self.open()?.trainer().progress.step)
    }

    /// `(rows seen, rows needed)` while the preprocessing is being estimated, else None.
    #[getter]
    fn estimating(&mut self) -> PyResult<Option<(usize, usize)>> {
        Ok(self.open()?.stream.estimating())
    }

    /// Notes for the user (a resume, options changed, a lock taken over).
    #[getter]
    fn notes(&mut self) -> PyResult<Vec<String>> {
        Ok(self.open()?.notes.clone())
    }

    /// The run folder.
    #[getter]
    fn dir(&mut self) -> PyResult<PathBuf> {
        Ok(self.open()?.dir().to_path_buf())
    }

    /// Trains on the stream's next rows (`n x d` float32, C-contiguous, the data's own space):
    /// the reports of the steps taken; checkpoints as the options say.
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        batch: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        self.start_stepper()?;
        let x = batch.as_slice().map_err(|_| PyValueError::new_err("batch must be C-contiguous float32"))?;
        let d = batch.shape()[1];
        if let Some(row) = x.chunks(d.max(1)).position(|r| r.iter().any(|v| !v.is_finite())) {
            return Err(PyValueError::new_err(format!(
                "stream: row {row} of the batch has a NaN or infinite value"
            )));
        }
        let (inner, pool, stepper) = (self.inner.as_mut(), &self.pool, self.stepper.as_mut());
        let inner = inner.ok_or_else(|| PyValueError::new_err("the stream run is closed"))?;
        let result =
            py.allow_threads(|| run_in(pool, || inner.step(x, stepper.map(|s| s as &mut dyn ExternalStep))));
        match result {
            Ok(reports) => reports_list(py, &reports),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Trains on the stream's next `n` rows, held by the stepper on its device (its
    /// `step_held(n, lr, mean, scale)` takes them from there): they never come to the host.
    /// Refused without a stepper, or while the preprocessing is being estimated.
    fn step_held<'py>(&mut self, py: Python<'py>, n: usize) -> PyResult<Vec<Bound<'py, PyAny>>> {
        self.start_stepper()?;
        let (inner, pool, stepper) = (self.inner.as_mut(), &self.pool, self.stepper.as_mut());
        let inner = inner.ok_or_else(|| PyValueError::new_err("the stream run is closed"))?;
        let stepper = stepper.ok_or_else(|| PyValueError::new_err("step_held needs a device stepper"))?;
        let result = py.allow_threads(|| run_in(pool, || inner.step_held(n, stepper)));
        match result {
            Ok(reports) => reports_list(py, &reports),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Writes a checkpoint with the stream's position now (False while the preprocessing
    /// estimate holds rows not trained on yet: none is written).
    fn checkpoint(&mut self, py: Python<'_>) -> PyResult<bool> {
        let (inner, stepper) = (self.inner.as_mut(), self.stepper.as_mut());
        let inner = inner.ok_or_else(|| PyValueError::new_err("the stream run is closed"))?;
        let started = self.started;
        let result = py.allow_threads(|| {
            inner.checkpoint(stepper.filter(|_| started).map(|s| s as &mut dyn ExternalStep))
        });
        result.map_err(|e| self.error(e))
    }

    /// Ends the run at the stream's end: the epoch's metrics, the last checkpoint, the model.
    /// Returns the run's summary (a dict).
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.start_stepper()?;
        let (inner, pool, stepper) = (self.inner.as_mut(), &self.pool, self.stepper.as_mut());
        let inner = inner.ok_or_else(|| PyValueError::new_err("the stream run is closed"))?;
        let result =
            py.allow_threads(|| run_in(pool, || inner.finish(stepper.map(|s| s as &mut dyn ExternalStep))));
        match result {
            Ok((_, summary)) => report_dict(py, &summary),
            Err(e) => Err(self.error(e)),
        }
    }

    /// A copy of the current model (with its preprocessing and provenance); with a device
    /// stepper, its parameters as of the last checkpoint or `finish()`.
    fn model(&mut self) -> PyResult<Model> {
        let pool = self.pool.clone();
        model_copy(&self.open()?.trainer().model, pool)
    }

    /// Releases the run folder's lock (the object can no longer be used).
    fn close(&mut self) {
        self.inner = None;
    }
}
