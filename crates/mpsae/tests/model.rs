//! Model behaviour beyond the golden files: dropout across mode switches, custom normalisations,
//! encoders, the eval-mode dictionary after loading new weights.

use mpsae::io::state_dict::{read_model, save_model};
use mpsae::{EncodeOptions, MpSae, Normalization, SaeConfig};
use std::collections::HashSet;
use std::sync::Arc;

fn data(n: usize, d: usize) -> Vec<f32> {
    (0..n * d).map(|i| ((i * 31 % 97) as f32 * 0.173).sin()).collect()
}

fn used_atoms(m: &mut MpSae, x: &[f32]) -> HashSet<usize> {
    let e = m.encode(x).unwrap();
    (0..e.codes.n)
        .flat_map(|i| e.codes.row(i).filter(|(_, v)| *v != 0.0).map(|(a, _)| a).collect::<Vec<_>>())
        .collect()
}

#[test]
fn dropout_applies_in_training_only_and_survives_eval() {
    let mut cfg = SaeConfig::new(8, 60);
    cfg.k = 3;
    cfg.dropout = Some(0.9);
    let mut m = MpSae::new(cfg, 7).unwrap();
    let x = data(200, 8);
    let train_atoms = used_atoms(&mut m, &x).len();
    m.eval();
    let eval_atoms = used_atoms(&mut m, &x).len();
    m.train();
    assert_eq!(m.config().dropout, Some(0.9), "eval() must not drop the configured dropout");
    let again = used_atoms(&mut m, &x).len();
    assert!(train_atoms < 20 && again < 20, "training encodes use ~10% of the atoms: {train_atoms}, {again}");
    assert!(eval_atoms > 25, "eval encodes use all atoms: {eval_atoms}");
    // An explicit mask: dropped atoms get no code, decode stays unmasked.
    let mask: Vec<f32> = (0..60).map(|i| (i % 2) as f32).collect();
    let e = m.encode_with(&x, &EncodeOptions { mask: Some(&mask), ..Default::default() }).unwrap();
    for i in 0..e.codes.n {
        for (a, v) in e.codes.row(i) {
            assert!(mask[a] == 1.0 || v == 0.0);
        }
    }
}

#[test]
fn custom_normalisation_is_used_and_needs_restating_after_load() {
    let double: Arc<mpsae::model::NormalizeFn> = Arc::new(|w: &mut [f32], d: usize| {
        for row in w.chunks_mut(d) {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-8;
            row.iter_mut().for_each(|v| *v *= 2.0 / n);
        }
    });
    let mut cfg = SaeConfig::new(6, 10);
    cfg.k = 2;
    cfg.normalization = Normalization::Custom("double".into(), double.clone());
    let mut m = MpSae::new(cfg.clone(), 1).unwrap();
    let dict = m.get_dictionary();
    for row in dict.chunks(6) {
        let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 2.0).abs() < 1e-5);
    }
    let path = std::env::temp_dir().join(format!("mpsae-custom-{}.safetensors", std::process::id()));
    save_model(&m, &path, &[]).unwrap();
    let err =
        read_model(&path, None).err().expect("a custom normalisation cannot be loaded by name").to_string();
    assert!(err.contains("custom"), "{err}");
    let (back, _) = read_model(&path, Some(cfg)).unwrap();
    assert_eq!(back.weights(), m.weights());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn eval_dictionary_follows_new_weights() {
    let mut cfg = SaeConfig::new(4, 6);
    cfg.k = 1;
    cfg.use_multiplier = true;
    let mut m = MpSae::new(cfg, 3).unwrap();
    m.eval();
    let before = m.get_dictionary();
    let w: Vec<f32> = (0..24).map(|i| if i % 5 == 0 { 1.0 } else { 0.0 }).collect();
    m.set_parameters(w, 0.5).unwrap();
    let after = m.get_dictionary();
    assert_ne!(before, after, "the reference keeps a stale fused dictionary here; mpsae must not");
    let norm0: f32 = after[..4].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm0 - 0.5f32.exp()).abs() < 1e-5);
}

#[test]
fn encoders_are_kept_but_never_change_the_codes() {
    let mut cfg = SaeConfig::new(5, 9);
    cfg.k = 2;
    let x = data(7, 5);
    let mut plain = MpSae::new(cfg.clone(), 2).unwrap();
    let base = plain.forward(&x).unwrap();
    for variant in 0..3 {
        let mut m = MpSae::new(cfg.clone(), 2).unwrap();
        match variant {
            0 => m.tied(true),
            1 => m.untied(true, true),
            _ => m.untied(false, false),
        };
        let f = m.forward(&x).unwrap();
        // Same picks; values equal up to the ulps of the extra normalisation untied() makes
        // (it calls get_dictionary(), as the reference does).
        assert_eq!(f.codes.atoms, base.codes.atoms);
        for (a, b) in f.codes.values.iter().zip(&base.codes.values) {
            assert!((a - b).abs() < 1e-6);
        }
        let (w, b) = m.encoder_parameters();
        assert_eq!(b.is_some(), variant < 2);
        assert_eq!(w.is_some(), variant > 0);
    }
}

#[test]
fn input_gradient_is_computed_only_when_asked_and_changes_nothing_else() {
    let mut cfg = SaeConfig::new(16, 90);
    cfg.k = 5;
    let x = data(300, 16);
    // Two identical models (a pass normalises W in place, so one model twice is not the same).
    let mut a = MpSae::new(cfg.clone(), 3).unwrap();
    let mut b = MpSae::new(cfg, 3).unwrap();
    let off = a.training_pass(&x, &mpsae::criterion::Mse, None).unwrap();
    assert!(off.grads.input.is_empty());
    b.set_input_gradient(true);
    let on = b.training_pass(&x, &mpsae::criterion::Mse, None).unwrap();
    assert_eq!(on.grads.input.len(), x.len());
    assert!(on.grads.input.iter().any(|&g| g != 0.0));
    assert!(on.grads.weights == off.grads.weights, "dictionary gradients differ");
    assert_eq!(on.criterion.loss, off.criterion.loss);
}

#[test]
fn recycling_passes_changes_no_result() {
    use mpsae::optim::{Adam, AdamParams};
    let mut cfg = SaeConfig::new(16, 90);
    cfg.k = 4;
    let x = data(256, 16);
    let mut runs = Vec::new();
    for recycle in [false, true] {
        let mut m = MpSae::new(cfg.clone(), 5).unwrap();
        let mut adam = Adam::new(AdamParams::default(), 16 * 90);
        let mut grads = Vec::new();
        for _ in 0..4 {
            let pass = m.training_pass(&x, &mpsae::criterion::Mse, None).unwrap();
            adam.step(&mut m, &pass.grads, 1e-2);
            grads.push(pass.grads.weights.clone());
            if recycle {
                m.recycle(pass);
            }
        }
        runs.push((m.weights().to_vec(), grads));
    }
    assert!(runs[0] == runs[1], "recycled buffers changed the training");
}

#[test]
fn strategy_adapts_to_the_picks_of_the_previous_batch() {
    use mpsae::criterion::Mse;
    use mpsae::kernels::backend::cpu::planner::Planner;
    use mpsae::kernels::pursuit::{picked_gram_rows, Strategy};
    let (n, d, c, k) = (256, 64, 8192, 4);
    // Rows near four patterns: their picks share atoms, so `gram-picked` needs few Gram rows,
    // which the cost model cannot know before it has seen picks (it expects them spread out).
    let patterns = data(4, d);
    let x: Vec<f32> =
        (0..n * d).map(|i| patterns[(i / d % 4) * d + i % d] + 1e-3 * ((i % 89) as f32).sin()).collect();
    let mut cfg = SaeConfig::new(d, c);
    cfg.k = k;
    let mut m = MpSae::new(cfg, 3).unwrap();
    // The cost model weighs the work by the thread count: plan for two threads on any machine,
    // with f32 products on any machine (bf16 ones have weights of their own, under which this
    // small batch is a near tie between plain and gram-picked).
    let two = mpsae::kernels::Par::Rayon(std::num::NonZeroUsize::new(2).unwrap());
    let products = mpsae::kernels::bf16::Products::F32;
    m.set_engine(mpsae::Settings { par: two, products, ..mpsae::Settings::default() });
    let engine = *m.engine();
    let first = m.training_pass(&x, &Mse, None).unwrap();
    let mut planner = Planner::default();
    assert_eq!(first.strategy, planner.strategy_for(&engine, n, c, d, k, false));
    let rows = picked_gram_rows(&first.forward.codes.atoms, n, k, c);
    assert!(rows <= 4 * (k - 1), "{rows} Gram rows for four patterns");
    // Same weights, same batch: the second pass runs what the observed picks call for, and
    // picks the same atoms.
    let second = m.training_pass(&x, &Mse, None).unwrap();
    planner.observe(n, c, k, false, first.strategy, &first.forward.codes.atoms, first.picked_rows);
    assert_eq!(second.strategy, planner.strategy_for(&engine, n, c, d, k, false));
    assert_eq!(second.strategy, Strategy::GramPicked);
    assert_ne!(first.strategy, second.strategy);
    assert_eq!(second.picked_rows as usize, rows);
    assert_eq!(first.forward.codes.atoms, second.forward.codes.atoms);
    // A smaller batch (an epoch's last) is planned on its own and leaves the full batches' plan.
    m.training_pass(&x[..100 * d], &Mse, None).unwrap();
    let third = m.training_pass(&x, &Mse, None).unwrap();
    assert_eq!(third.strategy, Strategy::GramPicked);
}
