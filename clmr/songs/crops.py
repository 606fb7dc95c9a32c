"""The song-level crops: a track cut into consecutive non-overlapping crops of the model's crop length,
the remainder dropped, a track shorter than one crop zero-padded to one crop. The reference
(`clmr/data.py:ContrastiveDataset.concat_clip`, used by `clmr/evaluation.py:evaluate`) splits a track
with `torch.split` and drops the last piece even when it is a whole crop; clmr keeps a whole last crop.
`SongCrops` is the one place tracks are cut; the sources below feed it a store track, an audio file or
an in-memory waveform block by block, so memory does not grow with track length.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Protocol

import numpy as np

from clmr.audio import read_blocks
from clmr.errors import check_whole

CHUNK_CROPS = 16
"""Crops per chunk a source yields at most (a chunk is split across batches as needed)."""


class CropSource(Protocol):
    """Chunks of (n, crop_length) float32 crops of one track; `samples` is its length once iterated."""

    samples: int

    def __iter__(self) -> Iterator[np.ndarray]: ...


Song = tuple[str, Callable[[], CropSource]]
"""A track to run: its key (a path, a store index) and a function that opens its crops."""


class SongCrops:
    """The crops of one track from a stream of float32 mono blocks, in chunks of at most `max_crops`.

    After iteration `samples` holds the number of samples seen (the track's length).
    """

    def __init__(self, blocks: Iterable[np.ndarray], crop_length: int, max_crops: int = CHUNK_CROPS) -> None:
        check_whole("crop_length", crop_length, unit="samples")
        check_whole("max_crops", max_crops, unit="crops")
        self.blocks = blocks
        self.crop_length = int(crop_length)
        self.max_crops = int(max_crops)
        self.samples = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        length, chunk = self.crop_length, self.crop_length * self.max_crops
        carry = np.zeros(0, np.float32)  # samples of a crop not yet complete
        emitted = False
        for block in self.blocks:
            self.samples += len(block)
            data = np.concatenate([carry, block]) if len(carry) else block
            whole = len(data) // length * length
            for start in range(0, whole, chunk):
                yield data[start : min(start + chunk, whole)].reshape(-1, length)
                emitted = True
            carry = data[whole:]
        if not emitted:  # shorter than one crop: one zero-padded crop
            yield np.pad(carry, (0, length - len(carry)))[None]


def song_crops(waveform: np.ndarray, crop_length: int) -> np.ndarray:
    """All (n_crops, crop_length) crops of an in-memory mono waveform at once."""
    return np.concatenate(list(SongCrops([np.asarray(waveform, np.float32)], crop_length)))


def track_crops(store, i: int, crop_length: int) -> np.ndarray:
    """All (n_crops, crop_length) crops of track i of a `clmr.data.Store` at once."""
    return np.concatenate(list(SongCrops(store.blocks(i, crop_length * CHUNK_CROPS), crop_length)))


def store_songs(
    store, indices: Sequence[int], crop_length: int, max_crops: int = CHUNK_CROPS
) -> Iterator[Song]:
    """The tracks `indices` of a `clmr.data.Store`, keyed by their index, read from its memory map."""
    for i in indices:
        blocks = partial(store.blocks, int(i), crop_length * max_crops)
        yield str(int(i)), lambda blocks=blocks: SongCrops(blocks(), crop_length, max_crops)


def file_songs(
    paths: Iterable[str | os.PathLike], sample_rate: int, crop_length: int, max_crops: int = CHUNK_CROPS
) -> Iterator[Song]:
    """Audio files, keyed by path, decoded and resampled to `sample_rate` block by block when opened."""
    for path in paths:
        blocks = partial(read_blocks, path, sample_rate, crop_length * max_crops)
        yield str(path), lambda blocks=blocks: SongCrops(blocks(), crop_length, max_crops)


def array_songs(
    waveforms: Iterable[tuple[str, np.ndarray]], crop_length: int, max_crops: int = CHUNK_CROPS
) -> Iterator[Song]:
    """In-memory float32 mono waveforms at the model's rate, given as (key, waveform) pairs."""
    for key, waveform in waveforms:
        yield key, partial(SongCrops, [waveform], crop_length, max_crops)
