//! Interruptions: `mpsae train` killed with SIGKILL at random moments, then resumed, must end with
//! the same model as an uninterrupted run (bitwise, with a fixed thread count), and no checkpoint
//! may ever be left half-written.

mod common;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn tensors(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, t)| (n, t.data().to_vec())).collect();
    v.sort();
    v
}

const ARGS: &[&str] = &[
    "train",
    "--concepts",
    "1024",
    "-k",
    "8",
    "--steps",
    "64",
    "--batch-size",
    "512",
    "--checkpoint-every",
    "1",
    "--dropout",
    "0.1",
    "--warmup",
    "5",
    "--final-lr",
    "1e-4",
    "--center",
    "--progress",
    "quiet",
];

#[test]
fn killed_and_resumed_runs_end_with_the_uninterrupted_model() {
    let dir = tmp("resume");
    let full = dir.join("full");
    let mut args = ARGS.to_vec();
    args.extend(["--out", full.to_str().unwrap()]);
    ok(&args);

    let cut = dir.join("cut");
    let cut_s = cut.to_str().unwrap().to_string();
    // A cheap deterministic sequence of kill delays (no RNG dependency).
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut kills = 0;
    let mut first = true;
    let start = Instant::now();
    loop {
        let mut cmd = bin();
        cmd.args(ARGS).args(["--out", &cut_s]);
        if !first {
            cmd.arg("--resume");
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(100 + seed % 400);
        let deadline = Instant::now() + delay;
        let mut finished = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                finished = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match finished {
            Some(status) => {
                let out = child.wait_with_output().unwrap();
                assert!(status.success(), "run failed: {}", String::from_utf8_lossy(&out.stderr));
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
        // Whatever checkpoint exists is whole: it loads.
        let ck = cut.join("checkpoint.safetensors");
        if ck.exists() {
            mpsae::train::checkpoint::load(&ck).expect("a checkpoint is never half-written");
            first = false;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "resume loop did not finish");
    }
    eprintln!("interrupted {kills} times");
    assert!(kills >= 2, "the runs should have been interrupted several times (got {kills})");
    assert_eq!(
        tensors(&full.join("model.safetensors")),
        tensors(&cut.join("model.safetensors")),
        "the resumed model differs from the uninterrupted one"
    );
    // No temporary file is left behind once the run has completed.
    let leftovers: Vec<_> = std::fs::read_dir(&cut)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // The metrics file has each epoch once.
    let lines = std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=epochs.len() as u64).collect();
    assert_eq!(epochs, expected);
}

#[test]
fn same_seed_same_model_bitwise() {
    let dir = tmp("determinism");
    let a = dir.join("a");
    let b = dir.join("b");
    for out in [&a, &b] {
        let mut args = ARGS.to_vec();
        args[6] = "12"; // --steps
        args.extend(["--out", out.to_str().unwrap()]);
        ok(&args);
    }
    assert_eq!(tensors(&a.join("model.safetensors")), tensors(&b.join("model.safetensors")));
}
