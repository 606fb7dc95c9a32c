"""Writing an evaluation report: `report.json` (every number, config and identity) and `report.md`
(tables a person reads, with the plots)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clmr.files import atomic_open

HEADLINE = {"multilabel": ("roc_auc_macro", "pr_auc_macro"), "multiclass": ("accuracy", "f1_macro")}
"""Top-level metric keys of a report, per task."""

DETAILS = {
    "multilabel": ("per_tag", "excluded_tags"),
    "multiclass": ("confusion_matrix", "classes", "excluded_classes"),
}
"""Per-label detail keys of a report (of one run: the first seed's), per task."""


PLOT_CAPTIONS = {
    "per_tag_scores.png": "Per-tag ROC-AUC and PR-AUC on the test split, each panel sorted best first "
    "(grey: the random-init baseline)",
    "confusion_matrix.png": "Confusion matrix of the test tracks",
    "embeddings_pca.png": "Test-track embeddings (mean crop feature), first two principal components",
    "embeddings_tsne.png": "Test-track embeddings, t-SNE map (neighbourhoods, not distances, are meaningful)",
}
"""What each report figure shows, written above it in report.md."""


def details(task: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The per-label part of one test's metrics (per-tag scores, or confusion matrix and classes)."""
    return {k: metrics[k] for k in DETAILS[task]}


def headline(task: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """A report's top-level keys from one test's metrics: the headline scores and the details."""
    return {**{k: metrics[k] for k in HEADLINE[task]}, **details(task, metrics)}


def model_meta(report: dict[str, Any], source_key: str, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metadata stored with a trained head or fine-tuned model: where its encoder came from
    (`source_key` names the relation, as an absolute path), which store's labels it learned, and its own
    test scores (`run`: the entry of report["runs"] that produced it; else the report's headline)."""
    ckpt = report["checkpoint"]
    scores = run if run is not None else report
    extra = {k: run[k] for k in ("label_fraction", "seed") if k in run} if run is not None else {}
    return {
        source_key: _absolute(ckpt["path"]),
        "checkpoint_sha256": ckpt["sha256"],
        "labels_from": _absolute(report["store"]["path"]),
        **{k: scores[k] for k in HEADLINE[report["task"]]},
        **extra,
    }


def _absolute(path: str) -> str:
    """`path` made absolute when it names an existing file or folder (else as given, e.g. a description)."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temp file in the same folder and a rename."""
    with atomic_open(path) as f:
        f.write(text)
    return path


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write report.json and report.md into `out_dir`."""
    json_path = write_text_atomic(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    md_path = write_text_atomic(out_dir / "report.md", markdown(report))
    return json_path, md_path


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}" if isinstance(value, float) else str(value)


def _pm(stats: dict[str, Any], key: str) -> str:
    mean, std = stats.get(key), stats.get(f"{key}_std")
    return _fmt(mean) + (f" ± {100 * std:.1f}" if std else "")


def row_names(mode: str) -> tuple[str, str]:
    """How tables name the two models of a report: the checkpoint and the random-init baseline."""
    if mode == "finetune":
        return "fine-tuned checkpoint", "random init, trained end to end"
    return "checkpoint", "random init (same architecture)"


def training_data(report: dict[str, Any]) -> str:
    """How much labelled data the (headline) head learned from: "label fraction F: N of M training
    tracks", noting when the at-least-one-track rule raised the count above round(F * M)."""
    config = report.get("config", {})
    if "label_fractions" in config:  # evaluate: the headline is the largest fraction
        fraction, used = float(config["label_fractions"][0]), report.get("n_train_tracks")
    else:  # finetune
        fraction, used = float(config.get("label_fraction", 1.0)), config.get("n_train_tracks")
    pool = report.get("store", {}).get("splits", {}).get("train")
    if used is None or pool is None:
        return f"label fraction {fraction:g}"
    text = f"label fraction {fraction:g}: {used} of {pool} training tracks"
    if config.get("fraction_of") == "dataset" and fraction < 1:
        pool = config["fraction_pool"]  # the paper's count: a fraction of every labelled track
        text = f"label fraction {fraction:g} of all {pool} labelled tracks: {used} of the training tracks"
    exact = fraction * pool
    if used > round(exact):
        text += (
            f" ({fraction:g} × {pool} = {exact:.3g}, raised to {used}: a head trains on at least one track)"
        )
    return text


def logistic_section(report: dict[str, Any], keys: list[str], models: list[tuple[str, dict]]) -> list[str]:
    """The logistic-regression check beside the probe, for each model that has it, and the notes on
    where the two disagree."""
    rows = [
        [name, *(f"{_fmt(part.get(k))} / {_fmt(part['logistic_regression'].get(k))}" for k in keys), lr["C"]]
        for name, part in models
        if (lr := part.get("logistic_regression"))
    ]
    if not rows:
        return []
    lines = ["", "## Check: logistic regression on standardised song features (%)", ""]
    lines += [
        "Scikit-learn logistic regression on the mean crop feature of each track, standardised with the "
        "training tracks' statistics, regularisation C chosen on the valid split. Cells: probe / "
        "logistic regression.",
        "",
        *_table(["model", *keys, "C"], rows),
    ]
    return lines + ([""] + [f"- **Note:** {n}." for n in report["notes"]] if report.get("notes") else [])


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: identity, headline with the random-init baseline, label fractions,
    k-NN, per-tag scores or the confusion matrix, and the plots. Scores are percentages."""
    task = report["task"]
    keys = list(HEADLINE[task])
    ckpt, store, config = report["checkpoint"], report["store"], report["config"]
    splits = store["splits"]
    identity = [
        ["checkpoint", f"`{ckpt['path']}` (sha256 {ckpt['sha256'][:12]})"],
        ["pre-trained on", ckpt.get("pretrained_on") or "-"],
        [
            "evaluated on",
            f"`{store['path']}` ({store.get('dataset') or 'store'}, {task}, {store['n_labels']} labels)",
        ],
        ["tracks train / valid / test", f"{splits['train']} / {splits['valid']} / {splits['test']}"],
        ["split", report.get("split") or "-"],
        ["head", config["head"] + (" (standardised features)" if config.get("standardize") else "")],
        ["head training protocol", report.get("protocol") or "-"],
        ["label fraction / training tracks", training_data(report)],
        ["song-level protocol", config["protocol"]],
    ]
    base = report.get("baseline")
    checkpoint_name, baseline_name = row_names(report["mode"])
    scores = [[checkpoint_name, *(_pm(report, k) for k in keys)]]
    if base:
        scores.append([baseline_name, *(_pm(base, k) for k in keys)])
        gain = [
            _fmt(report[k] - base[k]) if report.get(k) is not None and base.get(k) is not None else "-"
            for k in keys
        ]
        scores.append(["gain from pre-training", *gain])
    for name, source in [("", report), (", random init", base or {})]:
        if source.get("knn"):
            knn = source["knn"]
            scores.append([f"cosine {knn['k']}-NN{name} (no training)", *(_fmt(knn.get(k)) for k in keys)])
    lines = [f"# clmr {report['mode']} report", "", *_table(["", ""], identity)]
    lines += ["", "## Test scores (%)", "", *_table(["model", *keys], scores)]
    lines += logistic_section(report, keys, [(checkpoint_name, report), (baseline_name, base or {})])
    if len(report.get("by_fraction", {})) > 1 or len(config.get("seeds", [])) > 1:
        models = [("checkpoint", report)] + ([("random init", base)] if base else [])
        rows = [
            [frac, name, stats["n_train_tracks"], *(_pm(stats, k) for k in keys)]
            for frac in report["by_fraction"]
            for name, source in models
            for stats in [source["by_fraction"][frac]]
        ]
        lines += ["", "## Label fractions (mean ± std over seeds)", ""]
        lines += _table(["fraction", "model", "train tracks", *keys], rows)
    excluded = report.get("excluded_tags") or report.get("excluded_classes") or {}
    if excluded:
        lines += [
            "",
            "Left out of the macro averages: " + "; ".join(f"`{t}` ({why})" for t, why in excluded.items()),
        ]
    if task == "multilabel" and report.get("per_tag"):
        per_tag = report["per_tag"]
        rows = [
            [t, v["positives"], _fmt(v.get("roc_auc")), _fmt(v.get("pr_auc"))]
            for t, v in sorted(
                per_tag.items(), key=lambda tv: (tv[1].get("pr_auc") is None, -(tv[1].get("pr_auc") or 0.0))
            )
        ]
        lines += ["", "## Per tag (%), best PR-AUC first", ""]
        lines += _table(["tag", "test positives", "ROC-AUC", "PR-AUC"], rows)
    if task == "multiclass" and report.get("confusion_matrix"):
        classes = report["classes"]
        rows = [[name, *row] for name, row in zip(classes, report["confusion_matrix"], strict=True)]
        lines += ["", "## Confusion matrix (rows true, columns predicted)", "", *_table(["", *classes], rows)]
    if report.get("plots"):
        lines += ["", "## Plots"]
        for p in report["plots"]:
            lines += ["", f"{PLOT_CAPTIONS.get(Path(p).name, Path(p).stem)}:", "", f"![{Path(p).stem}]({p})"]
    return "\n".join(lines) + "\n"
