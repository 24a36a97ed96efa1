//! End-to-end tests of every command on small files, the shared real data and the demo data.

mod common;
use common::*;
use serde_json::Value;

#[test]
fn train_writes_an_overcomplete_compatible_run_folder() {
    let dir = tmp("train");
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    let summary = ok(&[
        "train",
        "--concepts",
        "256",
        "-k",
        "4",
        "--epochs",
        "2",
        "--batch-size",
        "512",
        "--out",
        o,
        "--progress",
        "plain",
        "--detailed-stats",
    ]);
    let s: Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(s["steps"], 16);
    assert!(s["r2"].as_f64().unwrap() > 0.0);
    // Exactly the reference's state-dict keys, shapes and dtypes.
    let t = read_st(&out.join("model.safetensors"));
    let mut keys: Vec<_> = t.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["dictionary._weights", "dictionary.multiplier"]);
    assert_eq!(t["dictionary._weights"].0, "F32");
    assert_eq!(t["dictionary._weights"].1, vec![256, 384]);
    assert_eq!(t["dictionary.multiplier"].0, "F32");
    assert!(t["dictionary.multiplier"].1.is_empty());
    // Configuration and per-epoch metrics.
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model"]["k"], 4);
    assert_eq!(cfg["model"]["nb_concepts"], 256);
    let lines: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["epoch"], i + 1);
        assert!(l["avg_loss"].as_f64().unwrap() > 0.0);
        assert!((l["l0"].as_f64().unwrap() - 4.0).abs() < 0.5);
        assert_eq!(l["explained_variance_per_step"].as_array().unwrap().len(), 4);
        let ev = l["explained_variance"].as_f64().unwrap();
        assert!(ev.is_finite() && ev <= 1.0, "explained variance {ev}");
        // --detailed-stats: unit-norm atoms, and positive code and gradient norms.
        assert!((l["detailed"]["dictionary_norms"].as_f64().unwrap() - 1.0).abs() < 1e-4);
        assert!(l["detailed"]["z_l2"].as_f64().unwrap() > 0.0);
        assert!(l["detailed"]["params_grad_norm"].as_f64().unwrap() > 0.0);
    }
    assert!(out.join("checkpoint.safetensors").exists());
    // A second train into the same folder refuses without --resume/--force.
    fails_with(&["train", "--concepts", "256", "-k", "4", "--steps", "2", "--out", o], "already holds a run");
}

#[test]
fn encode_eval_inspect_on_shared_real_data() {
    let dir = tmp("encode");
    let data = shared_data("smollm2_l15_public.npy");
    let (out, d) = (dir.join("run"), data.to_str().unwrap());
    let o = out.to_str().unwrap();
    ok(&[
        "train",
        "--data",
        d,
        "--concepts",
        "512",
        "-k",
        "8",
        "--steps",
        "6",
        "--batch-size",
        "512",
        "--center",
        "--scale",
        "--lr",
        "5e-3",
        "--out",
        o,
        "--progress",
        "quiet",
    ]);
    // A small slice of the data for encoding: 300 rows written as f32.
    let ds = mpsae::data::Dataset::open(std::slice::from_ref(&data), &Default::default()).unwrap();
    let mut rows = Vec::new();
    ds.read_range(0, 300, &mut rows).unwrap();
    let small = dir.join("small.npy");
    write_npy_f32(&small, &rows, 300, 576);
    let s = small.to_str().unwrap();
    let sparse = dir.join("codes.safetensors");
    ok(&["encode", "--model", o, "--data", s, "--out", sparse.to_str().unwrap()]);
    let t = read_st(&sparse);
    assert_eq!(t["indices"].1, vec![300, 8]);
    assert_eq!(t["indices"].0, "I64");
    assert_eq!(t["values"].1, vec![300, 8]);
    let dense = dir.join("dense.safetensors");
    ok(&["encode", "--model", o, "--data", s, "--out", dense.to_str().unwrap(), "--format", "dense"]);
    let td = read_st(&dense);
    assert_eq!(td["codes"].1, vec![300, 512]);
    // Sparse and dense agree.
    let mut from_sparse = vec![0f64; 300 * 512];
    for i in 0..300 * 8 {
        let (j, v) = (t["indices"].2[i], t["values"].2[i]);
        from_sparse[(i / 8) * 512 + j as usize] += v;
    }
    for (a, b) in from_sparse.iter().zip(&td["codes"].2) {
        assert!((a - b).abs() < 1e-5);
    }
    // A different k at inference, and a tolerance that stops rows early (-1 indices).
    let k12 = dir.join("k12.safetensors");
    ok(&["encode", "--model", o, "--data", s, "--out", k12.to_str().unwrap(), "-k", "12", "--tol", "0.9"]);
    let t12 = read_st(&k12);
    assert_eq!(t12["indices"].1, vec![300, 12]);
    assert!(t12["indices"].2.iter().any(|&v| v == -1.0));
    // eval: JSON metrics; R2 rises with k.
    let e4: Value = serde_json::from_str(ok(&["eval", "--model", o, "--data", s, "-k", "4"]).trim()).unwrap();
    let e8: Value = serde_json::from_str(ok(&["eval", "--model", o, "--data", s]).trim()).unwrap();
    assert_eq!(e8["rows"], 300);
    assert_eq!(e8["k"], 8);
    let ev = e8["explained_variance_per_step"].as_array().unwrap();
    assert_eq!(ev.len(), 8);
    // The last step's partial reconstruction is the reconstruction.
    assert!((ev[7].as_f64().unwrap() - e8["explained_variance"].as_f64().unwrap()).abs() < 1e-4);
    assert!(e8["explained_variance"].as_f64().unwrap() > e4["explained_variance"].as_f64().unwrap());
    assert!(e8["r2"].as_f64().unwrap() > e4["r2"].as_f64().unwrap());
    assert!(e8["l0"].as_f64().unwrap() <= 8.0);
    // inspect: model, run folder and data.
    let im: Value =
        serde_json::from_str(&ok(&["inspect", out.join("model.safetensors").to_str().unwrap()])).unwrap();
    assert_eq!(im["kind"], "model");
    assert_eq!(im["concepts"], 512);
    assert_eq!(im["preprocess"]["center"], true);
    let ir: Value = serde_json::from_str(&ok(&["inspect", o])).unwrap();
    assert_eq!(ir["run"]["model"]["k"], 8);
    let idata: Value = serde_json::from_str(&ok(&["inspect", d])).unwrap();
    assert_eq!(idata["shape"], serde_json::json!([4096, 576]));
    assert_eq!(idata["dtype"], "F16");
    let ick: Value =
        serde_json::from_str(&ok(&["inspect", out.join("checkpoint.safetensors").to_str().unwrap()]))
            .unwrap();
    assert_eq!(ick["kind"], "checkpoint");
    assert_eq!(ick["progress"]["step"], 6);
}

#[test]
fn encode_matches_the_library_on_real_vit_data() {
    let dir = tmp("vit");
    let data = shared_data("dinov2s_l6_public.npy");
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    ok(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--concepts",
        "256",
        "-k",
        "4",
        "--steps",
        "3",
        "--batch-size",
        "1024",
        "--out",
        o,
        "--progress",
        "quiet",
    ]);
    let ds = mpsae::data::Dataset::open(&[data], &Default::default()).unwrap();
    let mut rows = Vec::new();
    ds.read_range(1000, 64, &mut rows).unwrap();
    let small = dir.join("small.npy");
    write_npy_f32(&small, &rows, 64, 384);
    let codes = dir.join("c.safetensors");
    ok(&["encode", "--model", o, "--data", small.to_str().unwrap(), "--out", codes.to_str().unwrap()]);
    let t = read_st(&codes);
    let (mut model, _) = mpsae::io::state_dict::read_model(&out.join("model.safetensors"), None).unwrap();
    model.eval();
    let enc = model.encode(&rows).unwrap();
    let atoms: Vec<f64> = enc.codes.atoms.iter().map(|&a| a as f64).collect();
    assert_eq!(atoms, t["indices"].2);
}

#[test]
fn wrong_inputs_give_one_clear_line() {
    let dir = tmp("errors");
    let o = dir.join("run");
    let o = o.to_str().unwrap();
    let demo = demo_data();
    let demo = demo.to_str().unwrap();
    fails_with(&["train", "--data", "/nonexistent/x.npy", "--out", o], "/nonexistent/x.npy");
    fails_with(&["train", "-k", "0", "--out", o], "invalid k");
    fails_with(&["train", "--concepts", "0", "--out", o], "number of concepts");
    fails_with(&["train", "--dropout", "1.5", "--out", o], "dropout");
    fails_with(&["train", "--batch-size", "0", "--out", o], "batch size");
    fails_with(&["train", "--normalization", "l3", "--out", o], "normalization");
    fails_with(&["train", "--criterion", "l1", "--out", o], "criterion");
    fails_with(&["train", "--resume", "--out", dir.join("none").to_str().unwrap()], "no checkpoint");
    // Unsupported dtype and a header that lies about its size.
    let ints = dir.join("ints.npy");
    write_npy_raw(&ints, "<i4", &[2, 3], &[0u8; 24]);
    fails_with(&["train", "--data", ints.to_str().unwrap(), "--out", o], "unsupported dtype");
    let short = dir.join("short.npy");
    write_npy_raw(&short, "<f4", &[10, 3], &[0u8; 40]);
    fails_with(&["train", "--data", short.to_str().unwrap(), "--out", o], "truncated");
    // A NaN row is named; --skip-nonfinite trains without it.
    let mut v: Vec<f32> = (0..40 * 6).map(|i| (i as f32 * 0.37).sin()).collect();
    v[7 * 6 + 2] = f32::NAN;
    let nan = dir.join("nan.npy");
    write_npy_f32(&nan, &v, 40, 6);
    fails_with(&["train", "--data", nan.to_str().unwrap(), "--out", o], "row 7");
    let s = ok(&[
        "train",
        "--data",
        nan.to_str().unwrap(),
        "--skip-nonfinite",
        "--concepts",
        "8",
        "-k",
        "2",
        "--steps",
        "2",
        "--out",
        o,
        "--progress",
        "quiet",
    ]);
    let s: Value = serde_json::from_str(s.trim()).unwrap();
    assert_eq!(s["rows"], 39);
    // Model and data of different dimensions.
    let other = dir.join("d6.npy");
    let clean: Vec<f32> = (0..39 * 6).map(|i| (i as f32 * 0.37).cos()).collect();
    write_npy_f32(&other, &clean, 39, 6);
    fails_with(&["eval", "--model", o, "--data", demo], "dimension");
    fails_with(
        &["encode", "--model", o, "--data", demo, "--out", dir.join("c.safetensors").to_str().unwrap()],
        "dimension",
    );
    // Files of different dimensions.
    fails_with(&["train", "--data", other.to_str().unwrap(), demo, "--out", o, "--force"], "dimension");
    // Output folder that cannot be written.
    fails_with(
        &["encode", "--model", o, "--data", other.to_str().unwrap(), "--out", "/proc/nope/c.safetensors"],
        "/proc/nope",
    );
    fails_with(&["eval", "--model", dir.join("missing").to_str().unwrap(), "--data", demo], "no such model");
    fails_with(&["train", "--steps", "1", "--out", "/proc/nope/run"], "cannot create the run folder");
    fails_with(&["inspect", "/nonexistent.npy"], "no such file");
}

#[test]
fn bench_reports_throughput_split_and_memory() {
    let dir = tmp("bench");
    let out = dir.join("bench.json");
    let data_dir = shared_data("");
    let text = ok(&[
        "bench",
        "--d",
        "384",
        "--c",
        "256",
        "--k",
        "4",
        "--batch",
        "128",
        "--reps",
        "1",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(text.contains("train/s"), "{text}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let r = &v["results"][0];
    assert_eq!(r["data"], "dinov2s_l6_public.npy");
    assert!(r["train_rows_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["encode_rows_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["sgemm_gflops"].as_f64().unwrap() > 0.0);
    for part in ["gram", "correlations", "pursuit_select", "backward", "optimizer"] {
        assert!(r["split_s"][part].as_f64().unwrap() >= 0.0, "{part}");
    }
    fails_with(&["bench", "--k", "0"], "invalid bench grid");
}

#[test]
fn safetensors_and_f64_data_train_and_encode() {
    let dir = tmp("formats");
    let (n, d) = (200, 12);
    let vals: Vec<f32> = (0..n * d).map(|i| ((i * 17 % 31) as f32 * 0.29).sin()).collect();
    // A safetensors file with a bf16 activation tensor and a second 2-D tensor.
    let bf: Vec<u8> = vals.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
    let other: Vec<u8> = vec![0u8; 4 * 3 * 2];
    let views = vec![
        (
            "acts".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![n, d], &bf).unwrap(),
        ),
        (
            "labels".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 2], &other).unwrap(),
        ),
    ];
    let st = dir.join("acts.safetensors");
    std::fs::write(&st, safetensors::serialize(views, &None).unwrap()).unwrap();
    let s = st.to_str().unwrap();
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    fails_with(&["train", "--data", s, "--out", r], "several 2-D tensors");
    fails_with(&["train", "--data", s, "--tensor", "nope", "--out", r], "no tensor named 'nope'");
    let out = ok(&[
        "train",
        "--data",
        s,
        "--tensor",
        "acts",
        "--concepts",
        "32",
        "-k",
        "3",
        "--steps",
        "4",
        "--batch-size",
        "64",
        "--out",
        r,
        "--progress",
        "quiet",
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["rows"].as_u64(), v["d"].as_u64()), (Some(n as u64), Some(d as u64)));
    // The same rows as float64 .npy give the same codes as the bf16 safetensors rows they round to.
    let rounded: Vec<f64> = vals.iter().map(|v| half::bf16::from_f32(*v).to_f32() as f64).collect();
    let f64_path = dir.join("acts64.npy");
    write_npy_raw(
        &f64_path,
        "<f8",
        &[n, d],
        &rounded.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    );
    let (c1, c2) = (dir.join("c1.safetensors"), dir.join("c2.safetensors"));
    ok(&["encode", "--model", r, "--data", s, "--tensor", "acts", "--out", c1.to_str().unwrap()]);
    ok(&["encode", "--model", r, "--data", f64_path.to_str().unwrap(), "--out", c2.to_str().unwrap()]);
    assert_eq!(read_st(&c1)["indices"], read_st(&c2)["indices"]);
    assert_eq!(read_st(&c1)["values"], read_st(&c2)["values"]);
}

#[test]
fn bf16_products_change_no_bit_of_a_training_run() {
    // bf16 products only propose picks (their error bound sends near ties to exact dot products),
    // so a run trains to the same weights, bit for bit, whatever the products and the strategy.
    let dir = tmp("products");
    let train = |name: &str, products: &str, strategy: &str| {
        let out = dir.join(name);
        ok(&[
            "train",
            "--concepts",
            "256",
            "-k",
            "8",
            "--steps",
            "6",
            "--batch-size",
            "512",
            "--products",
            products,
            "--strategy",
            strategy,
            "--out",
            out.to_str().unwrap(),
            "--progress",
            "quiet",
        ]);
        read_st(&out.join("model.safetensors"))["dictionary._weights"].2.clone()
    };
    let reference = train("f32", "f32", "plain");
    assert!(reference.iter().any(|&v| v != 0.0));
    for (name, products, strategy) in [
        ("bf16-plain", "bf16", "plain"),
        ("bf16-gram", "bf16", "gram"),
        ("bf16-picked", "bf16", "gram-picked"),
    ] {
        let w = train(name, products, strategy);
        assert!(w.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}");
    }
    fails_with(
        &["train", "--products", "fp8", "--out", dir.join("x").to_str().unwrap()],
        "invalid --products",
    );
}
