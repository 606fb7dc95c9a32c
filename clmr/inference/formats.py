"""The file formats of an embedding table, picked by the output's suffix: `.parquet` (one row per song,
metadata in the schema), `.npz` (arrays `path`, `duration`, `n_crops`, `embedding`, `metadata`, and with
per-crop rows `crop_embedding`, `crop_start_s`, `crop_track`), `.csv` (path, duration, n_crops, then
one column per dimension `e0`, `e1`, ...; the metadata in a `STEM.meta.json` file beside it).
Every format is written atomically and read back into the parquet schema, so any of them resumes."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clmr.errors import ClmrError
from clmr.files import atomic_open, atomic_path

FORMATS = (".parquet", ".npz", ".csv")


class TableError(ClmrError):
    """An embedding table that cannot be read or extended; the message names the file."""


def table_format(out: Path, per_crop: bool = False) -> str:
    """The format of `out` by its suffix; unknown suffixes (and per-crop rows in a CSV) are refused."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise TableError(f"{out}: unknown table format {suffix or '(no suffix)'!r}; use {', '.join(FORMATS)}")
    if per_crop and suffix == ".csv":
        raise TableError(f"{out}: a CSV holds one row per song; write --per-crop tables as .parquet or .npz")
    return suffix


def meta_path(out: Path) -> Path:
    """`songs.csv` -> `songs.meta.json` (CSV tables keep their metadata beside them)."""
    return out.with_name(out.stem + ".meta.json")


def parse_metadata(source: Path, raw: bytes | str | None) -> dict[str, Any]:
    """The "clmr" metadata of `source` from its JSON text, checked enough to be used."""
    if raw is None:
        raise TableError(f"{source}: not a clmr embedding table (no clmr metadata)")
    try:
        meta = json.loads(raw)
        dim = meta["config"]["embedding_dim"]
    except (ValueError, TypeError, KeyError) as err:
        raise TableError(f"{source}: damaged clmr metadata ({type(err).__name__}: {err})") from err
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise TableError(f"{source}: damaged clmr metadata (embedding_dim {dim!r})")
    return meta


def check_width(source: Path, schema: pa.Schema, dim: int) -> None:
    """The embedding columns of `source` hold `dim` values per row (the metadata's embedding_dim, the
    width of the model that made the table), else a `TableError` naming both widths."""
    for name in ("embedding", "crop_embeddings"):
        if name not in schema.names:
            continue
        kind = schema.field(name).type
        kind = kind.value_type if name == "crop_embeddings" and pa.types.is_list(kind) else kind
        width = kind.list_size if pa.types.is_fixed_size_list(kind) else None
        if width != dim:
            raise TableError(
                f"{source}: its {name} rows are {width or 'not fixed-size lists'} wide but its model makes "
                f"{dim}-dimensional embeddings (metadata config.embedding_dim); not a table of that model"
            )


def read_table(source: Path, schema: pa.Schema | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """(rows, metadata) of a table file in any format; every failure is a `TableError` naming it."""
    fmt = table_format(source)
    try:
        if fmt == ".parquet":
            table = pq.read_table(source)
            meta = parse_metadata(source, (table.schema.metadata or {}).get(b"clmr"))
            check_width(source, table.schema, meta["config"]["embedding_dim"])
            return table, meta
        if fmt == ".npz":
            return _read_npz(source)
        return _read_csv(source)
    except TableError:
        raise
    except (OSError, ValueError, KeyError, pa.ArrowException) as err:
        raise TableError(f"{source}: not a readable {fmt[1:]} embedding table ({err})") from err


def _read_npz(source: Path) -> tuple[pa.Table, dict[str, Any]]:
    with np.load(source, allow_pickle=False) as z:
        meta = parse_metadata(source, str(z["metadata"]) if "metadata" in z else None)
        dim = meta["config"]["embedding_dim"]
        columns = {
            "path": pa.array(z["path"].tolist(), pa.string()),
            "duration": pa.array(z["duration"], pa.float64()),
            "n_crops": pa.array(z["n_crops"], pa.int32()),
            "embedding": _fixed(z["embedding"], dim, source),
        }
        if "crop_embedding" in z:
            offsets = pa.array(np.concatenate([[0], np.cumsum(z["n_crops"])]).astype(np.int32))
            columns["crop_embeddings"] = pa.ListArray.from_arrays(
                offsets, _fixed(z["crop_embedding"], dim, source)
            )
            columns["crop_start_s"] = pa.ListArray.from_arrays(
                offsets, pa.array(z["crop_start_s"], pa.float64())
            )
    return pa.table(columns), meta


def _read_csv(source: Path) -> tuple[pa.Table, dict[str, Any]]:
    side = meta_path(source)
    meta = parse_metadata(source, side.read_text() if side.exists() else None)
    dim = meta["config"]["embedding_dim"]
    with open(source, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:3] != ["path", "duration", "n_crops"] or len(rows[0]) != 3 + dim:
        raise TableError(
            f"{source}: not a clmr embedding CSV (header path, duration, n_crops, e0..e{dim - 1})"
        )
    body = rows[1:]
    values = np.array([r[3:] for r in body], dtype=np.float32).reshape(len(body), dim)
    columns = {
        "path": pa.array([r[0] for r in body], pa.string()),
        "duration": pa.array([float(r[1]) for r in body], pa.float64()),
        "n_crops": pa.array([int(r[2]) for r in body], pa.int32()),
        "embedding": _fixed(values, dim, source),
    }
    return pa.table(columns), meta


def _fixed(values: np.ndarray, dim: int, source: Path) -> pa.FixedSizeListArray:
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != dim:
        raise TableError(
            f"{source}: its embeddings have shape {values.shape} but its model makes {dim}-dimensional "
            "embeddings (metadata config.embedding_dim); not a table of that model"
        )
    return pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(values, np.float32).reshape(-1)), dim)


def write_table(out: Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    """Write `tables` (rows in `schema`) to `out` in its format, atomically."""
    fmt = table_format(out)
    meta = schema.metadata[b"clmr"].decode()
    if fmt == ".parquet":
        with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            for table in tables:
                writer.write_table(table.replace_schema_metadata(schema.metadata))
        return
    parts = [t.select(schema.names) for t in tables]
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    dim = json.loads(meta)["config"]["embedding_dim"]
    embedding = _matrix(table.column("embedding"), dim)
    if fmt == ".npz":
        arrays = {
            "path": np.array(table.column("path").to_pylist(), dtype=str),
            "duration": table.column("duration").to_numpy(),
            "n_crops": table.column("n_crops").to_numpy(),
            "embedding": embedding,
            "metadata": np.array(meta),
        }
        if "crop_embeddings" in schema.names:
            crops = table.column("crop_embeddings").combine_chunks().flatten()
            arrays["crop_embedding"] = _matrix(crops, dim)
            arrays["crop_start_s"] = table.column("crop_start_s").combine_chunks().flatten().to_numpy()
            arrays["crop_track"] = np.repeat(np.arange(table.num_rows), arrays["n_crops"])
        with atomic_open(out, "wb") as f:
            np.savez(f, **arrays)
        return
    with atomic_open(meta_path(out), "w") as f:
        f.write(meta)
    with atomic_open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "duration", "n_crops", *(f"e{i}" for i in range(dim))])
        for path, duration, n, row in zip(
            table.column("path").to_pylist(),
            table.column("duration").to_pylist(),
            table.column("n_crops").to_pylist(),
            embedding,
            strict=True,
        ):
            writer.writerow([path, repr(duration), n, *(f"{v:.9g}" for v in row)])


def _matrix(column: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """(rows, dim) float32 of a fixed-size-list column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
