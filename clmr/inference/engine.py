"""Batched inference across tracks: crops of consecutive tracks fill fixed-size batches, each track's
per-crop outputs are averaged into one song-level row as soon as its last crop is through.

With `threaded=True` (used on GPU) decoding runs in a background thread with a bounded queue while
the model runs, so the device is not left waiting on the decoder; on CPU it runs inline, since a
decode thread would compete with the model for the same cores. Memory is bounded by the batch size,
the chunk size and the queue, not by track length.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from clmr.audio import AudioError
from clmr.devices import usable_device
from clmr.errors import check_whole
from clmr.models import CLMR

T = TypeVar("T")


class CropSource(Protocol):
    """Chunks of (n, crop_length) crops of one track; `samples` is its length once iterated."""

    samples: int

    def __iter__(self) -> Iterator[np.ndarray]: ...


CropFn = Callable[[np.ndarray], np.ndarray]
"""(B, crop_length) float32 crops -> (B, K) float32 per-crop outputs."""


@dataclass
class TrackOutput:
    """The result of one track: the mean of its crop outputs, optionally every crop's output, or the error."""

    key: str
    sample_rate: int
    samples: int = 0
    n_crops: int = 0
    mean: np.ndarray | None = None
    crops: np.ndarray | None = None
    error: AudioError | None = None

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
            return TrackOutput(self.key, sample_rate, self.samples, error=self.error)
        mean = (self.total / self.count).astype(np.float32)
        crops = np.concatenate(self.parts) if self.keep_crops else None
        return TrackOutput(self.key, sample_rate, self.samples, self.count, mean, crops)


def resolve_device(device: str | torch.device | None, model: torch.nn.Module | None = None) -> torch.device:
    """`device` as a torch.device; None or "auto" means the model's device, else CUDA when available.
    Anything else must be a device this machine has (`clmr.devices.usable_device`)."""
    if device is None or device == "auto":
        if model is not None and device is None:
            return next(model.parameters()).device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return usable_device(device)


def check_batch_size(batch_size: int | None) -> None:
    """None (the default) or a whole number >= 1."""
    if batch_size is not None:
        check_whole("batch size", batch_size, unit="crops")


CPU_ACTIVATION_BUDGET = 16 << 20
"""Bytes of first-layer activations per CPU batch: beyond the cache, bigger batches get slower."""


def default_batch_size(model: CLMR, device: torch.device) -> int:
    """Crops per forward pass when the user does not say. On CPU, as many crops as keep the first
    layer's output within `CPU_ACTIVATION_BUDGET` (1 for the reference SampleCNN, whose 10 MB per crop
    make bigger batches slower: 39 crops/s at batch 1, 23 at batch 32 on two cores); up to 64 elsewhere,
    where batching across tracks is what fills the device."""
    if device.type != "cpu":
        return 64
    first = model.encoder.sequential[0][0]
    per_crop = first.out_channels * (model.crop_length // 3) * 4
    return int(min(64, max(1, CPU_ACTIVATION_BUDGET // per_crop)))


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Put `model` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def crop_fn(model: CLMR, device: torch.device, output: str = "embedding") -> CropFn:
    """The per-crop function: h (`embedding`) or class probabilities (`probabilities`: sigmoid for
    multi-label tagging, softmax for a multi-class head), under inference mode, bf16 autocast on CUDA."""
    if output == "probabilities" and model.head is None:
        raise ValueError("this model has no classification head; load one with head=...")
    multiclass = model.task == "multiclass"

    @torch.inference_mode()
    def run(crops: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(crops).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model.embed(x)
            if output == "probabilities":
                out = model.head(out)
        out = out.float()
        if output == "probabilities":
            out = out.softmax(dim=-1) if multiclass else out.sigmoid()
        return out.cpu().numpy()

    return run


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


def _events(
    tracks: Iterable[tuple[str, Callable[[], CropSource]]],
) -> Iterator[tuple[str, int, Any]]:
    """Per track (numbered by `slot`): ("start", slot, key), ("crops", slot, chunk) for each chunk,
    then ("end", slot, (samples, error))."""
    for slot, (key, open_stream) in enumerate(tracks):
        yield "start", slot, key
        stream = None
        try:
            stream = open_stream()
            for chunk in stream:
                yield "crops", slot, chunk
            yield "end", slot, (stream.samples, None)
        except AudioError as err:
            yield "end", slot, (stream.samples if stream is not None else 0, err)


def run_tracks(
    fn: CropFn,
    tracks: Iterable[tuple[str, Callable[[], CropSource]]],
    *,
    sample_rate: int,
    batch_size: int = 32,
    keep_crops: bool = False,
    threaded: bool = True,
) -> Iterator[TrackOutput]:
    """Apply `fn` to every crop of every track in batches of `batch_size` crops taken across track
    boundaries; yield one `TrackOutput` per track, in input order, as soon as it is complete."""
    events = prefetch(_events(tracks)) if threaded else _events(tracks)
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
            acc.samples, acc.error = payload
        yield from finished()
    if batch:
        flush()
    yield from finished()
