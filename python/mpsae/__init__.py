"""mpsae: Matching Pursuit Sparse Autoencoders, exact and fast.

The Rust engine of the ``mpsae`` command from Python, with overcomplete's names and
conventions (``overcomplete.sae.MpSAE``): build a model, ``encode``/``decode``/``forward`` numpy
arrays (:mod:`mpsae.model`), train on arrays, memory-maps or files with :func:`train`, or batch by
batch with :class:`Trainer` (:mod:`mpsae.training`), harvest a model's activations
(:mod:`mpsae.harvest`), score an SAE spliced into it (:mod:`mpsae.splice`), probe a sentence,
steer the model and compare runs (:mod:`mpsae.workbench`), train straight from a model's forward
passes (:func:`train_from_model`, :mod:`mpsae.stream`). The PyTorch module
is :mod:`mpsae.torch`. This module only re-exports.

>>> import numpy as np, mpsae
>>> x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
>>> sae = mpsae.MpSAE(16, 32, k=3)
>>> residual, codes = sae.encode(x)
>>> codes.shape
(64, 32)
"""
from __future__ import annotations

from . import _mpsae, files
from .harvest import harvest
from .logit_lens import logit_lens
from .model import MpSAE, defaults, evaluate, load
from .splice import evaluate_in_model
from .stream import train_from_model
from .training import STEP_STATISTICS, Trainer, options, train
from .workbench import compare, generate_steered, probe, steer

__all__ = ["MpSAE", "Trainer", "train", "load", "evaluate", "defaults", "options", "harvest", "evaluate_in_model",
           "logit_lens", "files", "STEP_STATISTICS", "probe", "steer", "generate_steered", "compare",
           "train_from_model", "__version__"]
__version__: str = _mpsae.__version__
