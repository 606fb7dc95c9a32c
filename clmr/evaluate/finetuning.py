"""`finetune`: train encoder and head end to end on a store's labels (encoder at a lower learning
rate), early stopping on validation loss, then the same song-level test and report as `evaluate`."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from clmr.evaluate.features import extract, store_fingerprint
from clmr.evaluate.inputs import (
    EvaluationError,
    check_choices,
    check_device,
    check_fractions,
    check_positive,
    check_seeds,
    prepare,
    store_identity,
    store_path,
)
from clmr.evaluate.metrics import metrics_for
from clmr.evaluate.probe import crop_targets, loss_fn, predict
from clmr.evaluate.report import headline, model_meta, write_report
from clmr.evaluate.run import PROTOCOL, random_init_like, write_plots
from clmr.evaluate.selection import select_fraction
from clmr.files import atomic_open
from clmr.models import CLMR, Head, save_model
from clmr.progress import progress_bar


def _valid_loss(
    model: CLMR, store, valid_idx: np.ndarray, y_valid: np.ndarray, task: str, batch_size: int, device
) -> float:
    """Mean per-crop loss over every crop of the valid tracks (eval mode)."""
    feats = extract(model, store, valid_idx, batch_size=batch_size, device=device)
    with torch.no_grad():
        logits = model.head(torch.as_tensor(feats.features, device=device)).cpu()
    return float(loss_fn(task)(logits, crop_targets(y_valid, feats, task)))


def _rng_states(loader_generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The random states an epoch draws from: torch's (dropout; the device's on CUDA) and the loader's."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "loader": loader_generator.get_state(),
    }


def _readable_state(path: Path | None) -> dict | None:
    """A saved fine-tuning state, or None when there is none or it cannot be read (a damaged state file
    costs the epochs it held, with a warning, not the run)."""
    if path is None or not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        warnings.warn(
            f"{path}: unreadable fine-tuning state ({err}); starting from the first epoch", stacklevel=2
        )
        return None


def _set_rng_states(states: dict[str, Any], loader_generator: torch.Generator, device: torch.device) -> None:
    """Restore what `_rng_states` saved."""
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states["cuda"] is not None:
        torch.cuda.set_rng_state(states["cuda"], device)
    loader_generator.set_state(states["loader"])


def train_end_to_end(
    model: CLMR,
    store,
    train_pos: np.ndarray,
    valid_idx: np.ndarray,
    *,
    lr: float,
    encoder_lr_factor: float,
    max_epochs: int,
    patience: int,
    lr_patience: int,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    device: str,
    num_workers: int,
    progress: bool,
    state_path: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune `model` (encoder + head) in place on one random crop per training track per epoch;
    keeps the weights of the epoch with the lowest validation loss. Returns the training history.

    With `state_path`, the whole training state (weights, optimizer, scheduler, best epoch, RNGs) is
    saved there atomically after every epoch, and a run that finds it continues from it: an
    interrupted fine-tuning resumes to the same result as an uninterrupted one."""
    from clmr.data import LabelledCrops

    task = store.task
    dev = torch.device(device)
    crops = LabelledCrops(store, "train", model.crop_length, seed=seed)
    loader = DataLoader(
        Subset(crops, train_pos.tolist()),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        drop_last=len(train_pos) > batch_size,
    )
    model.to(dev)  # before any optimizer state is loaded: Adam puts its moments where the parameters are
    opt = torch.optim.Adam(
        [
            {"params": model.encoder.parameters(), "lr": lr * encoder_lr_factor},
            {"params": model.head.parameters(), "lr": lr},
        ],
        weight_decay=1e-6,
    )
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=lr_patience)
    criterion = loss_fn(task)
    y_valid = store.targets(valid_idx)
    best, best_epoch, best_state, stale, history = float("inf"), 0, None, 0, []
    saved = _readable_state(state_path)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        best, best_epoch, best_state = saved["best"], saved["best_epoch"], saved["best_state"]
        stale, history = saved["stale"], saved["history"]
        _set_rng_states(saved["rng"], loader.generator, dev)
    with progress_bar("fine-tuning", max_epochs, enabled=progress, unit="epochs") as advance:
        advance(len(history))
        for epoch in range(len(history) + 1, max_epochs + 1):
            if stale >= patience:
                break
            crops.set_epoch(epoch)
            model.train()
            total, seen = 0.0, 0
            for x, y in loader:
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    logits = model.classify(x)
                loss = criterion(logits.float(), y.float() if task == "multilabel" else y.long())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, seen = total + loss.detach() * len(x), seen + len(x)
            valid_loss = _valid_loss(model, store, valid_idx, y_valid, task, eval_batch_size, dev)
            sched.step(valid_loss)
            history.append(
                {"epoch": epoch, "train_loss": float(total) / max(seen, 1), "valid_loss": valid_loss}
            )
            advance(1)
            if valid_loss < best:
                best, best_epoch, stale = valid_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            if state_path is not None:
                state = {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "best": best,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                    "stale": stale,
                    "history": history,
                    "rng": _rng_states(loader.generator, dev),
                }
                with atomic_open(state_path, "wb") as f:
                    torch.save(state, f)
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"epochs": len(history), "best_epoch": best_epoch, "best_valid_loss": best, "history": history}


def _finetune_one(
    model: CLMR, store, splits, train_pos, head: str, names, settings: dict, progress: bool, state_path: Path
):
    """Attach a fresh head, fine-tune (resumable from `state_path`), and test: (metrics, training
    summary, test features)."""
    task = store.task
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings["seed"])
        model.head = Head(head, model.embedding_dim, len(names))
    device = torch.device(settings["device"])
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings["seed"])  # dropout draws are fixed by the seed too
        summary = train_end_to_end(
            model, store, train_pos, splits.valid, progress=progress, state_path=state_path, **settings
        )
    model.eval()
    test = extract(
        model, store, splits.test, batch_size=settings["eval_batch_size"], device=settings["device"]
    )
    metrics = metrics_for(task, store.targets(splits.test), predict(model.head.cpu(), test, task), names)
    return metrics, summary, test


def finetune(
    checkpoint,
    store,
    out_dir: str | Path,
    *,
    head: str = "linear",
    label_fraction: float = 1.0,
    baseline: str | None = None,
    lr: float = 1e-3,
    encoder_lr_factor: float = 0.1,
    max_epochs: int = 200,
    patience: int = 10,
    lr_patience: int = 5,
    batch_size: int = 48,
    eval_batch_size: int = 64,
    seed: int = 42,
    device: str = "cpu",
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune a checkpoint's encoder with a new head on `store`'s labels; writes OUT/model.safetensors
    (encoder + head + tag names), report.json, report.md and plots; returns the report dict.
    `baseline="random"` also trains the same architecture from a random initialisation (supervised).
    Each run's training state is saved after every epoch to OUT/.finetune-{checkpoint,baseline}-KEY.pt
    (KEY: checkpoint, store and options), so rerunning an interrupted call resumes; the files are removed
    once the report is written."""
    check_choices(head, baseline)
    check_device(device)
    check_fractions([label_fraction])
    check_seeds([seed])
    seed = int(seed)
    check_positive(max_epochs=max_epochs, patience=patience, eval_batch_size=eval_batch_size)
    if batch_size < 2:
        raise EvaluationError(
            f"--batch-size must be at least 2 (BatchNorm trains on batches), got {batch_size}"
        )
    if encoder_lr_factor < 0 or lr <= 0:
        raise EvaluationError(
            f"--lr must be positive and --encoder-lr-factor >= 0, got {lr} and {encoder_lr_factor}"
        )
    if num_workers < 0:
        raise EvaluationError(f"--workers must be >= 0, got {num_workers}")
    inputs = prepare(checkpoint, store, out_dir)
    store, splits, out, ckpt_info = inputs.store, inputs.splits, inputs.out, inputs.checkpoint
    task, names = inputs.task, inputs.names
    # positions of the (kept) train tracks within the store's train split, then the label fraction
    train_split = store.split_indices("train")
    positions = np.searchsorted(train_split, splits.train)
    train_pos = positions[select_fraction(store.targets(splits.train), label_fraction, seed)]
    if len(train_pos) < 2:
        raise EvaluationError(
            f"{store_path(store)}: --label-fraction {label_fraction} leaves "
            f"{len(train_pos)} training track; fine-tuning needs at least 2 (BatchNorm trains on batches)"
        )
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(
        lr=lr,
        encoder_lr_factor=encoder_lr_factor,
        max_epochs=max_epochs,
        patience=patience,
        lr_patience=lr_patience,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
        device=device,
        num_workers=num_workers,
    )
    # training state of each run in progress, named by everything that shapes it: a rerun of the same
    # command resumes; a changed option starts afresh
    shaping = {k: v for k, v in settings.items() if k != "num_workers"}  # workers do not change the result
    identity = [ckpt_info["sha256"], store_fingerprint(store), head, label_fraction, shaping]
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    states = {run: out / f".finetune-{run}-{key}.pt" for run in ("checkpoint", "baseline")}
    model = inputs.model
    tuned = CLMR(model.encoder, head=None, sample_rate=model.sample_rate)
    metrics, summary, test = _finetune_one(
        tuned, store, splits, train_pos, head, names, settings, progress, states["checkpoint"]
    )
    report: dict[str, Any] = {
        "mode": "finetune",
        "task": task,
        **headline(task, metrics),
        "training": {k: summary[k] for k in ("epochs", "best_epoch", "best_valid_loss")},
        "history": summary["history"],
        "checkpoint": ckpt_info,
        "store": store_identity(store, splits),
        "config": {
            "head": head,
            "label_fraction": label_fraction,
            "n_train_tracks": len(train_pos),
            "seeds": [seed],
            "baseline": baseline,
            "protocol": PROTOCOL,
            **settings,
        },
    }
    if baseline == "random":
        rand = random_init_like(model, seed)
        base_metrics, base_summary, _ = _finetune_one(
            rand, store, splits, train_pos, head, names, settings, progress, states["baseline"]
        )
        report["baseline"] = {
            "kind": "random",
            **headline(task, base_metrics),
            "training": {k: base_summary[k] for k in ("epochs", "best_epoch", "best_valid_loss")},
        }
    tuned.tags, tuned.task = names, task
    tuned.meta = model_meta(report, "finetuned_from")
    save_model(tuned.cpu(), out / "model.safetensors")
    report["model_path"] = "model.safetensors"
    report["plots"] = write_plots(report, test, store.targets(splits.test), names, out)
    write_report(report, out)
    for state in out.glob(
        ".finetune-*.pt"
    ):  # this run's, and any left by an interrupted run with other options
        state.unlink(missing_ok=True)
    return report
