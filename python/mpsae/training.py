"""Training from Python: :func:`train` (a whole dataset, optionally in a run folder) and
:class:`Trainer` (batch by batch), the shell of ``crates/mpsae-py/src/training.rs`` over the
library's training session.

The training options are the library's table (:func:`options`, the same rows as the flags of
``mpsae train``): their keywords, defaults and help are read from it, and only the options a
caller gives are sent (a resumed run compares exactly those with its own).
"""
from __future__ import annotations

import inspect
import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import _mpsae
from ._arrays import PathLike, data_sources, rows_f32, state_arrays
from .model import MpSAE

__all__ = ["train", "Trainer", "options", "STEP_STATISTICS"]

#: The names of a training step's summed statistics, in the library's order (then the residual
#: energy after each pursuit step, then which atoms fired).
STEP_STATISTICS: Tuple[str, ...] = tuple(_mpsae.STEP_STATISTICS)


def options() -> List[Dict[str, Any]]:
    """The training options' table: one dict per option (``name``, ``group`` "model" or
    "training", ``kind``, ``default``, ``help``, ``flag``: the CLI's spelling)."""
    return _mpsae.options()


_TABLE = options()
_NAMES = tuple(row["name"] for row in _TABLE)


def _given(kw: Dict[str, Any]) -> str:
    """The options given, by name, as the engine takes them (None: not given; unknown names
    raise TypeError)."""
    kw = {name: v for name, v in kw.items() if v is not None}
    unknown = sorted(set(kw) - set(_NAMES))
    if unknown:
        raise TypeError(f"unexpected training options: {unknown} (known: {', '.join(_NAMES)})")
    return json.dumps(kw)


def _with_table(func: Callable, before: List[str], after: List[str]) -> Callable:
    """Gives ``func`` the signature its ``**options`` stand for: the table's keywords with their
    defaults (for ``help()`` and editors), and their help in the docstring."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    fixed = [p for p in params if p.name in before]
    rest = [p for p in params if p.name not in before]
    table = [inspect.Parameter(row["name"], inspect.Parameter.KEYWORD_ONLY, default=row["default"])
             for row in _TABLE if row["name"] not in before]
    ordered = fixed + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
                       else p for p in rest if p.name in after] + table
    func.__signature__ = sig.replace(parameters=ordered)
    lines = "\n".join(f"    {row['name']} : {row['kind'].replace('_', ' ')}, default {row['default']!r}\n"
                      f"        {row['help']} (``{row['flag']}``)" for row in _TABLE)
    func.__doc__ = (func.__doc__ or "").replace("{options}", lines.strip())
    return func


def train(data: Any, nb_concepts: Optional[int] = None, k: Optional[int] = None, *,
          out: Optional[PathLike] = None, resume: bool = False, force: bool = False,
          allow_changes: bool = False, allow_data_change: bool = False, progress: bool = True,
          callback: Optional[Callable[[Dict[str, Any]], Any]] = None, threads: Optional[int] = None,
          tensor: Optional[str] = None, skip_nonfinite: bool = False,
          provenance: Optional[Dict[str, Any]] = None, stepper: Any = None,
          **options: Any) -> Tuple[MpSAE, List[Dict[str, Any]]]:
    """Train an MP-SAE, with the options of ``mpsae train``.

    Parameters
    ----------
    data : array, memmap, path, or a list of them
        Rows (float16/32/64, ``n x d``; arrays are not copied when C-contiguous), ``.npy`` /
        ``.safetensors`` files (memory-mapped) or harvest folders.
    nb_concepts, k : int or None
        Dictionary size and pursuit steps (None: the library's defaults, :func:`mpsae.defaults`).
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
    progress : bool
        Print one line per epoch on stderr.
    callback : callable or None
        Called after every step with its report (``step``, ``loss``, ``r2``, ``l0``,
        ``dead_ratio``, ``lr``, ...); an exception it raises stops training and is re-raised.
    threads : int or None
        Engine threads (default: all cores).
    tensor : str or None
        Tensor to read from ``.safetensors`` files.
    skip_nonfinite : bool
        Leave out rows with NaN or infinite values (default: refuse the data).
    provenance : dict or None
        Where the activations came from (``model``, ``hook``, ``layer``, ``tokenizer``,
        ``context``, ``prepend_bos``, ``exclude_first``, ``dtype``), saved with the model.
    stepper : object or None
        Does each step's maths instead of the engine (the PyTorch device path,
        :func:`mpsae.torch_train.train`); the loop, metrics and checkpoints stay the library's.
    {options}

    Returns
    -------
    model : MpSAE
    metrics : list of dict
        One dict per epoch finished by this call (the lines of ``metrics.jsonl``).

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, between two steps, after writing a checkpoint when ``out`` is given
        (``resume=True`` then continues exactly).
    """
    given = dict(options)
    if nb_concepts is not None:
        given["nb_concepts"] = nb_concepts
    if k is not None:
        given["k"] = k
    chosen = _given(given)
    sources, keep = data_sources(data)
    native, metrics = _mpsae.train(sources, chosen, None if out is None else os.fspath(out), resume, force,
                                   progress, callback, threads, tensor, skip_nonfinite, allow_changes,
                                   allow_data_change, None if provenance is None else json.dumps(dict(provenance)),
                                   stepper)
    del keep
    return MpSAE._wrap(native), metrics


_with_table(train, ["data", "nb_concepts", "k"],
            ["out", "resume", "force", "allow_changes", "allow_data_change", "progress", "callback", "threads",
             "tensor", "skip_nonfinite", "provenance", "stepper"])


class Trainer:
    """Train batch by batch, on activations as a model produces them (no files).

    Parameters
    ----------
    input_dim, nb_concepts, k
        The model's shape (``k`` None: the library's default).
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
        The training options of :func:`train` (``lr``, ``clip``, ``seed``, ...; a schedule needs
        ``steps``).
    """

    def __init__(self, input_dim: int, nb_concepts: int, k: Optional[int] = None, *,
                 mean: Optional[Any] = None, scale_factor: Optional[float] = None,
                 estimate_rows: Optional[int] = None, threads: Optional[int] = None,
                 provenance: Optional[Dict[str, Any]] = None, **options: Any) -> None:
        given = dict(options, nb_concepts=int(nb_concepts))
        if k is not None:
            given["k"] = k
        m = None if mean is None else np.ascontiguousarray(mean, dtype=np.float32).reshape(-1)
        rows = _mpsae.defaults()["estimate_rows"] if estimate_rows is None else int(estimate_rows)
        self._t = _mpsae.StreamTrainer(int(input_dim), _given(given), threads, m,
                                       None if scale_factor is None else float(scale_factor), rows,
                                       None if provenance is None else json.dumps(dict(provenance)))

    @classmethod
    def from_checkpoint(cls, path: PathLike, threads: Optional[int] = None) -> "Trainer":
        """Continue from a checkpoint written by :meth:`save_checkpoint` (or a run folder's)."""
        self = cls.__new__(cls)
        self._t = _mpsae.StreamTrainer.from_checkpoint(os.fspath(path), threads)
        return self

    def step(self, batch: Any) -> Optional[Dict[str, Any]]:
        """Train on ``batch`` (``n x d``, the data's own space): the report of the last step taken,
        or None while the preprocessing is still being estimated (the batch is kept)."""
        reports = self._t.step(rows_f32(batch, "batch"))
        return reports[-1] if reports else None

    def flush(self) -> List[Dict[str, Any]]:
        """Make a pending preprocessing estimate from the rows seen so far and train on them."""
        return self._t.flush()

    @property
    def estimating(self) -> Optional[Tuple[int, int]]:
        """``(rows seen, rows needed)`` while the preprocessing is being estimated, else None."""
        return self._t.estimating

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Start from given parameters (overcomplete's keys); the optimiser state is kept."""
        self._t.load_state_dict(state_arrays(state))

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


_with_table(Trainer.__init__, ["self", "input_dim", "nb_concepts", "k"],
            ["mean", "scale_factor", "estimate_rows", "threads", "provenance"])
