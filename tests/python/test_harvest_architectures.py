"""Harvesting other architectures, from tiny randomly initialised models built from configs (no
download): a ViT's patch tokens (images in, a patch table out, as the concept browser reads it)
and a GPT-2's residual stream."""
import json
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import mpsae  # noqa: E402


def test_vit_patch_tokens(tmp_path, cli):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=96)
    model = transformers.ViTModel(cfg).eval()
    images = torch.randn(10, 3, 32, 32)
    names = dict(model.named_modules())
    hook = next(h for h in ("encoder.layer.0", "layers.0", "encoder.layers.0") if h in names)  # by version
    info = mpsae.harvest(model, images, hook, tmp_path / "vit", batch_size=4, dtype="float32",
                         progress=False, image_names=[f"img{i}.png" for i in range(10)])
    assert info["rows"] == 10 * 16 and info["d"] == 48 and info["context"] is None
    rows = np.concatenate([np.load(tmp_path / "vit" / s) for s in info["shards"]])
    with torch.no_grad():
        want = model(pixel_values=images, output_hidden_states=True).hidden_states[1][:, 1:].reshape(-1, 48)
    np.testing.assert_allclose(rows, want.numpy(), rtol=1e-5, atol=1e-5)
    tsv = [l.split("\t") for l in (tmp_path / "vit" / "tokens.tsv").read_text().splitlines()]
    assert tsv[0] == ["row", "source", "image", "patch", "patch_row", "patch_col"]
    assert tsv[1][2:] == ["img0.png", "0", "0", "0"] and tsv[16][2:] == ["img0.png", "15", "3", "3"]
    assert tsv[17][2] == "img1.png"
    # The patch table drives the concept browser's image pages.
    run = tmp_path / "run"
    subprocess.run([cli, "train", "--data", str(tmp_path / "vit"), "--out", str(run), "--concepts", "32", "-k", "2",
                    "--epochs", "2", "--batch-size", "64", "--progress", "quiet"], check=True, capture_output=True)
    subprocess.run([cli, "concepts", "--model", str(run), "--data", str(tmp_path / "vit"), "--out",
                    str(tmp_path / "site")], check=True, capture_output=True)
    assert "img" in (tmp_path / "site" / "data.js").read_text()
    assert json.loads((run / "config.json").read_text())["provenance"]["hook"] == hook


def test_gpt2_residual_stream(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=3, n_head=4)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    docs = [list(range(1, 40)), list(range(50, 70))]
    info = mpsae.harvest(model, docs, "transformer.h.1", tmp_path / "g", context=16, dtype="float32",
                         progress=False)
    # windows of 16 ids (as given, no BOS), the first position of each left out
    assert info["rows"] == (15 + 15 + 6) + (15 + 3)
    rows = np.concatenate([np.load(tmp_path / "g" / s) for s in info["shards"]])
    with torch.no_grad():
        first = model(input_ids=torch.tensor([docs[0][:16]]), output_hidden_states=True).hidden_states[2][0, 1:]
    np.testing.assert_allclose(rows[:15], first.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="transformer.h.1"):
        mpsae.harvest(model, docs, "transformer.h1", tmp_path / "x", progress=False)


def test_several_hooks_in_one_pass_write_one_folder_each(tmp_path):
    torch.manual_seed(1)
    # 4 layers: hidden_states[3] is then block 2's own output (the last one has the final norm applied)
    cfg = transformers.GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=4, n_head=4)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    docs = [list(range(1, 30))]
    mpsae.harvest(model, docs, ["transformer.h.0", "transformer.h.2"], tmp_path / "multi", context=16,
                  dtype="float32", progress=False)
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([docs[0][:16]]), output_hidden_states=True).hidden_states
    for hook, layer in (("transformer.h.0", 1), ("transformer.h.2", 3)):
        info = json.loads((tmp_path / "multi" / hook / "harvest.json").read_text())
        assert info["hook"] == hook and info["rows"] == 15 + 12
        rows = np.load(tmp_path / "multi" / hook / info["shards"][0])
        np.testing.assert_allclose(rows[:15], hidden[layer][0, 1:].numpy(), rtol=1e-5, atol=1e-5)
