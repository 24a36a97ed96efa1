"""One model, one truth: a `--center --scale` run gives the same codes and R2 through every door
(the CLI, the numpy API, the PyTorch module), keeps its preprocessing across saves, and every
front end follows the library's resume policy and defaults."""
import json
import subprocess

import numpy as np
import pytest

import mpsae

TRAIN_ROWS = 3072  # the rest of the 4096 committed rows are held out


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory, cli):
    from conftest import DATA

    rows = np.load(DATA / "smollm2_l15_public.npy")
    tmp = tmp_path_factory.mktemp("one_model")
    train, held = tmp / "train.npy", tmp / "held.npy"
    np.save(train, rows[:TRAIN_ROWS])
    np.save(held, rows[TRAIN_ROWS:])
    run = tmp / "run"
    subprocess.run([cli, "train", "--data", str(train), "--out", str(run), "--concepts", "256", "-k", "8",
                    "--epochs", "2", "--batch-size", "512", "--lr", "5e-3", "--center", "--scale",
                    "--progress", "quiet"], check=True, capture_output=True)
    codes = tmp / "codes.safetensors"
    subprocess.run([cli, "encode", "--model", str(run), "--data", str(held), "--out", str(codes)],
                   check=True, capture_output=True)
    ev = subprocess.run([cli, "eval", "--model", str(run), "--data", str(held), "--json"], check=True,
                        capture_output=True, text=True)
    from safetensors.numpy import load_file

    c = load_file(str(codes))
    return dict(run=run, held=held, x=np.load(held).astype(np.float32), indices=c["indices"], values=c["values"],
                eval=json.loads(ev.stdout), tmp=tmp)


def r2(x, x_hat):
    """`mpsae eval`'s R2: 1 - mse / (variance around the global scalar mean + 1e-6), in float64."""
    x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
    return 1 - ((x - x_hat) ** 2).mean() / (x.var() + 1e-6)


def assert_same_codes(indices, values, want_indices, want_values):
    same = indices == want_indices
    assert same.mean() >= 0.999, f"only {same.mean():.4%} of the atoms agree"
    np.testing.assert_allclose(values[same], want_values[same], rtol=1e-4, atol=1e-4 * np.abs(want_values).max())


def test_the_run_carries_its_preprocessing(scaled_run):
    sae = mpsae.load(scaled_run["run"])
    mean, scale = sae.preprocess
    assert mean is not None and mean.shape == (576,) and scale is not None and scale > 0
    keys = sae.state_dict().keys()
    assert {"preprocess.mean", "preprocess.scale"} <= set(keys)


def test_numpy_api_gives_the_cli_codes_and_r2(scaled_run):
    sae = mpsae.load(scaled_run["run"])
    sae.eval()
    x = scaled_run["x"]
    idx, val = sae.encode_sparse(x)
    assert_same_codes(idx, val, scaled_run["indices"], scaled_run["values"])
    residual, codes, x_hat = sae.forward(x)
    assert abs(r2(x, x_hat) - scaled_run["eval"]["r2"]) < 1e-4
    np.testing.assert_allclose(residual + x_hat, x, atol=1e-3)
    # The library's evaluation from Python is `mpsae eval`'s.
    report = sae.evaluate(scaled_run["held"])
    assert abs(report["r2"] - scaled_run["eval"]["r2"]) < 1e-9
    assert report["explained_variance"] == pytest.approx(scaled_run["eval"]["explained_variance"], abs=1e-9)


def test_torch_module_gives_the_cli_codes_and_r2(scaled_run):
    torch = pytest.importorskip("torch")
    import mpsae.torch as mt

    model = mt.load(scaled_run["run"], sparse_codes=True)
    assert set(model.state_dict()) >= {"preprocess.mean", "preprocess.scale"}
    x = torch.from_numpy(scaled_run["x"])
    with torch.no_grad():
        residual, (idx, val), x_hat = model(x)
    assert_same_codes(idx.numpy(), val.numpy(), scaled_run["indices"], scaled_run["values"])
    assert abs(r2(x.numpy(), x_hat.numpy()) - scaled_run["eval"]["r2"]) < 1e-4
    # The buffers move with the module.
    m64 = model.to(torch.float64)
    assert m64.preprocess.mean.dtype == torch.float64


def test_a_model_saved_from_python_keeps_its_preprocessing_in_the_cli(scaled_run, cli, tmp_path):
    rng = np.random.default_rng(0)
    x = scaled_run["x"][:200]
    sae = mpsae.MpSAE(576, 64, k=4)
    sae.set_preprocess(x.mean(0), 0.25)
    sae.provenance = {"model": "SmolLM2-135M", "hook": "model.layers.14", "context": 256}
    path = tmp_path / "py_model.safetensors"
    sae.save(path)
    info = json.loads(subprocess.run([cli, "inspect", str(path)], check=True, capture_output=True, text=True).stdout)
    assert info["preprocess"] == {"center": True, "scale": 0.25}
    assert info["provenance"]["hook"] == "model.layers.14"
    data = tmp_path / "x.npy"
    np.save(data, x)
    out = tmp_path / "codes.safetensors"
    subprocess.run([cli, "encode", "--model", str(path), "--data", str(data), "--out", str(out)], check=True,
                   capture_output=True)
    from safetensors.numpy import load_file

    sae.eval()
    idx, val = sae.encode_sparse(x)
    c = load_file(str(out))
    assert_same_codes(idx, val, c["indices"], c["values"])
    # And back: the file opens in Python and in torch with the same preprocessing.
    again = mpsae.load(path)
    np.testing.assert_array_equal(again.preprocess[0], sae.preprocess[0])
    assert again.provenance == sae.provenance
    torch = pytest.importorskip("torch")
    import mpsae.torch as mt

    tm = mt.load(path)
    assert float(tm.preprocess.scale) == 0.25
    del rng


def test_torch_state_dicts_carry_the_preprocessing_both_ways():
    torch = pytest.importorskip("torch")
    from mpsae.torch import MpSAE

    plain = MpSAE(16, 32, k=3)
    assert not any(k.startswith("preprocess") for k in plain.state_dict())
    torch.manual_seed(0)
    scaled = MpSAE(16, 32, k=3).set_preprocess(torch.randn(16), 2.0)
    state = scaled.state_dict()
    assert state["preprocess.scale"].item() == 2.0
    plain.load_state_dict(state)
    x = torch.randn(10, 16)
    assert torch.equal(plain(x)[2], scaled(x)[2])
    # An overcomplete state dict (no preprocessing keys) makes it the identity again.
    bare = {k: v for k, v in state.items() if not k.startswith("preprocess")}
    plain.load_state_dict(bare)
    assert plain.preprocess.identity
    # The numpy model takes the torch state dict, preprocessing included.
    np_model = mpsae.MpSAE(16, 32, k=3)
    np_model.load_state_dict(state)
    assert np_model.preprocess[1] == 2.0


def test_python_resume_refuses_changed_options_like_the_cli(tmp_path, real_rows):
    x = np.ascontiguousarray(real_rows[:512], dtype=np.float32)
    out = tmp_path / "run"
    mpsae.train(x, 64, 4, steps=4, batch_size=128, out=out, progress=False, center=True)
    with pytest.raises(ValueError, match="k=8 differs from the run's 4"):
        mpsae.train(x, 64, 8, steps=6, out=out, resume=True, progress=False)
    with pytest.raises(ValueError, match="allow_changes=True"):
        mpsae.train(x, steps=6, lr=1e-2, out=out, resume=True, progress=False)
    with pytest.raises(ValueError, match="allow_data_change=True"):
        mpsae.train(x[:256], steps=6, out=out, resume=True, progress=False)
    model, _ = mpsae.train(x, steps=6, lr=1e-2, out=out, resume=True, allow_changes=True, progress=False)
    assert model.preprocess[0] is not None
    config = json.loads((out / "config.json").read_text())
    assert config["preprocess"]["center"] is True


def test_defaults_are_the_librarys(cli):
    d = mpsae.defaults()
    assert d["k"] == 16 and d["nb_concepts"] == 2048 and d["checkpoint_every"] == 100
    helptext = subprocess.run([cli, "train", "--help"], check=True, capture_output=True, text=True).stdout
    assert f"[default: {d['nb_concepts']}]" in helptext and f"[default: {d['batch_size']}]" in helptext


def test_streaming_trainer_estimates_its_preprocessing(real_rows):
    x = np.ascontiguousarray(real_rows[:1024], dtype=np.float32)
    t = mpsae.Trainer(576, 64, 4, center=True, scale=True, estimate_rows=512, lr=1e-3)
    assert t.step(x[:256]) is None and t.estimating == (256, 512)
    with pytest.raises(ValueError, match="still being estimated"):
        t.save_checkpoint("/nonexistent/ckpt.safetensors")
    report = t.step(x[256:512])
    assert report is not None and t.steps_done == 2 and t.estimating is None
    mean, scale = t.model.preprocess
    np.testing.assert_allclose(mean, x[:512].astype(np.float64).mean(0), rtol=1e-5, atol=1e-5)
    centred = x[:512].astype(np.float64) - x[:512].astype(np.float64).mean(0)
    assert scale == pytest.approx(np.sqrt(576 / (centred ** 2).sum(1).mean()), rel=1e-5)
    t.step(x[512:768])
    assert t.steps_done == 3
    # Given instead of estimated.
    g = mpsae.Trainer(576, 64, 4, mean=np.zeros(576, np.float32), scale_factor=0.5)
    assert g.step(x[:128]) is not None and g.model.preprocess[1] == 0.5


def test_provenance_is_recorded_with_the_run(tmp_path, real_rows, cli):
    x = np.ascontiguousarray(real_rows[:256], dtype=np.float32)
    prov = {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "hook": "model.layers.14", "layer": 15,
            "tokenizer": "HuggingFaceTB/SmolLM2-135M-Instruct", "context": 256, "dtype": "float16"}
    model, _ = mpsae.train(x, 32, 2, steps=2, batch_size=128, out=tmp_path / "run", progress=False, provenance=prov)
    assert model.provenance == prov
    info = json.loads(subprocess.run([cli, "inspect", str(tmp_path / "run")], check=True, capture_output=True,
                                     text=True).stdout)
    assert info["provenance"] == prov and info["run"]["provenance"] == prov
