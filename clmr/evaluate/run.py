"""`evaluate`: frozen-encoder probes of a checkpoint on a labelled store, with cached features, the
reference's or clmr's head-training protocol, label fractions, several seeds, an optional k-NN and
random-init baseline, the logistic-regression check, and a written report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clmr.evaluate import plots
from clmr.evaluate.features import SplitFeatures, cache_key, store_fingerprint
from clmr.evaluate.inputs import (
    EvaluationError,
    check_choices,
    check_device,
    check_fraction_of,
    check_fractions,
    check_positive,
    check_seeds,
    prepare,
    store_identity,
)
from clmr.evaluate.logreg import disagreements
from clmr.evaluate.probe import Recipe
from clmr.evaluate.report import model_meta, row_names, write_report
from clmr.evaluate.selection import fraction_pool
from clmr.evaluate.suite import PROTOCOLS, cached_features, fixed_crops_of, own_head_suite, probe_suite
from clmr.models import CLMR, SampleCNN, save_model

PROTOCOL = "all consecutive non-overlapping crops per test track (remainder dropped), sigmoid/softmax per crop, mean per track"


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
    protocol: str = "reference",
    label_fractions: Sequence[float] = (1.0,),
    fraction_of: str = "dataset",
    seeds: Sequence[int] = (42,),
    baseline: str | None = None,
    knn: int | None = None,
    train_crops: int = 1,
    standardize: bool = False,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    progress: bool = True,
    recipe: Recipe | None = None,
) -> dict[str, Any]:
    """Probe a frozen checkpoint on a labelled store and write report.json, report.md, plots and
    head.safetensors (encoder + trained head + tag names) into `out_dir`; returns the report dict.

    `protocol` is how heads train (PROTOCOLS: the reference's by default); `head="own"` scores the
    model's own trained classifier instead. Label fractions are of all labelled tracks
    (`fraction_of="dataset"`, the paper's count) or of the training tracks (`"train"`). `recipe`
    overrides the reference head-training recipe (`train_crops` and `standardize` set its fields);
    `device`: `auto` (the best this machine has) or a name. `batch_size` is the number of crops per encoder forward pass during feature extraction (default
    256 on CUDA; 16 on CPU, where large batches are memory-bound and no faster).
    """
    check_options(head, baseline, protocol, fraction_of, label_fractions)
    device = check_device(device)
    batch_size = batch_size or (256 if device.type == "cuda" else 16)
    if not seeds or not label_fractions:
        raise EvaluationError("give at least one seed and one label fraction")
    check_fractions(label_fractions)
    check_seeds(seeds)
    seeds = [int(s) for s in seeds]  # numpy integers too: they end up in JSON
    base_recipe = (recipe or Recipe()).__dict__
    recipe = Recipe(**{**base_recipe, "train_crops": int(train_crops), "standardize": bool(standardize)})
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
    store_id = store_fingerprint(store)
    extract_opts = dict(batch_size=batch_size, device=device, progress=progress)
    wanted = {"train": splits.train, "valid": splits.valid, "test": splits.test}
    pool = fraction_pool(fraction_of, len(splits.train), sum(map(len, wanted.values())))

    def features_of(model: CLMR, encoder_id: str):
        path = out / "features" / f"features-{cache_key(encoder_id, store_id, model.crop_length, device)}.npz"
        feats, hit = cached_features(model, store, wanted, path, **extract_opts)
        fixed = fixed_crops_of(model, encoder_id, store, splits, out / "features", store_id, **extract_opts)
        return feats, path, hit, fixed

    def probes(feats, fixed, title: str):
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
            protocol=protocol,
            fixed=fixed,
            pool=pool,
        )

    feats, cache_path, hit, fixed = features_of(inputs.model, ckpt_info["sha256"])
    if head == "own":
        result, trained = own_head_suite(inputs.model, feats, targets, task, names, ckpt_info["path"]), None
    else:
        result, trained = probes(feats, fixed, "checkpoint")
    report: dict[str, Any] = {
        "mode": "evaluate",
        "task": task,
        "protocol": "own head" if head == "own" else protocol,
        "split": store.meta.get("split"),
        **result,
        "checkpoint": ckpt_info,
        "store": store_identity(store, splits),
        "config": {
            "head": head,
            "label_fractions": sorted(set(map(float, label_fractions)), reverse=True),
            "fraction_of": fraction_of,
            "fraction_pool": pool,
            "seeds": list(seeds),
            "knn": knn,
            "baseline": baseline,
            "train_crops": recipe.train_crops,
            "standardize": recipe.standardize,
            "recipe": recipe.__dict__,
            "protocol": PROTOCOL,
            "device": str(device),
            "batch_size": batch_size,
        },
        "features": {"cache": str(cache_path.relative_to(out)), "reused": hit},
    }
    if baseline == "random":
        rand = random_init_like(inputs.model, seeds[0])
        base_feats, _, base_hit, base_fixed = features_of(
            rand, f"random-init|{ckpt_info['encoder']}|seed={seeds[0]}"
        )
        report["baseline"], _ = probes(base_feats, base_fixed, "random init")
        report["baseline"] |= {"kind": "random", "seed": seeds[0], "features": {"reused": base_hit}}
    checkpoint_name, baseline_name = row_names("evaluate")
    compared = [(checkpoint_name, report)] + ([(baseline_name, report["baseline"])] if baseline else [])
    report["notes"] = disagreements(report, compared)
    if trained is not None:
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


def check_options(
    head: str, baseline: str | None, protocol: str, fraction_of: str, label_fractions: Sequence[float]
) -> None:
    """The head (a probe kind or `own`), baseline, protocol and fraction base must be known ones; the
    model's own head is scored as trained, so it takes no baseline and no label fraction below 1."""
    check_choices("linear" if head == "own" else head, baseline)
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown --protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    check_fraction_of(fraction_of)
    if head == "own" and (baseline or any(float(f) < 1.0 for f in label_fractions)):
        raise EvaluationError(
            "--head own scores the model's trained head as it is: it takes no --baseline and no "
            "--label-fraction below 1"
        )


def write_plots(
    report: dict[str, Any], test: SplitFeatures, y_test: np.ndarray, names: Sequence[str], out: Path
) -> list[str]:
    """Per-tag ROC-AUC and PR-AUC bars or the confusion matrix, and the PCA and t-SNE maps of test
    embeddings; relative paths."""
    task = report["task"]
    made = []
    if task == "multilabel":
        base = report.get("baseline", {}).get("per_tag")
        made.append(plots.per_tag_bars(report["per_tag"], out / "per_tag_scores.png", base))
    else:
        made.append(
            plots.confusion(report["confusion_matrix"], report["classes"], out / "confusion_matrix.png")
        )
    if len(test.tracks) >= 2:
        labels, songs = plots.track_colours(y_test, names, task), test.song_means()
        made.append(
            plots.pca_scatter(songs, labels, out / "embeddings_pca.png", "Test-track embeddings (PCA)")
        )
        made.append(
            plots.tsne_scatter(songs, labels, out / "embeddings_tsne.png", "Test-track embeddings (t-SNE)")
        )
    return [p.name for p in made]
