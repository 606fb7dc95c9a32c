"""Checks before preprocessing writes anything: argument ranges, source names that the index can hold,
the sources' fingerprint, and whether an existing store at --out may be reused, resumed or adopted."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

from clmr.data.datasets.base import DatasetSpec, Skip
from clmr.data.store import StoreError
from clmr.errors import check_whole
from clmr.files import LOCK, owned_files, record_files
from clmr.limits import MAX_SAMPLE_RATE

MAX_SHARD_BYTES = 1 << 40
MAX_WORKERS = 1024

_LAYOUT = re.compile(
    r"meta\.json|index\.parquet|skipped\.csv|shards/\d{5}\.npy|\.partial/(params|\d{5})\.json"
)


def recorded_min_length(out: Path, params: dict) -> int:
    """The min_length an existing (finished or unfinished) store at `out` was made with, when everything
    else matches `params` and it is the old default of one reference crop in samples; else params'."""
    for recorded in (out / "meta.json", out / ".partial" / "params.json"):
        try:
            saved = json.loads(recorded.read_text())
        except (OSError, ValueError):
            continue
        saved = saved.get("params", saved) if recorded.name == "meta.json" else saved
        if (
            saved.get("min_length") == REFERENCE_CROP
            and {**saved, "min_length": params["min_length"]} == params
        ):
            return REFERENCE_CROP
    return params["min_length"]


def fingerprint(spec: DatasetSpec) -> str:
    """SHA-256 over every entry's path, size and modification time: a resume or a reuse of a store
    whose source files changed since is refused instead of mixing old and new audio."""
    digest = hashlib.sha256()
    for entry in spec.entries:
        try:
            st = os.stat(spec.root / entry.path)
            digest.update(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{entry.path}\0missing\n".encode())
    return digest.hexdigest()


def mismatch(saved: dict | None, params: dict, what: str) -> str:
    """Why an existing store cannot be reused or resumed, naming what changed."""
    saved = saved if isinstance(saved, dict) else {}
    changed = sorted(k for k in params if saved.get(k) != params[k])
    if changed == ["sources"] and "sources" not in saved:
        return f"{what} made by an older clmr (no source fingerprint); pass overwrite=True (--overwrite) to rebuild it"
    if changed == ["sources"]:
        return (
            f"{what} made from source files that changed since (size or modification time); "
            "pass overwrite=True (--overwrite) to rebuild it"
        )
    return f"{what} made with other parameters ({', '.join(changed)}); pass overwrite=True (--overwrite)"


def named_in_utf8(spec: DatasetSpec) -> DatasetSpec:
    """Move entries whose path is not valid UTF-8 (the index cannot hold it) to the skips, named with
    backslash escapes."""
    kept = []
    for entry in spec.entries:
        try:
            entry.path.encode("utf-8")
            kept.append(entry)
        except UnicodeEncodeError:
            name = entry.path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            spec.skipped.append(Skip(name, "bad_name", "the file name is not valid UTF-8; rename it"))
    spec.entries[:] = kept
    return spec


def adopt_legacy(out: Path) -> None:
    """A store made before clmr kept a manifest: record its layout's files as clmr's own."""
    if owned_files(out) is not None or not out.is_dir():
        return
    marks = (out / "meta.json", out / ".partial" / "params.json")
    if not any(m.is_file() and b'"sample_rate"' in m.read_bytes() for m in marks):
        return
    names = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    record_files(out, [n for n in names if _LAYOUT.fullmatch(n)] + [LOCK], adopt=True)


def check_arguments(sample_rate: int, workers: int | None, min_length: int, shard_bytes: int) -> None:
    """Reject values that would fail deep inside decoding (or silently do something odd)."""
    checks = (
        ("sample_rate", sample_rate, 1000, "Hz"),
        ("min_length", min_length, 1, "samples"),
        ("shard_bytes", shard_bytes, 2, "bytes"),
    )
    for name, value, least, unit in checks:
        check_whole(name, value, least, StoreError, unit)
    if workers is not None:
        check_whole("workers", workers, 0, StoreError, "0: decode in the calling thread")
    for name, value, most in (
        ("sample_rate", sample_rate, MAX_SAMPLE_RATE),
        ("shard_bytes", shard_bytes, MAX_SHARD_BYTES),
        ("workers", workers or 0, MAX_WORKERS),
    ):
        if value > most:
            raise StoreError(f"{name} must be at most {most}, got {value!r}")


def shard_bytes_from_mb(value: float) -> int:
    """--shard-mb in bytes, refused (naming the flag) unless finite, positive and at most 1 TiB."""
    if (
        not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= MAX_SHARD_BYTES >> 20
    ):
        raise StoreError(
            f"--shard-mb must be a finite number of MiB in (0, {MAX_SHARD_BYTES >> 20}], got {value!r}"
        )
    return max(2, int(value * (1 << 20)))


REFERENCE_CROP = 59049  # samples of the reference model's crop ...
REFERENCE_RATE = 22050  # ... at its sample rate (2.68 s)


def default_min_length(sample_rate: int) -> int:
    """The default --min-length: one reference crop's duration (59049 / 22050 s) at `sample_rate`."""
    return max(1, round(REFERENCE_CROP * sample_rate / REFERENCE_RATE))
