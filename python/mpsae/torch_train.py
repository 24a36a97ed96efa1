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

from .torch import MpSAE, Preprocess
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
    deterministic : bool
        Bitwise repeatable gradients on any device (:func:`mpsae.torch_pursuit.backward`).
    capturable : bool
        The pursuit without its one read-back (:class:`mpsae.torch.MpSAE`'s ``capturable``):
        launching a step then needs no host round trip at all.
    """

    def __init__(self, device="cpu", input_dtype: Optional[torch.dtype] = None, strategy: str = "auto",
                 deterministic: bool = False, capturable: bool = False):
        self.device = torch.device(device)
        self.input_dtype = input_dtype
        self.strategy = strategy
        self.deterministic = deterministic
        self.capturable = capturable
        self.model: Optional[MpSAE] = None
        self._pending = None  # the launched step whose results are not collected yet
        self._held: Optional[torch.Tensor] = None  # the rows given to hold()
        self._copies = None  # the CUDA stream the batches are copied on (made at the first)

    # -- called by the library ---------------------------------------------------------------
    def start(self, state: Dict[str, Any]) -> None:
        """Build the module and the optimiser from the run's model and Adam state."""
        cfg, opts = json.loads(state["config"]), json.loads(state["options"])
        if opts["criterion"].get("kind") != "mse":
            raise ValueError("the device path trains with criterion='mse' (revive runs on the engine: mpsae.train)")
        self.d, self.c, self.k = cfg["input_dim"], cfg["nb_concepts"], cfg["k"]
        self.clip = float(opts["clip"])
        m = MpSAE(self.d, self.c, k=self.k, dropout=cfg["dropout"], path="torch", strategy=self.strategy,
                  deterministic=self.deterministic, capturable=self.capturable,
                  dictionary_params={"normalization": cfg["normalization"], "use_multiplier": cfg["use_multiplier"]},
                  sparse_codes=True)
        with torch.no_grad():
            m.dictionary._weights.copy_(torch.from_numpy(np.asarray(state["weights"])))
            m.dictionary.multiplier.fill_(float(state["multiplier"]))
        self.model = m.to(self.device).train()
        w = self.model.dictionary._weights
        self.params = [w] + ([self.model.dictionary.multiplier] if cfg["use_multiplier"] else [])
        adam = dict(lr=float(opts["lr"]), betas=(float(opts["beta1"]), float(opts["beta2"])), eps=float(opts["eps"]))
        # The fused Adam: one kernel, its step counter on the device (no host read of it).
        try:
            self.opt = torch.optim.Adam(self.params, fused=True, **adam)
            self.fused = True
        except RuntimeError:  # a device without the fused kernel
            self.opt = torch.optim.Adam(self.params, **adam)
            self.fused = False
        self._pending = None
        step = int(state["adam_step"])
        if step > 0:
            self.opt.state[w] = {
                "step": torch.tensor(float(step), dtype=torch.float32, device=self.device),
                "exp_avg": torch.from_numpy(np.asarray(state["exp_avg"])).to(self.device).reshape(w.shape),
                "exp_avg_sq": torch.from_numpy(np.asarray(state["exp_avg_sq"])).to(self.device).reshape(w.shape),
            }
            if cfg["use_multiplier"]:
                ma, mas = state["multiplier_moments"]
                mult = self.model.dictionary.multiplier
                self.opt.state[mult] = {"step": torch.tensor(float(step), dtype=torch.float32, device=self.device),
                                        "exp_avg": torch.tensor(float(ma), device=self.device),
                                        "exp_avg_sq": torch.tensor(float(mas), device=self.device)}
        self.steps = step

    def step(self, batch: np.ndarray, lr: float) -> Tuple[List[float], bool, float]:
        """Forward, MSE, sparse backward, clipping and Adam on ``batch`` (preprocessed rows);
        returns the batch statistics the library's trainer records, whether the step was finite
        and the gradient norm. The engine's non-finite policy: a step whose loss or gradient
        norm is not finite changes nothing (the library counts it). Host round trips: the
        pursuit's one (see :func:`mpsae.torch_pursuit.pursuit`) and one read-back of the
        statistics, the loss and the gradient norm together."""
        self._launch(batch, lr)
        return self.drain()

    def step_late(self, batch: np.ndarray, lr: float) -> Optional[Tuple[List[float], bool, float]]:
        """:meth:`step` pipelined: launches the step on ``batch`` and returns the results of the
        step launched before it (None at the first), so the library reads and copies the next
        batch while the device still computes this one; the update of a non-finite step is
        skipped on the device (the fused Adam's ``found_inf``). :meth:`drain` returns the last."""
        previous = self._pending
        self._pending = None
        self._launch(batch, lr)
        return None if previous is None else self._collect(previous)

    def drain(self) -> Optional[Tuple[List[float], bool, float]]:
        """The results of the step launched last, if not returned yet (waits for it)."""
        previous, self._pending = self._pending, None
        return None if previous is None else self._collect(previous)

    def hold(self, rows: torch.Tensor) -> None:
        """Keeps the next batch's rows (``n x d``, the data's space) on the device, for
        :meth:`step_held`: a stream on the same device never copies them to the host."""
        if rows.dim() != 2:
            raise ValueError(f"rows must have shape [n, d], got {tuple(rows.shape)}")
        self._held = rows.to(self.device).float()

    def step_held(self, n: int, lr: float, mean: Optional[np.ndarray], scale: Optional[float]
                  ) -> Tuple[List[float], bool, float]:
        """:meth:`step` on the rows given to :meth:`hold` (``n`` of them), preprocessed on the
        device as the library does (``(x - mean)·scale``, the torch module's
        :class:`mpsae.torch.Preprocess`)."""
        rows, self._held = self._held, None
        if rows is None or rows.shape[0] != n:
            raise ValueError(f"step_held({n}): the stepper holds {0 if rows is None else rows.shape[0]} rows")
        if rows.shape[1] != self.d:
            raise ValueError(f"held rows have width {rows.shape[1]}, the SAE's is {self.d}")
        if not bool(torch.isfinite(rows).all()):
            raise ValueError("stream: a row of the batch has a NaN or infinite value")
        pre = Preprocess(None if mean is None else torch.from_numpy(np.asarray(mean, np.float32)),
                         None if scale is None else float(scale), width=self.d).to(self.device)
        self._launch_on(pre.apply_to(rows), lr)
        return self.drain()

    def _launch(self, batch: np.ndarray, lr: float) -> None:
        self._launch_on(self._to_device(batch), lr)

    def _launch_on(self, x: torch.Tensor, lr: float) -> None:
        if self._pending is not None:
            raise RuntimeError("a step's results were not collected (call drain())")
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        residual, (atoms, values), x_hat = self.model(x)
        loss = (x - x_hat).square().mean()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip if self.clip > 0 else math.inf)
        # Statistics before the update: the dictionary is the one this step used.
        sums = self._stats(x, x_hat.detach(), atoms, values.detach(), loss.detach())
        packed = torch.cat([torch.stack([loss.detach().double(), grad_norm.detach().double()]), sums])
        finite = torch.isfinite(packed[0]) & torch.isfinite(packed[1])
        if self.fused:
            # The device skips a non-finite update itself (no host read): Adam's found_inf.
            self.opt.found_inf = (~finite).float()
            self.opt.step()
        elif bool(finite):  # a device without the fused Adam: the host decides now
            self.opt.step()
        if self.device.type == "cuda":
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            host.copy_(packed, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host, event = packed, None
        self._pending = (host, event, x.shape[0], x.numel())

    def _collect(self, pending) -> Tuple[List[float], bool, float]:
        host, event, n, entries = pending
        if event is not None:
            event.synchronize()
        read = host.tolist()  # the step's one read-back
        loss_v, norm_v, sums = read[0], read[1], read[2:]
        finite = math.isfinite(loss_v) and math.isfinite(norm_v)
        if finite:
            self.steps += 1
        named = {"loss": loss_v, "rows": float(n), "entries": float(entries)}
        stats = [named[name] if name in named else sums.pop(0) for name in mpsae.STEP_STATISTICS] + sums
        return stats, finite, norm_v

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        """The batch on the device in float32. On CUDA: copied from pinned memory on a stream of
        its own (so the copy runs while the previous step's backward still computes: with
        :meth:`step_late` the host is back before the device is done), the compute stream waiting
        for it on the device, not on the host."""
        x = torch.from_numpy(batch.reshape(-1, self.d))
        if self.input_dtype is not None:
            x = x.to(self.input_dtype)
        if self.device.type != "cuda":
            return x.to(self.device).float()
        if self._copies is None:
            self._copies = torch.cuda.Stream(self.device)
        pinned = x.pin_memory()
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._copies):
            on_device = pinned.to(self.device, non_blocking=True)
        compute.wait_stream(self._copies)
        on_device.record_stream(compute)  # its memory is not reused before the step is done
        return on_device.float()

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
    def _stats(self, x, x_hat, atoms, values, loss) -> torch.Tensor:
        """The step's statistics on the device (no host round trip), by the library's names
        (:data:`mpsae.STEP_STATISTICS`) less ``loss``, ``rows`` and ``entries`` (known on the
        host), then ``Σ‖r_t‖²`` for t = 1..k, the per-dimension sums of the rows, then
        alive_1..c: the sums the library's trainer turns into R2, L0, the explained variance per
        step and the dead ratio (``Trainer::record_external``). Sums in float64 of the rows and
        codes; the atoms' norms in float32 (no float64 copy of the dictionary)."""
        with torch.no_grad():
            x64 = x.double()
            c = self.c
            keys, z = summed_codes(atoms, values, c)
            alive = torch.zeros(c, dtype=torch.float64, device=x.device)
            alive.scatter_reduce_(0, keys.clamp(min=0) % c, (z > 0).double(), reduce="amax")
            # Residual energy after each step: ‖r_t‖² = ‖r_{t-1}‖² - 2v² + v²‖Dm_j‖² (v = r_{t-1}·Dm_j).
            # The dictionary of this step (W was normalised by the forward; no second in-place
            # normalisation here).
            d_ = self.model.dictionary
            norms_sq = (d_._weights.detach() * torch.exp(d_.multiplier.detach())).square().sum(1).double()[atoms]
            v = values.double()
            drop = (v * v * (2.0 - norms_sq)).sum(0)
            sum_x2 = x64.square().sum()
            energy = sum_x2 - torch.cumsum(drop, 0)
            named = {
                "sum_x": x64.sum(), "sum_x2": sum_x2,
                "sum_error2": (x64 - x_hat.double()).square().sum(),
                "nonzero_codes": (z.abs() >= 1e-6).sum().double(), "sum_codes2": z.square().sum(),
            }
            head = torch.stack([named[name] for name in mpsae.STEP_STATISTICS if name in named])
            return torch.cat([head, energy, x64.sum(0), alive])


def train(data: Any, nb_concepts: Optional[int] = None, k: Optional[int] = None, *, device=None,
          input_dtype: Optional[torch.dtype] = None, strategy: str = "auto", deterministic: bool = False,
          capturable: bool = False, **kw: Any):
    """:func:`mpsae.train` (same arguments, run folders, resume policy and returns) with each step
    on ``device`` through the device path.

    Parameters
    ----------
    device : str, torch.device or None
        Default: ``"cuda"`` when available, else ``"cpu"``.
    input_dtype : torch.dtype or None
        Dtype the batches travel to the device in (e.g. ``torch.bfloat16``); pursued in float32.
    strategy : "auto", "gram" or "plain"
    deterministic : bool
        Bitwise repeatable gradients (a run trained twice gives the same dictionary on any
        device).
    capturable : bool
        No host round trip in a step's launch (the pursuit re-checks every near tie among all
        atoms instead of reading back whether its buffer sufficed).
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
    stepper = Stepper(device, input_dtype, strategy, deterministic, capturable)
    return mpsae.train(data, nb_concepts, k, stepper=stepper, **kw)
