"""The device path on a GPU (or, smaller, on a CPU), in one command: one training step (forward,
MSE, sparse backward, Adam) of `mpsae.torch.MpSAE(path="torch")` against overcomplete 0.3.0's
`MpSAE`, for each configuration and each product precision (float32, TF32, bf16 autocast).

    python bench/gpu.py [--device cuda|cpu] [--small] [--steps 3] [--no-overcomplete]

Configurations: d=576 c=16384 k=16 b=4096 and d=2048 c=65536 k=32 b=4096 (on a GPU);
`--small` (and the default on a CPU): d=64 c=1024 k=8 b=256 and d=128 c=4096 k=16 b=512.
Each case prints one JSON line: the last step's time, the peak memory (CUDA: torch's peak
allocated; CPU: the process's peak resident memory less what it held before the steps), the host synchronisations per step (ops that
read a device value on the host and device-to-host copies, counted with a TorchDispatchMode;
a CPU tensor read on the host is no synchronisation and is not counted), the share of picks re-checked
with exact products, and whether the picks equal those of float32 products; overcomplete's step
and memory where it fits (its dense pursuit keeps about (3k + 2)·n·c floats); then a table with
the ratios. Each case runs in its own process (clean peaks).
"""
import argparse
import json
import os
import subprocess
import sys

CHILD = r'''
import json, math, resource, sys, time
import torch
a = json.loads(sys.argv[1])
dev = torch.device(a["device"])
cuda = dev.type == "cuda"
if a["precision"] == "tf32":
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
d, c, k, b = a["d"], a["c"], a["k"], a["b"]
data = [torch.randn(b, d, generator=g).to(dev) for _ in range(a["steps"])]
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
sync = (lambda: torch.cuda.synchronize()) if cuda else (lambda: None)
out = {"lib": a["lib"], "precision": a["precision"], "d": d, "c": c, "k": k, "b": b, "device": str(dev)}
if a["lib"] == "overcomplete":
    from overcomplete.sae import MpSAE
    model = MpSAE(d, c, k=k, device=str(dev))
else:
    from mpsae.torch import MpSAE
    from mpsae import torch_pursuit
    model = MpSAE(d, c, k=k, path="torch").to(dev)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)

from torch.utils._python_dispatch import TorchDispatchMode
SYNCING = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.is_nonzero.default",
           "aten.item.default"}
class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__(); self.n = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # A value read on the host, or a tensor copied from the device to the host.
        to_host = (isinstance(out, torch.Tensor) and out.device.type == "cpu"
                   and any(isinstance(t, torch.Tensor) and t.device.type != "cpu" for t in args))
        if str(func) in SYNCING or to_host:
            self.n += 1
        return out

def step(x, counter=None):
    opt.zero_grad(set_to_none=True)
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if a["precision"] == "bf16" else __import__("contextlib").nullcontext()
    with ctx:
        if counter is not None:
            with counter:
                residual, codes, x_hat = model(x)
                loss = (x - x_hat).square().mean()
                loss.backward()
        else:
            residual, codes, x_hat = model(x)
            loss = (x - x_hat).square().mean()
            loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()

if cuda:
    torch.cuda.reset_peak_memory_stats()
before = torch.cuda.memory_allocated() / 2**20 if cuda else rss()
times = []
for s in range(a["steps"]):
    sync(); t = time.perf_counter()
    step(data[s])
    sync(); times.append(time.perf_counter() - t)
out["step_s"] = times[-1]
out["peak_mb"] = (torch.cuda.max_memory_allocated() / 2**20 - before) if cuda else rss() - before
if a["lib"] != "overcomplete":
    counter = Count()
    step(data[0], counter)
    out["syncs_per_step"] = counter.n
    # Picks and re-checks of this precision against float32 products on the same dictionary.
    with torch.no_grad():
        dm = model.get_dictionary().detach().float()
        x = data[0].float()
        from mpsae.pursuit import PursuitStats
        st = PursuitStats()
        got = torch_pursuit.pursuit(x, dm, k, "auto", stats=st)
        out["strategy"] = st.strategy
        out["rechecked"] = st.rechecks / got[0].numel()
        if cuda:
            matmul = torch.backends.cuda.matmul
            if hasattr(matmul, "fp32_precision"):
                matmul.fp32_precision = "ieee"
            else:
                matmul.allow_tf32 = False
            want = torch_pursuit.pursuit(x, dm, k, "auto")
        else:
            with torch_pursuit.emulate_products("tf32" if a["precision"] == "tf32" else "bf16") \
                    if a["precision"] != "float32" else __import__("contextlib").nullcontext():
                got = torch_pursuit.pursuit(x, dm, k, "auto")
            want = torch_pursuit.pursuit(x, dm, k, "auto")
        out["picks_equal_float32"] = bool(torch.equal(got[0], want[0]))
print(json.dumps(out))
'''

GPU_CASES = [(576, 16384, 16, 4096), (2048, 65536, 32, 4096)]
SMALL_CASES = [(64, 1024, 8, 256), (128, 4096, 16, 512)]


def overcomplete_fits(d, c, k, b, device):
    need = (3 * k + 2) * b * c * 4 / 2**30
    if device == "cuda":
        import torch

        return need < torch.cuda.get_device_properties(0).total_memory / 2**30 * 0.8
    return need < 8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--no-overcomplete", action="store_true")
    a = ap.parse_args()
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cases = SMALL_CASES if (a.small or device == "cpu") else GPU_CASES
    try:
        import overcomplete  # noqa: F401
        have_oc = not a.no_overcomplete
    except ImportError:
        have_oc = False
    rows = []
    for (d, c, k, b) in cases:
        for precision in ("float32", "tf32", "bf16"):
            for lib in ("mpsae", "overcomplete") if have_oc and precision == "float32" else ("mpsae",):
                if lib == "overcomplete" and not overcomplete_fits(d, c, k, b, device):
                    print(json.dumps({"lib": lib, "d": d, "c": c, "k": k, "b": b, "skipped": "does not fit"}))
                    continue
                args = {"lib": lib, "precision": precision, "d": d, "c": c, "k": k, "b": b, "device": device,
                        "steps": a.steps}
                r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                                   env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))
                if r.returncode != 0:
                    print(r.stderr[-3000:], file=sys.stderr)
                    return 1
                row = json.loads(r.stdout.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)
                rows.append(row)
    print("| d | c | k | b | precision | mpsae s/step | peak MB | syncs/step | re-checked | picks = float32 | vs overcomplete |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["lib"] != "mpsae":
            continue
        oc = next((o for o in rows if o["lib"] == "overcomplete" and (o["d"], o["c"], o["k"], o["b"]) ==
                   (r["d"], r["c"], r["k"], r["b"])), None)
        memory = (f"{oc['peak_mb'] / r['peak_mb']:.1f}x less memory" if r["peak_mb"] >= 1
                  else "memory not resolved (the process's peak was reached before the steps)")
        ratio = f"{oc['step_s'] / r['step_s']:.1f}x faster, {memory}" if oc else "-"
        print(f"| {r['d']} | {r['c']} | {r['k']} | {r['b']} | {r['precision']} | {r['step_s']:.3f} | "
              f"{r['peak_mb']:.0f} | {r['syncs_per_step']} | {100 * r['rechecked']:.1f}% | {r['picks_equal_float32']} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
