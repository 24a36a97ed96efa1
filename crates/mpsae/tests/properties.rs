//! Property tests over random shapes and values.

use mpsae::io::state_dict::{read_model, save_model};
use mpsae::kernels::pursuit::Strategy;
use mpsae::{MpSae, Normalization, SaeConfig, Settings};
use proptest::prelude::*;

fn model(d: usize, c: usize, k: usize, seed: u64, strategy: Strategy) -> MpSae {
    let mut cfg = SaeConfig::new(d, c);
    cfg.k = k;
    let mut m = MpSae::new(cfg, seed).unwrap();
    m.set_engine(Settings { strategy: Some(strategy), ..Settings::default() });
    m
}

fn strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    prop_oneof![Just(Strategy::Plain), Just(Strategy::Gram), Just(Strategy::GramPicked)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// x = x_hat + residual, in training and eval mode, whatever the shapes and values.
    #[test]
    fn reconstruction_plus_residual_is_the_input(
        d in 1usize..24, c in 1usize..40, k in 1usize..9, n in 1usize..20, seed in 0u64..1000,
        scale in 0.01f32..100.0, s in strategy(), eval in any::<bool>(),
    ) {
        let mut m = model(d, c, k, seed, s);
        if eval { m.eval(); }
        let x: Vec<f32> = (0..n * d).map(|i| scale * ((i as f32 + seed as f32) * 0.731).sin()).collect();
        let f = m.forward(&x).unwrap();
        for ((a, b), r) in x.iter().zip(&f.x_hat).zip(&f.residual) {
            prop_assert!((a - (b + r)).abs() <= 1e-4 * scale.max(1.0));
        }
    }

    /// With unit-norm atoms the residual norm never increases along the pursuit.
    #[test]
    fn residual_norm_never_increases(
        d in 2usize..24, c in 2usize..40, k in 1usize..12, n in 1usize..16, seed in 0u64..1000, s in strategy(),
    ) {
        let mut m = model(d, c, k, seed, s);
        let x: Vec<f32> = (0..n * d).map(|i| ((i * 7 + seed as usize) as f32 * 0.37).cos()).collect();
        let e = m.encode(&x).unwrap();
        for row in 0..n {
            let x2: f32 = x[row * d..(row + 1) * d].iter().map(|v| v * v).sum();
            let mut prev = x2;
            for t in 0..k {
                let now = e.energy[row * k + t];
                prop_assert!(now <= prev * (1.0 + 1e-5) + 1e-6, "row {row} step {t}: {now} > {prev}");
                prev = now;
            }
        }
    }

    /// The sparse codes and their dense form decode to the same rows, and agree entry by entry.
    #[test]
    fn sparse_and_dense_codes_agree(
        d in 1usize..16, c in 1usize..30, k in 1usize..10, n in 1usize..12, seed in 0u64..1000,
    ) {
        let mut m = model(d, c, k, seed, Strategy::Plain);
        m.eval();
        let x: Vec<f32> = (0..n * d).map(|i| ((i + 3 * seed as usize) as f32 * 1.3).sin()).collect();
        let f = m.forward(&x).unwrap();
        let dense = f.codes.to_dense();
        let dict = m.get_dictionary();
        for row in 0..n {
            for j in 0..d {
                let v: f32 = (0..c).map(|a| dense[row * c + a] * dict[a * d + j]).sum();
                prop_assert!((v - f.x_hat[row * d + j]).abs() < 1e-4);
            }
            for (a, v) in f.codes.row_dense(row) {
                prop_assert!((dense[row * c + a] - v).abs() < 1e-6);
            }
        }
    }

    /// Save and load round-trip every parameter and the configuration exactly.
    #[test]
    fn save_load_round_trips(
        d in 1usize..12, c in 1usize..20, k in 1usize..6, seed in 0u64..1000, mult in -1.0f32..1.0,
        norm in 0usize..5, dropout in proptest::option::of(0.0f32..0.99), enc in 0usize..5,
    ) {
        let mut cfg = SaeConfig::new(d, c);
        cfg.k = k;
        cfg.use_multiplier = true;
        cfg.dropout = dropout;
        cfg.normalization = [Normalization::L2, Normalization::MaxL2, Normalization::L1, Normalization::MaxL1,
                             Normalization::Identity][norm].clone();
        let mut m = MpSae::new(cfg, seed).unwrap();
        let w = m.weights().to_vec();
        m.set_parameters(w, mult).unwrap();
        match enc { 1 => { m.tied(false); } 2 => { m.tied(true); } 3 => { m.untied(true, true); } 4 => { m.untied(false, false); } _ => {} }
        let path = std::env::temp_dir().join(format!("mpsae-prop-{}-{seed}-{d}-{c}.safetensors", std::process::id()));
        save_model(&m, &path, &[]).unwrap();
        let (back, _) = read_model(&path, None).unwrap();
        let _ = std::fs::remove_file(&path);
        prop_assert_eq!(back.config(), m.config());
        prop_assert_eq!(back.weights(), m.weights());
        prop_assert_eq!(back.multiplier(), m.multiplier());
        prop_assert_eq!(back.encoder_parameters(), m.encoder_parameters());
    }
}
