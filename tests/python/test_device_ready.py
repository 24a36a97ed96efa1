"""The device path, ready for a GPU (checked on CPU torch): no host round trip inside the pursuit
loop and at most two per training step (counted with a TorchDispatchMode and by watching the
tensor read-backs), a capturable forward that torch.compile(fullgraph=True) traces with the same
outputs, a re-check buffer of fixed size that never changes the picks, plans decided once per
shape, and deterministic gradients on request."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import mpsae  # noqa: E402
import mpsae.torch as mt  # noqa: E402
from mpsae import _mpsae, torch_pursuit  # noqa: E402
from mpsae.pursuit import PursuitStats  # noqa: E402

from conftest import DATA  # noqa: E402

#: aten ops that make the host wait for the device (their result decides a shape or a value on
#: the host).
SYNCING = {"aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::is_nonzero", "aten::equal",
           "aten::masked_select", "aten::_unique", "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
           "aten::nonzero_static", "aten::repeat_interleave.Tensor", "aten::bincount"}


class Syncs(TorchDispatchMode):
    """Counts the synchronising aten calls (a boolean mask as an index among them) and, through
    the patched read-backs, the tensors copied to the host (``tolist``, ``cpu``, ``numpy``: not
    dispatched at all on a CPU tensor, a device-to-host copy on an accelerator)."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.seen = []
        for name in ("tolist", "cpu", "numpy"):
            original = getattr(torch.Tensor, name)

            def counted(t, *a, _original=original, _name=name, **kw):
                self.seen.append(f"Tensor.{_name}")
                return _original(t, *a, **kw)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        overload = f"{name}.{func._overloadname}"
        if name in SYNCING or overload in SYNCING:
            self.seen.append(name)
        elif name in ("aten::index", "aten::index_put_", "aten::index_put") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or []) if i is not None):
            self.seen.append(name + " (boolean mask)")
        return func(*args, **(kwargs or {}))


def real_problem(n=512, c=1024, k=16):
    rows = np.load(DATA / "smollm2_l15_public.npy").astype(np.float32)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(c, rows.shape[1], generator=g)
    return torch.from_numpy(rows[:n]), w / w.norm(dim=1, keepdim=True), k


@pytest.mark.parametrize("strategy", ["gram", "plain"])
def test_no_host_round_trip_inside_the_pursuit_loop(monkeypatch, strategy):
    x, dm, k = real_problem()
    gram = torch_pursuit.gram_matrix(dm) if strategy == "gram" else None
    norm = dm.norm(dim=1).max()
    syncs = Syncs(monkeypatch)
    with syncs, torch.no_grad():
        atoms, values, r, counts = torch_pursuit._tile_pursuit(x, dm, dm, gram, k, "ieee", norm, "ieee", 64)
    assert syncs.seen == []
    ea, ev, _ = (torch.from_numpy(a) for a in _mpsae.pursuit(x.numpy(), dm.numpy(), k))
    assert torch.equal(atoms, ea)
    # Whole pursuits: one read-back (the re-check buffer's check), none when capturable.
    for capturable, budget in ((False, 1), (True, 0)):
        syncs = Syncs(monkeypatch)
        with syncs:
            got = torch_pursuit.pursuit(x, dm, k, strategy, capturable=capturable)
        assert len(syncs.seen) == budget, syncs.seen
        assert torch.equal(got[0], ea)


def test_a_re_check_buffer_too_small_never_changes_the_picks():
    """A one-row buffer on rows with many near ties (an SAE trained on them: close atoms): the
    tiles whose steps had more near ties are pursued again with every row re-checkable, the
    picks are the engine's, and the plan's buffer grows to what a step needed."""
    rows = np.load(DATA / "smollm2_l15_public.npy").astype(np.float32)
    sae, _ = mpsae.train(rows, 512, 16, epochs=2, batch_size=512, lr=5e-3, progress=False)
    dm = torch.from_numpy(sae.get_dictionary())
    x = torch.from_numpy(rows[:800])
    with torch_pursuit.emulate_products("bf16"):  # many near ties
        for strategy in ("gram", "plain"):
            plan = torch_pursuit.make_plan(800, 512, 576, 16, x.device, x.dtype, strategy, budget=1 << 30)
            plan.recheck_rows = 1
            stats = PursuitStats()
            atoms, values, _ = torch_pursuit.pursuit(x, dm, 16, plan=plan, stats=stats)
            ea, ev, _ = (torch.from_numpy(a) for a in _mpsae.pursuit(x.numpy(), dm.numpy(), 16))
            assert torch.equal(atoms, ea), f"{(atoms != ea).sum()} picks differ"
            assert stats.rechecks > 16 and plan.recheck_rows > 16, (stats.rechecks, plan)


def test_the_plan_is_decided_once_per_shape(monkeypatch):
    """The memory budget is read when a shape is first seen, not at every batch: a budget that
    changes mid-run (the driver's free memory once torch caches blocks) flips nothing."""
    m = mt.MpSAE(32, 256, k=8, path="torch")
    x = torch.randn(100, 32)
    m(x)
    (plan,) = m.plans.values()
    reads = []
    monkeypatch.setattr(torch_pursuit, "memory_budget", lambda device: reads.append(device) or 1024)
    m(x)
    m(torch.randn(100, 32))
    assert reads == [] and list(m.plans.values()) == [plan]
    m(torch.randn(50, 32))  # a new shape: planned (with the new budget)
    assert len(reads) == 1 and len(m.plans) == 2


def test_a_training_step_waits_on_the_host_at_most_twice(monkeypatch, tmp_path):
    """One step of the device path's trainer (forward, MSE, sparse backward, clipping, fused
    Adam, the statistics): the pursuit's read-back and the statistics' one."""
    from mpsae.torch_train import Stepper

    x, _, _ = real_problem(n=256)
    stepper = Stepper("cpu")
    captured = {}
    real_start = Stepper.start

    def start(self, state):
        real_start(self, state)
        captured["stepper"] = self

    monkeypatch.setattr(Stepper, "start", start)
    mpsae.train(x.numpy(), 256, 8, epochs=1, batch_size=128, out=tmp_path / "run", progress=False, stepper=stepper)
    st = captured["stepper"]
    batch = x.numpy()[:128].copy()
    st.step(batch, 1e-3)  # the shape's plan is made at its first batch
    syncs = Syncs(monkeypatch)
    with syncs:
        stats, finite, norm = st.step(batch, 1e-3)
    assert finite and len(syncs.seen) <= 2, syncs.seen


def test_launching_a_capturable_training_step_needs_no_host(monkeypatch, tmp_path):
    """The whole training step launched (batch to the device, forward with the capturable
    pursuit, MSE, sparse backward, clipping, the fused Adam deciding a non-finite skip on the
    device, the statistics): no synchronising op and no read-back; collecting its results is the
    one read-back. The proof that no op of the step needs the host, where CUDA graphs are absent."""
    from mpsae.torch_train import Stepper

    x, _, _ = real_problem(n=256)
    stepper = Stepper("cpu", capturable=True)
    mpsae.train(x.numpy(), 256, 8, epochs=1, batch_size=128, out=tmp_path / "run", progress=False, stepper=stepper)
    batch = x.numpy()[:128].copy()
    syncs = Syncs(monkeypatch)
    with syncs:
        stepper._launch(batch, 1e-3)
    assert syncs.seen == []
    with syncs:
        stats, finite, _ = stepper.drain()
    assert finite and syncs.seen == ["Tensor.tolist"]


def test_a_non_finite_step_changes_nothing(tmp_path):
    from mpsae.torch_train import Stepper

    x, _, _ = real_problem(n=256)
    stepper = Stepper("cpu")
    mpsae.train(x.numpy(), 256, 8, epochs=1, batch_size=128, out=tmp_path / "run", progress=False, stepper=stepper)
    with torch.no_grad():
        stepper.model.get_dictionary()  # the forward's in-place normalisation, done by any step
    before = stepper.model.dictionary._weights.detach().clone()
    moments = {k: v.clone() for k, v in stepper.opt.state[stepper.model.dictionary._weights].items()}
    steps = stepper.steps
    bad = x.numpy()[:128].copy()
    bad[3, 5] = np.inf
    _, finite, _ = stepper.step(bad, 1e-3)
    assert not finite and stepper.steps == steps
    # Only the forward's in-place normalisation (a rounding of already unit rows) touched the
    # weights: no Adam update (lr 1e-3 moves them by about 1e-3).
    torch.testing.assert_close(stepper.model.dictionary._weights.detach(), before, rtol=1e-6, atol=1e-7)
    after = stepper.opt.state[stepper.model.dictionary._weights]
    assert all(torch.equal(after[k], v) for k, v in moments.items())


def test_a_capturable_forward_compiles_with_fullgraph_and_gives_the_same_outputs():
    """torch.compile(fullgraph=True) refuses any op that needs the host (a graph break): the
    capturable pursuit and the sparse backward trace whole, and give the eager outputs."""
    x, dm, k = real_problem(n=128, c=256, k=6)
    plan = torch_pursuit.make_plan(128, 256, x.shape[1], k, x.device, x.dtype, "gram", budget=1 << 28)

    def forward(x, dm):
        return torch_pursuit.pursuit(x, dm, k, plan=plan, capturable=True)

    def backward(residual, dm, atoms, values, g):
        return torch_pursuit.backward(residual, dm, None, atoms, values, g, None, None, True, deterministic=False)

    want = forward(x, dm)
    got = torch.compile(forward, fullgraph=True, backend="eager")(x, dm)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    g = torch.randn_like(x)
    want_b = backward(want[2], dm, want[0], want[1], g)
    got_b = torch.compile(backward, fullgraph=True, backend="eager")(want[2], dm, want[0], want[1], g)
    assert torch.equal(got_b[0], want_b[0]) and torch.equal(got_b[1], want_b[1])


def test_deterministic_gradients_match_the_default_backward():
    x, dm, k = real_problem(n=300, c=128, k=8)
    atoms, values, residual = torch_pursuit.pursuit(x, dm, k, "plain")
    g = torch.randn_like(x)
    gv = torch.randn(300, k)
    a = torch_pursuit.backward(residual, dm, None, atoms, values, g, g * 0.5, gv)
    b = torch_pursuit.backward(residual, dm, None, atoms, values, g, g * 0.5, gv, deterministic=True)
    torch.testing.assert_close(b[0], a[0], rtol=1e-5, atol=1e-5 * float(a[0].abs().max()))
    assert torch.equal(b[1], a[1])


def test_deterministic_training_runs_are_bitwise_equal(tmp_path):
    """Two device-path runs of 20 steps with deterministic=True: bitwise the same dictionary."""
    from mpsae.torch_train import train

    rows = np.load(DATA / "smollm2_l15_public.npy").astype(np.float32)[:2560]
    dicts = []
    for i in range(2):
        model, metrics = train(rows, 512, 8, device="cpu", deterministic=True, epochs=1, batch_size=128,
                               out=tmp_path / f"run{i}", progress=False, seed=3)
        dicts.append(model.get_dictionary())
    assert len(rows) // 128 == 20
    assert np.array_equal(dicts[0], dicts[1])


class _Synchronous:
    """A stepper without step_late/drain: the library takes each step's results at once."""

    def __init__(self, inner):
        self.inner = inner

    def start(self, state):
        self.inner.start(state)

    def step(self, batch, lr):
        return self.inner.step(batch, lr)

    def state(self):
        return self.inner.state()


def test_statistics_one_step_late_change_nothing_but_the_timing(tmp_path):
    """The library's loop with the device path pipelined (each step's statistics collected at
    the next step, the last before each epoch's end and each checkpoint): the same weights,
    Adam state and metrics as the step-by-step loop, steps numbered 1..N, and a non-finite
    batch skipped on the device (fused Adam's found_inf) and counted as the engine does."""
    from mpsae.torch_train import Stepper

    rows = np.load(DATA / "smollm2_l15_public.npy").astype(np.float32)[:1280].copy()
    rows[700] *= 1e25  # one batch (rows 640..767) whose loss overflows float32: a non-finite step
    runs = {}
    for name, stepper in (("late", Stepper("cpu")), ("sync", _Synchronous(Stepper("cpu")))):
        reports = []
        model, metrics = mpsae.train(rows, 256, 8, epochs=2, batch_size=128, out=tmp_path / name, progress=False,
                                     stepper=stepper, checkpoint_every=7, seed=5, callback=reports.append)
        logged = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = (model.get_dictionary(), metrics, reports + logged)
    (wl, ml, sl), (ws, ms, ss) = runs["late"], runs["sync"]
    assert np.array_equal(wl, ws)
    drop = lambda m: {k: v for k, v in m.items() if "time" not in k and "second" not in k and "rows_per" not in k}  # noqa: E731
    assert [drop(m) for m in ml] == [drop(m) for m in ms]
    assert [drop(m) for m in sl] == [drop(m) for m in ss]
    step_numbers = [s["step"] for s in sl if s.get("kind", "step") == "step" and "epoch_time" not in s][:20]
    assert step_numbers == list(range(1, 21)), step_numbers
    assert sum(s["skipped"] for s in sl[:20]) == 2  # the bad batch, once an epoch (shuffled)
    assert sum(m["skipped_steps"] for m in ml) == 2  # the bad batch, in each epoch
