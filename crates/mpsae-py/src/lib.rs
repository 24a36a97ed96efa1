//! The `mpsae._mpsae` extension module: thin shells over the `mpsae` library (no maths here).
//!
//! The Python package `mpsae` (folder `python/mpsae`) wraps these classes in overcomplete's
//! names and conventions; this crate only converts arrays and errors and releases the GIL
//! around engine work.

mod errors;
mod kernels;
mod model;
mod training;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _mpsae(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::Model>()?;
    m.add_class::<training::StreamTrainer>()?;
    m.add_function(wrap_pyfunction!(training::train, m)?)?;
    m.add_function(wrap_pyfunction!(training::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(training::defaults, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::mp_encode, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::mp_decode, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::mp_backward, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
