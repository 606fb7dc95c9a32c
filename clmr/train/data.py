"""The data side of training: store checks, a (seed, epoch)-keyed sharded sampler and the loaders.

Every random choice of the data side is a function of (seed, epoch, track): the sampler's order
comes from (seed, epoch) and each item asks the view for the crops of that epoch, so a resumed
epoch draws the same batches and crops as the uninterrupted run, with any number of workers. A run
stopped in the middle of an epoch (`--max-time`, `--max-steps`) resumes there: the sampler skips the
batches of the epoch that were already trained on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from clmr.config import Config
from clmr.errors import ClmrError


class StoreMismatchError(ClmrError):
    """The store cannot train this config (sample rate, size, track length); says what to change."""


class EpochSampler(Sampler):
    """Yields `(track, epoch)` keys: a (seed, epoch) permutation (or the identity), cut into equal
    shards, one per rank (padded by wrapping so that every rank has as many batches)."""

    def __init__(self, n: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine before each epoch."""
        self.epoch = int(epoch)

    def resume(self, epoch: int, done: int) -> None:
        """The next pass, if it is over `epoch`, starts after this rank's first `done` keys (the batches
        of that epoch trained on before the run stopped); later passes are whole again."""
        self._resume = (int(epoch), int(done))

    def __len__(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self):
        order = np.arange(self.n)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        order = np.resize(order, len(self) * self.world)
        start = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        self._resume = None
        for i in order[self.rank :: self.world][start:]:
            yield int(i), self.epoch


class KeyedView(Dataset):
    """A data view read by `(item, epoch)` keys, with the item's label targets appended if given; with
    `index`, item k is the view's item `index[k]` (a subset of its tracks)."""

    def __init__(self, view: Any, targets: np.ndarray | None = None, index: np.ndarray | None = None) -> None:
        self.view, self.targets, self.index = view, targets, index

    def __len__(self) -> int:
        return len(self.view) if self.index is None else len(self.index)

    def __getitem__(self, key: tuple[int, int]):
        i, epoch = key
        self.view.set_epoch(epoch)
        item = tuple(self.view[i if self.index is None else int(self.index[i])])
        if self.targets is None:
            return item
        return (*item, torch.as_tensor(self.targets[i]))


def check_store(path: str | Path, config: Config):
    """Open the store and check, before any training, that it fits `config`; returns the store."""
    from clmr.data import Store

    store = Store(path)
    if store.sample_rate != config.sample_rate:
        raise StoreMismatchError(
            f"{path}: the store holds audio at {store.sample_rate} Hz but the config (preset "
            f"'{config.preset}') trains at {config.sample_rate} Hz; preprocess the audio again with "
            f"`clmr preprocess SOURCE --out NEW_STORE --sample-rate {config.sample_rate}`"
        )
    for split in ("train", "valid"):
        idx = store.split_indices(split)
        if len(idx) == 0:
            raise StoreMismatchError(
                f"{path}: the store has no '{split}' tracks (it holds {len(store)} in all)"
            )
        lengths = store.lengths[idx]
        short = np.flatnonzero(lengths < config.crop_length)
        if len(short):
            first = int(idx[short[0]])
            raise StoreMismatchError(
                f"{path}: {len(short)} of the {len(idx)} '{split}' tracks are shorter than the crop of "
                f"{config.crop_length} samples ({config.crop_length / config.sample_rate:.2f} s), e.g. "
                f"'{store.track_id(first)}' with {store.length(first)} samples; use longer audio or a "
                "smaller --model.n-blocks"
            )
    if config.supervised and store.task is None:
        raise StoreMismatchError(f"{path}: --supervised needs a store with labels; this one has none")
    return store


def check_batch(store, config: Config, world_size: int, path: str | Path) -> None:
    """The global batch must fit the training split (full batches only are trained on)."""
    n_train = len(store.split_indices("train"))
    global_batch = config.batch_size * world_size
    if global_batch > n_train:
        fits = n_train // world_size
        advice = f"use --batch-size {fits} or less, or a bigger store" if fits >= 2 else "use a bigger store"
        raise StoreMismatchError(
            f"{path}: a global batch of {global_batch} (batch_size {config.batch_size} x {world_size} "
            f"processes) is larger than the {n_train} training tracks; {advice}"
        )


def default_workers(gpu: bool = False, processes: int = 1) -> int:
    """Loader workers when `trainer.num_workers` is none: one less than this process's share of the
    cores it may use (`processes` training processes on the machine; the main process trains), at most
    4 on CPU, where training needs the cores, and 8 feeding a GPU: one worker read and batched 1,200 to
    4,000 reference crop pairs a second on a 2-core VM, and one GPU aims at 10,000."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(8 if gpu else 4, cores // max(1, processes) - 1))


def loaders(store, config: Config, rank: int, world: int, pin: bool) -> tuple[DataLoader, DataLoader]:
    """Train and valid loaders over a store: contrastive pairs (+ targets for the probe) or labelled crops.
    Both shard by rank with an `EpochSampler`; training drops the last partial batch. `pin`: training on
    a GPU (pinned memory, more workers)."""
    from clmr.data import ContrastivePairs, LabelledCrops

    c = config
    with_targets = store.task is not None and c.probe and not c.supervised

    def loader(split: str, shuffle: bool) -> DataLoader:
        view = (LabelledCrops if c.supervised else ContrastivePairs)(store, split, c.crop_length, seed=c.seed)
        targets = store.targets(store.split_indices(split)) if with_targets else None
        sampler = EpochSampler(len(view), c.seed, shuffle, rank, world)
        per_node = max(1, world // c.trainer.num_nodes)
        workers = c.trainer.num_workers
        workers = default_workers(gpu=pin, processes=per_node) if workers is None else workers
        return DataLoader(
            KeyedView(view, targets),
            batch_size=min(c.batch_size, len(sampler)),
            sampler=sampler,
            drop_last=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=pin,  # page-locked batches: the engine's copies to the GPU do not block
        )

    return loader("train", shuffle=True), loader("valid", shuffle=False)
