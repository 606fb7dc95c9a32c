"""Evaluation metrics: macro ROC-AUC / PR-AUC over tags (and per tag); accuracy, macro F1 and a
confusion matrix for single-label sets. Tags or classes absent from the test split are reported and
left out of the macro averages instead of producing NaN or an exception."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score


def tagging_metrics(y_true: np.ndarray, y_score: np.ndarray, tags: Sequence[str]) -> dict[str, Any]:
    """Macro and per-tag ROC-AUC and PR-AUC (average precision) of song-level scores.

    A tag whose test tracks are all negative (or all positive) has no defined ROC-AUC; it is listed
    under `excluded_tags` with its reason and left out of both macro averages.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 2 or y_true.shape[1] != len(tags):
        raise ValueError(f"shapes {y_true.shape} and {y_score.shape} do not match {len(tags)} tags")
    n = len(y_true)
    positives = y_true.sum(axis=0)
    per_tag: dict[str, dict[str, Any]] = {}
    excluded: dict[str, str] = {}
    for c, tag in enumerate(tags):
        entry: dict[str, Any] = {"positives": int(positives[c])}
        if positives[c] == 0:
            excluded[tag] = "no positive example in the test split"
        elif positives[c] == n:
            excluded[tag] = "no negative example in the test split"
        else:
            entry["roc_auc"] = float(roc_auc_score(y_true[:, c], y_score[:, c]))
            entry["pr_auc"] = float(average_precision_score(y_true[:, c], y_score[:, c]))
        per_tag[tag] = entry
    scored = [t for t in tags if t not in excluded]
    mean = lambda key: float(np.mean([per_tag[t][key] for t in scored])) if scored else None  # noqa: E731
    return {
        "roc_auc_macro": mean("roc_auc"),
        "pr_auc_macro": mean("pr_auc"),
        "n_tags_scored": len(scored),
        "excluded_tags": excluded,
        "per_tag": per_tag,
    }


def classification_metrics(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro F1 (over classes present in the test split) and the confusion matrix.

    `y_true` holds class indices (N,), `y_prob` song-level class probabilities (N, C); the predicted
    class is the arg-max. Rows of the confusion matrix are true classes, columns predictions.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim != 2 or y_prob.shape != (len(y_true), len(classes)):
        raise ValueError(
            f"probabilities of shape {y_prob.shape} for {len(y_true)} tracks, {len(classes)} classes"
        )
    y_pred = y_prob.argmax(axis=1)
    present = np.unique(y_true)
    excluded = {classes[c]: "no example in the test split" for c in range(len(classes)) if c not in present}
    return {
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else None,
        "f1_macro": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
        if len(y_true)
        else None,
        "excluded_classes": excluded,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=np.arange(len(classes))).tolist(),
        "classes": list(classes),
    }


def metrics_for(task: str, y_true: np.ndarray, y_score: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """`tagging_metrics` for "multilabel", `classification_metrics` for "multiclass"."""
    if task == "multilabel":
        return tagging_metrics(y_true, y_score, names)
    if task == "multiclass":
        return classification_metrics(y_true, y_score, names)
    raise ValueError(f"unknown task {task!r}")
