"""The PyTorch module: golden files through autograd, overcomplete's train_sae, state dicts both
ways, serialisation, the pure-torch path, sparse codes, DDP over two processes."""
import copy
import io
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the torch module's tests need it")
import mpsae.torch as mt  # noqa: E402

from conftest import FIXTURES, REPO, load_fixture  # noqa: E402

FORWARD = sorted(p for p in FIXTURES.glob("*.safetensors") if "grad_weights" in load_fixture(p)[0])


def model_for(t, info, cls=mt.MpSAE):
    c, d = t["weights_raw"].shape
    dropout = None if info.get("dropout", "None") == "None" else float(info["dropout"])
    m = cls(d, c, k=int(info["k"]), dropout=dropout,
            dictionary_params={"normalization": info["normalization"], "use_multiplier": info["use_multiplier"] == "True"})
    with torch.no_grad():
        m.dictionary._weights.copy_(torch.from_numpy(t["weights_raw"]))
        m.dictionary.multiplier.copy_(torch.from_numpy(np.asarray(t.get("multiplier", np.zeros((), np.float32)))))
    return m


def revive(x, x_hat, residual, codes, dictionary):
    recon = (x - x_hat).square().mean()
    dead = codes.max(dim=0).values < 1e-2
    if dead.sum() > 10:
        return recon - 1e-2 * (residual @ dictionary[dead].T).mean()
    return recon


def close(got, want, atol, rtol=1e-5):
    np.testing.assert_allclose(got.detach().numpy(), want, atol=atol, rtol=rtol)


@pytest.mark.parametrize("route", ["engine", "torch", "torch-tf32", "torch-bf16"])
@pytest.mark.parametrize("path", FORWARD, ids=lambda p: p.name)
def test_forward_backward_golden_files_through_autograd(path, route, monkeypatch):
    """Every golden file through autograd on the engine and the device path, and on the device
    path with TF32 and bf16 products (emulated: operands rounded to 10 and 7 mantissa bits)."""
    from mpsae import torch_pursuit

    t, info = load_fixture(path)
    monkeypatch.setenv("MPSAE_TORCH_PATH", route.split("-")[0])
    m = model_for(t, info)
    if "dropout_mask" in t:
        mask = torch.from_numpy(t["dropout_mask"])
        monkeypatch.setattr(torch, "bernoulli", lambda p, *a, **k: mask.clone())
    x = torch.from_numpy(t["x"]).requires_grad_(True)
    precision = route.split("-")[1] if "-" in route else None
    with torch_pursuit.emulate_products(precision) if precision else __import__("contextlib").nullcontext():
        residual, codes, x_hat = m(x)
    assert m.path == route.split("-")[0]
    crit = revive if "revive_mask" in t else (lambda x, xh, r, z, D: (x - xh).square().mean())
    loss = crit(x, x_hat, residual, codes, m.get_dictionary())
    loss.backward()
    atol = 2e-5 if info["n"] == "256" else 1e-5
    close(residual, t["residual"], atol)
    close(codes, t["codes"], atol)
    close(x_hat, t["x_hat"], atol)
    close(loss, t["loss"], 1e-6)
    g = t["grad_weights"]
    np.testing.assert_allclose(m.dictionary._weights.grad.numpy(), g, atol=1e-5 * max(1.0, np.abs(g).max()), rtol=1e-4)
    np.testing.assert_allclose(x.grad.numpy(), t["grad_x"], atol=1e-5 * max(1.0, np.abs(t["grad_x"]).max()), rtol=1e-4)
    if "grad_multiplier" in t:
        np.testing.assert_allclose(m.dictionary.multiplier.grad.numpy(), t["grad_multiplier"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["g_train5.safetensors", "g2_train5_multiplier.safetensors"])
def test_overcompletes_train_sae_reproduces_the_training_golden_files(name):
    train_sae = pytest.importorskip("overcomplete.sae.train").train_sae
    t, info = load_fixture(FIXTURES / name)
    m = model_for(t, info)
    if "multiplier_init" in t:
        with torch.no_grad():
            m.dictionary.multiplier.copy_(torch.from_numpy(np.asarray(t["multiplier_init"])))
    opt = torch.optim.Adam(m.parameters(), lr=float(info["lr"]))
    batches = [torch.from_numpy(b) for b in t["x_batches"]]
    for s, b in enumerate(batches):
        train_sae(m, [b], lambda x, xh, zp, z, D: (x - xh).square().mean(), opt, nb_epochs=1, clip_grad=1.0, monitoring=0)
        np.testing.assert_allclose(m.dictionary._weights.detach().numpy(), t["weights_after_step"][s], atol=1e-4)
        if "multiplier_after_step" in t:
            np.testing.assert_allclose(m.dictionary.multiplier.detach().numpy(), t["multiplier_after_step"][s], atol=1e-6)


def test_state_dicts_load_both_ways_with_overcomplete():
    oc = pytest.importorskip("overcomplete.sae")
    torch.manual_seed(3)
    ours = mt.MpSAE(24, 64, k=4, dictionary_params={"use_multiplier": True})
    theirs = oc.MpSAE(24, 64, k=4, dictionary_params={"use_multiplier": True})
    assert set(ours.state_dict()) == set(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(50, 24)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        np.testing.assert_allclose(ours.encode(x)[1].numpy(), theirs.encode(x)[1].numpy(), atol=1e-5)
    back = mt.MpSAE(24, 64, k=4, dictionary_params={"use_multiplier": True})
    back.load_state_dict(theirs.state_dict())
    back.eval()
    with torch.no_grad():
        np.testing.assert_allclose(back.encode(x)[1].numpy(), theirs.encode(x)[1].numpy(), atol=1e-5)
    # Tied and untied encoders write the reference's keys.
    for f in ("tied", "untied"):
        a, b = getattr(mt.MpSAE(8, 16), f)(bias=True), getattr(oc.MpSAE(8, 16), f)(bias=True)
        assert set(a.state_dict()) == set(b.state_dict()), f


def test_serialisation_copies_and_devices(tmp_path):
    torch.manual_seed(1)
    m = mt.MpSAE(16, 40, k=3, dropout=0.2)
    x = torch.randn(20, 16)
    m.eval()
    want = m(x)[1]
    torch.save(m, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    for other in (loaded, pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert torch.equal(other(x)[1], want)
    # Dropout survives eval() (a documented fix of the reference).
    m.train()
    assert m.dropout == 0.2
    # float64: the pure-torch path, same semantics.
    m64 = copy.deepcopy(m).eval().to(torch.float64)
    codes64 = m64(x.double())[1]
    assert m64.path == "torch" and "path=torch" in repr(m64)
    np.testing.assert_allclose(codes64.numpy(), want.numpy(), atol=1e-5)
    meta = mt.MpSAE(16, 40, k=3, device="meta")
    assert meta(torch.empty(4, 16, device="meta"))[1].shape == (4, 40)


def test_sparse_codes_and_gradients_match_the_dense_ones():
    torch.manual_seed(2)
    dense = mt.MpSAE(12, 30, k=4)
    sparse = mt.MpSAE(12, 30, k=4, sparse_codes=True)
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(9, 12)
    r1, z1, xh1 = dense(x)
    r2, (idx, val), xh2 = sparse(x)
    assert idx.shape == (9, 4) and torch.equal(xh1, xh2)
    rebuilt = torch.zeros(9, 30).index_put_((torch.arange(9).repeat_interleave(4), idx.flatten()), val.flatten(), accumulate=True)
    assert torch.allclose(rebuilt, z1)
    ((x - xh1) ** 2).mean().backward()
    ((x - xh2) ** 2).mean().backward()
    assert torch.allclose(dense.dictionary._weights.grad, sparse.dictionary._weights.grad)
    assert torch.allclose(sparse.decode((idx, val)), xh2, atol=1e-6)


def test_import_mpsae_works_without_torch():
    code = "import sys; sys.modules['torch'] = None; import mpsae; print(mpsae.MpSAE(4, 8).k)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr


def test_ddp_on_two_processes_matches_one_process(tmp_path):
    script = REPO / "examples" / "ddp_train.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "ddp.pt"
    # --standalone: torchrun's own rendezvous takes a free port itself (no port reserved, closed
    # and reused here, which another process could take in between).
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                        "--steps", "6", "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[:4000]
    one = tmp_path / "one.pt"
    r = subprocess.run([sys.executable, str(script), "--steps", "6", "--out", str(one)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = torch.load(out), torch.load(one)
    assert torch.allclose(a["dictionary._weights"], b["dictionary._weights"], atol=1e-6)
