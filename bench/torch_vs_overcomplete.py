"""One training step of overcomplete's `train_sae` loop (MSE, Adam, clip 1.0), with mpsae's
PyTorch module against overcomplete's own MpSAE, side by side (issue 16).

    python bench/torch_vs_overcomplete.py [--d 576] [--c 16384] [--k 16] [--batch 4096] [--steps 2]

Each library runs in its own process (so each one's peak memory is its own): the same rows
(SmolLM2 layer 15 when ../shared/data is there, else random), the same initial weights, `steps`
steps; the time of the last step and the peak resident memory are printed, then the ratio.
"""
import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r'''
import json, resource, sys, time
import numpy as np, torch
from overcomplete.sae.train import train_sae
a = json.loads(sys.argv[1])
torch.manual_seed(0)
if a["lib"] == "mpsae":
    from mpsae.torch import MpSAE
else:
    from overcomplete.sae import MpSAE
model = MpSAE(a["d"], a["c"], k=a["k"])
path = a["data"]
if path and __import__("os").path.exists(path):
    x = np.load(path, mmap_mode="r")
    rows = (np.arange(a["batch"] * a["steps"]) * 7919) % x.shape[0]
    data = torch.from_numpy(np.asarray(x[np.sort(rows)], dtype=np.float32))
else:
    data = torch.randn(a["batch"] * a["steps"], a["d"], generator=torch.Generator().manual_seed(1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
mse = lambda x, xh, zp, z, D: (x - xh).square().mean()
times = []
for s in range(a["steps"]):
    batch = [data[s * a["batch"]:(s + 1) * a["batch"]]]
    t = time.perf_counter()
    train_sae(model, batch, mse, opt, nb_epochs=1, clip_grad=1.0, monitoring=0)
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--c", type=int, default=16384)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "smollm2_l15_public.npy"))
    a = ap.parse_args()
    out = {}
    for lib in ("mpsae", "overcomplete"):
        args = dict(vars(a), lib=lib, data=a.data if a.d == 576 else "")
        r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr[-2000:])
            return 1
        out[lib] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{lib:12s} step times {', '.join(f'{t:.2f}' for t in out[lib]['times'])} s, peak {out[lib]['peak_mb']:.0f} MB")
    ratio = out["overcomplete"]["times"][-1] / out["mpsae"]["times"][-1]
    print(f"d={a.d} c={a.c} k={a.k} batch={a.batch}: mpsae.torch.MpSAE {ratio:.1f}x overcomplete's MpSAE "
          f"(last step), peak memory {out['mpsae']['peak_mb']:.0f} MB vs {out['overcomplete']['peak_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
