//! Faults of long training runs: two writers, data changing underneath, resumes that do not
//! match, impossible sizes, SIGINT and SIGTERM, bad flags.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A data file of `n` rows of dimension 64 (values from `salt`).
fn data(dir: &Path, name: &str, n: usize, salt: f32) -> PathBuf {
    let p = dir.join(name);
    let x: Vec<f32> = (0..n * 64).map(|i| ((i as f32 * 0.61 + salt) * 1.7).sin()).collect();
    write_npy_f32(&p, &x, n, 64);
    p
}

const LONG: &[&str] = &[
    "train",
    "--concepts",
    "2048",
    "-k",
    "16",
    "--batch-size",
    "1024",
    "--checkpoint-every",
    "3",
    "--progress",
    "quiet",
];

fn spawn(args: &[&str]) -> Child {
    bin().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: Child) -> (Option<i32>, String) {
    let o = child.wait_with_output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
}

fn weights(run: &Path) -> Vec<u8> {
    let bytes = std::fs::read(run.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("dictionary._weights").unwrap().data().to_vec()
}

#[test]
fn a_second_writer_is_refused_naming_the_first() {
    let dir = tmp("two-writers");
    let d = data(&dir, "x.npy", 20000, 0.0);
    let out = dir.join("run");
    let (d, o) = (d.to_str().unwrap(), out.to_str().unwrap());
    let mut first = spawn(&[LONG, &["--data", d, "--out", o, "--steps", "100000"]].concat());
    wait_for(&out.join("run.lock"));
    let pid = first.id().to_string();
    fails_with(&["train", "--data", d, "--out", o, "--force", "--steps", "1"], &format!("pid {pid}"));
    first.kill().unwrap();
    first.wait().unwrap();
    // The lock of the killed process is stale: the next writer takes it over with a note.
    let o2 =
        run(&["train", "--data", d, "--out", o, "--force", "--steps", "1", "--concepts", "64", "-k", "2"]);
    assert!(o2.status.success(), "{}", String::from_utf8_lossy(&o2.stderr));
    assert!(String::from_utf8_lossy(&o2.stderr).contains("took over the lock"));
}

#[test]
fn a_data_file_truncated_or_replaced_under_training_stops_it_with_one_line() {
    let dir = tmp("data-changes");
    for replace in [false, true] {
        let d = data(&dir, "x.npy", 20000, 0.0);
        let out = dir.join(format!("run-{replace}"));
        let (ds, o) = (d.to_str().unwrap(), out.to_str().unwrap());
        let child = spawn(&[LONG, &["--data", ds, "--out", o, "--steps", "100000"]].concat());
        wait_for(&out.join("checkpoint.safetensors"));
        if replace {
            let other = data(&dir, "y.npy", 20000, 1.0);
            std::fs::rename(&other, &d).unwrap();
        } else {
            std::fs::OpenOptions::new().write(true).open(&d).unwrap().set_len(100_000).unwrap();
        }
        let (code, err) = stderr_of(child);
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("x.npy"), "{err}");
        assert!(err.contains(if replace { "was replaced" } else { "changed while in use" }), "{err}");
        // The checkpoint is whole and loads.
        ok(&["inspect", out.join("checkpoint.safetensors").to_str().unwrap()]);
    }
}

#[test]
fn resume_refuses_other_data_and_other_options_unless_told() {
    let dir = tmp("resume-checks");
    let d = data(&dir, "x.npy", 600, 0.0);
    let other = data(&dir, "other.npy", 600, 2.0);
    let out = dir.join("run");
    let (d, other, o) = (d.to_str().unwrap(), other.to_str().unwrap(), out.to_str().unwrap());
    let base =
        ["train", "--concepts", "128", "-k", "4", "--batch-size", "100", "--progress", "quiet", "--out", o];
    ok(&[&base[..], &["--data", d, "--steps", "3"]].concat());
    fails_with(&[&base[..], &["--data", other, "--steps", "6", "--resume"]].concat(), "content differs");
    fails_with(
        &["train", "--resume", "--out", o, "--data", d, "--concepts", "64"],
        "--nb-concepts 64 differs from the run's 128",
    );
    fails_with(&["train", "--resume", "--out", o, "--data", d, "--steps", "6"], "--allow-changes");
    // Told: other data, more steps.
    let o2 = run(&[
        "train",
        "--resume",
        "--out",
        o,
        "--data",
        other,
        "--steps",
        "6",
        "--allow-changes",
        "--allow-data-change",
        "--progress",
        "quiet",
    ]);
    assert!(o2.status.success(), "{}", String::from_utf8_lossy(&o2.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert_eq!(v["steps"], 6);
}

#[test]
fn impossible_sizes_and_bad_flags_are_one_line() {
    fails_with(&["train", "--concepts", "100000000", "--out", "/tmp/mpsae-never"], "GiB available");
    fails_with(&["train", "--bogus"], "unexpected argument '--bogus'");
    fails_with(&["train", "--concepts", "many"], "invalid value 'many'");
    fails_with(&[], "no command given");
    let o = run(&["train", "--bogus"]);
    assert_eq!(o.status.code(), Some(1));
}

#[cfg(unix)]
#[test]
fn sigint_and_sigterm_checkpoint_and_resume_gives_the_uninterrupted_model() {
    let dir = tmp("signals");
    let d = data(&dir, "x.npy", 8000, 0.0);
    let ds = d.to_str().unwrap();
    let args = |o: &str| -> Vec<String> {
        [LONG, &["--data", ds, "--out", o, "--steps", "150", "--dropout", "0.1"]]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let full = dir.join("full");
    let a: Vec<String> = args(full.to_str().unwrap());
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let out = dir.join(format!("cut-{sig}"));
        let a = args(out.to_str().unwrap());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let child = spawn(&a);
        wait_for(&out.join("checkpoint.safetensors"));
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, sig) };
        let (got, err) = stderr_of(child);
        assert_eq!(got, Some(code), "{err}");
        assert!(err.contains("interrupted after step") && err.contains("--resume"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!out.join("model.safetensors").exists());
        ok(&[&a[..], &["--resume"]].concat());
        assert_eq!(weights(&out), weights(&full), "signal {sig}");
    }
}
