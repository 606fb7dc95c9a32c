"""Expand the command line's audio inputs (files, folders searched recursively, glob patterns) into
regular audio files, listing what cannot be used (missing inputs, undecodable formats, unreadable
folders, FIFOs, symlink loops) instead of stopping or hanging on it. Files keep the names the user
gave (a symlink is listed under its own name); targets are resolved only to drop duplicates."""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clmr.audio import AUDIO_EXTENSIONS, UNSUPPORTED_EXTENSIONS
from clmr.data.datasets.base import scan_tree
from clmr.songs.decode import display_name


@dataclass
class Inputs:
    """What the command line's inputs name: audio files (absolute, symlinks not resolved, in order),
    inputs that matched nothing, files of audio formats clmr cannot decode (e.g. .m4a), and (path,
    reason) of entries that cannot be read (an unreadable folder, a FIFO, a symlink loop)."""

    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _kind(path: Path) -> tuple[str, str]:
    """("file" | "dir" | "missing" | "problem", reason) of a path, following symlinks."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return ("problem", "a dangling symbolic link") if os.path.islink(path) else ("missing", "")
    except OSError as err:
        return "problem", "a symbolic link loop" if "loop" in str(err).lower() else err.strerror or str(err)
    if stat.S_ISDIR(mode):
        return "dir", ""
    if stat.S_ISREG(mode):
        return "file", ""
    return "problem", "not a regular file (a FIFO, device or socket is never read)"


def resolved(path: str | os.PathLike) -> Path:
    """`path` expanded and made absolute with its symlinks resolved where possible (a loop keeps its
    own name): the file itself, to tell that two names are one file."""
    path = Path(path).expanduser()
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def absolute(path: str | os.PathLike) -> Path:
    """`path` expanded and made absolute as the user named it: symlinks kept; `..` folded unless it
    follows a symlinked folder (where folding it by name would point at another file)."""
    path = Path(path).expanduser().absolute()
    folded = Path(os.path.normpath(path))
    return folded if folded == path or resolved(folded) == resolved(path) else path


class _Walk:
    """Collects one input's audio files, undecodable files and problems."""

    def __init__(self) -> None:
        self.audio: list[Path] = []
        self.odd: list[Path] = []
        self.problems: list[tuple[str, str]] = []

    def entry(self, path: Path, named: bool) -> None:
        """A file met in a folder (by extension) or named directly (whatever its extension)."""
        lower = path.name.lower()
        if lower.endswith(UNSUPPORTED_EXTENSIONS):
            self.odd.append(path)
            return
        if not named and not lower.endswith(AUDIO_EXTENSIONS):
            return
        kind, reason = _kind(path)
        if kind == "file":
            self.audio.append(path)
        elif kind == "problem":
            self.problems.append((display_name(path), reason))

    def folder(self, root: Path) -> None:
        """Audio under `root` as `clmr preprocess` finds it (`scan_tree`: recursive, hidden names left
        out, symlinked folders read once, sorted); unreadable folders and entries are reported."""
        audio, odd, problems = scan_tree(root)
        self.audio += [root / rel for rel in audio]
        self.odd += [root / rel for rel in odd]
        self.problems += [(str(root / skip.path), skip.detail) for skip in problems]


def find_audio(inputs: Iterable[str]) -> Inputs:
    """Expand files, folders and glob patterns into regular audio files.

    A named file is kept whatever its extension (the decoder judges it) unless its audio format is one
    clmr cannot decode (listed as `unsupported`); folders contribute their audio files (by extension,
    recursively); anything else is a glob pattern (`**` recursive). Order follows the inputs, files
    within a folder or pattern sorted; paths are absolute but keep the user's names (a symlink stays a
    symlink); a second name of a file already found (a symlink to it, another route to it) is dropped.
    """
    found: dict[Path, Path] = {}  # resolved -> the first name it was found under
    unsupported: dict[Path, Path] = {}
    problems: dict[str, str] = {}
    missing: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        walk = _Walk()
        kind = _kind(path)[0]
        if kind == "dir":
            walk.folder(path)
        elif kind != "missing":
            walk.entry(path, named=True)
        else:
            for hit in sorted(glob.glob(str(path), recursive=True)):
                if _kind(Path(hit))[0] == "dir":
                    walk.folder(Path(hit))
                else:
                    walk.entry(Path(hit), named=True)
        if not walk.audio and not walk.odd and not walk.problems:
            missing.append(item)
        for name in walk.audio:
            found.setdefault(resolved(name), absolute(name))
        for name in walk.odd:
            unsupported.setdefault(resolved(name), absolute(name))
        problems.update(walk.problems)
    odd = [p for key, p in unsupported.items() if key not in found]
    return Inputs(list(found.values()), missing, odd, list(problems.items()))
