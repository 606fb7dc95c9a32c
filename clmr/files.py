"""Atomic output: every file clmr writes appears whole or not at all, after an error, a kill -9 or a
power loss (temp file in the same folder, fsync, rename)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _new_temp(path: Path, suffix: str) -> Path:
    """Create an empty, unique temporary file next to `path` with a new file's usual permissions
    (0o666 less the process umask, applied by the OS: the umask is never read or changed)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to `path` for writers that take a file name. On success the file is
    synced and renamed onto `path`; on an error it is removed and `path` is left as it was."""
    path = Path(path)
    tmp = _new_temp(path, suffix)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """`open(path, mode)` for writing, made atomic with `atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)
