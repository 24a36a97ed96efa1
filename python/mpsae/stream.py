"""Training straight from a model: :func:`train_from_model` streams a model's activations into
one or several SAEs at once, with no copy on disk.

One forward pass per batch of windows feeds every SAE (each reads one hook; the pass stops after
the last hook needed). Rows go through a shuffle buffer into each SAE's trainer: the buffer holds
``shuffle_buffer`` consecutive rows of the stream (across many documents), shuffled with a
generator seeded by ``(shuffle_seed, block number)``, so the order of the rows is a function of
the stream's definition alone. Each SAE is a normal run folder (``out/<name>``: ``config.json``
with the stream's definition and provenance, ``metrics.jsonl``, checkpoints, the model) under the
library's run policy (:class:`mpsae._mpsae.StreamRun`); its checkpoints record how many rows of
the stream it has trained on, and ``resume=True`` runs the stream again from the start of the
block that position falls in (the windows before it are tokenized, not run), so an interrupted
and resumed run trains on exactly the rows, in the order, of an uninterrupted one.

Disk: a harvest stores every row (``rows x d x 2`` bytes in float16: 1B tokens of a d=2304
residual stream are 4.6 TB); the stream stores only each SAE's checkpoint and model
(``3 x c x d x 4`` bytes). ``cache=DIR`` also writes what was read as a harvest folder, to
replay the run from disk (``mpsae.train(DIR, shuffle=False, epochs=1, ...)`` gives the weights of
a stream with ``shuffle_buffer=0``, bit for bit).
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _mpsae
from .harvest import TOKENS_HEADER, _Folder, _layer_of
from .model import MpSAE
from .training import _given
from .windows import (HookReader, Progress, check_token_ids, documents, model_name, padded, token_lines,
                      tokenizer_name, windows)

__all__ = ["train_from_model", "parse_sae"]

#: Rows of the default shuffle buffer (each hook's buffer holds this many rows of float32).
SHUFFLE_BUFFER = 32768


def parse_sae(text: str) -> Dict[str, Any]:
    """An SAE's options from the command line's ``--sae`` form ``k=16,c=4096,lr=3e-4,name=a``
    (``c`` is ``nb_concepts``; numbers, ``true``/``false`` and strings as written)."""
    out: Dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"--sae '{text}': '{part}' is not key=value")
        key, value = (s.strip() for s in part.split("=", 1))
        key = {"c": "nb_concepts", "concepts": "nb_concepts"}.get(key, key).replace("-", "_")
        v: Any = value
        if value.lower() in ("true", "false"):
            v = value.lower() == "true"
        else:
            for conv in (int, float):
                try:
                    v = conv(value)
                    break
                except ValueError:
                    pass
        out[key] = v
    return out


class _Sae:
    """One SAE of the stream: its run, the rows waiting for a full batch, its position."""

    def __init__(self, name: str, hook: str, run: "_mpsae.StreamRun", batch_size: int, stepper=None):
        self.name, self.hook, self.run, self.batch_size = name, hook, run, batch_size
        self.stepper = stepper  # the device path's (its rows stay on its device), or None
        self.start = run.rows  # rows of the (shuffled) stream it trained on before this call
        self.pending: List[Any] = []
        self.pending_rows = 0
        self.summary: Optional[Dict[str, Any]] = None

    def feed(self, rows, callback) -> None:
        """Takes the next rows of the stream (numpy, or torch on the device); trains on every
        full batch."""
        self.pending.append(rows)
        self.pending_rows += len(rows)
        while self.pending_rows >= self.batch_size:
            block = _cat(self.pending)
            batch, rest = block[:self.batch_size], block[self.batch_size:]
            self.pending = [rest] if len(rest) else []
            self.pending_rows = len(rest)
            self._step(batch, callback)

    def finish(self, callback) -> Dict[str, Any]:
        """Trains on the last, shorter batch; ends the run (metrics, checkpoint, model)."""
        if self.pending_rows:
            self._step(_cat(self.pending), callback)
            self.pending, self.pending_rows = [], 0
        self.summary = dict(self.run.finish(), name=self.name, hook=self.hook)
        return self.summary

    def _step(self, batch, callback) -> None:
        if isinstance(batch, np.ndarray):
            reports = self.run.step(np.ascontiguousarray(batch))
        elif self.run.estimating is not None:
            # The preprocessing is estimated on the host from the first rows.
            reports = self.run.step(np.ascontiguousarray(batch.float().cpu().numpy()))
        else:
            self.stepper.hold(batch)
            reports = self.run.step_held(len(batch))
        if callback is not None:
            for r in reports:
                callback(dict(r, sae=self.name))


def _cat(parts: List[Any]):
    """Rows joined (numpy arrays or torch tensors)."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)


def _fingerprint(docs: List[Any]) -> str:
    """A hash of the documents (their text, or their token ids)."""
    h = hashlib.sha256()
    for d in docs:
        h.update((d if isinstance(d, str) else json.dumps(d)).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _sae_list(saes, hooks: List[str]) -> List[Dict[str, Any]]:
    """The SAEs' option sets, each with its ``name`` and ``hook`` (checked)."""
    if isinstance(saes, dict):
        saes = [saes]
    saes = [dict(s) for s in saes]
    if not saes:
        raise ValueError("no SAE to train: give saes=[{'k': 16, 'nb_concepts': 4096}, ...]")
    defaults = _mpsae.defaults()
    names = []
    for s in saes:
        if "c" in s:
            s["nb_concepts"] = s.pop("c")
        k, c = s.get("k", defaults["k"]), s.get("nb_concepts", defaults["nb_concepts"])
        label = s.get("name") or f"k{k}_c{c}"
        for key in ("epochs", "shuffle"):
            if key in s:
                raise ValueError(f"SAE {label}: {key}= does not apply to a stream (it is read once, in the order of "
                                 "its shuffle buffer: shuffle_buffer=, shuffle_seed=)")
        hook = s.get("hook")
        if hook is None:
            if len(hooks) > 1:
                raise ValueError(f"SAE {label}: say which hook it reads (hook=, one of {', '.join(hooks)})")
            s["hook"] = hooks[0]
        elif hook not in hooks:
            raise ValueError(f"SAE {label}: hook '{hook}' is not one of the hooks read ({', '.join(hooks)})")
        if not s.get("name"):
            s["name"] = label if len(hooks) == 1 else f"{s['hook']}_{label}"
        if os.sep in str(s["name"]) or str(s["name"]) in (".", ".."):
            raise ValueError(f"SAE name '{s['name']}': give a folder name, not a path")
        names.append(s["name"])
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two SAEs would share the run folder {dup[0]}: give each a name=")
    return saes


def _source(all_windows: Iterator, start_row: int, batch_size: int, cut: int, max_rows: Optional[int]):
    """The forward batches to run from the stream's row ``start_row`` on, as ``(batch, spans)``
    with ``spans[b] = (row, keep)``: window b's first row in the stream and the positions of it
    kept (rows from ``start_row``, before ``max_rows``). Windows are grouped in batches of
    ``batch_size`` from the first window, as an uninterrupted stream groups them, so a resumed
    run sees bitwise the same activations; batches wholly before ``start_row`` are not run."""
    row = 0
    batch: List[Tuple[int, int, List[int]]] = []
    for win in all_windows:
        batch.append(win)
        if len(batch) < batch_size:
            continue
        item, row = _spans(batch, row, start_row, cut, max_rows)
        if item is not None:
            yield item
        batch = []
        if max_rows is not None and row >= max_rows:
            return
    if batch:
        item, row = _spans(batch, row, start_row, cut, max_rows)
        if item is not None:
            yield item


def _spans(batch, row: int, start_row: int, cut: int, max_rows: Optional[int]):
    """``((batch, spans), next row)`` of a batch whose first row is ``row``; ``(None, next row)``
    when it keeps no row."""
    spans = []
    for _, _, toks in batch:
        n = max(0, len(toks) - cut)
        keep = [cut + j for j in range(n) if row + j >= start_row and (max_rows is None or row + j < max_rows)]
        spans.append((row, keep))
        row += n
    return ((batch, spans) if any(keep for _, keep in spans) else None), row


def train_from_model(model, inputs, hooks: Union[str, Sequence[str]], saes, *, out, tokenizer=None,
                     context: int = 256, batch_size: int = 8, shuffle_buffer: Optional[int] = SHUFFLE_BUFFER,
                     shuffle_seed: int = 0, prepend_bos: bool = True, exclude_first: bool = True,
                     dtype: str = "float32", max_rows: Optional[int] = None, resume: bool = False,
                     force: bool = False, allow_changes: bool = False, device=None, progress: bool = True,
                     cache=None, threads: Optional[int] = None, overlap: bool = True,
                     callback: Optional[Callable[[Dict[str, Any]], Any]] = None) -> Dict[str, Dict[str, Any]]:
    """Train SAEs on a model's activations as it produces them: one forward pass per batch of
    windows feeds every SAE, nothing of the activations is written to disk.

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face model (or any module called as ``model(input_ids=..., attention_mask=...)``).
    inputs : str, path, list of str, or list of lists of token ids
        The documents, as :func:`mpsae.harvest` takes them.
    hooks : str or list of str
        Module paths whose output is read (``"model.layers.14"``).
    saes : dict or list of dict
        One option set per SAE: the training options of :func:`mpsae.train` (``k``,
        ``nb_concepts`` or ``c``, ``lr``, ``batch_size``, ``center``, ...), ``hook`` (which hook
        it reads; needed when several are read), ``name`` (its run folder under ``out``; default
        ``k{k}_c{c}``) and ``estimate_rows`` (rows a centring/scaling is estimated from).
    out : path
        The folder of the runs (``out/<name>`` each).
    tokenizer : optional
        A Hugging Face tokenizer (needed for text).
    context : int
        Tokens per window.
    batch_size : int
        Windows per forward pass (part of the stream's definition: a resumed run groups them
        the same way, so the activations are bitwise the same).
    shuffle_buffer : int or None
        Rows the shuffle buffer holds (each hook's); 0 or None: rows in the stream's order.
    shuffle_seed : int
        Seed of the shuffle buffer's order.
    prepend_bos, exclude_first : bool
        As :func:`mpsae.harvest`.
    dtype : "float32" or "float16"
        The rows are rounded to this dtype before training (``"float16"``: as a float16 harvest
        stores them).
    max_rows : int or None
        Stop the stream after this many rows.
    resume : bool
        Continue the runs in ``out`` from their checkpoints (a run without one starts again).
    force : bool
        Start new runs in ``out`` even where runs are.
    allow_changes : bool
        With ``resume``: apply training options that differ from the runs'.
    device : torch device or None
        Train on the device path (:class:`mpsae.torch_train.Stepper`) on this device; None:
        the CPU engine.
    progress : bool
        A progress bar and one summary line per SAE on stderr.
    cache : path or None
        Also write the rows read as a harvest folder (``cache/<hook>`` for several hooks).
    threads : int or None
        Engine threads (default: all cores).
    overlap : bool
        Run the model's forward passes in a second thread while the SAEs train (each waits on
        the other less; the order of the rows is the same).
    callback : callable or None
        Called after every training step with its report (and ``sae``: the SAE's name); an
        exception it raises stops the stream (KeyboardInterrupt: after a checkpoint).

    Returns
    -------
    dict
        Per SAE name, the run's summary (``model`` file, ``steps``, ``rows``,
        ``explained_variance``, ``r2``, ``l0``, ``dead_ratio``, ...).

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C (or raised by ``callback``), after every SAE has written a checkpoint;
        ``resume=True`` then continues exactly.
    """
    import torch

    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype '{dtype}': use float32 or float16")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_rows is not None and max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    shuffle = int(shuffle_buffer or 0)
    if shuffle < 0:
        raise ValueError("shuffle_buffer must be >= 0")
    hook_list = [hooks] if isinstance(hooks, str) else list(hooks)
    if not hook_list:
        raise ValueError("no hook given")
    sae_list = _sae_list(saes, hook_list)
    needed = [h for h in hook_list if any(s["hook"] == h for s in sae_list)]
    docs, as_ids = documents(inputs)
    if as_ids:
        check_token_ids(docs, getattr(getattr(model, "config", None), "vocab_size", None))
    elif tokenizer is None:
        raise ValueError("text inputs need a tokenizer (tokenizer=)")
    name = model_name(model)
    tok_name = tokenizer_name(tokenizer, model) if tokenizer is not None else name
    cut = 1 if exclude_first else 0
    reader = HookReader(model, needed)  # a hook that names no module fails here, before any folder
    model_device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    runs: List[_Sae] = []
    try:
        # The hooks' widths, from the first window.
        first = next(iter(windows(docs, tokenizer, context, prepend_bos)), None)
        if first is None:
            raise ValueError("the inputs gave no windows (empty documents)")
        ids, mask, lengths = padded([first], model_device)
        widths = {h: int(a.shape[-1]) for h, a in zip(needed, reader.read(max(lengths), input_ids=ids,
                                                                            attention_mask=mask))}
        base = dict(model=name, tokenizer=tok_name, context=context, prepend_bos=prepend_bos,
                    exclude_first=exclude_first, dtype=dtype, windows_per_pass=batch_size,
                    shuffle_buffer=shuffle, shuffle_seed=shuffle_seed, inputs=_fingerprint(docs),
                    documents=len(docs))
        out = os.fspath(out)
        os.makedirs(out, exist_ok=True)
        for s in sae_list:
            options = {k: v for k, v in s.items() if k not in ("name", "hook", "estimate_rows", "input_dim")}
            d = widths[s["hook"]]
            if s.get("input_dim") is not None and int(s["input_dim"]) != d:
                raise ValueError(f"SAE {s['name']}: input_dim {s['input_dim']}, but hook '{s['hook']}' gives rows of "
                                 f"width {d}")
            stream = dict(base, hook=s["hook"])
            provenance = dict(model=name, hook=s["hook"], layer=_layer_of(s["hook"]), tokenizer=tok_name,
                              context=context, prepend_bos=prepend_bos, exclude_first=exclude_first, dtype=dtype)
            stepper = None
            if device is not None:
                from .torch_train import Stepper

                stepper = Stepper(device)
            run = _mpsae.StreamRun(os.path.join(out, s["name"]), _given(options), d, json.dumps(stream),
                                   f"stream: {name} {s['hook']}", json.dumps(provenance), resume, force,
                                   allow_changes, int(s.get("estimate_rows") or _mpsae.defaults()["estimate_rows"]),
                                   threads, stepper)
            batch_rows = int(options.get("batch_size") or _mpsae.defaults()["batch_size"])
            runs.append(_Sae(s["name"], s["hook"], run, batch_rows, stepper))
            if progress:
                for note in run.notes:
                    print(f"{s['name']}: {note}", file=sys.stderr)
        return _stream(runs, reader, needed, docs, tokenizer, context, prepend_bos, batch_size, cut, shuffle,
                       shuffle_seed, dtype, max_rows, model_device, progress, cache, resume, overlap, callback,
                       name, tok_name, None if device is None else torch.device(device))
    finally:
        reader.close()
        model.train(was_training)
        for r in runs:
            r.run.close()


def _stream(runs: List[_Sae], reader: HookReader, hooks: List[str], docs, tokenizer, context, prepend_bos,
            batch_size, cut, shuffle, seed, dtype, max_rows, model_device, progress, cache, resume, overlap,
            callback, name, tok_name, sae_device=None) -> Dict[str, Dict[str, Any]]:
    """The stream's loop over open runs (see :func:`train_from_model`). With ``sae_device`` (the
    device path) the rows stay torch tensors on that device from the hook to the step (the
    shuffle buffer too); otherwise numpy arrays for the engine."""
    import torch

    np_dtype = np.float16 if dtype == "float16" else np.float32
    todo = [r for r in runs if not r.run.finished]
    # Where the source starts: the earliest row any run still needs (the start of its shuffle
    # block), and the end of what the cache already holds.
    starts = [(r.start // shuffle) * shuffle if shuffle else r.start for r in todo]
    caches = _open_cache(cache, hooks, name, tok_name, context, prepend_bos, cut, dtype, resume, progress)
    if caches:
        held = caches[0].info["rows"]
        starts.append((held // shuffle) * shuffle if shuffle else held)
    start = min(starts) if todo or caches else 0
    source = os.path.basename(str(name).rstrip("/")) if name else "model"
    bar = Progress(progress, max_rows, what="stream")
    bar.update(start)
    blocks: Dict[str, List[np.ndarray]] = {h: [] for h in hooks}
    block_rows = 0
    block_index = start // shuffle if shuffle else 0
    emitted = start  # rows of the (shuffled) stream handed out so far

    def hand_out(rows_by_hook: Dict[str, np.ndarray], first: int) -> None:
        """Gives the stream's rows ``first..`` to each run that has not trained on them yet."""
        n = len(next(iter(rows_by_hook.values())))
        for r in todo:
            skip = max(0, min(n, r.start - first))
            if skip < n:
                r.feed(rows_by_hook[r.hook][skip:], callback)

    def shuffled_block() -> None:
        nonlocal block_rows, block_index, emitted
        order = np.random.default_rng([seed, block_index]).permutation(block_rows)
        if sae_device is not None:
            order = torch.as_tensor(order, device=sae_device)
        rows = {h: _cat(blocks[h])[order] for h in hooks}
        hand_out(rows, emitted)
        emitted += block_rows
        for h in hooks:
            blocks[h] = []
        block_rows = 0
        block_index += 1

    batches = _source(windows(docs, tokenizer, context, prepend_bos), start, batch_size, cut, max_rows)
    try:
        for batch, spans, acts in _forward(batches, reader, model_device, overlap):
            rows_here = {}
            for i, h in enumerate(hooks):
                parts = [acts[i][b, keep] for b, (_, keep) in enumerate(spans) if keep]
                block = torch.cat(parts) if len(parts) > 1 else parts[0]
                # Rounded to the stream's dtype, as a harvest in that dtype stores them.
                if np_dtype is np.float16:
                    block = block.to(torch.float16)
                if sae_device is not None:
                    rows_here[h] = block.to(sae_device).float()
                else:
                    rows_here[h] = block.float().cpu().numpy()
            if caches:
                on_host = {h: r if isinstance(r, np.ndarray) else r.cpu().numpy() for h, r in rows_here.items()}
                _write_cache(caches, batch, spans, on_host, hooks, tokenizer, source, cut)
            n = len(rows_here[hooks[0]])
            if not shuffle:
                hand_out(rows_here, emitted)
                emitted += n
            else:
                offset = 0
                while offset < n:
                    take = min(n - offset, shuffle - block_rows)
                    for h in hooks:
                        blocks[h].append(rows_here[h][offset:offset + take])
                    block_rows += take
                    offset += take
                    if block_rows == shuffle:
                        shuffled_block()
            bar.update(emitted + block_rows)
        if shuffle and block_rows:
            shuffled_block()
        if emitted == 0 and not any(r.run.rows for r in runs):
            raise ValueError("the inputs gave no rows (empty documents, or windows of one token with exclude_first)")
        for c in caches:
            c.flush(complete=True)
        for r in todo:
            r.finish(callback)
    except KeyboardInterrupt:
        # Ctrl-C: each run keeps what it trained on (the rows waiting for a full batch are read
        # again by the resumed run), the cache what it read.
        for r in todo:
            r.run.checkpoint()
        for c in caches:
            c.flush()
        raise
    finally:
        for c in caches:
            c.lock.release()
        bar.close(emitted + block_rows - start)
    result = {}
    for r in runs:
        summary = r.summary if r.summary is not None else dict(r.run.finish(), name=r.name, hook=r.hook)
        result[r.name] = summary
        if progress:
            ev = summary.get("explained_variance")
            print(f"{r.name}: {summary['steps']} steps on {summary['rows']} rows"
                  + (f", explained variance {ev:.4f}" if ev is not None else "") + f" -> {summary['model']}",
                  file=sys.stderr)
    return result


def _forward(batches, reader: HookReader, model_device, overlap: bool):
    """``(batch, spans, activations)`` of each forward batch; with ``overlap``, the
    forward passes run in a second thread, at most two batches ahead of the consumer."""
    def run(item):
        batch, spans = item
        ids, mask, lengths = padded(batch, model_device)
        return batch, spans, reader.read(max(lengths), input_ids=ids, attention_mask=mask)

    if not overlap:
        for item in batches:
            yield run(item)
        return
    q: "queue.Queue" = queue.Queue(maxsize=2)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in batches:
                if stop.is_set():
                    return
                q.put(("ok", run(item)))
            q.put(("ok", done))
        except BaseException as e:  # handed to the consumer, raised there
            q.put(("error", e))

    thread = threading.Thread(target=produce, name="mpsae-stream-forward", daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, item = q.get(timeout=0.2)
            except queue.Empty:
                continue
            if kind == "error":
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def _open_cache(cache, hooks, name, tok_name, context, prepend_bos, cut, dtype, resume, progress) -> List[_Folder]:
    """The harvest folders of ``cache=`` (resumed with the runs)."""
    if cache is None:
        return []
    cache = os.fspath(cache)
    folders: List[_Folder] = []
    try:
        for h in hooks:
            info = dict(model=name, hook=h, layer=_layer_of(h), tokenizer=tok_name, context=context,
                        prepend_bos=prepend_bos, exclude_first=bool(cut), dtype=dtype)
            folders.append(_Folder(cache if len(hooks) == 1 else os.path.join(cache, h), info, resume,
                                   TOKENS_HEADER, progress))
    except BaseException:
        for f in folders:
            f.lock.release()
        raise
    return folders


def _write_cache(caches: List[_Folder], batch, spans, rows_here, hooks, tokenizer, source, cut) -> None:
    """Adds the rows of a forward batch that the cache does not hold yet, window by window, as a
    harvest does (a window cut by ``max_rows`` is recorded as partial)."""
    held = caches[0].info["rows"] + caches[0].pending_rows()
    offset = 0
    for (doc, w, toks), (row, keep) in zip(batch, spans):
        new = [p for p in keep if row + p - cut >= held]
        start = offset + len(keep) - len(new)
        offset += len(keep)
        if not new:
            continue
        whole = new[-1] == len(toks) - 1
        lines = token_lines(tokenizer, source, row + new[0] - cut, doc, w, toks, new, cut)
        for c, h in zip(caches, hooks):
            c.add(rows_here[h][start:start + len(new)].astype(np.dtype(c.info["dtype"])), lines,
                  None if whole else new[-1] - cut + 1)
    if caches[0].pending_rows() >= 65536:
        for c in caches:
            c.flush()
