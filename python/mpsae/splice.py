"""The SAE in the model: how much of the model's next-token prediction survives when the SAE's
reconstruction replaces a module's output (SAELens's "CE loss recovered").

:func:`evaluate_in_model` runs the same windows three times (each pass stopped at the output
embedding, whose logits are then computed a chunk of positions at a time): clean, with the hook's output
replaced by the SAE's reconstruction at the positions a harvest would read (every position but
each window's first when ``exclude_first``), and with it zeroed there. The losses are the mean
next-token cross-entropy of the predictions made from those positions (position ``p`` predicts
token ``p + 1``), so the three runs are judged on the same predictions.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from . import _mpsae
from .windows import Progress, find_module, hook_output, padded, windows

__all__ = ["evaluate_in_model", "load_sae"]


def load_sae(sae_or_run, device=None):
    """A :class:`mpsae.torch.MpSAE` (eval mode) from a module, a run folder, a model file or a
    SAELens folder."""
    from .torch import MpSAE, load

    if isinstance(sae_or_run, MpSAE):
        sae = sae_or_run
    elif isinstance(sae_or_run, (str, os.PathLike)):
        sae = load(sae_or_run)
    else:
        raise TypeError("sae_or_run must be an mpsae.torch.MpSAE or the path of a run, a model file or a SAELens folder")
    sae = sae.eval()
    return sae.to(device) if device is not None else sae


def _blocks_before(model, hook: str) -> List[Any]:
    """The blocks of the model's list of blocks up to and including ``hook`` when ``hook`` is
    one of them (``model.layers.14``: blocks 0..14), else none."""
    import torch

    parent, _, index = hook.rpartition(".")
    if not index.isdigit():
        return []
    try:
        container = find_module(model, parent)
    except ValueError:
        return []
    if not isinstance(container, torch.nn.ModuleList) or int(index) >= len(container):
        return []
    return list(container[:int(index) + 1])


def evaluate_in_model(model, sae_or_run, inputs, hook: str, *, tokenizer=None, context: int = 256,
                      batch_size: int = 8, prepend_bos: bool = True, exclude_first: bool = True,
                      max_rows: Optional[int] = None, chunk: int = 128, progress: bool = True) -> Dict[str, Any]:
    """Splice the SAE into ``model`` at ``hook`` and measure what the model loses.

    Parameters
    ----------
    model : torch.nn.Module
        A causal language model with an output embedding (``get_output_embeddings()``: the
        logits are that module applied to the last hidden state).
    sae_or_run : mpsae.torch.MpSAE or path
        The SAE, or a run folder, a model file, a SAELens folder.
    inputs, hook, tokenizer, context, batch_size, prepend_bos, exclude_first
        As :func:`mpsae.harvest` (the same windows and positions).
    max_rows : int or None
        Stop once this many rows (replaced positions) were evaluated (whole windows).
    chunk : int
        Positions whose log-probabilities are computed at once (memory: a few ``chunk x vocab``
        float64 blocks; the model's full-vocabulary logits are never materialised).
    progress : bool
        Progress on stderr (rows and rows/s).

    Returns
    -------
    dict
        ``ce_clean``, ``ce_sae``, ``ce_zero`` (mean cross-entropy, nats), ``ce_loss_score``
        (``(ce_zero - ce_sae) / (ce_zero - ce_clean)``), ``kl_sae``, ``kl_zero`` (mean
        ``KL(clean || spliced)``), ``kl_div_score`` (``(kl_zero - kl_sae) / kl_zero``),
        ``explained_variance`` (SAEBench's: ``1 - Σ‖x - x̂‖² / Σ‖x - μ‖²`` over the rows replaced,
        ``μ`` the per-dimension mean; the library's one definition) and
        ``explained_variance_per_step`` (the same after each pursuit step), ``l0`` (codes per
        row), ``rows`` (replaced positions), ``predictions`` (losses averaged).
    """
    import torch

    from .torch_pursuit import summed_codes

    module = find_module(model, hook)
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError("the model has no output embeddings (get_output_embeddings() is None): its logits are "
                         "needed for the cross-entropy")
    device = next(model.parameters()).device
    sae = load_sae(sae_or_run, device)
    sae.sparse_codes = True
    cut = 1 if exclude_first else 0
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    mode = {"what": "clean", "mask": None}
    stats = {"sse": 0.0, "sum": None, "sumsq": 0.0, "rows": 0, "nnz": 0, "energy": None}
    width = sae.dictionary.in_dimensions
    hidden = {}

    class _Skip(Exception):
        """Raised at the output embedding: its input is all the losses need."""

    def splice(_module, _inputs, output):
        acts = hook_output(output, hook)
        if acts.shape[-1] != width:
            # Checked at the first hook call, before any long work (and before a torch error).
            raise ValueError(f"the SAE reads rows of width {width}, but hook '{hook}' gives {acts.shape[-1]} "
                             f"(shape {tuple(acts.shape)}): give the SAE trained at this hook")
        if mode["what"] == "clean":
            return None
        mask = mode["mask"]
        if mode["what"] == "zero":
            new = torch.where(mask.unsqueeze(-1), torch.zeros_like(acts), acts)
        else:
            x = acts[mask]
            with torch.no_grad():
                _, (idx, val), x_hat = sae(x)
            x64, xh64 = x.double(), x_hat.double()
            # The residual energy after each pursuit step, in the data's space.
            with torch.no_grad():
                r = sae.preprocess.apply_to(x.float())
                dictionary = sae.get_dictionary().to(r.dtype)
                unscale = 1.0 if sae.preprocess.scale is None else float(sae.preprocess.scale) ** 2
                energy = []
                for t in range(idx.shape[1]):
                    r = r - val[:, t:t + 1].to(r.dtype) * dictionary[idx[:, t]]
                    energy.append(float(r.double().square().sum()) / unscale)
            stats["energy"] = energy if stats["energy"] is None else [a + b for a, b in zip(stats["energy"], energy)]
            stats["sse"] += float((x64 - xh64).square().sum())
            stats["sumsq"] += float(x64.square().sum())
            stats["sum"] = x64.sum(0) if stats["sum"] is None else stats["sum"] + x64.sum(0)
            stats["rows"] += x.shape[0]
            stats["nnz"] += int((summed_codes(idx, val, sae.nb_concepts)[1] != 0).sum())
            new = acts.clone()
            new[mask] = x_hat.to(acts.dtype)
        if isinstance(output, (tuple, list)):
            return type(output)((new, *output[1:]))
        return new

    def grab_hidden(_module, args, kwargs):
        if not mode.get("grab"):
            return None  # our own call, for a chunk's logits
        h = args[0] if args else next(iter(kwargs.values()))
        hidden[mode["what"]] = h.detach()
        raise _Skip()

    # The layers up to the hook compute the same in the three passes: when the hook is a block of
    # the model's list of blocks, the spliced and zeroed passes reuse the clean pass's outputs of
    # those blocks instead of computing them again.
    blocks = _blocks_before(model, hook)
    cached: Dict[int, Any] = {}

    def keep(i):
        def fn(_m, _a, output):
            if mode["what"] == "clean":
                cached[i] = output
        return fn

    handles = [module.register_forward_hook(splice),
               head.register_forward_pre_hook(grab_hidden, with_kwargs=True)]
    handles += [b.register_forward_hook(keep(i)) for i, b in enumerate(blocks)]
    was_training = model.training
    model.eval()
    totals = {"ce_clean": 0.0, "ce_sae": 0.0, "ce_zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0, "n": 0}
    bar = Progress(progress, max_rows, "evaluate")

    def logprobs(h):
        logits = head(h).double()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return torch.log_softmax(logits, dim=-1)

    try:
        batch: List = []

        def run(batch):
            ids, att, lengths = padded(batch, device)
            w = max(lengths)
            pos = torch.arange(w, device=device).unsqueeze(0)
            length = torch.tensor(lengths, device=device).unsqueeze(1)
            replaced = (pos >= cut) & (pos < length)
            predicts = replaced & (pos < length - 1)  # position p predicts token p + 1
            if not bool(predicts.any()):
                return
            targets = ids[:, 1:][predicts[:, :-1]]
            with torch.no_grad():
                for what in ("clean", "sae", "zero"):
                    mode["what"], mode["mask"], mode["grab"] = what, replaced, True
                    if what != "clean":
                        for i, b in enumerate(blocks):
                            b.forward = (lambda out: (lambda *a, **k: out))(cached[i])
                    try:
                        model(input_ids=ids, attention_mask=att, use_cache=False)
                    except _Skip:
                        pass
                    finally:
                        mode["grab"] = False
                        for b in blocks:
                            b.__dict__.pop("forward", None)
                h = {what: hidden[what][:, :-1][predicts[:, :-1]] for what in ("clean", "sae", "zero")}
                # Losses a chunk of positions at a time: three chunk x vocab blocks at most.
                for s in range(0, targets.shape[0], chunk):
                    tgt = targets[s:s + chunk].unsqueeze(1)
                    lp_clean = logprobs(h["clean"][s:s + chunk])
                    p_clean = lp_clean.exp()
                    totals["ce_clean"] += float(-lp_clean.gather(1, tgt).sum())
                    for what in ("sae", "zero"):
                        lp = logprobs(h[what][s:s + chunk])
                        totals[f"ce_{what}"] += float(-lp.gather(1, tgt).sum())
                        totals[f"kl_{what}"] += float((p_clean * (lp_clean - lp)).sum())
            totals["n"] += int(targets.shape[0])
            bar.update(stats["rows"])

        for win in windows(inputs, tokenizer, context, prepend_bos, vocab):
            batch.append(win)
            if len(batch) == batch_size:
                run(batch)
                batch = []
                if max_rows is not None and stats["rows"] >= max_rows:
                    break
        if batch and not (max_rows is not None and stats["rows"] >= max_rows):
            run(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        bar.close(stats["rows"])
    n = totals["n"]
    if n == 0:
        raise ValueError("the inputs gave no prediction to evaluate (windows too short)")
    out = {k: totals[k] / n for k in ("ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero")}
    gap = out["ce_zero"] - out["ce_clean"]
    out["ce_loss_score"] = (out["ce_zero"] - out["ce_sae"]) / gap if gap != 0 else float("nan")
    out["kl_div_score"] = (out["kl_zero"] - out["kl_sae"]) / out["kl_zero"] if out["kl_zero"] != 0 else float("nan")
    rows = stats["rows"]
    metrics = _mpsae.reconstruction_metrics(float(rows), stats["sum"].tolist(), stats["sumsq"], stats["sse"],
                                            stats["energy"])
    out["explained_variance"] = metrics["explained_variance"]
    out["explained_variance_per_step"] = metrics["explained_variance_per_step"]
    out["l0"] = stats["nnz"] / rows
    out["rows"] = rows
    out["predictions"] = n
    return out
