"""What an evaluation reads: a labelled store with its splits and a checkpoint, checked against
each other (sample rate, labels), and the identities a report records for both."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clmr.devices import DeviceError, resolve_device
from clmr.errors import ClmrError
from clmr.evaluate.features import file_fingerprint, model_fingerprint, store_fingerprint
from clmr.evaluate.selection import FRACTION_OF
from clmr.models import CLMR, HEAD_KINDS, load_model, save_model
from clmr.models.registry import model_file


class EvaluationError(ClmrError):
    """An evaluation that cannot run as asked; the message names the store or checkpoint."""


@dataclass
class Splits:
    """Store indices of the train / valid / test tracks, and whether valid was carved out of train."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    valid_from_train: bool = False


def open_store(store):
    """A `clmr.data.Store` from a path (or the store itself), checked to hold labels."""
    from clmr.data import Store

    store = store if hasattr(store, "split_indices") else Store(store)
    if store.task not in ("multilabel", "multiclass") or not store.vocab:
        raise EvaluationError(f"{store_path(store)}: the store has no labels (task is {store.task!r})")
    return store


def store_path(store) -> str:
    """The store's folder, for messages and reports."""
    return str(getattr(store, "path", getattr(store, "root", "store")))


def load_checkpoint(checkpoint: str | Path | CLMR) -> tuple[CLMR, dict[str, Any]]:
    """The model (eval mode) and its identity: path, sha256 of the file (or of the weights), encoder
    architecture, sample rate, and the store it was pre-trained on when its metadata names one."""
    if isinstance(checkpoint, CLMR):
        model, path, digest = checkpoint, "<in-memory model>", model_fingerprint(checkpoint)
    else:
        checkpoint = model_file(checkpoint, load_model, save_model)  # a registry name -> its cached file
        model = load_model(checkpoint)
        path = str(checkpoint)
        resolved = Path(checkpoint) / "model.safetensors" if Path(checkpoint).is_dir() else Path(checkpoint)
        digest = file_fingerprint(resolved)
    meta = dict(model.meta)
    pretrained_on = next((meta[k] for k in ("store", "train_store", "data", "dataset") if meta.get(k)), None)
    return model.eval(), {
        "path": path,
        "sha256": digest,
        "encoder": model.encoder.architecture(),
        "sample_rate": model.sample_rate,
        "crop_length": model.crop_length,
        "pretrained_on": str(pretrained_on) if pretrained_on is not None else None,
        "meta": meta,
    }


def check_compatible(model: CLMR, store, checkpoint_name: str) -> None:
    """Sample rates of model and store must match (crops would mean different durations otherwise)."""
    if int(store.sample_rate) != int(model.sample_rate):
        raise EvaluationError(
            f"{store_path(store)}: store sample rate {store.sample_rate} Hz does not match the model's "
            f"{model.sample_rate} Hz ({checkpoint_name}); preprocess the data at {model.sample_rate} Hz"
        )


def check_track_lengths(store, splits: Splits, crop_length: int, checkpoint_name: str) -> None:
    """Every evaluated track must hold at least one whole crop: a shorter one would be scored on a
    zero-padded crop, and a store of only such tracks would give meaningless numbers without a word."""
    idx = np.concatenate([splits.train, splits.valid, splits.test])
    short = idx[np.asarray(store.lengths)[idx] < crop_length]
    if len(short):
        first = int(short[0])
        seconds = crop_length / store.sample_rate
        raise EvaluationError(
            f"{store_path(store)}: {len(short)} of the {len(idx)} train/valid/test tracks are shorter than "
            f"the model's crop of {crop_length} samples ({seconds:.2f} s; {checkpoint_name}), e.g. "
            f"'{store.track_id(first)}' with {store.length(first)} samples; preprocess with "
            f"--min-length {crop_length} to skip them, or use a model with a shorter crop"
        )


def check_positive(**values: float | int | None) -> None:
    """Counts and sizes that must be at least 1 (None: not given); the message names the option."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise EvaluationError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def check_fractions(fractions) -> None:
    """Label fractions must lie in (0, 1]."""
    for f in fractions:
        if not 0.0 < float(f) <= 1.0:
            raise EvaluationError(f"--label-fraction must be in (0, 1] (1 = every labelled track), got {f}")


def check_seeds(seeds) -> None:
    """Seeds must be whole numbers >= 0 (numpy's generators refuse negative seeds, which would otherwise
    fail with a traceback only once the features are extracted)."""
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise EvaluationError(f"--seed must be a whole number >= 0, got {seed!r}")


def split_plan(store, seed: int = 0) -> Splits:
    """The store's train/valid/test tracks. Without a valid split, a seeded 10% of train (at least one
    track) is held out for early stopping; without a train or test split there is nothing to do."""
    train, valid, test = (
        np.asarray(store.split_indices(s), dtype=np.int64) for s in ("train", "valid", "test")
    )
    for name, idx in (("train", train), ("test", test)):
        if len(idx) == 0:
            raise EvaluationError(f"{store_path(store)}: no tracks in the {name} split")
    if len(valid):
        return Splits(train, valid, test)
    if len(train) < 2:
        raise EvaluationError(
            f"{store_path(store)}: no valid split and too few train tracks to hold some out"
        )
    perm = np.random.default_rng(seed).permutation(len(train))
    n_valid = max(1, round(0.1 * len(train)))
    return Splits(np.sort(train[perm[n_valid:]]), np.sort(train[perm[:n_valid]]), test, valid_from_train=True)


def store_identity(store, splits: Splits) -> dict[str, Any]:
    """What a report says about the store it evaluated on."""
    return {
        "path": store_path(store),
        "fingerprint": store_fingerprint(store),
        "dataset": store.meta.get("dataset") or store.meta.get("name"),
        "sample_rate": int(store.sample_rate),
        "task": store.task,
        "n_labels": len(store.vocab),
        "labels": list(store.vocab),
        "splits": {"train": len(splits.train), "valid": len(splits.valid), "test": len(splits.test)},
        "valid_from_train": splits.valid_from_train,
    }


def check_choices(head: str, baseline: str | None) -> None:
    """The head kind and the baseline must be ones this package has."""
    if head not in HEAD_KINDS:
        raise EvaluationError(f"unknown head {head!r}; choose one of {', '.join(HEAD_KINDS)}")
    if baseline not in (None, "random"):
        raise EvaluationError(f"unknown baseline {baseline!r}; the only baseline is 'random'")


def check_device(device: str | torch.device) -> torch.device:
    """The device to run on, resolved once by `clmr.devices.resolve_device` (`auto`: the best this
    machine has; a name it does not have is a clear error naming the option)."""
    try:
        return resolve_device(device)
    except DeviceError as err:
        raise EvaluationError(f"--{err}") from err


def check_fraction_of(fraction_of: str) -> None:
    """What label fractions are of must be one `clmr.evaluate.selection.FRACTION_OF` names."""
    if fraction_of not in FRACTION_OF:
        raise EvaluationError(f"unknown --fraction-of {fraction_of!r}; choose {' or '.join(FRACTION_OF)}")


def check_out_dir(out_dir: str | Path) -> Path:
    """`out_dir` must be a folder or not exist yet (it is created when the work starts)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EvaluationError(f"--out {out}: is a file; give a folder for the report")
    return out


@dataclass
class Inputs:
    """A checked store, checkpoint and split plan, and the output folder."""

    store: Any
    model: CLMR
    checkpoint: dict[str, Any]
    splits: Splits
    out: Path

    @property
    def task(self) -> str:
        return self.store.task

    @property
    def names(self) -> list[str]:
        return list(self.store.vocab)


def prepare(checkpoint: str | Path | CLMR, store, out_dir: str | Path) -> Inputs:
    """Open and cross-check store and checkpoint (labels, sample rate, track lengths) before any work;
    the output folder is checked, not created."""
    out = check_out_dir(out_dir)
    store = open_store(store)
    model, info = load_checkpoint(checkpoint)
    check_compatible(model, store, info["path"])
    splits = split_plan(store)
    check_track_lengths(store, splits, model.crop_length, info["path"])
    return Inputs(store, model, info, splits, out)
