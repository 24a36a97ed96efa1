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

__all__ = ["model_name", "token_text", "find_module", "hook_output", "documents", "looks_like_path", "check_token_ids", "windows", "padded",
           "Progress", "HookReader", "escape", "token_lines"]


def model_name(model) -> Optional[str]:
    """The model's name as a researcher reads it, never a folder of this machine: a hub id
    (``HuggingFaceTB/SmolLM2-135M``), else the name its file records (a GGUF's
    ``general.name``), else its folder's name."""
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    if name and not os.path.exists(str(name)):
        return str(name)
    recorded = getattr(config, "_model_name_or_path", None)
    if recorded and not os.path.exists(str(recorded)):
        return str(recorded)
    if name:
        return os.path.basename(str(name).rstrip("/")) or str(name)
    return type(model).__name__


def tokenizer_name(tokenizer, model=None) -> Optional[str]:
    """The tokenizer's name (its hub id), or the model's name when it was read from a folder."""
    name = getattr(tokenizer, "name_or_path", None)
    if name and not os.path.exists(str(name)):
        return str(name)
    return model_name(model) if model is not None else (os.path.basename(str(name).rstrip("/")) if name else None)


def token_text(tokenizer, token_id: int) -> str:
    """A token as the tokenizer decodes it (``" the"``, ``"\\n"``), not its tokenizer piece
    (``Ġthe``, ``Ċ``)."""
    if tokenizer is None:
        return str(token_id)
    return tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)


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


def hook_output(out, hook: str = "?"):
    """The tensor a hooked module gave: the output itself, or the first element of a tuple, a
    list or a ``ModelOutput`` (``last_hidden_state`` of a whole transformer). Anything else is a
    ``ValueError`` naming the hook and the output's type."""
    import torch

    first = out
    if isinstance(out, (tuple, list)):
        first = out[0] if len(out) else None
    elif hasattr(out, "to_tuple") and not torch.is_tensor(out):
        items = out.to_tuple()
        first = items[0] if items else None
    if not torch.is_tensor(first):
        raise ValueError(f"hook '{hook}': the module gives a {type(out).__name__}"
                         f"{'' if first is out else f' whose first element is a {type(first).__name__}'}, "
                         "not a tensor of activations: hook a module that outputs them (e.g. model.layers.N)")
    return first


#: Extensions of text files: a string ending with one names a file, never a literal text.
TEXT_EXTENSIONS = (".txt", ".text", ".md", ".rst", ".json", ".jsonl", ".csv", ".tsv", ".py", ".html", ".xml",
                   ".log", ".tex")


def looks_like_path(text: str) -> bool:
    """Whether a string is meant as a file: one line, no wider than a path, and ending with a
    text extension or naming something inside an existing folder."""
    if "\n" in text or len(text) > 4096 or not text.strip():
        return False
    if text.lower().endswith(TEXT_EXTENSIONS):
        return True
    parent = os.path.dirname(text)
    return bool(parent) and os.sep in text and os.path.isdir(parent) and " " not in os.path.basename(text)


def documents(inputs) -> Tuple[List[Any], bool]:
    """``(documents, as_ids)`` of the inputs of a harvest.

    A ``pathlib.Path`` (any ``os.PathLike``) is a text file, read as one document. A string is a
    file when it names one; a string that looks like a path (one line ending with a text
    extension such as ``.txt``, or naming something inside an existing folder) but names no file
    is a ``FileNotFoundError``; any other string is a document itself (to harvest a string that
    looks like a path, put it in a list: ``[text]``). A list holds documents (strings) or token
    ids (lists or arrays of integers).
    """
    if isinstance(inputs, os.PathLike):
        path = os.fspath(inputs)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such text file")
        with open(path, encoding="utf-8") as f:
            return [f.read()], False
    if isinstance(inputs, str):
        if os.path.isfile(inputs):
            with open(inputs, encoding="utf-8") as f:
                return [f.read()], False
        if looks_like_path(inputs):
            raise FileNotFoundError(f"{inputs}: no such text file (to harvest this string itself, give it in a "
                                    "list: [text])")
        return [inputs], False
    docs = list(inputs)
    if not docs:
        raise ValueError("no inputs: give strings, a text file or lists of token ids")
    if all(isinstance(d, str) for d in docs):
        return docs, False
    if all(isinstance(d, (list, tuple, np.ndarray)) or hasattr(d, "tolist") for d in docs):
        return [_ids(d, i) for i, d in enumerate(docs)], True
    raise TypeError("inputs must be strings, a text file path, or lists of token ids")


def _ids(doc, i: int) -> List[int]:
    """A document's token ids as ints; a float, a bool or anything else is a ``TypeError``."""
    values = doc.tolist() if hasattr(doc, "tolist") else list(doc)
    for t in values:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"document {i}: token id {t!r} is not an integer (give token ids as ints)")
    return [int(t) for t in values]


def check_token_ids(docs: List[List[int]], vocab_size: Optional[int], first: int = 0) -> None:
    """Every id in ``[0, vocab_size)`` (or >= 0 when the vocabulary size is unknown); documents
    are numbered from ``first`` in the message."""
    for i, ids in enumerate(docs, start=first):
        bad = [t for t in ids if t < 0 or (vocab_size is not None and t >= vocab_size)]
        if bad:
            where = f"the vocabulary of {vocab_size}" if vocab_size is not None else "the vocabulary"
            raise ValueError(f"document {i}: token id {bad[0]} is outside {where}")


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
            check_token_ids([ids], vocab_size, first=doc_i)
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


class _Stop(Exception):
    """Raised by the last hook of a :class:`HookReader`: the layers after it are not needed."""


class HookReader:
    """Reads the outputs of modules of ``model`` (``hooks``: module paths) in a forward pass,
    which stops once the last of them has run. Hooks are registered until :meth:`close`."""

    def __init__(self, model, hooks: List[str]):
        self.hooks = list(hooks)
        modules = [find_module(model, h) for h in self.hooks]
        self.model = model
        self.captured: List[Any] = [None] * len(self.hooks)
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, i: int):
        def fn(_module, _inputs, output):
            self.captured[i] = hook_output(output, self.hooks[i]).detach()
            if all(c is not None for c in self.captured):
                raise _Stop()
        return fn

    def read(self, width: Optional[int] = None, **inputs) -> List[Any]:
        """The hooks' outputs (``[batch, tokens, d]`` tensors) of ``model(**inputs)``; ``width``:
        the tokens each must have (None: any)."""
        import torch

        self.captured[:] = [None] * len(self.hooks)
        batch = next(iter(inputs.values())).shape[0]
        with torch.no_grad():
            try:
                self.model(**inputs)
            except _Stop:
                pass
        if any(c is None for c in self.captured):
            raise ValueError(f"hook '{self.hooks[self.captured.index(None)]}' produced no output in the forward pass")
        for i, acts in enumerate(self.captured):
            if acts.dim() != 3 or acts.shape[0] != batch or (width is not None and acts.shape[1] != width):
                raise ValueError(f"hook '{self.hooks[i]}' gives an output of shape {tuple(acts.shape)}, "
                                 f"not [batch, tokens, d] = [{batch}, {width or 'tokens'}, d]")
        out, self.captured = self.captured, [None] * len(self.hooks)
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def escape(token: str) -> str:
    """A token for a ``tokens.tsv`` cell: tabs, newlines and backslashes escaped."""
    return token.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def token_lines(tokenizer, source: str, first_row: int, doc: int, window: int, toks: List[int],
                positions: List[int], cut: int) -> List[str]:
    """The ``tokens.tsv`` lines (``row, source, doc, window, pos, token_id, token, text``) of the
    rows at ``positions`` of a window, numbered from ``first_row``."""
    pieces = (tokenizer.convert_ids_to_tokens([toks[p] for p in positions]) if tokenizer is not None
              else [str(toks[p]) for p in positions])
    texts = [token_text(tokenizer, toks[p]) for p in positions]
    return [f"{first_row + j}\t{source}\t{doc}\t{window}\t{p - cut}\t{toks[p]}\t{escape(str(piece))}\t"
            f"{escape(text)}\n" for j, (p, piece, text) in enumerate(zip(positions, pieces, texts))]


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
