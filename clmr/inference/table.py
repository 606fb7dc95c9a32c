"""The embedding table: a parquet file of song embeddings, written resumably.

Finished tracks go to small part files in `OUT.parts/` (each written to a temporary name and
renamed, so a kill never leaves a half-written part); closing merges the previous table and the
parts into a new `OUT` (again atomically) and removes the parts. Rerunning on the same output
skips every path already present in the table or its parts. The schema metadata key "clmr" holds
the checkpoint path, its sha256 and its config, so a table cannot be extended with another model.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clmr.errors import ClmrError
from clmr.files import atomic_path
from clmr.songs.batch import TrackOutput

META_KEY = b"clmr"


class TableError(ClmrError):
    """An embedding table that cannot be read or extended; the message names the file."""


def parts_dir(out: Path) -> Path:
    """Where unfinished work of `out` lives."""
    return out.with_name(out.name + ".parts")


def table_schema(dim: int, per_crop: bool, metadata: dict[str, Any]) -> pa.Schema:
    """Columns: path, duration (s), n_crops, embedding (fixed-size list of float32), [crop_embeddings]."""
    fields = [
        pa.field("path", pa.string()),
        pa.field("duration", pa.float64()),
        pa.field("n_crops", pa.int32()),
        pa.field("embedding", pa.list_(pa.float32(), dim)),
    ]
    if per_crop:
        fields.append(pa.field("crop_embeddings", pa.list_(pa.list_(pa.float32(), dim))))
    return pa.schema(fields, metadata={META_KEY: json.dumps(metadata).encode()})


def table_metadata(source: Path) -> dict[str, Any]:
    """The "clmr" metadata of a table file."""
    try:
        meta = pq.read_schema(source).metadata or {}
    except (OSError, pa.ArrowInvalid) as err:
        raise TableError(f"{source}: not a readable parquet file ({err})") from err
    if META_KEY not in meta:
        raise TableError(f"{source}: not a clmr embedding table (no 'clmr' schema metadata)")
    return json.loads(meta[META_KEY])


def _sources(out: Path) -> list[Path]:
    parts = sorted(parts_dir(out).glob("part-*.parquet")) if parts_dir(out).is_dir() else []
    return ([out] if out.exists() else []) + parts


def iter_tables(out: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Row groups of the table and its unfinished parts, each path once (first occurrence wins)."""
    seen: set[str] = set()
    for source in _sources(out):
        pf = pq.ParquetFile(source)
        for i in range(pf.num_row_groups):
            table = pf.read_row_group(i, columns=columns)
            paths = table.column("path").to_pylist()
            keep = [p not in seen for p in paths]
            if not all(keep):
                table = table.filter(pa.array(keep))
            seen.update(paths)
            if table.num_rows:
                yield table


def read_index(out: str | os.PathLike) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """(paths, (N, D) float32 song embeddings, metadata) of a table (and its unfinished parts)."""
    out = Path(out)
    sources = _sources(out)
    if not sources:
        raise TableError(f"{out}: no such embedding table")
    meta = table_metadata(sources[0])
    tables = list(iter_tables(out, columns=["path", "embedding"]))
    dim = int(meta["config"]["embedding_dim"])
    if not tables:
        return [], np.zeros((0, dim), np.float32), meta
    table = pa.concat_tables(tables)
    emb = table.column("embedding").combine_chunks()
    vectors = emb.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
    return table.column("path").to_pylist(), vectors, meta


def _check_compatible(source: Path, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    """The same weights, layout and sample rate (a reference checkpoint's rate is set by --sample-rate,
    so the same file can give different embeddings)."""
    pairs = [(key, found.get(key), wanted.get(key)) for key in ("checkpoint_sha256", "per_crop")]
    rate = (found.get("config") or {}).get("sample_rate"), (wanted.get("config") or {}).get("sample_rate")
    pairs.append(("sample_rate", *rate))
    for key, was, now in pairs:
        if was != now:
            raise TableError(
                f"{source}: made with a different {key} ({was!r}, now {now!r}); "
                "write to another --out or delete it"
            )


def _write_atomic(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


class EmbeddingWriter:
    """Append `TrackOutput`s to the table at `out`; `done` holds the paths already embedded.

    Rows are written as a part every `flush_rows` rows or `flush_seconds` seconds; `close()` merges.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        metadata: dict[str, Any],
        dim: int,
        per_crop: bool = False,
        flush_rows: int = 256,
        flush_seconds: float = 30.0,
    ) -> None:
        self.out = Path(out)
        self.parts = parts_dir(self.out)
        self.metadata = {**metadata, "per_crop": per_crop}
        self.schema = table_schema(dim, per_crop, self.metadata)
        self.dim, self.per_crop = dim, per_crop
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.parts.glob(".*.tmp") if self.parts.is_dir() else []:
            stale.unlink()
        for source in _sources(self.out):
            _check_compatible(source, table_metadata(source), self.metadata)
        self.done: set[str] = {
            p for t in iter_tables(self.out, columns=["path"]) for p in t.column("path").to_pylist()
        }
        self._rows: list[TrackOutput] = []
        self._last_flush = time.monotonic()

    def add(self, output: TrackOutput) -> None:
        """Queue one finished track; writes a part when enough rows or time have accumulated."""
        self._rows.append(output)
        self.done.add(output.key)
        if len(self._rows) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _table(self, rows: list[TrackOutput]) -> pa.Table:
        flat = pa.array(np.concatenate([r.mean for r in rows]).astype(np.float32))
        columns = {
            "path": pa.array([r.key for r in rows], pa.string()),
            "duration": pa.array([r.duration for r in rows], pa.float64()),
            "n_crops": pa.array([r.n_crops for r in rows], pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, self.dim),
        }
        if self.per_crop:
            offsets = np.concatenate([[0], np.cumsum([len(r.crops) for r in rows])]).astype(np.int32)
            crops = pa.array(np.concatenate([r.crops for r in rows]).astype(np.float32).reshape(-1))
            columns["crop_embeddings"] = pa.ListArray.from_arrays(
                pa.array(offsets), pa.FixedSizeListArray.from_arrays(crops, self.dim)
            )
        return pa.table(columns, schema=self.schema)

    def flush(self) -> None:
        """Write the queued rows as one new part file (atomically)."""
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        self.parts.mkdir(parents=True, exist_ok=True)
        index = len(list(self.parts.glob("part-*.parquet")))
        while (self.parts / f"part-{index:06d}.parquet").exists():
            index += 1
        _write_atomic(self._table(self._rows), self.parts / f"part-{index:06d}.parquet")
        self._rows = []

    def close(self) -> None:
        """Flush, then merge the table and its parts into one file at `out` and remove the parts."""
        self.flush()
        if not self.parts.is_dir():
            if not self.out.exists():
                _write_atomic(self.schema.empty_table(), self.out)
            return
        with atomic_path(self.out) as tmp, pq.ParquetWriter(tmp, self.schema) as writer:
            for table in iter_tables(self.out):
                writer.write_table(table.replace_schema_metadata(self.schema.metadata))
        for part in self.parts.glob("part-*.parquet"):
            part.unlink()
        self.parts.rmdir()
