"""`evaluate`: frozen-encoder probes of a checkpoint on a labelled store, with cached features,
label fractions, several seeds, an optional k-NN and random-init baseline, and a written report."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clmr.evaluate import plots
from clmr.evaluate.features import (
    SplitFeatures,
    cache_key,
    extract_resumable,
    readable_features,
    save_features,
    store_fingerprint,
)
from clmr.evaluate.inputs import (
    EvaluationError,
    Splits,
    check_choices,
    check_device,
    check_fractions,
    check_positive,
    check_seeds,
    prepare,
    store_identity,
)
from clmr.evaluate.metrics import metrics_for
from clmr.evaluate.probe import Recipe, TrainedHead, knn_scores, predict, train_head
from clmr.evaluate.report import HEADLINE, details, model_meta, write_report
from clmr.evaluate.selection import select_fraction
from clmr.models import CLMR, SampleCNN, save_model
from clmr.progress import progress_bar

PROTOCOL = "all consecutive non-overlapping crops per test track (remainder dropped), sigmoid/softmax per crop, mean per track"


def cached_split_features(
    model: CLMR,
    encoder_id: str,
    store,
    splits: Splits,
    cache_dir: Path,
    *,
    batch_size: int,
    device: str,
    progress: bool,
) -> tuple[dict[str, SplitFeatures], Path, bool]:
    """Features of every crop of the train/valid/test tracks, read from `cache_dir` when an earlier
    run with the same encoder, store, crop length and precision wrote them; else extracted and saved.
    While extracting, parts are saved to `features-KEY.parts/` so that an interrupted run resumes; they
    are removed once the cache file is written. Returns (features by split, cache file, cache hit)."""
    key = cache_key(encoder_id, store_fingerprint(store), model.crop_length, device)
    path = cache_dir / f"features-{key}.npz"
    wanted = {"train": splits.train, "valid": splits.valid, "test": splits.test}
    feats = readable_features(path)
    if all(name in feats and np.array_equal(feats[name].tracks, idx) for name, idx in wanted.items()):
        return feats, path, True
    n_tracks = sum(len(v) for v in wanted.values())
    parts = cache_dir / f"features-{key}.parts"  # an interrupted extraction resumes from these
    with progress_bar("extracting features", n_tracks, enabled=progress, unit="tracks") as advance:
        feats = {
            name: extract_resumable(
                model, store, idx, parts / name, batch_size=batch_size, device=device, progress=advance
            )
            for name, idx in wanted.items()
        }
    save_features(path, feats)
    shutil.rmtree(parts, ignore_errors=True)
    return feats, path, False


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)


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
    device: str,
    progress: bool,
    title: str,
) -> tuple[dict[str, Any], TrainedHead]:
    """Train and test one head per (label fraction, seed) and summarise: the headline is the mean
    over seeds at the largest fraction; per-tag scores / confusion matrix are its first seed's.
    Returns (summary, the head of that first run)."""
    fractions = sorted(set(float(f) for f in label_fractions), reverse=True)
    runs, by_fraction, first = [], {}, None
    keys = HEADLINE[task]
    knn_runs = []
    label = f"training {head} heads ({title})"
    with progress_bar(label, len(fractions) * len(seeds), enabled=progress, unit="heads") as advance:
        for frac in fractions:
            frac_runs = []
            for seed in seeds:
                pick = select_fraction(targets["train"], frac, seed)
                train = feats["train"].subset(pick)
                trained = train_head(
                    head,
                    train,
                    targets["train"][pick],
                    feats["valid"],
                    targets["valid"],
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
                    first = (metrics, trained)
                if knn:
                    scores = knn_scores(train, targets["train"][pick], feats["test"], task, len(names), knn)
                    knn_metrics = metrics_for(task, targets["test"], scores, names)
                    run["knn"] = {k: knn_metrics[k] for k in keys}
                    knn_runs.append(run["knn"])
                runs.append(run)
                frac_runs.append(run)
                advance(1)
            summary = {"n_train_tracks": frac_runs[0]["n_train_tracks"]}
            for k in keys:
                summary[k], summary[f"{k}_std"] = _stats([r[k] for r in frac_runs])
            by_fraction[str(frac)] = summary
    head_metrics, trained = first
    result: dict[str, Any] = {
        **by_fraction[str(fractions[0])],
        "by_fraction": by_fraction,
        "runs": runs,
        **details(task, head_metrics),
    }
    if knn:
        top = [r["knn"] for r in runs if r["label_fraction"] == fractions[0]]
        k_used = min(knn, result["n_train_tracks"])  # fewer training tracks than K: all of them vote
        result["knn"] = {"k": k_used, "k_asked": knn, **{k: _stats([r[k] for r in top])[0] for k in keys}}
    return result, trained


def random_init_like(model: CLMR, seed: int) -> CLMR:
    """A randomly initialised model with the same encoder architecture (seeded), for the baseline."""
    arch = model.encoder.architecture()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = SampleCNN(width=arch["width"], n_blocks=arch["n_blocks"])
    return CLMR(encoder, sample_rate=model.sample_rate).eval()


def evaluate(
    checkpoint: str | Path | CLMR,
    store,
    out_dir: str | Path,
    *,
    head: str = "linear",
    label_fractions: Sequence[float] = (1.0,),
    seeds: Sequence[int] = (42,),
    baseline: str | None = None,
    knn: int | None = None,
    train_crops: int = 1,
    device: str = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
    recipe: Recipe | None = None,
) -> dict[str, Any]:
    """Probe a frozen checkpoint on a labelled store and write report.json, report.md, plots and
    head.safetensors (encoder + trained head + tag names) into `out_dir`; returns the report dict.

    `recipe` overrides the reference head-training recipe (its `train_crops` is set from `train_crops`);
    `batch_size` is the number of crops per encoder forward pass during feature extraction (default
    256 on CUDA; 16 on CPU, where large batches are memory-bound and no faster).
    """
    check_choices(head, baseline)
    check_device(device)
    batch_size = batch_size or (256 if torch.device(device).type == "cuda" else 16)
    if not seeds or not label_fractions:
        raise EvaluationError("give at least one seed and one label fraction")
    check_fractions(label_fractions)
    check_seeds(seeds)
    seeds = [int(s) for s in seeds]  # numpy integers too: they end up in JSON
    recipe = Recipe(**{**(recipe or Recipe()).__dict__, "train_crops": int(train_crops)})
    check_positive(
        knn=knn,
        train_crops=recipe.train_crops,
        max_epochs=recipe.max_epochs,
        head_batch_size=recipe.batch_size,
        batch_size=batch_size,
    )
    inputs = prepare(checkpoint, store, out_dir)
    store, splits, out, ckpt_info = inputs.store, inputs.splits, inputs.out, inputs.checkpoint
    task, names = inputs.task, inputs.names
    out.mkdir(parents=True, exist_ok=True)
    targets = {
        name: store.targets(idx)
        for name, idx in (("train", splits.train), ("valid", splits.valid), ("test", splits.test))
    }

    def features_of(model: CLMR, encoder_id: str):
        return cached_split_features(
            model,
            encoder_id,
            store,
            splits,
            out / "features",
            batch_size=batch_size,
            device=device,
            progress=progress,
        )

    def probes(feats: dict[str, SplitFeatures], title: str):
        return probe_suite(
            feats,
            targets,
            task,
            names,
            head=head,
            label_fractions=label_fractions,
            seeds=seeds,
            knn=knn,
            recipe=recipe,
            device=device,
            progress=progress,
            title=title,
        )

    feats, cache_path, hit = features_of(inputs.model, ckpt_info["sha256"])
    result, trained = probes(feats, "checkpoint")
    report: dict[str, Any] = {
        "mode": "evaluate",
        "task": task,
        **result,
        "checkpoint": ckpt_info,
        "store": store_identity(store, splits),
        "config": {
            "head": head,
            "label_fractions": sorted(set(map(float, label_fractions)), reverse=True),
            "seeds": list(seeds),
            "knn": knn,
            "baseline": baseline,
            "train_crops": recipe.train_crops,
            "recipe": recipe.__dict__,
            "protocol": PROTOCOL,
            "device": device,
            "batch_size": batch_size,
        },
        "features": {"cache": str(cache_path.relative_to(out)), "reused": hit},
    }
    if baseline == "random":
        rand = random_init_like(inputs.model, seeds[0])
        base_feats, _, base_hit = features_of(rand, f"random-init|{ckpt_info['encoder']}|seed={seeds[0]}")
        report["baseline"], _ = probes(base_feats, "random init")
        report["baseline"] |= {"kind": "random", "seed": seeds[0], "features": {"reused": base_hit}}
    head_model = CLMR(
        inputs.model.encoder,
        head=trained.head,
        sample_rate=inputs.model.sample_rate,
        tags=names,
        task=task,
        meta=model_meta(report, "checkpoint", report["runs"][0]),  # the saved head is the first run's
    )
    save_model(head_model, out / "head.safetensors")
    report["head_path"] = "head.safetensors"
    report["plots"] = write_plots(report, feats["test"], targets["test"], names, out)
    write_report(report, out)
    return report


def write_plots(
    report: dict[str, Any], test: SplitFeatures, y_test: np.ndarray, names: Sequence[str], out: Path
) -> list[str]:
    """Per-tag PR-AUC bars or the confusion matrix, and the PCA of test embeddings; relative paths."""
    task = report["task"]
    made = []
    if task == "multilabel":
        base = report.get("baseline", {}).get("per_tag")
        made.append(plots.per_tag_bars(report["per_tag"], out / "per_tag_pr_auc.png", base))
    else:
        made.append(
            plots.confusion(report["confusion_matrix"], report["classes"], out / "confusion_matrix.png")
        )
    if len(test.tracks) >= 2:
        labels = plots.track_colours(y_test, names, task)
        made.append(
            plots.pca_scatter(
                test.song_means(), labels, out / "embeddings_pca.png", "Test-track embeddings (PCA)"
            )
        )
    return [p.name for p in made]
