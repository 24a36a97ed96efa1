"""mpsae: Matching Pursuit Sparse Autoencoders, exact and fast.

The Rust engine of the ``mpsae`` command from Python, with overcomplete's names and
conventions (``overcomplete.sae.MpSAE``): build a model, ``encode``/``decode``/``forward`` numpy
arrays, train on arrays, memory-maps or files with :func:`train`, or batch by batch with
:class:`Trainer`. Everything runs in the engine, with the GIL released.

>>> import numpy as np, mpsae
>>> x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
>>> sae = mpsae.MpSAE(16, 32, k=3)
>>> residual, codes = sae.encode(x)
>>> codes.shape
(64, 32)
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

import json

from . import _mpsae
from .harvest import harvest
from .logit_lens import logit_lens
from .splice import evaluate_in_model

__all__ = ["MpSAE", "Trainer", "train", "load", "evaluate", "defaults", "harvest", "evaluate_in_model",
           "logit_lens",            "__version__"]
__version__: str = _mpsae.__version__

ArrayLike = Any
PathLike = Union[str, "os.PathLike[str]"]


def _rows(x: ArrayLike, name: str = "x") -> np.ndarray:
    """A 2-D float32 C-contiguous view of ``x``, copied only where the dtype or layout needs it."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x d), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must hold floats (float16, float32 or float64), not {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _state_arrays(state: Dict[str, ArrayLike]) -> Dict[str, np.ndarray]:
    """A state dict's tensors (torch or numpy) as float32 C-contiguous arrays."""
    arrays = {}
    for key, v in state.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        arrays[key] = np.ascontiguousarray(v, dtype=np.float32)
    return arrays


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
        residual, idx, val = self._m.encode_sparse(_rows(x))
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
        _, idx, val = self._m.encode_sparse(_rows(x), k, tol)
        return idx, val

    def decode(self, codes: ArrayLike) -> np.ndarray:
        """Reconstruct rows from dense codes (``n x c``): ``codes @ dictionary``."""
        z = _rows(codes, "codes")
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
        residual, idx, val = self._m.encode_sparse(_rows(x))
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
        self._m.load_state_dict(_state_arrays(state))

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
        """The metrics of ``mpsae eval`` on ``data`` (in the data's own space): rows, k, mse, r2, l0,
        dead_ratio, explained_variance (after each pursuit step). Puts the model in eval mode."""
        items = data if isinstance(data, (list, tuple)) else [data]
        keep: List[Any] = []
        sources = [_source(i, keep) for i in items]
        bs = defaults()["encode_batch_size"] if batch_size is None else int(batch_size)
        return _mpsae.evaluate(self._m, sources, k, tol, bs, tensor)

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


def _source(item: Any, keep: List[Any]) -> Any:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    a = np.asarray(item)
    if a.ndim != 2:
        raise ValueError(f"data must be 2-D (rows x d), got shape {a.shape}")
    if a.dtype not in (np.float16, np.float32, np.float64):
        raise TypeError(f"data must be float16, float32 or float64, not {a.dtype}")
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    keep.append(a)
    name = getattr(item, "filename", None) or f"<array {a.shape[0]}x{a.shape[1]} {a.dtype}>"
    return (os.fspath(name), a.__array_interface__["data"][0], str(a.dtype), a.shape[0], a.shape[1])


_TRAIN_OPTIONS = ("batch_size", "epochs", "steps", "lr", "beta1", "beta2", "eps", "clip", "warmup", "final_lr",
                  "start_warmup_lr", "seed", "shuffle", "criterion", "revive_threshold", "revive_min_dead",
                  "revive_coef", "detailed_stats", "max_bad_steps", "checkpoint_every", "gradient_shards")
_MODEL_OPTIONS = ("nb_concepts", "k", "dropout", "normalization", "use_multiplier", "center", "scale")


def _fill(kw: Dict[str, Any], names: Sequence[str]) -> Dict[str, Any]:
    """``kw`` (None: not given) completed with the library's defaults for ``names``."""
    d = _mpsae.defaults()
    return {n: (d[n] if kw.get(n) is None else kw[n]) for n in names}


def _options(kw: Dict[str, Any]) -> Dict[str, Any]:
    unknown = set(kw) - set(_TRAIN_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected training options: {sorted(unknown)}")
    return _fill(kw, _TRAIN_OPTIONS)


def train(data: Union[ArrayLike, PathLike, Sequence[Union[ArrayLike, PathLike]]], nb_concepts: Optional[int] = None,
          k: Optional[int] = None, *, dropout: Optional[float] = None, normalization: Optional[str] = None,
          use_multiplier: Optional[bool] = None, center: Optional[bool] = None, scale: Optional[bool] = None,
          out: Optional[PathLike] = None, resume: bool = False, force: bool = False,
          allow_changes: bool = False, allow_data_change: bool = False, progress: bool = True,
          callback: Optional[Callable[[Dict[str, Any]], Any]] = None, threads: Optional[int] = None,
          tensor: Optional[str] = None, skip_nonfinite: bool = False,
          provenance: Optional[Dict[str, Any]] = None, _stepper: Any = None,
          **options: Any) -> Tuple[MpSAE, List[Dict[str, Any]]]:
    """Train an MP-SAE, with the options of ``mpsae train``.

    Parameters
    ----------
    data : array, memmap, path, or a list of them
        Rows (float16/32/64, ``n x d``; arrays are not copied when C-contiguous) or ``.npy`` /
        ``.safetensors`` files (memory-mapped).
    nb_concepts, k : int or None
        Dictionary size and pursuit steps (None: the library's defaults, :func:`defaults`).
    dropout, normalization, use_multiplier, center, scale
        As ``mpsae train``'s ``--dropout``, ``--normalization``, ``--multiplier``, ``--center``,
        ``--scale`` (None: not given; the library's default for a new run). The centring and
        scaling become part of the model (:attr:`MpSAE.preprocess`).
    out : path or None
        Run folder (config, metrics, checkpoints, model); ``None`` trains in memory only.
    resume : bool
        Continue the run in ``out`` from its checkpoint. The options given must match the run's,
        as with ``mpsae train --resume``: model options never change; training options that
        differ are refused unless ``allow_changes``; other data unless ``allow_data_change``.
    force : bool
        Start a new run in ``out`` even if it holds one.
    allow_changes, allow_data_change : bool
        With ``resume``: apply training options that differ from the run's; continue on other data.
    provenance : dict or None
        Where the activations came from (``model``, ``hook``, ``layer``, ``tokenizer``,
        ``context``, ``prepend_bos``, ``exclude_first``, ``dtype``), saved with the model.
    progress : bool
        Print one line per epoch on stderr.
    callback : callable or None
        Called after every step with its report (``step``, ``loss``, ``r2``, ``l0``,
        ``dead_ratio``, ``lr``, ...); an exception it raises stops training and is re-raised.
    threads : int or None
        Engine threads (default: all cores).
    **options
        ``batch_size``, ``epochs``, ``steps``, ``lr``, ``beta1``, ``beta2``, ``eps``, ``clip``,
        ``warmup``, ``final_lr``, ``start_warmup_lr``, ``seed``, ``shuffle``, ``criterion``
        (``"mse"``/``"revive"``), ``revive_threshold``, ``revive_min_dead``, ``revive_coef``,
        ``detailed_stats``, ``max_bad_steps``, ``checkpoint_every``, ``gradient_shards``.

    Returns
    -------
    model : MpSAE
    metrics : list of dict
        One dict per epoch finished by this call (the lines of ``metrics.jsonl``).

    To train on a GPU with the PyTorch device path, call :func:`mpsae.torch_train.train` (same
    arguments, same run folders).

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, between two steps, after writing a checkpoint when ``out`` is given
        (``resume=True`` then continues exactly).
    """
    items = data if isinstance(data, (list, tuple)) else [data]
    keep: List[Any] = []
    sources = [_source(i, keep) for i in items]
    given_model = dict(nb_concepts=nb_concepts, k=k, dropout=dropout, normalization=normalization,
                       use_multiplier=use_multiplier, center=center, scale=scale)
    given = [n for n, v in given_model.items() if v is not None] + [n for n, v in options.items() if v is not None]
    model = _fill(given_model, _MODEL_OPTIONS)
    native, metrics = _mpsae.train(sources, model, _options(options), None if out is None else os.fspath(out),
                                   resume, force, progress, callback, threads, tensor, skip_nonfinite, given,
                                   allow_changes, allow_data_change,
                                   None if provenance is None else json.dumps(dict(provenance)), _stepper)
    del keep
    return MpSAE._wrap(native), metrics


class Trainer:
    """Train batch by batch, on activations as a model produces them (no files).

    Parameters
    ----------
    input_dim, nb_concepts, k
        The model's shape (``k`` None: the library's default).
    dropout, normalization, use_multiplier
        As in :func:`train`.
    center, scale : bool
        Estimate a centring and/or a scaling from the first ``estimate_rows`` rows (those batches
        are kept and trained on, in order, once the estimate is made).
    mean, scale_factor : array or float, optional
        A given preprocessing instead (the mean, shape ``(d,)``; the scale).
    estimate_rows : int or None
        Rows the estimate is made from (None: the library's default, 4096).
    threads : int or None
        Engine threads.
    provenance : dict or None
        Where the activations come from, saved with the model.
    **options
        Training options as in :func:`train` (``lr``, ``clip``, ``seed``, ...; a schedule needs ``steps``).
    """

    def __init__(self, input_dim: int, nb_concepts: int, k: Optional[int] = None, *,
                 dropout: Optional[float] = None, normalization: Optional[str] = None,
                 use_multiplier: Optional[bool] = None, center: bool = False, scale: bool = False,
                 mean: Optional[ArrayLike] = None, scale_factor: Optional[float] = None,
                 estimate_rows: Optional[int] = None, threads: Optional[int] = None,
                 provenance: Optional[Dict[str, Any]] = None, **options: Any) -> None:
        model = _fill(dict(nb_concepts=int(nb_concepts), k=k, dropout=dropout, normalization=normalization,
                           use_multiplier=use_multiplier, center=bool(center), scale=bool(scale)), _MODEL_OPTIONS)
        m = None if mean is None else np.ascontiguousarray(mean, dtype=np.float32).reshape(-1)
        rows = _mpsae.defaults()["estimate_rows"] if estimate_rows is None else int(estimate_rows)
        self._t = _mpsae.StreamTrainer(int(input_dim), model, _options(options), threads, m,
                                       None if scale_factor is None else float(scale_factor), rows,
                                       None if provenance is None else json.dumps(dict(provenance)))

    @classmethod
    def from_checkpoint(cls, path: PathLike, threads: Optional[int] = None) -> "Trainer":
        """Continue from a checkpoint written by :meth:`save_checkpoint` (or a run folder's)."""
        self = cls.__new__(cls)
        self._t = _mpsae.StreamTrainer.from_checkpoint(os.fspath(path), threads)
        return self

    def step(self, batch: ArrayLike) -> Optional[Dict[str, Any]]:
        """Train on ``batch`` (``n x d``, the data's own space): the report of the last step taken,
        or None while the preprocessing is still being estimated (the batch is kept)."""
        reports = self._t.step(_rows(batch, "batch"))
        return reports[-1] if reports else None

    def flush(self) -> List[Dict[str, Any]]:
        """Make a pending preprocessing estimate from the rows seen so far and train on them."""
        return self._t.flush()

    @property
    def estimating(self) -> Optional[Tuple[int, int]]:
        """``(rows seen, rows needed)`` while the preprocessing is being estimated, else None."""
        return self._t.estimating

    def load_state_dict(self, state: Dict[str, ArrayLike]) -> None:
        """Start from given parameters (overcomplete's keys); the optimiser state is kept."""
        self._t.load_state_dict(_state_arrays(state))

    @property
    def steps_done(self) -> int:
        """Steps taken so far."""
        return self._t.steps_done

    def save_checkpoint(self, path: PathLike) -> None:
        """Write the whole training state (model, Adam, progress), atomically (refused while
        batches wait for the preprocessing estimate)."""
        self._t.save_checkpoint(os.fspath(path))

    @property
    def model(self) -> MpSAE:
        """A copy of the current model (with its preprocessing)."""
        return MpSAE._wrap(self._t.model())
