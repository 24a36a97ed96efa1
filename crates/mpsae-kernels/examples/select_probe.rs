//! Times the fused Gram-row update and selection (`a += alpha·G[j]`, best and runner-up, block
//! maxima) per entry, f16 and f32 rows, best of 5: `cargo run --release --example select_probe -- C [ROWS]` (ROWS
//! distinct Gram rows read in a scattered order; 64 by default, in cache).
use half::f16;
use mpsae_kernels::select::{blocks, update_top2, update_top2_f16};
mod common;
use common::best_of_5 as best;

fn main() {
    let c: usize = std::env::args().nth(1).map_or(4096, |a| a.parse().expect("C: a number"));
    // ROWS Gram rows (as if that many different atoms were picked), one correlation row in cache.
    let rows: usize = std::env::args().nth(2).map_or(64, |a| a.parse().expect("ROWS: a number"));
    let g: Vec<f32> = (0..rows * c).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 5000.0).collect();
    let g16: Vec<f16> = g.iter().map(|&v| f16::from_f32(v)).collect();
    let mut a: Vec<f32> = (0..c).map(|i| ((i * 104729 % 1000) as f32) / 1000.0).collect();
    let mut bmax = vec![0f32; blocks(c)];
    let reps = 20_000_000 / c;
    let mut sink = 0usize;
    let t16 = best(|| {
        for r in 0..reps {
            let j = (r * 7919) % rows;
            sink += update_top2_f16(
                if r % 2 == 0 { -1e-3 } else { 1e-3 },
                &g16[j * c..(j + 1) * c],
                &mut a,
                &mut bmax,
            )
            .index;
        }
    });
    let t32 = best(|| {
        for r in 0..reps {
            let j = (r * 7919) % rows;
            sink +=
                update_top2(if r % 2 == 0 { -1e-3 } else { 1e-3 }, &g[j * c..(j + 1) * c], &mut a, &mut bmax)
                    .index;
        }
    });
    let per = |t: f64| t / (reps * c) as f64 * 1e9;
    println!(
        "c={c}: f16 row {:.3} ns/entry, f32 row {:.3} ns/entry (one thread; {sink})",
        per(t16),
        per(t32)
    );
}
