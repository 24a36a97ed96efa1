"""Comparing two runs: a one-to-one matching of atoms by absolute cosine (Hungarian), its MCC,
the shares above 0.9/0.7, each atom's best match; a run against itself and against a permuted,
sign-flipped copy; the CLI and the concept browser."""
import json
import subprocess

import numpy as np
import pytest

import mpsae
from conftest import DATA


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "a"
    rows = np.load(DATA / "smollm2_l15_public.npy")[:2048]
    mpsae.train(rows, 64, 4, epochs=2, batch_size=512, lr=5e-3, out=out, progress=False)
    return out


def permuted_copy(run, dst, perm, flips, extra=0):
    """A model whose atom ``i`` is atom ``perm[i]`` of ``run`` (sign-flipped where ``flips``),
    plus ``extra`` random atoms."""
    a = mpsae.load(run)
    state = a.state_dict()
    w = state["dictionary._weights"][perm] * np.where(flips, -1.0, 1.0)[:, None].astype(np.float32)
    if extra:
        w = np.concatenate([w, np.random.default_rng(1).standard_normal((extra, w.shape[1])).astype(np.float32)])
    b = mpsae.MpSAE(w.shape[1], w.shape[0], k=4, dictionary_params={"normalization": "identity"})
    b.load_state_dict({"dictionary._weights": w, "dictionary.multiplier": np.zeros((), np.float32)})
    b.save(dst)
    return dst


def test_a_run_against_itself_has_mcc_one(run):
    cmp = mpsae.compare(run, run, write=False)
    assert cmp["mcc"] == pytest.approx(1.0, abs=1e-6) and cmp["above_0_9"] == 1.0 and cmp["above_0_7"] == 1.0
    assert [m["atom"] for m in cmp["matched"]] == list(range(64))
    assert [m["atom"] for m in cmp["best"]] == list(range(64))


def test_a_permuted_sign_flipped_copy_is_found(run, tmp_path):
    perm = np.random.default_rng(0).permutation(64)
    flips = np.random.default_rng(2).random(64) < 0.5
    other = permuted_copy(run, tmp_path / "b.safetensors", perm, flips)
    cmp = mpsae.compare(run, other, write=False)
    assert cmp["mcc"] == pytest.approx(1.0, abs=1e-6)
    # Atom perm[i] of A is atom i of B.
    found = np.array([m["atom"] for m in cmp["matched"]])
    np.testing.assert_array_equal(found[perm], np.arange(64))
    signs = np.array([m["cosine"] for m in cmp["matched"]])[perm]
    assert ((signs < 0) == flips).all()


def test_against_a_larger_run_the_shared_atoms_are_matched(run, tmp_path):
    perm = np.random.default_rng(3).permutation(64)
    other = permuted_copy(run, tmp_path / "c.safetensors", perm, np.zeros(64, bool), extra=64)
    cmp = mpsae.compare(run, other, write=False)
    assert cmp["concepts"] == [64, 128] and cmp["mcc"] == pytest.approx(1.0, abs=1e-6)
    # ... and from the larger side, half its atoms find no one-to-one match.
    back = mpsae.compare(other, run, write=False)
    assert sum(m is None for m in back["matched"]) == 64 and back["mcc"] == pytest.approx(1.0, abs=1e-6)


def test_the_optimal_matching_beats_greedy(tmp_path):
    """Two atoms of A both closest to one atom of B: the one-to-one matching gives each its own."""
    d = 8
    e = np.eye(d, dtype=np.float32)
    a = np.stack([e[0], 0.8 * e[0] + 0.6 * e[1]])
    b = np.stack([0.9 * e[0] + np.sqrt(1 - 0.81) * e[1], e[1]])
    paths = []
    for name, w in (("a", a), ("b", b)):
        m = mpsae.MpSAE(d, 2, k=1, dictionary_params={"normalization": "identity"})
        m.load_state_dict({"dictionary._weights": w, "dictionary.multiplier": np.zeros((), np.float32)})
        m.save(tmp_path / f"{name}.safetensors")
        paths.append(tmp_path / f"{name}.safetensors")
    cmp = mpsae.compare(*paths, write=False)
    assert [m["atom"] for m in cmp["best"]] == [0, 0]
    assert [m["atom"] for m in cmp["matched"]] == [0, 1]


def test_the_cli_writes_the_comparison_the_browser_shows(run, tmp_path, cli):
    perm = np.random.default_rng(0).permutation(64)
    other = permuted_copy(run, tmp_path / "b.safetensors", perm, np.zeros(64, bool))
    r = subprocess.run([cli, "compare", str(run), str(other)], check=True, capture_output=True, text=True)
    summary = json.loads(r.stdout)
    assert summary["mcc"] == pytest.approx(1.0, abs=1e-6) and summary["matched_above_0_9"] == 1.0
    assert (run / "compare.json").exists()
    subprocess.run([cli, "concepts", "--model", str(run), "--data", str(DATA / "smollm2_l15_public.npy"), "--out",
                    str(tmp_path / "site")], check=True, capture_output=True)
    shard = (tmp_path / "site" / "shards" / f"{perm[5] // 256}.js").read_text()
    entries = json.loads(shard[shard.index(", ") + 2:shard.rindex(");")])
    page = entries[str(perm[5])][1]
    assert "In b.safetensors" in page and "one-to-one match: atom #5 (cosine 1.000)" in page
    # Other widths do not compare.
    m = mpsae.MpSAE(16, 8, k=2)
    m.save(tmp_path / "w16.safetensors")
    r = subprocess.run([cli, "compare", str(run), str(tmp_path / "w16.safetensors")], capture_output=True, text=True)
    assert r.returncode == 1 and "widths 576 and 16" in r.stderr


def test_a_neuronpedia_export_holds_every_feature_in_its_import_layout(run, tmp_path, cli):
    import gzip

    out = tmp_path / "np"
    r = subprocess.run([cli, "export", str(run), "--format", "neuronpedia", "--out", str(out), "--data",
                        str(DATA / "smollm2_l15_public.npy"), "--tokens", str(DATA / "smollm2_l15_public.tokens.tsv"),
                        "--top", "5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    source = __import__("pathlib").Path(r.stdout.strip())
    assert source.parent.parent == out and source.name == "0-mpsae-64"
    for name in ("release.jsonl", "model.jsonl", "sourceset.jsonl", "source.jsonl"):
        json.loads((source / name).read_text())
    features = [json.loads(l) for l in gzip.decompress((source / "features" / "batch-0.jsonl.gz").read_bytes())
                .decode().splitlines()]
    assert [f["index"] for f in features] == [str(j) for j in range(64)]
    acts = [json.loads(l) for l in gzip.decompress((source / "activations" / "batch-0.jsonl.gz").read_bytes())
            .decode().splitlines()]
    assert acts and all(len(a["tokens"]) == len(a["values"]) for a in acts)
    for a in acts:
        assert a["values"][a["maxValueTokenIndex"]] == pytest.approx(a["maxValue"], rel=1e-6)
        assert not any("Ġ" in t for t in a["tokens"])  # decoded text
    alive = [f for f in features if f["frac_nonzero"] > 0]
    assert alive and all(sum(f["freq_hist_data_bar_heights"]) > 0 for f in alive)
    assert all(len(f["topkCosSimIndices"]) > 0 for f in features)
    assert mpsae.load(source / "saelens").nb_concepts == 64
    # An export does not overwrite a folder that holds something, unless forced.
    r = subprocess.run([cli, "export", str(run), "--format", "neuronpedia", "--out", str(out), "--data",
                        str(DATA / "smollm2_l15_public.npy"), "--tokens", str(DATA / "smollm2_l15_public.tokens.tsv")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "is not empty" in r.stderr
