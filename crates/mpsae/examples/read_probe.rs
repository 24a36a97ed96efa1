//! Reading speed of shuffled training batches: `cargo run --release --example read_probe -- FILE.npy [BATCH]`.
//! Prints the best of 5 passes over the file in shuffled batches, in rows per second.
use mpsae::data::{DataOptions, Dataset};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = std::path::PathBuf::from(&args[0]);
    let batch: usize = args.get(1).map_or(4096, |b| b.parse().unwrap());
    let ds = Dataset::open(&[path], &DataOptions::default()).unwrap();
    let n = ds.rows();
    let order: Vec<usize> = (0..n).map(|i| (i * 7919 + 13) % n).collect();
    let mut x = Vec::new();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for ids in order.chunks(batch) {
            #[allow(clippy::let_unit_value, unused_must_use)]
            let _ = ds.read(ids, &mut x);
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{:.0} rows/s ({} rows of {}, batches of {batch})", n as f64 / best, n, ds.dim());
}
