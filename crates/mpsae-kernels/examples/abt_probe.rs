//! Times `X·Dᵀ` (best of 10) for one shape: `cargo run --release --example abt_probe -- N C D`.
use mpsae_kernels::matmul::matmul_abt;
use mpsae_kernels::Par;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (n, c, d) = (args[0], args[1], args[2]);
    let x: Vec<f32> = (0..n * d).map(|i| ((i * 31 % 1000) as f32 - 500.0) / 500.0).collect();
    let dict: Vec<f32> = (0..c * d).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0).collect();
    let mut out = vec![0f32; n * c];
    let best = (0..10)
        .map(|_| {
            let t = Instant::now();
            matmul_abt(&x, &dict, &mut out, n, c, d, Par::rayon());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    println!("{n}x{c}x{d}: {:.1} ms, {:.0} GFLOP/s", best * 1e3, 2.0 * (n * c * d) as f64 / best / 1e9);
}
