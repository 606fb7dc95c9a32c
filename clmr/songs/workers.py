"""Audio files decoded in worker processes for a batch job (`clmr embed --workers N`), so that the model
is not left waiting on the decoder: file i is decoded, resampled and cut into crops by worker i mod N
(`clmr.songs.crops.file_songs`, the same path as in the main process) and sent back over a pipe; the
main process takes the songs in input order and batches their crops across tracks as before.

Each worker's messages are read ahead into a queue of about `BUFFER_CROPS` crops, so memory is bounded
by the number of workers, never by track length. A file the decoder fails on comes back as its usual
`AudioError`; a worker that dies (a crash in a C decoder) costs only the file it was reading, reported
as unreadable, and a new worker goes on with the rest of its files. Workers are forked from a clean
server process (multiprocessing's forkserver; spawned where there is none), never from the main
process, which holds torch's threads and maybe a CUDA context.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
from collections.abc import Iterable, Iterator
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from clmr.audio import UnreadableAudioError
from clmr.errors import ClmrError, check_whole
from clmr.limits import MAX_WORKERS
from clmr.songs.batch import track_events
from clmr.songs.crops import CHUNK_CROPS, Song, file_songs
from clmr.songs.decode import display_name

BUFFER_CROPS = 128
"""Crops read ahead per worker (30 MB of float32 at the reference crop length of 59,049 samples)."""

DEFAULT_MAX_WORKERS = 8
"""The most decode workers chosen by default."""


def default_workers() -> int:
    """Decode workers when the user does not say: one less than the cores this process may use (the
    main process runs the model), at most `DEFAULT_MAX_WORKERS`; 0 (decode in the main process) on one
    core."""
    from clmr.data.preprocessing import usable_cores  # only the main process needs it

    return max(0, min(DEFAULT_MAX_WORKERS, usable_cores() - 1))


def check_workers(workers: int) -> None:
    """A whole number from 0 to `clmr.limits.MAX_WORKERS`."""
    check_whole("workers", workers, 0, unit="decode processes")
    if workers > MAX_WORKERS:
        raise ClmrError(f"workers must be at most {MAX_WORKERS} (decode processes), got {workers}")


def _context() -> mp.context.BaseContext:
    """Workers forked from a clean server that has imported only this module (no torch, no threads)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _decode(
    conn: Connection, paths: list, sample_rate: int, crop_length: int, max_crops: int, hop: int | None
) -> None:
    """A worker: ("ready", None), then the songs of `paths` in order, sent as ("crops", chunk) and
    ("end", (samples, error, notes)) messages; it stops quietly when the main process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    try:
        conn.send(("ready", None))
        for kind, _, payload in track_events(file_songs(paths, sample_rate, crop_length, max_crops, hop)):
            if kind != "start":
                conn.send((kind, payload))
    except BrokenPipeError:
        return


class _Worker:
    """One worker process, the input indices of its files, and a thread that reads its pipe ahead
    into a queue of at most `size` messages (None once the pipe is closed: done or dead)."""

    def __init__(self, ctx: mp.context.BaseContext, share: list[int], paths: list, params: tuple, size: int):
        reader, writer = ctx.Pipe(duplex=False)
        self.share = share
        self.ready = False
        self.process = ctx.Process(
            target=_decode, args=(writer, [paths[i] for i in share], *params), name="clmr-decode", daemon=True
        )
        self.process.start()
        writer.close()  # the worker holds the only write end: its exit ends the reader's input
        self.box: queue.Queue = queue.Queue(size)
        self.stop = threading.Event()
        threading.Thread(target=self._read, args=(reader,), name="clmr-decode-reader", daemon=True).start()

    def _read(self, reader: Connection) -> None:
        with reader:
            while not self.stop.is_set():
                try:
                    message = reader.recv()
                except (EOFError, OSError):
                    message = None
                while not self.stop.is_set():
                    try:
                        self.box.put(message, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if message is None:
                    return

    def close(self) -> None:
        """Stop the worker and its reader."""
        self.stop.set()
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()


class DecodePool:
    """`workers` processes decoding `paths` for `file_songs`' parameters; `crops(i)` is file i's crops,
    to be taken in input order."""

    def __init__(self, paths: list, workers: int, params: tuple, size: int) -> None:
        self.paths, self.params, self.size = paths, params, size
        self.ctx = _context()
        self.workers: list[_Worker | None] = [None] * workers
        self.next = 0
        try:
            for w in range(workers):
                self.workers[w] = _Worker(self.ctx, list(range(w, len(paths), workers)), paths, params, size)
        except BaseException:
            self.close()
            raise

    def crops(self, i: int) -> _WorkerCrops:
        """File i's crops, read from its worker (files must be taken in input order)."""
        if i != self.next:
            raise RuntimeError(f"file {i} asked for before file {self.next}: a DecodePool is read in order")
        self.next += 1
        return _WorkerCrops(self, i)

    def receive(self, i: int) -> tuple[str, Any]:
        """The next message of file i; a worker that died before the file's end is replaced by one for
        the rest of its files, and the file is unreadable."""
        slot = i % len(self.workers)
        worker = self.workers[slot]
        message = worker.box.get()
        if message is not None and message[0] == "ready":
            worker.ready = True
            message = worker.box.get()
        if message is not None:
            return message
        worker.close()
        code = worker.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        if not worker.ready:  # not a file's fault: the worker could not run at all
            raise ClmrError(
                f"a decode worker process failed to start ({how}; its error is printed above): decode in "
                "the main process with --workers 0 (workers=0), or give a script that starts workers an "
                "`if __name__ == '__main__':` guard"
            )
        rest = [j for j in worker.share if j > i]
        self.workers[slot] = _Worker(self.ctx, rest, self.paths, self.params, self.size) if rest else None
        raise UnreadableAudioError(
            display_name(self.paths[i]), f"the decoder process died while reading it ({how}); skipped"
        )

    def close(self) -> None:
        """Stop every worker."""
        for worker in self.workers:
            if worker is not None:
                worker.close()


class _WorkerCrops:
    """A `CropSource` whose chunks come from a `DecodePool` worker."""

    def __init__(self, pool: DecodePool, index: int) -> None:
        self.pool, self.index = pool, index
        self.samples = 0
        self.notes: list[str] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            kind, payload = self.pool.receive(self.index)
            if kind == "crops":
                yield payload
                continue
            self.samples, error, self.notes = payload
            if error is not None:
                raise error
            return


def decoded_songs(
    paths: Iterable[str | os.PathLike],
    sample_rate: int,
    crop_length: int,
    max_crops: int = CHUNK_CROPS,
    hop: int | None = None,
    workers: int = 0,
) -> Iterator[Song]:
    """`clmr.songs.crops.file_songs`, decoded by `workers` processes (at most one per file; 0: in
    this process as the songs are read). The workers start when the first song is asked for and stop
    when the songs are exhausted or dropped."""
    check_workers(workers)
    paths = list(paths)
    workers = min(workers, len(paths))
    if workers == 0:
        yield from file_songs(paths, sample_rate, crop_length, max_crops, hop)
        return
    if hop is not None:
        check_whole("hop", hop, unit="samples")
    size = max(2, BUFFER_CROPS // max_crops)
    pool = DecodePool(paths, workers, (sample_rate, crop_length, max_crops, hop), size)
    try:
        for i, path in enumerate(paths):
            yield display_name(path), partial(pool.crops, i)
    finally:
        pool.close()
