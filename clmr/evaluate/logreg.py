"""A protocol-independent check of a representation: scikit-learn logistic regression on standardised
song-level features (mean crop feature per track), its regularisation chosen on the valid split. Unlike
a head trained by SGD on raw features, its score does not depend on the features' scale or on an
optimiser's schedule, so it tells the representation apart from the probe's optimisation."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from clmr.evaluate.metrics import metrics_for
from clmr.evaluate.report import HEADLINE

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""Inverse L2 strengths tried; the one with the best valid score is kept (ties: the stronger penalty)."""

DISAGREE_POINTS = 5.0
"""Probe and logistic regression disagreeing by more than this many points is reported."""


def _fit(x: np.ndarray, y: np.ndarray, task: str, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from threadpoolctl import threadpool_limits

    model = LogisticRegression(C=c, max_iter=2000)
    if task == "multilabel":  # one classifier per tag; a tag constant in train predicts that constant
        model = OneVsRestClassifier(model)
    # one BLAS thread: L-BFGS on these small problems is many tiny products, which threads only slow
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        return model.fit(x, y)


def _scores(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, C) probabilities; for classes, columns of classes absent from the training set are 0."""
    prob = model.predict_proba(x)
    if not hasattr(model, "estimators_"):  # multiclass: place the seen classes' columns
        full = np.zeros((len(x), n_classes))
        full[:, model.classes_] = prob
        return full
    return prob


def logistic_check(
    train: np.ndarray,
    y_train: np.ndarray,
    valid: np.ndarray,
    y_valid: np.ndarray,
    test: np.ndarray,
    y_test: np.ndarray,
    task: str,
    names: Sequence[str],
) -> dict[str, Any]:
    """Fit on standardised song features of the training tracks for each C in C_GRID, keep the C with
    the best valid score (macro ROC-AUC for tags, accuracy for classes), and score the test tracks."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    x_train, x_valid, x_test = (scaler.transform(a) for a in (train, valid, test))
    key = HEADLINE[task][0]
    best: tuple[float, float, Any] | None = None
    by_c = {}
    if task == "multiclass" and len(np.unique(y_train)) < 2:  # nothing to separate: predict the class
        model, c = None, None
    else:
        for c in C_GRID:
            model = _fit(x_train, y_train, task, c)
            score = metrics_for(task, y_valid, _scores(model, x_valid, len(names)), names)[key]
            score = -np.inf if score is None else score
            by_c[str(c)] = None if score == -np.inf else float(score)
            if best is None or score > best[0]:
                best = (score, c, model)
        _, c, model = best
    if model is None:
        prob = np.zeros((len(x_test), len(names)))
        prob[:, int(y_train[0])] = 1.0
    else:
        prob = _scores(model, x_test, len(names))
    metrics = metrics_for(task, y_test, prob, names)
    return {"C": c, "valid_by_C": by_c, **{k: metrics[k] for k in HEADLINE[task]}}


def disagreements(report: dict[str, Any], rows: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Sentences for each model (name, its report part) whose probe and logistic-regression scores
    differ by more than DISAGREE_POINTS, and for a gain from pre-training the two disagree on."""
    key = HEADLINE[report["task"]][0]
    notes, gains = [], []
    for name, part in rows:
        probe, lr = part.get(key), (part.get("logistic_regression") or {}).get(key)
        if probe is None or lr is None:
            return notes
        gains.append((probe, lr))
        if abs(probe - lr) * 100 > DISAGREE_POINTS:
            notes.append(
                f"{name}: the probe ({100 * probe:.1f}) and the logistic-regression check ({100 * lr:.1f}) "
                f"disagree by {100 * abs(probe - lr):.1f} points of {key}; the probe's score reflects its "
                "optimisation as well as the representation"
            )
    if len(gains) == 2:
        probe_gain, lr_gain = gains[0][0] - gains[1][0], gains[0][1] - gains[1][1]
        if abs(probe_gain - lr_gain) * 100 > DISAGREE_POINTS:
            notes.append(
                f"gain from pre-training: {100 * probe_gain:.1f} points under the probe but "
                f"{100 * lr_gain:.1f} under logistic regression on standardised features"
            )
    return notes
