"""Opening one audio file for a batch job so that nothing about it can stop the job: the file is checked
(a regular file, a UTF-8 name, a plausible header sample rate) before it is decoded, any failure of the
decoder becomes an `UnreadableAudioError` naming the file, and what the C decoders print on fd 2
(libmpg123's "Note: Illegal Audio-MPEG-Header ...") is captured and kept as that file's notes."""

from __future__ import annotations

import errno
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from clmr.audio import AudioError, EmptyAudioError, UnreadableAudioError, read_blocks

_FD2 = threading.Lock()  # one capture of fd 2 at a time (the decode thread and the main thread)


def display_name(path: str | os.PathLike) -> str:
    """`path` as printable text: bytes of a non-UTF-8 file name shown as escapes (\\xff)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_file(path: str | os.PathLike) -> None:
    """Raise `UnreadableAudioError` for what the decoder would not name well: a missing file, a symlink
    loop, a name that is not UTF-8 (FIFOs and damaged header rates are refused by `clmr.audio`)."""
    name = display_name(path)
    try:
        os.stat(path)
    except FileNotFoundError as err:
        raise UnreadableAudioError(name, "no such file") from err
    except OSError as err:
        detail = (
            "a symbolic link loop" if err.errno == errno.ELOOP else f"cannot open ({err.strerror or err})"
        )
        raise UnreadableAudioError(name, detail) from err
    if name != os.fsdecode(os.fsencode(path)):
        raise UnreadableAudioError(name, "the file name is not valid UTF-8; rename the file")


@contextmanager
def captured_fd2(notes: list[str]) -> Iterator[None]:
    """Send what is written to file descriptor 2 inside the block to `notes` instead of the terminal.
    Python's own `sys.stderr` should be moved off fd 2 first (`python_stderr_aside`)."""
    with _FD2, tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (started with 2>&-): nothing to capture
            yield
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                notes.append(" | ".join(line.strip() for line in text.splitlines() if line.strip()))


@contextmanager
def python_stderr_aside() -> Iterator[None]:
    """For the block, Python's `sys.stderr` writes to a copy of fd 2, so that `captured_fd2` takes
    only the C libraries' output, not a progress bar drawn meanwhile."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # not backed by a descriptor (e.g. captured by tests)
        yield
        return
    if fd != 2:
        yield
        return
    sys.stderr.flush()
    old = sys.stderr
    sys.stderr = open(os.dup(2), "w", encoding=old.encoding, errors="backslashreplace", buffering=1)  # noqa: SIM115
    try:
        yield
    finally:
        sys.stderr.close()
        sys.stderr = old


def file_blocks(
    path: str | os.PathLike, sample_rate: int, block_samples: int, notes: list[str]
) -> Iterator[np.ndarray]:
    """`clmr.audio.read_blocks` of one checked file with its decoder output kept in `notes`; every
    failure is an `AudioError` naming the file, and a file too short for one sample at `sample_rate`
    is empty."""
    name = display_name(path)
    try:
        with captured_fd2(notes):
            check_file(path)
            blocks = read_blocks(path, sample_rate, block_samples)
        samples = 0
        while True:
            with captured_fd2(notes):
                block = next(blocks, None)
            if block is None:
                break
            samples += len(block)
            yield block
    except AudioError as err:
        raise type(err)(name, err.detail) from err
    except Exception as err:  # a decoder bug on one file must not stop a batch job
        raise UnreadableAudioError(name, f"decoding failed ({type(err).__name__}: {err})") from err
    if samples == 0:
        raise EmptyAudioError(name, f"too short: less than one sample at {sample_rate} Hz")
