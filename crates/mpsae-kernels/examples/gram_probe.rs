//! Times the Gram matrix (f32 and f16 storage) against a full `A·Bᵀ` product, best of 5:
//! `cargo run --release --example gram_probe -- C D`.
use mpsae_kernels::gram::{Gram, Precision};
use mpsae_kernels::matmul::{gram, matmul_abt};
use mpsae_kernels::Par;
mod common;
use common::best_of_5 as best;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (c, d) = (args.first().copied().unwrap_or(4096), args.get(1).copied().unwrap_or(384));
    let dict: Vec<f32> = (0..c * d).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0).collect();
    let mut g = vec![0f32; c * c];
    let par = Par::rayon();
    let t32 = best(|| gram(&dict, &mut g, c, d, par));
    let tfull = best(|| matmul_abt(&dict, &dict, &mut g, c, c, d, par));
    drop(g);
    let mut g16 = Gram::new();
    let t16 = best(|| g16.compute(&dict, c, d, Precision::F16, par));
    let f = 2.0 * (c * c * d) as f64;
    println!(
        "c={c} d={d} ({}): gram f32 {:.1} ms, gram f16 {:.1} ms, full product {:.1} ms ({:.0} GF/s)",
        mpsae_kernels::blas::backend_name(),
        t32 * 1e3,
        t16 * 1e3,
        tfull * 1e3,
        f / tfull / 1e9
    );
}
