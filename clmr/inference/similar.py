"""Exact cosine nearest neighbours in an embedding table (collections that fit in memory)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clmr.devices import resolve_device
from clmr.errors import ClmrError, check_whole
from clmr.inference.catalogue import checkpoint_metadata
from clmr.inference.table import read_index
from clmr.models import CLMR, load_model
from clmr.songs.apply import embed_file


@dataclass
class Index:
    """Song embeddings of a table, L2-normalised, with their paths and the table's metadata."""

    paths: list[str]
    vectors: np.ndarray  # (N, D) float32, unit rows
    meta: dict[str, Any]

    @classmethod
    def load(cls, table: str | os.PathLike) -> Index:
        """Read a table written by `clmr embed`."""
        paths, vectors, meta = read_index(table)
        return cls(paths, normalise(vectors), meta)

    def position(self, query: str | os.PathLike) -> int | None:
        """Row of `query` (as given or resolved to an absolute path), or None when not in the index."""
        lookup = {p: i for i, p in enumerate(self.paths)}
        for key in (str(query), str(Path(query).expanduser().resolve())):
            if key in lookup:
                return lookup[key]
        return None

    def neighbours(self, vector: np.ndarray, k: int = 10) -> list[tuple[str, float]]:
        """The `k` (path, cosine similarity) pairs closest to `vector`, most similar first."""
        check_k(k)
        if not len(self.paths):
            return []
        scores = torch.from_numpy(self.vectors) @ torch.from_numpy(normalise(vector[None])[0])
        top = torch.topk(scores, min(k, len(self.paths)))
        return [
            (self.paths[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]

    def model(self, checkpoint: str | os.PathLike | None = None, device: str = "cpu") -> CLMR:
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
        device: str = "cpu",
    ) -> list[tuple[str, float]]:
        """Neighbours of a track in the index, or of an audio file embedded now with the index's model."""
        check_k(k)
        row = self.position(query)
        if row is not None:
            return self.neighbours(self.vectors[row], k)
        return self.neighbours(embed_file(self.model(checkpoint, device), query, device=device), k)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def check_k(k: int) -> None:
    """`k` (how many neighbours) is a whole number >= 1."""
    check_whole("k", k)
