"""Report figures (matplotlib, Agg backend): per-tag PR-AUC bars, confusion matrix, and a PCA of
test-track embeddings coloured by label."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clmr.files import atomic_open


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Lay out, write the PNG atomically and close the figure."""
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, dpi=100, format="png")
    finally:
        _pyplot().close(fig)
    return path


def per_tag_bars(per_tag: dict[str, dict], path: Path, baseline: dict[str, dict] | None = None) -> Path:
    """Horizontal bars of each scored tag's PR-AUC, best first (baseline bars beside when given)."""
    plt = _pyplot()
    tags = sorted((t for t, v in per_tag.items() if "pr_auc" in v), key=lambda t: per_tag[t]["pr_auc"])
    fig, ax = plt.subplots(figsize=(6, 1.5 + 0.28 * len(tags)))
    y = np.arange(len(tags))
    if baseline:
        ax.barh(
            y - 0.2,
            [baseline.get(t, {}).get("pr_auc", 0.0) for t in tags],
            0.4,
            label="random init",
            color="0.7",
        )
        ax.barh(y + 0.2, [per_tag[t]["pr_auc"] for t in tags], 0.4, label="checkpoint")
        ax.legend(loc="lower right")
    else:
        ax.barh(y, [per_tag[t]["pr_auc"] for t in tags])
    ax.set_yticks(y, tags)
    ax.set_xlim(0, 1)
    ax.set_xlabel("PR-AUC (average precision)")
    ax.set_title("Per-tag PR-AUC on the test split")
    return _save(fig, path)


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path) -> Path:
    """The confusion matrix (rows true, columns predicted) with counts in the cells."""
    plt = _pyplot()
    m = np.asarray(matrix)
    size = 2.5 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    for (r, c), v in np.ndenumerate(m):
        ax.text(c, r, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test tracks)")
    return _save(fig, path)


def track_colours(targets: np.ndarray, names: Sequence[str], task: str) -> list[str]:
    """One label per track to colour it by: its class, or for tags its rarest tag ("none" if untagged)."""
    targets = np.asarray(targets)
    if task == "multiclass":
        return [names[int(c)] for c in targets]
    frequency = targets.sum(axis=0)
    masked = np.where(targets > 0, frequency[None, :], np.inf)
    rarest = masked.argmin(axis=1)
    return [names[int(c)] if np.isfinite(masked[i, c]) else "none" for i, c in enumerate(rarest)]


def pca_scatter(embeddings: np.ndarray, labels: Sequence[str], path: Path, title: str) -> Path:
    """2-D PCA of song embeddings, one colour per label (the 9 most common, the rest "other")."""
    plt = _pyplot()
    x = np.asarray(embeddings, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T if len(vt) >= 2 else np.column_stack([x @ vt[:1].T, np.zeros(len(x))])
    names, counts = np.unique(np.asarray(labels), return_counts=True)
    keep = set(names[np.argsort(-counts, kind="stable")][:9])
    shown = np.array([lab if lab in keep else "other" for lab in labels])
    fig, ax = plt.subplots(figsize=(6, 5))
    for lab in sorted(set(shown)):
        sel = shown == lab
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, label=lab, alpha=0.8)
    ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    return _save(fig, path)
