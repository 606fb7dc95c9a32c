"""Embed a catalogue of audio files into a resumable table (parquet, npz or CSV), with a side file of the
files that were not embedded and of what the decoder printed about the others."""

from __future__ import annotations

import csv
import math
import os
import sys
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
from clmr.inference.paths import Inputs, find_audio, resolved
from clmr.inference.table import EmbeddingWriter
from clmr.models import CLMR
from clmr.models.checkpoint import RUN_DIR_MODEL
from clmr.progress import progress_bar
from clmr.songs.apply import check_batch_size, embed_files
from clmr.songs.decode import python_stderr_aside
from clmr.songs.workers import check_workers, default_workers

EMBEDDING_DEFINITION = "mean of the encoder output h over crops starting every crop_hop_s seconds"
NOTES_REASON = "decoder-notes"
"""errors.csv reason of a file that was embedded but whose decoder printed warnings (e.g. a damaged mp3)."""


def hop_samples(hop_seconds: float | None, sample_rate: int) -> int | None:
    """`--hop` seconds as whole samples at the model's rate (None: the crop length); validated."""
    if hop_seconds is None:
        return None
    if not (isinstance(hop_seconds, (int, float)) and math.isfinite(hop_seconds) and hop_seconds > 0):
        raise ClmrError(f"hop must be a positive number of seconds, got {hop_seconds!r}")
    hop = round(hop_seconds * sample_rate)
    if hop < 1:
        raise ClmrError(f"hop {hop_seconds} s is shorter than one sample at {sample_rate} Hz")
    return hop


def _no_input_message(inputs: list[str], found: Inputs) -> str:
    """Why nothing can be embedded, naming the inputs."""
    if found.missing and len(found.missing) == len(inputs):
        names = ", ".join(found.missing)
        if any(ch in names for ch in "*?["):
            return f"no such file or folder, and no glob match: {names}"
        return f"no such file or folder: {names}"
    what = "no audio files found in " + ", ".join(map(str, inputs))
    if found.unsupported:
        what += (
            f" ({len(found.unsupported)} file(s) such as {found.unsupported[0].name}: {UNSUPPORTED_DETAIL})"
        )
    if found.problems:
        path, reason = found.problems[0]
        what += f" ({len(found.problems)} unusable entr(ies) such as {path}: {reason})"
    return what


@dataclass
class CatalogueSummary:
    """What one `embed_catalogue` run did."""

    out: Path
    embedded: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, detail)
    noted: int = 0  # embedded files the decoder printed warnings about (listed as reason "decoder-notes")
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def errors_csv(self) -> Path:
        """The side file listing unreadable inputs and decoder notes."""
        return errors_path(self.out)

    @property
    def realtime(self) -> float:
        """Seconds of audio embedded per second of wall time."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0


def errors_path(out: Path) -> Path:
    """`embeddings.parquet` -> `embeddings.errors.csv`."""
    return out.with_name(out.stem + ".errors.csv")


def checkpoint_metadata(model: CLMR, checkpoint: str | os.PathLike, hop: int | None = None) -> dict[str, Any]:
    """What a table records about the model: checkpoint path and sha256, its config, clmr version, and
    the crop hop in seconds (`hop` samples; default the crop length)."""
    path = Path(checkpoint).resolve()
    weights = path / RUN_DIR_MODEL if path.is_dir() else path
    return {
        "checkpoint": str(path),
        "checkpoint_sha256": file_fingerprint(weights),
        "config": model.config(),
        "embedding": EMBEDDING_DEFINITION,
        "clmr_version": __version__,
        "crop_hop_s": (hop or model.crop_length) / model.sample_rate,
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
            self._file = open(self.path, "w", newline="", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
            self._writer = csv.writer(self._file)
            self._writer.writerow(["path", "reason", "detail"])
        self._writer.writerow([path, reason, detail])
        self._file.flush()
        if reason != NOTES_REASON:
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
    hop: float | None = None,
    workers: int | None = None,
) -> CatalogueSummary:
    """Embed every audio file named by `inputs` (files, folders, globs) into the table `out`, its
    format by suffix (`clmr.inference.formats`); crops start every `hop` seconds (default: the crop
    length). Rows keep the paths the user gave (absolute, symlinks not resolved). Files already in the
    table, under that name or another one (a symlink to them), are skipped; unusable ones are listed in
    `OUT.errors.csv` with their reason, and the job goes on. A second run on the same `out` waits for
    the first. `workers`: decode processes (`clmr.songs.workers`; None: `default_workers()`, 0: decode
    in this process)."""
    check_batch_size(batch_size)
    workers = default_workers() if workers is None else workers
    check_workers(workers)
    hop_n = hop_samples(hop, model.sample_rate)
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
        raise ClmrError(_no_input_message(inputs, found))
    writer = EmbeddingWriter(
        out,
        checkpoint_metadata(model, checkpoint, hop_n),
        model.embedding_dim,
        per_crop,
        on_wait=lambda: print(
            f"{out}: another clmr embed is writing it; waiting", file=sys.stderr, flush=True
        ),
    )
    errors = _ErrorLog(errors_path(out))
    summary = CatalogueSummary(out)
    for item in found.missing:
        errors.add(item, "missing", "no file, folder or glob match")
    for path in found.unsupported:
        errors.add(str(path), "unsupported", UNSUPPORTED_DETAIL)
    for path, reason in found.problems:
        errors.add(path, "unreadable", reason)
    todo = [str(f) for f in files if str(f) not in writer.done]
    if todo and writer.done:  # another name of a file already in the table (a symlink, its target)
        targets = {resolved(p) for p in writer.done}
        todo = [f for f in todo if resolved(f) not in targets]
    summary.skipped = len(files) - len(todo)
    start = time.monotonic()
    try:
        with (
            python_stderr_aside(),
            progress_bar("embedding", len(todo), enabled=progress, unit="tracks", audio=True) as advance,
        ):
            results = embed_files(
                model,
                todo,
                batch_size=batch_size,
                device=device,
                per_crop=per_crop,
                hop=hop_n,
                workers=workers,
            )
            for result in results:
                notes = " | ".join(result.notes)
                if result.ok:
                    writer.add(result)
                    summary.embedded += 1
                    summary.audio_seconds += result.duration
                    if notes:
                        errors.add(result.key, NOTES_REASON, notes)
                        summary.noted += 1
                else:
                    detail = result.error.detail + (f" (decoder said: {notes})" if notes else "")
                    errors.add(result.key, result.error.reason, detail)
                advance(1, result.duration)
    finally:
        writer.close()
        errors.close()
    summary.wall_seconds = time.monotonic() - start
    summary.failed = errors.rows
    return summary
