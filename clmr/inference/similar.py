"""Exact cosine nearest neighbours in an embedding table (collections that fit in memory), on embeddings
centred by the table's mean (and optionally whitened)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clmr.devices import resolve_device
from clmr.errors import ClmrError, check_whole
from clmr.inference.catalogue import checkpoint_metadata
from clmr.inference.paths import absolute, resolved
from clmr.inference.table import read_index
from clmr.models import CLMR, load_model
from clmr.songs.apply import embed_files


@dataclass
class Index:
    """Song embeddings of a table, centred on the table's mean embedding (optionally whitened by its
    covariance) and L2-normalised, with their paths and the table's metadata.

    Raw song embeddings of one model all point the same way (cosine >= 0.99 over a small collection);
    centring removes that shared direction, so scores separate near-duplicates from unrelated songs.
    An index of one song (or of copies of one) is not centred; rows with non-finite values score NaN
    and rank last."""

    paths: list[str]
    vectors: np.ndarray  # (N, D) float32, transformed unit rows (zero rows where not finite)
    meta: dict[str, Any]
    centre: np.ndarray  # (D,) mean of the finite rows
    whitening: np.ndarray | None = None  # (D, D), applied after centring
    valid: np.ndarray | None = None  # (N,) rows that were finite

    @classmethod
    def load(cls, table: str | os.PathLike, whiten: bool = False) -> Index:
        """Read a table written by `clmr embed` (any of its formats)."""
        paths, raw, meta = read_index(table)
        valid = np.isfinite(raw).all(axis=1)
        finite = raw[valid].astype(np.float64)
        centre = finite.mean(axis=0) if len(finite) else np.zeros(raw.shape[1])
        if not np.any(finite - centre):  # one song (or copies of one): no spread to centre on
            centre = np.zeros(raw.shape[1])
        whitening = whitening_matrix(finite - centre) if whiten else None
        index = cls(paths, raw, meta, centre.astype(np.float32), whitening, valid)
        index.vectors = np.where(valid[:, None], index.transform(np.where(valid[:, None], raw, 0)), 0)
        return index

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Raw embeddings (..., D) -> centred, optionally whitened, unit-norm float32 rows."""
        x = np.asarray(vectors, np.float64) - self.centre
        if self.whitening is not None:
            x = x @ self.whitening
        return normalise(x)

    def position(self, query: str | os.PathLike) -> int | None:
        """Row of `query` (by name as given or made absolute, else the row of the same file under
        another name, e.g. a symlink to it), or None when not in the index."""
        for key in (str(query), str(absolute(query))):
            if key in self._rows:
                return self._rows[key]
        return self._files.get(resolved(query))

    @cached_property
    def _rows(self) -> dict[str, int]:
        return {p: i for i, p in reversed(list(enumerate(self.paths)))}

    @cached_property
    def _files(self) -> dict[Path, int]:
        """Row of each stored path's file, symlinks resolved (first row wins); built on the first query
        not found by name."""
        return {resolved(p): i for i, p in reversed(list(enumerate(self.paths)))}

    def neighbours(self, vector: np.ndarray, k: int = 10) -> list[tuple[str, float]]:
        """The `k` (path, cosine similarity) pairs closest to the raw embedding `vector`, most similar
        first; NaN scores (non-finite embeddings) last."""
        check_k(k)
        vector = np.asarray(vector, np.float32)
        return self._rank(self.transform(vector) if np.isfinite(vector).all() else None, k)

    def _rank(self, unit: np.ndarray | None, k: int) -> list[tuple[str, float]]:
        if not len(self.paths):
            return []
        if unit is None:  # a non-finite query is similar to nothing
            scores = torch.full((len(self.paths),), float("nan"))
        else:
            scores = torch.from_numpy(self.vectors @ unit.astype(np.float32))
            scores[torch.from_numpy(~self.valid)] = float("nan")
        order = torch.topk(torch.nan_to_num(scores, nan=-torch.inf), min(k, len(self.paths))).indices
        return [(self.paths[i], float(scores[i])) for i in order.tolist()]

    def model(self, checkpoint: str | os.PathLike | None = None, device: str = "auto") -> CLMR:
        """The model that made this index (from its recorded checkpoint unless `checkpoint` is given)."""
        path = checkpoint or self.meta.get("checkpoint")
        if not path or not Path(path).exists():
            raise ClmrError(f"the index's checkpoint {path} is gone; pass --checkpoint with the same weights")
        # the rate the index was made at (a reference checkpoint embedded with --sample-rate records
        # it only in the table's config)
        rate = self.meta.get("config", {}).get("sample_rate")
        model = load_model(path, sample_rate=rate, map_location=resolve_device(device))
        if checkpoint_metadata(model, path)["checkpoint_sha256"] != self.meta.get("checkpoint_sha256"):
            raise ClmrError(f"{path}: not the checkpoint this index was made with (different sha256)")
        return model

    def query(
        self,
        query: str | os.PathLike,
        k: int = 10,
        checkpoint: str | os.PathLike | None = None,
        device: str = "auto",
    ) -> list[tuple[str, float]]:
        """Neighbours of a track in the index, or of an audio file embedded now with the index's model."""
        check_k(k)
        row = self.position(query)
        if row is not None:
            return self._rank(self.vectors[row] if self.valid[row] else None, k)
        model = self.model(checkpoint, device)
        hop = self.meta.get("crop_hop_s")  # crops as the index's songs were cut
        hop_n = max(1, round(hop * model.sample_rate)) if isinstance(hop, (int, float)) and hop > 0 else None
        (out,) = embed_files(model, [query], device=device, hop=hop_n)
        if out.error is not None:
            raise out.error
        return self.neighbours(out.mean, k)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def whitening_matrix(centred: np.ndarray) -> np.ndarray:
    """(D, D) symmetric (ZCA) whitening of centred rows, shrunk by the mean variance so that directions
    a small collection does not span are not blown up."""
    cov = centred.T @ centred / max(len(centred) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    values = np.clip(values, 0, None)
    shrink = values.mean() or 1.0
    return (vectors / np.sqrt(values + shrink)) @ vectors.T


def check_k(k: int) -> None:
    """`k` (how many neighbours) is a whole number >= 1."""
    check_whole("k", k)
