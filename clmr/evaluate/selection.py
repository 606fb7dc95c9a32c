"""Label fractions: the subset of labelled training tracks a head may learn from.

Single-label sets: a stratified subset. Each class gets `fraction * n_class` tracks, rounded by
largest remainder so that the total is `round(fraction * N)` (at least 1), and every class present
keeps at least one track while the budget allows. Tag sets (multi-label): first, rarest tag first,
one random track carrying each tag not yet covered (while the budget allows), then uniformly random
tracks up to `round(fraction * N)`. Both are deterministic for a given seed. N is the training split's
size, or the whole labelled set's (train + valid + test), as the paper counts "1% of MTAT" (259 tracks
of the 25,860 clips of Pons et al.'s split, drawn from its 18,706 training clips).
"""

from __future__ import annotations

import numpy as np

FRACTION_OF = ("dataset", "train")
"""What a label fraction may be of: every labelled track (the paper's count) or the training tracks."""


def fraction_pool(fraction_of: str, n_train: int, n_labelled: int) -> int:
    """How many tracks a label fraction is of: `n_labelled` (train + valid + test) for "dataset",
    `n_train` for "train"; the subset is drawn from the training tracks either way."""
    if fraction_of not in FRACTION_OF:
        raise ValueError(f"unknown --fraction-of {fraction_of!r}; choose {' or '.join(FRACTION_OF)}")
    return n_labelled if fraction_of == "dataset" else n_train


def subset_size(n: int, fraction: float) -> int:
    """How many of `n` tracks a label fraction keeps: round(fraction * n), at least 1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    return min(n, max(1, int(round(fraction * n))))


def select_fraction(targets: np.ndarray, fraction: float, seed: int, pool: int | None = None) -> np.ndarray:
    """Positions (sorted, into `targets`) of the training subset for `fraction`.

    `targets` is int (N,) class indices for single-label sets or a (N, C) multi-hot matrix for tags.
    `pool` is the number of tracks the fraction is of (default N, the training tracks; the paper's
    "1% of MTAT" is 1% of all its labelled tracks, drawn from the training split), capped at N.
    """
    targets = np.asarray(targets)
    n = len(targets)
    if fraction >= 1.0:
        return np.arange(n)
    size = min(n, subset_size(max(n, pool or n), fraction))
    rng = np.random.default_rng(seed)
    chosen = _stratified(targets, size, rng) if targets.ndim == 1 else _cover_tags(targets, size, rng)
    return np.sort(chosen)


def _stratified(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (size / len(labels))
    take = np.floor(quota).astype(np.int64)
    if size >= len(classes):
        take = np.maximum(take, 1)  # every class keeps a track while the budget allows
    # Settle the total by largest remainder (add) or smallest quota above one (remove).
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    i = 0
    while take.sum() < size:
        c = order[i % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > size:
        c = int(np.argmax(np.where(take > 1, take - quota, -np.inf)))
        take[c] -= 1
    picks = [rng.permutation(np.flatnonzero(labels == cls))[:k] for cls, k in zip(classes, take, strict=True)]
    return np.concatenate(picks)


def _cover_tags(multi_hot: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    positive = multi_hot > 0
    chosen = np.zeros(len(multi_hot), bool)
    for tag in np.argsort(positive.sum(axis=0), kind="stable"):  # rarest first
        if chosen.sum() >= size:
            break
        carriers = np.flatnonzero(positive[:, tag])
        if len(carriers) and not chosen[carriers].any():
            chosen[rng.choice(carriers)] = True
    rest = rng.permutation(np.flatnonzero(~chosen))[: size - int(chosen.sum())]
    chosen[rest] = True
    return np.flatnonzero(chosen)
