"""clmr: Contrastive Learning of Musical Representations (Spijkervet & Burgoyne, ISMIR 2021).

The top-level names load lazily, so that `import clmr.audio` or `import clmr.data` (preprocessing
workers, the download command) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_MODEL_NAMES = ("CLMR", "SampleCNN", "load_model", "save_model")
_SUBMODULES = ("audio", "augment", "data", "evaluate", "hear", "inference", "losses", "models", "train")

__all__ = ["CLMR", "SampleCNN", "__version__", "load_model", "save_model"]

if TYPE_CHECKING:
    from clmr.models import CLMR, SampleCNN, load_model, save_model


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        return getattr(importlib.import_module("clmr.models"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"clmr.{name}")
    raise AttributeError(f"module 'clmr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODEL_NAMES, *_SUBMODULES])
