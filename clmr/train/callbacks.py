"""Training callbacks: throughput and data-wait logging, export of the model at each checkpoint,
plain progress lines off a terminal, an in-memory per-epoch history, and the checkpoint and
time-limit pieces that make a stopped run resume where it stopped."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, Timer

from clmr.models import save_model


def _scalar(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


class Throughput(Callback):
    """Logs pairs (or examples) per second over all ranks and the time spent waiting for data: the gap
    between one step's end and the next step's start (fetching, collating and moving the batch).
    Per step and per epoch in the logs; `pairs_per_s` and `wait_share` cover the whole run (this
    process's session), so a short last epoch (a time limit) does not stand for it."""

    def __init__(self) -> None:
        self.epoch = {"wait": 0.0, "busy": 0.0, "items": 0}
        self.run = {"wait": 0.0, "busy": 0.0, "items": 0}
        self._last_end = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed in the middle of an epoch starts without `on_train_epoch_start`
        self._last_end = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch = {"wait": 0.0, "busy": 0.0, "items": 0}
        self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._start = time.perf_counter()
        self._wait = self._start - self._last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        n = batch[0].shape[0] * trainer.world_size
        for totals in (self.epoch, self.run):
            totals["wait"] += self._wait
            totals["busy"] += now - self._start
            totals["items"] += n
        pl_module.log("perf/pairs_per_s", n / max(now - self._last_end, 1e-9), on_step=True, on_epoch=False)
        pl_module.log("perf/data_wait_s", self._wait, on_step=True, on_epoch=False)
        self._last_end = now

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = self.epoch["wait"] + self.epoch["busy"]
        if total > 0:
            pl_module.log("perf/epoch_pairs_per_s", self.epoch["items"] / total)
            pl_module.log("perf/data_wait_share", self.epoch["wait"] / total)

    @property
    def pairs_per_s(self) -> float:
        """Throughput over the run's training steps."""
        total = self.run["wait"] + self.run["busy"]
        return self.run["items"] / total if total else math.nan

    @property
    def wait_share(self) -> float:
        """Share of the run's step time spent waiting for data."""
        total = self.run["wait"] + self.run["busy"]
        return self.run["wait"] / total if total else math.nan


class ExportModel(Callback):
    """Writes the model in our format (atomically) after every validation, i.e. at every checkpoint, and at
    the end of training. `meta` (store path, dataset) is added to the module's own training facts."""

    def __init__(self, path: str | Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = Path(path), meta

    def _export(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            save_model(pl_module.export(self.meta), self.path)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._export(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._export(trainer, pl_module)


class FlushLogs(Callback):
    """Writes the loggers' buffered values (the CSV log keeps up to 100 steps in memory) after every
    validation, i.e. with every checkpoint, and at each epoch start (the previous epoch's train-loss
    row is logged after its checkpoint), so that a run killed later keeps its log up to there."""

    def _flush(self, trainer: L.Trainer) -> None:
        if not trainer.sanity_checking:
            for logger in trainer.loggers:
                logger.save()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)


class History(Callback):
    """Per-epoch metrics (train loss, valid loss, probe metric, throughput) as a list of dicts."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not epoch_finished(trainer):  # a stop mid-epoch: the epoch ends in the resumed run
            return
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, value in trainer.callback_metrics.items():
            if key.endswith("_step"):
                continue
            row[key.removesuffix("_epoch")] = _scalar(value)
        self.epochs.append(row)


class PlainProgress(Callback):
    """Progress as plain lines (for CI and SLURM logs, where a live bar would be noise): every
    `every` steps and at the end of each epoch, on rank 0 only."""

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not trainer.is_global_zero or trainer.global_step % self.every:
            return
        m = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch}", f"step {trainer.global_step}"]
        if "train/loss_step" in m:
            parts.append(f"loss {_scalar(m['train/loss_step']):.4f}")
        if "perf/pairs_per_s" in m:
            parts.append(f"{_scalar(m['perf/pairs_per_s']):.1f} pairs/s")
        parts.append(f"{time.perf_counter() - self._t0:.0f} s")
        print("  ".join(parts), flush=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not epoch_finished(trainer):
            return
        m = trainer.callback_metrics
        shown = [
            f"{k} {_scalar(v):.4f}" for k, v in sorted(m.items()) if k.endswith("_epoch") or "valid/" in k
        ]
        print(f"epoch {trainer.current_epoch} done  " + "  ".join(shown), flush=True)


def epoch_finished(trainer: L.Trainer) -> bool:
    """Whether the training epoch ending now ran all its batches (not stopped by --max-time/--max-steps)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed >= trainer.num_training_batches


class PeriodicCheckpoint(ModelCheckpoint):
    """The `epochNNNN.ckpt` kept every `every_n_epochs` epochs, of finished epochs only (a run stopped in
    the middle of an epoch writes it when the resumed run finishes the epoch). Lightning keys a
    ModelCheckpoint's state by its class and trigger settings only, so with every epoch this one would
    have the key of the `last.ckpt` one (and Lightning refuses the pair); its own class gives it its
    own key."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if epoch_finished(trainer):
            super().on_train_epoch_end(trainer, pl_module)


class SessionTimer(Timer):
    """`--max-time` for this invocation: the time budget starts afresh at every (resumed) start, so the
    same command with `--resume` in each job slot trains for the slot's time. Lightning's own Timer
    restores the time already spent from the checkpoint and would stop a resumed run at once."""

    def state_dict(self) -> dict[str, Any]:
        return {}


def max_time_timer(max_time: str) -> SessionTimer:
    """A step-level SessionTimer for a `DD:HH:MM:SS` limit (fields of one or two digits)."""
    days, hours, minutes, seconds = (int(part) for part in max_time.strip().split(":"))
    return SessionTimer(
        duration=timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds), interval="step"
    )


class MidEpochResume(Callback):
    """Makes a checkpoint saved by a stop in the middle of an epoch (`--max-time`, `--max-steps`) resume
    in the middle of that epoch.

    Lightning saves such a stop like a finished epoch (the epoch-end hooks ran, checkpoints included),
    so on resume it would either skip the rest of the epoch or run it under the next epoch's number.
    When the checkpoint is loaded, the loop state is set back to "in the middle of the epoch": Lightning
    then runs the epoch's remaining batches under its own number, and the training sampler
    (`clmr.train.data.EpochSampler`) skips the batches already trained on. A checkpoint of a finished
    epoch is set to "before the next epoch", which is where Lightning resumes it without `--max-steps`
    and where, with it, it would otherwise run an empty epoch and shift the epoch numbers by one."""

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        fit = checkpoint.get("loops", {}).get("fit_loop")
        try:
            epochs = fit["epoch_progress"]
            batches = fit["epoch_loop.batch_progress"]
            ended = all(
                epochs[part]["ready"] == epochs[part]["started"] == epochs[part]["processed"]
                and epochs[part]["completed"] == epochs[part]["processed"] - 1
                for part in ("total", "current")
            )
            done = batches["current"]["completed"]
            last = bool(batches["is_last_batch"])
        except (KeyError, TypeError):  # another layout (another Lightning): left as it is
            return
        if not ended:  # saved elsewhere than at the end of a training epoch
            return
        if not last and done > 0:  # stopped after `done` batches of the epoch
            for part in ("total", "current"):
                epochs[part]["processed"] -= 1
        elif last:
            for part in ("total", "current"):
                epochs[part]["completed"] = epochs[part]["processed"]
            batches["current"] = {key: 0 for key in batches["current"]}
            batches["is_last_batch"] = False
