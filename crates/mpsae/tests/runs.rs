//! Library-owned runs: the lock, resume checks, metrics, and the streamed codes file.

use mpsae::data::{DataOptions, Dataset};
use mpsae::encode::{encode_dataset, CodesFormat};
use mpsae::io::state_dict::read_tensors;
use mpsae::run::{describe_data, PreprocessChoice, Run, RunConfig, LOCK_FILE};
use mpsae::train::{Silent, TrainOptions, Trainer};
use mpsae::{Codes, EncodeOptions, MpSae, SaeConfig};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("mpsae-runs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn real(rows: usize) -> Dataset {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/data/dinov2s_l6_public.npy");
    let data = Dataset::open(&[path], &DataOptions::default()).unwrap();
    let mut x = Vec::new();
    data.read_range(0, rows, &mut x).unwrap();
    let out = std::env::temp_dir().join(format!("mpsae-runs-{}-{rows}.npy", std::process::id()));
    mpsae::data::write_npy_f32(&out, &x, rows, 384).unwrap();
    Dataset::open(&[out], &DataOptions::default()).unwrap()
}

fn config(data: &Dataset, options: &TrainOptions) -> RunConfig {
    let mut model = SaeConfig::new(data.dim(), 64);
    model.k = 4;
    RunConfig {
        mpsae_version: "test".into(),
        model,
        train: options.clone(),
        data: vec!["rows.npy".into()],
        tensor: None,
        skip_nonfinite: false,
        rows: data.rows(),
        skipped_rows: 0,
        preprocess: PreprocessChoice::default(),
        provenance: Default::default(),
        files: describe_data(data).unwrap(),
        stream: None,
    }
}

#[test]
fn a_second_writer_is_refused_and_a_stale_lock_is_taken_over() {
    let dir = tmp("lock");
    let data = real(64);
    let options = TrainOptions { batch_size: 32, steps: Some(2), ..TrainOptions::default() };
    let run = Run::create(&dir, config(&data, &options), false).unwrap();
    let e = Run::create(&dir, config(&data, &options), true).unwrap_err().to_string();
    assert!(
        e.contains("in use by another mpsae process") && e.contains(&std::process::id().to_string()),
        "{e}"
    );
    drop(run);
    assert!(!dir.join(LOCK_FILE).exists());
    // A lock left by a process that is gone.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    std::fs::write(dir.join(LOCK_FILE), format!("999999999 {}", host.trim())).unwrap();
    let run = Run::create(&dir, config(&data, &options), true).unwrap();
    assert!(run.took_over().unwrap().starts_with("999999999"));
}

#[test]
fn resume_continues_exactly_and_checks_the_data() {
    let dir = tmp("resume");
    let data = real(96);
    let options =
        TrainOptions { batch_size: 32, steps: Some(6), checkpoint_every: 3, ..TrainOptions::default() };
    let cfg = config(&data, &options);
    // Uninterrupted.
    let straight = {
        let mut t = Trainer::new(MpSae::new(cfg.model.clone(), 0).unwrap(), options.clone()).unwrap();
        t.run(&data, &mut Silent).unwrap();
        t.model.weights().to_vec()
    };
    // Three steps, "killed", resumed from the run folder.
    {
        let run = Run::create(&dir, cfg.clone(), false).unwrap();
        let mut t = Trainer::new(
            MpSae::new(cfg.model.clone(), 0).unwrap(),
            TrainOptions { steps: Some(3), ..options.clone() },
        )
        .unwrap();
        run.attach(&mut t);
        t.run(&data, &mut Silent).unwrap();
    }
    let (run, mut t) = Run::resume(&dir).unwrap();
    run.config.check_data(&data).unwrap();
    t.options.steps = Some(6);
    run.attach(&mut t);
    t.run(&data, &mut Silent).unwrap();
    assert_eq!(t.model.weights(), &straight[..]);
    run.save_model(&t).unwrap();
    assert!(run.model_path().exists());
    // Other data is named as what differs.
    let e = run.config.check_data(&real(64)).unwrap_err().to_string();
    assert!(
        e.contains("holds 64 x 384 rows") && e.contains("96 x 384") && e.contains("--allow-data-change"),
        "{e}"
    );
    // The same rows rewritten with other values: same shape, other content.
    let mut other = Vec::new();
    data.read_range(0, 96, &mut other).unwrap();
    other.iter_mut().for_each(|v| *v += 1.0);
    let same_name = data.sources()[0].path.clone();
    mpsae::data::write_npy_f32(&same_name, &other, 96, 384).unwrap();
    let changed = Dataset::open(&[same_name], &DataOptions::default()).unwrap();
    let e = run.config.check_data(&changed).unwrap_err().to_string();
    assert!(e.contains("its content differs"), "{e}");
}

#[test]
fn encode_dataset_streams_the_codes_of_every_batch() {
    let dir = tmp("encode");
    let data = real(300);
    let mut cfg = SaeConfig::new(384, 128);
    cfg.k = 5;
    let mut model = MpSae::new(cfg, 2).unwrap();
    model.eval();
    let mut x = Vec::new();
    data.read_range(0, 300, &mut x).unwrap();
    let want = model.encode(&x).unwrap().codes;
    for format in [CodesFormat::Sparse, CodesFormat::Dense] {
        let out = dir.join(format!("{format:?}.safetensors"));
        let mut seen = Vec::new();
        let s =
            encode_dataset(&mut model, &data, &EncodeOptions::default(), 64, format, &out, &[], &mut |r| {
                seen.push(r)
            })
            .unwrap();
        assert_eq!((s.rows, s.k), (300, 5));
        assert_eq!(seen, vec![64, 128, 192, 256, 300]);
        let bytes = std::fs::read(&out).unwrap();
        let (t, meta) = read_tensors(&out, &bytes).unwrap();
        assert_eq!(meta["k"], "5");
        match format {
            CodesFormat::Sparse => {
                let idx: Vec<u32> = t["indices"].data.iter().map(|&v| v as u32).collect();
                assert_eq!(idx, want.atoms);
                assert_eq!(t["values"].data, want.values);
            }
            CodesFormat::Dense => {
                let dense = Codes::to_dense(&want);
                assert_eq!(t["codes"].data, dense);
            }
        }
    }
}
