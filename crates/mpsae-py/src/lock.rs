//! The library's folder lock (`mpsae::run::RunLock`) for Python's writers (harvest folders):
//! one writer at a time, a second refused at once naming the holder's pid, a stale lock of a
//! process that is gone taken over.

use crate::errors::IntoPy;
use mpsae::run::RunLock;
use pyo3::prelude::*;
use std::path::PathBuf;

/// A held lock of a folder; released by `release()` (or when collected).
#[pyclass(module = "mpsae._mpsae")]
pub struct FolderLock {
    lock: Option<RunLock>,
}

#[pymethods]
impl FolderLock {
    /// Takes the lock of the existing folder `dir`.
    #[new]
    fn new(dir: PathBuf) -> PyResult<Self> {
        Ok(FolderLock { lock: Some(RunLock::acquire(&dir).py()?) })
    }

    /// Who held the stale lock this one took over (`"pid host"`), else None.
    #[getter]
    fn took_over(&self) -> Option<String> {
        self.lock.as_ref().and_then(|l| l.took_over.clone())
    }

    /// Releases the lock (removes the lock file).
    fn release(&mut self) {
        self.lock = None;
    }
}
