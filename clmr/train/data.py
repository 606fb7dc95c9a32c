"""The data side of training: store checks, a (seed, epoch)-keyed sharded sampler and the loaders.

Every random choice of the data side is a function of (seed, epoch, track): the sampler's order
comes from (seed, epoch) and each item asks the view for the crops of that epoch, so a resumed
epoch draws the same batches and crops as the uninterrupted run, with any number of workers. A run
stopped in the middle of an epoch (`--max-time`, `--max-steps`) resumes there: the sampler skips the
batches of the epoch that were already trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from clmr.config import Config, ConfigError
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
        """Called by Lightning before each epoch."""
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
    """A data view read by `(track, epoch)` keys, with the track's label targets appended if given."""

    def __init__(self, view: Any, targets: np.ndarray | None = None) -> None:
        self.view, self.targets = view, targets

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, key: tuple[int, int]):
        i, epoch = key
        self.view.set_epoch(epoch)
        item = tuple(self.view[i])
        if self.targets is None:
            return item
        return (*item, torch.as_tensor(self.targets[i]))


def open_store(path: str | Path, config: Config):
    """Open the store and check, before any training, that it fits `config`."""
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


class TrainData(L.LightningDataModule):
    """Train and valid loaders over a store: contrastive pairs (+ targets for the probe) or labelled crops."""

    def __init__(self, store, config: Config) -> None:
        super().__init__()
        self.store, self.config = store, config
        self.with_targets = store.task is not None and (config.supervised or config.probe)
        self.saved_layout: dict[str, int] | None = None  # the checkpoint's batch layout, when resuming

    def layout(self) -> dict[str, int]:
        """What a mid-epoch resume needs unchanged to skip exactly the samples already trained on."""
        return {"batch_size": self.config.batch_size, "world_size": self.trainer.world_size}

    def state_dict(self) -> dict[str, int]:
        return self.layout()

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.saved_layout = dict(state_dict)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        from clmr.data import ContrastivePairs, LabelledCrops

        c = self.config
        view_cls = LabelledCrops if c.supervised else ContrastivePairs
        view = view_cls(self.store, split, c.crop_length, seed=c.seed)
        targets = None
        if self.with_targets and not c.supervised:
            targets = self.store.targets(self.store.split_indices(split))
        dataset = KeyedView(view, targets)
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = EpochSampler(len(dataset), c.seed, shuffle, rank, world)
        batch_size = min(c.batch_size, len(sampler))
        if split == "train":
            self._position(sampler, batch_size)
        workers = c.trainer.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.trainer.accelerator.__class__.__name__ == "CUDAAccelerator",
        )

    def _position(self, sampler: EpochSampler, batch_size: int) -> None:
        """Start the training sampler where the (possibly resumed) fit loop is: at its epoch (workers
        may draw keys before Lightning's `set_epoch`) and, in an epoch a stopped run left unfinished
        (see `clmr.train.callbacks.MidEpochResume`), after the batches already trained on."""
        loop = getattr(self.trainer, "fit_loop", None)
        if loop is None:
            return
        epoch = loop.epoch_progress.current
        sampler.set_epoch(epoch.processed)
        done = loop.epoch_loop.batch_progress.current.completed
        if loop.restarting and epoch.processed < epoch.started and done > 0:
            if self.saved_layout is not None and self.saved_layout != self.layout():
                raise ConfigError(
                    f"the run stopped in the middle of epoch {epoch.processed} with batch_size "
                    f"{self.saved_layout['batch_size']} on {self.saved_layout['world_size']} process(es); resuming "
                    f"it with batch_size {self.config.batch_size} on {self.trainer.world_size} would skip other "
                    "samples than those trained on: resume with the run's --batch-size and devices"
                )
            sampler.resume(epoch.processed, done * batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)
