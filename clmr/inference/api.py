"""Using a trained model on audio: song embeddings and tags of arrays and files.

A song's embedding is the mean of h over its consecutive non-overlapping crops (the evaluation
protocol); its tag probabilities are the mean over crops of the sigmoid (multi-label) or softmax
(multi-class) of the head's logits. Files are read block by block, so memory does not grow with
track length.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from functools import partial

import numpy as np
import soxr
import torch

from clmr.audio import EmptyAudioError, UnreadableAudioError
from clmr.errors import ClmrError, check_whole
from clmr.inference.engine import (
    CropSource,
    TrackOutput,
    check_batch_size,
    crop_fn,
    default_batch_size,
    evaluating,
    resolve_device,
    run_tracks,
)
from clmr.inference.stream import CropStream, read_blocks, waveform_crops
from clmr.models import CLMR

CHUNK_CROPS = 16
"""Crops decoded per chunk at least (a chunk is split across batches as needed)."""


MAX_CHANNELS = 8
"""A 2-D waveform's channel axis is the one of at most this many entries (the other must be longer)."""


def _as_mono(waveform: np.ndarray | torch.Tensor) -> np.ndarray:
    """float32 (T,) from (T,), channels-first (C, T) (torch, librosa) or channels-last (T, C)
    (soundfile), where C <= MAX_CHANNELS < T tells the axes apart; other 2-D shapes are refused."""
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    x = np.asarray(waveform, dtype=np.float32)
    if x.ndim == 2:
        rows, cols = x.shape
        if rows <= MAX_CHANNELS < cols:
            x = x.mean(axis=0, dtype=np.float32)  # (C, T)
        elif cols <= MAX_CHANNELS < rows:
            x = x.mean(axis=1, dtype=np.float32)  # (T, C)
        else:
            raise ClmrError(
                f"ambiguous waveform shape {x.shape}: expected (T,), (C, T) or (T, C) with at most "
                f"{MAX_CHANNELS} channels and more than {MAX_CHANNELS} samples; pass a mono (T,) array "
                "(e.g. the mean over the channel axis)"
            )
    if x.ndim != 1:
        raise ClmrError(
            f"expected a mono (T,), channels-first (C, T) or channels-last (T, C) waveform, got shape {x.shape}"
        )
    if len(x) == 0:
        raise EmptyAudioError("<waveform>", "the waveform holds no samples")
    if not np.isfinite(x).all():
        raise UnreadableAudioError("<waveform>", "the waveform holds NaN or infinite samples")
    return x


def file_tracks(
    paths: Iterable[str | os.PathLike], sample_rate: int, crop_length: int, chunk_crops: int = CHUNK_CROPS
) -> Iterator[tuple[str, Callable[[], CropSource]]]:
    """(key, stream factory) pairs that stream each file's crops at the model's rate."""
    for path in paths:
        yield str(path), partial(_file_stream, path, sample_rate, crop_length, chunk_crops)


def _file_stream(path: str | os.PathLike, sample_rate: int, crop_length: int, max_crops: int) -> CropStream:
    return CropStream(read_blocks(path, sample_rate, crop_length * max_crops), crop_length, max_crops)


def _run(
    model: CLMR,
    tracks: Iterable[tuple[str, Callable[[], CropSource]]],
    output: str,
    batch_size: int | None,
    device: str | torch.device | None,
    per_crop: bool,
) -> Iterator[TrackOutput]:
    dev = resolve_device(device, model)
    batch_size = batch_size or default_batch_size(model, dev)
    model.to(dev)
    with evaluating(model):
        yield from run_tracks(
            crop_fn(model, dev, output),
            tracks,
            sample_rate=model.sample_rate,
            batch_size=batch_size,
            keep_crops=per_crop,
            threaded=dev.type != "cpu",  # on CPU a decode thread competes with the model for the cores
        )


def embed_files(
    model: CLMR,
    paths: Iterable[str | os.PathLike],
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    per_crop: bool = False,
) -> Iterator[TrackOutput]:
    """Embed files in batches of crops taken across tracks; one `TrackOutput` per file, in order.

    Unreadable, empty or silent files come back with `.error` set (an `AudioError`) instead of raising.
    `device` None keeps the model where it is; "auto" picks CUDA when available (bf16 autocast there).
    `batch_size` None: see `default_batch_size` (1 on CPU and 64 on GPU for the reference model).
    """
    check_batch_size(batch_size)
    resolve_device(device, model)  # a bad device fails here, not at the first track
    tracks = file_tracks(paths, model.sample_rate, model.crop_length, max(CHUNK_CROPS, batch_size or 0))
    return _run(model, tracks, "embedding", batch_size, device, per_crop)


def tag_files(
    model: CLMR,
    paths: Iterable[str | os.PathLike],
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    per_crop: bool = False,
) -> Iterator[TrackOutput]:
    """Like `embed_files`, but `.mean` holds the song-level class probabilities of the model's head."""
    if model.head is None:
        raise ClmrError("this model has no classification head; load one with head=...")
    check_batch_size(batch_size)
    resolve_device(device, model)
    tracks = file_tracks(paths, model.sample_rate, model.crop_length, max(CHUNK_CROPS, batch_size or 0))
    return _run(model, tracks, "probabilities", batch_size, device, per_crop)


def _one(outputs: Iterator[TrackOutput]) -> TrackOutput:
    (out,) = list(outputs)
    if out.error is not None:
        raise out.error
    return out


def embed_file(
    model: CLMR,
    path: str | os.PathLike,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Song embedding (embedding_dim,) float32 of one audio file; raises `AudioError` if unusable."""
    return _one(embed_files(model, [path], batch_size=batch_size, device=device)).mean


def embed_audio(
    model: CLMR,
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    per_crop: bool = False,
) -> np.ndarray:
    """Song embedding (embedding_dim,) of a waveform at any `sample_rate` (resampled to the model's).

    `per_crop=True` returns the (n_crops, embedding_dim) crop embeddings instead of their mean.
    """
    check_batch_size(batch_size)
    resolve_device(device, model)
    check_whole("sample_rate", sample_rate, unit="Hz")
    x = _as_mono(waveform)
    if sample_rate != model.sample_rate:
        x = soxr.resample(x, sample_rate, model.sample_rate, quality="HQ")
    crops = waveform_crops(x, model.crop_length)
    tracks = [("<waveform>", partial(_ArrayStream, crops, len(x)))]
    out = _one(_run(model, tracks, "embedding", batch_size, device, per_crop))
    return out.crops if per_crop else out.mean


class _ArrayStream:
    """An in-memory (n_crops, crop_length) array as a one-chunk crop source."""

    def __init__(self, crops: np.ndarray, samples: int) -> None:
        self.crops, self.samples = crops, samples

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.crops


def tag_file(
    model: CLMR,
    path: str | os.PathLike,
    top: int = 10,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> list[tuple[str, float]]:
    """The `top` (tag, probability) pairs of a song, highest first (mean over its crops)."""
    check_top(top)
    probs = _one(tag_files(model, [path], batch_size=batch_size, device=device)).mean
    return top_tags(model, probs, top)


def top_tags(model: CLMR, probs: np.ndarray, top: int = 10) -> list[tuple[str, float]]:
    """The `top` (name, probability) pairs of a probability vector; unnamed outputs are `class_<i>`."""
    check_top(top)
    names = model.tags or [f"class_{i}" for i in range(len(probs))]
    order = np.argsort(-probs, kind="stable")[:top]
    return [(names[i], float(probs[i])) for i in order]


def check_top(top: int) -> None:
    """`top` (how many tags to show) is a whole number >= 1."""
    check_whole("top", top)
