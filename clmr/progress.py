"""One progress display for long loops (preprocess, feature extraction, embedding, training):
a rich bar with an ETA on a terminal, plain periodic lines with an ETA in a log file (CI, SLURM),
nothing when switched off. A caller that knows better (a time budget) gives its own time left."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PLAIN_EVERY_S = 30.0  # at most this long between plain lines (stderr not a terminal) while items advance


def format_duration(seconds: float) -> str:
    """`1:02:03` for hours, `2:03` under an hour: the ETA of a plain line."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@contextmanager
def progress_bar(
    label: str,
    total: int | None,
    *,
    enabled: bool = True,
    completed: int = 0,
    unit: str = "",
    audio: bool = False,
    status: Callable[[], str] | None = None,
    remaining: Callable[[], str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, seconds=0.0)`: `n` items done, `seconds` of audio among them (with `audio`,
    the display shows hours of audio and x real-time). `status()` adds the caller's own figures (step,
    loss, pairs/s) to every update. The ETA is from this invocation's rate (a resumed count starts at
    `completed`); `total=None` shows none. `remaining()`, if given, is shown in its place: the caller's
    own time left (`27:31 left (max-time)`; empty: none yet). Everything goes to stderr; `clock` is for
    tests."""
    if not enabled:
        yield lambda n=1, seconds=0.0: None
        return
    start = clock()
    done, audio_seconds = completed, 0.0

    def stats() -> str:
        parts = [status()] if status is not None else []
        if audio:
            speed = audio_seconds / max(clock() - start, 1e-9)
            parts.append(f"{audio_seconds / 3600:.2f} h of audio, {speed:,.1f}x real-time")
        return ", ".join(p for p in parts if p)

    if not sys.stderr.isatty():
        last, shown = start, completed

        def eta() -> str:
            if remaining is not None:
                text = remaining() if total is None or done < total else ""
                return f", {text}" if text else ""
            if total is None or done <= completed or done >= total:
                return ""
            rate = (done - completed) / max(clock() - start, 1e-9)
            return f", ETA {format_duration((total - done) / rate)}"

        def show() -> None:
            nonlocal last, shown
            last, shown = clock(), done
            items = f" {unit}" if unit else ""
            of = f"/{total}" if total is not None else ""
            extra = f", {stats()}" if (audio or status is not None) else ""
            print(f"{label}: {done}{of}{items}{extra}{eta()}", file=sys.stderr, flush=True)

        def line(n: int = 1, seconds: float = 0.0) -> None:
            nonlocal done, audio_seconds
            done, audio_seconds = done + n, audio_seconds + seconds
            if clock() - last >= PLAIN_EVERY_S or (total is not None and done >= total):
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
        TextColumn(label, markup=False),  # names are printed literally ("[bold]" in a file name too)
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn() if remaining is None else TextColumn("{task.fields[left]}", markup=False),
    ]
    if audio or status is not None:
        columns.insert(3, TextColumn("{task.fields[stats]}", markup=False))
    with Progress(*columns, console=Console(stderr=True)) as bar:
        left = remaining if remaining is not None else lambda: ""
        task = bar.add_task(label, total=total, completed=completed, stats=stats(), left=left())

        def advance(n: int = 1, seconds: float = 0.0) -> None:
            nonlocal audio_seconds
            audio_seconds += seconds
            bar.update(task, advance=n, stats=stats(), left=left())

        yield advance
