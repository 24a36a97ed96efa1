"""The numpy model: :class:`MpSAE`, overcomplete 0.3.0's ``MpSAE`` on the Rust engine, and
:func:`load`, :func:`evaluate`, :func:`defaults` (the shell of ``crates/mpsae-py/src/model.rs``)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _mpsae
from ._arrays import PathLike, data_sources, rows_f32, state_arrays

__all__ = ["MpSAE", "load", "evaluate", "defaults"]

ArrayLike = Any


def _dim(input_shape: Union[int, Sequence[int]]) -> int:
    if isinstance(input_shape, (int, np.integer)):
        return int(input_shape)
    shape = tuple(input_shape)
    if len(shape) != 1:
        raise ValueError(f"input_shape must be an int or a 1-tuple (d,), got {shape}")
    return int(shape[0])


def _dictionary_params(params: Optional[Dict[str, Any]]) -> Tuple[str, bool]:
    params = dict(params or {})
    normalization = params.pop("normalization", "l2")
    use_multiplier = bool(params.pop("use_multiplier", False))
    if params.pop("initializer", None) is not None:
        raise ValueError("dictionary_params['initializer'] is not supported: use load_state_dict")
    if params:
        raise ValueError(f"unsupported dictionary_params: {sorted(params)}")
    if not isinstance(normalization, str):
        raise TypeError("dictionary_params['normalization'] must be a name (l2, max_l2, l1, max_l1, identity)")
    return normalization, use_multiplier


class MpSAE:
    """A Matching Pursuit Sparse Autoencoder, as overcomplete 0.3.0's ``MpSAE``.

    Parameters
    ----------
    input_shape : int or tuple of int
        Input dimension ``d`` (or ``(d,)``).
    nb_concepts : int
        Number of concepts (dictionary atoms) ``c``.
    k : int, default 1
        Matching-pursuit steps per row.
    dropout : float or None
        Probability of dropping each atom in training mode, in ``[0, 1)``.
    dictionary_params : dict or None
        ``{"normalization": "l2" | "max_l2" | "l1" | "max_l1" | "identity", "use_multiplier": bool}``.
    device : str, default "cpu"
        Backend: ``"cpu"`` (fast) or ``"reference"`` (plain f64 oracle).
    seed : int, default 0
        Seed of the initialisation and of the dropout masks.
    threads : int or None
        Threads of the engine (default: all cores).
    """

    def __init__(self, input_shape: Union[int, Sequence[int]], nb_concepts: int, k: int = 1,
                 dropout: Optional[float] = None, dictionary_params: Optional[Dict[str, Any]] = None,
                 device: str = "cpu", seed: int = 0, threads: Optional[int] = None) -> None:
        normalization, use_multiplier = _dictionary_params(dictionary_params)
        self._m = _mpsae.Model(_dim(input_shape), int(nb_concepts), int(k), dropout, normalization,
                               use_multiplier, device, int(seed), threads)

    @classmethod
    def _wrap(cls, native: Any) -> "MpSAE":
        self = cls.__new__(cls)
        self._m = native
        return self

    @classmethod
    def load(cls, path: PathLike, threads: Optional[int] = None) -> "MpSAE":
        """Load a model file (``model.safetensors``, the CLI's format) or a CLI run folder.

        Parameters
        ----------
        path : str or PathLike
            A ``.safetensors`` model file or a run folder holding ``model.safetensors``.
        threads : int or None
            Threads of the engine.

        Returns
        -------
        MpSAE
            The model, with the preprocessing it was trained with (see :attr:`preprocess`).
        """
        return cls._wrap(_mpsae.Model.load(os.fspath(path), threads))

    def save(self, path: PathLike) -> None:
        """Save the model (safetensors with overcomplete's state-dict keys), atomically."""
        self._m.save(os.fspath(path))

    # -- overcomplete's interface ------------------------------------------------------------
    def encode(self, x: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
        """Encode rows: ``(residual, codes)``, codes dense ``n x c`` as overcomplete returns them.

        Parameters
        ----------
        x : array_like, shape (n, d)
            Rows to encode (float16/32/64; converted to float32 only where needed).

        Returns
        -------
        residual : ndarray, shape (n, d)
        codes : ndarray, shape (n, c)
        """
        residual, idx, val = self._m.encode_sparse(rows_f32(x))
        return residual, self._m.densify(idx, val)

    def encode_sparse(self, x: ArrayLike, k: Optional[int] = None,
                      tol: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Encode rows into their picks in pursuit order: ``(indices, values)``, each ``n x k``.

        Parameters
        ----------
        x : array_like, shape (n, d)
        k : int or None
            Pursuit steps (default: the model's ``k``).
        tol : float or None
            Stop a row once its residual norm is at most ``tol`` times its input norm; the
            remaining indices are -1.

        Returns
        -------
        indices : ndarray of int64, shape (n, k)
        values : ndarray of float32, shape (n, k)
        """
        _, idx, val = self._m.encode_sparse(rows_f32(x), k, tol)
        return idx, val

    def decode(self, codes: ArrayLike) -> np.ndarray:
        """Reconstruct rows from dense codes (``n x c``): ``codes @ dictionary``."""
        z = rows_f32(codes, "codes")
        if z.shape[1] != self.nb_concepts:
            raise ValueError(f"codes have {z.shape[1]} columns, the dictionary has {self.nb_concepts} atoms")
        nnz = (z != 0).sum(axis=1)
        width = max(int(nnz.max()) if len(nnz) else 0, 1)
        idx = np.full((z.shape[0], width), -1, dtype=np.int64)
        val = np.zeros((z.shape[0], width), dtype=np.float32)
        rows, cols = np.nonzero(z)
        slot = np.arange(len(rows)) - np.repeat(np.cumsum(nnz) - nnz, nnz)
        idx[rows, slot] = cols
        val[rows, slot] = z[rows, cols]
        return self._m.decode_sparse(idx, val)

    def decode_sparse(self, indices: ArrayLike, values: ArrayLike) -> np.ndarray:
        """Reconstruct rows from sparse codes (as :meth:`encode_sparse` gives them)."""
        return self._m.decode_sparse(np.ascontiguousarray(indices, dtype=np.int64),
                                     np.ascontiguousarray(values, dtype=np.float32))

    def forward(self, x: ArrayLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(residual, codes, x_hat)``, as overcomplete's ``forward``."""
        residual, idx, val = self._m.encode_sparse(rows_f32(x))
        return residual, self._m.densify(idx, val), self._m.decode_sparse(idx, val)

    __call__ = forward

    def get_dictionary(self) -> np.ndarray:
        """The dictionary ``c x d`` (in training mode the weights are normalised in place first)."""
        return self._m.get_dictionary()

    def train(self, mode: bool = True) -> "MpSAE":
        """Training mode (dropout applies, the dictionary is re-normalised at each use)."""
        if mode:
            self._m.train_mode()
        else:
            self._m.eval_mode()
        return self

    def eval(self) -> "MpSAE":
        """Eval mode (fused dictionary, no dropout)."""
        return self.train(False)

    @property
    def training(self) -> bool:
        """Whether the model is in training mode."""
        return self._m.training

    def state_dict(self) -> Dict[str, np.ndarray]:
        """The parameters under overcomplete's keys (``dictionary._weights``, ...), as arrays."""
        return self._m.state_dict()

    def load_state_dict(self, state: Dict[str, ArrayLike]) -> None:
        """Load parameters saved by :meth:`state_dict` or by overcomplete (tensors or arrays)."""
        self._m.load_state_dict(state_arrays(state))

    # -- properties ----------------------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        """Input dimension ``d``."""
        return self._m.input_dim

    @property
    def nb_concepts(self) -> int:
        """Number of concepts ``c``."""
        return self._m.nb_concepts

    @property
    def k(self) -> int:
        """Pursuit steps per row."""
        return self._m.k

    @k.setter
    def k(self, value: int) -> None:
        self._m.k = int(value)

    @property
    def device(self) -> str:
        """The backend the maths runs on."""
        return self._m.device

    @property
    def preprocess(self) -> Tuple[Optional[np.ndarray], Optional[float]]:
        """``(mean, scale)``: the model's preprocessing (``--center``/``--scale``), None where absent.

        Every encode applies ``x' = (x - mean) * scale`` and every decode undoes it: codes are in
        the preprocessed space, residuals and reconstructions in the data's own space.
        """
        return self._m.preprocess

    def set_preprocess(self, mean: Optional[ArrayLike] = None, scale: Optional[float] = None) -> None:
        """Set the model's preprocessing (``mean`` of shape ``(d,)`` and/or ``scale`` > 0; None: none)."""
        m = None if mean is None else np.ascontiguousarray(mean, dtype=np.float32).reshape(-1)
        self._m.set_preprocess(m, None if scale is None else float(scale))

    @property
    def provenance(self) -> Dict[str, Any]:
        """Where the activations came from (model, hook, layer, tokenizer, context, dtype; ``{}`` if unknown)."""
        return json.loads(self._m.provenance)

    @provenance.setter
    def provenance(self, value: Dict[str, Any]) -> None:
        self._m.set_provenance(json.dumps(dict(value)))

    def evaluate(self, data: Union[ArrayLike, PathLike, Sequence[Union[ArrayLike, PathLike]]], k: Optional[int] = None,
                 tol: Optional[float] = None, batch_size: Optional[int] = None,
                 tensor: Optional[str] = None) -> Dict[str, Any]:
        """The metrics of ``mpsae eval`` on ``data`` (in the data's own space): ``explained_variance``
        (SAEBench's definition, the headline figure), ``explained_variance_per_step``, ``mse``,
        ``r2`` (overcomplete's ``r2_score``, for parity), ``l0``, ``dead_ratio``, ``rows``, ``k``.
        Puts the model in eval mode."""
        sources, keep = data_sources(data)
        bs = defaults()["encode_batch_size"] if batch_size is None else int(batch_size)
        report = _mpsae.evaluate(self._m, sources, k, tol, bs, tensor)
        del keep
        return report

    def __repr__(self) -> str:
        return f"mpsae.{self._m!r}".replace("Model(", "MpSAE(")


def load(path: PathLike, threads: Optional[int] = None) -> MpSAE:
    """Load a model file or a CLI run folder (see :meth:`MpSAE.load`)."""
    return MpSAE.load(path, threads)


def defaults() -> Dict[str, Any]:
    """The library's default of every option, by keyword (the CLI's flags read the same)."""
    return _mpsae.defaults()


def evaluate(model: MpSAE, data: Any, **kw: Any) -> Dict[str, Any]:
    """``model.evaluate(data, **kw)``: the metrics of ``mpsae eval``."""
    return model.evaluate(data, **kw)
