"""Safe output: every file clmr writes appears whole or not at all, after an error, a kill -9 or a
power loss (temp file in the same folder, fsync, rename); output folders carry a manifest of what clmr
wrote there, so clearing one removes only clmr's own files, and a lock keeps a second writer out."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from clmr.errors import ClmrError

TEMP_NAME = re.compile(r"[0-9a-f]{12}\.[A-Za-z0-9.]*")
"""What follows `.NAME.` in the temp files `atomic_path` creates: 12 hex digits and the suffix."""


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


MANIFEST = ".clmr-manifest.json"
"""The list of files clmr wrote into an output folder: the only files it will ever delete there."""

LOCK = ".clmr.lock"
"""The lock file one writer holds on an output folder (the lock itself lives in the manifest)."""


class OutputError(ClmrError):
    """An output folder clmr may not write into or clear, or a write that failed (disk full, denied)."""


def described(err: OSError) -> str:
    """`err` in a few words (the OS's reason, without Python's `[Errno 28]` prefix and path)."""
    return err.strerror or str(err) or type(err).__name__


@contextmanager
def io_errors(path: str | os.PathLike, error: type[ClmrError] = ClmrError, hint: str = "") -> Iterator[None]:
    """Turn an OSError (disk full, permission denied, a file where a folder is expected) into one line
    naming the file it concerns (else `path`) and the reason, plus `hint`."""
    try:
        yield
    except OSError as err:
        raise error(f"{err.filename or path}: {described(err)}{hint}") from err


def owned_files(root: str | os.PathLike) -> list[str] | None:
    """The files (relative POSIX paths) clmr recorded as written into `root`, or None without a manifest."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        written = json.loads(path.read_text(encoding="utf-8"))["written"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise OutputError(f"{path}: not a clmr file manifest ({err}); refusing to touch {root}") from err
    if not isinstance(written, list) or not all(_inside_name(w) for w in written):
        raise OutputError(
            f"{path}: not a clmr file manifest (expected a list of relative names inside the folder); "
            f"refusing to touch {root}"
        )
    return written


def _inside_name(name: object) -> bool:
    """A relative path that stays inside its folder (no absolute path, no `..`): a manifest naming
    anything else is not trusted, so clearing a folder never reaches outside it."""
    return (
        isinstance(name, str) and bool(name) and not Path(name).is_absolute() and ".." not in Path(name).parts
    )


def claim_folder(root: str | os.PathLike, what: str = "output folder") -> Path:
    """Make `root` a folder clmr may write into: created when missing, accepted when empty or already
    clmr's (it has a manifest); a folder holding other files is refused (OutputError), so nothing of
    the user's is ever overwritten or deleted."""
    root = Path(root)
    with io_errors(root, OutputError):
        if root.exists() and not root.is_dir():
            raise OutputError(f"{root}: exists and is not a folder; the {what} must be a folder")
        if owned_files(root) is None:
            if root.is_dir() and any(p.name != LOCK for p in root.iterdir()):
                raise OutputError(
                    f"{root}: a non-empty folder that clmr did not make (no {MANIFEST}); refusing to "
                    f"write into it: choose a new or empty {what}"
                )
            root.mkdir(parents=True, exist_ok=True)
            record_files(root, [LOCK], adopt=True)  # an empty lock file may be all that is there
    return root


def record_files(root: str | os.PathLike, names: list[str], *, adopt: bool = False) -> None:
    """Add `names` (relative to `root`) to its manifest; call before writing them, so a kill between
    the two leaves at most a name without its file, never a file clmr cannot prove it wrote. A name
    whose file already exists is refused (it is someone else's) unless `adopt` (clmr proved it wrote it)."""
    written = owned_files(root) or []
    for name in set(names) - set(written) if not adopt else ():
        if (Path(root) / name).exists():
            raise OutputError(
                f"{Path(root) / name}: a file clmr did not write is in the way; move it away and rerun"
            )
    new = sorted(set(written) | set(names))
    if new != written:
        atomic_write_bytes(Path(root) / MANIFEST, json.dumps({"written": new}, indent=0).encode())


def clear_folder(root: str | os.PathLike) -> list[str]:
    """Delete the files clmr recorded in `root`'s manifest (and their interrupted temp files, and the
    folders they leave empty); other files stay. Returns the relative paths of the files that stay.
    A folder without a manifest is refused unless empty (OutputError)."""
    root = Path(root)
    written = owned_files(root)
    if written is None:
        claim_folder(root)  # refuses a foreign non-empty folder; an empty one is simply claimed
        return []
    with io_errors(root, OutputError):
        for name in written:
            if name != LOCK:
                remove_owned(root / name)
        for name in sorted({str(Path(n).parent) for n in written} - {"."}, key=len, reverse=True):
            with contextlib.suppress(OSError):
                (root / name).rmdir()  # only when empty: a user's file inside keeps the folder
        # keep the manifest: the lock file is still ours
        atomic_write_bytes(root / MANIFEST, json.dumps({"written": [LOCK]}, indent=0).encode())
        return sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and p.name not in (MANIFEST, LOCK)
        )


def remove_owned(path: Path) -> None:
    """Remove `path` and the temp files an interrupted `atomic_path` left next to it (`.NAME.<hex>*`)."""
    path.unlink(missing_ok=True)
    _remove_temps(path)


def remove_temps(root: str | os.PathLike) -> None:
    """Remove the interrupted temp files of every file in `root`'s manifest (none of anyone else's)."""
    root = Path(root)
    for name in owned_files(root) or []:
        _remove_temps(root / name)


def _remove_temps(path: Path) -> None:
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*"):
            if TEMP_NAME.fullmatch(tmp.name[len(path.name) + 2 :]):
                tmp.unlink(missing_ok=True)


def acquire_lock(
    path: str | os.PathLike,
    what: str = "output folder",
    timeout: float = -1,
    error: type[ClmrError] = OutputError,
) -> FileLock:
    """The lock file `path`, acquired (waiting up to `timeout` seconds, forever when negative; filelock's
    `Timeout` when still held). A folder where it cannot be made (read-only, denied, full) raises `error`
    naming the folder, also for root without CAP_DAC_OVERRIDE."""
    path = Path(path)
    lock = FileLock(path, timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise
    except OSError as err:
        raise error(
            f"{path.parent}: cannot create the lock file {path.name} ({described(err)}); the {what} must be "
            "a writable folder"
        ) from err
    return lock


@contextmanager
def folder_lock(root: str | os.PathLike, what: str = "output folder") -> Iterator[None]:
    """Hold `root`'s lock while writing it; a second writer is refused at once with a clear message."""
    try:
        lock = acquire_lock(Path(root) / LOCK, what, timeout=0)
    except Timeout as err:
        raise OutputError(
            f"{root}: another clmr process is writing this {what} (it holds {LOCK}); wait for it to finish "
            "or choose another folder"
        ) from err
    try:
        yield
    finally:
        lock.release()
