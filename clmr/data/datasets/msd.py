"""Million Song Dataset with the top-50 last.fm tags (the split of Won et al. 2020 / the CLMR reference).

ROOT is the user's audio folder (any layout; a file is matched to a track by its name up to the first
'.', which must be the MSD track id, e.g. TRAAAAK128F9318786.mp3, or its 7digital id when
msd_id_to_7d.cP is present, e.g. 3/0/3017849.clip.mp3). The split files are found in
ROOT/split/msd/ or ROOT/: 50tagList.txt, filtered_list_train.cP (train = its first 201,680 ids,
valid = the rest), filtered_list_test.cP, msd_id_to_tag_vector.cP and optionally msd_id_to_7d.cP.
The .cP files are Python 2 pickles; they are read with an unpickler that only builds lists, dicts,
strings and numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from clmr.data.datasets.base import DatasetError, DatasetSpec, Entry, Skip, require_dir, scan_tree
from clmr.texts import read_lines

TRAIN_SIZE = 201680  # filtered_list_train.cP[:201680] is train, the rest is valid (Won et al.)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        module = {"copy_reg": "copyreg", "__builtin__": "builtins"}.get(module, module)
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy 2 renamed numpy.core
            module = module.replace("numpy.core.", "numpy._core.")
        return super().find_class(module, name)


def load_pickle(path: Path):
    """A Python 2/3 pickle of plain data (lists, dicts, strings, numpy arrays), or DatasetError."""
    if not path.is_file():
        raise DatasetError(f"{path}: MSD split file not found")
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read as a plain-data pickle ({err})") from err


def scan_msd(root, split: str | None = None, labels=None) -> DatasetSpec:
    """Entries for the MSD ids of the split files whose audio is under ROOT; the rest are missing."""
    root = require_dir(root)
    if split not in (None, "won"):
        raise DatasetError(f"MSD split {split!r}: only 'won' (the top-50 last.fm split) is supported")
    folder = (
        Path(labels)
        if labels
        else next((root / d for d in ("split/msd", ".") if (root / d / "50tagList.txt").is_file()), root)
    )
    tag_file = folder / "50tagList.txt"
    if not tag_file.is_file():
        raise DatasetError(f"{tag_file}: MSD tag list not found (put the split files in ROOT/split/msd/)")
    tags = read_lines(tag_file, DatasetError, "MSD tag list")
    train = [_str(x) for x in load_pickle(folder / "filtered_list_train.cP")]
    test = [_str(x) for x in load_pickle(folder / "filtered_list_test.cP")]
    vectors = {
        _str(k): np.asarray(v).ravel() for k, v in load_pickle(folder / "msd_id_to_tag_vector.cP").items()
    }
    to_7d = {}
    if (folder / "msd_id_to_7d.cP").is_file():
        to_7d = {
            _str(k): Path(_str(v)).name.split(".")[0]
            for k, v in load_pickle(folder / "msd_id_to_7d.cP").items()
        }
    files: dict[str, str] = {}
    audio, _, problems = scan_tree(root)
    entries, skipped = [], list(problems)
    for path in audio:  # sorted: the first file named after an id is used
        name = Path(path).name.split(".")[0]
        if name in files:
            skipped.append(Skip(path, "duplicate", f"{files[name]} is also named after {name}"))
        else:
            files[name] = path
    splits = [(i, "train") for i in train[:TRAIN_SIZE]] + [(i, "valid") for i in train[TRAIN_SIZE:]]
    for msd_id, which in splits + [(i, "test") for i in test]:
        path = files.get(msd_id) or files.get(to_7d.get(msd_id, ""))
        vector = vectors.get(msd_id)
        if path is None:
            skipped.append(
                Skip(msd_id, "missing", f"in the {which} split but no audio file named after it under {root}")
            )
        elif vector is None or len(vector) != len(tags):
            skipped.append(Skip(path, "unlabelled", f"{msd_id} has no {len(tags)}-tag vector"))
        else:
            entries.append(
                Entry(msd_id, path, which, tuple(t for t, v in zip(tags, vector, strict=True) if v))
            )
    used = {e.path for e in entries} | {s.path for s in skipped}
    skipped += [
        Skip(path, "not_in_split", "its name is no MSD track id (or 7digital id) of the won split files")
        for path in files.values()
        if path not in used
    ]
    return DatasetSpec("msd", root, "multilabel", tags, entries, skipped, split_name="won")


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
