"""Datasets, preprocessing into the memory-mapped store, and the training views over it.

The torch views (`ContrastivePairs`, `LabelledCrops`, `track_crops`) load on first use, so that
generating or preprocessing data does not import torch.
"""

from clmr.data.datasets import DATASETS, DatasetError
from clmr.data.preprocessing import preprocess
from clmr.data.store import Store, StoreError

_VIEWS = ("ContrastivePairs", "LabelledCrops", "track_crops")


def __getattr__(name: str):
    if name in _VIEWS:
        from clmr.data import views

        return getattr(views, name)
    raise AttributeError(f"module 'clmr.data' has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "ContrastivePairs",
    "DatasetError",
    "LabelledCrops",
    "Store",
    "StoreError",
    "preprocess",
    "track_crops",
]
