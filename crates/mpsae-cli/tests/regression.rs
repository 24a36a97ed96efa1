//! The model a fixed `mpsae train` produces, pinned: `testdata/regression/` holds the
//! `model.safetensors` that the binary before the session redesign (commit 726df92) wrote for the
//! command below. A refactoring of the front ends must give the same weights. The Python front
//! end and the MPI ranks are tested equal to the CLI bit for bit elsewhere (`test_train.py`,
//! `mpi.rs`), so this one file pins all three.

mod common;
use common::*;
use std::path::Path;

fn weights(path: &Path) -> Vec<f32> {
    let (model, _) = mpsae::io::state_dict::read_model(path, None).unwrap();
    model.weights().to_vec()
}

#[test]
fn the_demo_run_gives_the_pinned_weights() {
    let dir = tmp("regression");
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    ok(&[
        "train",
        "--concepts",
        "128",
        "-k",
        "4",
        "--steps",
        "6",
        "--batch-size",
        "256",
        "--center",
        "--scale",
        "--lr",
        "5e-3",
        "--out",
        o,
        "--progress",
        "quiet",
    ]);
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/regression/demo_c128_k4_s6_center_scale.safetensors");
    let (got, want) = (weights(&out.join("model.safetensors")), weights(&pinned));
    assert_eq!(got.len(), want.len());
    // Bitwise on the machine that pinned it; elsewhere only the dense products' rounding may
    // differ, and it never decides a pick (values are exact dot products).
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-6, "the weights moved by up to {worst}");
    let (m, _) = mpsae::io::state_dict::read_model(&out.join("model.safetensors"), None).unwrap();
    let (p, _) = mpsae::io::state_dict::read_model(&pinned, None).unwrap();
    assert_eq!(m.preprocess(), p.preprocess(), "the preprocessing moved");
    let _ = std::fs::remove_dir_all(&dir);
}
