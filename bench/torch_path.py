"""One training step of overcomplete's `train_sae` loop (MSE, Adam, clip 1.0): the PyTorch module's
device path (`path="torch"`, torch operations) against overcomplete's own MpSAE, side by side on
the same device, with the engine's path for reference on CPU.

    python bench/torch_path.py [--device cpu|cuda] [--d 576] [--c 16384] [--k 16] [--batch 4096] [--steps 2]

Each variant runs in its own process: the same rows (SmolLM2 layer 15 when ../shared/data is
there, else random), the same initial weights, `steps` steps of `train_sae` (glibc told to unmap large blocks when they
are freed, so the resident peak is the live memory's). Printed per variant:
the time of the last step, the peak memory of the training steps (CPU: peak resident memory less
the resident memory before the first step; CUDA: torch's peak allocated memory less what was
allocated before), the whole process's peak; then the ratios against overcomplete. Where
overcomplete would need more memory than the device has (its dense pursuit keeps about
(3k + 2)·n·c floats for the backward), it is not run and what it needs is printed.
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
dev = torch.device(a["device"])
torch.manual_seed(0)
if a["lib"] == "overcomplete":
    from overcomplete.sae import MpSAE
    model = MpSAE(a["d"], a["c"], k=a["k"], device=a["device"])
else:
    from mpsae.torch import MpSAE
    model = MpSAE(a["d"], a["c"], k=a["k"], path=a["lib"]).to(dev)
path = a["data"]
if path and __import__("os").path.exists(path):
    x = np.load(path, mmap_mode="r")
    rows = (np.arange(a["batch"] * a["steps"]) * 7919) % x.shape[0]
    data = torch.from_numpy(np.asarray(x[np.sort(rows)], dtype=np.float32))
else:
    data = torch.randn(a["batch"] * a["steps"], a["d"], generator=torch.Generator().manual_seed(1))
data = data.to(dev)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
mse = lambda x, xh, zp, z, D: (x - xh).square().mean()
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / 2**20
else:
    before = rss()
times = []
for s in range(a["steps"]):
    batch = [data[s * a["batch"]:(s + 1) * a["batch"]]]
    sync(); t = time.perf_counter()
    train_sae(model, batch, mse, opt, nb_epochs=1, clip_grad=1.0, monitoring=0, device=a["device"])
    sync(); times.append(time.perf_counter() - t)
if dev.type == "cuda":
    step_mb = torch.cuda.max_memory_allocated() / 2**20 - before
    total = torch.cuda.max_memory_allocated() / 2**20
    card = torch.cuda.get_device_name()
else:
    step_mb, total, card = rss() - before, rss(), "cpu"
print(json.dumps({"times": times, "step_mb": step_mb, "peak_mb": total, "card": card}))
'''


def available_bytes(device):
    if device == "cuda":
        import torch
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--c", type=int, default=16384)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "smollm2_l15_public.npy"))
    ap.add_argument("--only", nargs="*", help="run only these variants (torch, overcomplete, engine)")
    a = ap.parse_args()
    libs = ["torch", "overcomplete"] + (["engine"] if a.device == "cpu" else [])
    libs = [l for l in libs if not a.only or l in a.only]
    need = (3 * a.k + 2) * a.batch * a.c * 4
    out = {}
    for lib in libs:
        if lib == "overcomplete" and need > available_bytes(a.device):
            print(f"overcomplete  not run: its dense pursuit needs about {need / 2**30:.0f} GiB for one step, "
                  f"{available_bytes(a.device) / 2**30:.0f} GiB available on {a.device}")
            continue
        args = dict(vars(a), lib=lib, data=a.data if a.d == 576 else "")
        args.pop("only")
        # Large blocks mapped and unmapped at once (glibc's adaptive threshold would keep freed
        # blocks in the heap, and the resident peak would count them), for every variant alike.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            print(f"{lib}: failed\n{r.stderr[-2000:]}")
            continue
        out[lib] = json.loads(r.stdout.strip().splitlines()[-1])
        o = out[lib]
        print(f"{lib:12s}  step times {', '.join(f'{t:.2f}' for t in o['times'])} s, step memory "
              f"{o['step_mb']:.0f} MB, process peak {o['peak_mb']:.0f} MB ({o['card']})")
    if "torch" in out and "overcomplete" in out:
        t, o = out["torch"], out["overcomplete"]
        print(f"d={a.d} c={a.c} k={a.k} batch={a.batch} on {t['card']}: device path "
              f"{o['times'][-1] / t['times'][-1]:.1f}x faster than overcomplete's MpSAE (last step), "
              f"{o['step_mb'] / max(t['step_mb'], 1):.1f}x less step memory "
              f"({t['step_mb']:.0f} vs {o['step_mb']:.0f} MB), process peak {t['peak_mb']:.0f} vs {o['peak_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
