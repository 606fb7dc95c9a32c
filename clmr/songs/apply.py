"""A model on songs: song embeddings and tag probabilities of waveforms, files and store tracks, through
the one song-level path (`clmr.songs.crops` cut, `clmr.songs.batch` batches).

A song's embedding is the mean of h over its consecutive non-overlapping crops (the evaluation
protocol); its tag probabilities are the mean over crops of the sigmoid (multi-label) or softmax
(multi-class) of the head's logits. Files are read block by block, so memory does not grow with
track length. This is the layer above `clmr.models`: the model is only used through its crop-level
methods and attributes (`embed`, `head`, `crop_length`, `sample_rate`), and the model class knows
nothing of songs, files or devices (`clmr.embed_file(model, path)` is this module's function).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import soxr
import torch

from clmr.audio import EmptyAudioError, UnreadableAudioError
from clmr.devices import resolve_device
from clmr.errors import ClmrError, check_whole
from clmr.songs.batch import CropFn, TrackOutput, run_songs
from clmr.songs.crops import CHUNK_CROPS, Song, array_songs
from clmr.songs.workers import check_workers, decoded_songs

if TYPE_CHECKING:
    from clmr.models import CLMR


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
        raise ClmrError("this model has no classification head; load one with head=...")
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


def run_model(
    model: CLMR,
    songs: Iterable[Song],
    *,
    output: str = "embedding",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    per_crop: bool = False,
) -> Iterator[TrackOutput]:
    """`model`'s song-level `output` (see `crop_fn`) of every song, in order, in batches of crops taken
    across tracks; with `per_crop`, also every crop's output. `device` None keeps the model where it is;
    "auto" picks CUDA, then MPS, then CPU. `batch_size` None: see `default_batch_size`. Bad options fail
    here, before the first song is read; the model is in eval mode while the results are read."""
    check_batch_size(batch_size)
    dev = resolve_device(device, model)
    fn = crop_fn(model, dev, output)
    batch_size = batch_size or default_batch_size(model, dev)

    def run() -> Iterator[TrackOutput]:
        model.to(dev)
        with evaluating(model):
            yield from run_songs(
                fn,
                songs,
                sample_rate=model.sample_rate,
                batch_size=batch_size,
                keep_crops=per_crop,
                threaded=dev.type != "cpu",  # on CPU a decode thread competes with the model for the cores
            )

    return run()


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


def embed_files(
    model: CLMR,
    paths: Iterable[str | os.PathLike],
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    per_crop: bool = False,
    hop: int | None = None,
    workers: int = 0,
) -> Iterator[TrackOutput]:
    """Embed files in batches of crops taken across tracks; one `TrackOutput` per file, in order.

    Unreadable, empty or silent files come back with `.error` set (an `AudioError`) instead of raising.
    `device` None keeps the model where it is; "auto" picks CUDA when available (bf16 autocast there).
    `batch_size` None: see `default_batch_size` (1 on CPU and 64 on GPU for the reference model).
    `hop`: samples between crop starts (default: the crop length, non-overlapping crops).
    `workers`: processes decoding the files ahead of the model (`clmr.songs.workers`; 0: decode here).
    """
    return _run_files(model, paths, "embedding", batch_size, device, per_crop, hop, workers)


def tag_files(
    model: CLMR,
    paths: Iterable[str | os.PathLike],
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    per_crop: bool = False,
    hop: int | None = None,
    workers: int = 0,
) -> Iterator[TrackOutput]:
    """Like `embed_files`, but `.mean` holds the song-level class probabilities of the model's head."""
    return _run_files(model, paths, "probabilities", batch_size, device, per_crop, hop, workers)


def _run_files(model, paths, output, batch_size, device, per_crop, hop, workers) -> Iterator[TrackOutput]:
    """`run_model` over audio files cut by the one crop path (chunks of at least a batch of crops),
    decoded by `workers` processes."""
    check_workers(workers)
    chunk = max(CHUNK_CROPS, batch_size or 0)
    songs = decoded_songs(paths, model.sample_rate, model.crop_length, chunk, hop, workers)
    return run_model(model, songs, output=output, batch_size=batch_size, device=device, per_crop=per_crop)


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
    songs = array_songs([("<waveform>", x)], model.crop_length)
    out = _one(run_model(model, songs, batch_size=batch_size, device=device, per_crop=per_crop))
    return out.crops if per_crop else out.mean


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
