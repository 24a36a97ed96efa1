#!/usr/bin/env python3
"""Side-by-side CPU training throughput: overcomplete 0.3.0 MpSAE, SAELens MatchingPursuitTrainingSAE, mpsae.

Optional tooling, not part of the test suite. Each peer runs in its own process (its own virtualenv
for the Python ones), on the same data rows, configuration and number of steps, with 2 threads;
rounds alternate the peers so that machine noise hits them alike. Prints per-step times, rows/s,
peak resident memory and the ratios mpsae / peer.

Set up the peers once (each in its own virtualenv):
    python3 -m venv venvs/oc && venvs/oc/bin/pip install overcomplete==0.3.0 "matplotlib<3.9"
    python3 -m venv venvs/saelens && venvs/saelens/bin/pip install sae-lens
    cargo build --release -p mpsae-cli

Run:
    python3 bench/compare.py --overcomplete-python venvs/oc/bin/python \
        --saelens-python venvs/saelens/bin/python --d 576 --c 16384 --k 16 --batch 4096 --steps 2

Data: d=384 and d=576 take rows (i * 7919) mod N of ../shared/data/{dinov2s_l6,smollm2_l15}_public.npy
(the rows `mpsae bench` uses); other widths use uniform(-1, 1) random rows.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FILES = {384: "dinov2s_l6_public.npy", 576: "smollm2_l15_public.npy"}


def load_rows(d, n, data_dir):
    import numpy as np

    name = FILES.get(d)
    path = os.path.join(data_dir, name) if name else None
    if path and os.path.exists(path):
        arr = np.load(path, mmap_mode="r")
        idx = (np.arange(n, dtype=np.int64) * 7919) % arr.shape[0]
        return np.ascontiguousarray(arr[idx], dtype=np.float32), name
    rng = np.random.default_rng(d)
    return rng.uniform(-1, 1, size=(n, d)).astype(np.float32), "random"


def worker(args):
    """Runs inside a peer's virtualenv: times `steps` training steps after one warm-up."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x_np, source = load_rows(args.d, args.batch, args.data_dir)
    x = torch.from_numpy(x_np)
    d, c, k = args.d, args.c, args.k
    if args.worker == "overcomplete":
        from overcomplete.sae import MpSAE
        from overcomplete.sae.trackers import DeadCodeTracker

        model = MpSAE(d, c, k=k)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        tracker = DeadCodeTracker(c, "cpu")

        def step():
            opt.zero_grad()
            z_pre, z, x_hat = model(x)
            loss = (x - x_hat).square().mean()
            model.get_dictionary()  # train_sae passes it to the criterion
            tracker.update(z)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    else:
        from sae_lens.saes.matching_pursuit_sae import (
            MatchingPursuitTrainingSAE,
            MatchingPursuitTrainingSAEConfig,
        )
        from sae_lens.saes.sae import TrainStepInput

        cfg = MatchingPursuitTrainingSAEConfig(
            d_in=d, d_sae=c, dtype="float32", device="cpu",
            max_iterations=k, residual_threshold=0.0, stop_on_duplicate_support=False,
        )
        model = MatchingPursuitTrainingSAE(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        counter = [0]

        def step():
            opt.zero_grad()
            out = model.training_forward_pass(
                TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None,
                               n_training_steps=counter[0], is_logging_step=False)
            )
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            counter[0] += 1

    step()  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Encode only (inference): overcomplete in eval mode, SAELens's matching pursuit, no gradients.
    with torch.no_grad():
        if args.worker == "overcomplete":
            model.eval()
            encode = lambda: model.encode(x)  # noqa: E731
        else:
            from sae_lens.saes.matching_pursuit_sae import _encode_matching_pursuit

            encode = lambda: _encode_matching_pursuit(x, model.W_dec, 0.0, k, False)  # noqa: E731
        encode()
        t0 = time.perf_counter()
        encode()
        enc = time.perf_counter() - t0
    print(json.dumps({"step_s": times, "encode_s": enc, "peak_rss_bytes": peak, "data": source}))


def run_python_peer(name, python, args):
    cmd = [python, os.path.abspath(__file__), "--worker", name, "--d", str(args.d), "--c", str(args.c),
           "--k", str(args.k), "--batch", str(args.batch), "--steps", str(args.steps),
           "--threads", str(args.threads), "--data-dir", args.data_dir]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_mpsae(args):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.json")
        cmd = [args.mpsae, "--threads", str(args.threads), "bench", "--d", str(args.d), "--c", str(args.c),
               "--k", str(args.k), "--batch", str(args.batch), "--reps", str(args.steps),
               "--data-dir", args.data_dir, "--out", out]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"mpsae failed:\n{res.stderr[-2000:]}")
        r = json.load(open(out))["results"][0]
    return {"step_s": [r["step_s"]], "encode_s": args.batch / r["encode_rows_per_s"],
            "peak_rss_bytes": r["peak_rss_bytes"], "data": r["data"], "strategy": r["strategy"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["overcomplete", "saelens"], help=argparse.SUPPRESS)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--c", type=int, default=16384)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per run (after one warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of all peers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--overcomplete-python", default=None, help="python of a venv with overcomplete 0.3.0")
    ap.add_argument("--saelens-python", default=None, help="python of a venv with sae-lens")
    ap.add_argument("--mpsae", default=os.path.join(REPO, "target", "release", "mpsae"))
    ap.add_argument("--json", default=None, help="append the results as one JSON line to this file")
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    peers = []
    if args.overcomplete_python:
        peers.append(("overcomplete", lambda: run_python_peer("overcomplete", args.overcomplete_python, args)))
    if args.saelens_python:
        peers.append(("saelens", lambda: run_python_peer("saelens", args.saelens_python, args)))
    peers.append(("mpsae", lambda: run_mpsae(args)))
    runs = {name: [] for name, _ in peers}
    for rnd in range(args.rounds):
        for name, fn in peers:
            r = fn()
            runs[name].append(r)
            print(f"round {rnd + 1} {name}: steps {[round(t, 3) for t in r['step_s']]} s, "
                  f"encode {r['encode_s']:.3f} s, peak {r['peak_rss_bytes'] / 1e6:.0f} MB", flush=True)
    summary = {"config": {"d": args.d, "c": args.c, "k": args.k, "batch": args.batch, "steps": args.steps,
                          "rounds": args.rounds, "threads": args.threads}}
    for name in runs:
        step = min(statistics.median(r["step_s"]) for r in runs[name])
        peak = min(r["peak_rss_bytes"] for r in runs[name])
        enc = min(r["encode_s"] for r in runs[name])
        summary[name] = {"step_s": step, "rows_per_s": args.batch / step, "peak_rss_mb": peak / 1e6,
                         "encode_s": enc, "encode_rows_per_s": args.batch / enc, "data": runs[name][0]["data"]}
    print(f"\nd={args.d} c={args.c} k={args.k} batch={args.batch} ({summary['mpsae']['data']}), "
          f"{args.threads} threads, best of {args.rounds} rounds of the median of {args.steps} steps")
    print(f"{'peer':>13} {'s/step':>9} {'train/s':>9} {'encode/s':>9} {'peak MB':>9} "
          f"{'train speed-up':>15} {'encode speed-up':>16} {'memory ratio':>13}")
    m = summary["mpsae"]
    for name in runs:
        s = summary[name]
        print(f"{name:>13} {s['step_s']:>9.3f} {s['rows_per_s']:>9.0f} {s['encode_rows_per_s']:>9.0f} "
              f"{s['peak_rss_mb']:>9.0f} {s['step_s'] / m['step_s']:>14.1f}x "
              f"{s['encode_s'] / m['encode_s']:>15.1f}x {s['peak_rss_mb'] / m['peak_rss_mb']:>12.2f}x")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    sys.exit(main())
