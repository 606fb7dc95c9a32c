"""What a dataset layout yields for preprocessing: sorted entries with labels and splits, plus what
it already knows it cannot use (missing or unlabelled files)."""

from __future__ import annotations

import hashlib
import os
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
    bucket = int(hashlib.sha1(path.encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 80 else "valid" if bucket < 90 else "test"


def find_audio(root: Path) -> list[str]:
    """Every audio file under `root` (recursive, by extension), relative POSIX paths, sorted."""
    return scan_files(root)[0]


def scan_files(root: Path) -> tuple[list[str], list[str]]:
    """(audio files, files in an audio format clmr cannot decode such as .m4a) under `root`,
    recursive, hidden files and folders left out; relative POSIX paths, sorted.

    Symbolic links to folders are followed, but each folder (by device and inode) is read once, so a
    link loop (`a/up -> ..`) or a second link to the same folder does not list its files again; the
    walk goes in sorted order, so which path names a folder reached twice is deterministic."""
    found, unsupported = [], []
    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
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
            if name.startswith("."):
                continue
            lower = name.lower()
            if lower.endswith(AUDIO_EXTENSIONS):
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
            elif lower.endswith(UNSUPPORTED_EXTENSIONS):
                unsupported.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found), sorted(unsupported)


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
