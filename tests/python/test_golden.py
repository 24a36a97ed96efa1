"""Every forward and training golden file of overcomplete 0.3.0, through the Python API."""
import numpy as np
import pytest

import mpsae
from conftest import FIXTURES, load_fixture

FORWARD = sorted(p for p in FIXTURES.glob("*.safetensors") if "grad_weights" in load_fixture(p)[0])


def model_for(t, info, device):
    c, d = t["weights_raw"].shape
    dropout = None if info.get("dropout", "None") == "None" else float(info["dropout"])
    m = mpsae.MpSAE(d, c, k=int(info["k"]), dropout=dropout, device=device,
                    dictionary_params={"normalization": info["normalization"],
                                       "use_multiplier": info["use_multiplier"] == "True"})
    m.load_state_dict({"dictionary._weights": t["weights_raw"], "dictionary.multiplier": t["multiplier"]})
    return m


@pytest.mark.parametrize("device", ["cpu", "reference"])
@pytest.mark.parametrize("path", [p for p in FORWARD if "dropout_mask" not in load_fixture(p)[0]], ids=lambda p: p.name)
def test_forward_golden_files(path, device):
    t, info = load_fixture(path)
    m = model_for(t, info, device)
    np.testing.assert_allclose(m.get_dictionary(), t["dictionary"], atol=1e-6, rtol=1e-5)
    idx, val = m.encode_sparse(t["x"])
    np.testing.assert_array_equal(idx, t["picks_idx"])
    np.testing.assert_allclose(val, t["picks_val"], atol=1e-5, rtol=1e-5)
    atol = 2e-5 if info["n"] == "256" else 1e-5
    residual, codes, x_hat = m.forward(t["x"])
    np.testing.assert_allclose(residual, t["residual"], atol=atol, rtol=1e-5)
    np.testing.assert_allclose(codes, t["codes"], atol=atol, rtol=1e-5)
    np.testing.assert_allclose(x_hat, t["x_hat"], atol=atol, rtol=1e-5)
    np.testing.assert_allclose(m.decode(codes), t["x_hat"], atol=atol, rtol=1e-5)


def test_eval_golden_file():
    t, info = load_fixture(FIXTURES / "h_eval_fused.safetensors")
    m = model_for(t, info, "cpu").eval()
    np.testing.assert_allclose(m.get_dictionary(), t["fused_dictionary"], atol=1e-6, rtol=1e-5)
    residual, codes, x_hat = m.forward(t["x"])
    np.testing.assert_array_equal(m.encode_sparse(t["x"])[0], t["picks_idx"])
    np.testing.assert_allclose(x_hat, t["x_hat"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(codes, t["codes"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["g_train5.safetensors", "g2_train5_multiplier.safetensors"])
def test_training_golden_files(name):
    t, info = load_fixture(FIXTURES / name)
    c, d = t["weights_raw"].shape
    use_m = info["use_multiplier"] == "True"
    tr = mpsae.Trainer(d, c, int(info["k"]), use_multiplier=use_m, lr=float(info.get("lr", 1e-3)), clip=1.0,
                       shuffle=False)
    tr.load_state_dict({"dictionary._weights": t["weights_raw"],
                        "dictionary.multiplier": t.get("multiplier_init", np.zeros((), np.float32))})
    for s, batch in enumerate(t["x_batches"]):
        report = tr.step(batch)
        np.testing.assert_allclose(report["loss"], t["loss"][s], rtol=1e-5)
        sd = tr.model.state_dict()
        np.testing.assert_allclose(sd["dictionary._weights"], t["weights_after_step"][s], atol=1e-4, rtol=0)
        if use_m:
            np.testing.assert_allclose(sd["dictionary.multiplier"], t["multiplier_after_step"][s], atol=1e-6)
