"""Metrics equal scikit-learn on fixed arrays; tags/classes missing from the test split are reported
and left out of the macro averages (never NaN, never an exception)."""

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix, f1_score, roc_auc_score

from clmr.evaluate import classification_metrics, tagging_metrics
from clmr.evaluate.features import segment_mean
from clmr.evaluate.probe import track_probabilities


@pytest.fixture
def tagged():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 6)) < 0.4).astype(np.float32)
    y[0], y[1] = 1, 0  # every tag has positives and negatives
    scores = np.clip(y * 0.3 + rng.random((40, 6)), 0, 1)
    return y, scores, [f"t{i}" for i in range(6)]


def test_tagging_metrics_equal_sklearn(tagged):
    y, s, tags = tagged
    m = tagging_metrics(y, s, tags)
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y, s, average="macro"))
    assert m["pr_auc_macro"] == pytest.approx(average_precision_score(y, s, average="macro"))
    for c, tag in enumerate(tags):
        assert m["per_tag"][tag]["roc_auc"] == pytest.approx(roc_auc_score(y[:, c], s[:, c]))
        assert m["per_tag"][tag]["pr_auc"] == pytest.approx(average_precision_score(y[:, c], s[:, c]))
    assert m["excluded_tags"] == {} and m["n_tags_scored"] == 6


def test_tags_without_positives_are_reported_and_excluded(tagged):
    y, s, tags = tagged
    y = y.copy()
    y[:, 2] = 0  # no positive in the test split
    y[:, 4] = 1  # no negative either: ROC-AUC undefined
    m = tagging_metrics(y, s, tags)
    keep = [0, 1, 3, 5]
    assert set(m["excluded_tags"]) == {"t2", "t4"} and "positive" in m["excluded_tags"]["t2"]
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y[:, keep], s[:, keep], average="macro"))
    assert m["pr_auc_macro"] == pytest.approx(
        average_precision_score(y[:, keep], s[:, keep], average="macro")
    )
    assert not math.isnan(m["roc_auc_macro"]) and "roc_auc" not in m["per_tag"]["t2"]
    none = tagging_metrics(np.zeros_like(y), s, tags)
    assert none["roc_auc_macro"] is None and len(none["excluded_tags"]) == 6


def test_classification_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 50)
    y[:4] = np.arange(4)
    probs = rng.random((50, 4))
    probs[np.arange(50), y] += 0.4 * rng.random(50)
    m = classification_metrics(y, probs, ["a", "b", "c", "d"])
    pred = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    # a class absent from the test split is reported and not averaged as a zero F1
    absent = classification_metrics(np.where(y == 3, 0, y), probs, ["a", "b", "c", "d"])
    assert absent["excluded_classes"] == {"d": "no example in the test split"}
    assert np.asarray(absent["confusion_matrix"]).shape == (4, 4)


def test_song_level_mean_is_per_track():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(7, 3)).astype(np.float32)
    offsets = np.array([0, 5, 5 + 2])
    import torch

    probs = track_probabilities(torch.as_tensor(logits), offsets, "multilabel")
    sig = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(probs, [sig[:5].mean(0), sig[5:].mean(0)], rtol=1e-5)
    soft = track_probabilities(torch.as_tensor(logits), offsets, "multiclass")
    e = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(soft, [e[:5].mean(0), e[5:].mean(0)], rtol=1e-5)
    np.testing.assert_allclose(segment_mean(logits, offsets)[1], logits[5:].mean(0), rtol=1e-5)
