//! The training loop: non-finite batches, the schedule, determinism, checkpoints.

use mpsae::data::{DataOptions, Dataset, Source};
use mpsae::optim::CosineSchedule;
use mpsae::train::{checkpoint, CriterionChoice, Silent, TrainOptions, Trainer, CHECKPOINT_FILE};
use mpsae::{Error, MpSae, SaeConfig};
use std::num::NonZeroUsize;

fn npy_bytes(data: &[f32], n: usize, d: usize) -> Vec<u8> {
    let mut b = mpsae::data::npy_header("<f4", &[n, d]);
    b.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    b
}

fn dataset(data: &[f32], n: usize, d: usize) -> Dataset {
    let src = Source::from_bytes("mem.npy", npy_bytes(data, n, d), None).unwrap();
    Dataset::from_sources(vec![src], &DataOptions::default()).unwrap()
}

fn model(d: usize, c: usize, k: usize) -> MpSae {
    let mut cfg = SaeConfig::new(d, c);
    cfg.k = k;
    let mut m = MpSae::new(cfg, 11).unwrap();
    let par = mpsae::kernels::Par::Rayon(NonZeroUsize::new(2).unwrap());
    m.set_engine(mpsae::Settings { par, ..Default::default() });
    m
}

fn rows(n: usize, d: usize, scale: f32) -> Vec<f32> {
    (0..n * d).map(|i| scale * ((i * 13 % 29) as f32 * 0.41).sin()).collect()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("mpsae-training-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn a_non_finite_batch_is_skipped_and_counted() {
    let d = 8;
    // 4 batches of 16 rows; the third one is so large that its correlations overflow to infinity.
    let mut x = rows(64, d, 1.0);
    x[32 * d..48 * d].iter_mut().for_each(|v| *v = 3e38 * v.signum());
    let data = dataset(&x, 64, d);
    let opts = TrainOptions { batch_size: 16, epochs: 2, shuffle: false, ..Default::default() };
    let mut t = Trainer::new(model(d, 12, 3), opts).unwrap();
    let reports = t.run(&data, &mut Silent).unwrap();
    assert_eq!(t.progress.total_bad, 2, "one bad batch per epoch");
    assert_eq!(reports.iter().map(|r| r.skipped_steps).sum::<u64>(), 2);
    assert!(t.model.weights().iter().all(|w| w.is_finite()));
    assert_eq!(t.adam.step, 6, "skipped steps do not update the optimiser");
}

#[test]
fn too_many_bad_steps_stop_the_run_and_keep_the_last_good_checkpoint() {
    let d = 8;
    let mut x = rows(96, d, 1.0);
    x[32 * d..].iter_mut().for_each(|v| *v = 3e38 * v.signum());
    let data = dataset(&x, 96, d);
    let dir = tmp("bad");
    let opts = TrainOptions {
        batch_size: 16,
        epochs: 1,
        shuffle: false,
        max_bad_steps: 3,
        checkpoint_every: 1,
        ..Default::default()
    };
    let mut t = Trainer::new(model(d, 12, 3), opts).unwrap();
    t.checkpoint_dir = Some(dir.clone());
    let err = t.run(&data, &mut Silent).unwrap_err();
    assert!(matches!(err, Error::Training(_)), "{err}");
    assert!(err.to_string().contains("non-finite"), "{err}");
    assert!(t.model.weights().iter().all(|w| w.is_finite()));
    let back = checkpoint::load(&dir.join(CHECKPOINT_FILE)).unwrap();
    assert!(back.model.weights().iter().all(|w| w.is_finite()));
    assert!(
        back.progress.step <= 4 && back.progress.step >= 2,
        "last checkpoint at step {}",
        back.progress.step
    );
    // Bad steps never updated the model (their forward pass only re-normalised it, a few ulps).
    for (a, b) in back.model.weights().iter().zip(t.model.weights()) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn same_seed_gives_bitwise_identical_models_and_resume_continues_exactly() {
    let d = 16;
    let data = dataset(&rows(300, d, 2.0), 300, d);
    let opts = TrainOptions {
        batch_size: 64,
        epochs: 3,
        criterion: CriterionChoice::Revive { threshold: 1e-2, min_dead: 2, coefficient: 1e-2 },
        ..Default::default()
    };
    let run = |o: TrainOptions| {
        let mut m = model(d, 40, 4);
        m.set_dropout(Some(0.2)).unwrap();
        let mut t = Trainer::new(m, o).unwrap();
        t.run(&data, &mut Silent).unwrap();
        t
    };
    let a = run(opts.clone());
    let b = run(opts.clone());
    assert_eq!(a.model.weights(), b.model.weights());
    assert_eq!(a.adam.exp_avg_sq, b.adam.exp_avg_sq);
    // Stop after 7 steps, save, load, continue: same as the uninterrupted run.
    let dir = tmp("resume");
    let mut m = model(d, 40, 4);
    m.set_dropout(Some(0.2)).unwrap();
    let mut t = Trainer::new(m, TrainOptions { steps: Some(7), ..opts.clone() }).unwrap();
    t.run(&data, &mut Silent).unwrap();
    let path = dir.join(CHECKPOINT_FILE);
    checkpoint::save(&t, &path).unwrap();
    let mut back = checkpoint::load(&path).unwrap();
    back.options.steps = None;
    back.model.set_engine(a.model.engine().to_owned());
    back.run(&data, &mut Silent).unwrap();
    assert_eq!(back.model.weights(), a.model.weights());
}

#[test]
fn schedule_matches_overcomplete_cosine_scheduler() {
    // numpy: linspace(0, 1e-3, 4) then 1e-5 + 0.5 (1e-3 - 1e-5)(1 + cos(pi i / 6)), i = 0..5.
    let s = CosineSchedule {
        base_lr: 1e-3,
        final_lr: 1e-5,
        total_steps: 10,
        warmup_steps: 4,
        start_warmup_lr: 0.0,
    };
    let want = [0.0, 1e-3 / 3.0, 2e-3 / 3.0, 1e-3];
    for (i, w) in want.iter().enumerate() {
        assert!((s.value(i as u64) - w).abs() < 1e-9, "warmup {i}");
    }
    for i in 0..6u64 {
        let w = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1.0 + (std::f64::consts::PI * i as f64 / 6.0).cos());
        assert!((s.value(4 + i) - w).abs() < 1e-9, "cosine {i}");
    }
    assert_eq!(s.value(10), 1e-5);
    // train_sae steps the scheduler after the optimiser: step 0 runs at the optimiser's own rate.
    assert_eq!(s.lr(0), 1e-3);
    assert_eq!(s.lr(1), s.value(1));
}
