//! The backend seam: the CPU backend against the plain reference backend on random and real rows,
//! and gradients that depend on the micro-shards only (not on threads, not on how many processes
//! computed which shards).

use mpsae::criterion::{Criterion, Mse, Revive};
use mpsae::data::{DataOptions, Dataset};
use mpsae::kernels::backward::tree_sum;
use mpsae::kernels::Par;
use mpsae::model::ShardSpec;
use mpsae::train::batch_share;
use mpsae::{Device, MpSae, SaeConfig, Settings};
use proptest::prelude::*;
use std::num::NonZeroUsize;
use std::path::Path;

fn pair(cfg: &SaeConfig, seed: u64) -> (MpSae, MpSae) {
    let cpu = MpSae::new(cfg.clone(), seed).unwrap();
    let mut reference = MpSae::new(cfg.clone(), seed).unwrap();
    reference.set_device(Device::Reference).unwrap();
    assert_eq!(reference.backend().name(), "reference");
    (cpu, reference)
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(1e-12f64, |m, &v| m.max((v as f64).abs()));
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).fold(0.0, f64::max) / scale
}

/// Same picks, close values, close gradients (cases are drawn so that no pick is a near tie).
fn compare(cfg: &SaeConfig, seed: u64, x: &[f32], mask_every: Option<usize>) -> Result<(), TestCaseError> {
    let (mut cpu, mut reference) = pair(cfg, seed);
    cpu.set_input_gradient(true);
    reference.set_input_gradient(true);
    let mask: Option<Vec<f32>> =
        mask_every.map(|e| (0..cfg.nb_concepts).map(|j| if j % e == 0 { 0.0 } else { 1.0 }).collect());
    let b = reference.training_pass(x, &Revive::default(), mask.as_deref()).unwrap();
    // Rule out rows whose pursuit reaches a correlation near zero, where it meets the exact zeros
    // of dropped atoms and rounding alone decides the argmax (`k_ties_zero` covers ties).
    let d = cfg.input_dim;
    let smallest = (0..b.forward.codes.n)
        .map(|i| {
            let norm = x[i * d..(i + 1) * d].iter().map(|v| v * v).sum::<f32>().sqrt();
            let k = cfg.k;
            b.forward.codes.values[i * k..(i + 1) * k]
                .iter()
                .map(|v| v.abs() / norm.max(1e-12))
                .fold(f32::MAX, f32::min)
        })
        .fold(f32::MAX, f32::min);
    prop_assume!(smallest > 1e-3);
    let a = cpu.training_pass(x, &Revive::default(), mask.as_deref()).unwrap();
    prop_assert_eq!(&a.forward.codes.atoms, &b.forward.codes.atoms);
    prop_assert!(max_rel(&a.forward.codes.values, &b.forward.codes.values) < 1e-4);
    prop_assert!(max_rel(&a.forward.x_hat, &b.forward.x_hat) < 1e-4);
    prop_assert!(max_rel(&a.grads.weights, &b.grads.weights) < 1e-3);
    prop_assert!(max_rel(&a.grads.input, &b.grads.input) < 1e-3);
    cpu.eval();
    reference.eval();
    let (ea, eb) = (cpu.encode(x).unwrap(), reference.encode(x).unwrap());
    prop_assert_eq!(ea.codes.atoms, eb.codes.atoms);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn cpu_and_reference_backends_agree_on_random_rows(
        d in 2usize..40, c in 8usize..80, k in 1usize..8, n in 1usize..40, seed in 0u64..1000,
        dropout in prop_oneof![Just(None), Just(Some(3usize))],
    ) {
        // With k >= d a row's residual can reach ~0, where rounding alone decides the argmax.
        prop_assume!(k < d);
        let mut cfg = SaeConfig::new(d, c);
        cfg.k = k;
        // Integer-free, well-separated random values: exact ties have probability zero.
        let x: Vec<f32> = (0..n * d).map(|i| (((i as u64 * 2654435761 + seed) % 10007) as f32 / 5003.0) - 1.0).collect();
        compare(&cfg, seed, &x, dropout)?;
    }
}

#[test]
fn cpu_and_reference_backends_agree_on_real_rows() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/data/smollm2_l15_public.npy");
    let data = Dataset::open(&[path], &DataOptions::default()).unwrap();
    let mut x = Vec::new();
    data.read_range(100, 48, &mut x).unwrap();
    let mut cfg = SaeConfig::new(576, 512);
    cfg.k = 8;
    compare(&cfg, 7, &x, None).unwrap();
}

#[test]
fn an_unknown_device_is_a_clear_error() {
    let e = Device::from_name("tpu").unwrap_err().to_string();
    assert!(e.contains("unknown device 'tpu'") && e.contains("cpu, reference"), "{e}");
    let e = Device::from_name("cuda").unwrap_err().to_string();
    assert!(e.contains("no CUDA backend"), "{e}");
}

fn rows(n: usize, d: usize) -> Vec<f32> {
    (0..n * d).map(|i| ((i * 7919 % 1013) as f32 / 506.0) - 1.0).collect()
}

#[test]
fn gradients_do_not_depend_on_the_thread_count() {
    let (d, c, n) = (48, 300, 203);
    let mut cfg = SaeConfig::new(d, c);
    cfg.k = 6;
    cfg.use_multiplier = true;
    let x = rows(n, d);
    let grads: Vec<_> =
        [Par::Seq, Par::Rayon(NonZeroUsize::new(2).unwrap()), Par::Rayon(NonZeroUsize::new(3).unwrap())]
            .into_iter()
            .map(|par| {
                let mut m = MpSae::new(cfg.clone(), 1).unwrap();
                m.set_engine(Settings { par, ..Settings::default() });
                let p = m.training_pass(&x, &Mse, None).unwrap();
                (p.grads.weights, p.grads.multiplier)
            })
            .collect();
    assert!(grads.iter().all(|g| g.0 == grads[0].0 && g.1 == grads[0].1));
}

#[test]
fn processes_sharing_a_batch_get_the_one_process_gradient_bitwise() {
    let (d, c, n, shards) = (32, 200, 157, 4);
    let mut cfg = SaeConfig::new(d, c);
    cfg.k = 5;
    cfg.use_multiplier = true;
    let x = rows(n, d);
    let mask: Vec<f32> = (0..c).map(|j| if j % 3 == 0 { 0.0 } else { 1.0 }).collect();
    let mask = Some(mask.as_slice());
    // The revive criterion needs whole-batch statistics (dead atoms, residual sum): the branch
    // that uses them is taken (threshold high, no minimum).
    let revive = Revive { threshold: 0.5, min_dead: 0, coefficient: 0.1 };
    let criteria: [&dyn Criterion; 2] = [&Mse, &revive];
    for criterion in criteria {
        let mut one = MpSae::new(cfg.clone(), 3).unwrap();
        let whole =
            one.shard_pass(&x, criterion, mask, &ShardSpec::whole(n, shards), &mut |_| Ok(())).unwrap();
        let whole = one.finish_pass(whole);
        for world in [2usize, 4] {
            let spec = |rank| {
                let share = batch_share(n, shards, rank, world);
                let spec = ShardSpec {
                    bounds: share.bounds.clone(),
                    batch_rows: n,
                    first_shard: share.first_shard,
                    total_shards: share.total_shards,
                };
                (share, spec)
            };
            // Each "process" computes its aligned block of shards. Their statistics are summed
            // as a reducer would: gathered in a first round, handed back in a second.
            let mut total: Option<Vec<f64>> = None;
            for rank in 0..world {
                let (share, spec) = spec(rank);
                let mut m = MpSae::new(cfg.clone(), 3).unwrap();
                let xs = &x[share.rows.start * d..share.rows.end * d];
                m.shard_pass(xs, criterion, mask, &spec, &mut |v| {
                    let t = total.get_or_insert_with(|| vec![0.0; v.len()]);
                    t.iter_mut().zip(v.iter()).for_each(|(a, b)| *a += b);
                    Ok(())
                })
                .unwrap();
            }
            let mut parts = Vec::new();
            let mut loss = 0.0;
            let mut last = None;
            for rank in 0..world {
                let (share, spec) = spec(rank);
                let mut m = MpSae::new(cfg.clone(), 3).unwrap();
                let xs = &x[share.rows.start * d..share.rows.end * d];
                let p = m
                    .shard_pass(xs, criterion, mask, &spec, &mut |v| {
                        v.copy_from_slice(total.as_ref().unwrap());
                        Ok(())
                    })
                    .unwrap();
                loss += p.criterion.loss;
                parts.push(p.dictionary_gradient.clone());
                last = Some((m, p));
            }
            let (m, mut p) = last.unwrap();
            p.dictionary_gradient = tree_sum(&mut parts);
            let done = m.finish_pass(p);
            let name = criterion.name();
            assert_eq!(done.grads.weights, whole.grads.weights, "{name}: {world} processes");
            assert_eq!(done.grads.multiplier, whole.grads.multiplier, "{name}: {world} processes");
            assert!(
                (loss - whole.criterion.loss).abs() <= 1e-9 * whole.criterion.loss.abs().max(1.0),
                "{name}"
            );
        }
    }
}
