"""clmr: Contrastive Learning of Musical Representations (Spijkervet & Burgoyne, ISMIR 2021).

The top-level names load lazily, so that `import clmr.audio` or `import clmr.data` (preprocessing
workers, the download command) does not pay for importing torch. A model on songs is a function of the
model (`clmr.embed_file(model, path)`, `clmr.tag_file(model, path, top=5)`, from `clmr.songs`), so
that the model class knows nothing of files or devices.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_MODEL_NAMES = ("CLMR", "SampleCNN", "load_model", "save_model")
_SONG_NAMES = ("embed_audio", "embed_file", "embed_files", "tag_file", "tag_files", "top_tags")
_SUBMODULES = (
    "audio",
    "augment",
    "data",
    "evaluate",
    "hear",
    "inference",
    "losses",
    "models",
    "songs",
    "train",
)

__all__ = [
    "CLMR",
    "SampleCNN",
    "__version__",
    "embed_audio",
    "embed_file",
    "embed_files",
    "load_model",
    "save_model",
    "tag_file",
    "tag_files",
    "top_tags",
]

if TYPE_CHECKING:
    from clmr.models import CLMR, SampleCNN, load_model, save_model
    from clmr.songs import embed_audio, embed_file, embed_files, tag_file, tag_files, top_tags


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        return getattr(importlib.import_module("clmr.models"), name)
    if name in _SONG_NAMES:
        return getattr(importlib.import_module("clmr.songs"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"clmr.{name}")
    raise AttributeError(f"module 'clmr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODEL_NAMES, *_SONG_NAMES, *_SUBMODULES])
