"""The embedding table: song embeddings written resumably, as parquet, npz or CSV (`clmr.inference.formats`).

Finished tracks go to small parquet part files in `OUT.parts/` (each written to a temporary name and
renamed, so a kill never leaves a half-written part); closing merges the previous table and the
parts into a new `OUT` (again atomically) and removes the parts. Rerunning on the same output
skips every path already present in the table or its parts. The metadata ("clmr") holds the
checkpoint path, its sha256, its config and the crop hop, so a table cannot be extended with another
model, and the mean embedding of its rows (for centred cosine similarity). One writer at a time: a
second waits on the lock file `.OUT.lock`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import Timeout

from clmr.files import acquire_lock, atomic_path, io_errors
from clmr.inference.formats import (
    TableError,
    check_width,
    parse_metadata,
    read_table,
    table_format,
    write_table,
)
from clmr.songs.batch import TrackOutput

META_KEY = b"clmr"


def parts_dir(out: Path) -> Path:
    """Where unfinished work of `out` lives."""
    return out.with_name(out.name + ".parts")


def table_schema(dim: int, per_crop: bool, metadata: dict[str, Any]) -> pa.Schema:
    """Columns: path, duration (s), n_crops, embedding (fixed-size list of float32), [crop_embeddings,
    crop_start_s (each crop's start in seconds)]."""
    fields = [
        pa.field("path", pa.string()),
        pa.field("duration", pa.float64()),
        pa.field("n_crops", pa.int32()),
        pa.field("embedding", pa.list_(pa.float32(), dim)),
    ]
    if per_crop:
        fields.append(pa.field("crop_embeddings", pa.list_(pa.list_(pa.float32(), dim))))
        fields.append(pa.field("crop_start_s", pa.list_(pa.float64())))
    return pa.schema(fields, metadata={META_KEY: json.dumps(metadata).encode()})


def table_metadata(source: Path) -> dict[str, Any]:
    """The "clmr" metadata of a table file (any format)."""
    if table_format(source) != ".parquet":
        return read_table(source)[1]
    try:
        meta = pq.read_schema(source).metadata or {}
    except (OSError, pa.ArrowException) as err:
        raise TableError(f"{source}: not a readable parquet file ({err})") from err
    return parse_metadata(source, meta.get(META_KEY))


def _row_groups(source: Path, columns: list[str] | None) -> Iterator[pa.Table]:
    """The rows of one source in pieces: a parquet file by row group, another format whole."""
    if table_format(source) != ".parquet":
        table = read_table(source)[0]
        yield table.select(columns) if columns else table
        return
    try:
        pf = pq.ParquetFile(source)
        check_width(source, pf.schema_arrow, table_metadata(source)["config"]["embedding_dim"])
        for i in range(pf.num_row_groups):
            yield pf.read_row_group(i, columns=columns)
    except (OSError, pa.ArrowException) as err:
        raise TableError(f"{source}: not a readable parquet file ({err})") from err


def _sources(out: Path) -> list[Path]:
    parts = sorted(parts_dir(out).glob("part-*.parquet")) if parts_dir(out).is_dir() else []
    return ([out] if out.exists() else []) + parts


def iter_tables(out: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Row groups of the table and its unfinished parts, each path once (first occurrence wins)."""
    seen: set[str] = set()
    for source in _sources(out):
        for table in _row_groups(source, columns):
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
    """The same weights, layout, sample rate (a reference checkpoint's rate is set by --sample-rate,
    so the same file can give different embeddings) and crop hop."""
    pairs = [(key, found.get(key), wanted.get(key)) for key in ("checkpoint_sha256", "per_crop")]
    rate = (found.get("config") or {}).get("sample_rate"), (wanted.get("config") or {}).get("sample_rate")
    pairs.append(("sample_rate", *rate))
    pairs.append(("crop_hop_s", found.get("crop_hop_s"), wanted.get("crop_hop_s")))
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

    Rows are written as a part every `flush_rows` rows or `flush_seconds` seconds; `close()` merges
    and releases the table's lock (taken here; `on_wait` is called before waiting for another writer).
    `metadata["crop_hop_s"]` (default: none recorded) gives each stored crop's start time.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        metadata: dict[str, Any],
        dim: int,
        per_crop: bool = False,
        flush_rows: int = 256,
        flush_seconds: float = 30.0,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.out = Path(out)
        table_format(self.out, per_crop)  # an unknown suffix is refused before anything is written
        self.parts = parts_dir(self.out)
        self.metadata = {**metadata, "per_crop": per_crop}
        self.schema = table_schema(dim, per_crop, self.metadata)
        self.dim, self.per_crop = dim, per_crop
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        with io_errors(self.out.parent, TableError):
            self.out.parent.mkdir(parents=True, exist_ok=True)
        lock = self.out.with_name(f".{self.out.name}.lock")
        try:
            self.lock = acquire_lock(lock, "--out folder", timeout=0, error=TableError)
        except Timeout:
            if on_wait is not None:
                on_wait()
            self.lock = acquire_lock(lock, "--out folder", error=TableError)
        try:
            for stale in self.parts.glob(".*.tmp") if self.parts.is_dir() else []:
                stale.unlink()
            for source in _sources(self.out):
                _check_compatible(source, table_metadata(source), self.metadata)
            self.done: set[str] = {
                p for t in iter_tables(self.out, columns=["path"]) for p in t.column("path").to_pylist()
            }
        except BaseException:
            self.lock.release()
            raise
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
            hop = self.metadata.get("crop_hop_s") or 0.0
            starts = np.concatenate([np.arange(len(r.crops)) * hop for r in rows])
            columns["crop_start_s"] = pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(starts, pa.float64())
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
        """Flush, then merge the table and its parts into one file at `out` (with the mean embedding
        of its rows in the metadata), remove the parts and release the lock."""
        try:
            self.flush()
            if self.parts.is_dir() or not self.out.exists():
                meta = {**self.metadata, "mean_embedding": mean_embedding(self.out, self.dim).tolist()}
                schema = self.schema.with_metadata({META_KEY: json.dumps(meta).encode()})
                write_table(self.out, schema, iter_tables(self.out))
            for part in self.parts.glob("part-*.parquet") if self.parts.is_dir() else []:
                part.unlink()
            if self.parts.is_dir():
                self.parts.rmdir()
        finally:
            self.lock.release()


def mean_embedding(out: Path, dim: int) -> np.ndarray:
    """(dim,) float32 mean of the table's finite song embeddings (zeros when there are none)."""
    total, count = np.zeros(dim, np.float64), 0
    for table in iter_tables(out, columns=["path", "embedding"]):
        vectors = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = vectors.reshape(-1, dim)
        finite = vectors[np.isfinite(vectors).all(axis=1)]
        total += finite.sum(axis=0, dtype=np.float64)
        count += len(finite)
    return (total / max(count, 1)).astype(np.float32)
