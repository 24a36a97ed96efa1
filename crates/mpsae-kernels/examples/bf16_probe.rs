//! Times the bf16 operands' preparation (rows and panels of a `c x d` dictionary) and the bf16
//! product `X·Dᵀ` against f32 `sgemm`, best of 5: `cargo run --release --example bf16_probe -- C D N`.
use mpsae_kernels::bf16::{self, Bf16Panels, Bf16Rows};
use mpsae_kernels::matmul::matmul_abt;
use mpsae_kernels::Par;
mod common;
use common::best_of_5 as best;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("sizes: numbers")).collect();
    let (c, d, n) = (
        args.first().copied().unwrap_or(16384),
        args.get(1).copied().unwrap_or(576),
        args.get(2).copied().unwrap_or(4096),
    );
    let dict: Vec<f32> = (0..c * d).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0).collect();
    let x: Vec<f32> = (0..n * d).map(|i| ((i * 104729 % 1000) as f32 - 500.0) / 50.0).collect();
    let par = Par::rayon();
    let mut rows = Bf16Rows::default();
    let t_rows = best(|| rows.fill(&dict, c, d, par));
    let mut panels = Bf16Panels::default();
    let t_panels = best(|| panels = Bf16Panels::new(&rows, par));
    let xr = Bf16Rows::new(&x, n, d, par);
    let mut out = vec![0f32; n * c];
    let t_bf16 = best(|| bf16::abt_par(&xr, 0, n, &panels, &mut out, c, par));
    let t_f32 = best(|| matmul_abt(&x, &dict, &mut out, n, c, d, par));
    let f = 2.0 * (n * c * d) as f64;
    println!(
        "c={c} d={d} n={n}: dictionary to bf16 rows {:.1} ms, to panels {:.1} ms; X·Dᵀ bf16 {:.1} ms ({:.0} GF/s), f32 {:.1} ms ({:.0} GF/s, {}){}",
        t_rows * 1e3,
        t_panels * 1e3,
        t_bf16 * 1e3,
        f / t_bf16 / 1e9,
        t_f32 * 1e3,
        f / t_f32 / 1e9,
        mpsae_kernels::blas::backend_name(),
        if bf16::hardware() { "" } else { " (no AVX-512 BF16: the portable loop)" }
    );
}
