//! Golden-file parity with overcomplete 0.3.0.
//!
//! Runs over every `*.safetensors` in `$MPSAE_FIXTURES_DIR` (default `testdata/fixtures` in
//! the repository), tells each file's kind from the tensors it holds and takes each case's
//! parameters from its metadata (`info`), so new golden files in the same format are checked
//! without code changes. Each case runs under every pursuit strategy, sequential and parallel, on
//! the system BLAS (when present) and on the `gemm` crate.

use mpsae::criterion::{Criterion, Mse, Revive};
use mpsae::io::state_dict::{model_to_bytes, read_model, read_tensors, Tensor};
use mpsae::kernels::bf16::Products;
use mpsae::kernels::gram::Precision;
use mpsae::kernels::pursuit::Strategy;
use mpsae::kernels::Par;
use mpsae::optim::{clip_gradients, Adam, AdamParams};
use mpsae::{Device, MpSae, Normalization, SaeConfig, Settings};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("MPSAE_FIXTURES_DIR") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/fixtures"),
    }
}

struct Fixture {
    name: String,
    t: HashMap<String, Tensor>,
    info: HashMap<String, String>,
}

impl Fixture {
    fn load(path: &Path) -> Fixture {
        let bytes = std::fs::read(path).unwrap();
        let (t, meta) = read_tensors(path, &bytes).unwrap();
        let info = meta
            .get("info")
            .map(|s| {
                serde_json::from_str::<HashMap<String, String>>(s).expect("info is a JSON object of strings")
            })
            .unwrap_or_default();
        Fixture { name: path.file_name().unwrap().to_string_lossy().into(), t, info }
    }
    fn get(&self, key: &str) -> &Tensor {
        self.t.get(key).unwrap_or_else(|| panic!("{}: no tensor {key}", self.name))
    }
    fn meta(&self, key: &str) -> &str {
        self.info.get(key).unwrap_or_else(|| panic!("{}: no metadata {key}", self.name))
    }
    fn meta_f64(&self, key: &str, default: f64) -> f64 {
        self.info.get(key).map(|v| v.parse().unwrap()).unwrap_or(default)
    }
    fn config(&self, d: usize, c: usize) -> SaeConfig {
        let mut cfg = SaeConfig::new(d, c);
        cfg.k = self.meta("k").parse().unwrap();
        cfg.normalization = Normalization::parse(self.meta("normalization")).unwrap();
        cfg.use_multiplier = self.meta("use_multiplier") == "True";
        cfg.dropout = match self.info.get("dropout").map(String::as_str) {
            None | Some("None") => None,
            Some(p) => Some(p.parse().unwrap()),
        };
        cfg
    }
}

/// Maximum absolute difference, and a failure message when it exceeds `atol + rtol·|ref|`.
fn close(case: &str, what: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{case}: {what}: {} values, expected {}", got.len(), want.len()));
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        if !((g - w).abs() <= atol + rtol * w.abs()) {
            return Err(format!("{case}: {what}[{i}] = {g}, expected {w}"));
        }
    }
    Ok(())
}

/// Relative to the largest entry of the reference.
fn close_rel(case: &str, what: &str, got: &[f32], want: &[f32], tol: f64) -> Result<(), String> {
    let scale = want.iter().fold(1e-12f64, |m, &v| m.max((v as f64).abs()));
    close(case, what, got, want, tol * scale, 0.0)
}

fn picks_match(case: &str, got: &[u32], want: &Tensor) -> Result<(), String> {
    let want: Vec<u32> = want.data.iter().map(|&v| v as u32).collect();
    if got != want.as_slice() {
        return Err(format!("{case}: picks differ: got {got:?}, expected {want:?}"));
    }
    Ok(())
}

/// Every strategy of the CPU backend, sequential and parallel, and the reference backend.
fn engines() -> Vec<(String, (Device, Settings))> {
    let mut out = Vec::new();
    let runs = [
        (Strategy::Plain, Precision::F32),
        (Strategy::Gram, Precision::F32),
        (Strategy::Gram, Precision::F16),
        (Strategy::GramPicked, Precision::F32),
    ];
    for products in [Products::F32, Products::Bf16] {
        for (s, gram_precision) in runs {
            for par in [Par::Seq, Par::Rayon(NonZeroUsize::new(2).unwrap())] {
                out.push((
                    format!("cpu/{}/{}/{}/{:?}", s.name(), gram_precision.name(), products.name(), par),
                    (
                        Device::Cpu,
                        Settings { par, strategy: Some(s), memory_budget: 1 << 30, gram_precision, products },
                    ),
                ));
            }
        }
    }
    out.push(("reference".into(), (Device::Reference, Settings { par: Par::Seq, ..Settings::default() })));
    out
}

fn shape2(t: &Tensor) -> (usize, usize) {
    (t.shape[0], t.shape[1])
}

fn forward_case(f: &Fixture, (device, engine): (Device, Settings), label: &str) -> Result<(), String> {
    let case = format!("{} [{label}]", f.name);
    let (c, d) = shape2(f.get("weights_raw"));
    let x = &f.get("x").data;
    let n = x.len() / d;
    let m = f.get("multiplier").data[0];
    let mut model = MpSae::from_weights(f.config(d, c), f.get("weights_raw").data.clone(), m, 0).unwrap();
    model.set_device(device).unwrap();
    model.set_engine(engine);
    model.set_input_gradient(true);
    close(&case, "dictionary", &model.clone_dictionary(), &f.get("dictionary").data, 1e-6, 1e-5)?;
    let revive = f.t.contains_key("revive_mask");
    let criterion: Box<dyn Criterion> = if revive { Box::new(Revive::default()) } else { Box::new(Mse) };
    let mask = f.t.get("dropout_mask").map(|t| t.data.clone());
    let pass = model.training_pass(x, criterion.as_ref(), mask.as_deref()).map_err(|e| e.to_string())?;
    let fw = &pass.forward;
    picks_match(&case, &fw.codes.atoms, f.get("picks_idx"))?;
    let atol = if n * c > 100_000 { 2e-5 } else { 1e-5 };
    close(&case, "picks_val", &fw.codes.values, &f.get("picks_val").data, atol, 1e-5)?;
    close(&case, "residual", &fw.residual, &f.get("residual").data, atol, 1e-5)?;
    close(&case, "codes", &fw.codes.to_dense(), &f.get("codes").data, atol, 1e-5)?;
    close(&case, "x_hat", &fw.x_hat, &f.get("x_hat").data, atol, 1e-5)?;
    close(&case, "loss", &[pass.criterion.loss as f32], &f.get("loss").data, 1e-6, 1e-5)?;
    close(&case, "weights_after_forward", model.weights(), &f.get("weights_after_forward").data, 1e-6, 1e-5)?;
    if revive {
        let dead: Vec<f32> = Revive::default().dead_mask(&fw.codes).iter().map(|&b| b as u8 as f32).collect();
        close(&case, "revive_mask", &dead, &f.get("revive_mask").data, 0.0, 0.0)?;
        let parts: HashMap<_, _> = pass.criterion.parts.iter().cloned().collect();
        let taken = parts.contains_key("revive") as u8 as f32;
        close(&case, "revive_branch_taken", &[taken], &f.get("revive_branch_taken").data, 0.0, 0.0)?;
        close(&case, "recon_loss", &[parts["recon"] as f32], &f.get("recon_loss").data, 1e-6, 1e-5)?;
        close(&case, "revive_term", &[parts["revive"] as f32], &f.get("revive_term").data, 1e-6, 1e-5)?;
    }
    close_rel(&case, "grad_weights", &pass.grads.weights, &f.get("grad_weights").data, 1e-5)?;
    close_rel(&case, "grad_x", &pass.grads.input, &f.get("grad_x").data, 1e-5)?;
    if let Some(gm) = f.t.get("grad_multiplier") {
        let got = pass.grads.multiplier.ok_or(format!("{case}: no multiplier gradient"))?;
        close(&case, "grad_multiplier", &[got], &gm.data, 0.0, 1e-5)?;
    }
    Ok(())
}

fn eval_case(f: &Fixture, (device, engine): (Device, Settings), label: &str) -> Result<(), String> {
    let case = format!("{} [{label}]", f.name);
    let (c, d) = shape2(f.get("weights_raw"));
    let m = f.get("multiplier").data[0];
    let mut model = MpSae::from_weights(f.config(d, c), f.get("weights_raw").data.clone(), m, 0).unwrap();
    model.set_device(device).unwrap();
    model.set_engine(engine);
    model.eval();
    close(&case, "fused_dictionary", &model.get_dictionary(), &f.get("fused_dictionary").data, 1e-6, 1e-5)?;
    close(&case, "weights_after_eval", model.weights(), &f.get("weights_after_eval").data, 1e-6, 1e-5)?;
    let fw = model.forward(&f.get("x").data).map_err(|e| e.to_string())?;
    picks_match(&case, &fw.codes.atoms, f.get("picks_idx"))?;
    close(&case, "picks_val", &fw.codes.values, &f.get("picks_val").data, 1e-5, 1e-5)?;
    close(&case, "residual", &fw.residual, &f.get("residual").data, 1e-5, 1e-5)?;
    close(&case, "codes", &fw.codes.to_dense(), &f.get("codes").data, 1e-5, 1e-5)?;
    close(&case, "x_hat", &fw.x_hat, &f.get("x_hat").data, 1e-5, 1e-5)?;
    Ok(())
}

fn train_case(f: &Fixture, (device, engine): (Device, Settings), label: &str) -> Result<(), String> {
    let case = format!("{} [{label}]", f.name);
    let (c, d) = shape2(f.get("weights_raw"));
    let xb = f.get("x_batches");
    let (steps, n) = (xb.shape[0], xb.shape[1]);
    assert_eq!(steps, f.meta("steps").parse::<usize>().unwrap(), "{case}: steps metadata");
    let m0 = f.t.get("multiplier_init").map_or(0.0, |t| t.data[0]);
    let mut model = MpSae::from_weights(f.config(d, c), f.get("weights_raw").data.clone(), m0, 0).unwrap();
    model.set_device(device).unwrap();
    model.set_engine(engine);
    let hp = AdamParams {
        lr: f.meta_f64("lr", 1e-3),
        beta1: f.meta_f64("beta1", 0.9),
        beta2: f.meta_f64("beta2", 0.999),
        eps: f.meta_f64("eps", 1e-8),
    };
    let clip = f.meta_f64("clip_grad", 0.0);
    let mut adam = Adam::new(hp, c * d);
    let k = model.config().k;
    for s in 0..steps {
        let cs = format!("{case} step {}", s + 1);
        let x = &xb.data[s * n * d..(s + 1) * n * d];
        let mut pass = model.training_pass(x, &Mse, None).map_err(|e| e.to_string())?;
        let picks = &f.get("picks_idx").data[s * n * k..(s + 1) * n * k];
        let want: Vec<u32> = picks.iter().map(|&v| v as u32).collect();
        if pass.forward.codes.atoms != want {
            return Err(format!("{cs}: picks differ"));
        }
        close(&cs, "loss", &[pass.criterion.loss as f32], &f.get("loss").data[s..s + 1], 1e-6, 1e-5)?;
        let gw = &f.get("grad_weights_preclip").data[s * c * d..(s + 1) * c * d];
        close_rel(&cs, "grad_weights_preclip", &pass.grads.weights, gw, 1e-5)?;
        if let Some(gm) = f.t.get("grad_multiplier_preclip") {
            close(
                &cs,
                "grad_multiplier_preclip",
                &[pass.grads.multiplier.unwrap()],
                &gm.data[s..s + 1],
                1e-7,
                1e-4,
            )?;
        }
        let total = clip_gradients(model.backend(), &mut pass.grads, clip);
        close(&cs, "grad_total_norm", &[total as f32], &f.get("grad_total_norm").data[s..s + 1], 1e-7, 1e-5)?;
        adam.step(&mut model, &pass.grads, hp.lr);
        let wa = &f.get("weights_after_step").data[s * c * d..(s + 1) * c * d];
        close(&cs, "weights_after_step", model.weights(), wa, 1e-4, 0.0)?;
        // Most entries tight: at most 0.1% beyond 1e-6 (Adam amplifies sign flips of ~1e-8 grads).
        let loose = model.weights().iter().zip(wa).filter(|(a, b)| (*a - *b).abs() > 1e-6).count();
        if loose * 1000 > wa.len() {
            return Err(format!("{cs}: {loose} of {} weights differ by more than 1e-6", wa.len()));
        }
        if let Some(ma) = f.t.get("multiplier_after_step") {
            close(&cs, "multiplier_after_step", &[model.multiplier()], &ma.data[s..s + 1], 1e-6, 0.0)?;
        }
    }
    if let Some(ea) = f.t.get("adam_exp_avg") {
        close_rel(&case, "adam_exp_avg", &adam.exp_avg, &ea.data, 1e-4)?;
        close_rel(&case, "adam_exp_avg_sq", &adam.exp_avg_sq, &f.get("adam_exp_avg_sq").data, 1e-4)?;
    }
    Ok(())
}

fn state_dict_case(f: &Fixture, path: &Path) -> Result<(), String> {
    let (model, _) = read_model(path, None).map_err(|e| e.to_string())?;
    close(&f.name, "weights", model.weights(), &f.get("dictionary._weights").data, 0.0, 0.0)?;
    close(&f.name, "multiplier", &[model.multiplier()], &f.get("dictionary.multiplier").data, 0.0, 0.0)?;
    // Written back, the file holds exactly the same keys, shapes and values.
    let bytes = model_to_bytes(&model, &[]).map_err(|e| e.to_string())?;
    let (t, _) = read_tensors(path, &bytes).map_err(|e| e.to_string())?;
    let mut keys: Vec<_> = t.keys().collect();
    let mut want: Vec<_> = f.t.keys().collect();
    keys.sort();
    want.sort();
    if keys != want {
        return Err(format!("{}: keys {keys:?}, expected {want:?}", f.name));
    }
    for (k, v) in &f.t {
        if t[k].shape != v.shape {
            return Err(format!("{}: {k} shape {:?}, expected {:?}", f.name, t[k].shape, v.shape));
        }
        close(&f.name, k, &t[k].data, &v.data, 0.0, 0.0)?;
    }
    Ok(())
}

#[test]
fn golden_files_match_overcomplete() {
    let dir = fixtures_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!("fixtures directory {} cannot be read ({e}); set MPSAE_FIXTURES_DIR", dir.display())
    });
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.safetensors golden files in {}", dir.display());
    let mut failures = Vec::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for path in &files {
        let f = Fixture::load(path);
        let kind = if f.t.contains_key("x_batches") {
            "train"
        } else if f.t.contains_key("fused_dictionary") {
            "eval"
        } else if f.t.contains_key("x") && f.t.contains_key("grad_weights") {
            "forward"
        } else if f.t.contains_key("dictionary._weights") {
            "state_dict"
        } else {
            failures.push(format!("{}: holds no tensors of a known case kind", f.name));
            continue;
        };
        *counts.entry(kind).or_default() += 1;
        if kind == "state_dict" {
            if let Err(e) = state_dict_case(&f, path) {
                failures.push(e);
            }
            continue;
        }
        // Both dense back ends: the system BLAS (when present) and the gemm crate.
        for blas_off in [false, true] {
            mpsae::kernels::blas::set_disabled(blas_off);
            let blas = mpsae::kernels::blas::backend_name();
            for (label, engine) in engines() {
                let label = format!("{label}/{blas}");
                let r = match kind {
                    "train" => train_case(&f, engine, &label),
                    "eval" => eval_case(&f, engine, &label),
                    _ => forward_case(&f, engine, &label),
                };
                if let Err(e) = r {
                    failures.push(e);
                }
            }
        }
        mpsae::kernels::blas::set_disabled(false);
    }
    eprintln!("golden files checked: {} ({counts:?})", files.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
