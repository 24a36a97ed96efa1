//! `mpsae bench`: training-step and encode throughput over a grid of shapes, with the time split
//! and the machine's own sgemm rate for the same shapes, measured side by side in one run.

use crate::common::{msg, release_free_memory, CliResult, EngineArgs};
use mpsae::criterion::Mse;
use mpsae::data::{DataOptions, Dataset};
use mpsae::kernels::matmul::{gram, matmul_abt};
use mpsae::kernels::pursuit::Strategy;
use mpsae::kernels::Par;
use mpsae::optim::{clip_gradients, Adam, AdamParams};
use mpsae::{MpSae, SaeConfig, Settings};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `mpsae bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Input dimensions (384: DINOv2 patches, 576: SmolLM2 tokens from --data-dir; 768: random).
    #[arg(long, num_args = 1.., default_values_t = [384, 576, 768])]
    d: Vec<usize>,
    /// Numbers of concepts.
    #[arg(long, num_args = 1.., default_values_t = [4096, 16384])]
    c: Vec<usize>,
    /// Pursuit steps.
    #[arg(long, num_args = 1.., default_values_t = [4, 16, 32])]
    k: Vec<usize>,
    /// Batch sizes.
    #[arg(long, num_args = 1.., default_values_t = [1024, 4096])]
    batch: Vec<usize>,
    /// A small grid (d 384, c 4096, k 4 and 16, batch 1024) for a quick look.
    #[arg(long)]
    quick: bool,
    /// Timed training steps per point (after two warm-up steps).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Folder with the real activations (dinov2s_l6_public.npy, smollm2_l15_public.npy).
    #[arg(long, default_value = "../shared/data")]
    data_dir: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn batch_for(d: usize, n: usize, dir: &std::path::Path) -> (Vec<f32>, String) {
    let file = match d {
        384 => Some("dinov2s_l6_public.npy"),
        576 => Some("smollm2_l15_public.npy"),
        _ => None,
    };
    if let Some(f) = file {
        let p = dir.join(f);
        if let Ok(ds) = Dataset::open(std::slice::from_ref(&p), &DataOptions::default()) {
            if ds.dim() == d {
                let ids: Vec<usize> = (0..n).map(|i| (i * 7919) % ds.rows()).collect();
                let mut x = Vec::new();
                if ds.read(&ids, &mut x).is_ok() {
                    return (x, f.to_string());
                }
            }
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(d as u64);
    ((0..n * d).map(|_| rng.gen_range(-1.0f32..1.0)).collect(), "random".into())
}

/// Peak resident memory since the last reset, in bytes (Linux), resetting it for the next point.
fn peak_rss_and_reset() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    Some(kb * 1024)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `mpsae bench`.
pub fn run(a: BenchArgs) -> CliResult<()> {
    let base = a.engine.engine()?;
    let (ds, cs, ks, bs) = if a.quick {
        (vec![384], vec![4096], vec![4, 16], vec![1024])
    } else {
        (a.d.clone(), a.c.clone(), a.k.clone(), a.batch.clone())
    };
    if a.reps == 0 || [&ds, &cs, &ks, &bs].iter().any(|v| v.contains(&0)) {
        return Err("invalid bench grid: every size and --reps must be at least 1".into());
    }
    let par = Par::rayon();
    println!(
        "# mpsae bench: {} threads; {} Gram; {} products; times in ms; rates in rows/s; GF = GFLOP/s",
        par.degree(),
        base.gram_precision.name(),
        base.products.name()
    );
    println!(
        "{:>4} {:>6} {:>3} {:>5} {:>11} {:>9} {:>9} {:>9} | {:>7} {:>6} {:>7} {:>7} {:>6} {:>6} | {:>6} {:>6} {:>5} {:>5} | {:>7} {:>7} {:>7} | {:>6} {:>6}",
        "d", "c", "k", "n", "strategy", "train/s", "encode/s", "step", "gram", "corr", "pursuit", "backwd", "optim", "other",
        "sgemm", "dense", "eff", "step/", "peakMB", "needMB", "warmMB", "rechk%", "rows/n"
    );
    let mut results = Vec::new();
    for &d in &ds {
        for &c in &cs {
            for &n in &bs {
                let (x, source) = batch_for(d, n, &a.data_dir);
                // The machine's sgemm for the X·Dᵀ shape, and for the Gram.
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
                let dict: Vec<f32> = (0..c * d).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
                let mut corr = vec![0f32; n * c];
                matmul_abt(&x, &dict, &mut corr, n, c, d, par);
                // The best of three: the targets compare with the best rate measured for the shape.
                let t_xdt = (0..3)
                    .map(|_| {
                        let t = Instant::now();
                        matmul_abt(&x, &dict, &mut corr, n, c, d, par);
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min);
                drop(corr);
                let sgemm_gf = 2.0 * (n * c * d) as f64 / t_xdt / 1e9;
                let engine = Settings { par, ..base };
                // The strategy adapts to the picks of the first steps, so the Gram matrix's time
                // is measured whenever it may be chosen.
                let t_gram = matches!(engine.strategy, None | Some(Strategy::Gram)).then(|| {
                    let mut g = vec![0f32; c * c];
                    let t = Instant::now();
                    gram(&dict, &mut g, c, d, par);
                    t.elapsed().as_secs_f64()
                });
                // The probes' buffers are not part of the training run whose peak memory is read.
                drop(dict);
                for &k in &ks {
                    let mut cfg = SaeConfig::new(d, c);
                    cfg.k = k;
                    let mut model = MpSae::new(cfg, 0).map_err(msg)?;
                    model.set_engine(engine);
                    let mut adam = Adam::new(AdamParams::default(), c * d);
                    release_free_memory();
                    let _ = peak_rss_and_reset();
                    let mut steps = Vec::new();
                    let mut rechecks = 0u64;
                    // The strategy and picked Gram rows of the last timed step.
                    let (mut strategy, mut picked_rows) = (Strategy::Plain, 0u64);
                    let mut split = [0f64; 6];
                    // Two warm-up steps: the first runs the strategy the cost model expects and
                    // shows it the picks, the second runs the strategy those picks call for (and
                    // pages its buffers in), as every later step of a training run does.
                    const WARM_UP: usize = 2;
                    let mut warm_up_peak = None;
                    for rep in 0..a.reps + WARM_UP {
                        if rep == WARM_UP {
                            // The peak of the warm-up steps (the first may run another strategy),
                            // then that of the steady steps, which `needMB` describes.
                            release_free_memory();
                            warm_up_peak = peak_rss_and_reset();
                        }
                        let t = Instant::now();
                        let mut pass = model.training_pass(&x, &Mse, None).map_err(msg)?;
                        let t_opt = Instant::now();
                        clip_gradients(model.backend(), &mut pass.grads, 1.0);
                        adam.step(&mut model, &pass.grads, 1e-3);
                        let (tm, pass_rechecks) = (pass.timings, pass.rechecks);
                        (strategy, picked_rows) = (pass.strategy, pass.picked_rows);
                        // As the trainer does: the gradient buffer goes back to the model.
                        model.recycle(pass);
                        let opt = t_opt.elapsed().as_secs_f64();
                        let total = t.elapsed().as_secs_f64();
                        if rep >= WARM_UP {
                            steps.push(total);
                            rechecks += pass_rechecks;
                            let parts =
                                [tm.gram, tm.correlations, tm.pursuit - tm.correlations, tm.backward, opt];
                            for (s, p) in split.iter_mut().zip(parts) {
                                *s += p / a.reps as f64;
                            }
                            split[5] += (total - parts.iter().sum::<f64>()) / a.reps as f64;
                        }
                    }
                    let peak = peak_rss_and_reset();
                    let step = median(steps);
                    // Encode throughput (eval mode; the Gram of a fixed dictionary is computed once).
                    model.eval();
                    model.prepare_for(n, k);
                    model.encode(&x).map_err(msg)?;
                    // Median of a few encodes (one is at the mercy of the machine's noise).
                    let mut encodes = Vec::new();
                    for _ in 0..a.reps.max(3) {
                        let t = Instant::now();
                        model.encode(&x).map_err(msg)?;
                        encodes.push(t.elapsed().as_secs_f64());
                    }
                    let t_enc = median(encodes);
                    // Dense work this strategy needs, at the machine's rate for those shapes.
                    let picked_share = picked_rows as f64 / n as f64;
                    let dense_s = match strategy {
                        Strategy::Gram => t_xdt + t_gram.unwrap_or(f64::NAN),
                        Strategy::GramPicked => t_xdt * (1.0 + picked_share),
                        Strategy::Plain => t_xdt * k as f64,
                    };
                    let dense_in_step = split[0] + split[1];
                    let dense_flops = 2.0
                        * (n * c * d) as f64
                        * match strategy {
                            Strategy::Gram => 1.0 + c as f64 / (2 * n) as f64,
                            Strategy::GramPicked => 1.0 + picked_share,
                            Strategy::Plain => k as f64,
                        };
                    let dense_gf = dense_flops / dense_in_step.max(1e-12) / 1e9;
                    // What a step must hold: W, grad, Adam moments, the Gram matrix or the Gram
                    // rows used (gram-picked holds at most 2n), batch, picks. Not counted:
                    // gram-picked's n x c correlations.
                    let need = 4.0 * (4 * c * d + n * d * 3 + 2 * n * k) as f64
                        + match strategy {
                            Strategy::Gram => (base.gram_precision.bytes() * c * c) as f64,
                            Strategy::GramPicked => (4 * c * (picked_rows as usize).min(2 * n).min(c)) as f64,
                            Strategy::Plain => 0.0,
                        };
                    let ms = |s: f64| s * 1e3;
                    // Share of pursuit steps whose pick was re-checked with exact dot products.
                    let recheck_pct = 100.0 * rechecks as f64 / (a.reps * n * k) as f64;
                    println!(
                        "{d:>4} {c:>6} {k:>3} {n:>5} {:>11} {:>9.0} {:>9.0} {:>9.1} | {:>7.1} {:>6.1} {:>7.1} {:>7.1} {:>6.1} {:>6.1} | {:>6.1} {:>6.1} {:>5.2} {:>5.2} | {:>7.0} {:>7.0} {:>7.0} | {:>6.2} {:>6.2}",
                        strategy.name(),
                        n as f64 / step,
                        n as f64 / t_enc,
                        ms(step),
                        ms(split[0]),
                        ms(split[1]),
                        ms(split[2]),
                        ms(split[3]),
                        ms(split[4]),
                        ms(split[5]),
                        sgemm_gf,
                        dense_gf,
                        dense_gf / sgemm_gf,
                        step / dense_s,
                        peak.map_or(f64::NAN, |p| p as f64 / 1e6),
                        need / 1e6,
                        warm_up_peak.map_or(f64::NAN, |p| p as f64 / 1e6),
                        recheck_pct,
                        picked_share,
                    );
                    results.push(json!({
                        "d": d, "c": c, "k": k, "batch": n, "data": source, "strategy": strategy.name(),
                        "threads": par.degree(), "products": base.products.name(),
                        "gram_precision": base.gram_precision.name(),
                        "train_rows_per_s": n as f64 / step, "encode_rows_per_s": n as f64 / t_enc,
                        "step_s": step,
                        "split_s": {"gram": split[0], "correlations": split[1], "pursuit_select": split[2],
                                    "backward": split[3], "optimizer": split[4], "other": split[5]},
                        "sgemm_gflops": sgemm_gf, "dense_gflops_in_step": dense_gf,
                        "dense_fraction_of_sgemm": dense_gf / sgemm_gf,
                        "step_over_dense": step / dense_s,
                        "peak_rss_bytes": peak, "peak_rss_warm_up_bytes": warm_up_peak, "must_hold_bytes": need,
                        "recheck_percent": recheck_pct, "picked_gram_rows": picked_rows,
                    }));
                }
            }
        }
    }
    println!("# step/ = training step time over the dense work it needs (X·Dᵀ + Gram, X·Dᵀ + the picked Gram rows, or k·X·Dᵀ) at the sgemm rate");
    println!("# peakMB = peak memory of the timed steps; warmMB = of the two warm-up steps before them (the first runs the cost model's guess)");
    println!("# rows/n = Gram rows computed by gram-picked in the last step, per batch row");
    println!("# eff = dense GFLOP/s inside the step over the standalone f32 sgemm rate for X·Dᵀ (above 1 with bf16 products)");
    if let Some(p) = a.out {
        let v = json!({"threads": par.degree(), "results": results});
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap())
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}
