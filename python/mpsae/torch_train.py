"""Training on a GPU (any torch device) with the device path, in the CLI's run format.

:func:`train` is :func:`mpsae.train` with the maths of each step done by the PyTorch module's
device path (:mod:`mpsae.torch_pursuit`) on ``device``: the library keeps the loop, the data
order, the preprocessing, the schedule, the non-finite and stop policies, the metrics and the
checkpoints. So a run trained on a GPU opens in ``mpsae eval/encode/concepts``, and resumes on
either side (``mpsae train --resume`` or ``train(..., resume=True)``)::

    import mpsae.torch_train
    model, metrics = mpsae.torch_train.train("acts.npy", 16384, 16, device="cuda", out="runs/gpu",
                                             batch_size=4096, lr=1e-3, epochs=5, center=True)

The criterion is the run's MSE (``criterion="revive"`` is the engine's only); the optimiser is
torch's Adam with the run's betas, eps and learning-rate schedule, and the gradient norm is
clipped at ``clip`` as ``mpsae train`` does.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

import mpsae

from .torch import MpSAE
from .torch_pursuit import summed_codes

__all__ = ["train", "Stepper"]


class Stepper:
    """One optimiser step on a torch device, for the library's training loop.

    Parameters
    ----------
    device : str or torch.device
    input_dtype : torch.dtype or None
        Dtype the batches are moved to the device in (``torch.bfloat16`` halves the transfer);
        the pursuit always runs in float32.
    strategy : "auto", "gram" or "plain"
        The device path's correlations per step.
    """

    def __init__(self, device="cpu", input_dtype: Optional[torch.dtype] = None, strategy: str = "auto"):
        self.device = torch.device(device)
        self.input_dtype = input_dtype
        self.strategy = strategy
        self.model: Optional[MpSAE] = None

    # -- called by the library ---------------------------------------------------------------
    def start(self, state: Dict[str, Any]) -> None:
        """Build the module and the optimiser from the run's model and Adam state."""
        cfg, opts = json.loads(state["config"]), json.loads(state["options"])
        if opts["criterion"].get("kind") != "mse":
            raise ValueError("the device path trains with criterion='mse' (revive runs on the engine: mpsae.train)")
        self.d, self.c, self.k = cfg["input_dim"], cfg["nb_concepts"], cfg["k"]
        self.clip = float(opts["clip"])
        m = MpSAE(self.d, self.c, k=self.k, dropout=cfg["dropout"], path="torch", strategy=self.strategy,
                  dictionary_params={"normalization": cfg["normalization"], "use_multiplier": cfg["use_multiplier"]},
                  sparse_codes=True)
        with torch.no_grad():
            m.dictionary._weights.copy_(torch.from_numpy(np.asarray(state["weights"])))
            m.dictionary.multiplier.fill_(float(state["multiplier"]))
        self.model = m.to(self.device).train()
        w = self.model.dictionary._weights
        self.params = [w] + ([self.model.dictionary.multiplier] if cfg["use_multiplier"] else [])
        self.opt = torch.optim.Adam(self.params, lr=float(opts["lr"]), betas=(float(opts["beta1"]), float(opts["beta2"])),
                                    eps=float(opts["eps"]))
        step = int(state["adam_step"])
        if step > 0:
            self.opt.state[w] = {
                "step": torch.tensor(float(step)),
                "exp_avg": torch.from_numpy(np.asarray(state["exp_avg"])).to(self.device).reshape(w.shape),
                "exp_avg_sq": torch.from_numpy(np.asarray(state["exp_avg_sq"])).to(self.device).reshape(w.shape),
            }
            if cfg["use_multiplier"]:
                ma, mas = state["multiplier_moments"]
                mult = self.model.dictionary.multiplier
                self.opt.state[mult] = {"step": torch.tensor(float(step)),
                                        "exp_avg": torch.tensor(float(ma), device=self.device),
                                        "exp_avg_sq": torch.tensor(float(mas), device=self.device)}
        self.steps = step

    def step(self, batch: np.ndarray, lr: float) -> Tuple[List[float], bool, float]:
        """Forward, MSE, sparse backward, clipping and Adam on ``batch`` (preprocessed rows);
        returns the batch statistics the library's trainer records."""
        x = torch.from_numpy(batch.reshape(-1, self.d))
        if self.input_dtype is not None:
            x = x.to(self.input_dtype)
        x = x.to(self.device, non_blocking=True).float()
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        residual, (atoms, values), x_hat = self.model(x)
        loss = (x - x_hat).square().mean()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip if self.clip > 0 else math.inf)
        finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
        # Statistics before the update: the dictionary is the one this step used.
        stats = self._stats(x, x_hat.detach(), atoms, values.detach(), float(loss.detach()))
        if finite:
            self.opt.step()
            self.steps += 1
        return stats, finite, float(grad_norm)

    def state(self) -> Dict[str, Any]:
        """The module's parameters and Adam's moments, for the library's checkpoint."""
        w = self.model.dictionary._weights
        st = self.opt.state.get(w, {})
        zeros = np.zeros(tuple(w.shape), np.float32)
        mult = self.model.dictionary.multiplier
        ms = self.opt.state.get(mult, {})
        return {
            "weights": w.detach().float().cpu().numpy(),
            "multiplier": float(mult.detach()),
            "exp_avg": st["exp_avg"].float().cpu().numpy() if "exp_avg" in st else zeros,
            "exp_avg_sq": st["exp_avg_sq"].float().cpu().numpy() if "exp_avg_sq" in st else zeros,
            "adam_step": int(self.steps),
            "multiplier_moments": (float(ms["exp_avg"]) if "exp_avg" in ms else 0.0,
                                   float(ms["exp_avg_sq"]) if "exp_avg_sq" in ms else 0.0),
        }

    # -- statistics ----------------------------------------------------------------------------
    def _stats(self, x, x_hat, atoms, values, loss) -> List[float]:
        """The step's statistics by the library's names (:data:`mpsae.STEP_STATISTICS`), then
        ``Σ‖r_t‖²`` for t = 1..k, the per-dimension sums of the rows, then alive_1..c: the sums the library's trainer turns into R2,
        L0, the explained variance per step and the dead ratio (``Trainer::record_external``)."""
        with torch.no_grad():
            x64, n = x.double(), x.shape[0]
            c = self.c
            keys, z = summed_codes(atoms, values, c)
            alive = torch.zeros(c, dtype=torch.float64, device=x.device)
            alive[keys[z > 0] % c] = 1.0
            # Residual energy after each step: ‖r_t‖² = ‖r_{t-1}‖² - 2v² + v²‖Dm_j‖² (v = r_{t-1}·Dm_j).
            # The dictionary of this step (W was normalised by the forward; no second in-place
            # normalisation here).
            d_ = self.model.dictionary
            norms_sq = (d_._weights.detach().double() * torch.exp(d_.multiplier.detach().double())).square().sum(1)[atoms]
            v = values.double()
            drop = (v * v * (2.0 - norms_sq)).sum(0)
            energy = x64.square().sum() - torch.cumsum(drop, 0)
            scalar = lambda v: torch.tensor(float(v), dtype=torch.float64, device=x.device)  # noqa: E731
            named = {
                "loss": scalar(loss), "rows": scalar(n), "entries": scalar(x.numel()),
                "sum_x": x64.sum(), "sum_x2": x64.square().sum(),
                "sum_error2": (x64 - x_hat.double()).square().sum(),
                "nonzero_codes": (z.abs() >= 1e-6).sum().double(), "sum_codes2": z.square().sum(),
            }
            head = torch.stack([named[name] for name in mpsae.STEP_STATISTICS])
            return torch.cat([head, energy, x64.sum(0), alive]).cpu().tolist()


def train(data: Any, nb_concepts: Optional[int] = None, k: Optional[int] = None, *, device=None,
          input_dtype: Optional[torch.dtype] = None, strategy: str = "auto", **kw: Any):
    """:func:`mpsae.train` (same arguments, run folders, resume policy and returns) with each step
    on ``device`` through the device path.

    Parameters
    ----------
    device : str, torch.device or None
        Default: ``"cuda"`` when available, else ``"cpu"``.
    input_dtype : torch.dtype or None
        Dtype the batches travel to the device in (e.g. ``torch.bfloat16``); pursued in float32.
    strategy : "auto", "gram" or "plain"
    **kw
        Everything :func:`mpsae.train` takes (``out``, ``resume``, ``center``, ``lr``, ...).

    Returns
    -------
    model : mpsae.MpSAE
        The trained model (numpy API, with its preprocessing); ``mpsae.torch.load(out)`` gives
        the torch module.
    metrics : list of dict
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    stepper = Stepper(device, input_dtype, strategy)
    return mpsae.train(data, nb_concepts, k, stepper=stepper, **kw)
