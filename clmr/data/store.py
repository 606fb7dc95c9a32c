"""The store: decoded audio as int16 PCM shards that training memory-maps, plus an index table.

Layout (version 1; see docs/data.md):
  STORE/meta.json          format, version, sample rate, dataset, task, label vocabulary, counts, parameters
  STORE/index.parquet      one row per track: track_id, path, split, shard, offset, length, labels
  STORE/shards/NNNNN.npy   int16 mono PCM, the shard's tracks concatenated in index order
  STORE/skipped.csv        path, reason, detail for every source file not stored
meta.json is written last: a folder without it is an unfinished store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clmr.errors import ClmrError

FORMAT = "clmr-store"
VERSION = 1
SCALE = 32768.0  # int16 -> float32 divisor

INDEX_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("path", pa.string()),
        ("split", pa.string()),
        ("shard", pa.int32()),
        ("offset", pa.int64()),
        ("length", pa.int64()),
        ("labels", pa.list_(pa.string())),
    ]
)


class StoreError(ClmrError):
    """A store folder that is missing, unfinished, of another version, or a bad request to it."""


def shard_path(root: Path, shard: int) -> Path:
    """STORE/shards/NNNNN.npy."""
    return root / "shards" / f"{shard:05d}.npy"


class Store:
    """Read access to a finished store. Picklable: memory maps open lazily in each process."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            hint = (
                " (unfinished: rerun `clmr preprocess` to resume)"
                if (self.path / ".partial").is_dir()
                else ""
            )
            raise StoreError(f"{self.path}: not a clmr store, meta.json is missing{hint}")
        try:
            self.meta: dict = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise StoreError(f"{meta_file}: unreadable ({err}); rerun `clmr preprocess --overwrite`") from err
        if not isinstance(self.meta, dict):
            raise StoreError(f"{meta_file}: not a JSON object; rerun `clmr preprocess --overwrite`")
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise StoreError(
                f"{meta_file}: format {self.meta.get('format')!r} version {self.meta.get('version')!r}; "
                f"this clmr reads {FORMAT!r} version {VERSION}"
            )
        try:
            self.index: pa.Table = pq.read_table(self.path / "index.parquet")
        except (OSError, pa.ArrowException) as err:
            raise StoreError(
                f"{self.path / 'index.parquet'}: unreadable ({err}); rerun `clmr preprocess --overwrite`"
            ) from err
        self._shard = self.index.column("shard").to_numpy().astype(np.int64)
        self._offset = self.index.column("offset").to_numpy()
        self._length = self.index.column("length").to_numpy()
        splits = self.index.column("split").to_pylist()
        self._split = np.array([s or "" for s in splits])
        self._label_lists: list[list[str]] | None = None
        self._maps: dict[int, np.ndarray] = {}

    @property
    def sample_rate(self) -> int:
        return int(self.meta["sample_rate"])

    @property
    def vocab(self) -> list[str]:
        return list(self.meta["vocab"])

    @property
    def task(self) -> str | None:
        return self.meta["task"]

    @property
    def lengths(self) -> np.ndarray:
        """Length in samples of every track (int64, index order)."""
        return self._length

    def __len__(self) -> int:
        return self.index.num_rows

    def __repr__(self) -> str:
        hours = self._length.sum() / self.sample_rate / 3600
        return f"Store({str(self.path)!r}, tracks={len(self)}, hours={hours:.2f}, sample_rate={self.sample_rate})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}  # memory maps are reopened in the receiving process
        return state

    def split_indices(self, split: str | None) -> np.ndarray:
        """Track indices of `split` (train/valid/test), or all tracks for None."""
        if split is None:
            return np.arange(len(self))
        if split not in ("train", "valid", "test"):
            raise StoreError(f"{self.path}: unknown split {split!r} (expected train, valid, test or None)")
        return np.flatnonzero(self._split == split)

    def length(self, i: int) -> int:
        return int(self._length[i])

    def track_id(self, i: int) -> str:
        return self.index.column("track_id")[i].as_py()

    def source_path(self, i: int) -> str:
        """The source file, relative to the dataset root it was preprocessed from."""
        return self.index.column("path")[i].as_py()

    def labels(self, i: int) -> list[str]:
        return list(self._labels()[i])

    def targets(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """Multilabel: float32 (N, C) multi-hot over `vocab`; multiclass: int64 (N,) class index."""
        lists = self._labels()
        col = {name: c for c, name in enumerate(self.vocab)}
        indices = np.asarray(indices, dtype=np.int64)
        if self.task == "multilabel":
            out = np.zeros((len(indices), len(col)), np.float32)
            for row, i in enumerate(indices):
                out[row, [col[t] for t in lists[i]]] = 1.0
            return out
        if self.task == "multiclass":
            return np.array([col[lists[i][0]] for i in indices], dtype=np.int64)
        raise StoreError(f"{self.path}: the store has no labels (task is None)")

    def crop(self, i: int, start: int, length: int) -> np.ndarray:
        """float32 samples [start, start + length) of track i; zero-padded past the track's end."""
        n = int(self._length[i])
        if start < 0 or length < 0:
            raise StoreError(f"{self.path}: crop start {start} and length {length} must be >= 0")
        stop = min(start + length, n)
        begin = int(self._offset[i])
        pcm = self._map(int(self._shard[i]))[begin + min(start, n) : begin + stop]
        out = np.zeros(length, np.float32)
        np.multiply(pcm, np.float32(1.0 / SCALE), out=out[: len(pcm)], casting="unsafe")
        return out

    def track(self, i: int) -> np.ndarray:
        """The whole track as float32."""
        return self.crop(i, 0, int(self._length[i]))

    def pcm(self, i: int) -> np.ndarray:
        """The whole track as the stored int16 memory-map slice (no copy)."""
        begin = int(self._offset[i])
        return self._map(int(self._shard[i]))[begin : begin + int(self._length[i])]

    def blocks(self, i: int, block_samples: int) -> Iterator[np.ndarray]:
        """Track i as consecutive float32 blocks of `block_samples` samples (the last may be short), so
        a long track is never converted whole."""
        pcm = self.pcm(i)
        for start in range(0, len(pcm), block_samples):
            yield np.multiply(pcm[start : start + block_samples], np.float32(1.0 / SCALE), dtype=np.float32)

    def _map(self, shard: int) -> np.ndarray:
        m = self._maps.get(shard)
        if m is None:
            m = self._maps[shard] = np.load(shard_path(self.path, shard), mmap_mode="r")
        return m

    def _labels(self) -> list[list[str]]:
        if self._label_lists is None:
            self._label_lists = self.index.column("labels").to_pylist()
        return self._label_lists
