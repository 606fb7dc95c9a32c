"""Datasets, preprocessing into the memory-mapped store, and the training views over it.

The torch views (`ContrastivePairs`, `LabelledCrops`) load on first use, so that generating or
preprocessing data (and `clmr --help`) does not import torch. A store track's song-level crops are
`clmr.songs.track_crops` (the layer above this one).
"""

import importlib

from clmr.data.datasets import DATASETS, DatasetError
from clmr.data.preprocessing import preprocess
from clmr.data.store import Store, StoreError

_LAZY = {
    "ContrastivePairs": "clmr.data.views",
    "LabelledCrops": "clmr.data.views",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clmr.data' has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "ContrastivePairs",
    "DatasetError",
    "LabelledCrops",
    "Store",
    "StoreError",
    "preprocess",
]
