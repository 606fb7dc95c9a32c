"""One progress display for long loops (preprocess, feature extraction, embedding, head training):
a rich bar on a terminal, plain periodic lines in a log file (CI, SLURM), nothing when switched off."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PLAIN_EVERY_S = 10.0  # seconds between plain lines when stderr is not a terminal


@contextmanager
def progress_bar(
    label: str, total: int, *, enabled: bool = True, completed: int = 0, unit: str = "", audio: bool = False
) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, seconds=0.0)`: `n` items done, `seconds` of audio among them (with `audio`,
    the display shows hours of audio and x real-time). Everything goes to stderr."""
    if not enabled:
        yield lambda n=1, seconds=0.0: None
        return
    start = time.monotonic()
    done, audio_seconds = completed, 0.0

    def stats() -> str:
        if not audio:
            return ""
        speed = audio_seconds / max(time.monotonic() - start, 1e-9)
        return f"{audio_seconds / 3600:.2f} h of audio, {speed:,.1f}x real-time"

    if not sys.stderr.isatty():
        last, shown = start, completed

        def show() -> None:
            nonlocal last, shown
            last, shown = time.monotonic(), done
            items = f" {unit}" if unit else ""
            extra = f", {stats()}" if audio else ""
            print(f"{label}: {done}/{total}{items}{extra}", file=sys.stderr, flush=True)

        def line(n: int = 1, seconds: float = 0.0) -> None:
            nonlocal done, audio_seconds
            done, audio_seconds = done + n, audio_seconds + seconds
            if time.monotonic() - last >= PLAIN_EVERY_S or done >= total:
                show()

        try:
            yield line
        finally:
            if done != shown:  # stopped early (early stopping, an error): say where
                show()
        return
    # rich only for a terminal bar: this module is imported by `clmr --help`, rich would add ~0.1 s
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if audio:
        columns.insert(3, TextColumn("{task.fields[stats]}"))
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, completed=completed, stats="")

        def advance(n: int = 1, seconds: float = 0.0) -> None:
            nonlocal audio_seconds
            audio_seconds += seconds
            bar.update(task, advance=n, stats=stats())

        yield advance
