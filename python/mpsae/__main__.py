"""``python -m mpsae harvest ...``, ``python -m mpsae train-from-model ...``, ``python -m mpsae
evaluate-in-model ...``, ``python -m mpsae logit-lens ...``, ``python -m mpsae probe ...`` and
``python -m mpsae serve ...``: the model-side commands (they need torch and transformers), as
shells over :func:`mpsae.harvest`, :func:`mpsae.train_from_model`, :func:`mpsae.evaluate_in_model`,
:func:`mpsae.logit_lens`, :func:`mpsae.probe` and the workbench."""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import files


def _load(model: str, gguf_file, dtype: str, device: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(model, **kw)
    m = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype), **kw).to(device)
    return m, tok


def _inputs(path: str):
    """A .json file of token-id lists, or a text file (one document)."""
    if path.endswith(".json"):
        with open(path) as f:
            return json.load(f)
    return path


def sae_specs(specs, path) -> list:
    """The SAEs of ``train-from-model``: each ``--sae k=16,c=4096`` and/or a JSON or TOML file
    (a list of option tables, or ``{"sae": [...]}``)."""
    from .stream import parse_sae

    saes = [parse_sae(t) for t in specs or []]
    if path:
        if path.endswith(".toml"):
            import tomllib

            with open(path, "rb") as f:
                data = tomllib.load(f)
        else:
            with open(path) as f:
                data = json.load(f)
        items = data.get("sae", data.get("saes")) if isinstance(data, dict) else data
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ValueError(f"{path}: give a list of SAE option tables ([[sae]] in TOML, a list in JSON)")
        saes.extend(dict(i) for i in items)
    if not saes:
        raise ValueError("no SAE given: --sae k=16,c=4096 (repeatable) or --saes FILE")
    return saes


def probe_table(rows) -> str:
    """A probe as a plain-text table: one line per token, its concepts as ``#j value (step t)``."""
    width = max([len(repr(r["token"])) for r in rows] + [5])
    lines = [f"{'pos':>4}  {'token':<{width}}  concepts (value, pursuit step)"]
    for r in rows:
        picks = "  ".join(f"#{c['concept']} {c['value']:+.3f} (step {c['step']})" for c in r["concepts"])
        lines.append(f"{r['position']:>4}  {repr(r['token']):<{width}}  {picks}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mpsae", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p, hooks=False):
        p.add_argument("--model", required=True, help="Hugging Face model name or folder")
        p.add_argument("--gguf-file", help="a GGUF file in that folder")
        p.add_argument("--inputs", required=True, help="a text file (one document) or a .json list of token-id lists")
        if hooks:
            p.add_argument("--hook", required=True, action="append",
                           help="module path, e.g. model.layers.14 (repeat to read several)")
        else:
            p.add_argument("--hook", required=True, help="module path, e.g. model.layers.14")
        p.add_argument("--context", type=int, default=256)
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("--no-bos", action="store_true", help="do not put a BOS token before each window")
        p.add_argument("--keep-first", action="store_true", help="keep each window's first position")
        p.add_argument("--model-dtype", default="float32")
        p.add_argument("--device", default="cpu")
        p.add_argument("--quiet", action="store_true")

    h = sub.add_parser("harvest", help="write a model's activations at a hook to a harvest folder")
    common(h)
    h.add_argument("--out", required=True)
    h.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    h.add_argument("--max-rows", type=int)
    h.add_argument("--resume", action="store_true")
    t = sub.add_parser("train-from-model", help="train SAEs on a model's activations as it runs (no copy on disk)")
    common(t, hooks=True)
    t.add_argument("--out", required=True, help="folder of the runs (OUT/<name> each)")
    t.add_argument("--sae", action="append", help="an SAE's options, e.g. k=16,c=4096,lr=3e-4,hook=model.layers.14 "
                                                  "(repeat for several)")
    t.add_argument("--saes", help="a JSON or TOML file of SAE option tables")
    t.add_argument("--shuffle-buffer", type=int, default=None, help="rows of the shuffle buffer (0: stream order)")
    t.add_argument("--shuffle-seed", type=int, default=0)
    t.add_argument("--dtype", default="float32", choices=["float16", "float32"])
    t.add_argument("--max-rows", type=int)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--force", action="store_true")
    t.add_argument("--allow-changes", action="store_true")
    t.add_argument("--cache", help="also write the rows read as a harvest folder here")
    t.add_argument("--sae-device", help="train on the device path on this torch device (default: the CPU engine)")
    t.add_argument("--threads", type=int)
    e = sub.add_parser("evaluate-in-model", help="CE loss recovered with the SAE spliced in at the hook")
    common(e)
    e.add_argument("--sae", required=True, help="run folder, model file or SAELens folder")
    lens = sub.add_parser("logit-lens", help="write RUN/logit_lens.json: the tokens each concept promotes and suppresses")
    lens.add_argument("--model", required=True, help="Hugging Face model name or folder")
    lens.add_argument("--gguf-file", help="a GGUF file in that folder")
    lens.add_argument("--run", required=True, help="the run folder")
    lens.add_argument("--top", type=int, default=10)
    lens.add_argument("--model-dtype", default="float32")
    lens.add_argument("--device", default="cpu")
    pr = sub.add_parser("probe", help="the concepts each token of a sentence picks, as a table")
    pr.add_argument("--model", required=True, help="Hugging Face model name or folder")
    pr.add_argument("--gguf-file", help="a GGUF file in that folder")
    pr.add_argument("--sae", required=True, help="run folder, model file or SAELens folder")
    pr.add_argument("--hook", required=True, help="module path, e.g. model.layers.14")
    pr.add_argument("--text", required=True, help="the sentence")
    pr.add_argument("--top", type=int, default=5)
    pr.add_argument("--json", action="store_true", help="print the probe as JSON instead of a table")
    pr.add_argument("--model-dtype", default="float32")
    pr.add_argument("--device", default="cpu")
    sv = sub.add_parser("serve", help="the live workbench on localhost: probe text, steer the model")
    sv.add_argument("run", help="the run folder (its concepts/ site is linked from each concept)")
    sv.add_argument("--model", required=True, help="Hugging Face model name or folder")
    sv.add_argument("--gguf-file", help="a GGUF file in that folder")
    sv.add_argument("--hook", required=True, help="module path, e.g. model.layers.14")
    sv.add_argument("--site", help="a concept browser folder other than RUN/concepts")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    sv.add_argument("--model-dtype", default="float32")
    sv.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    try:
        import mpsae

        model, tok = _load(a.model, a.gguf_file, a.model_dtype, a.device)
        if a.command == "serve":
            from .serve import Workbench, serve

            bench = Workbench(a.run, model, tok, a.hook, site=a.site)
            try:
                serve(bench, a.host, a.port, ready=lambda line: print(line, flush=True))
            except KeyboardInterrupt:
                pass
            return 0
        if a.command == "probe":
            rows = mpsae.probe(model, a.sae, a.text, a.hook, tokenizer=tok, top=a.top)
            if a.json:
                print(json.dumps(rows))
            else:
                print(probe_table(rows))
            return 0
        if a.command == "logit-lens":
            mpsae.logit_lens(a.run, model, tok, top=a.top)
            print(json.dumps({"written": os.path.join(a.run, files.LOGIT_LENS)}))
            return 0
        kw = dict(tokenizer=tok, context=a.context, batch_size=a.batch_size, prepend_bos=not a.no_bos,
                  exclude_first=not a.keep_first, progress=not a.quiet)
        if a.command == "train-from-model":
            from .stream import SHUFFLE_BUFFER

            saes = sae_specs(a.sae, a.saes)
            info = mpsae.train_from_model(
                model, _inputs(a.inputs), a.hook, saes, out=a.out,
                shuffle_buffer=SHUFFLE_BUFFER if a.shuffle_buffer is None else a.shuffle_buffer,
                shuffle_seed=a.shuffle_seed, dtype=a.dtype, max_rows=a.max_rows, resume=a.resume, force=a.force,
                allow_changes=a.allow_changes, cache=a.cache, device=a.sae_device, threads=a.threads, **kw)
        elif a.command == "harvest":
            info = mpsae.harvest(model, _inputs(a.inputs), a.hook, a.out, dtype=a.dtype, max_rows=a.max_rows,
                                 resume=a.resume, **kw)
        else:
            info = mpsae.evaluate_in_model(model, a.sae, _inputs(a.inputs), a.hook, **kw)
    except KeyboardInterrupt:
        print("interrupted: what was written is kept (continue with --resume)", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
