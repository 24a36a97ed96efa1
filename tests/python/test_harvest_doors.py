"""Harvest folders are run-like: one writer at a time (a second is refused at once, naming the
holder's pid; a killed writer's lock is taken over), a killed harvest resumes to the rows of an
uninterrupted one, a finished harvest is extended by a larger max_rows, and bad inputs (hooks
whose output is no tensor, float token ids, missing files) are refused before any file changes.
On a tiny GPT-2 built from a config (no download)."""
import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import mpsae  # noqa: E402
from conftest import REPO  # noqa: E402
from test_new_doors import snapshot  # noqa: E402

MODEL = """
import torch, transformers
torch.manual_seed(0)
cfg = transformers.GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=3, n_head=4)
model = transformers.GPT2LMHeadModel(cfg).eval()
docs = [[(7 * i + 3 * j) % 97 + 1 for j in range(45)] for i in range(40)]
"""


def tiny():
    scope = {}
    exec(MODEL, scope)
    return scope["model"], scope["docs"]


def rows_and_tokens(folder):
    info = json.loads((folder / "harvest.json").read_text())
    rows = np.concatenate([np.load(folder / s) for s in info["shards"]])
    return info, rows, (folder / "tokens.tsv").read_text()


HARVEST = dict(context=16, batch_size=4, dtype="float32", progress=False, shard_rows=32)


def test_a_second_writer_is_refused_and_a_killed_one_is_taken_over_and_resumed(tmp_path):
    model, docs = tiny()
    whole = tmp_path / "whole"
    mpsae.harvest(model, docs, "transformer.h.1", whole, **HARVEST)
    # A writer that stops in the middle (blocked on its stdin after 5 forward passes).
    child = f"""
import sys, mpsae
{MODEL}
calls = [0]
def pre(module, args, kwargs):
    calls[0] += 1
    if calls[0] == 6:
        print("blocked", flush=True)
        sys.stdin.read()
model.register_forward_pre_hook(pre, with_kwargs=True)
mpsae.harvest(model, docs, "transformer.h.1", sys.argv[1], context=16, batch_size=4, dtype="float32",
              progress=False, shard_rows=32)
"""
    cut = tmp_path / "cut"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-c", child, str(cut)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "blocked", p.stderr.read()
        before = snapshot(cut)
        assert json.loads((cut / "harvest.json").read_text())["shards"], "the writer recorded a shard"
        with pytest.raises(ValueError, match=f"is in use by another mpsae process \\(pid {p.pid}"):
            mpsae.harvest(model, docs, "transformer.h.1", cut, resume=True, **HARVEST)
        with pytest.raises(ValueError, match=f"pid {p.pid}"):
            mpsae.harvest(model, docs, "transformer.h.1", cut, **HARVEST)
        assert snapshot(cut) == before
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    # The killed writer's lock is stale: taken over, and the harvest continues without
    # duplicating or losing a row.
    mpsae.harvest(model, docs, "transformer.h.1", cut, resume=True, **HARVEST)
    a, b = rows_and_tokens(whole), rows_and_tokens(cut)
    assert a[0]["rows"] == b[0]["rows"] and b[0]["complete"]
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert not (cut / "run.lock").exists()


def test_a_finished_harvest_is_extended_by_a_larger_max_rows(tmp_path):
    model, docs = tiny()
    whole = tmp_path / "whole"
    mpsae.harvest(model, docs, "transformer.h.1", whole, max_rows=200, **HARVEST)
    part = tmp_path / "part"
    info = mpsae.harvest(model, docs, "transformer.h.1", part, max_rows=90, **HARVEST)
    assert info["rows"] == 90 and info["complete"]
    # 90 is not a window boundary (15 rows a window): the resumed harvest continues inside it.
    with pytest.warns(UserWarning, match="already holds 90 rows \\(max_rows=90\\): nothing added"):
        mpsae.harvest(model, docs, "transformer.h.1", part, max_rows=90, resume=True, **HARVEST)
    info = mpsae.harvest(model, docs, "transformer.h.1", part, max_rows=200, resume=True, **HARVEST)
    assert info["rows"] == 200
    a, b = rows_and_tokens(whole), rows_and_tokens(part)
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    # All the inputs harvested: resuming says there is nothing to add.
    mpsae.harvest(model, docs, "transformer.h.1", part, resume=True, **HARVEST)
    with pytest.warns(UserWarning, match="already holds every row these inputs give"):
        mpsae.harvest(model, docs, "transformer.h.1", part, resume=True, **HARVEST)


def test_bad_inputs_are_refused_before_any_file_changes(tmp_path):
    model, docs = tiny()
    out = tmp_path / "h"
    mpsae.harvest(model, docs[:2], "transformer.h.1", out, **HARVEST)
    before = snapshot(out)
    # A module whose output is not a tensor: named, with its type; the new folder is not left behind.
    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(100, 8)

        def forward(self, ids):
            return {"h": self.emb(ids)}

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, input_ids, attention_mask=None):
            return self.inner(input_ids)["h"]

    with pytest.raises(ValueError, match="hook 'inner': the module gives a dict, not a tensor of activations"):
        mpsae.harvest(Odd(), docs, "inner", tmp_path / "x", **HARVEST)
    assert not (tmp_path / "x").exists()
    # Float token ids are not truncated.
    with pytest.raises(TypeError, match="token id 1.7 is not an integer"):
        mpsae.harvest(model, [[1.7, 30.9]], "transformer.h.1", out, resume=True, **HARVEST)
    with pytest.raises(TypeError, match="is not an integer"):
        mpsae.harvest(model, [np.array([1.0, 2.0])], "transformer.h.1", out, resume=True, **HARVEST)
    with pytest.raises(ValueError, match="token id 100 is outside the vocabulary of 100"):
        mpsae.harvest(model, [[1, 100]], "transformer.h.1", out, resume=True, **HARVEST)
    # A path that names no file is not harvested as text.
    with pytest.raises(FileNotFoundError, match="corpus.txt: no such text file"):
        mpsae.harvest(model, str(tmp_path / "corpus.txt"), "transformer.h.1", out, resume=True, **HARVEST)
    with pytest.raises(FileNotFoundError, match="no such text file"):
        mpsae.harvest(model, pathlib.Path(tmp_path / "missing"), "transformer.h.1", out, resume=True, **HARVEST)
    assert snapshot(out) == before


def test_a_whole_models_output_is_its_first_element(tmp_path):
    """``hook="transformer"`` (a ``BaseModelOutputWithPast``): its last hidden state."""
    model, docs = tiny()
    info = mpsae.harvest(model, docs[:3], "transformer", tmp_path / "h", **HARVEST)
    rows = np.concatenate([np.load(tmp_path / "h" / s) for s in info["shards"]])
    with torch.no_grad():
        want = model.transformer(input_ids=torch.tensor([docs[0][:16]])).last_hidden_state[0, 1:]
    np.testing.assert_allclose(rows[:15], want.numpy(), rtol=1e-5, atol=1e-5)


def test_literal_texts_and_paths_are_told_apart():
    from mpsae.windows import documents

    assert documents("Hello world. The end.") == (["Hello world. The end."], False)
    assert documents(["notes.txt"]) == (["notes.txt"], False)  # a list holds texts
    with pytest.raises(FileNotFoundError):
        documents("notes.txt")
    with pytest.raises(FileNotFoundError):
        documents(os.path.join(str(REPO), "no_such_folder_file"))
    readme = documents(REPO / "README.md")
    assert readme[0][0].startswith("# mpsae")


def test_evaluate_in_model_checks_the_width_before_any_long_work(tmp_path):
    import mpsae.torch as mt

    model, docs = tiny()
    later = [0]
    model.transformer.h[2].register_forward_pre_hook(lambda *a: later.__setitem__(0, later[0] + 1))
    run = tmp_path / "run"
    mpsae.train(np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32), 8, 2, epochs=1, out=run,
                progress=False)
    for sae in (mt.MpSAE(16, 8, k=2), run):
        with pytest.raises(ValueError, match="the SAE reads rows of width 16, but hook 'transformer.h.1' gives 32"):
            mpsae.evaluate_in_model(model, sae, docs, "transformer.h.1", context=16, progress=False)
        assert later[0] == 0, "the model ran past the hook before the width was checked"
