//! Interruptions: `mpsae train` killed with SIGKILL at random moments, then resumed, must end with
//! the same model as an uninterrupted run (bitwise, with a fixed thread count), and no checkpoint
//! may ever be left half-written.

mod common;
use common::*;
use std::process::Stdio;

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
    // Killed (SIGKILL) when the run reports these steps on its progress lines, then resumed:
    // triggered by the run's own progress, not by time, so any machine interrupts it mid-run.
    let mut args: Vec<&str> = ARGS[..ARGS.len() - 2].to_vec();
    args.extend(["--progress", "plain", "--out", &cut_s]);
    let mut kills = 0;
    for (i, target) in [10u64, 28, 46].into_iter().enumerate() {
        let mut cmd = bin();
        cmd.args(&args);
        if i > 0 {
            cmd.arg("--resume");
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let reader = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut reached = false;
        for line in std::io::BufRead::lines(reader) {
            let line = line.unwrap();
            let step = line
                .strip_prefix("step ")
                .and_then(|r| r.split('/').next())
                .and_then(|n| n.parse::<u64>().ok());
            if step.is_some_and(|s| s >= target) {
                reached = true;
                break;
            }
        }
        assert!(reached, "the run ended before step {target}");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        // Whatever checkpoint exists is whole: it loads.
        let ck = cut.join("checkpoint.safetensors");
        mpsae::train::checkpoint::load(&ck).expect("a checkpoint is never half-written");
    }
    let out = bin().args(&args).arg("--resume").output().unwrap();
    assert!(out.status.success(), "run failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("interrupted {kills} times");
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
