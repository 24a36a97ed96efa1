"""Training from Python: the same model as the CLI, no copy of arrays, Ctrl-C and resume."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mpsae
from conftest import REPO


def weights(path):
    from safetensors.numpy import load_file
    return load_file(str(path))["dictionary._weights"]


def test_python_train_and_cli_train_give_bitwise_equal_weights(tmp_path, cli, real_rows):
    data = tmp_path / "rows.npy"
    np.save(data, real_rows[:1000])
    opts = ["--concepts", "128", "-k", "4", "--epochs", "2", "--batch-size", "256", "--seed", "3",
            "--lr", "5e-3", "--dropout", "0.1"]
    subprocess.run([cli, "train", "--data", str(data), "--out", str(tmp_path / "cli"), "--progress", "quiet", *opts],
                   check=True, capture_output=True)
    model, metrics = mpsae.train(str(data), 128, 4, epochs=2, batch_size=256, seed=3, lr=5e-3, dropout=0.1,
                                 out=tmp_path / "py", progress=False)
    # The same file read as an in-memory array trains the same model too.
    mem, _ = mpsae.train(np.load(data), 128, 4, epochs=2, batch_size=256, seed=3, lr=5e-3, dropout=0.1,
                         progress=False)
    w_cli = weights(tmp_path / "cli" / "model.safetensors")
    assert np.array_equal(w_cli, weights(tmp_path / "py" / "model.safetensors"))
    assert np.array_equal(w_cli, model.state_dict()["dictionary._weights"])
    assert np.array_equal(w_cli, mem.state_dict()["dictionary._weights"])
    assert len(metrics) == 2 and metrics[-1]["epoch"] == 2
    lines = (tmp_path / "py" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]


def test_a_float32_c_array_is_not_copied(tmp_path):
    # Peak memory of a training run on a 256 MB array, in a fresh process: it must not grow by
    # anything near the array's size (a copy would double it).
    code = textwrap.dedent("""
        import resource, sys, numpy as np, mpsae
        x = np.random.default_rng(0).standard_normal((250_000, 256), dtype=np.float32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mpsae.train(x, 32, 2, steps=3, batch_size=512, progress=False, threads=1)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024)
    """)
    grew_mb = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                   text=True).stdout.split()[-1])
    assert grew_mb < 64, f"peak memory grew by {grew_mb:.0f} MB training on a 256 MB array"


def test_ctrl_c_keeps_the_checkpoint_and_resume_continues_bitwise(tmp_path, real_rows, sigint_raises):
    x = np.ascontiguousarray(real_rows[:512], dtype=np.float32)
    kw = dict(steps=12, batch_size=64, seed=1, checkpoint_every=4, progress=False)
    straight, _ = mpsae.train(x, 64, 4, **kw)

    def interrupt(report):
        if report["step"] == 6:
            os.kill(os.getpid(), __import__("signal").SIGINT)

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        mpsae.train(x, 64, 4, out=out, callback=interrupt, **kw)
    assert (out / "checkpoint.safetensors").exists()
    assert not (out / "model.safetensors").exists()
    resumed, _ = mpsae.train(x, 64, 4, out=out, resume=True, **kw)
    assert np.array_equal(resumed.state_dict()["dictionary._weights"], straight.state_dict()["dictionary._weights"])


def test_callback_receives_each_step_and_its_exception_stops_training(real_rows):
    x = np.ascontiguousarray(real_rows[:256], dtype=np.float32)
    seen = []
    mpsae.train(x, 32, 2, steps=5, batch_size=64, callback=seen.append, progress=False)
    assert [r["step"] for r in seen] == [1, 2, 3, 4, 5]
    assert {"loss", "r2", "l0", "dead_ratio", "lr"} <= set(seen[0])

    def fail(report):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        mpsae.train(x, 32, 2, steps=5, batch_size=64, callback=fail, progress=False)


def test_streaming_trainer_checkpoints_and_continues(tmp_path, real_rows):
    x = np.ascontiguousarray(real_rows[:512], dtype=np.float32)
    a = mpsae.Trainer(576, 64, 4, seed=2)
    for i in range(4):
        a.step(x[i * 64:(i + 1) * 64])
    a.save_checkpoint(tmp_path / "ck.safetensors")
    b = mpsae.Trainer.from_checkpoint(tmp_path / "ck.safetensors")
    for i in range(4, 8):
        a.step(x[i * 64:(i + 1) * 64])
        b.step(x[i * 64:(i + 1) * 64])
    assert b.steps_done == 8
    assert np.array_equal(a.model.state_dict()["dictionary._weights"], b.model.state_dict()["dictionary._weights"])


def test_models_round_trip_and_open_cli_runs(tmp_path, cli, real_rows):
    m = mpsae.MpSAE(576, 64, k=4, seed=5)
    m.save(tmp_path / "m.safetensors")
    back = mpsae.load(tmp_path / "m.safetensors")
    x = real_rows[:32]
    assert np.array_equal(m.encode_sparse(x)[0], back.encode_sparse(x)[0])
    data = tmp_path / "rows.npy"
    np.save(data, real_rows[:300])
    subprocess.run([cli, "train", "--data", str(data), "--concepts", "64", "-k", "4", "--steps", "3",
                    "--center", "--out", str(tmp_path / "run"), "--progress", "quiet"], check=True, capture_output=True)
    run = mpsae.load(tmp_path / "run")
    assert run.k == 4 and run.preprocess[0] is not None
