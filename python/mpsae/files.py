"""The names of the files mpsae reads and writes, as the library defines them.

Read from the engine (``_mpsae.FILES``), so Python never spells a file name itself: a run
folder's :data:`CONFIG`, :data:`METRICS`, :data:`MODEL`, :data:`CHECKPOINT` and :data:`LOCK`, a
harvest folder's :data:`HARVEST` and :data:`TOKENS`, the concept browser's :data:`LOGIT_LENS`,
a SAELens folder's :data:`SAELENS_CONFIG` and :data:`SAELENS_WEIGHTS`, and a run's comparison
with another, :data:`COMPARE`.
"""
from __future__ import annotations

from . import _mpsae

__all__ = ["CONFIG", "METRICS", "MODEL", "CHECKPOINT", "LOCK", "HARVEST", "TOKENS", "LOGIT_LENS",
           "SAELENS_CONFIG", "SAELENS_WEIGHTS", "COMPARE"]

CONFIG: str = _mpsae.FILES["config"]
METRICS: str = _mpsae.FILES["metrics"]
MODEL: str = _mpsae.FILES["model"]
CHECKPOINT: str = _mpsae.FILES["checkpoint"]
LOCK: str = _mpsae.FILES["lock"]
HARVEST: str = _mpsae.FILES["harvest"]
TOKENS: str = _mpsae.FILES["tokens"]
LOGIT_LENS: str = _mpsae.FILES["logit_lens"]
SAELENS_CONFIG: str = _mpsae.FILES["saelens_config"]
SAELENS_WEIGHTS: str = _mpsae.FILES["saelens_weights"]
COMPARE: str = _mpsae.FILES["compare"]
