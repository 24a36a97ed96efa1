"""Nothing lost at the new doors: harvests, SAELens folders, exports, model files, the device
path, the splice and runs grown later refuse bad input with a message that names the problem, and
leave every file already there byte for byte as it was."""
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

import mpsae
from conftest import DATA, REPO


def snapshot(folder):
    """Every file under ``folder``: relative path -> sha256 of its bytes."""
    folder = pathlib.Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_fails(cli, args, needle):
    r = subprocess.run([cli, *args], capture_output=True, text=True)
    assert r.returncode == 1, (args, r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], (needle, r.stderr)
    return r


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, cli):
    """A trained run (c=32, k=4, centred and scaled) on 1024 SmolLM2 rows."""
    base = tmp_path_factory.mktemp("run")
    rows = np.load(DATA / "smollm2_l15_public.npy")[:1024].astype(np.float32)
    np.save(base / "rows.npy", rows)
    subprocess.run([cli, "train", "--data", str(base / "rows.npy"), "--nb-concepts", "32", "-k", "4", "--epochs", "1",
                    "--batch-size", "256", "--center", "--scale", "--out", str(base / "run"), "--progress", "quiet"],
                   check=True, capture_output=True)
    return base


# -- model files -------------------------------------------------------------------------------

def _with(src, dst, **changes):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(src), "np") as f:
        meta = f.metadata()
    tensors = load_file(str(src))
    tensors.update(changes)
    save_file(tensors, str(dst), metadata=meta)


@pytest.mark.parametrize("change, needle", [
    (dict(**{"preprocess.scale": np.array(0.0, np.float32)}), "scale 0 must be finite and > 0"),
    (dict(**{"preprocess.scale": np.array(-2.0, np.float32)}), "scale -2 must be finite and > 0"),
    (dict(**{"preprocess.scale": np.array(np.nan, np.float32)}), "scale NaN must be finite and > 0"),
    (dict(**{"preprocess.scale": np.ones(3, np.float32)}), "'preprocess.scale' has shape [3]"),
    (dict(**{"preprocess.mean": np.zeros(5, np.float32)}), "'preprocess.mean' has shape [5], expected [576]"),
])
def test_inspect_and_every_loader_refuse_a_bad_model(small_run, cli, tmp_path, change, needle):
    bad = tmp_path / "bad.safetensors"
    _with(small_run / "run" / "model.safetensors", bad, **change)
    before = snapshot(tmp_path)
    r = subprocess.run([cli, "inspect", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and needle in r.stderr, r.stderr
    assert needle in json.loads(r.stdout)["problem"]
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        mpsae.load(bad)
    torch = pytest.importorskip("torch")
    import mpsae.torch as mt
    from safetensors.torch import load_file

    m = mt.MpSAE(576, 32, k=4)
    state = {k: v for k, v in load_file(str(bad)).items() if not k.startswith("mpsae.")}
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        m.load_state_dict(state)
    assert snapshot(tmp_path) == before


def test_the_torch_module_checks_the_width_before_the_centring(small_run):
    pytest.importorskip("torch")
    import torch
    import mpsae.torch as mt

    m = mt.load(small_run / "run")
    with pytest.raises(ValueError, match=r"inputs must have shape \[\.\.\., 576\], got \(4, 31\)"):
        m(torch.zeros(4, 31))
    with pytest.raises(ValueError, match="scale 0 must be finite"):
        m.set_preprocess(scale=0.0)
    with pytest.raises(ValueError, match=r"'preprocess.mean' has shape \[7\], expected \[576\]"):
        m.set_preprocess(mean=torch.zeros(7))


def test_inspect_of_a_closed_pipe_and_of_a_harvest_folder(small_run, cli, tmp_path):
    r = subprocess.run(f"'{cli}' inspect '{small_run / 'run'}' | head -3", shell=True, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "panicked" not in r.stderr and "Broken pipe" not in r.stderr, r.stderr
    assert len(r.stdout.splitlines()) == 3
    folder = tmp_path / "h"
    folder.mkdir()
    np.save(folder / "shard_00000.npy", np.ones((5, 4), np.float16))
    (folder / "harvest.json").write_text(json.dumps({"model": "SmolLM2-135M", "hook": "model.layers.14", "rows": 5,
                                                     "d": 4, "shards": ["shard_00000.npy"], "complete": True}))
    out = json.loads(subprocess.run([cli, "inspect", str(folder)], check=True, capture_output=True, text=True).stdout)
    assert out["kind"] == "harvest" and out["rows"] == 5 and out["shards"] == 1 and out["complete"] is True
    assert out["provenance"]["model"] == "SmolLM2-135M" and out["provenance"]["hook"] == "model.layers.14"


# -- SAELens folders and exports ---------------------------------------------------------------

def _saelens_folder(dst, cfg_changes=None, weights=True, transpose=False, drop=()):
    from safetensors.numpy import save_file

    dst.mkdir()
    cfg = {"architecture": "matching_pursuit", "d_in": 64, "d_sae": 32, "max_iterations": 4,
           "normalize_activations": "none", "apply_b_dec_to_input": True}
    cfg.update(cfg_changes or {})
    for key in drop:
        cfg.pop(key)
    (dst / "cfg.json").write_text(json.dumps(cfg))
    if weights:
        w = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
        save_file({"W_dec": w.T.copy() if transpose else w, "b_dec": np.zeros(64, np.float32)},
                  str(dst / "sae_weights.safetensors"))
    return dst


@pytest.mark.parametrize("kind, needle", [
    ("no weights", "sae_weights.safetensors: no such file"),
    ("no d_in", "has no 'd_in'"),
    ("contradicting", "'W_dec' has shape [32, 64], but cfg.json says d_sae = 16 and d_in = 64"),
    ("transposed", "(transposed?)"),
    ("negative k", "max_iterations -3 must be a positive integer (or null)"),
    ("architecture", "architecture 'topk' is not matching_pursuit"),
])
def test_saelens_folders_are_checked_against_their_weights(tmp_path, cli, kind, needle):
    folder = {
        "no weights": lambda d: _saelens_folder(d, weights=False),
        "no d_in": lambda d: _saelens_folder(d, drop=("d_in",)),
        "contradicting": lambda d: _saelens_folder(d, {"d_sae": 16}),
        "transposed": lambda d: _saelens_folder(d, transpose=True),
        "negative k": lambda d: _saelens_folder(d, {"max_iterations": -3}),
        "architecture": lambda d: _saelens_folder(d, {"architecture": "topk"}),
    }[kind](tmp_path / "sae")
    before = snapshot(folder)
    cli_fails(cli, ["eval", "--model", str(folder), "--data", str(DATA / "smollm2_l15_public.npy")], needle)
    with pytest.raises((ValueError, FileNotFoundError), match=needle.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        mpsae.load(folder)
    assert snapshot(folder) == before


def test_a_good_saelens_folder_and_null_max_iterations(tmp_path):
    sae = mpsae.load(_saelens_folder(tmp_path / "sae", {"max_iterations": None}))
    assert (sae.input_dim, sae.nb_concepts, sae.k) == (64, 32, 64)


def test_export_refuses_a_folder_that_holds_something_unless_forced(small_run, cli, tmp_path):
    target = tmp_path / "other_sae"
    _saelens_folder(target)
    before = snapshot(target)
    cli_fails(cli, ["export", str(small_run / "run"), "--format", "saelens", "--out", str(target)],
              "is not empty: give another folder, or replace it with --force")
    assert snapshot(target) == before
    # A file in the way is not a folder.
    (tmp_path / "file").write_text("x")
    cli_fails(cli, ["export", str(small_run / "run"), "--format", "saelens", "--out", str(tmp_path / "file")],
              "is not empty" if os.path.isdir(tmp_path / "file") else "is a file, not a folder")
    # Forced: replaced whole, nothing left beside it.
    subprocess.run([cli, "export", str(small_run / "run"), "--format", "saelens", "--out", str(target), "--force"],
                   check=True, capture_output=True)
    assert sorted(os.listdir(target)) == ["cfg.json", "sae_weights.safetensors"]
    assert json.loads((target / "cfg.json").read_text())["d_in"] == 576
    assert sorted(os.listdir(tmp_path)) == ["file", "other_sae"]
    # An empty folder is fine.
    (tmp_path / "empty").mkdir()
    subprocess.run([cli, "export", str(small_run / "run"), "--format", "saelens", "--out", str(tmp_path / "empty")],
                   check=True, capture_output=True)
    assert mpsae.load(tmp_path / "empty").nb_concepts == 32


# -- the device path: empty batches --------------------------------------------------------------

@pytest.mark.parametrize("path", ["engine", "torch"])
@pytest.mark.parametrize("sparse", [False, True])
def test_empty_batches_give_empty_outputs_forward_and_backward(path, sparse):
    torch = pytest.importorskip("torch")
    import mpsae.torch as mt

    m = mt.MpSAE(8, 16, k=3, path=path, sparse_codes=sparse)
    for shape in [(0, 8), (2, 0, 8)]:
        for mode in ("train", "eval"):
            getattr(m, mode)()
            x = torch.zeros(*shape, requires_grad=True)
            residual, codes, x_hat = m(x)
            assert residual.shape == x_hat.shape == shape
            width = 3 if sparse else 16
            assert (codes[0] if sparse else codes).shape == (*shape[:-1], width)
            (x_hat.sum() + residual.sum()).backward()
            assert x.grad.shape == shape and float(x.grad.abs().sum()) == 0.0
            g = m.dictionary._weights.grad  # None in eval mode (the fused dictionary)
            assert (g is None and mode == "eval") or float(g.abs().sum()) == 0.0
            m.zero_grad()


# -- runs grown later ----------------------------------------------------------------------------

def _metrics(run):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_finished_run_grown_later_trains_whole_epochs_numbered_once(small_run, cli, tmp_path):
    rows = np.load(DATA / "smollm2_l15_public.npy")[:2048].astype(np.float32)
    np.save(tmp_path / "more.npy", rows)
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(small_run / "run"), str(run)], check=True)
    # More data, no more epochs: nothing to train, and it says so.
    r = subprocess.run([cli, "train", "--resume", "--out", str(run), "--data", str(tmp_path / "more.npy"),
                        "--allow-data-change", "--progress", "quiet"], capture_output=True, text=True)
    assert r.returncode == 0 and "nothing to train: the run has done its 1 epoch;" in r.stderr, r.stderr
    assert [m["epoch"] for m in _metrics(run)] == [1]
    # One more epoch on the new data: one whole epoch (8 batches of 256), numbered 2.
    r = subprocess.run([cli, "train", "--resume", "--out", str(run), "--data", str(tmp_path / "more.npy"),
                        "--allow-data-change", "--epochs", "2", "--allow-changes", "--progress", "quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "continuing at step 4 of 12 (1 epoch to go, on 2048 rows)" in r.stderr
    m = _metrics(run)
    assert [e["epoch"] for e in m] == [1, 2] and m[1]["step"] == 4 + 8 and not m[1].get("partial")


def test_an_epoch_cut_by_a_step_budget_is_reported_once_when_continued(tmp_path, cli):
    rows = np.load(DATA / "smollm2_l15_public.npy")[:1024].astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    run = tmp_path / "run"
    base = [cli, "train", "--data", str(tmp_path / "rows.npy"), "--nb-concepts", "32", "-k", "4", "--batch-size", "256",
            "--out", str(run), "--progress", "plain"]
    subprocess.run(base + ["--steps", "6"], check=True, capture_output=True)
    m = _metrics(run)
    assert [(e["epoch"], e.get("partial", False)) for e in m] == [(1, False), (2, True)]
    r = subprocess.run(base + ["--steps", "8", "--resume", "--allow-changes"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = _metrics(run)
    assert [(e["epoch"], e.get("partial", False)) for e in m] == [(1, False), (2, False)]
    assert r.stderr.count("Epoch[2]") == 1 and "Epoch[2, partial]" not in r.stderr
    # The whole epoch's figures cover its 4 batches: the same as an uninterrupted 8-step run.
    whole = tmp_path / "whole"
    subprocess.run([*base[:-4], "--out", str(whole), "--progress", "quiet", "--steps", "8"], check=True,
                   capture_output=True)
    w = _metrics(whole)
    assert m[1]["avg_loss"] == pytest.approx(w[1]["avg_loss"], rel=1e-12)
    assert m[1]["r2"] == pytest.approx(w[1]["r2"], rel=1e-12)
    # Resumed with nothing left to do: nothing trained, no line added, and it says so.
    before = snapshot(run)
    r = subprocess.run(base + ["--steps", "8", "--resume"], capture_output=True, text=True)
    assert r.returncode == 0 and "nothing to train: the run has done its budget of 8 steps" in r.stderr
    assert _metrics(run) == m  # floats read back exactly (serde_json's float_roundtrip)
    assert {k: v for k, v in snapshot(run).items() if k != "model.safetensors"} == \
        {k: v for k, v in before.items() if k != "model.safetensors"}
