"""The song-level crops: a track cut into consecutive non-overlapping crops of the model's crop length
(or crops every `hop` samples), the remainder dropped, a track shorter than one crop zero-padded to one crop. The reference
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

from clmr.errors import check_whole
from clmr.songs.decode import display_name, file_blocks

CHUNK_CROPS = 16
"""Crops per chunk a source yields at most (a chunk is split across batches as needed)."""


class CropSource(Protocol):
    """Chunks of (n, crop_length) float32 crops of one track; `samples` is its length once iterated,
    `notes` what its decoder printed."""

    samples: int
    notes: list[str]

    def __iter__(self) -> Iterator[np.ndarray]: ...


Song = tuple[str, Callable[[], CropSource]]
"""A track to run: its key (a path, a store index) and a function that opens its crops."""


class SongCrops:
    """The crops of one track from a stream of float32 mono blocks, in chunks of at most `max_crops`:
    crop i starts at sample i * `hop` (default: the crop length, consecutive non-overlapping crops).

    After iteration `samples` holds the number of samples seen (the track's length); `notes` holds what
    the decoder printed while the track was read (file sources only).
    """

    def __init__(
        self,
        blocks: Iterable[np.ndarray],
        crop_length: int,
        max_crops: int = CHUNK_CROPS,
        hop: int | None = None,
        notes: list[str] | None = None,
    ) -> None:
        check_whole("crop_length", crop_length, unit="samples")
        check_whole("max_crops", max_crops, unit="crops")
        if hop is not None:
            check_whole("hop", hop, unit="samples")
        self.blocks = blocks
        self.crop_length = int(crop_length)
        self.max_crops = int(max_crops)
        self.hop = int(hop or crop_length)
        self.samples = 0
        self.notes = notes if notes is not None else []

    def __iter__(self) -> Iterator[np.ndarray]:
        length, hop = self.crop_length, self.hop
        carry = np.zeros(0, np.float32)  # samples from the next crop's start on
        skip = 0  # samples still to drop before the next crop starts (hop > crop length)
        emitted = False
        for block in self.blocks:
            self.samples += len(block)
            dropped = min(skip, len(block))
            skip -= dropped
            data = np.concatenate([carry, block[dropped:]]) if len(carry) else block[dropped:]
            n = (len(data) - length) // hop + 1 if len(data) >= length else 0
            if n:
                windows = np.lib.stride_tricks.sliding_window_view(data, length)[::hop]
                for start in range(0, n, self.max_crops):
                    yield np.ascontiguousarray(windows[start : min(start + self.max_crops, n)])
                emitted = True
            carry = data[n * hop :]
            skip += max(0, n * hop - len(data))
        if not emitted:  # shorter than one crop: one zero-padded crop
            yield np.pad(carry[:length], (0, length - len(carry[:length])))[None]


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
    paths: Iterable[str | os.PathLike],
    sample_rate: int,
    crop_length: int,
    max_crops: int = CHUNK_CROPS,
    hop: int | None = None,
) -> Iterator[Song]:
    """Audio files, keyed by path (non-UTF-8 bytes escaped), checked and decoded and resampled to
    `sample_rate` block by block when opened (`clmr.songs.decode.file_blocks`); crops every `hop`
    samples (default: the crop length)."""
    if hop is not None:
        check_whole("hop", hop, unit="samples")
    for path in paths:

        def open_crops(path: str | os.PathLike = path) -> SongCrops:
            notes: list[str] = []
            blocks = file_blocks(path, sample_rate, crop_length * max_crops, notes)
            return SongCrops(blocks, crop_length, max_crops, hop, notes)

        yield display_name(path), open_crops


def array_songs(
    waveforms: Iterable[tuple[str, np.ndarray]], crop_length: int, max_crops: int = CHUNK_CROPS
) -> Iterator[Song]:
    """In-memory float32 mono waveforms at the model's rate, given as (key, waveform) pairs."""
    for key, waveform in waveforms:
        yield key, partial(SongCrops, [waveform], crop_length, max_crops)
