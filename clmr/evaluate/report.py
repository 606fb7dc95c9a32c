"""Writing an evaluation report: `report.json` (every number, config and identity) and `report.md`
(tables a person reads, with the plots)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

HEADLINE = {"multilabel": ("roc_auc_macro", "pr_auc_macro"), "multiclass": ("accuracy", "f1_macro")}
"""Top-level metric keys of a report, per task."""


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temp file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: identity, headline with the random-init baseline, label fractions,
    k-NN, per-tag scores or the confusion matrix, and the plots. Scores are percentages."""
    task = report["task"]
    keys = HEADLINE[task]
    ckpt, store = report["checkpoint"], report["store"]
    lines = [
        f"# clmr {report['mode']} report",
        "",
        "| | |",
        "| --- | --- |",
        f"| checkpoint | `{ckpt['path']}` (sha256 {ckpt['sha256'][:12]}) |",
        f"| pre-trained on | {ckpt.get('pretrained_on') or '-'} |",
        f"| evaluated on | `{store['path']}` ({store.get('dataset') or 'store'}, {task}, {store['n_labels']} labels) |",
        f"| tracks train / valid / test | {store['splits']['train']} / {store['splits']['valid']} / {store['splits']['test']} |",
        f"| head | {report['config']['head']} |",
        f"| song-level protocol | {report['config']['protocol']} |",
        "",
        "## Test scores (%)",
        "",
        "| model | " + " | ".join(keys) + " |",
        "| --- | " + " | ".join("---" for _ in keys) + " |",
        "| checkpoint | " + " | ".join(_pm(report, k) for k in keys) + " |",
    ]
    base = report.get("baseline")
    if base:
        lines.append("| random init (same architecture) | " + " | ".join(_pm(base, k) for k in keys) + " |")
        gain = [
            _fmt(report[k] - base[k]) if report.get(k) is not None and base.get(k) is not None else "-"
            for k in keys
        ]
        lines.append("| gain from pre-training | " + " | ".join(gain) + " |")
    if report.get("knn"):
        lines.append(
            f"| cosine {report['knn']['k']}-NN (no training) | "
            + " | ".join(_fmt(report["knn"].get(k)) for k in keys)
            + " |"
        )
    if len(report.get("by_fraction", {})) > 1 or len(report["config"].get("seeds", [])) > 1:
        lines += [
            "",
            "## Label fractions (mean ± std over seeds)",
            "",
            "| fraction | train tracks | " + " | ".join(keys) + " |",
        ]
        lines.append("| --- | --- | " + " | ".join("---" for _ in keys) + " |")
        for frac, stats in report["by_fraction"].items():
            lines.append(
                f"| {frac} | {stats['n_train_tracks']} | " + " | ".join(_pm(stats, k) for k in keys) + " |"
            )
    excluded = report.get("excluded_tags") or report.get("excluded_classes") or {}
    if excluded:
        lines += [
            "",
            "Left out of the macro averages: " + "; ".join(f"`{t}` ({why})" for t, why in excluded.items()),
        ]
    if task == "multilabel" and report.get("per_tag"):
        lines += [
            "",
            "## Per tag (%)",
            "",
            "| tag | test positives | ROC-AUC | PR-AUC |",
            "| --- | --- | --- | --- |",
        ]
        for tag, v in report["per_tag"].items():
            lines.append(f"| {tag} | {v['positives']} | {_fmt(v.get('roc_auc'))} | {_fmt(v.get('pr_auc'))} |")
    if task == "multiclass" and report.get("confusion_matrix"):
        classes = report["classes"]
        lines += [
            "",
            "## Confusion matrix (rows true, columns predicted)",
            "",
            "| | " + " | ".join(classes) + " |",
        ]
        lines.append("| --- | " + " | ".join("---" for _ in classes) + " |")
        for name, row in zip(classes, report["confusion_matrix"], strict=True):
            lines.append(f"| {name} | " + " | ".join(map(str, row)) + " |")
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"
