"""Probes on cached crop features: a head trained with the reference recipe, the song-level test
protocol (per-crop sigmoid/softmax, mean per track) and a cosine k-NN that needs no training."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from clmr.evaluate.features import SplitFeatures, segment_mean
from clmr.models import Head


@dataclass
class Recipe:
    """Head training hyperparameters; the defaults are the reference linear-evaluation recipe."""

    lr: float = 1e-3
    weight_decay: float = 1e-6
    max_epochs: int = 200
    lr_patience: int = 5
    lr_factor: float = 0.1
    stop_patience: int = 10
    batch_size: int = 48
    train_crops: int = 1


@dataclass
class TrainedHead:
    """A trained head and how its training went."""

    head: Head
    epochs: int
    best_epoch: int
    best_valid_loss: float
    history: list[dict[str, float]] = field(repr=False)


def loss_fn(task: str) -> nn.Module:
    """BCE-with-logits for tags, cross-entropy for single-label classes (reference)."""
    return nn.BCEWithLogitsLoss() if task == "multilabel" else nn.CrossEntropyLoss()


def crop_targets(targets: np.ndarray, split: SplitFeatures, task: str) -> torch.Tensor:
    """Per-track targets repeated for each crop row of `split`."""
    y = torch.as_tensor(np.asarray(targets)[split.track_of_crop])
    return y.float() if task == "multilabel" else y.long()


def train_head(
    kind: str,
    train: SplitFeatures,
    y_train: np.ndarray,
    valid: SplitFeatures,
    y_valid: np.ndarray,
    task: str,
    n_classes: int,
    *,
    seed: int = 42,
    recipe: Recipe | None = None,
    device: str | torch.device = "cpu",
) -> TrainedHead:
    """Train a `kind` head on frozen features; the best-validation-loss weights are returned.

    Each epoch draws `recipe.train_crops` random crops per training track from its cached crops
    (the reference draws one random crop per track per epoch) and runs shuffled mini-batches.
    ReduceLROnPlateau and early stopping watch the mean per-crop loss over every valid crop.
    """
    recipe = recipe or Recipe()
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = Head(kind, train.features.shape[1], n_classes).to(device)
    criterion = loss_fn(task)
    opt = torch.optim.Adam(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=recipe.lr_factor, patience=recipe.lr_patience
    )
    x_train = torch.as_tensor(train.features, device=device)
    y_tracks = torch.as_tensor(np.asarray(y_train), device=device)
    y_tracks = y_tracks.float() if task == "multilabel" else y_tracks.long()
    starts = torch.as_tensor(train.offsets[:-1], device=device)
    counts = torch.as_tensor(train.counts, device=device)
    x_valid = torch.as_tensor(valid.features, device=device)
    y_valid_crops = crop_targets(y_valid, valid, task).to(device)
    n_tracks, k = len(train.tracks), recipe.train_crops
    best, best_epoch, best_state, stale, history = float("inf"), 0, None, 0, []
    epoch = 0
    for epoch in range(1, recipe.max_epochs + 1):
        head.train()
        draw = (torch.rand(n_tracks, k, generator=gen).to(device) * counts[:, None]).long()
        rows = (starts[:, None] + draw).reshape(-1)
        owner = torch.arange(n_tracks, device=device).repeat_interleave(k)
        order = torch.randperm(len(rows), generator=gen).to(device)
        total = 0.0
        for s in range(0, len(order), recipe.batch_size):
            pick = order[s : s + recipe.batch_size]
            loss = criterion(head(x_train[rows[pick]]), y_tracks[owner[pick]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(pick)
        head.eval()
        with torch.no_grad():
            valid_loss = float(criterion(head(x_valid), y_valid_crops))
        sched.step(valid_loss)
        history.append({"epoch": epoch, "train_loss": float(total) / len(order), "valid_loss": valid_loss})
        if valid_loss < best:
            best, best_epoch, stale = valid_loss, epoch, 0
            best_state = {key: v.detach().clone() for key, v in head.state_dict().items()}
        else:
            stale += 1
            if stale >= recipe.stop_patience:
                break
    if best_state is not None:
        head.load_state_dict(best_state)
    return TrainedHead(head.cpu().eval(), epoch, best_epoch, best, history)


def track_probabilities(crop_logits: torch.Tensor, offsets: np.ndarray, task: str) -> np.ndarray:
    """Song-level protocol: sigmoid (tags) or softmax (classes) per crop, then the mean per track."""
    probs = torch.sigmoid(crop_logits) if task == "multilabel" else torch.softmax(crop_logits, dim=1)
    return segment_mean(probs.float(), offsets)


@torch.no_grad()
def predict(head: Head, split: SplitFeatures, task: str) -> np.ndarray:
    """(n_tracks, C) song-level probabilities of a trained head on cached crop features."""
    head.eval()
    return track_probabilities(head(torch.as_tensor(split.features)), split.offsets, task)


def knn_scores(
    train: SplitFeatures, y_train: np.ndarray, test: SplitFeatures, task: str, n_classes: int, k: int
) -> np.ndarray:
    """Cosine k-NN on song embeddings (mean crop feature): each test track scores a label by the
    fraction of its k nearest training tracks carrying it (tags) or voting for it (classes)."""
    a = torch.nn.functional.normalize(torch.as_tensor(train.song_means()), dim=1)
    b = torch.nn.functional.normalize(torch.as_tensor(test.song_means()), dim=1)
    k = min(k, len(a))
    neighbours = (b @ a.T).topk(k, dim=1).indices.numpy()  # (n_test, k)
    y = np.asarray(y_train)
    if task == "multilabel":
        return y[neighbours].astype(np.float64).mean(axis=1)
    votes = np.zeros((len(b), n_classes))
    np.add.at(votes, (np.arange(len(b))[:, None], y[neighbours]), 1.0)
    return votes / k
