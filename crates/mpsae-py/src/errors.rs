//! The library's errors as Python exceptions, carrying the library's message.

use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

/// The Python exception of a library error: bad values and shapes are `ValueError`, a missing
/// file `FileNotFoundError`, other I/O `OSError`, an interrupted run `KeyboardInterrupt`.
pub fn to_py(e: mpsae::Error) -> PyErr {
    use mpsae::Error as E;
    let text = e.to_string();
    match e {
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(text)
        }
        E::Io { .. } => PyOSError::new_err(text),
        E::Interrupted { .. } => PyKeyboardInterrupt::new_err(text),
        E::Training(_) => PyRuntimeError::new_err(text),
        E::File { ref message, .. } if message.contains("no such") || message.contains("not found") => {
            PyFileNotFoundError::new_err(text)
        }
        _ => PyValueError::new_err(text),
    }
}

/// `Result` of the library as a Python result.
pub trait IntoPy<T> {
    /// Converts the error.
    fn py(self) -> pyo3::PyResult<T>;
}

impl<T> IntoPy<T> for mpsae::Result<T> {
    fn py(self) -> pyo3::PyResult<T> {
        self.map_err(to_py)
    }
}
