"""Frozen-encoder features of every consecutive crop of every track, batched across tracks, and
their on-disk cache keyed by (encoder identity, store identity, crop length, precision)."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clmr.devices import resolve_device
from clmr.files import atomic_open
from clmr.models import CLMR
from clmr.songs import array_songs, run_model, store_songs

CACHE_VERSION = 1
RESUME_TRACKS = 256  # tracks per saved part of an extraction in progress (what an interruption can lose)


@dataclass
class SplitFeatures:
    """Crop features of a set of tracks: rows `offsets[k]:offsets[k+1]` of `features` are track k."""

    features: np.ndarray  # (n_crops, D) float32
    offsets: np.ndarray  # (n_tracks + 1,) int64
    tracks: np.ndarray  # (n_tracks,) store indices

    @property
    def counts(self) -> np.ndarray:
        """Crops per track."""
        return np.diff(self.offsets)

    @property
    def track_of_crop(self) -> np.ndarray:
        """Position (0..n_tracks-1) of the track each crop row belongs to."""
        return np.repeat(np.arange(len(self.tracks)), self.counts)

    def song_means(self) -> np.ndarray:
        """(n_tracks, D) mean crop feature of each track (the song-level embedding)."""
        return segment_mean(self.features, self.offsets)

    def subset(self, positions: np.ndarray) -> SplitFeatures:
        """The features of tracks `positions` (indices into `tracks`), in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        counts = self.counts[positions]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # row r of the subset is crop (r - offsets[k]) of track positions[k]: no per-track Python loop
        rows = np.arange(offsets[-1], dtype=np.int64) + np.repeat(
            self.offsets[positions] - offsets[:-1], counts
        )
        return SplitFeatures(self.features[rows], offsets, self.tracks[positions])


def segment_mean(rows: np.ndarray | torch.Tensor, offsets: np.ndarray) -> np.ndarray:
    """Mean of consecutive row segments `offsets[k]:offsets[k+1]` (per-track mean over its crops)."""
    rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.float64)
    counts = torch.as_tensor(np.diff(offsets))
    owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
    sums = torch.zeros(len(counts), rows_t.shape[1], dtype=torch.float64).index_add_(0, owner, rows_t)
    return (sums / counts.clamp(min=1)[:, None]).numpy()


def extract(
    model: CLMR,
    store,
    indices: Sequence[int],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress=None,
    starts: Sequence[int] | None = None,
) -> SplitFeatures:
    """Features of all consecutive non-overlapping crops of tracks `indices` (frozen encoder, eval mode),
    or with `starts` of the one crop of each track starting there, through the song-level path shared
    with inference (`clmr.songs`).

    `progress` is an optional callable taking the number of tracks just finished.
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    if starts is None:
        songs = store_songs(store, indices, model.crop_length)
    else:  # the reference protocol's one fixed crop per track
        crops = (
            (str(int(i)), store.crop(int(i), int(start), model.crop_length))
            for i, start in zip(indices, starts, strict=True)
        )
        songs = array_songs(crops, model.crop_length)
    counts: list[int] = []
    chunks = []
    for out in run_model(model, songs, batch_size=batch_size, device=device, per_crop=True):
        chunks.append(out.crops)
        counts.append(out.n_crops)
        if progress is not None:
            progress(1)
    features = np.concatenate(chunks) if chunks else np.zeros((0, model.embedding_dim), np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SplitFeatures(features.astype(np.float32), offsets, np.asarray(indices, dtype=np.int64))


def extract_resumable(
    model: CLMR,
    store,
    indices: Sequence[int],
    parts_dir: Path,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress=None,
    starts: Sequence[int] | None = None,
) -> SplitFeatures:
    """`extract` in parts of RESUME_TRACKS tracks, each saved to `parts_dir` as soon as it is done, so that
    an interrupted extraction (hours for a large store on a CPU) continues where it stopped."""
    indices = np.asarray(indices, dtype=np.int64)
    pieces = []
    for start in range(0, len(indices), RESUME_TRACKS):
        chunk = indices[start : start + RESUME_TRACKS]
        chunk_starts = None if starts is None else starts[start : start + RESUME_TRACKS]
        part = parts_dir / f"{start:09d}.npz"
        done = readable_features(part).get("part")
        if done is not None and np.array_equal(done.tracks, chunk):
            if progress is not None:
                progress(len(chunk))
        else:
            done = extract(
                model,
                store,
                chunk,
                batch_size=batch_size,
                device=device,
                progress=progress,
                starts=chunk_starts,
            )
            save_features(part, {"part": done})
        pieces.append(done)
    if not pieces:
        return extract(model, store, indices, batch_size=batch_size, device=device, starts=starts)
    counts = np.concatenate([p.counts for p in pieces])
    return SplitFeatures(
        np.concatenate([p.features for p in pieces]),
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        indices,
    )


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes (a checkpoint's identity; a changed file means new features)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model: CLMR) -> str:
    """sha256 of a model's encoder weights and architecture (for models not read from a file)."""
    digest = hashlib.sha256(json.dumps(model.encoder.architecture(), sort_keys=True).encode())
    for key, value in sorted(model.encoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def store_fingerprint(store) -> str:
    """sha256 of a store's meta and index table: the same store content gives the same key."""
    import pyarrow as pa

    digest = hashlib.sha256(json.dumps(store.meta, sort_keys=True, default=str).encode())
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, store.index.schema) as writer:
        writer.write_table(store.index)
    digest.update(sink.getvalue())
    return digest.hexdigest()


def cache_key(encoder_id: str, store_id: str, crop_length: int, device: str | torch.device) -> str:
    """The cache file's key: encoder, store, crop length, precision (bf16 on CUDA) and format version."""
    precision = "bf16" if torch.device(device).type == "cuda" else "fp32"
    text = f"v{CACHE_VERSION}|{encoder_id}|{store_id}|{crop_length}|{precision}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def save_features(path: Path, splits: dict[str, SplitFeatures]) -> None:
    """Write split features to one .npz atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, split in splits.items():
        arrays |= {
            f"{name}.features": split.features,
            f"{name}.offsets": split.offsets,
            f"{name}.tracks": split.tracks,
        }
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def readable_features(path: Path) -> dict[str, SplitFeatures]:
    """`load_features`, or {} when the file is missing or unreadable (a damaged cache is recomputed with
    a warning, never the end of a long run)."""
    if not path.exists():
        return {}
    try:
        return load_features(path)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        warnings.warn(f"{path}: unreadable cached features ({err}); computing them again", stacklevel=2)
        return {}


def load_features(path: Path) -> dict[str, SplitFeatures]:
    """Split features written by `save_features`."""
    with np.load(path) as data:
        names = sorted({k.rsplit(".", 1)[0] for k in data.files})
        return {
            n: SplitFeatures(data[f"{n}.features"], data[f"{n}.offsets"], data[f"{n}.tracks"]) for n in names
        }
