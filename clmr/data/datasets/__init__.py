"""Dataset layouts: each turns a dataset root into sorted entries (path, track id, split, labels)."""

from __future__ import annotations

import os

from clmr.data.datasets.base import DatasetError, DatasetSpec, Entry, Skip, hash_split
from clmr.data.datasets.folder import scan_folder

DATASETS = ("folder", "synthetic", "mtat", "msd", "gtzan")


def scan(
    dataset: str,
    root: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    split: str | None = None,
    task: str | None = None,
) -> DatasetSpec:
    """The DatasetSpec of `root` read with the `dataset` layout (one of DATASETS)."""
    if dataset in ("folder", "synthetic"):
        return scan_folder(root, labels=labels, split=split, task=task, name=dataset)
    if dataset == "mtat":
        from clmr.data.datasets.mtat import DEFAULT_SPLIT, scan_mtat

        return scan_mtat(root, split=split or DEFAULT_SPLIT)
    if dataset == "msd":
        from clmr.data.datasets.msd import scan_msd

        return scan_msd(root, split=split, labels=labels)
    if dataset == "gtzan":
        from clmr.data.datasets.gtzan import scan_gtzan

        return scan_gtzan(root, split=split or "filtered")
    raise DatasetError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


__all__ = ["DATASETS", "DatasetError", "DatasetSpec", "Entry", "Skip", "hash_split", "scan"]
