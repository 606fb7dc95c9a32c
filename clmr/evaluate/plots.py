"""Report figures (matplotlib, Agg backend): per-tag ROC-AUC and PR-AUC bars sorted by score, the
confusion matrix, and a PCA and a t-SNE map (scikit-learn) of test-track embeddings coloured by label."""

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


SCORES = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC (average precision)"}
"""The per-tag scores drawn as bars, and their axis names."""


def ranked(per_tag: dict[str, dict], key: str) -> list[str]:
    """The tags that have score `key` (a tag without test positives has none), best first."""
    scored = [t for t, v in per_tag.items() if v.get(key) is not None]
    return sorted(scored, key=lambda t: -per_tag[t][key])


def per_tag_bars(per_tag: dict[str, dict], path: Path, baseline: dict[str, dict] | None = None) -> Path:
    """Two panels of horizontal bars, each tag's ROC-AUC and PR-AUC, each panel sorted by its score with
    the best tag on top (the random-init baseline's bars beside, in grey, when given)."""
    plt = _pyplot()
    n = max(1, len(per_tag))
    fig, axes = plt.subplots(1, len(SCORES), figsize=(10, 1.5 + 0.28 * n), squeeze=False)
    for ax, (key, name) in zip(axes[0], SCORES.items(), strict=True):
        tags = ranked(per_tag, key)[::-1]  # barh draws from the bottom: best last, on top
        y = np.arange(len(tags))
        ours = [per_tag[t][key] for t in tags]
        if baseline:
            base = [baseline.get(t, {}).get(key) or 0.0 for t in tags]
            ax.barh(y - 0.2, base, 0.4, label="random init", color="0.7")
            ax.barh(y + 0.2, ours, 0.4, label="checkpoint")
            ax.legend(loc="lower right", fontsize=7)
        else:
            ax.barh(y, ours)
        ax.set_yticks(y, tags)
        ax.set_xlim(0, 1)
        ax.set_xlabel(name)
        ax.set_title(f"Per-tag {name.split()[0]}, test split")
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


def _pca(embeddings: np.ndarray, dims: int) -> np.ndarray:
    """The first `dims` principal components of the rows (zero columns where there are fewer)."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:dims].T
    return np.pad(xy, ((0, 0), (0, dims - xy.shape[1])))


def pca_scatter(embeddings: np.ndarray, labels: Sequence[str], path: Path, title: str) -> Path:
    """2-D PCA of song embeddings, one colour per label (the 9 most common, the rest "other")."""
    return _scatter(_pca(embeddings, 2), labels, path, title, ("PC 1", "PC 2"))


TSNE_MAX_TRACKS = 1000
"""t-SNE maps at most this many tracks (a seeded sample of larger test splits), so it stays fast."""
TSNE_ONE_THREAD_BELOW = 500
"""Smaller t-SNE maps run on one thread."""


def tsne_scatter(
    embeddings: np.ndarray, labels: Sequence[str], path: Path, title: str, seed: int = 0
) -> Path:
    """A 2-D t-SNE map (scikit-learn, on the first 50 principal components) of song embeddings, one
    colour per label as `pca_scatter`; perplexity min(30, (n - 1) / 3), so small sets map too."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x, labels = np.asarray(embeddings), np.asarray(labels)
    if len(x) > TSNE_MAX_TRACKS:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), TSNE_MAX_TRACKS, replace=False))
        x, labels = x[keep], labels[keep]
        title = f"{title}, {TSNE_MAX_TRACKS} sampled tracks"
    reduced = _pca(x, min(50, x.shape[1]))
    perplexity = min(30.0, max(1.0, (len(x) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    # small maps on one thread: OpenMP threads only spin on busy cores (20x slower measured, 40 tracks)
    with threadpool_limits(limits=1 if len(x) < TSNE_ONE_THREAD_BELOW else None):
        xy = tsne.fit_transform(reduced)
    return _scatter(xy, labels, path, f"{title} (perplexity {perplexity:.3g})", ("t-SNE 1", "t-SNE 2"))


def _scatter(xy: np.ndarray, labels: Sequence[str], path: Path, title: str, axes: tuple[str, str]) -> Path:
    """Points coloured by label: the 9 most common labels, the rest as "other"."""
    plt = _pyplot()
    names, counts = np.unique(np.asarray(labels), return_counts=True)
    keep = set(names[np.argsort(-counts, kind="stable")][:9])
    shown = np.array([lab if lab in keep else "other" for lab in labels])
    fig, ax = plt.subplots(figsize=(6, 5))
    for lab in sorted(set(shown)):
        sel = shown == lab
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, label=lab, alpha=0.8)
    ax.legend(fontsize=7, loc="best")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    return _save(fig, path)
