//! Training over MPI (`--features mpi`): 1, 2 and 4 ranks give bitwise the same model; a rank
//! killed mid-run, then `--resume` on another number of ranks, gives the uninterrupted model; a
//! rank that sees other data is refused. Needs `mpirun` (Open MPI): `.ci/run` installs it.
#![cfg(feature = "mpi")]

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn mpirun(np: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &np.to_string(),
        env!("CARGO_BIN_EXE_mpsae"),
        "--threads",
        "1",
    ]);
    c.args(args);
    c
}

fn out_of(c: &mut Command) -> Output {
    c.output().expect("mpirun runs")
}

fn data(dir: &Path, name: &str, n: usize, salt: f32) -> PathBuf {
    let p = dir.join(name);
    let x: Vec<f32> = (0..n * 48).map(|i| ((i as f32 * 0.37 + salt) * 1.3).sin()).collect();
    write_npy_f32(&p, &x, n, 48);
    p
}

fn weights(run: &Path) -> Vec<u8> {
    let bytes = std::fs::read(run.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v = st.tensor("dictionary._weights").unwrap().data().to_vec();
    v.extend_from_slice(st.tensor("dictionary.multiplier").unwrap().data());
    v
}

const TRAIN: &[&str] = &[
    "train",
    "--concepts",
    "256",
    "-k",
    "6",
    "--batch-size",
    "200",
    "--dropout",
    "0.1",
    "--criterion",
    "revive",
    "--revive-threshold",
    "0.05",
    "--revive-min-dead",
    "2",
    "--multiplier",
    "--gradient-shards",
    "4",
    "--progress",
    "quiet",
];

#[test]
fn one_two_and_four_ranks_train_the_same_model_bitwise() {
    let dir = tmp("mpi-ranks");
    let d = data(&dir, "x.npy", 1000, 0.0);
    let mut models = Vec::new();
    for np in [1usize, 2, 4] {
        let out = dir.join(format!("r{np}"));
        let o = out_of(mpirun(np, TRAIN).args([
            "--data",
            d.to_str().unwrap(),
            "--steps",
            "12",
            "--out",
            out.to_str().unwrap(),
        ]));
        assert!(o.status.success(), "{np} ranks: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["processes"].as_u64().unwrap_or(1), np as u64);
        models.push(weights(&out));
    }
    // And the plain one-process binary path.
    let plain = dir.join("plain");
    ok(&[TRAIN, &["--data", d.to_str().unwrap(), "--steps", "12", "--out", plain.to_str().unwrap()]]
        .concat());
    assert!(models.iter().all(|m| *m == weights(&plain)), "models differ between 1, 2 and 4 ranks");
}

#[test]
fn a_killed_rank_then_resume_on_other_ranks_gives_the_uninterrupted_model() {
    let dir = tmp("mpi-kill");
    let d = data(&dir, "x.npy", 4000, 0.5);
    let ds = d.to_str().unwrap();
    let full = dir.join("full");
    ok(&[TRAIN, &["--data", ds, "--steps", "600", "--out", full.to_str().unwrap()]].concat());
    let cut = dir.join("cut");
    let cs = cut.to_str().unwrap();
    let mut job = mpirun(2, TRAIN)
        .args(["--data", ds, "--steps", "600", "--checkpoint-every", "5", "--out", cs])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !cut.join("checkpoint.safetensors").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Kill one rank (a process running the binary with this run folder, not mpirun).
    let rank = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains(cs) && !cmd.starts_with("mpirun")
        });
    if let Some(pid) = rank {
        // SAFETY: signalling a process of this test.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let status = job.wait().unwrap();
    assert!(rank.is_some(), "no rank process found");
    assert!(!status.success(), "the job should stop when a rank dies");
    assert!(!cut.join("model.safetensors").exists(), "the job finished before the kill");
    // Whole checkpoint left; resume on 4 ranks.
    let o = out_of(mpirun(4, TRAIN).args([
        "--data",
        ds,
        "--steps",
        "600",
        "--checkpoint-every",
        "5",
        "--out",
        cs,
        "--resume",
    ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(weights(&cut), weights(&full));
}

#[test]
fn a_rank_that_sees_other_data_is_refused() {
    let dir = tmp("mpi-mismatch");
    let a = data(&dir, "a.npy", 500, 0.0);
    let b = data(&dir, "b.npy", 400, 0.0);
    let out = dir.join("run");
    let exe = env!("CARGO_BIN_EXE_mpsae");
    let common = [
        "--threads",
        "1",
        "train",
        "--concepts",
        "64",
        "-k",
        "2",
        "--steps",
        "3",
        "--progress",
        "quiet",
        "--out",
    ];
    let o = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "1", exe])
        .args(common)
        .args([out.to_str().unwrap(), "--data", a.to_str().unwrap(), ":", "-np", "1", exe])
        .args(common)
        .args([out.to_str().unwrap(), "--data", b.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("rank 1 sees other data than rank 0"), "{err}");
    assert!(err.contains("b.npy"), "{err}");
}
