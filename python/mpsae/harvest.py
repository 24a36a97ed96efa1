"""Activations out of a model: windows of tokens through any ``nn.Module`` (Hugging Face
``transformers`` models first), the output of chosen modules written to disk as the model runs.

A harvest folder (one per hook) holds ``shard_00000.npy``, ... (rows in order, each shard whole
windows), ``tokens.tsv`` (``row, source, doc, window, pos, token_id, token, text``: which token each row
is; tabs, newlines and backslashes in tokens escaped as ``\\t``, ``\\n``, ``\\\\``) and
``harvest.json`` (model, hook, layer, tokenizer, context, dtype, rows, d, the shards in order).
``mpsae train/encode/eval/concepts --data DIR`` read it, and a run trained on it records where
its activations came from.

Memory is bounded whatever the corpus: rows go to disk shard by shard. A harvest killed midway
keeps every shard it completed (each written atomically, then recorded in ``harvest.json``), and
``resume=True`` continues after the last recorded window without duplicating rows.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import sys
import time
import warnings
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _mpsae
from .files import HARVEST as HARVEST_FILE
from .files import TOKENS as TOKENS_FILE
from .windows import (HookReader, Progress, check_token_ids, documents, find_module, model_name, padded, token_lines,
                      tokenizer_name, windows)

__all__ = ["harvest", "windows", "find_module", "HARVEST_FILE", "TOKENS_FILE"]
TOKENS_HEADER = "row\tsource\tdoc\twindow\tpos\ttoken_id\ttoken\ttext\n"
IMAGES_HEADER = "row\tsource\timage\tpatch\tpatch_row\tpatch_col\n"


def _layer_of(hook: str) -> Optional[int]:
    m = re.search(r"\.(\d+)$", hook)
    return int(m.group(1)) + 1 if m else None


def _is_images(inputs) -> bool:
    """Whether ``inputs`` are images: a 4-D array or tensor ``[N, C, H, W]`` of pixel values."""
    return hasattr(inputs, "shape") and hasattr(inputs, "ndim") and inputs.ndim == 4


def _image_units(images, names):
    """``(index, name, image)`` of each image of a ``[N, C, H, W]`` batch."""
    import torch

    images = torch.as_tensor(np.asarray(images) if not hasattr(images, "detach") else images)
    if names is not None and len(names) != images.shape[0]:
        raise ValueError(f"{len(names)} image names for {images.shape[0]} images")
    for i in range(images.shape[0]):
        yield i, (names[i] if names is not None else f"image_{i:06d}"), images[i]


def _atomic_write(path: str, write) -> None:
    """``write(tmp)`` then rename onto ``path``: a reader never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def _save_npy(path: str, block: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a path
        np.save(f, block)


def _save_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


class _Folder:
    """One hook's harvest folder: shards, tokens.tsv, harvest.json."""

    def __init__(self, out: str, info: Dict[str, Any], resume: bool, header: str = TOKENS_HEADER,
                 progress: bool = True):
        self.out = out
        os.makedirs(out, exist_ok=True)
        # One writer at a time, as for training runs: a second is refused at once, naming the
        # holder; the lock of a process that is gone is taken over.
        self.lock = _mpsae.FolderLock(out)
        try:
            self._open(info, resume, header)
        except BaseException:
            self.lock.release()
            raise
        if self.lock.took_over and progress:
            print(f"harvest: took over the lock of a process that is gone ({self.lock.took_over})", file=sys.stderr)

    def _open(self, info: Dict[str, Any], resume: bool, header: str) -> None:
        out = self.out
        path = os.path.join(out, HARVEST_FILE)
        if resume and os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            for key in ("model", "hook", "tokenizer", "context", "prepend_bos", "exclude_first", "dtype"):
                if old.get(key) != info.get(key):
                    raise ValueError(f"{path}: resume with {key}={info.get(key)!r}, the harvest has {old.get(key)!r}")
            self.info = old
        else:
            if os.path.exists(path) and not resume:
                raise FileExistsError(f"{out} already holds a harvest: resume=True continues it")
            self.info = dict(info, rows=0, d=None, shards=[], windows=0, partial=0, complete=False)
        # Leftovers of a harvest killed midway: shards it did not record, token lines past its rows.
        known = set(self.info["shards"])
        for name in os.listdir(out):
            if (name.startswith("shard_") and name not in known) or ".tmp" in name:
                os.remove(os.path.join(out, name))
        tokens = os.path.join(out, TOKENS_FILE)
        lines = self.info["rows"] + 1
        if os.path.exists(tokens):
            with open(tokens, encoding="utf-8") as f:
                kept = [next(f, "") for _ in range(lines)]
            with open(tokens, "w", encoding="utf-8") as f:
                f.writelines(l for l in kept if l)
        else:
            with open(tokens, "w", encoding="utf-8") as f:
                f.write(header)
        self.info.setdefault("partial", 0)
        self.rows: List[np.ndarray] = []
        self.lines: List[str] = []
        self.windows_pending = 0
        self.partial_pending = self.info["partial"]

    def add(self, rows: np.ndarray, lines: List[str], taken: Optional[int] = None) -> None:
        """Rows of one window: the whole window (``taken`` None), or its first ``taken``
        positions (``max_rows`` cut it; a resumed harvest continues inside it)."""
        self.rows.append(rows)
        self.lines.extend(lines)
        if taken is None:
            self.windows_pending += 1
            self.partial_pending = 0
        else:
            self.partial_pending = taken

    def pending_rows(self) -> int:
        return sum(len(r) for r in self.rows)

    def flush(self, complete: bool = False) -> None:
        """Writes the pending windows as one shard (atomically), their token lines, then records
        them in harvest.json (atomically): a kill between two steps loses no recorded row."""
        if self.rows:
            block = np.concatenate(self.rows)
            name = f"shard_{len(self.info['shards']):05d}.npy"
            _atomic_write(os.path.join(self.out, name), lambda p: _save_npy(p, block))
            with open(os.path.join(self.out, TOKENS_FILE), "a", encoding="utf-8") as f:
                f.writelines(self.lines)
            self.info["shards"].append(name)
            self.info["rows"] += len(block)
            self.info["d"] = int(block.shape[1])
            self.info["windows"] += self.windows_pending
            self.info["partial"] = self.partial_pending
            self.rows, self.lines, self.windows_pending = [], [], 0
        self.info["complete"] = complete
        _atomic_write(os.path.join(self.out, HARVEST_FILE), lambda p: _save_text(p, json.dumps(self.info, indent=1)))


def harvest(model, inputs, hook: Union[str, Sequence[str]], out, *, tokenizer=None, context: int = 256,
            batch_size: int = 8, prepend_bos: bool = True, exclude_first: bool = True, dtype: str = "float16",
            max_rows: Optional[int] = None, progress: bool = True, resume: bool = False,
            shard_rows: int = 65536, image_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run ``inputs`` through ``model`` and write the output of ``hook`` to ``out``.

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face model (``AutoModelForCausalLM``, ...) or any module called as
        ``model(input_ids=..., attention_mask=...)``.
    inputs : str, path, list of str, list of lists of token ids, or images
        Documents (tokenized with ``tokenizer``), a text file (one document), token ids used
        exactly as given, or images for a vision model (an array or tensor ``[N, C, H, W]`` of
        pixel values, passed as ``pixel_values``): each image's tokens (the first, its CLS token,
        left out with ``exclude_first``) are rows, and ``tokens.tsv`` says which image and which
        patch (``image, patch, patch_row, patch_col``: the table the concept browser shows
        patches from).
    hook : str or list of str
        Module path(s) whose output (its first element, for a tuple) is read, e.g.
        ``"model.layers.14"``; several hooks write one folder each (``out/<hook>``).
    out : path
        The harvest folder (or the parent of one folder per hook).
    tokenizer : optional
        A Hugging Face tokenizer (needed for text; gives the tokens' text in tokens.tsv).
    context : int
        Tokens per window (long documents are cut, short ones kept).
    batch_size : int
        Windows per forward pass.
    prepend_bos : bool
        Put the tokenizer's BOS token before each window of text.
    exclude_first : bool
        Leave out each window's first position (the attention sink).
    dtype : "float16" or "float32"
        Dtype of the stored rows.
    max_rows : int or None
        Stop after this many rows.
    progress : bool
        A progress bar on stderr.
    resume : bool
        Continue a harvest in ``out`` after its last recorded window.
    shard_rows : int
        Rows per shard (whole windows: a shard is written once it holds at least this many).
    image_names : list of str or None
        Names of the images (their file names, for the concept browser's ``--images``).

    Returns
    -------
    dict
        The ``harvest.json`` of the (first) hook's folder.
    """
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype '{dtype}': use float16 or float32")
    if batch_size < 1 or shard_rows < 1:
        raise ValueError("batch_size and shard_rows must be at least 1")
    hooks = [hook] if isinstance(hook, str) else list(hook)
    if not hooks:
        raise ValueError("no hook given")
    modules = [find_module(model, h) for h in hooks]
    out = os.fspath(out)
    name = model_name(model)
    tok_name = tokenizer_name(tokenizer, model) if tokenizer is not None else None
    images = _is_images(inputs)
    if images:
        context, prepend_bos, tok_name = None, None, None
    else:
        # The inputs are checked before any folder is touched: missing files, token ids that are
        # not integers or lie outside the vocabulary.
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        docs, as_ids = documents(inputs)
        if as_ids:
            check_token_ids(docs, vocab)
        inputs = docs
        if not as_ids and tokenizer is None:
            raise ValueError("text inputs need a tokenizer (tokenizer=)")
    folders = []
    new_dirs = [d for d in ([out] if len(hooks) == 1 else [os.path.join(out, h) for h in hooks] + [out])
                if not os.path.exists(d)]
    for h in hooks:
        info = dict(model=name, hook=h, layer=_layer_of(h), tokenizer=tok_name or (None if images else name),
                    context=context, prepend_bos=prepend_bos, exclude_first=exclude_first, dtype=dtype)
        try:
            folders.append(_Folder(out if len(hooks) == 1 else os.path.join(out, h), info, resume,
                                   IMAGES_HEADER if images else TOKENS_HEADER, progress))
        except BaseException:
            for f in folders:
                f.lock.release()
            _forget(new_dirs)
            raise
    try:
        return _harvest_into(folders, model, inputs, hooks, modules, tokenizer, context, batch_size, prepend_bos,
                             exclude_first, dtype, max_rows, progress, shard_rows, image_names, images, name, out)
    except BaseException:
        for f in folders:
            f.lock.release()
        # A folder this call created and recorded nothing in is not left behind.
        if all(not f.info["shards"] for f in folders):
            _forget(new_dirs)
        raise
    finally:
        for f in folders:
            f.lock.release()


def _forget(dirs: List[str]) -> None:
    """Removes the folders ``dirs`` that a failed harvest created (their token headers)."""
    for d in dirs:
        try:
            os.remove(os.path.join(d, TOKENS_FILE))
        except OSError:
            pass
    for d in sorted(dirs, key=len, reverse=True):
        try:
            os.rmdir(d)
        except OSError:
            pass


def _harvest_into(folders, model, inputs, hooks, modules, tokenizer, context, batch_size, prepend_bos,
                  exclude_first, dtype, max_rows, progress, shard_rows, image_names, images, name, out):
    """The harvest loop over locked folders (see :func:`harvest`)."""
    import torch

    done_windows = folders[0].info["windows"]
    partial = folders[0].info.get("partial", 0)
    if any(f.info["windows"] != done_windows or f.info.get("partial", 0) != partial for f in folders):
        raise ValueError("the hooks' folders recorded different numbers of windows: harvest them again")
    rows_done = folders[0].info["rows"]
    start_rows = rows_done
    if max_rows is not None and rows_done >= max_rows:
        warnings.warn(f"{out} already holds {rows_done} rows (max_rows={max_rows}): nothing added; "
                      "give a larger max_rows to extend it", stacklevel=3)
        return folders[0].info
    source = os.path.basename(str(name).rstrip("/")) if name else type(model).__name__
    reader = HookReader(model, hooks)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    np_dtype = np.float16 if dtype == "float16" else np.float32
    all_windows = _image_units(inputs, image_names) if images else windows(inputs, tokenizer, context, prepend_bos)
    bar = Progress(progress, max_rows)
    bar.update(rows_done)
    skip_positions = [partial]  # positions of the first window a resumed harvest already holds
    try:
        skipped = 0
        batch: List[Tuple[int, int, List[int]]] = []
        finished = False

        def run(batch):
            nonlocal rows_done
            if images:
                captured = reader.read(pixel_values=torch.stack([img for _, _, img in batch]).to(device))
            else:
                ids, mask, lengths = padded(batch, device)
                captured = reader.read(max(lengths), input_ids=ids, attention_mask=mask)
            cut = 1 if exclude_first else 0
            stop = False
            for b, (doc, w, toks) in enumerate(batch):
                if images:
                    tokens_here = int(captured[0].shape[1])
                    positions = list(range(cut, tokens_here))
                    side = int(round((tokens_here - cut) ** 0.5))
                    grid = side * side == tokens_here - cut
                else:
                    positions = list(range(cut, len(toks)))
                already = skip_positions[0]
                skip_positions[0] = 0
                positions = positions[already:]
                whole = True
                if max_rows is not None and len(positions) > max_rows - rows_done:
                    positions = positions[:max(0, max_rows - rows_done)]
                    whole = False
                if not positions:
                    stop = stop or (max_rows is not None and rows_done >= max_rows)
                    continue
                if images:
                    lines = [f"{rows_done + j}\t{source}\t{w}\t{p - cut}\t"
                             f"{(p - cut) // side if grid else 0}\t{(p - cut) % side if grid else p - cut}\n"
                             for j, p in enumerate(positions)]
                else:
                    lines = token_lines(tokenizer, source, rows_done, doc, w, toks, positions, cut)
                for i, acts in enumerate(captured):
                    rows = acts[b, positions].float().cpu().numpy().astype(np_dtype)
                    folders[i].add(rows, lines, None if whole else already + len(positions))
                rows_done += len(positions)
                bar.update(rows_done)
                if folders[0].pending_rows() >= shard_rows:
                    for f in folders:
                        f.flush()
                if max_rows is not None and rows_done >= max_rows:
                    stop = True
                    break
            return stop

        for win in all_windows:
            if skipped < done_windows:
                skipped += 1
                continue
            batch.append(win)
            if len(batch) == batch_size:
                finished = run(batch)
                batch = []
                if finished:
                    break
        if batch and not finished:
            run(batch)
        if rows_done == 0:
            raise ValueError("the inputs gave no rows (empty documents, or windows of one token with exclude_first)")
        if rows_done == start_rows and start_rows > 0:
            warnings.warn(f"{out} already holds every row these inputs give ({rows_done} rows): nothing added; "
                          "give more inputs (or a larger max_rows) to extend it", stacklevel=3)
        for f in folders:
            f.flush(complete=True)
    finally:
        reader.close()
        model.train(was_training)
        bar.close(rows_done - start_rows)
    return folders[0].info
