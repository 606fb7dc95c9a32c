"""Training views over a Store: torch Datasets whose workers only slice memory maps.

Random crop positions come from a counter-based hash of (seed, epoch, item, draw), so a run is
reproducible whatever the number of DataLoader workers and whichever worker serves an item. Call
`set_epoch(epoch)` before each epoch (with non-persistent workers the dataset is re-sent to the
workers every epoch, so they see the new epoch).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from clmr.data.store import Store, StoreError

MASK64 = (1 << 64) - 1


def mix64(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64 finaliser chained over the values)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & MASK64)) * 0xBF58476D1CE4E5B9 & MASK64
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & MASK64
        h ^= h >> 29
    return h


class _CropView(Dataset):
    """Shared part: the split's track indices, the crop length and the (seed, epoch) state."""

    def __init__(self, store: Store, split: str | None, crop_length: int, seed: int = 0) -> None:
        if crop_length <= 0:
            raise StoreError(f"{store.path}: crop_length must be positive, got {crop_length}")
        self.store = store
        self.split = split
        self.crop_length = int(crop_length)
        self.seed = int(seed)
        self.epoch = 0
        self.indices = store.split_indices(split)
        if len(self.indices) == 0:
            raise StoreError(f"{store.path}: split {split!r} holds no tracks")

    def set_epoch(self, epoch: int) -> None:
        """Draw different crops in each epoch (same epoch, same crops)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def _random_crop(self, item: int, draw: int) -> torch.Tensor:
        i = int(self.indices[item])
        room = self.store.length(i) - self.crop_length + 1
        start = mix64(self.seed, self.epoch, item, draw) % room if room > 0 else 0
        return torch.from_numpy(self.store.crop(i, start, self.crop_length))


class ContrastivePairs(_CropView):
    """(x_i, x_j): two independent uniform random crops of the same track, float32 (crop_length,)."""

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._random_crop(item, 0), self._random_crop(item, 1)


class LabelledCrops(_CropView):
    """(x, y): one random crop per track per epoch and its target (multi-hot float32 or class int64)."""

    def __init__(self, store: Store, split: str | None, crop_length: int, seed: int = 0) -> None:
        super().__init__(store, split, crop_length, seed)
        if store.task is None:
            raise StoreError(f"{store.path}: the store has no labels; LabelledCrops needs a labelled store")
        self.targets = torch.from_numpy(store.targets(self.indices))

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._random_crop(item, 0), self.targets[item]
