"""Training and testing heads on cached features over label fractions and seeds, under the reference's
protocol or clmr's, plus the logistic-regression check; and scoring a model's own trained head."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clmr.evaluate.features import (
    SplitFeatures,
    cache_key,
    extract_resumable,
    readable_features,
    save_features,
)
from clmr.evaluate.inputs import EvaluationError, Splits
from clmr.evaluate.logreg import logistic_check
from clmr.evaluate.metrics import metrics_for
from clmr.evaluate.probe import Recipe, TrainedHead, knn_scores, predict, train_fixed, train_head
from clmr.evaluate.report import HEADLINE, details
from clmr.evaluate.selection import select_fraction
from clmr.models import CLMR
from clmr.progress import progress_bar

PROTOCOLS = ("reference", "clmr")
"""`reference`: one fixed random crop per train/valid track, the last epoch's head (the reference's
linear_evaluation.py); `clmr`: fresh crops each epoch, validation on every crop, the best epoch's head."""

FixedCrops = Callable[[int], dict[str, SplitFeatures]]
"""seed -> features of one random crop per train and per valid track ("train", "valid")."""


def cached_features(
    model: CLMR,
    store,
    wanted: dict[str, np.ndarray],
    path: Path,
    *,
    batch_size: int,
    device: torch.device,
    progress: bool,
    starts: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, SplitFeatures], bool]:
    """Features of the tracks `wanted` (split name -> store indices), read from `path` when an earlier
    run wrote them; else extracted (every grid crop, or with `starts` one crop per track) and saved.
    While extracting, parts are saved to `PATH.parts/` so that an interrupted run resumes; they are
    removed once the cache file is written. Returns (features by split, cache hit)."""
    feats = readable_features(path)
    if all(name in feats and np.array_equal(feats[name].tracks, idx) for name, idx in wanted.items()):
        return feats, True
    parts = path.with_suffix(".parts")
    with progress_bar(
        "extracting features", sum(map(len, wanted.values())), enabled=progress, unit="tracks"
    ) as advance:
        feats = {
            name: extract_resumable(
                model,
                store,
                idx,
                parts / name,
                batch_size=batch_size,
                device=device,
                progress=advance,
                starts=None if starts is None else starts[name],
            )
            for name, idx in wanted.items()
        }
    save_features(path, feats)
    shutil.rmtree(parts, ignore_errors=True)
    return feats, False


def fixed_crop_starts(store, splits: Splits, crop_length: int, seed: int) -> dict[str, np.ndarray]:
    """One uniform crop start per train and per valid track, drawn from `seed` (the reference's
    `RandomResizedCrop`: any start in [0, length - crop], drawn once, before the features are encoded)."""
    rng = np.random.default_rng([seed, 59049])
    lengths = np.asarray(store.lengths)
    return {
        name: rng.integers(0, np.maximum(lengths[idx] - crop_length, 0) + 1).astype(np.int64)
        for name, idx in (("train", splits.train), ("valid", splits.valid))
    }


def fixed_crops_of(
    model: CLMR, encoder_id: str, store, splits: Splits, cache_dir: Path, store_id: str, **extract: Any
) -> FixedCrops:
    """A function giving, for a seed, the cached features of that seed's fixed train/valid crops."""

    def of_seed(seed: int) -> dict[str, SplitFeatures]:
        key = cache_key(
            f"{encoder_id}|fixed-crops|seed={seed}", store_id, model.crop_length, extract["device"]
        )
        starts = fixed_crop_starts(store, splits, model.crop_length, seed)
        wanted = {"train": splits.train, "valid": splits.valid}
        path = cache_dir / f"crops-{key}.npz"
        return cached_features(model, store, wanted, path, starts=starts, **extract)[0]

    return of_seed


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)


def fit_probe(
    protocol: str,
    head: str,
    feats: dict[str, SplitFeatures],
    targets: dict[str, np.ndarray],
    pick: np.ndarray,
    fixed: FixedCrops | None,
    task: str,
    n_classes: int,
    *,
    seed: int,
    recipe: Recipe,
    device: torch.device,
) -> TrainedHead:
    """One head trained on the training tracks `pick` under `protocol`."""
    common = dict(seed=seed, recipe=recipe, device=device)
    if protocol == "reference":
        crops = fixed(seed)
        x_train, x_valid = crops["train"].features[pick], crops["valid"].features
        y_train, y_valid = targets["train"][pick], targets["valid"]
        return train_fixed(head, x_train, y_train, x_valid, y_valid, task, n_classes, **common)
    train = feats["train"].subset(pick)
    y_train = targets["train"][pick]
    return train_head(head, train, y_train, feats["valid"], targets["valid"], task, n_classes, **common)


def probe_suite(
    feats: dict[str, SplitFeatures],
    targets: dict[str, np.ndarray],
    task: str,
    names: Sequence[str],
    *,
    head: str,
    label_fractions: Sequence[float],
    seeds: Sequence[int],
    knn: int | None,
    recipe: Recipe,
    device: torch.device,
    progress: bool,
    title: str,
    protocol: str = "reference",
    fixed: FixedCrops | None = None,
    pool: int | None = None,
) -> tuple[dict[str, Any], TrainedHead]:
    """Train and test one head per (label fraction, seed) and summarise: the headline is the mean
    over seeds at the largest fraction; per-tag scores / confusion matrix are its first seed's; the
    logistic-regression check uses that run's training tracks. `pool`: what label fractions are of.
    Returns (summary, the head of that first run)."""
    fractions = sorted(set(float(f) for f in label_fractions), reverse=True)
    runs, by_fraction, first = [], {}, None
    keys = HEADLINE[task]
    label = f"training {head} heads ({title})"
    with progress_bar(label, len(fractions) * len(seeds), enabled=progress, unit="heads") as advance:
        for frac in fractions:
            frac_runs = []
            for seed in seeds:
                pick = select_fraction(targets["train"], frac, seed, pool=pool)
                trained = fit_probe(
                    protocol,
                    head,
                    feats,
                    targets,
                    pick,
                    fixed,
                    task,
                    len(names),
                    seed=seed,
                    recipe=recipe,
                    device=device,
                )
                metrics = metrics_for(
                    task, targets["test"], predict(trained.head, feats["test"], task), names
                )
                run = {
                    "label_fraction": frac,
                    "seed": seed,
                    "n_train_tracks": len(pick),
                    "epochs": trained.epochs,
                    "best_epoch": trained.best_epoch,
                    "best_valid_loss": trained.best_valid_loss,
                    **{k: metrics[k] for k in keys},
                }
                if first is None:
                    first = (metrics, trained, pick)
                if knn:
                    train = feats["train"].subset(pick)
                    scores = knn_scores(train, targets["train"][pick], feats["test"], task, len(names), knn)
                    knn_metrics = metrics_for(task, targets["test"], scores, names)
                    run["knn"] = {k: knn_metrics[k] for k in keys}
                runs.append(run)
                frac_runs.append(run)
                advance(1)
            summary = {"n_train_tracks": frac_runs[0]["n_train_tracks"]}
            for k in keys:
                summary[k], summary[f"{k}_std"] = _stats([r[k] for r in frac_runs])
            by_fraction[str(frac)] = summary
    head_metrics, trained, pick = first
    result: dict[str, Any] = {
        **by_fraction[str(fractions[0])],
        "by_fraction": by_fraction,
        "runs": runs,
        **details(task, head_metrics),
        "logistic_regression": song_logistic_check(feats, targets, pick, task, names),
    }
    if knn:
        top = [r["knn"] for r in runs if r["label_fraction"] == fractions[0]]
        k_used = min(knn, result["n_train_tracks"])  # fewer training tracks than K: all of them vote
        result["knn"] = {"k": k_used, "k_asked": knn, **{k: _stats([r[k] for r in top])[0] for k in keys}}
    return result, trained


def song_logistic_check(
    feats: dict[str, SplitFeatures], targets: dict[str, np.ndarray], pick: np.ndarray, task: str, names
) -> dict[str, Any]:
    """`logistic_check` on the song-level features (mean crop feature) of the training tracks `pick`."""
    return logistic_check(
        feats["train"].subset(pick).song_means(),
        targets["train"][pick],
        feats["valid"].song_means(),
        targets["valid"],
        feats["test"].song_means(),
        targets["test"],
        task,
        names,
    )


def own_head_suite(
    model: CLMR, feats: dict[str, SplitFeatures], targets: dict[str, np.ndarray], task: str, names, where: str
) -> dict[str, Any]:
    """Score the model's own trained classifier (e.g. a `clmr pretrain --supervised` run's) with the
    song-level test protocol; its outputs are matched to the store's labels by name."""
    if model.head is None or not model.tags:
        raise EvaluationError(f"{where}: --head own needs a model with a trained head and its tag names")
    if model.task not in (None, task) or sorted(model.tags) != sorted(names):
        raise EvaluationError(
            f"{where}: the model's head predicts {len(model.tags)} {model.task or ''} labels "
            f"({', '.join(model.tags[:5])}...), not the store's {len(names)} {task} labels"
        )
    order = [model.tags.index(n) for n in names]
    scores = predict(model.head, feats["test"], task)  # the model's order, then the store's
    metrics = metrics_for(task, targets["test"], scores[:, order], names)
    keys = HEADLINE[task]
    run = {
        "label_fraction": 1.0,
        "seed": None,
        "n_train_tracks": len(feats["train"].tracks),
        **{k: metrics[k] for k in keys},
    }
    pick = np.arange(len(feats["train"].tracks))
    return {
        **{k: metrics[k] for k in keys},
        "n_train_tracks": run["n_train_tracks"],
        "by_fraction": {"1.0": {"n_train_tracks": run["n_train_tracks"], **{k: metrics[k] for k in keys}}},
        "runs": [run],
        **details(task, metrics),
        "logistic_regression": song_logistic_check(feats, targets, pick, task, names),
    }
