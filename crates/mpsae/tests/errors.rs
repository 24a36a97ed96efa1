//! Every invalid argument or bad file gives an error that says which and why; nothing panics.

use mpsae::config::validate_dropout;
use mpsae::data::{DataOptions, Dataset, NonFinite};
use mpsae::io::state_dict::read_model;
use mpsae::train::{CriterionChoice, TrainOptions, Trainer};
use mpsae::{EncodeOptions, Error, MpSae, SaeConfig};
use std::path::{Path, PathBuf};

fn cfg(d: usize, c: usize, k: usize) -> SaeConfig {
    let mut c2 = SaeConfig::new(d, c);
    c2.k = k;
    c2
}

fn err_text<T>(r: mpsae::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn invalid_hyper_parameters_are_named() {
    assert!(err_text(MpSae::new(cfg(4, 8, 0), 0)).contains("invalid k"));
    assert!(err_text(MpSae::new(cfg(0, 8, 1), 0)).contains("input dimension"));
    assert!(err_text(MpSae::new(cfg(4, 0, 1), 0)).contains("number of concepts"));
    for p in [1.0f32, -0.1, f32::NAN, 2.0] {
        let mut c = cfg(4, 8, 1);
        c.dropout = Some(p);
        assert!(err_text(MpSae::new(c, 0)).contains("invalid dropout"), "{p}");
        assert!(validate_dropout(Some(p)).is_err());
    }
    assert!(validate_dropout(Some(0.0)).is_ok() && validate_dropout(None).is_ok());
    assert!(matches!(MpSae::from_weights(cfg(4, 8, 1), vec![0.0; 31], 0.0, 0), Err(Error::Shape(_))));
    let mut nan = vec![0.1; 32];
    nan[3] = f32::NAN;
    assert!(err_text(MpSae::from_weights(cfg(4, 8, 1), nan, 0.0, 0)).contains("NaN"));
    let mut m = MpSae::new(cfg(4, 8, 2), 0).unwrap();
    assert!(matches!(m.encode(&[1.0; 7]), Err(Error::Shape(_))));
    assert!(
        err_text(m.encode_with(&[1.0; 8], &EncodeOptions { k: Some(0), ..Default::default() })).contains("k")
    );
    assert!(err_text(m.encode_with(&[1.0; 8], &EncodeOptions { tol: Some(-1.0), ..Default::default() }))
        .contains("tol"));
    assert!(matches!(
        m.encode_with(&[1.0; 8], &EncodeOptions { mask: Some(&[1.0; 3]), ..Default::default() }),
        Err(Error::Shape(_))
    ));
    assert!(m.set_k(0).is_err() && m.set_dropout(Some(1.0)).is_err());
    m.eval();
    assert!(err_text(m.training_pass(&[1.0; 8], &mpsae::criterion::Mse, None)).contains("training mode"));
    for (o, name) in [
        (TrainOptions { batch_size: 0, ..Default::default() }, "batch size"),
        (TrainOptions { epochs: 0, ..Default::default() }, "epochs"),
        (TrainOptions { steps: Some(0), ..Default::default() }, "steps"),
        (TrainOptions { lr: -1.0, ..Default::default() }, "learning rate"),
        (TrainOptions { beta1: 1.0, ..Default::default() }, "beta1"),
        (TrainOptions { clip: f64::NAN, ..Default::default() }, "clip"),
        (
            TrainOptions {
                criterion: CriterionChoice::Revive { threshold: f32::NAN, min_dead: 1, coefficient: 1.0 },
                ..Default::default()
            },
            "revive",
        ),
    ] {
        let m = MpSae::new(cfg(4, 8, 1), 0).unwrap();
        match Trainer::new(m, o) {
            Err(e) => assert!(e.to_string().contains(name), "{e}"),
            Ok(_) => panic!("{name} accepted"),
        }
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("mpsae-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn npy(path: &Path, descr: &str, shape: &[usize], payload: &[u8]) {
    let mut b = mpsae::data::npy_header(descr, shape);
    b.extend_from_slice(payload);
    std::fs::write(path, b).unwrap();
}

fn open(p: &Path) -> mpsae::Result<Dataset> {
    Dataset::open(&[p.to_path_buf()], &DataOptions::default())
}

#[test]
fn bad_data_files_are_named_with_their_problem() {
    let dir = tmpdir("data");
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let cases: Vec<(&str, Box<dyn Fn(&Path)>, &str)> = vec![
        ("missing.npy", Box::new(|_p: &Path| {}), "No such file"),
        ("trunc.npy", Box::new(|p: &Path| npy(p, "<f4", &[4, 3], &[0; 20])), "truncated"),
        ("long.npy", Box::new(|p: &Path| npy(p, "<f4", &[1, 3], &[0; 20])), "header lies"),
        ("ints.npy", Box::new(|p: &Path| npy(p, "<i8", &[1, 3], &[0; 24])), "unsupported dtype"),
        ("big.npy", Box::new(|p: &Path| npy(p, ">f4", &[1, 3], &[0; 12])), "unsupported dtype"),
        ("rank1.npy", Box::new(|p: &Path| npy(p, "<f4", &[3], &[0; 12])), "2 dimensions"),
        ("rank3.npy", Box::new(|p: &Path| npy(p, "<f4", &[1, 1, 3], &[0; 12])), "2 dimensions"),
        ("zero.npy", Box::new(|p: &Path| npy(p, "<f4", &[0, 3], &[])), "zero rows"),
        (
            "fortran.npy",
            Box::new(|p: &Path| {
                npy(p, "<f4", &[1, 3], &[0; 12]);
                let mut b = std::fs::read(p).unwrap();
                let key = b"'fortran_order': False";
                let at = b.windows(key.len()).position(|w| w == key).unwrap();
                b[at..at + key.len()].copy_from_slice(b"'fortran_order': True ");
                std::fs::write(p, b).unwrap();
            }),
            "Fortran",
        ),
        ("garbage.npy", Box::new(|p: &Path| std::fs::write(p, b"hello world, not numpy").unwrap()), "magic"),
        ("garbage.safetensors", Box::new(|p: &Path| std::fs::write(p, [255u8; 64]).unwrap()), "safetensors"),
        ("data.csv", Box::new(|p: &Path| std::fs::write(p, b"1,2,3").unwrap()), "unknown data format"),
        (
            "inf.npy",
            Box::new(move |p: &Path| {
                npy(p, "<f4", &[3, 2], &f32s(&[1.0, 2.0, 3.0, 4.0, f32::INFINITY, 0.0]))
            }),
            "row 2",
        ),
    ];
    for (name, make, needle) in cases {
        let p = dir.join(name);
        make(&p);
        let e = err_text(open(&p));
        assert!(e.contains(name), "{name}: message does not name the file: {e}");
        assert!(e.contains(needle), "{name}: expected '{needle}' in: {e}");
    }
    // Skipping non-finite rows reports how many.
    let p = dir.join("inf.npy");
    let ds = Dataset::open(&[p], &DataOptions { non_finite: NonFinite::Skip, ..Default::default() }).unwrap();
    assert_eq!((ds.rows(), ds.stats().skipped), (2, 1));
    // Files of different widths.
    let a = dir.join("a.npy");
    let b = dir.join("b.npy");
    npy(&a, "<f4", &[1, 3], &[0; 12]);
    npy(&b, "<f4", &[1, 2], &[0; 8]);
    assert!(err_text(Dataset::open(&[a, b], &DataOptions::default())).contains("dimension"));
}

#[test]
fn bad_model_files_are_refused() {
    let dir = tmpdir("models");
    let p = dir.join("m.safetensors");
    std::fs::write(&p, b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ").unwrap();
    assert!(err_text(read_model(&p, None).map(|_| ())).contains("dictionary._weights"));
    let m = MpSae::new(cfg(4, 8, 2), 0).unwrap();
    mpsae::io::state_dict::save_model(&m, &p, &[]).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&p, &bytes).unwrap();
    assert!(err_text(read_model(&p, None).map(|_| ())).contains("m.safetensors"));
    assert!(
        err_text(read_model(&dir.join("none.safetensors"), None).map(|_| ())).contains("none.safetensors")
    );
    // A configuration whose shape does not match the weights.
    mpsae::io::state_dict::save_model(&m, &p, &[]).unwrap();
    assert!(err_text(read_model(&p, Some(cfg(5, 8, 1))).map(|_| ())).contains("configuration says"));
    // An unwritable destination.
    let e = mpsae::io::state_dict::save_model(&m, Path::new("/proc/nope/m.safetensors"), &[]).unwrap_err();
    assert!(e.to_string().contains("/proc/nope"));
}
