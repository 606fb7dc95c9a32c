"""`finetune`: train encoder and head end to end on a store's labels (encoder at a lower learning rate)
with the training engine (`clmr.train.engine`): early stopping on the validation loss, the best epoch's
weights kept, resumable; then the same song-level test and report as `evaluate`."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from clmr.config import Config, load_config
from clmr.evaluate.features import extract, store_fingerprint
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
    store_path,
)
from clmr.evaluate.metrics import metrics_for
from clmr.evaluate.probe import predict
from clmr.evaluate.report import headline, model_meta, write_report
from clmr.evaluate.run import PROTOCOL, random_init_like, write_plots
from clmr.evaluate.selection import fraction_pool, select_fraction
from clmr.models import CLMR, Head, save_model
from clmr.presets import FINETUNE
from clmr.train.metrics import label_loss


class FinetuneModule(nn.Module):
    """Encoder + head, trained on one random crop per track per epoch and validated on every consecutive
    crop of the valid tracks (the crops `clmr evaluate` tests on); the encoder's learning rate is the
    head's times `encoder_lr_factor`."""

    def __init__(self, model: CLMR, task: str, tags: list[str], config: Config, encoder_lr_factor: float):
        super().__init__()
        self.encoder, self.head = model.encoder, model.head
        self.task, self.tags, self.sample_rate = task, tags, model.sample_rate
        self.lr, self.encoder_lr_factor = config.optim.lr, encoder_lr_factor

    def training_step(self, batch, step: int, rank: int):
        """The label loss of one random crop per track."""
        loss = label_loss(self.head(self.encoder(batch[0])), batch[1], self.task)
        return loss, {"train/loss": loss.detach()}

    def validation_step(self, batch, index: int, rank: int):
        """The label loss of a batch of song-level crops (no probe metric)."""
        return label_loss(self.head(self.encoder(batch[0])), batch[1], self.task), None, None

    def param_groups(self) -> list[dict[str, Any]]:
        """The encoder at lr x encoder_lr_factor, the head at lr."""
        return [
            {"params": list(self.encoder.parameters()), "lr": self.lr * self.encoder_lr_factor},
            {"params": list(self.head.parameters()), "lr": self.lr},
        ]

    def export(self, meta: dict[str, Any]) -> CLMR:
        """Encoder + head with the tag names (`finetune` writes the report's meta into the final model)."""
        return CLMR(
            self.encoder, head=self.head, sample_rate=self.sample_rate, tags=self.tags, task=self.task
        )


class SongCrops(Dataset):
    """(crop, target) for every consecutive non-overlapping crop of tracks `indices` (the remainder
    dropped; a track shorter than a crop gives one zero-padded crop), as `extract` cuts them."""

    def __init__(self, store, indices: np.ndarray, crop_length: int) -> None:
        counts = np.maximum(store.lengths[indices] // crop_length, 1)
        self.track = np.repeat(np.asarray(indices), counts)
        self.start = (
            np.arange(len(self.track)) - np.repeat(np.cumsum(counts) - counts, counts)
        ) * crop_length
        self.targets = torch.as_tensor(store.targets(self.track))
        self.store, self.crop_length = store, crop_length

    def __len__(self) -> int:
        return len(self.track)

    def __getitem__(self, k: int):
        crop = self.store.crop(int(self.track[k]), int(self.start[k]), self.crop_length)
        return torch.from_numpy(crop), self.targets[k]


def _readable_state(path: Path) -> Path | None:
    """The saved fine-tuning state to resume from, or None when there is none or it cannot be read (a
    damaged state file costs the epochs it held, with a warning, not the run)."""
    from clmr.train.run import RunDirError, read_checkpoint

    if not path.is_file():
        return None
    try:
        read_checkpoint(path)
    except RunDirError as err:
        warnings.warn(f"unreadable fine-tuning state ({err}); starting from the first epoch", stacklevel=2)
        return None
    return path


def train_end_to_end(
    model: CLMR,
    store,
    train_pos: np.ndarray,
    valid_idx: np.ndarray,
    *,
    config: Config,
    encoder_lr_factor: float,
    eval_batch_size: int,
    device: torch.device,
    progress: bool,
    state_dir: Path,
) -> dict[str, Any]:
    """Fine-tune `model` (encoder + head) in place with the engine; keeps the weights of the epoch with
    the lowest validation loss. The engine's state is saved in `state_dir` after every epoch, and a run
    that finds it continues from it: an interrupted fine-tuning resumes to the uninterrupted result."""
    from clmr.data import LabelledCrops
    from clmr.train.data import EpochSampler, KeyedView
    from clmr.train.engine import CHECKPOINTS, Engine
    from clmr.train.logs import RunLog
    from clmr.train.run import make_fabric

    fabric = make_fabric(config)
    module = FinetuneModule(model, store.task, model.tags, config, encoder_lr_factor)
    engine = Engine(fabric, module, config, state_dir, {}, display="live" if progress else "off")
    resume = _readable_state(state_dir / CHECKPOINTS / "last.ckpt")
    if resume is not None:
        engine.restore(resume)
    crops = LabelledCrops(store, "train", model.crop_length, seed=config.seed)
    sampler = EpochSampler(len(train_pos), config.seed, shuffle=True)
    train = DataLoader(
        KeyedView(crops, index=train_pos),
        batch_size=min(config.batch_size, len(train_pos)),
        sampler=sampler,
        drop_last=len(train_pos) > config.batch_size,
        num_workers=config.trainer.num_workers,
    )
    valid = DataLoader(SongCrops(store, valid_idx, model.crop_length), batch_size=eval_batch_size)
    engine.fit(train, valid, RunLog(state_dir, None, enabled=False))
    best = state_dir / CHECKPOINTS / "best.ckpt"
    if best.is_file():
        module.load_state_dict(torch.load(best, map_location=device, weights_only=True)["model"])
    stopping = engine.state["stopping"]
    history = [
        {"epoch": row["epoch"] + 1, "train_loss": row["train/loss"], "valid_loss": row["valid/loss"]}
        for row in engine.state["history"]
    ]
    return {
        "epochs": len(history),
        "best_epoch": stopping.best_epoch + 1,
        "best_valid_loss": stopping.best,
        "history": history,
    }


def _finetune_one(
    model: CLMR, store, splits, train_pos, head: str, names, settings: dict, progress: bool, state_dir: Path
):
    """Attach a fresh head, fine-tune (resumable from `state_dir`), and test: (metrics, training summary,
    test features)."""
    task, seed = store.task, settings["seed"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.head = Head(head, model.embedding_dim, len(names))
    model.tags, model.task = names, task
    arch = model.encoder.architecture()
    config = load_config(
        recipe=FINETUNE,
        overrides={
            "seed": seed,
            "sample_rate": model.sample_rate,
            "batch_size": settings["batch_size"],
            "model.width": arch["width"],
            "model.n_blocks": arch["n_blocks"],
            "optim.lr": settings["lr"],
            "optim.plateau_patience": settings["lr_patience"],
            "trainer.max_epochs": settings["max_epochs"],
            "trainer.early_stopping_patience": settings["patience"],
            "trainer.num_workers": settings["num_workers"],
        },
    )
    device = settings["device"]  # resolved once, by `finetune`
    config.trainer.accelerator = device.type
    config.trainer.devices = f"{device.index}," if device.index is not None else 1
    config.trainer.precision = "bf16-mixed" if device.type == "cuda" else "32-true"
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        summary = train_end_to_end(
            model,
            store,
            train_pos,
            splits.valid,
            config=config,
            encoder_lr_factor=settings["encoder_lr_factor"],
            eval_batch_size=settings["eval_batch_size"],
            device=device,
            progress=progress,
            state_dir=state_dir,
        )
    model.eval()
    test = extract(model, store, splits.test, batch_size=settings["eval_batch_size"], device=device)
    metrics = metrics_for(task, store.targets(splits.test), predict(model.head.cpu(), test, task), names)
    return metrics, summary, test


def finetune(
    checkpoint,
    store,
    out_dir: str | Path,
    *,
    head: str = "linear",
    label_fraction: float = 1.0,
    fraction_of: str = "dataset",
    baseline: str | None = None,
    lr: float | None = None,
    encoder_lr_factor: float = 0.1,
    max_epochs: int | None = None,
    patience: int | None = None,
    lr_patience: int | None = None,
    batch_size: int | None = None,
    eval_batch_size: int = 64,
    seed: int | None = None,
    device: str | torch.device = "auto",
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune a checkpoint's encoder with a new head on `store`'s labels; writes OUT/model.safetensors
    (encoder + head + tag names), report.json, report.md and plots; returns the report dict. Options left
    None take the `clmr.config.FINETUNE` recipe's value. `baseline="random"` also trains the same
    architecture from a random initialisation (supervised). `label_fraction` is of every labelled track
    (`fraction_of="dataset"`, the paper's count) or of the training tracks ("train"), drawn from the
    training tracks by `clmr.evaluate.selection` as `evaluate` draws it. `device`: `auto` (the best this
    machine has) or a name. Each run's training state is saved after every epoch under
    OUT/.finetune-{checkpoint,baseline}-KEY/ (KEY: checkpoint, store and options), so rerunning an
    interrupted call resumes; the folders are removed once the report is written."""
    recipe = load_config(recipe=FINETUNE)
    lr = recipe.optim.lr if lr is None else lr
    max_epochs = recipe.trainer.max_epochs if max_epochs is None else max_epochs
    patience = recipe.trainer.early_stopping_patience if patience is None else patience
    lr_patience = recipe.optim.plateau_patience if lr_patience is None else lr_patience
    batch_size = recipe.batch_size if batch_size is None else batch_size
    seed = recipe.seed if seed is None else seed
    num_workers = recipe.trainer.num_workers if num_workers is None else num_workers
    check_choices(head, baseline)
    device = check_device(device)
    check_fractions([label_fraction])
    check_fraction_of(fraction_of)
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
    # positions of the (kept) train tracks within the store's train split, then the label fraction,
    # drawn as `evaluate` draws it
    train_split = store.split_indices("train")
    positions = np.searchsorted(train_split, splits.train)
    n_labelled = len(splits.train) + len(splits.valid) + len(splits.test)
    pool = fraction_pool(fraction_of, len(splits.train), n_labelled)
    train_pos = positions[select_fraction(store.targets(splits.train), label_fraction, seed, pool=pool)]
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
    identity = [ckpt_info["sha256"], store_fingerprint(store), head, label_fraction, fraction_of, shaping]
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    states = {run: out / f".finetune-{run}-{key}" for run in ("checkpoint", "baseline")}
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
            "fraction_of": fraction_of,
            "fraction_pool": pool,
            "n_train_tracks": len(train_pos),
            "seeds": [seed],
            "baseline": baseline,
            "protocol": PROTOCOL,
            **settings,
            "device": str(device),
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
    for state in out.glob(".finetune-*"):  # this run's, and any left by an interrupted run with other options
        shutil.rmtree(state, ignore_errors=True)
    return report
