//! Helpers of the CLI tests: run the binary, make data files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `mpsae` binary under test.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpsae"));
    c.arg("--threads").arg("2");
    c
}

/// Runs the binary with `args`.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

/// Runs and asserts success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "mpsae {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Runs and asserts a failure with exactly one line on stderr containing `needle`.
pub fn fails_with(args: &[&str], needle: &str) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "mpsae {args:?} should fail");
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line, got:\n{err}");
    assert!(err.contains(needle), "stderr of {args:?} lacks '{needle}':\n{err}");
}

/// A fresh temporary folder for one test.
pub fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("mpsae-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// The real-data subsets committed in the repository (the first 4096 rows of each activation
/// file of the project's shared data, with their token lines; `testdata/README.md`).
pub fn shared_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/data").join(name)
}

/// The demo data committed in the repository.
pub fn demo_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/minilm_l3_demo.npy")
}

/// Writes an NPY file with a given dtype descriptor, shape and raw little-endian payload.
pub fn write_npy_raw(path: &Path, descr: &str, shape: &[usize], payload: &[u8]) {
    let mut b = mpsae::data::npy_header(descr, shape);
    b.extend_from_slice(payload);
    std::fs::write(path, b).unwrap();
}

/// Writes an `n x d` f32 NPY file.
pub fn write_npy_f32(path: &Path, data: &[f32], n: usize, d: usize) {
    mpsae::data::write_npy_f32(path, data, n, d).unwrap();
}

/// Reads the tensors of a safetensors file as (dtype, shape, f64 values).
pub fn read_st(path: &Path) -> std::collections::HashMap<String, (String, Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let vals: Vec<f64> = match v.dtype() {
                safetensors::Dtype::F32 => {
                    v.data().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect()
                }
                safetensors::Dtype::I64 => {
                    v.data().chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect()
                }
                _ => Vec::new(),
            };
            (name, (format!("{:?}", v.dtype()), v.shape().to_vec(), vals))
        })
        .collect()
}
