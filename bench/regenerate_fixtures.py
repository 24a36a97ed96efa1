"""Regenerate the golden outputs in testdata/fixtures from overcomplete 0.3.0 (run by hand).

    python bench/regenerate_fixtures.py [--fixtures testdata/fixtures] [--out DIR] [--check]

Each forward/backward file (every file holding `x`, `weights_raw` and `grad_weights`) records its
inputs: the batch `x`, the raw weights `W`, the multiplier, the dropout mask where there is one,
and in its metadata `k`, `normalization`, `use_multiplier`, `dropout`. This script builds
overcomplete's own `MpSAE` with those inputs, runs its forward, the MSE loss (or the docs' revive
loss where the file has `revive_mask`) and torch's backward, and writes the outputs again in the
same layout (`dictionary`, `weights_after_forward`, `residual`, `codes`, `x_hat`, `loss`,
`grad_weights`, `grad_x`, `grad_multiplier`; `picks_idx`/`picks_val` are kept as recorded). With `--check` it writes
nothing and compares the outputs with the committed files instead (atol 1e-6 + rtol 1e-5).

The training files (`g_*`: the recorded batches, initial weights and multiplier, `train_sae`'s
loop of MSE, Adam and clipping) and the eval file (`h_*`: `eval()`, then a no-grad forward) are
regenerated the same way from their recorded inputs. The state-dict example (`state_dict_*`) is
left as it is (it holds inputs only). Needs `pip install overcomplete==0.3.0 "matplotlib<3.9" safetensors`; never run
by the tests.
"""
import argparse
import glob
import json
import os

import torch
from overcomplete.sae import MpSAE
from safetensors.torch import load_file, save_file
from safetensors import safe_open

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def revive_loss(x, x_hat, residual, codes, dictionary):
    """The revive criterion of overcomplete's MpSAE docs (threshold 1e-2, 10 dead codes, 1e-2)."""
    recon = (x - x_hat).square().mean()
    dead = codes.max(dim=0).values < 1e-2
    if dead.sum() > 10:
        revive = (residual @ dictionary[dead].T).mean()
        return recon - 1e-2 * revive
    return recon


def recorded(path, multiplier_key, use_multiplier=None):
    """A golden file's tensors and metadata, and overcomplete's MpSAE built from its recorded
    configuration, weights and (when used) multiplier."""
    t = load_file(path)
    with safe_open(path, "pt") as f:
        info = json.loads(f.metadata()["info"])
    c, d = t["weights_raw"].shape
    use_m = info["use_multiplier"] == "True" if use_multiplier is None else use_multiplier
    dropout = None if info.get("dropout", "None") == "None" else float(info["dropout"])
    model = MpSAE(d, c, k=int(info["k"]), dropout=dropout,
                  dictionary_params={"normalization": info["normalization"], "use_multiplier": use_m})
    with torch.no_grad():
        model.dictionary._weights.copy_(t["weights_raw"])
        if use_m:
            model.dictionary.multiplier.copy_(t[multiplier_key])
    return t, info, model, use_m


def regenerate(path):
    t, info, model, use_m = recorded(path, "multiplier")
    mask = t.get("dropout_mask")
    if mask is not None:
        # The recorded mask replaces the Bernoulli draw of the encode call.
        orig = torch.bernoulli
        torch.bernoulli = lambda p, *a, **kw: mask.clone()
    x = t["x"].clone().requires_grad_(True)
    try:
        residual, codes, x_hat = model(x)
    finally:
        if mask is not None:
            torch.bernoulli = orig
    crit = revive_loss if "revive_mask" in t else (lambda x, xh, r, z, D: (x - xh).square().mean())
    loss = crit(x, x_hat, residual, codes, model.get_dictionary())
    loss.backward()
    out = dict(t)
    out.update(
        residual=residual.detach(), codes=codes.detach(), x_hat=x_hat.detach(), loss=loss.detach(),
        grad_weights=model.dictionary._weights.grad.detach().clone(), grad_x=x.grad.detach().clone(),
        weights_after_forward=model.dictionary._weights.detach().clone(),
    )
    if use_m:
        out["grad_multiplier"] = model.dictionary.multiplier.grad.detach().clone().reshape(())
    return {k: v.contiguous() for k, v in out.items()}, {"info": json.dumps(info, sort_keys=True)}


def regenerate_train(path):
    """A training file: `steps` train_sae steps on the recorded batches from the recorded weights."""
    from overcomplete.sae.train import train_sae

    t, info, model, use_m = recorded(path, "multiplier_init")
    opt = torch.optim.Adam(model.parameters(), lr=float(info.get("lr", 1e-3)))
    out = dict(t)
    weights, multipliers = [], []
    for batch in t["x_batches"]:
        train_sae(model, [batch], lambda x, xh, zp, z, D: (x - xh).square().mean(), opt, nb_epochs=1,
                         clip_grad=float(info.get("clip_grad", 1.0)), monitoring=0)
        weights.append(model.dictionary._weights.detach().clone())
        if use_m:
            multipliers.append(model.dictionary.multiplier.detach().clone())
    out["weights_after_step"] = torch.stack(weights)
    if use_m:
        out["multiplier_after_step"] = torch.stack(multipliers)
    return {k: v.contiguous() for k, v in out.items()}, {"info": json.dumps(info, sort_keys=True)}


def regenerate_eval(path):
    """The eval file: `eval()` (W normalised in place, the fused dictionary), a no-grad forward."""
    t, info, model, _ = recorded(path, "multiplier", use_multiplier=True)
    with torch.no_grad():
        model.eval()
        residual, codes, x_hat = model(t["x"])
    out = dict(t)
    out.update(fused_dictionary=model.get_dictionary().detach().clone(), residual=residual, codes=codes, x_hat=x_hat,
               weights_after_eval=model.dictionary._weights.detach().clone())
    return {k: v.contiguous() for k, v in out.items()}, {"info": json.dumps(info, sort_keys=True)}


CHECKED = {
    "forward": ("residual", "codes", "x_hat", "grad_weights", "grad_x", "loss"),
    "train": ("weights_after_step",),
    "eval": ("fused_dictionary", "residual", "codes", "x_hat", "weights_after_eval"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", default=os.path.join(REPO, "testdata", "fixtures"))
    ap.add_argument("--out", default=None, help="folder for the regenerated files (default: in place)")
    ap.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    a = ap.parse_args()
    bad = 0
    for path in sorted(glob.glob(os.path.join(a.fixtures, "*.safetensors"))):
        keys = set(load_file(path))
        if {"x", "weights_raw", "grad_weights"} <= keys:
            kind, (tensors, meta) = "forward", regenerate(path)
        elif "x_batches" in keys:
            kind, (tensors, meta) = "train", regenerate_train(path)
        elif "fused_dictionary" in keys:
            kind, (tensors, meta) = "eval", regenerate_eval(path)
        else:
            continue
        name = os.path.basename(path)
        if a.check:
            old = load_file(path)
            worst = max(((tensors[k].double() - old[k].double()).abs() - 1e-5 * old[k].double().abs()).max().item()
                        for k in CHECKED[kind])
            ok = worst <= 1e-6
            bad += not ok
            print(f"{name}: {'same' if ok else 'DIFFERENT'} (worst excess {worst:.2e})")
        else:
            dest = os.path.join(a.out or a.fixtures, name)
            save_file(tensors, dest, metadata=meta)
            print(f"wrote {dest}")
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
