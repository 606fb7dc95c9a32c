"""Expand the command line's audio inputs (files, folders searched recursively, glob patterns)."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clmr.audio import UNSUPPORTED_EXTENSIONS
from clmr.data.datasets.base import scan_files


def _scan(folder: Path) -> tuple[list[Path], list[Path]]:
    """(audio files, files of undecodable audio formats) under `folder`, as `clmr preprocess` finds
    them: recursive, hidden files and folders (e.g. macOS `._song.mp3`) left out, sorted."""
    audio, odd = scan_files(folder)
    return [folder / p for p in audio], [folder / p for p in odd]


@dataclass
class Inputs:
    """What the command line's inputs name: audio files (absolute, in order), inputs that matched
    nothing, and files in folders whose audio format clmr cannot decode (e.g. .m4a)."""

    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)


def find_audio(inputs: Iterable[str]) -> Inputs:
    """Expand files, folders and glob patterns into audio files.

    A named file is kept whatever its extension (the decoder judges it) unless its audio format is
    one clmr cannot decode (listed as `unsupported`); folders contribute their
    audio files (by extension, recursively), and list the files of undecodable audio formats
    (`clmr.audio.UNSUPPORTED_EXTENSIONS`) as `unsupported`; anything else is a glob pattern (`**`
    recursive). Order follows the inputs, files within a folder or pattern sorted; duplicates are
    dropped.
    """
    found: dict[Path, None] = {}
    unsupported: dict[Path, None] = {}
    missing: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        odd: list[Path] = []
        if path.is_file() and path.suffix.lower() in UNSUPPORTED_EXTENSIONS:
            matches, odd = [], [path]
        elif path.is_file():
            matches = [path]
        elif path.is_dir():
            matches, odd = _scan(path)
        else:
            matches = []
            for hit in sorted(glob.glob(str(path), recursive=True)):
                hit_path = Path(hit)
                if hit_path.is_dir():
                    audio, undecodable = _scan(hit_path)
                    matches += audio
                    odd += undecodable
                else:
                    matches.append(hit_path)
        if not matches and not odd:
            missing.append(item)
        found.update((m.resolve(), None) for m in matches)
        unsupported.update((p.resolve(), None) for p in odd)
    return Inputs(list(found), missing, [p for p in unsupported if p not in found])
