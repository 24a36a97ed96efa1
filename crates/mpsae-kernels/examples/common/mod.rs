//! What the probes share.
use std::time::Instant;

/// The shortest of five runs of `f`, in seconds (one run is at the mercy of the machine's noise).
pub fn best_of_5(mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}
