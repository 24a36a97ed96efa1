"""What a researcher does with a trained SAE and its model: :func:`probe` a sentence (which
concepts each token picks), :func:`steer` the model with concepts (and :func:`generate_steered`
to read the text with and without), :func:`compare` two runs.

**The steering convention, once.** A concept ``j`` moves the hook's output along its atom in the
data's units: ``decode(e_j) - decode(0) = D_j / scale`` (the model's ``--scale`` divided out; the
mean cancels). ``mode="add"`` adds ``coefficient · D_j / scale`` at every position;
``mode="clamp"`` sets the concept's code to ``coefficient`` (the code's units, the pursuit's
values in the preprocessed space) by adding ``(coefficient - z_j) · D_j / scale``, where ``z_j`` is
the code the SAE gives that position.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional

from . import _mpsae
from .model import load
from .windows import find_module, hook_output, token_text

__all__ = ["probe", "steer", "generate_steered", "compare", "steering_direction"]


def _sae(sae_or_run, device=None):
    from .splice import load_sae

    return load_sae(sae_or_run, device)


def _activations(model, hook: str, input_ids):
    """The hook's output for ``input_ids`` (one forward pass, stopped after the hook)."""
    import torch

    module = find_module(model, hook)
    captured = {}

    class _Stop(Exception):
        pass

    def grab(_m, _i, output):
        captured["acts"] = hook_output(output, hook).detach()
        raise _Stop()

    handle = module.register_forward_hook(grab)
    try:
        with torch.no_grad():
            try:
                model(input_ids=input_ids)
            except _Stop:
                pass
    finally:
        handle.remove()
    return captured["acts"]


def _encode_ids(tokenizer, text: str, prepend_bos: bool) -> List[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if prepend_bos:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if bos is not None:
            ids = [bos] + list(ids)
    return list(ids)


def probe(model, sae_or_run, text: str, hook: str, *, tokenizer, top: int = 5,
          prepend_bos: bool = True) -> List[Dict[str, Any]]:
    """Which concepts each token of ``text`` picks.

    Parameters
    ----------
    model : torch.nn.Module
        The model the SAE was trained on (a Hugging Face causal LM or any module taking
        ``input_ids``).
    sae_or_run : mpsae.torch.MpSAE or path
        The SAE, or a run folder, model file or SAELens folder.
    text : str
        The sentence.
    hook : str
        The module path the SAE reads (e.g. ``"model.layers.14"``).
    tokenizer
        The model's tokenizer.
    top : int
        Concepts shown per token (the largest ``|value|`` first).
    prepend_bos : bool
        Put the BOS token first, as a harvest does (it is not shown).

    Returns
    -------
    list of dict
        One per token: ``position``, ``token_id``, ``token`` (decoded text), and ``concepts``:
        up to ``top`` dicts ``{"concept", "value", "step"}`` (the pursuit step, from 1, at which
        the concept was first picked; values of repeated picks summed).
    """
    import torch

    sae = _sae(sae_or_run, next(model.parameters()).device)
    ids = _encode_ids(tokenizer, text, prepend_bos)
    if not ids:
        raise ValueError("the text gives no token")
    acts = _activations(model, hook, torch.tensor([ids], device=next(model.parameters()).device))[0]
    if acts.shape[-1] != sae.dictionary.in_dimensions:
        raise ValueError(f"the SAE reads rows of width {sae.dictionary.in_dimensions}, but hook '{hook}' gives "
                         f"{acts.shape[-1]}")
    was = sae.sparse_codes
    sae.sparse_codes = True
    try:
        with torch.no_grad():
            _, (idx, val) = sae.encode(acts.float())
    finally:
        sae.sparse_codes = was
    first = 1 if prepend_bos and len(ids) > 1 and ids[0] in (tokenizer.bos_token_id, tokenizer.eos_token_id) else 0
    out = []
    for p in range(first, len(ids)):
        summed: Dict[int, List[float]] = {}
        for t, (j, v) in enumerate(zip(idx[p].tolist(), val[p].tolist())):
            if j < 0:
                continue
            entry = summed.setdefault(j, [0.0, t + 1])
            entry[0] += v
        ranked = sorted(summed.items(), key=lambda kv: (-abs(kv[1][0]), kv[1][1]))[:top]
        out.append({"position": p - first, "token_id": int(ids[p]), "token": token_text(tokenizer, ids[p]),
                    "concepts": [{"concept": int(j), "value": float(v), "step": int(s)} for j, (v, s) in ranked]})
    return out


def steering_direction(sae, concept: int):
    """The direction concept ``concept`` moves the hook's output along, in the data's units:
    ``decode(e_j) - decode(0) = D_j / scale`` (see the module docs)."""
    import torch

    c = sae.nb_concepts
    if not 0 <= int(concept) < c:
        raise ValueError(f"concept {concept} is not in [0, {c})")
    with torch.no_grad():
        atom = sae.get_dictionary()[int(concept)].float()
        scale = sae.preprocess.scale
        return atom if scale is None else atom / scale.to(atom.dtype)


@contextlib.contextmanager
def steer(model, sae_or_run, hook: str, concepts: Mapping[int, float], mode: str = "add") -> Iterator[Any]:
    """Steer ``model`` at ``hook`` with ``concepts`` (``{concept: coefficient}``) while the
    ``with`` block runs.

    ``mode="add"`` adds ``coefficient · D_j / scale`` to the hook's output at every position;
    ``mode="clamp"`` sets the concept's code to ``coefficient`` at every position (see the module
    docs for the units). Yields the SAE.
    """
    import torch

    if mode not in ("add", "clamp"):
        raise ValueError(f"mode '{mode}': use add or clamp")
    device = next(model.parameters()).device
    sae = _sae(sae_or_run, device)
    module = find_module(model, hook)
    directions = {int(j): steering_direction(sae, j) for j in concepts}
    width = sae.dictionary.in_dimensions

    def edit(_m, _i, output):
        acts = hook_output(output, hook)
        if acts.shape[-1] != width:
            raise ValueError(f"the SAE reads rows of width {width}, but hook '{hook}' gives {acts.shape[-1]}")
        delta = torch.zeros(acts.shape, dtype=torch.float32, device=acts.device)
        if mode == "add":
            for j, coef in concepts.items():
                delta += float(coef) * directions[int(j)].to(acts.device)
        else:
            rows = acts.reshape(-1, width).float()
            was = sae.sparse_codes
            sae.sparse_codes = True
            try:
                with torch.no_grad():
                    _, (idx, val) = sae.encode(rows)
            finally:
                sae.sparse_codes = was
            for j, coef in concepts.items():
                z = (val * (idx == int(j))).sum(dim=1)  # the concept's code at each position
                delta += ((float(coef) - z).unsqueeze(1) * directions[int(j)].to(acts.device)).reshape(acts.shape)
        new = acts + delta.to(acts.dtype)
        if isinstance(output, tuple):
            return (new, *output[1:])
        if isinstance(output, list):
            return [new, *output[1:]]
        return new

    handle = module.register_forward_hook(edit)
    try:
        yield sae
    finally:
        handle.remove()


def generate_steered(model, sae_or_run, hook: str, concepts: Mapping[int, float], prompt: str, *, tokenizer,
                     mode: str = "add", max_new_tokens: int = 20, prepend_bos: bool = False) -> Dict[str, str]:
    """Greedy generation from ``prompt`` without and with steering: ``{"prompt", "unsteered",
    "steered"}`` (the generated continuations, decoded)."""
    import torch

    device = next(model.parameters()).device
    sae = _sae(sae_or_run, device)
    ids = torch.tensor([_encode_ids(tokenizer, prompt, prepend_bos)], device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def run():
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad)
        return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    plain = run()
    with steer(model, sae, hook, concepts, mode=mode):
        steered = run()
    return {"prompt": prompt, "unsteered": plain, "steered": steered}


def compare(run_a, run_b, *, write: bool = True) -> Dict[str, Any]:
    """Match the atoms of ``run_a`` one to one with those of ``run_b`` by absolute cosine (as
    ``mpsae compare``): ``mcc`` (the mean absolute cosine of the matches), ``above_0_9``,
    ``above_0_7`` (shares of the matches), ``matched`` and ``best`` (each atom of A's one-to-one
    and best match in B: ``{"atom", "cosine"}``). Written into run A's folder (``compare.json``,
    shown by the concept browser) when ``write`` and it is a folder."""
    from .model import MpSAE

    a = run_a if isinstance(run_a, MpSAE) else load(run_a)
    b = run_b if isinstance(run_b, MpSAE) else load(run_b)
    name = os.path.basename(os.fspath(run_b).rstrip("/")) if isinstance(run_b, (str, os.PathLike)) else "other"
    target = os.fspath(run_a) if write and isinstance(run_a, (str, os.PathLike)) and os.path.isdir(run_a) else None
    return _mpsae.compare(a._m, b._m, name, target)
