"""Embed a catalogue of audio files into a resumable parquet table, with a side file of the failures."""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clmr import __version__
from clmr.audio import UNSUPPORTED_DETAIL
from clmr.devices import resolve_device
from clmr.errors import ClmrError
from clmr.evaluate.features import file_fingerprint
from clmr.inference.paths import find_audio
from clmr.inference.table import EmbeddingWriter
from clmr.models import CLMR
from clmr.models.checkpoint import RUN_DIR_MODEL
from clmr.progress import progress_bar
from clmr.songs.apply import check_batch_size, embed_files

EMBEDDING_DEFINITION = "mean of the encoder output h over consecutive non-overlapping crops"


@dataclass
class CatalogueSummary:
    """What one `embed_catalogue` run did."""

    out: Path
    embedded: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, detail)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def errors_csv(self) -> Path:
        """The side file listing unreadable inputs."""
        return errors_path(self.out)

    @property
    def realtime(self) -> float:
        """Seconds of audio embedded per second of wall time."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0


def errors_path(out: Path) -> Path:
    """`embeddings.parquet` -> `embeddings.errors.csv`."""
    return out.with_name(out.stem + ".errors.csv")


def checkpoint_metadata(model: CLMR, checkpoint: str | os.PathLike) -> dict[str, Any]:
    """What a table records about the model: checkpoint path and sha256, its config, clmr version."""
    path = Path(checkpoint).resolve()
    weights = path / RUN_DIR_MODEL if path.is_dir() else path
    return {
        "checkpoint": str(path),
        "checkpoint_sha256": file_fingerprint(weights),
        "config": model.config(),
        "embedding": EMBEDDING_DEFINITION,
        "clmr_version": __version__,
    }


class _ErrorLog:
    """Failures written to CSV as they happen (the file is only created on the first failure)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[tuple[str, str, str]] = []
        self._file = None
        if path.exists():
            path.unlink()

    def add(self, path: str, reason: str, detail: str) -> None:
        if self._file is None:
            self._file = open(self.path, "w", newline="")  # noqa: SIM115 (closed in close())
            self._writer = csv.writer(self._file)
            self._writer.writerow(["path", "reason", "detail"])
        self._writer.writerow([path, reason, detail])
        self._file.flush()
        self.rows.append((path, reason, detail))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def embed_catalogue(
    model: CLMR,
    checkpoint: str | os.PathLike,
    inputs: Iterable[str],
    out: str | os.PathLike,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    per_crop: bool = False,
    progress: bool = True,
) -> CatalogueSummary:
    """Embed every audio file named by `inputs` (files, folders, globs) into the table `out`.

    Paths already in the table are skipped; unreadable ones are listed in `OUT.errors.csv` and skipped.
    """
    check_batch_size(batch_size)
    resolve_device(device, model)  # bad options fail before anything is written
    out = Path(out)
    if out.is_dir():
        raise ClmrError(
            f"{out}: is a folder; --out names the parquet file to write, e.g. {out / 'embeddings.parquet'}"
        )
    inputs = list(inputs)
    found = find_audio(inputs)
    files = found.files
    if not files:
        what = "no audio files found in " + ", ".join(map(str, inputs))
        if found.unsupported:
            what += f" ({len(found.unsupported)} file(s) such as {found.unsupported[0].name}: {UNSUPPORTED_DETAIL})"
        raise ClmrError(what)
    writer = EmbeddingWriter(out, checkpoint_metadata(model, checkpoint), model.embedding_dim, per_crop)
    errors = _ErrorLog(errors_path(out))
    summary = CatalogueSummary(out)
    for item in found.missing:
        errors.add(item, "missing", "no file, folder or glob match")
    for path in found.unsupported:
        errors.add(str(path), "unsupported", UNSUPPORTED_DETAIL)
    todo = [str(f) for f in files if str(f) not in writer.done]
    summary.skipped = len(files) - len(todo)
    start = time.monotonic()
    try:
        with progress_bar("embedding", len(todo), enabled=progress, unit="tracks", audio=True) as advance:
            for result in embed_files(model, todo, batch_size=batch_size, device=device, per_crop=per_crop):
                if result.ok:
                    writer.add(result)
                    summary.embedded += 1
                    summary.audio_seconds += result.duration
                else:
                    errors.add(result.key, result.error.reason, result.error.detail)
                advance(1, result.duration)
    finally:
        writer.close()
        errors.close()
    summary.wall_seconds = time.monotonic() - start
    summary.failed = errors.rows
    return summary
