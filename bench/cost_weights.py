"""Measures the device path's cost weight on this machine: what one Gram update of a correlation
entry (``a -= v·G[j]``: a gathered Gram row and an n x c multiply-add) costs in multiply-adds of
a dense product ``r @ Dmᵀ`` in the same precision. `mpsae.torch_pursuit.COST_WEIGHTS` holds the
results per device class; the cost rule (`choose_strategy`) reads them.

    python bench/cost_weights.py [--device cpu|cuda] [--n 1024] [--c 8192] [--d 576] [--reps 5]

Prints one JSON line per precision the device runs float32 products in (CPU: "ieee", and "bf16"
where torch's oneDNN runs bf16 products; CUDA: "ieee", "tf32", "bf16"), with the best of
``--reps`` timings of each kernel and the weight.
"""
import argparse
import json
import time

import torch


def timed(fn, device, reps):
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def set_precision(device, precision):
    """Sets float32 products to ``precision`` through torch's current API; returns a restorer."""
    backend = torch.backends.cuda.matmul if device.type == "cuda" else torch.backends.mkldnn.matmul
    before = backend.fp32_precision
    backend.fp32_precision = precision
    return lambda: setattr(backend, "fp32_precision", before)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--c", type=int, default=8192)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    r = torch.randn(a.n, a.d, generator=g).to(device)
    dm = torch.randn(a.c, a.d, generator=g).to(device)
    gram = torch.randn(a.c, a.c, generator=g).to(device)
    corr = torch.randn(a.n, a.c, generator=g).to(device)
    rows = torch.empty(a.n, a.c, device=device)
    j = torch.randint(0, a.c, (a.n,), generator=g).to(device)
    v = torch.randn(a.n, generator=g).to(device)

    def update():
        torch.index_select(gram, 0, j, out=rows)
        corr.addcmul_(rows, v.unsqueeze(1), value=-1.0)

    precisions = ["ieee", "tf32", "bf16"] if device.type == "cuda" else ["ieee", "bf16"]
    t_update = timed(update, device, a.reps)
    for precision in precisions:
        restore = set_precision(device, precision)
        try:
            t_product = timed(lambda: r @ dm.T, device, a.reps)
        finally:
            restore()
        weight = (t_update / (a.n * a.c)) / (t_product / (a.n * a.c * a.d))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(json.dumps({"device": f"{device.type}/{precision}", "card": name, "n": a.n, "c": a.c, "d": a.d,
                          "update_s": t_update, "product_s": t_product, "weight": round(weight, 1),
                          "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
