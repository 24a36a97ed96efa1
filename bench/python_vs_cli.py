"""mpsae from Python against the `mpsae` command, side by side on the same rows (issue 11).

    python bench/python_vs_cli.py [--data FILE.npy] [--d 576] [--c 16384] [--k 16] [--batch 4096]
                                  [--rounds 2] [--cli target/release/mpsae]

Training: the time of a run of S2 steps minus one of S1 steps (start-up, data checks and the
first steps cancel out), per step (median over the rounds), for `mpsae train` and `mpsae.train`, alternated round by round.
Encoding: every row of the file, `mpsae encode` (sparse codes to a file) against
`MpSAE.encode_sparse` batch by batch (its results kept in memory). Prints the ratios.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import mpsae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "smollm2_l15_public.npy"))
    ap.add_argument("--c", type=int, default=16384)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, nargs=2, default=[2, 10])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cli", default=os.path.join(REPO, "target", "release", "mpsae"))
    a = ap.parse_args()
    x = np.load(a.data, mmap_mode="r")
    print(f"data {a.data}: {x.shape[0]} x {x.shape[1]} {x.dtype}; c={a.c} k={a.k} batch={a.batch}")
    tmp = tempfile.mkdtemp()

    def cli_train(steps, out):
        subprocess.run([a.cli, "train", "--data", a.data, "--concepts", str(a.c), "-k", str(a.k), "--batch-size",
                        str(a.batch), "--steps", str(steps), "--checkpoint-every", "0", "--progress", "quiet",
                        "--out", out, "--force"], check=True, capture_output=True)

    def py_train(steps, out):
        mpsae.train(a.data, a.c, a.k, batch_size=a.batch, steps=steps, checkpoint_every=0, progress=False,
                    out=out, force=True)

    s1, s2 = a.steps
    per = {"cli": [], "python": []}
    for r in range(a.rounds):
        for name, f in (("cli", cli_train), ("python", py_train)):
            out = os.path.join(tmp, name)
            t1 = timed(lambda: f(s1, out))
            t2 = timed(lambda: f(s2, out))
            per[name].append((t2 - t1) / (s2 - s1))
            print(f"round {r + 1} {name:6s}: {per[name][-1] * 1e3:8.1f} ms/step")
    cli, py = float(np.median(per["cli"])), float(np.median(per["python"]))
    print(f"training: python {py * 1e3:.1f} ms/step, cli {cli * 1e3:.1f} ms/step, "
          f"python throughput / cli = {cli / py:.3f}")

    model_dir = os.path.join(tmp, "cli")
    enc = {"cli": [], "python": []}
    sae = mpsae.load(model_dir).eval()

    def py_encode():
        for start in range(0, x.shape[0], a.batch):
            sae.encode_sparse(x[start:start + a.batch])

    def cli_encode():
        subprocess.run([a.cli, "encode", "--model", model_dir, "--data", a.data, "--out",
                        os.path.join(tmp, "codes.safetensors"), "--batch-size", str(a.batch)],
                       check=True, capture_output=True)

    for r in range(a.rounds):
        for name, f in (("cli", cli_encode), ("python", py_encode)):
            enc[name].append(timed(f))
            print(f"round {r + 1} encode {name:6s}: {x.shape[0] / enc[name][-1]:9.0f} rows/s")
    ce, pe = float(np.median(enc["cli"])), float(np.median(enc["python"]))
    print(f"encoding: python {x.shape[0] / pe:.0f} rows/s, cli {x.shape[0] / ce:.0f} rows/s, "
          f"python / cli = {ce / pe:.3f}")


if __name__ == "__main__":
    sys.exit(main())
