//! Times the Gram product (and its parts) against a full `A·Bᵀ` product:
//! `cargo run --release --example gram_probe -- C D`.
use mpsae_kernels::matmul::{gram, matmul_abt};
use mpsae_kernels::Par;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (c, d) = (args.first().copied().unwrap_or(4096), args.get(1).copied().unwrap_or(384));
    let dict: Vec<f32> = (0..c * d).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0).collect();
    let mut g = vec![0f32; c * c];
    let par = Par::rayon();
    for _ in 0..3 {
        let t = Instant::now();
        gram(&dict, &mut g, c, d, par);
        let tg = t.elapsed().as_secs_f64();
        let t = Instant::now();
        matmul_abt(&dict, &dict, &mut g, c, c, d, par);
        let tf = t.elapsed().as_secs_f64();
        let f = 2.0 * (c * c * d) as f64;
        println!(
            "c={c} d={d} ({}): gram {:.1} ms, full {:.1} ms ({:.0} GF/s)",
            mpsae_kernels::blas::backend_name(),
            tg * 1e3,
            tf * 1e3,
            f / tf / 1e9
        );
    }
}
