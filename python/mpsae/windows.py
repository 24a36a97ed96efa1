"""What harvesting and splicing share: finding a hooked module, taking its output, cutting
documents into windows of token ids, padding them into a batch, and a progress bar."""
from __future__ import annotations

import difflib
import os
import re
import sys
import time
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

__all__ = ["find_module", "hook_output", "documents", "windows", "padded", "Progress"]


def find_module(model, path: str):
    """The module at ``path`` (``"model.layers.14"``); a path that names none is a ValueError
    listing the nearest module paths."""
    modules = dict(model.named_modules())
    if path in modules:
        return modules[path]
    near = difflib.get_close_matches(path, list(modules), n=5, cutoff=0.4)
    layers = [n for n in modules if re.fullmatch(r"(.*\.)?(layers|h|layer|blocks)\.\d+", n)]
    hint = near or layers[:5]
    raise ValueError(f"hook '{path}' names no module of the model; nearest module paths: {', '.join(hint) or '(none)'}")


def hook_output(out):
    """The tensor a hooked module gave (the first element of a tuple output)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def documents(inputs) -> Tuple[List[Any], bool]:
    """``(documents, as_ids)``: strings, a text file (one document), or lists of token ids."""
    if isinstance(inputs, (str, os.PathLike)) and os.path.isfile(os.fspath(inputs)):
        with open(os.fspath(inputs), encoding="utf-8") as f:
            return [f.read()], False
    if isinstance(inputs, str):
        return [inputs], False
    docs = list(inputs)
    if not docs:
        raise ValueError("no inputs: give strings, a text file or lists of token ids")
    if all(isinstance(d, str) for d in docs):
        return docs, False
    if all(isinstance(d, (list, tuple, np.ndarray)) or hasattr(d, "tolist") for d in docs):
        return [[int(t) for t in (d.tolist() if hasattr(d, "tolist") else d)] for d in docs], True
    raise TypeError("inputs must be strings, a text file path, or lists of token ids")


def windows(inputs, tokenizer=None, context: int = 256, prepend_bos: bool = True,
            vocab_size: Optional[int] = None) -> Iterator[Tuple[int, int, List[int]]]:
    """The windows ``(document, window, token ids)`` a harvest runs: each document tokenized
    (without special tokens) and cut into windows of ``context`` tokens, a BOS token first when
    ``prepend_bos`` (the last, shorter window kept); lists of token ids are cut the same way but
    used exactly as given (no BOS added)."""
    if context < 2:
        raise ValueError(f"context {context} must be at least 2")
    docs, as_ids = documents(inputs)
    bos = None
    if not as_ids:
        if tokenizer is None:
            raise ValueError("text inputs need a tokenizer (tokenizer=)")
        if prepend_bos:
            bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            if bos is None:
                raise ValueError("prepend_bos=True but the tokenizer has no BOS (or EOS) token")
    for doc_i, doc in enumerate(docs):
        ids = doc if as_ids else tokenizer(doc, add_special_tokens=False)["input_ids"]
        if vocab_size is not None:
            bad = [t for t in ids if not 0 <= t < vocab_size]
            if bad:
                raise ValueError(f"document {doc_i}: token id {bad[0]} is outside the vocabulary of {vocab_size}")
        step = context - (1 if bos is not None else 0)
        for w, start in enumerate(range(0, len(ids), step)):
            chunk = list(ids[start:start + step])
            yield doc_i, w, ([bos] + chunk) if bos is not None else chunk


def padded(batch, device):
    """``(input_ids, attention_mask, lengths)`` of windows ``(doc, window, ids)``, right-padded
    (a causal model's earlier positions do not see the padding)."""
    import torch

    lengths = [len(w[2]) for w in batch]
    width = max(lengths)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for b, (_, _, toks) in enumerate(batch):
        ids[b, :len(toks)] = torch.tensor(toks)
        mask[b, :len(toks)] = 1
    return ids.to(device), mask.to(device), lengths


class Progress:
    """A progress bar on stderr (tqdm when installed), rows and rows/s."""

    def __init__(self, on: bool, total: Optional[int], what: str = "harvest"):
        self.on, self.t0, self.last, self.printed = on, time.time(), 0, 0
        self.bar = None
        self.what = what
        if on:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="rows", desc=what)
            except ImportError:
                self.bar = None

    def update(self, rows: int) -> None:
        if not self.on:
            return
        if self.bar is not None:
            self.bar.update(rows - self.last)
        elif rows - self.printed >= 65536:
            print(f"{self.what}: {rows} rows", file=sys.stderr)
            self.printed = rows
        self.last = rows

    def close(self, new_rows: int) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.on:
            dt = max(time.time() - self.t0, 1e-9)
            print(f"{self.what}: {new_rows} rows in {dt:.1f} s ({new_rows / dt:.0f} rows/s)", file=sys.stderr)
