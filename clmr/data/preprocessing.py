"""Preprocessing: decode and resample every source file once, in parallel, into a store.

Tracks are stored in sorted source-path order and cut into shards by a fixed byte budget, so the
store depends only on the sources and the parameters. Each finished shard is written atomically
(temp file + rename) together with a journal of the tracks and skips it covers; a rerun after an
interruption (kill -9 included) keeps the journalled shards and continues after them, ending with
the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clmr.audio import AudioError, read_blocks
from clmr.data.checks import (
    adopt_legacy,
    check_arguments,
    default_min_length,
    fingerprint,
    mismatch,
    named_in_utf8,
    recorded_min_length,
)
from clmr.data.datasets import scan
from clmr.data.datasets.base import DatasetSpec, Entry, Skip
from clmr.data.store import FORMAT, INDEX_SCHEMA, SCALE, VERSION, Store, StoreError, shard_path
from clmr.errors import check_whole
from clmr.files import (
    atomic_open,
    atomic_write_bytes,
    claim_folder,
    clear_folder,
    folder_lock,
    io_errors,
    owned_files,
    record_files,
    remove_owned,
    remove_temps,
)
from clmr.progress import progress_bar

DEFAULT_SHARD_BYTES = 1 << 30
NOTES = ("truncated",)
"""skipped.csv reasons that are notes about a stored track (kept shortened), not skips."""
RETRY_HINT = "; fix it (free space, permissions) and rerun the same command to resume"


def usable_cores() -> int:
    """Cores this process may run on (a container's or `taskset`'s share, not the whole machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode(path: str, sample_rate: int, min_length: int) -> tuple[str, np.ndarray | None, str]:
    """One file's job: ("ok", int16 PCM, "" or a note such as a truncation) or (reason, None, detail).
    Decoded block by block into int16, so the peak memory is the stored track plus one block (and a
    silent file, such as a sparse one whose header claims hours, never more than one block)."""
    notes: list[str] = []
    blocks: list[np.ndarray | int] = []
    try:
        for block in read_blocks(path, sample_rate, notes=notes):
            pcm = to_pcm(block)
            blocks.append(
                pcm if pcm.any() else len(pcm)
            )  # all-zero blocks by length: a sparse file costs nothing
    except AudioError as err:
        return err.reason, None, err.detail
    audio = np.concatenate([np.zeros(b, np.int16) if isinstance(b, int) else b for b in blocks])
    del blocks
    if len(audio) < min_length:
        return (
            "too_short",
            None,
            f"{len(audio)} samples at {sample_rate} Hz < min_length {min_length} (lower --min-length to keep it)",
        )
    return "ok", audio, "; ".join(notes)


def to_pcm(audio: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1) -> int16, rounded to nearest and clipped (in place on `audio`: one copy
    fewer than the out-of-place chain, which matters at preprocessing speed)."""
    audio = np.multiply(audio, np.float32(SCALE), out=audio if audio.flags.writeable else None)
    np.rint(audio, out=audio)
    np.clip(audio, -32768, 32767, out=audio)
    return audio.astype(np.int16)


def preprocess(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dataset: str = "folder",
    labels: str | os.PathLike | None = None,
    split: str | None = None,
    task: str | None = None,
    sample_rate: int = 22050,
    workers: int | None = None,
    min_length: int | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> Store:
    """Build (or resume, or reuse) the store at `out` from the dataset at `source`; returns it.

    dataset: "folder" (any audio folder, optional `labels` CSV), "mtat", "msd", "gtzan".
    split: the dataset's named split (mtat: won|pons; gtzan: filtered|random; folder: hash|none).
    workers: decoding threads (None: one per usable core; 0: decode in the calling thread).
    min_length: tracks shorter than this many samples (at `sample_rate`) are skipped as too_short
        (None: one reference crop's duration, 59049 / 22050 s, at `sample_rate`).
    on_shard: called with each shard number once that shard is durably written.
    """
    chosen_min_length = min_length is not None
    if min_length is None:
        check_whole("sample_rate", sample_rate, 1000, StoreError, "Hz")
        min_length = default_min_length(sample_rate)
    check_arguments(sample_rate, workers, min_length, shard_bytes)
    out = Path(out)
    with io_errors(out, StoreError, RETRY_HINT):
        if out.exists() and not out.is_dir():
            raise StoreError(f"{out}: exists and is not a folder; --out names the store folder")
        spec = named_in_utf8(scan(dataset, source, labels=labels, split=split, task=task))
        params = {
            "source": str(Path(source).resolve()),
            "dataset": spec.name,
            "labels": str(Path(labels).resolve()) if labels else None,
            "split": spec.split_name,
            "task": spec.task,
            "sample_rate": int(sample_rate),
            "min_length": int(min_length),
            "shard_bytes": int(shard_bytes),
            "entries": len(spec.entries),
            "sources": fingerprint(spec),
        }
        adopt_legacy(out)
        claim_folder(out, "store folder (--out)")
        with folder_lock(out, "store"):
            if overwrite:
                clear_folder(out)
            if not chosen_min_length:  # a store begun when the default was 59049 samples at every rate
                params["min_length"] = recorded_min_length(out, params)
            return _build(out, spec, params, workers, progress, on_shard)


def _build(
    out: Path, spec: DatasetSpec, params: dict, workers: int | None, progress: bool, on_shard
) -> Store:
    """Reuse, resume or make the store at `out` (locked and owned by this process)."""
    if (out / "meta.json").is_file():
        store = Store(out)
        if store.meta.get("params") != params:
            raise StoreError(f"{out}: {mismatch(store.meta.get('params'), params, 'a store')}")
        # meta.json is written last, so a run killed while deleting .partial/ is complete: finish the cleanup
        _remove_partial(out)
        _say(progress, f"{out}: store already complete ({len(store)} tracks)")
        return store
    partial = out / ".partial"
    params_file = partial / "params.json"
    if params_file.is_file():
        try:
            saved = json.loads(params_file.read_text())
        except ValueError as err:
            raise StoreError(f"{params_file}: unreadable ({err}); pass overwrite=True (--overwrite)") from err
        if saved != params:
            raise StoreError(f"{out}: {mismatch(saved, params, 'an unfinished store')}")
    record_files(out, [".partial/params.json"])
    partial.mkdir(exist_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    atomic_write_bytes(params_file, json.dumps(params, indent=1).encode())
    remove_temps(out)  # left by an interrupted write

    journals = _read_journals(out)
    done = journals[-1]["end"] if journals else 0
    rows = [r for j in journals for r in j["rows"]]
    skipped = [Skip(**s) for j in journals for s in j["skipped"]]
    writer = _ShardWriter(out, len(journals), params["shard_bytes"], on_shard)
    if done:
        _say(progress, f"{out}: resuming after {done} of {len(spec.entries)} files")
    total, sample_rate, min_length = len(spec.entries), params["sample_rate"], params["min_length"]
    with progress_bar(
        "preprocess", total, enabled=progress, completed=done, unit="files", audio=True
    ) as advance:
        for i, entry, (status, pcm, detail) in _decoded(spec, done, sample_rate, min_length, workers):
            if status == "ok":
                writer.add(i, entry, pcm)
                if detail:  # kept, but the user should know: e.g. a file cut short
                    writer.skip(Skip(entry.path, detail.split(":", 1)[0], f"stored shortened; {detail}"))
            else:
                writer.skip(Skip(entry.path, status, detail))
            advance(1, 0.0 if pcm is None else len(pcm) / sample_rate)
    writer.close(total)
    rows += writer.rows
    skipped += writer.skipped
    return _finish(out, spec, params, rows, skipped + spec.skipped, progress)


def _decoded(
    spec: DatasetSpec, start: int, sample_rate: int, min_length: int, workers: int | None
) -> Iterator[tuple[int, Entry, tuple[str, np.ndarray | None, str]]]:
    """Decode entries[start:] in order, `workers` files at a time on threads (None: one per core; 0: in
    this thread). libsndfile, mpg123 and soxr release the GIL, so threads use every core without the
    start-up cost and result copies of worker processes; at most 2 x workers decoded tracks are held."""
    workers = usable_cores() if workers is None else workers
    jobs = [(i, entry, str(spec.root / entry.path)) for i, entry in enumerate(spec.entries) if i >= start]
    if workers == 0:
        for i, entry, path in jobs:
            yield i, entry, decode(path, sample_rate, min_length)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clmr-decode") as pool:
        window: deque[tuple[int, Entry, Future]] = deque()
        try:
            for i, entry, path in jobs:
                window.append((i, entry, pool.submit(decode, path, sample_rate, min_length)))
                if len(window) >= 2 * workers:
                    i, entry, future = window.popleft()
                    yield i, entry, future.result()
            while window:
                i, entry, future = window.popleft()
                yield i, entry, future.result()
        finally:
            pool.shutdown(cancel_futures=True)  # interrupted: do not decode what nobody will write


class _ShardWriter:
    """Accumulates tracks into the current shard; closes it (atomically, with its journal) when the
    next track would exceed the byte budget."""

    def __init__(
        self, root: Path, shard: int, shard_bytes: int, on_shard: Callable[[int], None] | None
    ) -> None:
        self.root, self.shard, self.shard_bytes, self.on_shard = root, shard, shard_bytes, on_shard
        self.rows: list[dict] = []
        self.skipped: list[Skip] = []
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._rows: list[dict] = []
        self._skipped: list[Skip] = []

    def add(self, i: int, entry: Entry, pcm: np.ndarray) -> None:
        if self._chunks and 2 * (self._samples + len(pcm)) > self.shard_bytes:
            self.close(i)
        self._rows.append(
            {
                "track_id": entry.track_id,
                "path": entry.path,
                "split": entry.split,
                "shard": self.shard,
                "offset": self._samples,
                "length": len(pcm),
                "labels": list(entry.labels),
            }
        )
        self._chunks.append(pcm)
        self._samples += len(pcm)

    def skip(self, skip: Skip) -> None:
        self._skipped.append(skip)

    def close(self, end: int) -> None:
        """Write the current shard and its journal; `end` is the first entry not covered."""
        if self._chunks:
            target = shard_path(self.root, self.shard)
            journal_file = self.root / ".partial" / f"{self.shard:05d}.json"
            record_files(
                self.root, [target.relative_to(self.root).as_posix(), f".partial/{journal_file.name}"]
            )
            with io_errors(target, StoreError, RETRY_HINT), atomic_open(target, "wb") as f:
                header = {"descr": "<i2", "fortran_order": False, "shape": (self._samples,)}
                np.lib.format.write_array_header_1_0(f, header)
                for chunk in self._chunks:
                    f.write(chunk.astype("<i2", copy=False).tobytes())
            journal = {"end": end, "rows": self._rows, "skipped": [asdict(s) for s in self._skipped]}
            with io_errors(journal_file, StoreError, RETRY_HINT):
                atomic_write_bytes(journal_file, json.dumps(journal).encode())
            if self.on_shard is not None:
                self.on_shard(self.shard)
            self.shard += 1
        self.rows += self._rows
        self.skipped += self._skipped
        self._chunks, self._rows, self._skipped, self._samples = [], [], [], 0


def _read_journals(out: Path) -> list[dict]:
    """Consecutive journals 00000.json, 00001.json, ... whose shard file exists."""
    journals = []
    while True:
        n = len(journals)
        path = out / ".partial" / f"{n:05d}.json"
        if not path.is_file() or not shard_path(out, n).is_file():
            return journals
        try:
            journals.append(json.loads(path.read_text()))
        except ValueError:  # damaged: its shard is redone
            return journals


def _finish(
    out: Path, spec: DatasetSpec, params: dict, rows: list[dict], skipped: list[Skip], progress: bool
) -> Store:
    if not rows:
        reasons = _count(s.reason for s in skipped)
        hint = ""
        if reasons.get("too_short"):
            hint = (
                f"; {reasons['too_short']} track(s) are shorter than min_length {params['min_length']} samples"
                f" at {params['sample_rate']} Hz: lower --min-length (min_length=) to keep them"
            )
        raise StoreError(
            f"{spec.root}: no track could be stored ({_describe(reasons) or 'no audio files found'}){hint}"
        )
    shards = 1 + max(r["shard"] for r in rows)
    for name in owned_files(out) or []:  # clmr's shards beyond the final count (from another budget)
        if re.fullmatch(r"shards/\d{5}\.npy", name) and int(name[7:12]) >= shards:
            remove_owned(out / name)
    record_files(out, ["index.parquet", "skipped.csv", "meta.json"])
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    atomic_write_bytes(out / "index.parquet", buffer.getvalue().to_pybytes())
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["path", "reason", "detail"])
    w.writerows([s.path, s.reason, s.detail] for s in sorted(skipped, key=lambda s: (s.path, s.reason)))
    atomic_write_bytes(out / "skipped.csv", text.getvalue().encode())
    samples = int(sum(r["length"] for r in rows))
    vocab = spec.vocab
    if spec.vocab_from_tracks:  # no label whose every file was skipped (a class with zero tracks)
        stored = {t for r in rows for t in r["labels"]}
        vocab = [t for t in vocab if t in stored]
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "dataset": spec.name,
        "sample_rate": params["sample_rate"],
        "dtype": "int16",
        "task": spec.task,
        "vocab": vocab,
        "split": spec.split_name,
        "tracks": len(rows),
        "samples": samples,
        "hours": round(samples / params["sample_rate"] / 3600, 4),
        "shards": shards,
        "splits": _count(r["split"] or "none" for r in rows),
        "skipped": _count(s.reason for s in skipped if s.reason not in NOTES),
        "notes": _count(s.reason for s in skipped if s.reason in NOTES),
        "params": params,
    }
    atomic_write_bytes(out / "meta.json", json.dumps(meta, indent=1).encode())
    _remove_partial(out)
    store = Store(out)
    short = meta["skipped"].get("too_short", 0)
    _say(
        progress,
        f"{out}: {len(rows)} tracks, {meta['hours']:.2f} h in {shards} shard(s); skipped {_describe(meta['skipped']) or 'none'}"
        + (f" (too_short: under --min-length {params['min_length']} samples)" if short else ""),
    )
    return store


def _remove_partial(out: Path) -> None:
    """Remove clmr's own files under .partial/ (and the folder once empty)."""
    for name in owned_files(out) or []:
        if name.startswith(".partial/"):
            remove_owned(out / name)
    if (out / ".partial").is_dir() and not any((out / ".partial").iterdir()):
        (out / ".partial").rmdir()


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr)
