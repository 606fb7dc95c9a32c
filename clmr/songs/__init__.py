"""The song-level path: every track cut into consecutive crops of the model's crop length
(`clmr.songs.crops`), crops batched across tracks (`clmr.songs.batch`) and a model's per-crop outputs
averaged per song (`clmr.songs.apply`). Evaluation, inference and the HEAR API all go through it.

The names load lazily, so that a decode worker process (`clmr.songs.workers`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "SongCrops",
    "TrackOutput",
    "array_songs",
    "embed_audio",
    "embed_file",
    "embed_files",
    "file_songs",
    "run_model",
    "run_songs",
    "song_crops",
    "store_songs",
    "tag_file",
    "tag_files",
    "top_tags",
    "track_crops",
]

if TYPE_CHECKING:
    from clmr.songs.apply import (
        embed_audio,
        embed_file,
        embed_files,
        run_model,
        tag_file,
        tag_files,
        top_tags,
    )
    from clmr.songs.batch import TrackOutput, run_songs
    from clmr.songs.crops import SongCrops, array_songs, file_songs, song_crops, store_songs, track_crops


def __getattr__(name: str) -> Any:
    if name in __all__:
        for home in ("crops", "batch", "apply"):  # torch (apply) only when one of its names is asked for
            module = importlib.import_module(f"clmr.songs.{home}")
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"module 'clmr.songs' has no attribute {name!r}")
