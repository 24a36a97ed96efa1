"""The device path of the PyTorch module (torch operations, any device), checked on CPU against
the engine: the same picks and values (property test on random and real rows, dropout on and
off, both strategies, small memory budgets), the engine's gradients, nothing n x c saved for the
backward, inputs of any leading shape, bf16 inputs and autocast, the path switch."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
import mpsae  # noqa: E402
import mpsae.torch as mt  # noqa: E402
from mpsae import _mpsae, torch_pursuit  # noqa: E402
from mpsae.pursuit import PursuitStats  # noqa: E402

from conftest import DATA  # noqa: E402


def problem(seed, n, d, c, real=False):
    g = torch.Generator().manual_seed(seed)
    if real:
        rows = np.load(DATA / "smollm2_l15_public.npy")
        start = int(torch.randint(0, len(rows) - n, (1,), generator=g))
        x = torch.from_numpy(rows[start:start + n, :d].astype(np.float32))
    else:
        x = torch.randn(n, d, generator=g)
    w = torch.randn(c, d, generator=g)
    w = w / w.norm(dim=1, keepdim=True)
    return x, w


def engine_encode(x, dm, k):
    atoms, values, residual = _mpsae.pursuit(x.numpy(), dm.contiguous().numpy(), k)
    return torch.from_numpy(atoms), torch.from_numpy(values), torch.from_numpy(residual)


@pytest.mark.parametrize("strategy", ["gram", "plain"])
@pytest.mark.parametrize("seed", range(6))
def test_picks_and_values_are_the_engines(seed, strategy):
    real = seed % 2 == 1
    n, d, c, k = (200, 64, 300, 12) if not real else (160, 576, 512, 16)
    x, w = problem(seed, n, d, c, real)
    mask = None
    if seed % 3 == 2:  # dropout on
        mask = (torch.rand(c, generator=torch.Generator().manual_seed(seed)) > 0.3).float()
    dm = w if mask is None else w * mask[:, None]
    atoms, values, residual = torch_pursuit.pursuit(x, dm, k, strategy)
    ea, ev, er = engine_encode(x, dm, k)
    assert torch.equal(atoms, ea), f"{(atoms != ea).sum()} picks differ"
    torch.testing.assert_close(values, ev, rtol=1e-5, atol=1e-5 * float(ev.abs().max()))
    torch.testing.assert_close(residual, er, rtol=1e-4, atol=1e-4 * float(x.abs().max()))


def test_small_memory_budgets_cut_rows_into_tiles_with_the_same_picks():
    x, w = problem(7, 300, 32, 256)
    full = torch_pursuit.pursuit(x, w, 8, "gram")
    stats = PursuitStats()
    tiled = torch_pursuit.pursuit(x, w, 8, "gram", budget=256 * 256 * 4 + 40 * 5 * 256 * 4, stats=stats)
    assert stats.tile_rows == 40
    assert torch.equal(full[0], tiled[0]) and torch.equal(full[1], tiled[1])


def test_ties_nan_and_repeats_follow_the_engine():
    # Two identical atoms: the first index wins; a NaN correlation is never picked.
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[2.0, 1.0], [0.5, 3.0]])
    atoms, values, _ = torch_pursuit.pursuit(x, w, 3, "gram")
    ea, ev, _ = engine_encode(x, w, 3)
    assert torch.equal(atoms, ea)
    torch.testing.assert_close(values, ev)
    wn = w.clone()
    wn[0, 0] = float("nan")
    for strategy in ("plain", "gram"):
        atoms, _, _ = torch_pursuit.pursuit(x, wn, 2, strategy)
        assert not (atoms == 0).any()
        assert torch.equal(atoms, engine_encode(x, wn, 2)[0])
    # Repeats accumulate in the dense codes.
    m = mt.MpSAE(2, 3, k=4, path="torch")
    with torch.no_grad():
        m.dictionary._weights.copy_(w)
    _, codes, x_hat = m(x)
    torch.testing.assert_close(codes @ m.get_dictionary(), x_hat)


@pytest.mark.parametrize("dropout", [None, 0.3])
def test_gradients_are_the_engines(dropout):
    x, w = problem(11, 96, 48, 160)
    grads = {}
    for route in ("engine", "torch"):
        torch.manual_seed(5)  # the same dropout mask on both routes
        m = mt.MpSAE(48, 160, k=6, dropout=dropout, dictionary_params={"use_multiplier": True}, path=route)
        with torch.no_grad():
            m.dictionary._weights.copy_(w * 1.3)
            m.dictionary.multiplier.fill_(0.2)
        xi = x.clone().requires_grad_(True)
        residual, codes, x_hat = m(xi)
        loss = (xi - x_hat).square().mean() + 0.1 * codes.abs().mean() + 0.05 * residual.square().mean()
        loss.backward()
        assert m.path == route
        grads[route] = (m.dictionary._weights.grad, m.dictionary.multiplier.grad, xi.grad, codes.detach())
    for a, b in zip(grads["engine"], grads["torch"]):
        scale = float(a.abs().max())
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * max(scale, 1e-12))


def test_nothing_n_by_c_is_saved_for_the_backward():
    n, d, c, k = 256, 32, 1024, 8
    x, w = problem(3, n, d, c)
    m = mt.MpSAE(d, c, k=k, path="torch")
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    xi = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, codes, x_hat = m(xi)
        (x_hat.square().mean() + 0.1 * codes.sum()).backward()  # sum saves nothing itself
    assert max(sizes) < n * c, f"a saved tensor holds {max(sizes)} values (n x c = {n * c})"
    assert sum(s for s in sizes if s != c * d) <= 4 * n * max(d, k) + 2 * c * d


@pytest.mark.parametrize("route", ["engine", "torch"])
def test_any_leading_shape(route):
    x, w = problem(2, 30, 16, 40)
    m = mt.MpSAE(16, 40, k=3, path=route).eval()
    hooked = x.reshape(2, 15, 16)  # [batch, tokens, d], as a Hugging Face hook gives it
    r3, c3, xh3 = m(hooked)
    r2, c2, xh2 = m(x)
    assert r3.shape == (2, 15, 16) and c3.shape == (2, 15, 40) and xh3.shape == (2, 15, 16)
    torch.testing.assert_close(c3.reshape(30, 40), c2)
    torch.testing.assert_close(xh3.reshape(30, 16), xh2)
    sparse = mt.MpSAE(16, 40, k=3, path=route, sparse_codes=True).eval()
    sparse.load_state_dict(m.state_dict())
    _, (idx, val), _ = sparse(hooked)
    assert idx.shape == (2, 15, 3) and val.shape == (2, 15, 3)
    with pytest.raises(ValueError, match=r"\[\.\.\., 16\]"):
        m(torch.randn(4, 17))


def test_bf16_inputs_and_autocast_keep_the_float32_picks():
    x, w = problem(4, 64, 32, 96)
    m = mt.MpSAE(32, 96, k=5, path="torch", sparse_codes=True).eval()
    xb = x.to(torch.bfloat16)
    residual, (idx, val), x_hat = m(xb)
    assert residual.dtype == torch.bfloat16 and val.dtype == torch.bfloat16 and x_hat.dtype == torch.bfloat16
    _, (idx32, _), _ = m(xb.float())
    assert torch.equal(idx, idx32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, (idx_ac, _), _ = m(x)
    _, (idx_plain, _), _ = m(x)
    assert torch.equal(idx_ac, idx_plain)


def test_path_switch(monkeypatch):
    with pytest.raises(ValueError, match="path='engine'"):
        mt.MpSAE(8, 16, k=2, path="engine")(torch.randn(3, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="invalid path"):
        mt.MpSAE(8, 16, path="gpu")
    monkeypatch.setenv("MPSAE_TORCH_PATH", "torch")
    m = mt.MpSAE(8, 16, k=2)
    m(torch.randn(3, 8))
    assert m.path == "torch" and "path=torch" in repr(m)
    monkeypatch.setenv("MPSAE_TORCH_PATH", "auto")
    m = mt.MpSAE(8, 16, k=2)
    m(torch.randn(3, 8))
    assert m.path == "engine"


def test_eval_mode_keeps_its_gram_matrix_until_the_weights_change():
    m = mt.MpSAE(16, 64, k=8, path="torch", strategy="gram").eval()
    x = torch.randn(20, 16)
    first = m(x)[1]
    gram = m._gram_cache[2]
    m(x)
    assert m._gram_cache[2] is gram
    with torch.no_grad():
        m.dictionary._weights.mul_(-1.0)
    m.load_state_dict(m.state_dict())  # a weight change refreshes the eval-mode dictionary
    second = m(x)[1]
    assert m._gram_cache[2] is not gram
    fresh = mt.MpSAE(16, 64, k=8, path="torch", strategy="plain")
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(second, fresh.eval()(x)[1])
    assert not torch.equal(first, second)


def test_device_path_training_is_the_engines_run_in_the_cli_format(tmp_path, cli):
    import json
    import subprocess

    import mpsae.torch_train as tt

    x = np.load(DATA / "smollm2_l15_public.npy")[:2048]
    kw = dict(epochs=2, batch_size=512, lr=5e-3, center=True, scale=True, progress=False)
    dev, dev_metrics = tt.train(x, 256, 8, device="cpu", out=tmp_path / "dev", **kw)
    eng, eng_metrics = mpsae.train(x, 256, 8, out=tmp_path / "eng", **kw)
    for a, b in zip(dev_metrics, eng_metrics):
        assert a["avg_loss"] == pytest.approx(b["avg_loss"], rel=1e-4)
        assert a["r2"] == pytest.approx(b["r2"], abs=1e-4)
        assert a["explained_variance"] == pytest.approx(b["explained_variance"], abs=1e-4)
        assert a["dead_ratio"] == b["dead_ratio"] and a["l0"] == b["l0"]
    np.testing.assert_allclose(dev.state_dict()["dictionary._weights"], eng.state_dict()["dictionary._weights"],
                               atol=2e-4)
    assert dev.preprocess[1] == eng.preprocess[1]
    # The run opens in the CLI.
    data = tmp_path / "x.npy"
    np.save(data, x)
    ev = json.loads(subprocess.run([cli, "eval", "--model", str(tmp_path / "dev"), "--data", str(data), "--json"],
                                   check=True, capture_output=True, text=True).stdout)
    assert ev["r2"] == pytest.approx(dev.evaluate(x)["r2"], abs=1e-9)


def test_device_path_runs_resume_on_either_side(tmp_path, cli, real_rows):
    import subprocess

    import mpsae.torch_train as tt

    x = np.ascontiguousarray(real_rows[:1024], dtype=np.float32)
    data = tmp_path / "x.npy"
    np.save(data, x)
    kw = dict(steps=12, batch_size=128, lr=2e-3, checkpoint_every=4, progress=False)
    straight, _ = mpsae.train(str(data), 128, 4, **kw)

    def stop_at_6(report):
        if report["step"] == 6:
            raise RuntimeError("stop")

    run = tmp_path / "gpu_then_cli"
    with pytest.raises(RuntimeError, match="stop"):
        tt.train(str(data), 128, 4, device="cpu", out=run, callback=stop_at_6, **kw)
    # The device run's checkpoint continues in the CLI...
    subprocess.run([cli, "train", "--resume", "--out", str(run), "--progress", "quiet"], check=True,
                   capture_output=True)
    cli_model = mpsae.load(run)
    # ...and a CLI checkpoint continues on the device path.
    run2 = tmp_path / "cli_then_gpu"
    with pytest.raises(RuntimeError, match="stop"):
        mpsae.train(str(data), 128, 4, out=run2, callback=stop_at_6, **kw)
    gpu_model, _ = tt.train(str(data), device="cpu", out=run2, resume=True, **{k: v for k, v in kw.items() if k != "steps"})
    want = straight.state_dict()["dictionary._weights"]
    for m in (cli_model, gpu_model):
        np.testing.assert_allclose(m.state_dict()["dictionary._weights"], want, atol=5e-4)


def test_ddp_on_the_device_path_matches_one_process(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    script = REPO / "examples" / "ddp_train.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", MPSAE_TORCH_PATH="torch")
    out, one = tmp_path / "ddp.pt", tmp_path / "one.pt"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script), "--steps", "6", "--out", str(out)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    r = subprocess.run([sys.executable, str(script), "--steps", "6", "--out", str(one)], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = torch.load(out), torch.load(one)
    assert torch.allclose(a["dictionary._weights"], b["dictionary._weights"], atol=1e-6)


def test_the_new_precision_api_neither_crashes_nor_is_ignored():
    """torch >= 2.9's fp32_precision (the setting torch recommends) used to make every forward
    raise (the legacy getter refuses once the new API is set). On CPU the flag has no effect on
    the products, so the forward and backward are checked to run, and the precision read for a
    CUDA device to be TF32."""
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("this torch has no fp32_precision API")
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"
        assert torch_pursuit.matmul_precision(torch.device("cuda")) == "tf32"
        assert torch_pursuit.product_bound(576, torch.float32, "tf32") < 1.1e-3  # TF32's bound, not float32's
        assert torch_pursuit.matmul_precision(torch.device("cpu")) in ("ieee", "tf32", "bf16")
        m = mt.MpSAE(16, 32, k=3, path="torch")
        x = torch.randn(40, 16, requires_grad=True)
        residual, codes, x_hat = m(x)
        ((x - x_hat) ** 2).mean().backward()
        assert x.grad is not None and m.dictionary._weights.grad is not None
        matmul.fp32_precision = "ieee"
        assert torch_pursuit.matmul_precision(torch.device("cuda")) == "ieee"
    finally:
        matmul.fp32_precision = before


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("strategy", ["gram", "plain"])
def test_reduced_precision_products_keep_the_float32_picks(precision, strategy):
    """Products of operands rounded to TF32's 10 or bf16's 7 mantissa bits (emulated on CPU, as a
    GPU computes them under fp32_precision="tf32"): the bound per precision sends near ties to
    float64 re-checks, so the picks and values are those of float32 products; on SmolLM2 rows
    (d = 576) and an SAE trained on them, under a quarter of the picks are re-checked with TF32
    (a Gram matrix made by the pursuit is exact to float32: its products run in float64)."""
    rows = np.load(DATA / "smollm2_l15_public.npy").astype(np.float32)
    sae, _ = mpsae.train(rows, 2048, 16, epochs=3, batch_size=1024, lr=5e-3, progress=False)
    sae.eval()
    dm = torch.from_numpy(sae.get_dictionary())
    x = torch.from_numpy(rows[:1024])
    want_atoms, want_values, want_r = torch_pursuit.pursuit(x, dm, 16, strategy)
    stats = PursuitStats()
    with torch_pursuit.emulate_products(precision):
        assert torch_pursuit.matmul_precision(torch.device("cpu")) == precision
        atoms, values, r = torch_pursuit.pursuit(x, dm, 16, strategy, stats=stats)
    assert torch.equal(atoms, want_atoms), f"{(atoms != want_atoms).sum()} picks differ"
    assert torch.equal(values, want_values) and torch.equal(r, want_r)
    share = stats.rechecks / atoms.numel()
    print(f"{precision} {strategy}: {100 * share:.1f}% of picks re-checked")
    if precision == "tf32":
        assert share < 0.25, share
    # The bound itself, per precision (d = 576).
    assert torch_pursuit.product_bound(576, torch.float32, "ieee") == 578 * 2.0 ** -23
    assert torch_pursuit.product_bound(576, torch.float32, "tf32") < 1.1e-3 < 0.56  # the former (d+2)·2^-10


def test_the_gpu_bench_runs_on_a_cpu_in_its_small_form():
    """`python bench/gpu.py --device cpu` (the command a GPU session runs): one JSON line per case
    and precision, the device path's picks equal to float32 products', then the table."""
    import json
    import subprocess
    import sys

    from conftest import REPO

    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--device", "cpu", "--steps", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    mine = [row for row in rows if row["lib"] == "mpsae"]
    assert {(row["c"], row["precision"]) for row in mine} == {(c, p) for c in (1024, 4096)
                                                              for p in ("float32", "tf32", "bf16")}
    assert all(row["picks_equal_float32"] and row["step_s"] > 0 and row["syncs_per_step"] >= 0 for row in mine)
    assert "| d | c | k | b | precision |" in r.stdout
