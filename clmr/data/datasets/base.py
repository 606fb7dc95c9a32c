"""What a dataset layout yields for preprocessing: sorted entries with labels and splits, plus what
it already knows it cannot use (missing or unlabelled files)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from clmr.audio import AUDIO_EXTENSIONS, UNSUPPORTED_EXTENSIONS
from clmr.errors import ClmrError

SPLITS = ("train", "valid", "test")
TASKS = ("multilabel", "multiclass")
SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


class DatasetError(ClmrError):
    """A dataset root, labels file or split file that does not have the expected layout."""


@dataclass(frozen=True)
class Entry:
    """One source file to store: `path` is relative to the dataset root (POSIX separators)."""

    track_id: str
    path: str
    split: str | None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skip:
    """A source file (or a labelled name) that will not be stored, and why."""

    path: str
    reason: str
    detail: str = ""


@dataclass
class DatasetSpec:
    """A scanned dataset: entries sorted by path (the store's track order) and known skips."""

    name: str
    root: Path
    task: str | None  # "multilabel", "multiclass" or None (unlabelled)
    vocab: list[str]
    entries: list[Entry]
    skipped: list[Skip] = field(default_factory=list)
    split_name: str | None = None  # e.g. "won", "pons", "filtered", "hash", "csv"
    # True: `vocab` is just the labels of the entries (a folder's CSV), so the store keeps only those of
    # the tracks it actually stores (decode failures are known only then); False: a fixed list (top-50).
    vocab_from_tracks: bool = False

    def __post_init__(self) -> None:
        self.entries.sort(key=lambda e: e.path)
        ids = [e.track_id for e in self.entries]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DatasetError(f"{self.root}: track id {dup!r} appears more than once")


def hash_split(path: str) -> str:
    """Deterministic 80/10/10 train/valid/test split from the SHA-1 of the relative path."""
    # surrogateescape: a file name that is not valid UTF-8 still hashes (to the bytes on disk)
    bucket = int(hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 80 else "valid" if bucket < 90 else "test"


def find_audio(root: Path) -> list[str]:
    """Every audio file under `root` (recursive, by extension), relative POSIX paths, sorted."""
    return scan_files(root)[0]


def scan_files(root: Path) -> tuple[list[str], list[str]]:
    """(audio files, files in an audio format clmr cannot decode such as .m4a) under `root`: the first
    two lists of `scan_tree`."""
    found, unsupported, _ = scan_tree(root)
    return found, unsupported


def scan_tree(root: Path) -> tuple[list[str], list[str], list[Skip]]:
    """(audio files, files in an audio format clmr cannot decode such as .m4a, problems) under `root`,
    recursive, hidden files and folders left out; relative POSIX paths, sorted.

    Problems are listed, not dropped: a folder that cannot be listed, an audio name that is no regular
    file (a FIFO would block the decoder forever) and a name that is not valid UTF-8 (shown with
    backslash escapes). Symbolic links to folders are followed, but each folder (by device and inode)
    is read once, so a link loop (`a/up -> ..`) or a second link to the same folder does not list its
    files again; the walk goes in sorted order, so which path names a folder reached twice is
    deterministic."""
    found, unsupported, problems = [], [], []
    visited: set[tuple[int, int]] = set()

    def unlistable(err: OSError) -> None:
        problems.append(
            Skip(_relative(err.filename, root), "unreadable", f"folder cannot be listed ({err.strerror})")
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:  # vanished or unreadable since it was listed
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            lower = name.lower()
            if name.startswith(".") or not lower.endswith(AUDIO_EXTENSIONS + UNSUPPORTED_EXTENSIONS):
                continue
            rel = _relative(os.path.join(dirpath, name), root)
            problem = _problem(os.path.join(dirpath, name), rel)
            if problem is not None:
                problems.append(problem)
            elif lower.endswith(AUDIO_EXTENSIONS):
                found.append(rel)
            else:
                unsupported.append(rel)
    return sorted(found), sorted(unsupported), sorted(problems, key=lambda s: s.path)


def _relative(path: str, root: Path) -> str:
    """`path` relative to `root`, POSIX separators, with bytes that are not UTF-8 backslash-escaped."""
    rel = Path(path).relative_to(root).as_posix()
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _problem(path: str, rel: str) -> Skip | None:
    """Why the file at `path` cannot be an entry (a bad name, not a regular file), else None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return Skip(
            rel, "bad_name", "the file name is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8)"
        )
    try:
        mode = os.stat(path).st_mode
    except OSError as err:  # a link loop, a dangling link, or vanished since the listing
        why = "a symbolic link loop" if err.errno == errno.ELOOP else err.strerror
        return Skip(rel, "unreadable", f"cannot be opened ({why})")
    if not stat.S_ISREG(mode):
        return Skip(rel, "unreadable", "not a regular file (a FIFO, socket, device or folder); not read")
    return None


def require_dir(root: str | os.PathLike) -> Path:
    """The root as a Path, or a DatasetError when it is not a folder."""
    path = Path(root)
    if not path.is_dir():
        raise DatasetError(f"{path}: not a folder")
    return path


def normalise_split(value: str, where: str) -> str:
    """Map train/valid/val/validation/test (any case) to train/valid/test, or raise naming `where`."""
    split = SPLIT_ALIASES.get(value.strip().lower())
    if split is None:
        raise DatasetError(f"{where}: unknown split {value!r} (expected train, valid or test)")
    return split
