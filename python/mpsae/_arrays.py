"""The one validation of the arrays the numpy API takes (rows of activations, state dicts,
data sources)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

#: The float dtypes the engine reads as they are.
FLOATS = (np.float16, np.float32, np.float64)


def checked_rows(x: Any, name: str = "x") -> np.ndarray:
    """``x`` as a 2-D float array (float16/32/64), C-contiguous and little-endian; raises
    ``ValueError`` for another shape and ``TypeError`` for another dtype. No copy where none is
    needed."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x d), got shape {a.shape}")
    if a.dtype not in FLOATS:
        raise TypeError(f"{name} must hold floats (float16, float32 or float64), not {a.dtype}")
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return a


def rows_f32(x: Any, name: str = "x") -> np.ndarray:
    """:func:`checked_rows` as float32 (copied only where the dtype needs it)."""
    return np.ascontiguousarray(checked_rows(x, name), dtype=np.float32)


def state_arrays(state: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """A state dict's tensors (torch or numpy) as float32 C-contiguous arrays."""
    arrays = {}
    for key, v in state.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        arrays[key] = np.ascontiguousarray(v, dtype=np.float32)
    return arrays


def data_sources(data: Any) -> Tuple[List[Any], List[np.ndarray]]:
    """The engine's data sources of ``data`` (an array, a memmap, a path, or a list of them):
    paths as strings, arrays as ``(name, address, dtype, rows, d)``; and the arrays, which the
    caller keeps alive while the engine reads them."""
    items: Sequence[Any] = data if isinstance(data, (list, tuple)) else [data]
    sources: List[Any] = []
    keep: List[np.ndarray] = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            sources.append(os.fspath(item))
            continue
        a = checked_rows(item, "data")
        keep.append(a)
        name = getattr(item, "filename", None) or f"<array {a.shape[0]}x{a.shape[1]} {a.dtype}>"
        sources.append((os.fspath(name), a.__array_interface__["data"][0], str(a.dtype), a.shape[0], a.shape[1]))
    return sources, keep
