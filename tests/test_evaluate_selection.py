"""Label fractions: the right number of tracks, stratified for classes, every tag covered while the
budget allows, deterministic for a seed."""

import numpy as np
import pytest

from clmr.evaluate import select_fraction
from clmr.evaluate.selection import subset_size


def test_stratified_counts_and_determinism():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    np.random.default_rng(0).shuffle(labels)
    pick = select_fraction(labels, 0.1, seed=3)
    assert len(pick) == 10
    assert np.bincount(labels[pick], minlength=3).tolist() == [5, 3, 2]
    assert np.array_equal(pick, select_fraction(labels, 0.1, seed=3))
    assert not np.array_equal(pick, select_fraction(labels, 0.1, seed=4))
    assert len(np.unique(pick)) == len(pick)


def test_stratified_rounding_and_small_classes():
    labels = np.repeat([0, 1, 2, 3], [97, 1, 1, 1])  # 1% of 100 is 1 track
    assert len(select_fraction(labels, 0.01, seed=0)) == 1
    pick = select_fraction(labels, 0.05, seed=0)  # 5 tracks: every class keeps one
    assert len(pick) == 5 and sorted(set(labels[pick])) == [0, 1, 2, 3]
    assert np.array_equal(select_fraction(labels, 1.0, seed=0), np.arange(100))
    with pytest.raises(ValueError):
        subset_size(10, 0.0)


def test_tag_subset_covers_every_tag():
    rng = np.random.default_rng(5)
    y = (rng.random((200, 8)) < 0.3).astype(np.float32)
    y[:, 7] = 0
    y[17, 7] = 1  # a tag with a single carrier
    pick = select_fraction(y, 0.05, seed=1)
    assert len(pick) == 10
    assert (y[pick].sum(0) > 0).all() and 17 in pick
    assert np.array_equal(pick, select_fraction(y, 0.05, seed=1))
