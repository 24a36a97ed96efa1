#!/usr/bin/env python3
"""Interop check: a model trained by `mpsae train` loads into overcomplete 0.3.0's MpSAE with
`load_state_dict`, and overcomplete encodes rows exactly as `mpsae encode` does (same picks,
values within float32 rounding). Optional tooling: needs a venv with overcomplete 0.3.0.

    venvs/oc/bin/python bench/check_overcomplete.py [--mpsae target/release/mpsae]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file as load_np
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpsae", default=os.path.join(REPO, "target", "release", "mpsae"))
    ap.add_argument("--data", default=os.path.join(REPO, "data", "minilm_l3_demo.npy"))
    args = ap.parse_args()
    from overcomplete.sae import MpSAE

    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        subprocess.run([args.mpsae, "train", "--data", args.data, "--concepts", "512", "-k", "8", "--steps", "20",
                        "--batch-size", "512", "--multiplier", "--out", run, "--progress", "quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        rows = np.load(args.data)[:256].astype(np.float32)
        small = os.path.join(tmp, "rows.npy")
        np.save(small, rows)
        codes = os.path.join(tmp, "codes.safetensors")
        subprocess.run([args.mpsae, "encode", "--model", run, "--data", small, "--out", codes], check=True,
                       stderr=subprocess.DEVNULL)
        ours = load_np(codes)
        sd = load_file(os.path.join(run, "model.safetensors"))
        cfg = json.load(open(os.path.join(run, "config.json")))["model"]
        model = MpSAE(cfg["input_dim"], cfg["nb_concepts"], k=cfg["k"],
                      dictionary_params={"use_multiplier": cfg["use_multiplier"]})
        print("load_state_dict:", model.load_state_dict(sd))
        model.eval()
        with torch.no_grad():
            _, z = model.encode(torch.from_numpy(rows))
        z = z.numpy()
        dense = np.zeros_like(z)
        for i in range(rows.shape[0]):
            for j, v in zip(ours["indices"][i], ours["values"][i]):
                dense[i, j] += v
        same_support = np.array_equal(dense != 0, z != 0)
        err = np.abs(dense - z).max()
        print(f"same support: {same_support}; max |codes difference|: {err:.2e}")
        return 0 if same_support and err < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
