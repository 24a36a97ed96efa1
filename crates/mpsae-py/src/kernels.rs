//! The engine's pursuit, decode and sparse backward on numpy arrays, for the PyTorch module's
//! autograd function (`mpsae.torch`): one CPU backend kept for the process (its buffers are
//! reused between calls), the GIL released while it works.

use mpsae_kernels::backend::{Backend, CpuBackend, DictionaryUse, Settings};
use mpsae_kernels::backward::{shard_bounds, BackwardInputs};
use mpsae_kernels::pursuit::{Problem, NO_ATOM};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::{Mutex, OnceLock};

/// The process's CPU backend.
fn backend() -> &'static Mutex<CpuBackend> {
    static B: OnceLock<Mutex<CpuBackend>> = OnceLock::new();
    B.get_or_init(|| {
        Mutex::new(CpuBackend::new(Settings::default()).expect("the CPU backend runs everywhere"))
    })
}

fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray2<T>, name: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{name} must be C-contiguous")))
}

fn shape2<T: numpy::Element>(a: &PyReadonlyArray2<T>) -> (usize, usize) {
    (a.shape()[0], a.shape()[1])
}

/// `k` pursuit steps of `x` (n x d) over `dictionary` (c x d): `(atoms int64 n x k, values n x k,
/// residual n x d)`, atoms -1 where nothing was picked.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn pursuit<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    dictionary: PyReadonlyArray2<'py, f32>,
    k: usize,
) -> PyResult<(Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<f32>>)> {
    let ((n, d), (c, dd)) = (shape2(&x), shape2(&dictionary));
    if d != dd || k == 0 || c == 0 {
        return Err(PyValueError::new_err(format!(
            "pursuit: x is {n} x {d}, the dictionary {c} x {dd}, k = {k}"
        )));
    }
    let (xs, ds) = (slice(&x, "x")?, slice(&dictionary, "dictionary")?);
    let run = py.allow_threads(|| {
        let p = Problem { x: xs, n, d, dict: ds, c, k, tol: None };
        backend().lock().unwrap_or_else(|e| e.into_inner()).pursuit(&p, DictionaryUse::Transient)
    });
    let atoms: Vec<i64> = run.atoms.iter().map(|&a| if a == NO_ATOM { -1 } else { a as i64 }).collect();
    Ok((
        numpy::ndarray::Array2::from_shape_vec((n, k), atoms).unwrap().into_pyarray(py),
        numpy::ndarray::Array2::from_shape_vec((n, k), run.values).unwrap().into_pyarray(py),
        numpy::ndarray::Array2::from_shape_vec((n, d), run.residual).unwrap().into_pyarray(py),
    ))
}

fn atoms_u32(atoms: &PyReadonlyArray2<i64>, c: usize) -> PyResult<Vec<u32>> {
    atoms
        .as_array()
        .iter()
        .map(|&a| match a {
            -1 => Ok(NO_ATOM),
            a if a >= 0 && (a as usize) < c => Ok(a as u32),
            a => Err(PyValueError::new_err(format!("atom {a} is outside the dictionary of {c}"))),
        })
        .collect()
}

/// `x_hat` (n x d) from sparse codes over `dictionary`.
#[pyfunction]
pub fn decode<'py>(
    py: Python<'py>,
    dictionary: PyReadonlyArray2<'py, f32>,
    atoms: PyReadonlyArray2<'py, i64>,
    values: PyReadonlyArray2<'py, f32>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let ((c, d), (n, k)) = (shape2(&dictionary), shape2(&atoms));
    if shape2(&values) != (n, k) {
        return Err(PyValueError::new_err("decode: atoms and values differ in shape"));
    }
    let (ds, ids, vs) = (slice(&dictionary, "dictionary")?, atoms_u32(&atoms, c)?, slice(&values, "values")?);
    let x_hat = py
        .allow_threads(|| backend().lock().unwrap_or_else(|e| e.into_inner()).decode(ds, d, &ids, vs, n, k));
    Ok(numpy::ndarray::Array2::from_shape_vec((n, d), x_hat).unwrap().into_pyarray(py))
}

/// The exact sparse backward through the pursuit: dL/dD (c x d, the encode dictionary being
/// `dictionary · mask` when a mask is given) and, when `input_gradient`, dL/dx (n x d).
#[pyfunction]
#[pyo3(signature = (x, dictionary, mask, atoms, values, g_x_hat, g_residual=None, g_values=None, input_gradient=true))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn backward<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    dictionary: PyReadonlyArray2<'py, f32>,
    mask: Option<PyReadonlyArray1<'py, f32>>,
    atoms: PyReadonlyArray2<'py, i64>,
    values: PyReadonlyArray2<'py, f32>,
    g_x_hat: PyReadonlyArray2<'py, f32>,
    g_residual: Option<PyReadonlyArray2<'py, f32>>,
    g_values: Option<PyReadonlyArray2<'py, f32>>,
    input_gradient: bool,
) -> PyResult<(Bound<'py, PyArray2<f32>>, Option<Bound<'py, PyArray2<f32>>>)> {
    let ((n, d), (c, dd), (na, k)) = (shape2(&x), shape2(&dictionary), shape2(&atoms));
    let same = |s: (usize, usize), want: (usize, usize), what: &str| {
        if s == want {
            Ok(())
        } else {
            Err(PyValueError::new_err(format!("backward: {what} is {s:?}, expected {want:?}")))
        }
    };
    same((dd, na), (d, n), "the dictionary's width and the atoms' rows")?;
    same(shape2(&values), (n, k), "values")?;
    same(shape2(&g_x_hat), (n, d), "dL/dx_hat")?;
    if let Some(g) = &g_residual {
        same(shape2(g), (n, d), "dL/dresidual")?;
    }
    if let Some(g) = &g_values {
        same(shape2(g), (n, k), "dL/dvalues")?;
    }
    let m = match &mask {
        Some(m) if m.len() != c => {
            return Err(PyValueError::new_err("backward: the mask needs one entry per atom"))
        }
        Some(m) => Some(m.as_slice().map_err(|_| PyValueError::new_err("mask must be contiguous"))?),
        None => None,
    };
    let ids = atoms_u32(&atoms, c)?;
    let dict_decode = slice(&dictionary, "dictionary")?;
    let dict_encode_owned: Option<Vec<f32>> = m.map(|m| {
        backend().lock().unwrap_or_else(|e| e.into_inner()).scale_dictionary(dict_decode, 1.0, Some(m), d)
    });
    let inputs = BackwardInputs {
        x: slice(&x, "x")?,
        n,
        d,
        c,
        k,
        dict_encode: dict_encode_owned.as_deref().unwrap_or(dict_decode),
        dict_decode,
        mask: m,
        atoms: &ids,
        values: slice(&values, "values")?,
        g_x_hat: slice(&g_x_hat, "dL/dx_hat")?,
        g_residual: g_residual.as_ref().map(|g| slice(g, "dL/dresidual")).transpose()?,
        g_values: g_values.as_ref().map(|g| slice(g, "dL/dvalues")).transpose()?,
    };
    let (g_dict, g_x) = py.allow_threads(|| {
        let mut g_dict = vec![0f32; c * d];
        let mut g_x = if input_gradient { vec![0f32; n * d] } else { Vec::new() };
        let bounds = shard_bounds(n, mpsae::model::DEFAULT_SHARDS);
        backend().lock().unwrap_or_else(|e| e.into_inner()).backward(
            &inputs,
            &bounds,
            &mut g_dict,
            input_gradient.then_some(g_x.as_mut_slice()),
        );
        (g_dict, g_x)
    });
    Ok((
        numpy::ndarray::Array2::from_shape_vec((c, d), g_dict).unwrap().into_pyarray(py),
        input_gradient.then(|| numpy::ndarray::Array2::from_shape_vec((n, d), g_x).unwrap().into_pyarray(py)),
    ))
}
