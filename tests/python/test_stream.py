"""Training straight from a model (mpsae.train_from_model): several SAEs fed by one forward pass
equal harvest-then-train bit for bit (shuffle buffer off), an interrupted or killed and resumed
stream equals an uninterrupted one bit for bit (shuffle buffer on), the cache replays the run
from disk, and bad input is refused before any run folder changes. On a tiny GPT-2 built from a
config (no download); the same checks on SmolLM2 are in test_model_loop.py."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import mpsae  # noqa: E402
from mpsae.__main__ import sae_specs  # noqa: E402
from mpsae.stream import parse_sae  # noqa: E402
from conftest import REPO  # noqa: E402
from test_harvest_doors import MODEL, tiny  # noqa: E402
from test_new_doors import snapshot  # noqa: E402

H1, H2 = "transformer.h.1", "transformer.h.2"
STREAM = dict(context=16, batch_size=4, progress=False)


def weights(run):
    return mpsae.load(run).state_dict()["dictionary._weights"]


def metrics(run):
    """metrics.jsonl without the wall times."""
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in l.items() if k != "time_epoch"} for l in lines]


def test_two_saes_from_one_pass_equal_harvest_then_train_and_the_cache_replays_them(tmp_path):
    model, docs = tiny()
    saes = [dict(k=4, nb_concepts=64, batch_size=50), dict(k=8, c=64, batch_size=64)]
    calls = []
    model.transformer.h[1].register_forward_hook(lambda *a: calls.append(1))
    out = mpsae.train_from_model(model, docs, H1, saes, out=tmp_path / "runs", shuffle_buffer=0,
                                 cache=tmp_path / "cache", **STREAM)
    assert set(out) == {"k4_c64", "k8_c64"} and out["k4_c64"]["rows"] == 40 * 42
    # One forward pass per batch of 4 windows (and one for the widths), for both SAEs.
    assert len(calls) == 1 + 120 // 4
    mpsae.harvest(model, docs, H1, tmp_path / "h", dtype="float32", **STREAM)
    for name, s in zip(["k4_c64", "k8_c64"], saes):
        s = {("nb_concepts" if k == "c" else k): v for k, v in s.items()}
        run = tmp_path / "runs" / name
        for data in ("h", "cache"):
            m, _ = mpsae.train(tmp_path / data, shuffle=False, epochs=1, progress=False, **s)
            np.testing.assert_array_equal(weights(run), m.state_dict()["dictionary._weights"])
        config = json.loads((run / "config.json").read_text())
        assert config["provenance"]["hook"] == H1 and config["provenance"]["layer"] == 2
        assert config["stream"]["shuffle_buffer"] == 0 and config["stream"]["windows_per_pass"] == 4
        assert config["train"]["epochs"] == 1 and len(metrics(run)) == 1
    # The cache is a harvest folder like the harvest's own.
    assert (tmp_path / "cache" / "tokens.tsv").read_text() == (tmp_path / "h" / "tokens.tsv").read_text()


def test_a_stream_interrupted_and_resumed_equals_an_uninterrupted_one(tmp_path):
    model, docs = tiny()
    saes = [dict(k=4, nb_concepts=64, batch_size=50, checkpoint_every=3, center=True, estimate_rows=120, hook=H1),
            dict(k=8, nb_concepts=64, batch_size=64, checkpoint_every=5, hook=H2, name="deep")]
    kw = dict(STREAM, shuffle_buffer=300)
    mpsae.train_from_model(model, docs, [H1, H2], saes, out=tmp_path / "a", cache=tmp_path / "ca", **kw)
    seen = []

    def ctrl_c(report):
        seen.append(report["sae"])
        if len(seen) == 23:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mpsae.train_from_model(model, docs, [H1, H2], saes, out=tmp_path / "b", cache=tmp_path / "cb",
                               callback=ctrl_c, **kw)
    # Ctrl-C wrote a checkpoint of each run where it stood.
    assert (tmp_path / "b" / "deep" / "checkpoint.safetensors").exists()
    assert not (tmp_path / "b" / "deep" / "model.safetensors").exists()
    mpsae.train_from_model(model, docs, [H1, H2], saes, out=tmp_path / "b", cache=tmp_path / "cb", resume=True,
                           **kw)
    for name in ["transformer.h.1_k4_c64", "deep"]:
        np.testing.assert_array_equal(weights(tmp_path / "a" / name), weights(tmp_path / "b" / name))
        assert metrics(tmp_path / "a" / name) == metrics(tmp_path / "b" / name)
    for h in (H1, H2):
        a, b = (np.concatenate([np.load(tmp_path / c / h / s) for s in
                                json.loads((tmp_path / c / h / "harvest.json").read_text())["shards"]])
                for c in ("ca", "cb"))
        np.testing.assert_array_equal(a, b)
    # A finished run resumed trains nothing and changes nothing.
    before = snapshot(tmp_path / "b" / "deep")
    mpsae.train_from_model(model, docs, [H1, H2], saes, out=tmp_path / "b", resume=True, **kw)
    assert snapshot(tmp_path / "b" / "deep") == before


def test_a_killed_stream_resumes_to_the_uninterrupted_weights(tmp_path):
    model, docs = tiny()
    args = dict(shuffle_buffer=200, context=16, batch_size=4, progress=False)
    sae = dict(k=4, nb_concepts=32, batch_size=40, checkpoint_every=4)
    mpsae.train_from_model(model, docs, H1, [sae], out=tmp_path / "whole", **args)
    child = f"""
import sys, mpsae
{MODEL}
def cb(r):
    if r["step"] == 10:  # after the checkpoint of step 8: wait to be killed
        print("blocked", flush=True)
        sys.stdin.read()
mpsae.train_from_model(model, docs, "{H1}", [{sae!r}], out=sys.argv[1], callback=cb, **{args!r})
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-c", child, str(tmp_path / "cut")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "blocked"
    p.send_signal(signal.SIGKILL)
    p.wait()
    run = tmp_path / "cut" / "k4_c32"
    assert (run / "checkpoint.safetensors").exists() and not (run / "model.safetensors").exists()
    mpsae.train_from_model(model, docs, H1, [sae], out=tmp_path / "cut", resume=True, **args)
    np.testing.assert_array_equal(weights(tmp_path / "whole" / "k4_c32"), weights(run))


def test_bad_input_is_refused_before_any_run_folder_changes(tmp_path):
    model, docs = tiny()
    out = tmp_path / "runs"
    sae = dict(k=4, nb_concepts=32, batch_size=40)
    with pytest.raises(ValueError, match="names no module"):
        mpsae.train_from_model(model, docs, "transformer.h.9", [sae], out=out, **STREAM)
    with pytest.raises(ValueError, match="not one of the hooks"):
        mpsae.train_from_model(model, docs, H1, [dict(sae, hook=H2)], out=out, **STREAM)
    with pytest.raises(ValueError, match="say which hook"):
        mpsae.train_from_model(model, docs, [H1, H2], [sae], out=out, **STREAM)
    with pytest.raises(ValueError, match="gives rows of width 32"):
        mpsae.train_from_model(model, docs, H1, [dict(sae, input_dim=576)], out=out, **STREAM)
    with pytest.raises(ValueError, match="share the run folder"):
        mpsae.train_from_model(model, docs, H1, [sae, sae], out=out, **STREAM)
    with pytest.raises(ValueError, match="does not apply to a stream"):
        mpsae.train_from_model(model, docs, H1, [dict(sae, epochs=3)], out=out, **STREAM)
    with pytest.raises(TypeError, match="unexpected training options"):
        mpsae.train_from_model(model, docs, H1, [dict(sae, learning_rate=3)], out=out, **STREAM)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        mpsae.train_from_model(model, [[1, 2, 500]], H1, [sae], out=out, **STREAM)
    assert not out.exists() or not any(out.rglob("*.safetensors"))
    mpsae.train_from_model(model, docs, H1, [sae], out=out, max_rows=200, **STREAM)
    before = snapshot(out)
    # Another stream in the run folder (another shuffle seed), a run there without resume.
    with pytest.raises(ValueError, match="another stream: shuffle_seed 1"):
        mpsae.train_from_model(model, docs, H1, [sae], out=out, shuffle_seed=1, resume=True, **STREAM)
    with pytest.raises(ValueError, match="already holds a run"):
        mpsae.train_from_model(model, docs, H1, [sae], out=out, **STREAM)
    with pytest.raises(ValueError, match="nb_concepts"):
        mpsae.train_from_model(model, docs, H1, [dict(sae, nb_concepts=64, name="k4_c32")], out=out, resume=True,
                               **STREAM)
    assert snapshot(out) == before


def test_the_device_path_trains_from_the_stream(tmp_path):
    model, docs = tiny()
    sae = dict(k=4, nb_concepts=32, batch_size=40)
    engine = mpsae.train_from_model(model, docs, H1, [sae], out=tmp_path / "e", **STREAM)["k4_c32"]
    device = mpsae.train_from_model(model, docs, H1, [sae], out=tmp_path / "d", device="cpu", **STREAM)["k4_c32"]
    assert device["steps"] == engine["steps"] and device["rows"] == engine["rows"]
    # The same maths in float32 on another path: the same training up to rounding.
    assert abs(device["explained_variance"] - engine["explained_variance"]) < 0.02
    np.testing.assert_allclose(weights(tmp_path / "d" / "k4_c32"), weights(tmp_path / "e" / "k4_c32"), atol=2e-3)


def test_a_checkpoint_that_cannot_be_written_loses_nothing_and_the_stream_resumes(tmp_path):
    """A full disk (or any failed write) at a checkpoint: the stream stops with the error, the
    checkpoint before it is intact, no temporary file stays, and resuming once the disk has
    room again gives the uninterrupted run's weights bit for bit."""
    model, docs = tiny()
    args = dict(shuffle_buffer=200, context=16, batch_size=4, progress=False)
    sae = dict(k=4, nb_concepts=32, batch_size=40, checkpoint_every=4)
    mpsae.train_from_model(model, docs, H1, [sae], out=tmp_path / "whole", **args)
    run = tmp_path / "cut" / "k4_c32"
    blocker = run / f".checkpoint.safetensors.tmp{os.getpid()}"

    def fill_disk(report):
        if report["step"] == 6:  # after the checkpoint of step 4: the next cannot be written
            blocker.mkdir()

    with pytest.raises(Exception, match="checkpoint"):
        mpsae.train_from_model(model, docs, H1, [sae], out=tmp_path / "cut", callback=fill_disk, **args)
    kept = mpsae.load(run / "checkpoint.safetensors") if (run / "checkpoint.safetensors").exists() else None
    assert kept is not None and not (run / "model.safetensors").exists()
    blocker.rmdir()
    assert not [p for p in os.listdir(run) if ".tmp" in p]
    mpsae.train_from_model(model, docs, H1, [sae], out=tmp_path / "cut", resume=True, **args)
    np.testing.assert_array_equal(weights(tmp_path / "whole" / "k4_c32"), weights(run))


def test_on_a_device_the_rows_never_come_to_the_host(tmp_path, monkeypatch):
    """With device=, the rows go from the hook to the stepper as torch tensors (the shuffle
    buffer included): after the preprocessing's estimate no batch is handed to the library as a
    numpy array, and the run equals the one whose rows took the host's way bit for bit (the
    centring and scaling applied on the device are the library's (x - mean)·scale)."""
    from mpsae import stream as stream_module

    model, docs = tiny()
    sae = dict(k=4, nb_concepts=32, batch_size=40, center=True, scale=True, estimate_rows=80)
    held, given = [], []
    real_step = stream_module._Sae._step

    def spy(self, batch, callback):
        (given if isinstance(batch, np.ndarray) or self.run.estimating is not None else held).append(len(batch))
        return real_step(self, batch, callback)

    monkeypatch.setattr(stream_module._Sae, "_step", spy)
    device = mpsae.train_from_model(model, docs, H1, [sae], out=tmp_path / "d", device="cpu", **STREAM)["k4_c32"]
    assert sum(given) == 80 and sum(held) == device["rows"] - 80 and len(held) > 3
    # The host's way: the same stepper fed numpy batches.
    monkeypatch.setattr(stream_module._Sae, "_step", lambda self, batch, callback: real_step(
        self, batch.cpu().numpy() if not isinstance(batch, np.ndarray) else batch, callback))
    host = mpsae.train_from_model(model, docs, H1, [sae], out=tmp_path / "h", device="cpu", **STREAM)["k4_c32"]
    assert host["steps"] == device["steps"]
    assert np.array_equal(weights(tmp_path / "d" / "k4_c32"), weights(tmp_path / "h" / "k4_c32"))


def test_sae_options_from_the_command_line_and_files(tmp_path):
    assert parse_sae("k=16,c=4096,lr=3e-4,center=true,name=a") == dict(k=16, nb_concepts=4096, lr=3e-4, center=True,
                                                                        name="a")
    with pytest.raises(ValueError, match="not key=value"):
        parse_sae("k=16,4096")
    toml = tmp_path / "saes.toml"
    toml.write_text('[[sae]]\nk = 8\nnb_concepts = 256\n\n[[sae]]\nk = 32\nnb_concepts = 256\n')
    js = tmp_path / "saes.json"
    js.write_text(json.dumps([{"k": 8}, {"k": 32}]))
    assert sae_specs(["k=4"], str(toml)) == [dict(k=4), dict(k=8, nb_concepts=256), dict(k=32, nb_concepts=256)]
    assert sae_specs(None, str(js)) == [dict(k=8), dict(k=32)]
    with pytest.raises(ValueError, match="no SAE given"):
        sae_specs(None, None)
