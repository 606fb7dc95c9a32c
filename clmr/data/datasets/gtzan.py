"""GTZAN: 10 genres x 100 clips, genres/<genre>/<genre>.000NN.{au,wav} (also genres_original/ or the
genre folders directly under the root).

Splits: "filtered" (Kereliuk & Sturm's fault-filtered split: train_filtered.txt, valid_filtered.txt,
test_filtered.txt, one clip per line such as `blues/blues.00029.au`; found in ROOT/ or
ROOT/split/gtzan/; clips in no list are skipped as not_in_split), or "random" (every clip, 80/10/10 by
path hash).
"""

from __future__ import annotations

from pathlib import Path

from clmr.data.datasets.base import DatasetError, DatasetSpec, Entry, Skip, hash_split, require_dir
from clmr.texts import read_text

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
SPLITS = ("filtered", "random")


def scan_gtzan(root, split: str = "filtered") -> DatasetSpec:
    """Entries of the chosen split, label = genre (multiclass)."""
    root = require_dir(root)
    if split not in SPLITS:
        raise DatasetError(f"GTZAN split {split!r}: choose one of {', '.join(SPLITS)}")
    base = next((root / d for d in ("genres", "genres_original") if (root / d).is_dir()), root)
    clips: dict[str, str] = {}
    duplicates = []
    for genre in GENRES:
        for p in sorted((base / genre).glob(f"{genre}.*")):
            if p.suffix.lower() not in (".au", ".wav"):
                continue
            clip, rel = p.name.rsplit(".", 1)[0], p.relative_to(root).as_posix()
            if clip in clips:  # e.g. blues.00000.au and blues.00000.wav: the first (sorted) is used
                duplicates.append(Skip(rel, "duplicate", f"{clips[clip]} is the same clip"))
            else:
                clips[clip] = rel
    if not clips:
        hint = (
            f"; genres.tar.gz is here: `clmr download gtzan --root {root}` extracts it"
            if (root / "genres.tar.gz").is_file()
            else ""
        )
        raise DatasetError(
            f"{root}: no GTZAN clips found (expected genres/<genre>/<genre>.000NN.au or .wav){hint}"
        )
    if split == "random":
        assigned = {clip: hash_split(path) for clip, path in clips.items()}
    else:
        assigned = {}
        for which in ("train", "valid", "test"):
            file = next(
                (
                    root / d / f"{which}_filtered.txt"
                    for d in (".", "split/gtzan")
                    if (root / d / f"{which}_filtered.txt").is_file()
                ),
                root / f"{which}_filtered.txt",
            )
            if not file.is_file():
                raise DatasetError(f"{file}: GTZAN filtered split file not found (or use split='random')")
            for line in read_text(file, DatasetError, "GTZAN split file").split():
                assigned[Path(line).name.rsplit(".", 1)[0]] = which
    entries, skipped = [], []
    for clip, which in sorted(assigned.items()):
        if clip not in clips:
            skipped.append(Skip(clip, "missing", f"in the {split} {which} split but not under {base}"))
        else:
            entries.append(Entry(clip, clips[clip], which, (clip.split(".")[0],)))
    skipped += [
        Skip(path, "not_in_split", f"not in the {split} split")
        for c, path in clips.items()
        if c not in assigned
    ]
    return DatasetSpec(
        "gtzan", root, "multiclass", list(GENRES), entries, skipped + duplicates, split_name=split
    )
