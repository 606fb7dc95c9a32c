"""The training engine: Lightning Fabric for devices, DDP, precision and checkpoint I/O, and a loop of our
own (in the litgpt `pretrain.py` style) that owns the step and epoch counters, the position inside an
epoch, validation, checkpoints, early stopping and the logs. The limits and cadences it checks are
`clmr.train.limits`, the figures it shows on the progress display `clmr.train.status`.

The whole training state is one dict (`Engine.state`): the module, the optimizer, the plateau schedule,
the early-stopping state, `epoch` (epochs finished), `step` (optimizer steps), `batch` (batches done in
the current epoch), the running sums of the epoch's logged values, the best valid loss, every
validation, the time spent (a --max-time budget resumes), the batch layout, and `clmr_config` (the
exported model's JSON config, so `clmr.load_model` reads a checkpoint). It is written with `fabric.save` (to a temporary file, synced, then renamed) and read back with
`fabric.load`; a resumed epoch skips the batches already trained on.

Randomness is keyed, not carried: the global torch generator (dropout) is reseeded from (seed, rank,
epoch, step) before every step and the augmentations draw from (seed, rank, step), so a run resumed
from any checkpoint replays the draws of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from clmr.config import Config, val_every
from clmr.files import atomic_path
from clmr.models import save_model
from clmr.progress import progress_bar
from clmr.train.limits import Limits
from clmr.train.metrics import metric_name, probe_metric
from clmr.train.modules import build_optimizer, mix_seed
from clmr.train.speed import StepValues
from clmr.train.status import status_line, time_left_text
from clmr.train.stopping import EarlyStopping

if TYPE_CHECKING:
    from lightning import Fabric
    from torch import nn
    from torch.utils.data import DataLoader

    from clmr.train.logs import RunLog

CHECKPOINTS = "checkpoints"
MODEL_FILE = "model.safetensors"


class Engine:
    """Trains `module` (a `clmr.train.modules` objective) with `fabric` into `run_dir`.

    `display` is `live` or `lines` (the run's progress through `clmr.progress`: a bar with an ETA on a
    terminal, plain lines in a log; a line per validation on stdout) or `off`; `label` names the run there.
    `hooks` are objects with any of `on_train_epoch_start(engine)`, `on_train_batch_start(engine)` and
    `on_train_batch_end(engine, batch)`, called on every rank (tests and benchmarks use them).
    """

    def __init__(
        self,
        fabric: Fabric,
        module: nn.Module,
        config: Config,
        run_dir: Path,
        meta: dict,
        *,
        display: str,
        hooks: list | tuple = (),
        label: str = "training",
    ) -> None:
        self.fabric, self.config, self.run_dir, self.meta = fabric, config, run_dir, meta
        self.shown, self.hooks, self.label = display in ("live", "lines"), list(hooks), label
        self.module = module
        self.model = fabric.setup_module(module)
        for method in ("training_step", "validation_step"):
            self.model.mark_forward_method(method)
        optimizer, scheduler = build_optimizer(module, config)
        self.optimizer = fabric.setup_optimizers(optimizer)
        patience = config.trainer.early_stopping_patience
        self.state: dict[str, Any] = {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": scheduler,
            "stopping": EarlyStopping(patience) if patience else None,
            "epoch": 0,
            "step": 0,
            "batch": 0,
            "totals": {},
            "best_valid_loss": math.inf,
            "valid": {},
            "valid_step": 0,  # the step and epoch count at the last validation (its cadence resumes)
            "valid_epoch": 0,
            "validations": [],  # one row per validation: epoch, step and the valid values
            "time_spent": 0.0,  # seconds of the run's training loops, for a --max-time over resumes
            "history": [],
            "layout": {"batch_size": config.batch_size, "world_size": fabric.world_size},
        }
        self.run_totals = {"wait": 0.0, "busy": 0.0, "items": 0, "valid": 0.0}
        self.values = StepValues()  # the steps' values on the device, read once per log interval

    # -- checkpoints -------------------------------------------------------------------------------
    def restore(self, path: Path) -> None:
        """Load the whole training state from a checkpoint (checked by `clmr.train.run` beforehand)."""
        layout = dict(self.state["layout"])
        self.fabric.load(path, self.state, strict=False, weights_only=True)
        self.state["layout"] = layout

    def save(self, *also: str) -> None:
        """Write `last.ckpt` (and copies named `also`), flush the logs and export model.safetensors."""
        self._read_values()  # a non-finite loss of any step since the last read stops before the write
        folder = self.run_dir / CHECKPOINTS
        self.last_save = (self.state["epoch"], self.state["step"], self.limits.now())
        self.state["time_spent"] = self.limits.spent()
        exported = self.module.export(self._export_meta())
        self.state["clmr_config"] = json.dumps(exported.config(), default=str)
        if not self.fabric.is_global_zero:
            self.fabric.save(folder / "last.ckpt", self.state)  # only rank 0 writes; all ranks meet
            return
        self.log.flush()  # first: a resume drops the rows logged after its checkpoint, never misses one
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "last.ckpt") as tmp:
            self.fabric.save(tmp, self.state)
        for name in also:
            with atomic_path(folder / name) as tmp:
                shutil.copyfile(folder / "last.ckpt", tmp)
        save_model(exported, self.run_dir / MODEL_FILE)

    def _export_meta(self) -> dict[str, Any]:
        valid = self.state["valid"]
        return {
            "epoch": self.state["epoch"],
            "step": self.state["step"],
            "valid_loss": valid.get("valid/loss"),
            "metrics": valid,
            "preset": self.config.preset,
            "train_config": self.config.to_dict(),
            **self.meta,
        }

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self, train_loader: DataLoader, valid_loader: DataLoader, log: RunLog) -> None:
        """Train until max_epochs, max_steps, max_time or early stopping; checkpoint by
        `trainer.save_every` (and with every named copy) and always at the stop."""
        self.limits = limits = Limits(
            self.config.trainer, self.fabric, self.state["time_spent"], self.state["step"]
        )
        reason = limits.stop_reason(self.state) if self.state["step"] else None
        if reason is not None and self.shown and self.fabric.is_global_zero:
            hint = "pass a larger one to continue it"
            print(f"{self.label}: nothing to train: the run has reached {reason}; {hint}", file=sys.stderr)
        self.log, self.started, self.first_epoch = log, limits.started, self.state["epoch"]
        self.first_step = self.state["step"]
        self.last_validation = self.started  # a time cadence counts from the start of each invocation
        unit, amount = val_every(self.config.trainer.val_every)
        self.val_steps = int(amount) if unit == "steps" else None  # validated inside epochs too
        self.last_save = (self.state["epoch"], self.state["step"], self.started)
        # the loaders stay ours (batches are moved with `fabric.to_device`): Fabric's wrapper would set
        # the sampler's epoch to its own count of passes, which a resumed run does not share
        sampler, batch_size, n_batches = train_loader.sampler, train_loader.batch_size, len(train_loader)
        with progress_bar(
            self.label,
            limits.total_steps(self.state, n_batches),
            enabled=self.shown and self.fabric.is_global_zero,
            completed=self.state["step"],
            unit="steps",
            status=self._status,
            remaining=lambda: time_left_text(limits.ending(self.state, n_batches)),
        ) as self.advance:
            while not limits.reached(self.state["step"]) and limits.epochs_left(self.state["epoch"]):
                epoch, done = self.state["epoch"], self.state["batch"]
                sampler.set_epoch(epoch)
                if done:
                    sampler.resume(epoch, done * batch_size)
                self._call("on_train_epoch_start")
                stopped = self._train_epoch(train_loader, valid_loader, epoch, n_batches)
                if not stopped:
                    self._end_epoch(valid_loader, epoch)
                    stopping = self.state["stopping"]
                    if stopping is not None and stopping.should_stop:
                        break
                else:
                    break
            if self.last_save[:2] != (self.state["epoch"], self.state["step"]):
                self.save()  # the state the run stops in (in the middle of an epoch: resumed there)
        self.wall = limits.now() - self.started

    def _status(self) -> str:
        """The progress display's own figures (`clmr.train.status`)."""
        if self.values.due_for_display():
            self._read_values()
        loss = getattr(self, "last_loss", None)
        return status_line(self.state["epoch"], self.config.trainer.max_epochs, loss, self.run_totals)

    def _call(self, hook: str, *args) -> None:
        for h in self.hooks:
            if hasattr(h, hook):
                getattr(h, hook)(self, *args)

    def _train_epoch(self, loader, valid_loader, epoch: int, n_batches: int) -> bool:
        """Train the epoch's remaining batches; True if a limit or early stopping ended it early."""
        state, fabric, every = self.state, self.fabric, self.config.trainer.log_every_n_steps
        world = fabric.world_size
        self.model.train()
        timing = {"wait": 0.0, "busy": 0.0, "items": 0}
        since_log = {"wait": 0.0, "busy": 0.0, "items": 0}  # the steps since the last log row
        last_end = time.perf_counter()
        for batch in loader:
            batch = fabric.to_device(batch)
            start = time.perf_counter()
            self._call("on_train_batch_start")
            torch.manual_seed(mix_seed(self.config.seed, fabric.global_rank, epoch, state["step"]))
            with fabric.autocast():
                loss, values = self.model.training_step(batch, state["step"], fabric.global_rank)
            self.values.add(state["step"], epoch, loss, values)  # checked when read (no wait here)
            fabric.backward(loss)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch"] += 1
            numbers = self._read_values() if state["step"] % every == 0 else None  # waits for the device
            now = time.perf_counter()
            items = batch[0].shape[0] * world
            for totals in (timing, self.run_totals, since_log):
                totals["wait"] += start - last_end
                totals["busy"] += now - start
                totals["items"] += items
            self._call("on_train_batch_end", batch)
            if numbers is not None:
                spent = since_log["wait"] + since_log["busy"]
                self._log_step(numbers, since_log["items"] / max(spent, 1e-9), start - last_end)
                since_log = dict.fromkeys(since_log, 0)
            self.advance(1)
            if state["batch"] < n_batches and self._validate_in_epoch(valid_loader, epoch):
                return True  # early stopping
            last_end = time.perf_counter()
            if self.limits.reached(state["step"]) and state["batch"] < n_batches:
                return True
        self._read_values()  # the epoch's totals are complete before the epoch ends
        total = timing["wait"] + timing["busy"]
        if total > 0:
            self.epoch_perf = {
                "perf/epoch_pairs_per_s": timing["items"] / total,
                "perf/data_wait_share": timing["wait"] / total,
            }
        return False

    def _read_values(self) -> dict[str, float] | None:
        """The pending steps' values, read in one transfer, into the epoch's totals and the shown loss (the
        last step's, or None); a non-finite loss stops here, and every save reads first."""
        numbers = None
        for numbers in self.values.read():
            for name, value in numbers.items():
                self.state["totals"][name] = self.state["totals"].get(name, 0.0) + value
            self.last_loss = numbers["train/loss"]
        return numbers

    def _log_step(self, numbers: dict[str, float], pairs_per_s: float, wait: float) -> None:
        state = self.state
        lrs = {f"lr/pg{i}": group["lr"] for i, group in enumerate(self.optimizer.param_groups)}
        values = {
            **{f"{k}_step": v for k, v in numbers.items()},
            **lrs,
            "perf/pairs_per_s": pairs_per_s,
            "perf/data_wait_s": wait,
            "epoch": state["epoch"],
        }
        if self.fabric.is_global_zero:
            self.log.log(values, state["step"])

    def _validation_due(self, epoch: int) -> bool:
        """Whether the epoch that just ended validates: by `trainer.val_every`, and always at the last
        epoch or step the run is set to reach, so the exported model carries its final valid metrics."""
        t, state = self.config.trainer, self.state
        last = (t.max_epochs != -1 and epoch + 1 >= t.max_epochs) or (
            t.max_steps != -1 and state["step"] >= t.max_steps
        )
        since = (state["valid_epoch"], state["valid_step"], self.last_validation)
        return last or self.limits.due(t.val_every, epoch, state["step"], since)

    def _validate_and_track(self, valid_loader, epoch: int) -> tuple[dict[str, float], list[str]]:
        """Validate during or at the end of `epoch`, then step the plateau schedule and early stopping;
        returns the values and the checkpoint copy a lowest loss calls for (`best.ckpt`)."""
        state = self.state
        started = time.perf_counter()
        valid = self.validate(valid_loader)
        self.run_totals["valid"] += time.perf_counter() - started
        self.last_validation = self.limits.now()
        state.update(valid=valid, valid_step=state["step"], valid_epoch=state["epoch"])
        state["validations"].append({"epoch": epoch, "step": state["step"], **valid})
        loss = valid["valid/loss"]
        if state["scheduler"] is not None:
            state["scheduler"].step(loss)
        if state["stopping"] is not None:
            state["stopping"].update(loss, epoch)
        if loss >= state["best_valid_loss"]:
            return valid, []
        state["best_valid_loss"] = loss
        return valid, ["best.ckpt"]

    def _validate_in_epoch(self, valid_loader, epoch: int) -> bool:
        """`--val-every Nsteps` inside an epoch: validate once N steps have passed since the last
        validation, log the values at this step, write best.ckpt on a lowest loss; True if early
        stopping says stop. (At an epoch's last step the epoch's end validates.)"""
        state, t = self.state, self.config.trainer
        if self.val_steps is None or state["step"] - state["valid_step"] < self.val_steps:
            return False
        valid, best = self._validate_and_track(valid_loader, epoch)
        if self.fabric.is_global_zero:
            self.log.log({**valid, "epoch": epoch}, state["step"])
            if self.shown:
                of = f"/{t.max_epochs}" if t.max_epochs != -1 else ""
                shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(valid.items()))
                print(f"step {state['step']} (epoch {epoch + 1}{of})  {shown}", flush=True)
        if best:
            self.save(*best)
        return state["stopping"] is not None and state["stopping"].should_stop

    def _end_epoch(self, valid_loader, epoch: int) -> None:
        """Validate when due (then step the schedule and early stopping), log the epoch and checkpoint."""
        state = self.state
        steps = max(state["batch"], 1)
        row = {name: value / steps for name, value in state["totals"].items()}
        row.update(getattr(self, "epoch_perf", {}))
        validated = self._validation_due(epoch)
        state.update(epoch=epoch + 1, batch=0, totals={})
        also = []
        every = self.config.trainer.checkpoint_every
        if every and (epoch + 1) % every == 0:
            also.append(f"epoch{epoch:04d}.ckpt")
        if validated:
            valid, best = self._validate_and_track(valid_loader, epoch)
            row.update(valid)
            also += best
        named = {f"{k}_epoch" if k.startswith("train/") else k: v for k, v in row.items()}
        if self.fabric.is_global_zero:
            self.log.log({**named, "epoch": epoch}, state["step"])
        state["history"].append({"epoch": epoch, "step": state["step"], **row})
        if also or self.limits.due(self.config.trainer.save_every, epoch, state["step"], self.last_save):
            self.save(*also)
        if self.fabric.is_global_zero and self.shown and validated:
            of = f"/{self.config.trainer.max_epochs}" if self.config.trainer.max_epochs != -1 else ""
            shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(named.items()))
            print(f"epoch {epoch + 1}{of} done  {shown}", flush=True)

    @torch.no_grad()
    def validate(self, loader: DataLoader) -> dict[str, float]:
        """Valid loss (mean over the global valid split) and, with labels, the probe metric."""
        fabric, rank = self.fabric, self.fabric.global_rank
        self.model.eval()
        total = torch.zeros((), device=fabric.device)
        count, logits, targets = 0, [], []
        for index, batch in enumerate(loader):
            batch = fabric.to_device(batch)
            with fabric.autocast():
                loss, out, y = self.model.validation_step(batch, index, rank)
            total += loss.float() * len(batch[0])
            count += len(batch[0])
            if out is not None:
                logits.append(out.float())
                targets.append(y)
        mean = fabric.all_reduce(total / max(count, 1), reduce_op="mean")
        values = {"valid/loss": float(mean)}
        if logits:
            out, y = torch.cat(logits), torch.cat(targets)
            if fabric.world_size > 1:
                with warnings.catch_warnings():  # Fabric's own call of a torch function torch deprecates
                    warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")
                    out, y = fabric.all_gather(out).flatten(0, 1), fabric.all_gather(y).flatten(0, 1)
            task = self.module.task
            values[f"valid/probe_{metric_name(task)}"] = probe_metric(out, y, task)
        self.model.train()
        return values

    def summary(self) -> dict[str, Any]:
        """This invocation's counts, finished epochs, validations, throughput and where its time went,
        and the module: `train_share` is the share of the wall time spent in training steps (data wait
        included), `valid_share` the share in validation; checkpoints and start-up take the rest."""
        r = self.run_totals
        total, wall = r["wait"] + r["busy"], getattr(self, "wall", math.nan)
        return {
            "global_zero": self.fabric.is_global_zero,
            "steps": self.state["step"],
            "epochs": self.state["epoch"],
            "history": [row for row in self.state["history"] if row["epoch"] >= self.first_epoch],
            "validations": [row for row in self.state["validations"] if row["step"] > self.first_step],
            "pairs_per_s": r["items"] / total if total else math.nan,
            "data_wait_share": r["wait"] / total if total else math.nan,
            "wall_s": wall,
            "overall_pairs_per_s": r["items"] / wall if wall > 0 else math.nan,
            "train_share": total / wall if wall > 0 else math.nan,
            "valid_share": r["valid"] / wall if wall > 0 else math.nan,
            "module": self.module,
        }
