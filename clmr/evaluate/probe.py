"""Probes on cached crop features: a head trained with the reference protocol (one fixed crop per track,
last epoch's head) or clmr's (fresh crops per epoch, best epoch's head), the song-level test protocol
(per-crop sigmoid/softmax, mean per track) and a cosine k-NN that needs no training."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from clmr.devices import resolve_device
from clmr.evaluate.features import SplitFeatures, segment_mean
from clmr.models import Head
from clmr.train.stopping import EarlyStopping


@dataclass
class Recipe:
    """Head training hyperparameters; the defaults are the reference linear-evaluation recipe.

    `train_crops` is the clmr protocol's random crops per training track per epoch; `standardize`
    scales features by the training rows' mean and std before the head (a non-affine BatchNorm, as
    MAE-style linear probes do), folded into the head's first layer afterwards."""

    lr: float = 1e-3
    weight_decay: float = 1e-6
    max_epochs: int = 200
    lr_patience: int = 5
    lr_factor: float = 0.1
    stop_patience: int = 10
    batch_size: int = 48
    train_crops: int = 1
    standardize: bool = False


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
    return _as_targets(np.asarray(targets)[split.track_of_crop], task)


def _as_targets(y: np.ndarray, task: str, device: torch.device | str = "cpu") -> torch.Tensor:
    y_t = torch.as_tensor(np.asarray(y), device=device)
    return y_t.float() if task == "multilabel" else y_t.long()


def feature_scaling(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (floored at 1e-6) of each feature over `rows`."""
    rows64 = np.asarray(rows, dtype=np.float64)
    return rows64.mean(axis=0), np.maximum(rows64.std(axis=0), 1e-6)


def fold_scaling(head: Head, mean: np.ndarray, std: np.ndarray) -> Head:
    """Make `head` take raw features: its first Linear, trained on (h - mean) / std, absorbs the scaling."""
    first = head.model[0]
    with torch.no_grad():
        w = first.weight.double() / torch.as_tensor(std, device=first.weight.device)
        first.bias.copy_(first.bias.double() - w @ torch.as_tensor(mean, device=w.device))
        first.weight.copy_(w)
    return head


def _setup(kind: str, in_dim: int, n_classes: int, seed: int, recipe: Recipe, device: torch.device):
    """A seeded head, its Adam optimiser and its ReduceLROnPlateau schedule (reference settings)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = Head(kind, in_dim, n_classes).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=recipe.lr_factor, patience=recipe.lr_patience
    )
    return head, opt, sched


def _step(head: Head, opt, criterion, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = criterion(head(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach() * len(x)


def train_fixed(
    kind: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    task: str,
    n_classes: int,
    *,
    seed: int = 42,
    recipe: Recipe | None = None,
    device: str | torch.device = "cpu",
) -> TrainedHead:
    """The reference protocol (`LinearEvaluation` of the reference's clmr/modules/linear_evaluation.py,
    run by its linear_evaluation.py): one fixed feature row per training and per valid track, shuffled
    mini-batches of `recipe.batch_size` (48), Adam, ReduceLROnPlateau and early stopping on the mean
    valid loss, and the head of the LAST epoch is returned (Lightning keeps the weights it stopped with)."""
    recipe = recipe or Recipe()
    device = resolve_device(device)
    scaling = feature_scaling(x_train) if recipe.standardize else None
    x, xv = (_scaled(a, scaling, device) for a in (x_train, x_valid))
    y, yv = _as_targets(y_train, task, device), _as_targets(y_valid, task, device)
    head, opt, sched = _setup(kind, x.shape[1], n_classes, seed, recipe, device)
    criterion, gen = loss_fn(task), torch.Generator().manual_seed(seed)
    stopper, history, epoch = EarlyStopping(recipe.stop_patience), [], 0
    for epoch in range(1, recipe.max_epochs + 1):
        head.train()
        order = torch.randperm(len(x), generator=gen).to(device)  # DataLoader(shuffle=True)
        total = sum(_step(head, opt, criterion, x[pick], y[pick]) for pick in order.split(recipe.batch_size))
        head.eval()
        with torch.no_grad():
            valid_loss = float(criterion(head(xv), yv))
        stopper.update(valid_loss, epoch)
        lr = opt.param_groups[0]["lr"]  # the rate this epoch trained with
        sched.step(valid_loss)
        history.append(
            {"epoch": epoch, "lr": lr, "train_loss": float(total) / len(x), "valid_loss": valid_loss}
        )
        if stopper.should_stop:
            break
    head = head.cpu().eval()
    if scaling is not None:
        fold_scaling(head, *scaling)
    return TrainedHead(head, epoch, stopper.best_epoch, stopper.best, history)


def _scaled(rows: np.ndarray, scaling, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(rows, dtype=np.float32))
    if scaling is not None:
        mean, std = scaling
        x = ((x.double() - torch.as_tensor(mean)) / torch.as_tensor(std)).float()
    return x.to(device)


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
    """clmr's protocol: train a `kind` head on cached grid crops; the best-validation-loss weights are
    returned.

    Each epoch draws `recipe.train_crops` random crops per training track from its cached crops and
    runs shuffled mini-batches. ReduceLROnPlateau and early stopping watch the mean per-crop loss over
    every valid crop.
    """
    recipe = recipe or Recipe()
    device = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    scaling = feature_scaling(train.features) if recipe.standardize else None
    x_train, x_valid = (_scaled(a, scaling, device) for a in (train.features, valid.features))
    head, opt, sched = _setup(kind, x_train.shape[1], n_classes, seed, recipe, device)
    criterion = loss_fn(task)
    y_tracks = _as_targets(y_train, task, device)
    starts = torch.as_tensor(train.offsets[:-1], device=device)
    counts = torch.as_tensor(train.counts, device=device)
    y_valid_crops = crop_targets(y_valid, valid, task).to(device)
    n_tracks, k = len(train.tracks), recipe.train_crops
    stopper, best_state, history, epoch = EarlyStopping(recipe.stop_patience), None, [], 0
    for epoch in range(1, recipe.max_epochs + 1):
        head.train()
        draw = (torch.rand(n_tracks, k, generator=gen).to(device) * counts[:, None]).long()
        rows = (starts[:, None] + draw).reshape(-1)
        owner = torch.arange(n_tracks, device=device).repeat_interleave(k)
        order = torch.randperm(len(rows), generator=gen).to(device)
        total = sum(
            _step(head, opt, criterion, x_train[rows[pick]], y_tracks[owner[pick]])
            for pick in order.split(recipe.batch_size)
        )
        head.eval()
        with torch.no_grad():
            valid_loss = float(criterion(head(x_valid), y_valid_crops))
        lr = opt.param_groups[0]["lr"]
        sched.step(valid_loss)
        history.append(
            {"epoch": epoch, "lr": lr, "train_loss": float(total) / len(order), "valid_loss": valid_loss}
        )
        if stopper.update(valid_loss, epoch):
            best_state = {key: v.detach().clone() for key, v in head.state_dict().items()}
        elif stopper.should_stop:
            break
    if best_state is not None:
        head.load_state_dict(best_state)
    head = head.cpu().eval()
    if scaling is not None:
        fold_scaling(head, *scaling)
    return TrainedHead(head, epoch, stopper.best_epoch, stopper.best, history)


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
