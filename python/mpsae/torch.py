"""A PyTorch module with overcomplete 0.3.0's ``MpSAE`` interface, running mpsae's engine.

Change one import::

    from mpsae.torch import MpSAE   # instead of: from overcomplete.sae import MpSAE

and keep the training loop (overcomplete's ``train_sae`` or your own) and your criteria. For CPU
float32 tensors the forward pass runs the engine's pursuit inside a ``torch.autograd.Function``
whose backward is the engine's exact sparse backward (O(n·k·d)): gradients reach the dictionary
weights, the multiplier and the input (when it requires grad) whatever criterion is applied to
``(x, x_hat, pre_codes, codes, dictionary)``. On every other device and dtype (CUDA, ROCm, MPS,
float64, bf16/f16 inputs) the device path (:mod:`mpsae.torch_pursuit`) runs the same algorithm in
torch operations: one correlation product, Gram updates, exact sparse backward.
``MpSAE(..., path="auto" | "engine" | "torch")`` (default: the environment variable
``MPSAE_TORCH_PATH``, else "auto") chooses; :attr:`MpSAE.path` says which one ran last.

Differences from overcomplete, on purpose (as in the engine, see README.md): dropout comes back
with ``train()`` after ``eval()``; the eval-mode dictionary is rebuilt when the weights change
(``load_state_dict`` in eval mode) and carries no autograd graph; a NaN correlation is never
picked over a number; ties pick the first atom on every device.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Optional, Tuple, Union

import torch
from torch import nn

from . import _mpsae, torch_pursuit
from .pursuit import EngineOps, Pursuit, PursuitStats, TorchOps, engine_can_run

#: The pursuit implementations: "auto" (the engine where it can run, else torch), "engine" (the
#: Rust engine: CPU float32 only), "torch" (torch operations, any device).
PATHS = ("auto", "engine", "torch")


def _default_path() -> str:
    return os.environ.get("MPSAE_TORCH_PATH", "auto")

__all__ = ["MpSAE", "DictionaryLayer", "Preprocess", "NORMALIZATIONS", "PATHS", "load"]


def _normalize_l2(x):
    return x / (torch.norm(x, p=2, dim=1, keepdim=True) + 1e-8)


def _normalize_max_l2(x):
    return x / torch.amax(torch.norm(x, p=2, dim=1, keepdim=True), dim=0, keepdim=True)


def _normalize_l1(x):
    return x / (torch.norm(x, p=1, dim=1, keepdim=True) + 1e-8)


def _normalize_max_l1(x):
    return x / torch.amax(torch.norm(x, p=1, dim=1, keepdim=True), dim=0, keepdim=True)


def _normalize_identity(x):
    return x


#: The dictionary normalisations, by name (overcomplete's).
NORMALIZATIONS = {
    "l2": _normalize_l2,
    "max_l2": _normalize_max_l2,
    "l1": _normalize_l1,
    "max_l1": _normalize_max_l1,
    "identity": _normalize_identity,
}


class DictionaryLayer(nn.Module):
    """The dictionary ``D = normalize(W)·exp(m)``, as overcomplete's ``DictionaryLayer``.

    Parameters
    ----------
    in_dimensions : int
        Input dimension ``d``.
    nb_concepts : int
        Number of atoms ``c``.
    normalization : str or callable, default "l2"
        ``"l2"``, ``"max_l2"``, ``"l1"``, ``"max_l1"``, ``"identity"`` or a function of the weights.
    initializer : tensor or None
        Initial ``W`` (``c x d``); xavier-uniform otherwise.
    use_multiplier : bool, default False
        Train ``m`` (a parameter) instead of keeping it 0 (a buffer).
    device : str, default "cpu"
    """

    NORMALIZATIONS = NORMALIZATIONS

    def __init__(self, in_dimensions: int, nb_concepts: int, normalization: Union[str, Callable] = "l2",
                 initializer=None, use_multiplier: bool = False, device="cpu"):
        super().__init__()
        self.in_dimensions = in_dimensions
        self.nb_concepts = nb_concepts
        self.device = device
        if isinstance(normalization, str):
            if normalization not in NORMALIZATIONS:
                raise ValueError(f"invalid normalization '{normalization}': use {', '.join(NORMALIZATIONS)}")
            self.normalization = NORMALIZATIONS[normalization]
        elif callable(normalization):
            self.normalization = normalization
        else:
            raise ValueError("Invalid normalization function")
        self._weights = nn.Parameter(torch.empty(nb_concepts, in_dimensions, device=device))
        if initializer is None:
            nn.init.xavier_uniform_(self._weights)
        else:
            if tuple(initializer.shape) != tuple(self._weights.shape):
                raise ValueError("Invalid initializer, must have the same shape as the dictionary.")
            self._weights.data = torch.as_tensor(initializer, device=device).clone().float()
        if use_multiplier:
            self.multiplier = nn.Parameter(torch.tensor(0.0, device=device), requires_grad=True)
        else:
            self.register_buffer("multiplier", torch.tensor(0.0, device=device))
        self._fused_dictionary = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z @ D`` (dense codes ``n x c`` to rows ``n x d``)."""
        return torch.matmul(z, self.get_dictionary())

    def get_dictionary(self) -> torch.Tensor:
        """In training mode: normalises ``W`` in place (no gradient), returns ``W·exp(m)``; in eval
        mode the fused dictionary (rebuilt after ``load_state_dict`` or ``.to()``)."""
        if self.training:
            with torch.no_grad():
                self._weights.data = self.normalization(self._weights)
            return self._weights * torch.exp(self.multiplier)
        if self._fused_dictionary is None:
            with torch.no_grad():
                self._weights.data = self.normalization(self._weights)
                self._fused_dictionary = (self._weights * torch.exp(self.multiplier)).detach()
        return self._fused_dictionary

    def _load_from_state_dict(self, *args, **kwargs):
        # Loading weights refreshes the eval-mode dictionary (the reference keeps a stale one).
        self._fused_dictionary = None
        return super()._load_from_state_dict(*args, **kwargs)

    def train(self, mode: bool = True):
        """Training or eval mode (eval builds the fused dictionary)."""
        super().train(mode)
        if not mode:
            self._fused_dictionary = None
            self.get_dictionary()
        return self

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .double(): the fused dictionary is rebuilt on next use.
        self._fused_dictionary = None
        return super()._apply(fn, *args, **kwargs)


def check_preprocess(mean, scale, d: int) -> None:
    """The library's check of a preprocessing (tensors or None) for rows of width ``d``: raises
    ``ValueError`` naming the problem (a mean of another length, NaN, a scale that is not > 0)."""
    def entry(t):
        if t is None:
            return None
        t = torch.as_tensor(t).detach().float().cpu()
        return list(t.shape), t.reshape(-1).tolist()

    _mpsae.check_preprocess(entry(mean), entry(scale), int(d))


class Preprocess(nn.Module):
    """The model's centring and scaling, as buffers (moved by ``.to()``, saved in the state dict as
    ``preprocess.mean`` and ``preprocess.scale``): ``x' = (x - mean)·scale`` before the pursuit,
    undone on reconstructions. Absent (None, no state-dict keys) for a model built from scratch,
    so the state dict is overcomplete's.

    Parameters
    ----------
    mean : tensor of shape (d,) or None
    scale : float or None
    """

    def __init__(self, mean=None, scale=None, width: Optional[int] = None):
        super().__init__()
        self.width = width
        self.register_buffer("mean", None if mean is None else torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("scale", None if scale is None else torch.tensor(float(scale)))

    @property
    def identity(self) -> bool:
        """Whether it does nothing."""
        return self.mean is None and self.scale is None

    def apply_to(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean)·scale``."""
        if self.mean is not None:
            x = x - self.mean.to(x.dtype)
        if self.scale is not None:
            x = x * self.scale.to(x.dtype)
        return x

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """``x/scale + mean`` (reconstructions back to the data's space)."""
        if self.scale is not None:
            x = x / self.scale.to(x.dtype)
        if self.mean is not None:
            x = x + self.mean.to(x.dtype)
        return x

    def undo_difference(self, x: torch.Tensor) -> torch.Tensor:
        """``x/scale`` (residuals back to the data's space: the mean cancels)."""
        return x if self.scale is None else x / self.scale.to(x.dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # The state dict defines the preprocessing: present keys create the buffers, absent ones
        # remove them (a plain overcomplete state dict has none). The library checks them first
        # (shapes, finiteness, scale > 0), as it checks a model file.
        if getattr(self, "width", None) is not None:  # modules pickled before it existed have none
            check_preprocess(state_dict.get(prefix + "mean"), state_dict.get(prefix + "scale"), self.width)
        for name in ("mean", "scale"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], dtype=torch.float32,
                                                     device=state_dict[key].device))
            else:
                setattr(self, name, None)
        return super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                             unexpected_keys, error_msgs)

    def extra_repr(self):
        return f"center={self.mean is not None}, scale={None if self.scale is None else float(self.scale)}"


class IdentityEncoder(nn.Module):
    """Matching pursuit needs no encoder: the reference's default, with no parameters."""

    def forward(self, x):
        return x, x


class TieableEncoder(nn.Module):
    """The (unused by the pursuit) encoder of ``tied()`` / ``untied()``, with the reference's
    attributes and state-dict keys: tied, ``tied_to`` is the dictionary (keys
    ``encoder.tied_to.*``); untied, ``tied_to`` is None and ``weight`` its own (``encoder.weight``);
    ``bias`` (``encoder.bias``) when asked for."""

    def __init__(self, dictionary: DictionaryLayer, bias: bool = False, tied: bool = True,
                 copy_from_dictionary: bool = False):
        super().__init__()
        device = dictionary._weights.device
        self.tied_to = dictionary if tied else None
        if not tied:
            w = torch.empty(dictionary.nb_concepts, dictionary.in_dimensions, device=device)
            if copy_from_dictionary:
                with torch.no_grad():
                    w.copy_(dictionary.get_dictionary())
            else:
                nn.init.xavier_uniform_(w)
            self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(dictionary.nb_concepts, device=device)) if bias else None

    def forward(self, x):
        w = self.tied_to.get_dictionary() if self.tied_to is not None else self.weight
        z = x @ w.T
        if self.bias is not None:
            z = z + self.bias
        return z, z


class MpSAE(nn.Module):
    """Matching Pursuit Sparse Autoencoder: overcomplete 0.3.0's ``MpSAE`` on mpsae's engine.

    Parameters
    ----------
    input_shape : int or tuple of int
        Input dimension ``d`` (or ``(d,)``).
    nb_concepts : int
        Number of concepts (atoms).
    k : int, default 1
        Matching-pursuit steps.
    dropout : float or None
        Probability of dropping each atom at each training-mode encode.
    encoder_module : None, "identity" or nn.Module
        The (unused) encoder: identity by default, as the reference.
    dictionary_params : dict or None
        ``normalization``, ``initializer``, ``use_multiplier`` of the :class:`DictionaryLayer`.
    device : str, default "cpu"
    sparse_codes : bool, default False
        ``encode``/``forward`` return the codes as ``(indices, values)`` (each ``n x k``, pursuit
        order) instead of the dense ``n x c`` tensor.
    path : "auto", "engine", "torch" or None
        Which pursuit runs: the Rust engine (CPU float32 only), torch operations (any device), or
        the engine where it can and torch elsewhere ("auto"). None: ``MPSAE_TORCH_PATH`` or "auto".
    strategy : "auto", "gram" or "plain"
        The torch path's correlations per step: Gram updates, fresh products, or a cost rule
        (decided once per batch shape and kept: :attr:`plans`).
    deterministic : bool, default False
        The torch path's dictionary gradient summed in a fixed order: bitwise the same gradients
        run to run on any device (also on under ``torch.use_deterministic_algorithms(True)``).
    capturable : bool, default False
        The torch path's forward with no host round trip at all (CUDA graphs,
        ``torch.compile(fullgraph=True)``): every row of a tile is re-checkable on a near tie,
        which costs more products; by default one read-back per forward checks a smaller
        re-check buffer sufficed.

    Inputs may have any leading shape ``[..., d]`` (a Hugging Face hook's ``[batch, tokens,
    d]``): they are flattened to rows and the outputs shaped back (codes ``[..., c]``).
    bf16/f16 inputs are pursued in float32 (autocast does not change picks) and the outputs
    returned in the input's dtype.
    """

    def __init__(self, input_shape, nb_concepts, k=1, dropout=None, encoder_module=None,
                 dictionary_params=None, device="cpu", sparse_codes=False, path=None, strategy="auto",
                 deterministic=False, capturable=False):
        super().__init__()
        path = _default_path() if path is None else path
        if path not in PATHS:
            raise ValueError(f"invalid path '{path}': use one of {', '.join(PATHS)}")
        if strategy not in torch_pursuit.STRATEGIES:
            raise ValueError(f"invalid strategy '{strategy}': use one of {', '.join(torch_pursuit.STRATEGIES)}")
        self.requested_path = path
        self.strategy = strategy
        self.deterministic = bool(deterministic)
        self.capturable = bool(capturable)
        #: The torch path's plans by batch shape (:class:`mpsae.torch_pursuit.Plan`).
        self.plans = {}
        self._gram_cache = None
        if not (isinstance(input_shape, int) or len(input_shape) == 1):
            raise ValueError("MpSAE Doesn't handle 3d or 4d data format.")
        if isinstance(k, int) and k <= 0:
            raise ValueError("k must be a positive integer.")
        if dropout is not None and not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout {dropout} is not in [0, 1)")
        d = input_shape if isinstance(input_shape, int) else input_shape[0]
        self.input_shape = input_shape
        self.nb_concepts = nb_concepts
        self.device = device
        self.k = k
        self.dropout = dropout
        self._dropout = dropout
        self.sparse_codes = sparse_codes
        self.dictionary = DictionaryLayer(d, nb_concepts, device=device, **(dictionary_params or {}))
        if encoder_module is None or encoder_module == "identity":
            self.encoder = IdentityEncoder()
        elif isinstance(encoder_module, nn.Module):
            self.encoder = encoder_module
        elif isinstance(encoder_module, str):
            # Other named encoders are overcomplete's (unused by the pursuit, kept for state dicts).
            try:
                from overcomplete.sae.factory import EncoderFactory
            except ImportError:
                raise ValueError(f"encoder '{encoder_module}' needs overcomplete's encoder registry (pip install overcomplete)") from None
            if encoder_module not in EncoderFactory.list_modules():
                raise ValueError(f"Encoder '{encoder_module}' not found in registry.")
            self.encoder = EncoderFactory.create_module(encoder_module, d, nb_concepts, device=device)
        else:
            raise ValueError(f"unknown encoder module {encoder_module!r}")
        self.preprocess = Preprocess(width=d)
        self.path = "none"
        #: What the last pursuit did (:class:`mpsae.pursuit.PursuitStats`).
        self.pursuit_stats = PursuitStats()

    def set_preprocess(self, mean=None, scale=None):
        """Set the centring (``mean``, shape ``(d,)``) and scaling (``scale`` > 0) applied before
        every encode and undone on every decode (None: none). Checked by the library, as every
        loader checks a model file (``ValueError`` naming the problem)."""
        device = self.dictionary._weights.device
        if mean is not None:
            mean = torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(-1)
        if scale is not None:
            scale = torch.as_tensor(scale, dtype=torch.float32)
        check_preprocess(mean, scale, self.dictionary.in_dimensions)
        self.preprocess = Preprocess(mean, None if scale is None else float(scale), self.dictionary.in_dimensions)
        self.preprocess.to(device)
        return self

    def extra_repr(self):
        return (f"k={self.k}, nb_concepts={self.nb_concepts}, dropout={self.dropout}, "
                f"path={self.path} (requested {getattr(self, 'requested_path', 'auto')})")

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .double(): a kept Gram matrix belongs to the old tensors.
        self._gram_cache = None
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        """Training or eval mode; unlike the reference, dropout comes back with ``train()``."""
        self._gram_cache = None
        self.dropout = self._dropout if mode else None
        return super().train(mode)

    def get_dictionary(self) -> torch.Tensor:
        """The dictionary ``c x d`` (see :meth:`DictionaryLayer.get_dictionary`)."""
        return self.dictionary.get_dictionary()

    def _mask(self, like: torch.Tensor):
        if self.training and self.dropout is not None:
            return torch.bernoulli((1.0 - self.dropout) * torch.ones(self.nb_concepts, 1, device=like.device, dtype=like.dtype))
        return None

    def _check_width(self, x):
        d = self.dictionary.in_dimensions
        if x.dim() == 0 or x.shape[-1] != d:
            raise ValueError(f"inputs must have shape [..., {d}], got {tuple(x.shape)}")

    def _run(self, x):
        # The width first: the centring would otherwise fail inside torch with a broadcast error.
        self._check_width(x)
        if self.preprocess.identity:
            return self._pursue(x)
        residual, codes, x_hat = self._pursue(self.preprocess.apply_to(x))
        return self.preprocess.undo_difference(residual), codes, self.preprocess.undo(x_hat)

    def _pursue(self, x):
        d = self.dictionary.in_dimensions
        if x.dim() == 0 or x.shape[-1] != d:
            raise ValueError(f"inputs must have shape [..., {d}], got {tuple(x.shape)}")
        lead = x.shape[:-1]
        rows = x.reshape(-1, d)
        dictionary = self.get_dictionary()
        mask = self._mask(dictionary)
        if x.device.type == "meta" or dictionary.device.type == "meta":
            self.path = "meta"
            residual, codes, x_hat = self._dense_pursuit(rows, dictionary, mask)
        else:
            residual, codes, x_hat = self._sparse_pursuit(rows, dictionary, mask)
        # Explicit widths: an empty batch ([0, d], [2, 0, d]) gives empty outputs of these shapes.
        if self.sparse_codes:
            idx, val = codes
            codes = (idx.reshape(*lead, idx.shape[-1]), val.reshape(*lead, val.shape[-1]))
        else:
            codes = codes.reshape(*lead, codes.shape[-1])
        return residual.reshape(x.shape), codes, x_hat.reshape(x.shape)

    def _sparse_pursuit(self, x, dictionary, mask):
        requested = getattr(self, "requested_path", "auto")
        engine = engine_can_run(x, dictionary, self.k)
        if requested == "engine" and not engine:
            raise ValueError(
                f"path='engine' runs the Rust engine on CPU float32 tensors, not {x.device.type} {x.dtype} inputs "
                f"with a {dictionary.device.type} {dictionary.dtype} dictionary: use path='torch' or 'auto'")
        m = None if mask is None else mask.view(-1)
        stats = PursuitStats()
        self.pursuit_stats = stats
        if engine and requested != "torch":
            self.path = "engine"
            residual, codes, x_hat, atoms = Pursuit.apply(x, dictionary, m, self.k, not self.sparse_codes,
                                                          EngineOps(), stats)
            return residual, ((atoms, codes) if self.sparse_codes else codes), x_hat
        self.path = "torch"
        if not isinstance(self.k, int) or self.k <= 0:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        compute = torch.float64 if torch.float64 in (x.dtype, dictionary.dtype) else torch.float32
        xs, dict_c = x.to(compute), dictionary.to(compute)
        m = None if m is None else m.to(compute)
        gram = self._kept_gram(dict_c) if (m is None and not self.training) else None
        ops = TorchOps(getattr(self, "strategy", "auto"), gram, self.__dict__.setdefault("plans", {}),
                       getattr(self, "deterministic", False), getattr(self, "capturable", False))
        residual, codes, x_hat, atoms = Pursuit.apply(xs, dict_c, m, self.k, not self.sparse_codes, ops, stats)
        out = x.dtype
        if self.sparse_codes:
            return residual.to(out), (atoms, codes.to(out)), x_hat.to(out)
        return residual.to(out), codes.to(out), x_hat.to(out)

    def _kept_gram(self, dictionary):
        """The Gram matrix of the eval-mode dictionary, kept while it does not change (when the
        cost rule would use one)."""
        strategy = getattr(self, "strategy", "auto")
        if strategy == "plain" or self.k <= 1:
            return None
        # Keyed on the tensor itself (held, so its memory is not reused) and its version counter.
        cache = getattr(self, "_gram_cache", None)
        if cache is not None and cache[0] is dictionary and cache[1] == dictionary._version:
            return cache[2]
        if strategy == "auto":
            c, d = dictionary.shape
            # Planned for a batch of 4096 rows: an eval-mode dictionary serves many batches.
            plan = torch_pursuit.make_plan(4096, c, d, self.k, dictionary.device, dictionary.dtype)
            if plan.strategy != "gram":
                return None
        with torch.no_grad():
            gram = torch_pursuit.gram_matrix(dictionary)
        self._gram_cache = (dictionary, dictionary._version, gram)
        return gram

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_gram_cache"] = None
        return state

    def _dense_pursuit(self, x, dictionary, mask):
        """overcomplete's dense algorithm, kept for the meta device (shapes only, no data)."""
        W = dictionary if mask is None else dictionary * mask
        n = x.shape[0]
        codes = torch.zeros(n, self.nb_concepts, device=x.device, dtype=x.dtype)
        residual = x.clone()
        idx_all, val_all = [], []
        for _ in range(self.k):
            z = residual @ W.T
            z = torch.where(torch.isnan(z), torch.full_like(z, -math.inf), z)
            val, idx = torch.max(z, dim=1)
            to_add = torch.nn.functional.one_hot(idx, num_classes=self.nb_concepts).to(x.dtype) * val.unsqueeze(1)
            codes = codes + to_add
            residual = residual - to_add @ W
            idx_all.append(idx)
            val_all.append(val)
        x_hat = codes @ dictionary
        if self.sparse_codes:
            return residual, (torch.stack(idx_all, 1), torch.stack(val_all, 1)), x_hat
        return residual, codes, x_hat

    def encode(self, x: torch.Tensor):
        """``(residual, codes)`` of ``x`` after ``k`` pursuit steps (codes dense ``n x c``, or
        ``(indices, values)`` with ``sparse_codes``)."""
        residual, codes, _ = self._run(x)
        return residual, codes

    def decode(self, z) -> torch.Tensor:
        """Rows from codes, in the data's space: dense ``z @ D``, or sparse ``(indices, values)``,
        the preprocessing undone."""
        if isinstance(z, tuple):
            idx, val = z
            dictionary = self.get_dictionary()
            picked = (idx >= 0).to(val.dtype)
            x_hat = torch.einsum("nk,nkd->nd", val * picked, dictionary[idx.clamp(min=0)])
        else:
            x_hat = self.dictionary(z)
        return self.preprocess.undo(x_hat)

    def forward(self, x: torch.Tensor):
        """``(pre_codes, codes, x_hat)``: the final residual, the codes and the reconstruction."""
        return self._run(x)

    def tied(self, bias: bool = False):
        """Tie the (unused) encoder to the dictionary, as the reference's ``tied``."""
        self.encoder = TieableEncoder(self.dictionary, bias, tied=True)
        return self

    def untied(self, bias: bool = False, copy_from_dictionary: bool = False):
        """Give the (unused) encoder its own weights, as the reference's ``untied``."""
        self.encoder = TieableEncoder(self.dictionary, bias, tied=False, copy_from_dictionary=copy_from_dictionary)
        return self

    def fit(self, x):
        """Not for SAEs (train with a loop, e.g. overcomplete's ``train_sae``)."""
        raise NotImplementedError("SAE does not support fit method. You have to train the model using a custom training loop.")


def load(path, device="cpu", sparse_codes=False) -> MpSAE:
    """A model file (``model.safetensors``) or a run folder as an :class:`MpSAE` module, with
    its preprocessing and the configuration it was trained with (k, dropout, normalisation,
    multiplier, encoder), in eval mode.

    Parameters
    ----------
    path : str or PathLike
        A model file or a run folder (as :func:`mpsae.load`).
    device : str or torch.device
    sparse_codes : bool
        See :class:`MpSAE`.
    """
    import mpsae

    native = mpsae.load(path)
    state = {key: torch.from_numpy(v.copy()) for key, v in native.state_dict().items()}
    model = MpSAE(native.input_dim, native.nb_concepts, k=native.k, dropout=native._m.dropout,
                  dictionary_params={"normalization": native._m.normalization,
                                     "use_multiplier": native._m.use_multiplier},
                  sparse_codes=sparse_codes)
    if "encoder.tied_to._weights" in state:
        model.tied(bias="encoder.bias" in state)
    elif "encoder.weight" in state:
        model.untied(bias="encoder.bias" in state)
    model.load_state_dict(state)
    return model.to(device).eval()
