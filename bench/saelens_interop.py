"""SAELens's own code on an exported run, and back (by hand: SAELens pins its own versions, so it
lives in a virtual environment of its own).

    python3 -m venv venvs/saelens && venvs/saelens/bin/pip install sae-lens
    python bench/saelens_interop.py --saelens-python venvs/saelens/bin/python [--data ROWS.npy]

Trains a run with centring and scaling on the first rows (mpsae's own Python, the one running
this script), exports it with `mpsae export --format saelens`, then in the SAELens environment
loads it with `SAE.load_from_disk`, encodes the held-out rows with SAELens's own `encode` and
decodes them; prints the share of rows whose SAELens codes are mpsae's (same atoms, values equal
to mpsae's divided by the scale), the rows where the best signed correlation of some step is
negative (where the encoders differ by design: SAELens takes a ReLU), the largest reconstruction
difference, and the reverse import's agreement with the run's codes.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, numpy as np, torch
from sae_lens import SAE
a = json.loads(sys.argv[1])
sae = SAE.load_from_disk(a["folder"], device="cpu")
x = torch.from_numpy(np.load(a["held"]).astype(np.float32))
with torch.no_grad():
    acts = sae.encode(x)
    recon = sae.decode(acts)
np.savez(a["out"], acts=acts.numpy(), recon=recon.numpy())
print(json.dumps({"class": type(sae).__name__, "d_sae": sae.cfg.d_sae}))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--saelens-python", required=True)
    ap.add_argument("--data", default=str(REPO / "testdata" / "data" / "smollm2_l15_public.npy"))
    ap.add_argument("--train-rows", type=int, default=3072)
    ap.add_argument("--concepts", type=int, default=512)
    ap.add_argument("-k", type=int, default=16)
    a = ap.parse_args()
    import mpsae

    rows = np.load(a.data).astype(np.float32)
    train, held = rows[:a.train_rows], rows[a.train_rows:]
    tmp = pathlib.Path(tempfile.mkdtemp())
    np.save(tmp / "held.npy", held)
    run = tmp / "run"
    mpsae.train(train, a.concepts, a.k, epochs=5, batch_size=512, lr=5e-3, center=True, scale=True, out=run,
                progress=False)
    cli = REPO / "target" / "release" / "mpsae"
    folder = tmp / "saelens"
    subprocess.run([str(cli), "export", str(run), "--format", "saelens", "--out", str(folder)], check=True)
    r = subprocess.run([a.saelens_python, "-c", CHILD, json.dumps({"folder": str(folder), "held": str(tmp / "held.npy"),
                                                                  "out": str(tmp / "saelens.npz")})],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr[-3000:])
        return 1
    print("SAELens loaded:", r.stdout.strip().splitlines()[-1])
    theirs = np.load(tmp / "saelens.npz")
    sae = mpsae.load(run)
    sae.eval()
    _, scale = sae.preprocess
    idx, val = sae.encode_sparse(held)
    _, _, x_hat = sae.forward(held)
    ours = np.zeros_like(theirs["acts"])
    np.add.at(ours, (np.repeat(np.arange(len(held)), a.k), idx.reshape(-1)), val.reshape(-1) / scale)
    tol = 1e-3 * np.abs(ours).max()
    same_rows = np.all(((ours != 0) == (theirs["acts"] != 0)) & (np.abs(ours - theirs["acts"]) <= tol), axis=1)
    # Where the encoders differ by design: a step whose best signed correlation is negative.
    W = sae.get_dictionary().astype(np.float64)
    r_ = (held - sae.preprocess[0]).astype(np.float64) * scale
    negative = np.zeros(len(held), bool)
    for t in range(a.k):
        corr = r_ @ W.T
        negative |= corr.max(1) < 0
        j = idx[:, t]
        v = (r_ * W[j]).sum(1)
        r_ -= v[:, None] * W[j]
    recon_diff = np.abs(theirs["recon"][same_rows] - x_hat[same_rows]).max() if same_rows.any() else float("nan")
    back = mpsae.load(folder)
    back.eval()
    bidx, bval = back.encode_sparse(held)
    print(f"held-out rows: {len(held)}; SAELens's encode = mpsae's codes / scale on {same_rows.mean():.2%} of rows; "
          f"rows meeting a negative best correlation: {negative.sum()} (of the {(~same_rows).sum()} that differ, "
          f"{(negative & ~same_rows).sum()} are such rows); largest reconstruction difference on agreeing rows "
          f"{recon_diff:.3g} (row norms ~{np.linalg.norm(held, axis=1).mean():.0f})")
    print(f"reverse import: same atoms on {(bidx == idx).mean():.4%} of picks, values x scale within "
          f"{np.abs(bval * scale - val)[bidx == idx].max():.3g} of the run's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
