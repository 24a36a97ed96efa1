//! The `mpsae._mpsae` extension module: thin shells over the `mpsae` library (no maths here).
//!
//! The Python package `mpsae` (folder `python/mpsae`) wraps these classes in overcomplete's
//! names and conventions; this crate only converts arrays and errors and releases the GIL
//! around engine work.

mod errors;
mod kernels;
mod lock;
mod model;
mod stream;
mod training;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _mpsae(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::Model>()?;
    m.add_class::<training::StreamTrainer>()?;
    m.add_class::<lock::FolderLock>()?;
    m.add_class::<stream::StreamRun>()?;
    m.add_function(wrap_pyfunction!(training::train, m)?)?;
    m.add_function(wrap_pyfunction!(training::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(training::reconstruction_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(training::defaults, m)?)?;
    m.add_function(wrap_pyfunction!(training::options, m)?)?;
    m.add_function(wrap_pyfunction!(model::check_preprocess, m)?)?;
    m.add_function(wrap_pyfunction!(model::compare, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::pursuit, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::decode, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::backward, m)?)?;
    // The names the library gives files and statistics, so Python never spells them itself.
    let files = pyo3::types::PyDict::new(m.py());
    for (key, name) in [
        ("config", mpsae::run::CONFIG_FILE),
        ("metrics", mpsae::run::METRICS_FILE),
        ("model", mpsae::io::MODEL_FILE),
        ("checkpoint", mpsae::train::CHECKPOINT_FILE),
        ("lock", mpsae::run::LOCK_FILE),
        ("harvest", mpsae::data::harvest::HARVEST_FILE),
        ("tokens", mpsae::data::harvest::TOKENS_FILE),
        ("logit_lens", mpsae::concepts::logit_lens::LOGIT_LENS_FILE),
        ("saelens_config", mpsae::io::saelens::CONFIG_FILE),
        ("saelens_weights", mpsae::io::saelens::WEIGHTS_FILE),
        ("compare", mpsae::compare::COMPARE_FILE),
    ] {
        files.set_item(key, name)?;
    }
    m.add("FILES", files)?;
    m.add("STEP_STATISTICS", mpsae::train::STEP_STATISTICS.to_vec())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
