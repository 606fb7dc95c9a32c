"""Batches of song-level crops across tracks: the crops of consecutive tracks fill fixed-size batches for
one crop function (e.g. a model's h), and each track's per-crop outputs are averaged into one song-level
row as soon as its last crop is through, in input order.

With `threaded=True` (used on GPU) the crops are read in a background thread with a bounded queue while
the model runs, so the device is not left waiting on the decoder; on CPU they are read inline, since a
decode thread would compete with the model for the same cores. Memory is bounded by the batch size,
the chunk size and the queue, not by track length.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from clmr.audio import AudioError
from clmr.errors import check_whole
from clmr.songs.crops import Song

T = TypeVar("T")

CropFn = Callable[[np.ndarray], np.ndarray]
"""(B, crop_length) float32 crops -> (B, K) float32 per-crop outputs."""


@dataclass
class TrackOutput:
    """The result of one track: the mean of its crop outputs, optionally every crop's output, or the
    error; `notes` holds what the decoder printed while reading it (e.g. libmpg123 resync notes)."""

    key: str
    sample_rate: int
    samples: int = 0
    n_crops: int = 0
    mean: np.ndarray | None = None
    crops: np.ndarray | None = None
    error: AudioError | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the track was read and embedded."""
        return self.error is None

    @property
    def duration(self) -> float:
        """Track length in seconds."""
        return self.samples / self.sample_rate


@dataclass
class _Accumulator:
    key: str
    keep_crops: bool
    total: np.ndarray | None = None
    count: int = 0
    pending: int = 0
    finished: bool = False
    samples: int = 0
    error: AudioError | None = None
    notes: list[str] = field(default_factory=list)
    parts: list[np.ndarray] = field(default_factory=list)

    def add(self, out: np.ndarray) -> None:
        part_sum = out.sum(axis=0, dtype=np.float64)
        self.total = part_sum if self.total is None else self.total + part_sum
        self.count += len(out)
        self.pending -= len(out)
        if self.keep_crops:
            self.parts.append(out)

    def result(self, sample_rate: int) -> TrackOutput:
        if self.error is not None:
            return TrackOutput(self.key, sample_rate, self.samples, error=self.error, notes=self.notes)
        mean = (self.total / self.count).astype(np.float32)
        crops = np.concatenate(self.parts) if self.keep_crops else None
        return TrackOutput(self.key, sample_rate, self.samples, self.count, mean, crops, notes=self.notes)


def prefetch(items: Iterator[T], size: int = 4) -> Iterator[T]:
    """Iterate `items` in a background thread, at most `size` items ahead; errors re-raise here."""
    box: queue.Queue = queue.Queue(size)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as err:  # re-raised in the consumer
            put((None, err))

    thread = threading.Thread(target=work, name="clmr-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, err = box.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()


def track_events(songs: Iterable[Song]) -> Iterator[tuple[str, int, Any]]:
    """Per track (numbered by `slot`): ("start", slot, key), ("crops", slot, chunk) for each chunk,
    then ("end", slot, (samples, error, notes))."""
    for slot, (key, open_crops) in enumerate(songs):
        yield "start", slot, key
        crops = None
        try:
            crops = open_crops()
            for chunk in crops:
                yield "crops", slot, chunk
            yield "end", slot, (crops.samples, None, crops.notes)
        except AudioError as err:
            samples, notes = (crops.samples, crops.notes) if crops is not None else (0, [])
            yield "end", slot, (samples, err, notes)


def run_songs(
    fn: CropFn,
    songs: Iterable[Song],
    *,
    sample_rate: int,
    batch_size: int = 32,
    keep_crops: bool = False,
    threaded: bool = True,
) -> Iterator[TrackOutput]:
    """Apply `fn` to every crop of every song in batches of `batch_size` crops taken across track
    boundaries; yield one `TrackOutput` per song, in input order, as soon as it is complete (with
    `keep_crops`, also every crop's output). A song whose audio fails comes back with `.error` set."""
    check_whole("batch size", batch_size, unit="crops")
    events = prefetch(track_events(songs)) if threaded else track_events(songs)
    order: deque[_Accumulator] = deque()
    accs: dict[int, _Accumulator] = {}
    batch: list[tuple[_Accumulator, np.ndarray]] = []
    filled = 0

    def flush() -> None:
        nonlocal batch, filled
        out = fn(np.concatenate([crops for _, crops in batch]))
        start = 0
        for acc, crops in batch:
            acc.add(out[start : start + len(crops)])
            start += len(crops)
        batch, filled = [], 0

    def finished() -> Iterator[TrackOutput]:
        while order and order[0].finished and order[0].pending == 0:
            yield order.popleft().result(sample_rate)

    for kind, slot, payload in events:
        if kind == "start":
            accs[slot] = _Accumulator(payload, keep_crops)
            order.append(accs[slot])
        elif kind == "crops":
            acc, start = accs[slot], 0
            while start < len(payload):
                take = min(batch_size - filled, len(payload) - start)
                batch.append((acc, payload[start : start + take]))
                acc.pending += take
                filled += take
                start += take
                if filled == batch_size:
                    flush()
        else:
            acc = accs.pop(slot)
            acc.finished = True
            acc.samples, acc.error, acc.notes = payload
        yield from finished()
    if batch:
        flush()
    yield from finished()
