"""Expand the command line's audio inputs (files, folders searched recursively, glob patterns)."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from clmr.audio import AUDIO_EXTENSIONS


def _audio_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def find_audio(inputs: Iterable[str]) -> tuple[list[Path], list[str]]:
    """(absolute audio file paths, inputs that matched nothing).

    A named file is kept whatever its extension (the decoder judges it); folders contribute their
    audio files (by extension, recursively); anything else is a glob pattern (`**` recursive).
    Order follows the inputs, files within a folder or pattern sorted; duplicates are dropped.
    """
    found: dict[Path, None] = {}
    missing: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = _audio_in(path)
        else:
            matches = []
            for hit in sorted(glob.glob(str(path), recursive=True)):
                hit_path = Path(hit)
                matches += _audio_in(hit_path) if hit_path.is_dir() else [hit_path]
        if not matches:
            missing.append(item)
        found.update((m.resolve(), None) for m in matches)
    return list(found), missing
