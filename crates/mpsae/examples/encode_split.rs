//! Where encode time goes: `cargo run --release --example encode_split -- D C K N`.
use mpsae::{MpSae, SaeConfig};
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|v| v.parse().unwrap()).collect();
    let (d, c, k, n) = (a[0], a[1], a[2], a[3]);
    let mut cfg = SaeConfig::new(d, c);
    cfg.k = k;
    let mut m = MpSae::new(cfg, 0).unwrap();
    m.eval();
    m.prepare_for(n, k);
    let x: Vec<f32> = (0..n * d).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    m.encode(&x).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let e = m.encode(&x).unwrap();
        let total = t.elapsed().as_secs_f64();
        println!(
            "encode {:.1} ms: correlations {:.1} ms, rest {:.1} ms ({:.0} rows/s)",
            total * 1e3,
            e.correlation_seconds * 1e3,
            (total - e.correlation_seconds) * 1e3,
            n as f64 / total
        );
    }
}
