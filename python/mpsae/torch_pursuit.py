"""The device path of :class:`mpsae.torch.MpSAE` (the torch op-set of
:class:`mpsae.pursuit.Pursuit`): the engine's matching pursuit and its exact sparse backward in
torch operations, so they run on any torch device (CUDA, ROCm, MPS, CPU).

Forward, without autograd: the batch's correlations ``x·Dmᵀ`` once, then per step either an
update through the Gram matrix of the encode dictionary (``a -= v·G[j]``, when ``n·k`` is large
next to ``c``) or a fresh product ``r·Dmᵀ``, chosen by :func:`choose_strategy`; rows go in tiles
so the correlations (and the Gram matrix) fit a memory budget (:func:`memory_budget`). The
semantics are the engine's (``crates/mpsae-kernels/src/pursuit.rs``): signed argmax, first
index on ties, NaN never picked, repeats accumulate; each value is the exact ``r·Dm_j`` of the
gathered atom, and whenever the runner-up correlation is within the correlations' error bound of
the best, every atom that close is re-checked with exact dot products, so an approximate
correlation (a Gram update, a TF32 product) never decides a pick.

Backward: the engine's sparse backward (``crates/mpsae-kernels/src/backward.rs``) going back
over the steps, ``O(n·k·d)``: only the picked atoms receive a gradient, and nothing ``n x c`` is
kept between forward and backward (the saved tensors are the final residual, the picks and the
dictionaries). With ``Dm = D·mask``::

    gv   = g_x_hat·D_j - gr·Dm_j + g_v[t]        (gr = dL/dr_t, starts at dL/dresidual)
    dD_j  += v·g_x_hat
    dDm_j += gv·r_{t-1} - v·gr
    gr    += gv·Dm_j                              (r_{t-1} = r_t + v·Dm_j)

and ``dL/dx = gr``, ``dL/dD = dD + mask·dDm``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, Optional, Tuple

import torch

__all__ = ["pursuit", "decode", "matmul_precision", "dense_codes", "summed_codes", "choose_strategy", "memory_budget",
           "make_plan", "Plan", "gram_matrix", "backward", "cost_weight", "COST_WEIGHTS", "STRATEGIES"]

#: Ways to get each step's correlations: "auto" (cost rule), "gram", "plain".
STRATEGIES = ("auto", "gram", "plain")


def memory_budget(device: torch.device) -> int:
    """Bytes the pursuit may use for correlations and the Gram matrix: ``MPSAE_TORCH_MEMORY``
    (bytes) when set, else half the free memory of a CUDA device, else 2 GiB."""
    env = os.environ.get("MPSAE_TORCH_MEMORY")
    if env:
        return int(env)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free) // 2
    return 2 << 30


def max_tile_rows(device: torch.device) -> int:
    """Most rows in one tile: on a CPU 1024 (a tile's correlations and gathered Gram rows then
    take 2·1024·c floats, 128 MiB at c = 16384, instead of growing with the batch), unbounded on
    accelerators (one tile fills the device within its budget)."""
    return 1024 if device.type == "cpu" else 1 << 62


#: What one Gram update of a correlation entry (a gathered Gram row and a multiply-add over
#: ``n x c``: memory-bound) costs, in multiply-adds of a dense product in the same precision
#: (compute-bound), per device class: the weight of :func:`choose_strategy`. CPU entries measured
#: with ``python bench/cost_weights.py --device cpu`` (n 1024, c 8192, d 576, best of 5; two
#: runs on 2026-12-07 gave 35.1 and 34.7 for float32, 39.3 and 43.4 for bf16) on the 2-vCPU AMD
#: EPYC Zen 4 machine of BENCHMARKS.md. The CUDA entries are estimates from an H100 SXM's data
#: sheet, not measured (no GPU was lent): 12 bytes an entry at 3.35 TB/s against a multiply-add
#: at 67 (float32), 495 (TF32) and 990 (bf16) dense TFLOP/s; run the command on a GPU to replace
#: them. Where the weight exceeds ``d`` the plain products win at any ``n``.
COST_WEIGHTS = {
    "cpu/ieee": 35.0,
    "cpu/tf32": 35.0,  # no TF32 on a CPU: its float32 products
    "cpu/bf16": 39.0,
    "cuda/ieee": 120.0,
    "cuda/tf32": 890.0,
    "cuda/bf16": 1770.0,
}


def cost_weight(device: torch.device, precision: str) -> float:
    """The weight of :data:`COST_WEIGHTS` for this device and product precision (other devices:
    CUDA's)."""
    kind = device.type if device.type in ("cpu", "cuda") else "cuda"
    return COST_WEIGHTS.get(f"{kind}/{precision}", COST_WEIGHTS[f"{kind}/ieee"])


def choose_strategy(n: int, c: int, d: int, k: int, budget: int, itemsize: int = 4, weight: float = 8.0) -> str:
    """"gram" when the Gram matrix (``c·c·d`` multiply-adds once, ``c²`` entries held) and its
    updates (``(k-1)·n·c`` entries, each worth ``weight`` multiply-adds: :data:`COST_WEIGHTS`)
    cost less than the per-step products they replace (``(k-1)·n·c·d``) and the matrix fits
    half the budget; else "plain"."""
    if k <= 1:
        return "plain"
    gram_cost = c * c * d + (k - 1) * n * c * weight
    plain_cost = (k - 1) * n * c * d
    fits = c * c * itemsize <= budget // 2
    return "gram" if fits and gram_cost < plain_cost else "plain"


_PRECISIONS = {"ieee": "ieee", "highest": "ieee", "tf32": "tf32", "high": "tf32", "bf16": "bf16", "medium": "bf16"}


def _setting(read) -> Optional[str]:
    """One precision setting, None when unset (or unreadable: torch raises when the legacy and the
    new APIs were mixed)."""
    try:
        value = read()
    except (RuntimeError, AttributeError):
        return None
    return _PRECISIONS.get(str(value).lower()) if value not in (None, "none") else None


def matmul_precision(device: torch.device) -> str:
    """How float32 products run on ``device``: ``"ieee"``, ``"tf32"`` or ``"bf16"``. Reads torch's
    current API (``torch.backends.cuda.matmul.fp32_precision``, ``torch.backends.mkldnn.matmul
    .fp32_precision``, then ``torch.backends.fp32_precision``) and, where it is unset, the legacy
    one (``torch.get_float32_matmul_precision``, ``allow_tf32``); never raises (torch does when both
    APIs were used)."""
    if _EMULATED["precision"] is not None:
        return _EMULATED["precision"]
    b = torch.backends
    if device.type == "cuda":
        backend = getattr(getattr(b, "cuda", None), "matmul", None)
    elif device.type == "cpu":
        backend = getattr(getattr(b, "mkldnn", None), "matmul", None)
    else:
        backend = None
    for read in (lambda: backend.fp32_precision, lambda: b.fp32_precision):
        found = _setting(read)
        if found is not None:
            return found
    if device.type == "cpu":
        return "ieee"  # the legacy settings are about CUDA products
    legacy = _setting(torch.get_float32_matmul_precision) or "ieee"
    if legacy == "ieee" and _setting(lambda: "tf32" if b.cuda.matmul.allow_tf32 else "ieee") == "tf32":
        return "tf32"
    return legacy


#: Unit roundoff of the operands of a float32 product in each precision: TF32 keeps 10 mantissa
#: bits (u = 2^-11), bf16 7 (u = 2^-8); float32's own operands enter exactly.
_OPERAND_UNIT = {"ieee": 0.0, "tf32": 2.0 ** -11, "bf16": 2.0 ** -8}

#: Set by :func:`emulate_products` (tests): the precision whose rounding the products emulate.
_EMULATED: Dict[str, Optional[str]] = {"precision": None}


@contextlib.contextmanager
def emulate_products(precision: str):
    """Within the block, the pursuit's products round their operands as ``precision`` ("tf32",
    "bf16") would, on any device: the reduced-precision paths tested where the hardware (a GPU's
    TF32) is absent."""
    if precision not in ("tf32", "bf16"):
        raise ValueError(f"precision '{precision}': emulate tf32 or bf16")
    before = _EMULATED["precision"]
    _EMULATED["precision"] = precision
    try:
        yield
    finally:
        _EMULATED["precision"] = before


def _round_mantissa(t: torch.Tensor, bits: int) -> torch.Tensor:
    """float32 ``t`` rounded to ``bits`` explicit mantissa bits (to nearest, ties to even)."""
    shift = 23 - bits
    i = t.contiguous().view(torch.int32)
    bias = ((i >> shift) & 1) + ((1 << (shift - 1)) - 1)
    return ((i + bias) >> shift << shift).view(torch.float32)


def _products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T``: the pursuit's dense products (under :func:`emulate_products`, of rounded
    operands)."""
    emulated = _EMULATED["precision"]
    if emulated is not None and a.dtype == torch.float32:
        bits = 10 if emulated == "tf32" else 7
        return _round_mantissa(a, bits) @ _round_mantissa(b, bits).T
    return a @ b.T


def product_bound(d: int, dtype: torch.dtype, precision: str) -> float:
    """``γ`` with ``|computed x·y - x·y| <= γ‖x‖‖y‖`` for a product of length ``d`` whose operands
    are rounded as ``precision`` says (unit roundoff ``u``) and summed in float32:
    ``(1 + δ_x)(1 + δ_y) - 1 <= 2u + u²`` for each term (Cauchy-Schwarz over the terms), plus the
    float32 summation of ``d`` terms, ``(d + 2)·2^-24·(1 + u)²`` (the margin of 2 covers the
    rounding of the result). In float32 (``u = 0``) it is the former ``(d + 2)·eps`` bound."""
    eps = torch.finfo(dtype).eps
    u = _OPERAND_UNIT.get(precision, 0.0) if dtype == torch.float32 else 0.0
    if u == 0.0:
        return (d + 2) * eps
    return 2 * u + u * u + (d + 2) * 2.0 ** -24 * (1 + u) ** 2


class Plan:
    """How the pursuit of one shape runs on one device, decided once (by :func:`make_plan`) and
    kept by the module for every batch of that shape, so the strategy and the tiles never flip
    mid-run when the device's free memory changes.

    Attributes
    ----------
    strategy : "gram" or "plain"
    tile_rows : int
        Rows per tile (the correlations of a tile fit the budget).
    recheck_rows : int
        Rows per tile and step whose near tie is re-checked with exact products (a fixed-size
        buffer: no host round trip decides which). After each pursuit it follows the most near
        ties seen in one step (a tile that missed a near tie is pursued again with every row and
        atom re-checkable, so the picks never depend on it).
    budget : int
        The memory budget the plan was made with (bytes).
    precision : "ieee", "tf32" or "bf16"
        How the float32 products run (:func:`matmul_precision`, read when the plan is made).
    candidates : int or None
        Atoms per re-checked row whose exact products are taken (its best by the approximate
        correlations; None: all atoms).
    """

    def __init__(self, strategy: str, tile_rows: int, recheck_rows: int, budget: int, precision: str = "ieee",
                 candidates: Optional[int] = None) -> None:
        self.strategy, self.tile_rows, self.recheck_rows, self.budget = strategy, tile_rows, recheck_rows, budget
        self.precision, self.candidates = precision, candidates

    def __repr__(self) -> str:
        return (f"Plan(strategy={self.strategy!r}, tile_rows={self.tile_rows}, recheck_rows={self.recheck_rows}, "
                f"budget={self.budget}, precision={self.precision!r}, candidates={self.candidates})")


def make_plan(n: int, c: int, d: int, k: int, device: torch.device, dtype: torch.dtype, strategy: str = "auto",
              budget: Optional[int] = None, gram_held: bool = False) -> Plan:
    """The :class:`Plan` of a pursuit of ``n`` rows over ``c`` atoms of width ``d``, ``k`` steps.

    The first re-check buffer holds 1/4 of a tile's rows (float32 products re-check 2-9 % of the
    picks on real rows) or 1/2 under reduced-precision products, each row against its 4 (or 8)
    best atoms; :func:`pursuit` resizes the buffer to what the steps needed.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"invalid strategy '{strategy}': use one of {', '.join(STRATEGIES)}")
    item = torch.finfo(dtype).bits // 8
    budget = memory_budget(device) if budget is None else int(budget)
    precision = matmul_precision(device) if dtype == torch.float32 else "ieee"
    if strategy == "auto":
        strategy = choose_strategy(n, c, d, k, budget, item, cost_weight(device, precision))
    held = c * c * item if strategy == "gram" and not gram_held else 0
    # Per tile row: the correlations, a gathered Gram row or the next product, the exact products
    # of a re-checked row (float64 at most), and max/masked-max scratch.
    per_row = 5 * c * item
    tile = max(1, min(max(n, 1), max_tile_rows(device), (max(budget - held, per_row)) // per_row))
    share = 2 if precision != "ieee" else 4
    candidates = 8 if precision != "ieee" else 4
    return Plan(strategy, tile, max(1, min(tile, -(-tile // share))), budget, precision,
                candidates if c > candidates + 1 else None)


def _no_nan(a: torch.Tensor) -> torch.Tensor:
    return a.masked_fill_(torch.isnan(a), -float("inf"))


def _tile_pursuit(x: torch.Tensor, dm: torch.Tensor, dm_exact: torch.Tensor, gram: Optional[torch.Tensor], k: int,
                  precision: str, atom_norm: torch.Tensor, gram_precision: str, recheck_rows: int,
                  candidates: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pursuit of one tile of rows: ``(atoms, values, residual, counts)``, ``counts`` a device
    tensor ``[near ties, most near ties in one step, near ties missed]``. Every shape is fixed
    and nothing is read back to the host: the rows re-checked in a step are ``recheck_rows`` near
    ones (a top-k of a 0/1 flag), each against its ``candidates`` best atoms (None: all atoms);
    a near tie left out of the buffer, or with more atoms that close, is counted as missed and
    the caller pursues the tile again with every row and atom re-checkable."""
    n, d = x.shape
    eps = torch.finfo(x.dtype).eps
    gamma = product_bound(d, x.dtype, precision)
    gamma_gram = product_bound(d, x.dtype, gram_precision)
    r = x.clone()
    a = _no_nan(_products(x, dm))
    x_norm = torch.linalg.vector_norm(x, dim=1)
    err = gamma * x_norm * atom_norm  # bound on |a - r·Dm| entry by entry
    atoms = torch.empty(n, k, dtype=torch.int64, device=x.device)
    values = torch.empty(n, k, dtype=x.dtype, device=x.device)
    near_total = torch.zeros((), dtype=torch.int64, device=x.device)
    missed_total = torch.zeros((), dtype=torch.int64, device=x.device)
    near_most = torch.zeros((), dtype=torch.int64, device=x.device)
    c = dm.shape[0]
    m = max(1, min(n, recheck_rows))
    rows_of_g = torch.empty(n, c, dtype=x.dtype, device=x.device) if gram is not None and k > 1 else None
    for t in range(k):
        if c > 1:
            # The best and the runner-up by a max and a masked max: the first index on ties, as
            # the engine (a top-2 does not promise which tied index comes first).
            best, j = a.max(dim=1)
            a.scatter_(1, j.unsqueeze(1), -float("inf"))
            second = a.max(dim=1).values
            a.scatter_(1, j.unsqueeze(1), best.unsqueeze(1))
        else:
            best, j = a[:, 0], torch.zeros(n, dtype=torch.int64, device=x.device)
            second = torch.full_like(best, -float("inf"))
        guard = 2 * err
        # Near ties (and rows with no number at all): the exact pick among the close atoms, for
        # the first m near rows (a fixed-size buffer: no nonzero, no host round trip).
        near = ~(second < best - guard)
        count = near.sum()
        near_total += count
        near_most = torch.maximum(near_most, count)
        rows = torch.topk(near.to(torch.int8), m, sorted=False).indices if m < n else \
            torch.arange(n, device=x.device)
        floor = (best - guard).index_select(0, rows).unsqueeze(1)
        a_rows = a.index_select(0, rows)
        near_rows = near.index_select(0, rows)
        if candidates is None:
            # Every atom of a re-checked row: exact products with the whole dictionary.
            exact = r.index_select(0, rows).to(dm_exact.dtype) @ dm_exact.T
            exact = exact.masked_fill_(~(a_rows >= floor) | torch.isnan(exact), -float("inf"))
            found = torch.argmax(exact, dim=1)
            missed = count - near_rows.sum()
        else:
            # The row's `candidates` best atoms only (exact products of m x candidates x d);
            # a row with one more atom that close is missed (its tile is pursued again).
            top_v, top_i = torch.topk(a_rows, candidates + 1, dim=1)
            close = top_v >= floor
            cand, order = torch.sort(top_i[:, :candidates], dim=1)  # by index: the first on exact ties
            ok = torch.gather(close[:, :candidates], 1, order)
            exact = torch.einsum("md,mcd->mc", r.index_select(0, rows).to(dm_exact.dtype), dm_exact[cand])
            exact = exact.masked_fill_(~ok | torch.isnan(exact), -float("inf"))
            found = torch.gather(cand, 1, torch.argmax(exact, dim=1, keepdim=True)).squeeze(1)
            missed = count - near_rows.sum() + (near_rows & close[:, candidates]).sum()
        missed_total += missed
        picked = torch.where(near_rows, found, j.index_select(0, rows))
        j = j.index_copy(0, rows, picked)
        dj = dm.index_select(0, j)
        v = (r * dj).sum(dim=1)
        r.sub_(v.unsqueeze(1) * dj)
        atoms[:, t] = j
        values[:, t] = v
        if t + 1 < k:
            if gram is not None:
                torch.index_select(gram, 0, j, out=rows_of_g)
                a.addcmul_(rows_of_g, v.unsqueeze(1), value=-1.0)
                # The Gram entries' product error, and the subtraction's rounding.
                err = err + v.abs() * gamma_gram * atom_norm * atom_norm \
                    + 2 * eps * (x_norm * atom_norm + v.abs() * atom_norm * atom_norm)
            else:
                a = _no_nan(_products(r, dm))
                err = gamma * torch.linalg.vector_norm(r, dim=1) * atom_norm
    return atoms, values, r, torch.stack([near_total, near_most, missed_total])


def pursuit(x: torch.Tensor, dm: torch.Tensor, k: int, strategy: str = "auto",
            gram: Optional[torch.Tensor] = None, budget: Optional[int] = None, stats=None,
            plan: Optional[Plan] = None, capturable: bool = False
            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``k`` pursuit steps of the rows ``x`` (``n x d``) over the encode dictionary ``dm``
    (``c x d``), without autograd: ``(atoms int64 n x k, values n x k, residual n x d)``.

    Parameters
    ----------
    x, dm : tensors of the same device and floating dtype
    k : int
    strategy : "auto", "gram" or "plain"
        Used when no ``plan`` is given.
    gram : tensor or None
        ``dm @ dm.T`` with no NaN or infinite entry (:func:`gram_matrix`), when the caller keeps
        it (an eval-mode dictionary); computed here otherwise.
    budget : int or None
        Bytes for the correlations and the Gram matrix (default :func:`memory_budget`); used
        when no ``plan`` is given.
    stats : mpsae.pursuit.PursuitStats or None
        Filled in with what the pursuit did (strategy, tile rows, re-checked picks).
    plan : Plan or None
        The shape's plan (:func:`make_plan`), kept by the caller between batches; its re-check
        buffer resized here to what the steps needed.
    capturable : bool
        No host round trip at all (for CUDA graphs and ``torch.compile(fullgraph=True)``): every
        row and atom of a tile is re-checkable, the plan is not resized, ``stats.rechecks`` stays
        a tensor. Otherwise one read-back per call checks that no near tie was missed (a tile
        that missed one is pursued again with every row and atom re-checkable).
    """
    n, d = x.shape
    c = dm.shape[0]
    with torch.no_grad():
        if plan is None:
            plan = make_plan(n, c, d, k, x.device, x.dtype, strategy, budget, gram is not None)
        precision = plan.precision if x.dtype == torch.float32 else "ieee"
        # A Gram matrix made here is exact to float32 whatever the products' precision (float64
        # products when they would round their operands: c²·d once, against k·n·c updates that
        # would otherwise carry the products' error); one the caller kept has the products'.
        gram_precision = precision
        if plan.strategy == "gram" and gram is None and k > 1:
            gram = gram_matrix(dm, precision)
            gram_precision = "ieee"
        if plan.strategy != "gram":
            gram = None
        # Re-checks in float64 when the products round their operands (a float64 product never
        # uses TF32 or bf16, whatever torch's setting), else in the products' own dtype.
        exact_dtype = torch.float64 if precision != "ieee" and x.dtype == torch.float32 else x.dtype
        dm_exact = dm.to(exact_dtype)
        norms = torch.linalg.vector_norm(dm, dim=1)
        # An atom with NaN never gets picked: no bound from it.
        finite = torch.where(torch.isfinite(norms), norms, torch.zeros_like(norms))
        atom_norm = finite.max() if c else torch.zeros((), dtype=x.dtype, device=x.device)
        atoms = torch.empty(n, k, dtype=torch.int64, device=x.device)
        values = torch.empty(n, k, dtype=x.dtype, device=x.device)
        residual = torch.empty_like(x)
        tile = plan.tile_rows
        # Capturable: every row and atom re-checkable (nothing can be pursued again).
        m = tile if capturable else plan.recheck_rows
        candidates = None if capturable else plan.candidates
        counts = []
        for s in range(0, n, tile):
            e = min(n, s + tile)
            a, v, r, cnt = _tile_pursuit(x[s:e], dm, dm_exact, gram, k, precision, atom_norm, gram_precision, m,
                                         candidates)
            atoms[s:e], values[s:e], residual[s:e] = a, v, r
            counts.append(cnt)
        counted = torch.stack(counts) if counts else torch.zeros(1, 3, dtype=torch.int64, device=x.device)
        rechecks = counted[:, 0].sum()
        if not capturable and counts:
            # The one read-back: was every near tie re-checked among enough atoms?
            seen = counted.tolist()
            for i, (_, _, missed) in enumerate(seen):
                if missed:
                    s, e = i * tile, min(n, (i + 1) * tile)
                    a, v, r, _ = _tile_pursuit(x[s:e], dm, dm_exact, gram, k, precision, atom_norm,
                                               gram_precision, e - s, None)
                    atoms[s:e], values[s:e], residual[s:e] = a, v, r
            most = max(p[1] for p in seen)
            rechecks = sum(p[0] for p in seen)
            # The next batch's buffer: this one's most near ties in a step and a margin; grown at
            # once, shrunk halfway (a tile pursued again costs more than a few spare rows).
            want = min(tile, most + most // 4 + 16)
            plan.recheck_rows = want if want > plan.recheck_rows else (plan.recheck_rows + want) // 2
    if stats is not None:
        stats.strategy, stats.tile_rows, stats.rechecks = plan.strategy, tile, rechecks
        stats.recheck_rows = m
    return atoms, values, residual


def gram_matrix(dm: torch.Tensor, precision: str = "ieee") -> torch.Tensor:
    """``dm @ dm.T`` for the Gram updates, exact to the dictionary's dtype (float64 products when
    the float32 products would round their operands), NaN and infinite entries set to 0: an atom
    with NaN then keeps correlations of -inf from the first step (never picked, as in the
    engine) and the others are unaffected. No host round trip."""
    if precision != "ieee" and dm.dtype == torch.float32:
        g = (dm.double() @ dm.double().T).to(dm.dtype)
    else:
        g = _products(dm, dm)
    return torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)


def decode(dictionary: torch.Tensor, atoms: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``x_hat = Σ_t v_t·D_{j_t}`` (``n x d``), one gathered ``n x d`` block per step."""
    n, k = atoms.shape
    x_hat = torch.zeros(n, dictionary.shape[1], dtype=dictionary.dtype, device=dictionary.device)
    for t in range(k):
        x_hat.add_(values[:, t:t + 1] * dictionary[atoms[:, t]])
    return x_hat


def summed_codes(atoms: torch.Tensor, values: torch.Tensor, c: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The non-empty entries of the dense codes, without an ``n x c`` tensor and with fixed shapes
    (no host round trip): ``(keys, sums)``, each of ``n·k`` slots; a slot holds a key
    ``row·c + atom`` (ascending) and the float64 sum of that row's picks of that atom, or is
    unused (key -1, sum 0) where a row picked an atom more than once."""
    n, k = atoms.shape
    keys = (torch.arange(n, device=atoms.device).repeat_interleave(k) * c + atoms.reshape(-1))
    keys, order = torch.sort(keys, stable=True)
    start = torch.ones_like(keys, dtype=torch.bool)
    start[1:] = keys[1:] != keys[:-1]
    slot = torch.cumsum(start, 0) - 1  # the slot of each pick: its key's rank
    sums = torch.zeros(n * k, dtype=torch.float64, device=atoms.device)
    _segment_sum(sums, slot, values.reshape(-1).double()[order])
    slot_keys = torch.full((n * k,), -1, dtype=keys.dtype, device=atoms.device)
    slot_keys.scatter_(0, slot, keys)
    return slot_keys, sums


def dense_codes(atoms: torch.Tensor, values: torch.Tensor, c: int) -> torch.Tensor:
    """The ``n x c`` codes (repeated picks summed) from sparse ones."""
    n, k = atoms.shape
    codes = torch.zeros(n, c, dtype=values.dtype, device=values.device)
    rows = torch.arange(n, device=atoms.device).repeat_interleave(k)
    codes.index_put_((rows, atoms.reshape(-1)), values.reshape(-1), accumulate=True)
    return codes


def backward(residual, dictionary, mask, atoms, values, g_x_hat, g_residual, g_values, input_gradient=True,
             deterministic=False):
    """The exact sparse backward (see the module docs): ``(dL/dD, dL/dx or None)``.

    With ``deterministic`` (or under ``torch.use_deterministic_algorithms(True)``) the rows'
    contributions to the dictionary's gradient are kept for all ``k`` steps and summed per atom
    in one sorted segment sum (torch's ``index_put_`` with ``accumulate=True`` in its
    deterministic form, which sorts the atom keys and adds each atom's rows in a fixed order):
    bitwise the same gradient run to run on any device, in two scatter launches instead of
    ``2·k`` atomic ``index_add_`` ones, for ``2·n·k·d`` more floats held during the backward.
    """
    deterministic = deterministic or torch.are_deterministic_algorithms_enabled()
    dm = dictionary if mask is None else dictionary * mask.unsqueeze(1)
    n, k = atoms.shape
    d = dictionary.shape[1]
    d_dec = torch.zeros_like(dictionary)
    d_enc = torch.zeros_like(dictionary)
    gr = torch.zeros_like(residual) if g_residual is None else g_residual.to(residual.dtype).clone()
    g_x_hat = torch.zeros_like(residual) if g_x_hat is None else g_x_hat.to(residual.dtype)
    r = residual.clone()
    if deterministic:
        dec_rows = torch.empty(k, n, d, dtype=residual.dtype, device=residual.device)
        enc_rows = torch.empty(k, n, d, dtype=residual.dtype, device=residual.device)
    for t in range(k - 1, -1, -1):
        j = atoms[:, t]
        v = values[:, t]
        dj, dmj = dictionary[j], dm[j]
        r.add_(v.unsqueeze(1) * dmj)  # r_{t-1}
        gv = (g_x_hat * dj).sum(dim=1) - (gr * dmj).sum(dim=1)
        if g_values is not None:
            gv = gv + g_values[:, t].to(gv.dtype)
        if deterministic:
            torch.mul(v.unsqueeze(1), g_x_hat, out=dec_rows[t])
            torch.sub(gv.unsqueeze(1) * r, v.unsqueeze(1) * gr, out=enc_rows[t])
        else:
            d_dec.index_add_(0, j, v.unsqueeze(1) * g_x_hat)
            d_enc.index_add_(0, j, gv.unsqueeze(1) * r - v.unsqueeze(1) * gr)
        gr.add_(gv.unsqueeze(1) * dmj)
    if deterministic:
        keys = atoms.T.reshape(-1)  # step-major, as the rows are kept
        _segment_sum(d_dec, keys, dec_rows.view(k * n, d))
        _segment_sum(d_enc, keys, enc_rows.view(k * n, d))
    g_dict = d_dec + (d_enc if mask is None else d_enc * mask.unsqueeze(1))
    return g_dict, (gr if input_gradient else None)


def _segment_sum(out: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor) -> None:
    """``out[key] += rows`` summed in a fixed order whatever the device: torch's deterministic
    ``index_put_(accumulate=True)`` (keys sorted, each key's rows added in sequence)."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if not before:
        torch.use_deterministic_algorithms(True)
    try:
        out.index_put_((keys,), rows, accumulate=True)
    finally:
        if not before:
            torch.use_deterministic_algorithms(False, warn_only=warn_only)
