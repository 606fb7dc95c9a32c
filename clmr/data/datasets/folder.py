"""Any folder of audio (recursive), optionally with a labels CSV.

labels CSV: a `path` column (relative to the folder) and one label column: `label` (single label per
file) or `tags`/`labels` (several, separated by ';'), plus an optional `split` column
(train/valid/test). The task is multilabel when the column is `tags`/`labels` or any cell holds ';',
else multiclass; `task=` forces it. Files without a split get `hash_split` (80/10/10 by path hash).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from clmr.audio import UNSUPPORTED_DETAIL
from clmr.data.datasets.base import (
    TASKS,
    DatasetError,
    DatasetSpec,
    Entry,
    Skip,
    hash_split,
    normalise_split,
    require_dir,
    scan_tree,
)
from clmr.texts import read_text

LABEL_COLUMNS = ("label", "tags", "labels", "tag")


def scan_folder(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    split: str | None = None,
    task: str | None = None,
    name: str = "folder",
) -> DatasetSpec:
    """Entries for every audio file under `root`; with `labels`, unlabelled files are skipped.

    split: None (the CSV's split column, else the path hash), "hash" (always the path hash) or
    "none" (no split: every track in split None).
    """
    root = require_dir(root)
    if split not in (None, "hash", "none"):
        raise DatasetError(f"split {split!r}: a folder takes 'hash' or 'none' (or a split column)")
    if task is not None and task not in TASKS:
        raise DatasetError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    files, unsupported, problems = scan_tree(root)
    skipped = [Skip(p, "unsupported", UNSUPPORTED_DETAIL) for p in unsupported] + problems
    if labels is None:
        entries = [Entry(p, p, _split(p, None, split)) for p in files]
        return DatasetSpec(name, root, None, [], entries, skipped, split_name=split or "hash")
    rows, task, has_split = read_labels_csv(Path(labels), task)
    present, undecodable = set(files), set(unsupported) | {p.path for p in problems}
    entries = []
    for path, (tags, row_split) in rows.items():
        if path in undecodable:
            continue  # already listed as unsupported or unreadable
        if path not in present:
            skipped.append(Skip(path, "missing", f"listed in {labels} but not found under {root}"))
        elif task == "multiclass" and not tags:
            skipped.append(Skip(path, "unlabelled", f"empty label in {labels}"))
        else:
            entries.append(Entry(path, path, _split(path, row_split, split), tags))
    skipped += [Skip(p, "unlabelled", f"not listed in {labels}") for p in files if p not in rows]
    # labels of the files that will be decoded only: not those of missing, unsupported or unlabelled
    # files (the store narrows it again to the tracks that decode, see `vocab_from_tracks`)
    vocab = sorted({t for e in entries for t in e.labels})
    split_name = split or ("csv" if has_split else "hash")
    return DatasetSpec(
        name, root, task, vocab, entries, skipped, split_name=split_name, vocab_from_tracks=True
    )


def read_labels_csv(
    path: Path, task: str | None
) -> tuple[dict[str, tuple[tuple[str, ...], str | None]], str, bool]:
    """{relative path: (labels, split or None)}, the task, and whether a split column exists."""
    if not path.is_file():
        raise DatasetError(f"{path}: labels file not found")
    reader = csv.DictReader(io.StringIO(read_text(path, DatasetError, "labels file"), newline=""))
    try:
        header = [h.strip().lower() for h in reader.fieldnames or []]
        repeated = sorted({h for h in header if header.count(h) > 1 and h})
        if repeated:
            raise DatasetError(f"{path}: column {repeated[0]!r} appears more than once in the header")
        reader.fieldnames = header
        column = next((c for c in LABEL_COLUMNS if c in header), None)
        if "path" not in header or column is None:
            raise DatasetError(
                f"{path}: expected a 'path' column and one of {', '.join(LABEL_COLUMNS)}; got {header}"
            )
        raw = [(r["path"].strip(), (r[column] or "").strip(), (r.get("split") or "").strip()) for r in reader]
    except csv.Error as err:  # e.g. a field over csv's size limit, a NUL byte, an unclosed quote
        raise DatasetError(f"{path}, near line {reader.line_num + 1}: not a readable CSV ({err})") from err
    except AttributeError as err:  # a row with more cells than the header (None key)
        raise DatasetError(f"{path}, line {reader.line_num}: a cell is missing or misplaced") from err
    if task is None:
        multi = column in ("tags", "labels") or any(";" in cell for _, cell, _ in raw)
        task = "multilabel" if multi else "multiclass"
    rows: dict[str, tuple[tuple[str, ...], str | None]] = {}
    for line, (rel, cell, split) in enumerate(raw, start=2):
        tags = tuple(dict.fromkeys(t.strip() for t in cell.split(";") if t.strip()))
        if task == "multiclass" and len(tags) > 1:
            raise DatasetError(
                f"{path}, line {line}: {len(tags)} labels for a single-label (multiclass) task"
            )
        rel = Path(rel).as_posix()
        if rel in rows:
            raise DatasetError(f"{path}, line {line}: {rel} is listed twice")
        rows[rel] = (tags, normalise_split(split, f"{path}, line {line}") if split else None)
    return rows, task, "split" in header


def _split(path: str, row_split: str | None, mode: str | None) -> str | None:
    if mode == "none":
        return None
    if mode is None and row_split is not None:
        return row_split
    return hash_split(path)
