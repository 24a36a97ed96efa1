"""The tokens each concept promotes and suppresses through a language model's unembedding
(``W_dec · W_U``, as SAEDashboard shows them), written beside a run's model so that
``mpsae concepts`` shows them on every concept page."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

__all__ = ["logit_lens", "LOGIT_LENS_FILE"]

from .files import LOGIT_LENS as LOGIT_LENS_FILE
from .windows import model_name, token_text


def logit_lens(sae_or_run, model, tokenizer, top: int = 10, out: Optional[os.PathLike] = None,
               chunk: int = 1024) -> Dict[str, Any]:
    """Each atom's ``top`` most promoted and most suppressed tokens.

    Parameters
    ----------
    sae_or_run : mpsae.torch.MpSAE or path
        The SAE, or a run folder / model file / SAELens folder.
    model : torch.nn.Module
        The language model (its ``get_output_embeddings()`` is ``W_U``, ``vocab x d``).
    tokenizer
        Its tokenizer (token texts).
    top : int
        Tokens per list.
    out : path or None
        Where to write the JSON; by default ``RUN/logit_lens.json`` when ``sae_or_run`` is a run
        folder.
    chunk : int
        Atoms per product with ``W_U`` (memory: ``chunk x vocab`` floats).

    Returns
    -------
    dict
        ``{"model", "decoded", "promoted": [[(token, logit), ...] per concept], "suppressed": [...]}``:
        tokens as the tokenizer decodes them (``" the"``), the model's name (the run's provenance,
        else :func:`mpsae.windows.model_name`).
    """
    import torch

    from .splice import load_sae

    sae = load_sae(sae_or_run)
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError("the model has no output embeddings (get_output_embeddings() is None)")
    w_u = head.weight.detach().float()
    with torch.no_grad():
        dictionary = sae.get_dictionary().detach().float().to(w_u.device)
    if dictionary.shape[1] != w_u.shape[1]:
        raise ValueError(f"the SAE's rows have dimension {dictionary.shape[1]}, the unembedding {w_u.shape[1]}")
    promoted, suppressed = [], []
    with torch.no_grad():
        for s in range(0, dictionary.shape[0], chunk):
            logits = dictionary[s:s + chunk] @ w_u.T
            hi = torch.topk(logits, top, dim=1)
            lo = torch.topk(logits, top, dim=1, largest=False)
            for values, ids, dst in ((hi.values, hi.indices, promoted), (lo.values, lo.indices, suppressed)):
                for v_row, i_row in zip(values.tolist(), ids.tolist()):
                    dst.append([(token_text(tokenizer, t), round(v, 4)) for t, v in zip(i_row, v_row)])
    # The model's name: the run's provenance when it records one, else the model's own.
    name = None
    if isinstance(sae_or_run, (str, os.PathLike)):
        try:
            from .model import load

            name = load(sae_or_run).provenance.get("model")
        except (ValueError, OSError):
            name = None
    result = {"model": name or model_name(model), "decoded": True, "promoted": promoted, "suppressed": suppressed}
    if out is None and isinstance(sae_or_run, (str, os.PathLike)) and os.path.isdir(sae_or_run):
        out = os.path.join(os.fspath(sae_or_run), LOGIT_LENS_FILE)
    if out is not None:
        tmp = f"{os.fspath(out)}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f)
        os.replace(tmp, out)
    return result
