"""One autograd Function for the matching pursuit of :class:`mpsae.torch.MpSAE`, over two
op-sets named after the engine's ``Backend`` operations (``pursuit``, ``decode``,
``backward``):

- :class:`EngineOps`: the Rust engine (CPU float32 tensors, through numpy, no copy);
- :class:`TorchOps`: torch operations on any device (:mod:`mpsae.torch_pursuit`).

:class:`Pursuit` runs either: the forward pursues and decodes without autograd, the backward is
the exact sparse one (``O(n·k·d)``: only the picked atoms get a gradient). What the pursuit did
(the op-set, the strategy, the tile rows, the re-checked picks) is written into the
:class:`PursuitStats` passed with the call, never into a module global.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch

from . import _mpsae
from . import torch_pursuit

__all__ = ["Pursuit", "PursuitStats", "EngineOps", "TorchOps", "engine_can_run"]


class PursuitStats:
    """What one pursuit did: ``path`` ("engine" or "torch"), ``strategy``, ``tile_rows``,
    ``rechecks`` (near ties re-checked with exact products; a 0-d tensor in capturable mode) and
    ``recheck_rows`` (the rows per step the re-check buffer held)."""

    def __init__(self) -> None:
        self.path = "none"
        self.strategy = "none"
        self.tile_rows = 0
        self.rechecks = 0
        self.recheck_rows = 0

    def __repr__(self) -> str:
        return (f"PursuitStats(path={self.path!r}, strategy={self.strategy!r}, tile_rows={self.tile_rows}, "
                f"rechecks={self.rechecks})")


def engine_can_run(x: torch.Tensor, dictionary: torch.Tensor, k) -> bool:
    """Whether the Rust engine can run this pursuit (CPU float32 rows, an int k)."""
    return (isinstance(k, int) and x.device.type == "cpu" and dictionary.device.type == "cpu"
            and x.dtype == torch.float32 and dictionary.dtype == torch.float32 and x.dim() == 2)


class EngineOps:
    """The engine's operations on CPU float32 tensors."""

    name = "engine"

    def pursuit(self, x: torch.Tensor, enc: torch.Tensor, k: int, stats: PursuitStats
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        atoms, values, residual = _mpsae.pursuit(x.contiguous().numpy(), enc.contiguous().numpy(), k)
        stats.strategy = "engine"
        return torch.from_numpy(atoms), torch.from_numpy(values), torch.from_numpy(residual)

    def decode(self, dec: torch.Tensor, atoms: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(_mpsae.decode(dec.contiguous().numpy(), atoms.numpy(), values.numpy()))

    def dense(self, atoms: torch.Tensor, values: torch.Tensor, c: int) -> torch.Tensor:
        codes = torch.zeros(atoms.shape[0], c, dtype=torch.float32)
        picked = atoms >= 0
        codes.index_put_((torch.nonzero(picked)[:, 0], atoms[picked]), values[picked], accumulate=True)
        return codes

    def backward(self, x, residual, dec, mask, atoms, values, g_x_hat, g_residual, g_values, input_gradient):
        if g_x_hat is None:
            g_x_hat = torch.zeros_like(x)
        g_dict, g_x = _mpsae.backward(
            x.contiguous().numpy(), dec.contiguous().numpy(), None if mask is None else mask.contiguous().numpy(),
            atoms.numpy(), values.numpy(), g_x_hat.contiguous().float().numpy(),
            None if g_residual is None else g_residual.contiguous().float().numpy(),
            None if g_values is None else g_values.contiguous().float().numpy(), input_gradient)
        return torch.from_numpy(g_dict), (torch.from_numpy(g_x) if g_x is not None else None)


def _no_autocast(device: torch.device):
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class TorchOps:
    """Torch operations on any device.

    Parameters
    ----------
    strategy : "auto", "gram" or "plain"
    gram : tensor or None
        A kept Gram matrix of the encode dictionary (:func:`mpsae.torch_pursuit.gram_matrix`).
    plans : dict or None
        The caller's plans by shape (:class:`mpsae.torch_pursuit.Plan`, made on first use and
        kept, so the strategy and tiles are decided once per run and shape).
    deterministic : bool
        The backward's dictionary gradient summed in a fixed order (bitwise repeatable on any
        device).
    capturable : bool
        No host round trip in the forward (CUDA graphs, ``torch.compile(fullgraph=True)``).
    """

    name = "torch"

    def __init__(self, strategy: str = "auto", gram: Optional[torch.Tensor] = None, plans: Optional[dict] = None,
                 deterministic: bool = False, capturable: bool = False) -> None:
        self.strategy = strategy
        self.gram = gram
        self.plans = {} if plans is None else plans
        self.deterministic = deterministic
        self.capturable = capturable

    def plan(self, x, enc, k) -> torch_pursuit.Plan:
        """The kept plan of this shape (made on first use)."""
        key = (tuple(x.shape), tuple(enc.shape), k, x.dtype, x.device, self.strategy, self.gram is not None,
               torch_pursuit.matmul_precision(x.device))
        plan = self.plans.get(key)
        if plan is None:
            n, d = x.shape
            plan = torch_pursuit.make_plan(n, enc.shape[0], d, k, x.device, x.dtype, self.strategy,
                                           gram_held=self.gram is not None)
            self.plans[key] = plan
        return plan

    def pursuit(self, x, enc, k, stats):
        with _no_autocast(x.device):
            return torch_pursuit.pursuit(x, enc, k, self.strategy, self.gram, stats=stats, plan=self.plan(x, enc, k),
                                         capturable=self.capturable)

    def decode(self, dec, atoms, values):
        with _no_autocast(dec.device):
            return torch_pursuit.decode(dec, atoms, values)

    def dense(self, atoms, values, c):
        return torch_pursuit.dense_codes(atoms, values, c)

    def backward(self, x, residual, dec, mask, atoms, values, g_x_hat, g_residual, g_values, input_gradient):
        with _no_autocast(residual.device):
            return torch_pursuit.backward(residual, dec, mask, atoms, values, g_x_hat, g_residual, g_values,
                                          input_gradient, deterministic=self.deterministic)


class Pursuit(torch.autograd.Function):
    """``apply(x, dictionary, mask, k, dense, ops, stats)`` -> ``(residual, codes, x_hat, atoms)``.

    ``x`` is ``n x d``, ``dictionary`` ``c x d``, ``mask`` the dropout mask over atoms (or None:
    the encode dictionary is ``dictionary · mask``); codes are dense ``n x c`` when ``dense``, else
    the ``n x k`` values in pursuit order; ``ops`` an :class:`EngineOps` or :class:`TorchOps`;
    ``stats`` a :class:`PursuitStats` filled in by the call.
    """

    @staticmethod
    def forward(ctx, x, dictionary, mask, k, dense, ops, stats):
        xs = x.detach()
        dec = dictionary.detach()
        enc = dec if mask is None else dec * mask.unsqueeze(1)
        stats.path = ops.name
        atoms, values, residual = ops.pursuit(xs, enc, k, stats)
        x_hat = ops.decode(dec, atoms, values)
        codes = ops.dense(atoms, values, dec.shape[0]) if dense else values
        empty = torch.empty(0, device=x.device)
        ctx.save_for_backward(xs, residual, dec, mask if mask is not None else empty, atoms, values)
        ctx.has_mask = mask is not None
        ctx.dense = dense
        ctx.ops = ops
        ctx.mark_non_differentiable(atoms)
        # Outputs the loss does not use get no gradient tensor (a zero n x c one otherwise).
        ctx.set_materialize_grads(False)
        return residual, codes, x_hat, atoms

    @staticmethod
    def backward(ctx, g_residual, g_codes, g_x_hat, _g_atoms):
        xs, residual, dec, mask, atoms, values = ctx.saved_tensors
        g_values = None
        if g_codes is not None:
            if ctx.dense:
                g_values = torch.gather(g_codes, 1, atoms.clamp(min=0)) * (atoms >= 0)
            else:
                g_values = g_codes
        g_dict, g_x = ctx.ops.backward(xs, residual, dec, mask if ctx.has_mask else None, atoms, values, g_x_hat,
                                       g_residual, g_values, ctx.needs_input_grad[0])
        return g_x, g_dict, None, None, None, None, None
