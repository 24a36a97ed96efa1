//! An optional system BLAS (OpenBLAS), loaded at run time when present.
//!
//! On our 2-core AVX2 machine OpenBLAS 0.3.21's `sgemm` ran a 16384 x 16384 x 768 product at
//! 155-165 GFLOP/s against 124-132 for the `gemm` crate (`cargo run --release --example
//! gram_probe -- 16384 768`, with and without `MPSAE_BLAS=gemm`). It is not a build dependency:
//! `libopenblas.so.0` is opened at run time (Debian: `apt-get install libopenblas0`), and every
//! product falls back to the `gemm` crate without it. `MPSAE_BLAS=gemm` forces the fallback.
//! It is always called single-threaded, inside rayon tasks, so one thread pool runs everything.

use libloading::Library;
use std::os::raw::{c_float, c_int};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

type Sgemm = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_float,
    *const c_float,
    c_int,
    *const c_float,
    c_int,
    c_float,
    *mut c_float,
    c_int,
);
type SetThreads = unsafe extern "C" fn(c_int);

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

/// The loaded library and its entry points.
pub struct OpenBlas {
    _lib: Library,
    sgemm: Sgemm,
    set_threads: Option<SetThreads>,
}

static BLAS: OnceLock<Option<OpenBlas>> = OnceLock::new();

fn load() -> Option<OpenBlas> {
    if std::env::var("MPSAE_BLAS").is_ok_and(|v| v == "gemm") {
        return None;
    }
    // No environment is set here: this may run with other threads reading it (a Python process
    // with torch's), where setenv is undefined behaviour. The command line sets
    // OPENBLAS_THREAD_TIMEOUT at its start instead (`mpsae` main).
    for name in ["libopenblas.so.0", "libopenblas.so"] {
        // SAFETY: loading OpenBLAS runs its initialisers, which have no preconditions.
        let Ok(lib) = (unsafe { Library::new(name) }) else { continue };
        // SAFETY: the symbols have the CBLAS signatures declared above.
        unsafe {
            let sgemm = lib.get::<Sgemm>(b"cblas_sgemm\0").ok().map(|s| *s);
            let set_threads = lib.get::<SetThreads>(b"openblas_set_num_threads\0").ok().map(|s| *s);
            if let Some(sgemm) = sgemm {
                return Some(OpenBlas { _lib: lib, sgemm, set_threads });
            }
        }
    }
    None
}

static DISABLED: AtomicBool = AtomicBool::new(false);

/// The system BLAS, if it could be loaded and is not disabled.
pub fn openblas() -> Option<&'static OpenBlas> {
    if DISABLED.load(Ordering::Relaxed) {
        return None;
    }
    BLAS.get_or_init(load).as_ref()
}

/// Turns the system BLAS off (`true`) or back on, for the whole process: tests run both paths.
pub fn set_disabled(disabled: bool) {
    DISABLED.store(disabled, Ordering::Relaxed);
}

/// Which library runs the dense products: `"openblas"` or `"gemm"`.
pub fn backend_name() -> &'static str {
    if openblas().is_some() {
        "openblas"
    } else {
        "gemm"
    }
}

impl OpenBlas {
    fn threads(&self, threads: usize) {
        if let Some(f) = self.set_threads {
            // SAFETY: plain setter.
            unsafe { f(threads.max(1) as c_int) }
        }
    }

    /// `out[m x n] = a[m x k]·b[n x k]ᵀ`, single-threaded (parallelism comes from rayon tasks
    /// over row blocks). Sizes must fit in a C int.
    pub fn abt(&self, a: &[f32], b: &[f32], out: &mut [f32], m: usize, n: usize, k: usize) {
        assert!(a.len() >= m * k && b.len() >= n * k && out.len() >= m * n, "abt: shapes");
        // SAFETY: `out` holds m rows of n floats, checked above.
        unsafe { self.abt_strided(a, b, out.as_mut_ptr(), m, n, k, n) }
    }

    /// `out[m x n] = a[m x k]·b[n x k]ᵀ` single-threaded, with `out` rows `ldc` floats apart.
    ///
    /// # Safety
    /// `out` must be valid for writes of `m` rows of `n` floats at stride `ldc`, and `a`, `b` hold
    /// at least `m·k` and `n·k` floats.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn abt_strided(
        &self,
        a: &[f32],
        b: &[f32],
        out: *mut f32,
        m: usize,
        n: usize,
        k: usize,
        ldc: usize,
    ) {
        debug_assert!(a.len() >= m * k && b.len() >= n * k);
        self.threads(1);
        (self.sgemm)(
            ROW_MAJOR,
            NO_TRANS,
            TRANS,
            m as c_int,
            n as c_int,
            k as c_int,
            1.0,
            a.as_ptr(),
            k as c_int,
            b.as_ptr(),
            k as c_int,
            0.0,
            out,
            ldc as c_int,
        )
    }
}

/// Whether the sizes fit OpenBLAS's 32-bit integers.
pub fn fits(dims: &[usize]) -> bool {
    dims.iter().all(|&v| v <= i32::MAX as usize)
        && dims.windows(2).all(|w| w[0].saturating_mul(w[1]) <= i32::MAX as usize)
}
