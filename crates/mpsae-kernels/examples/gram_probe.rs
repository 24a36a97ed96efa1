//! Times the Gram matrix (f32 and f16 storage, from f32 and bf16 products) against a full `A·Bᵀ`
//! product, best of 5: `cargo run --release --example gram_probe -- C D [all]` (past 32768 atoms
//! only the f16 matrix, unless `all`).
use mpsae_kernels::bf16::{self, Products};
use mpsae_kernels::gram::{Gram, Precision};
use mpsae_kernels::matmul::{gram, matmul_abt};
use mpsae_kernels::Par;
mod common;
use common::best_of_5 as best;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (c, d) = (args.first().copied().unwrap_or(4096), args.get(1).copied().unwrap_or(384));
    let dict: Vec<f32> = (0..c * d).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0).collect();
    let par = Par::rayon();
    let f = 2.0 * (c * c * d) as f64;
    // An f32 c x c matrix past 32768 atoms (4 GiB and more) only with `all` as third argument.
    let f32_matrices = c <= 32768 || std::env::args().nth(3).is_some_and(|a| a == "all");
    if f32_matrices {
        let mut g = vec![0f32; c * c];
        let t32 = best(|| gram(&dict, &mut g, c, d, par));
        let tfull = best(|| matmul_abt(&dict, &dict, &mut g, c, c, d, par));
        drop(g);
        println!(
            "c={c} d={d} ({}): gram f32 {:.1} ms, full product {:.1} ms ({:.0} GF/s)",
            mpsae_kernels::blas::backend_name(),
            t32 * 1e3,
            tfull * 1e3,
            f / tfull / 1e9
        );
    }
    let mut products = vec![Products::F32];
    if bf16::hardware() {
        products.push(Products::Bf16);
    }
    for products in products {
        for precision in [Precision::F32, Precision::F16] {
            if precision == Precision::F32 && !f32_matrices {
                continue;
            }
            let mut gm = Gram::new();
            let t = best(|| gm.compute(&dict, c, d, precision, products, par));
            println!(
                "  Gram::compute {} storage, {} products: {:.1} ms ({:.0} GF/s of the triangle)",
                precision.name(),
                products.name(),
                t * 1e3,
                f / 2.0 / t / 1e9
            );
        }
    }
}
