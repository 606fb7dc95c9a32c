"""MagnaTagATune: the merged/extracted mp3.zip.001-003 (folders 0-9, a-f) + annotations_final.csv.

Tags: the 50 most frequent of the 188 annotation columns (or the split's own tag list). Splits:
- "pons" (Pons et al. 2017; the default, as the reference's `MAGNATAGATUNE(split="pons2017")`):
  index_mtt.tsv (id<TAB>path) and {train,val,test}_gt_mtt.tsv (id<TAB>[50 zeros/ones] in top-50
  order): 18,706 / 1,825 / 5,329 clips;
- "won" (Won et al. 2020): split/mtat/{train,valid,test,binary,tags}.npy, whose rows are
  "index<TAB>mp3_path" with `index` a row of binary.npy (Pons' clips that carry a top-50 tag).
Split files are looked up in ROOT/index/mtt/ (pons), ROOT/split/mtat/ (won) or ROOT/.
"""

from __future__ import annotations

import ast
import csv
import io
from collections import Counter
from pathlib import Path

import numpy as np

from clmr.data.datasets.base import DatasetError, DatasetSpec, Entry, Skip, require_dir
from clmr.texts import read_text

SPLITS = ("pons", "won")
DEFAULT_SPLIT = "pons"


def read_annotations(path: Path) -> tuple[list[str], list[dict]]:
    """(188 tag names, rows {clip_id, mp3_path, tags}) from the tab-separated annotations_final.csv."""
    if not path.is_file():
        raise DatasetError(f"{path}: MagnaTagATune annotations file not found")
    with io.StringIO(read_text(path, DatasetError, "annotations file"), newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, [])
        if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
            raise DatasetError(f"{path}: expected a tab-separated header clip_id ... mp3_path")
        names = header[1:-1]
        rows = []
        for line, cells in enumerate(reader, start=2):
            if len(cells) != len(header):
                raise DatasetError(f"{path}, line {line}: {len(cells)} columns, expected {len(header)}")
            tags = [n for n, v in zip(names, cells[1:-1], strict=True) if v.strip() == "1"]
            rows.append({"clip_id": cells[0], "mp3_path": cells[-1], "tags": tags})
    return names, rows


def top_tags(rows: list[dict], k: int = 50) -> list[str]:
    """The k most frequent tags, most frequent first (ties by name)."""
    counts = Counter(t for r in rows for t in r["tags"])
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def scan_mtat(root, split: str = DEFAULT_SPLIT) -> DatasetSpec:
    """Entries of the chosen split with their top-50 tags; other clips are listed as not_in_split."""
    root = require_dir(root)
    if split not in SPLITS:
        raise DatasetError(f"MagnaTagATune split {split!r}: choose one of {', '.join(SPLITS)}")
    names, rows = read_annotations(_find(root, "annotations_final.csv", ["."]))
    audio_root = root / "mp3" if (root / "mp3").is_dir() else root
    clip_of = {r["mp3_path"]: r["clip_id"] for r in rows}
    assigned, vocab = _won(root) if split == "won" else _pons(root, rows)
    entries, skipped = [], []
    for path, (which, tags) in sorted(assigned.items()):
        if not (audio_root / path).is_file():
            skipped.append(Skip(path, "missing", f"in the {split} {which} split but not under {audio_root}"))
            continue
        rel = (audio_root / path).relative_to(root).as_posix()
        entries.append(Entry(clip_of.get(path, Path(path).stem), rel, which, tuple(tags)))
    if not entries and assigned and sorted(root.glob("mp3.zip.0*")):
        raise DatasetError(
            f"{root}: none of the split's clips is extracted, but mp3.zip.001-003 are here; "
            f"`clmr download mtat --root {root}` joins and extracts them (files already present are not fetched again)"
        )
    skipped += [
        Skip(p, "not_in_split", f"not in the {split} split") for p in sorted(clip_of) if p not in assigned
    ]
    return DatasetSpec("mtat", root, "multilabel", vocab, entries, skipped, split_name=split)


def _find(root: Path, name: str, folders: list[str]) -> Path:
    for folder in folders:
        if (root / folder / name).is_file():
            return root / folder / name
    return root / folders[0] / name


def _won(root: Path) -> tuple[dict[str, tuple[str, list[str]]], list[str]]:
    folders = ["split/mtat", "."]
    tags = [str(t) for t in _load_npy(_find(root, "tags.npy", folders))]
    binary = _load_npy(_find(root, "binary.npy", folders))
    if binary.ndim != 2 or binary.shape[1] != len(tags):
        raise DatasetError(f"{root}: binary.npy has shape {binary.shape}, expected (clips, {len(tags)})")
    assigned = {}
    for which in ("train", "valid", "test"):
        file = _find(root, f"{which}.npy", folders)
        for item in _load_npy(file):
            index, _, path = str(item).partition("\t")
            if not path or not index.isdigit() or int(index) >= len(binary):
                raise DatasetError(
                    f"{file}: entry {str(item)!r} is not 'index<TAB>mp3_path' with a valid index"
                )
            assigned[path] = (which, [t for t, v in zip(tags, binary[int(index)], strict=True) if v])
    return assigned, tags


def _pons(root: Path, rows: list[dict]) -> tuple[dict[str, tuple[str, list[str]]], list[str]]:
    folders = ["index/mtt", "."]
    tags = top_tags(rows)
    paths = dict(_tsv(_find(root, "index_mtt.tsv", folders)))
    assigned = {}
    for which, name in (
        ("train", "train_gt_mtt.tsv"),
        ("valid", "val_gt_mtt.tsv"),
        ("test", "test_gt_mtt.tsv"),
    ):
        file = _find(root, name, folders)
        for clip, gt in _tsv(file):
            try:
                vector = ast.literal_eval(gt)
                len(vector)
            except (ValueError, SyntaxError, TypeError) as err:
                raise DatasetError(f"{file}: clip {clip}: {gt[:40]!r} is not a list of 0/1 values") from err
            if clip not in paths or len(vector) != len(tags):
                raise DatasetError(
                    f"{file}: clip {clip} has no path in index_mtt.tsv or not {len(tags)} values"
                )
            assigned[paths[clip]] = (which, [t for t, v in zip(tags, vector, strict=True) if v])
    return assigned, tags


def _tsv(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found")
    pairs = []
    for line in read_text(path, DatasetError, "split file").splitlines():
        if line.strip():
            key, _, value = line.strip().partition("\t")
            pairs.append((key, value))
    return pairs


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise DatasetError(f"{path}: not a plain numpy array ({err})") from err
