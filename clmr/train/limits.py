"""When a run stops and when its cadences fall due: the step, epoch and time limits of `trainer.*`
and the `N` / `Nsteps` / time cadences of `val_every` and `save_every`. Every clock reading of the
engine goes through `Limits.now`, and a time is agreed on by all processes (the one whose clock says
stop stops them all, at the same step)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from clmr.config import val_every
from clmr.progress import format_duration

if TYPE_CHECKING:
    from lightning import Fabric

    from clmr.config import TrainerConfig


def max_time_seconds(max_time: str | None) -> float | None:
    """A validated `DD:HH:MM:SS` limit in seconds (None: no limit)."""
    if max_time is None:
        return None
    days, hours, minutes, seconds = (int(part) for part in max_time.split(":"))
    return ((days * 24 + hours) * 60 + minutes) * 60.0 + seconds


class Limits:
    """The stop rules of `trainer` (max_steps, max_epochs, max_time) for one invocation of `fit`.

    `max_time` is a budget for the whole run: `spent` seconds of it went to the invocations before
    this one (the checkpoint's `time_spent`), so a resumed run gets the time it had left."""

    def __init__(self, trainer: TrainerConfig, fabric: Fabric, spent: float = 0.0, step: int = 0) -> None:
        self.trainer, self.fabric, self.spent_before = trainer, fabric, float(spent)
        self.first_step = step  # the step this invocation starts at (its pace counts the steps after)
        self.deadline = max_time_seconds(trainer.max_time)
        self.started = self.now()

    @staticmethod
    def now() -> float:
        """The engine's clock (monotonic seconds)."""
        return time.monotonic()

    def agreed(self, flag: bool) -> bool:
        """`flag` as all processes agree on it: True if it is True on any of them."""
        if self.fabric.world_size == 1:
            return flag
        over = torch.tensor(float(flag), device=self.fabric.device)
        return bool(self.fabric.all_reduce(over, reduce_op="max") > 0)

    def spent(self) -> float:
        """Seconds of the run's training loops so far, the invocations before this one included."""
        return self.spent_before + self.now() - self.started

    def time_left(self) -> float | None:
        """Seconds left of the --max-time budget (None: no budget)."""
        return None if self.deadline is None else max(self.deadline - self.spent(), 0.0)

    def reached(self, step: int) -> bool:
        """Whether --max-steps or --max-time is reached at `step`."""
        max_steps = self.trainer.max_steps
        if max_steps != -1 and step >= max_steps:
            return True
        if self.deadline is None:
            return False
        return self.agreed(self.spent() >= self.deadline)

    def stop_reason(self, state: dict[str, Any]) -> str | None:
        """The limit the run has reached at `state` ('--max-time 00:00:30:00 (31:02 spent)'), or None."""
        t = self.trainer
        if t.max_steps != -1 and state["step"] >= t.max_steps:
            return f"--max-steps {t.max_steps}"
        if not self.epochs_left(state["epoch"]):
            return f"--max-epochs {t.max_epochs}"
        if self.reached(state["step"]):
            return f"--max-time {t.max_time} ({format_duration(self.spent())} spent)"
        return None

    def ending(self, state: dict[str, Any], n_batches: int) -> tuple[float, str, list[str]] | None:
        """(seconds left, the limit that ends the run first, the later ones): the --max-time
        budget's exact time left, --max-steps and --max-epochs at this invocation's pace (steps per
        second since it started); None while no limit's time is known."""
        t, elapsed = self.trainer, self.now() - self.started
        done = state["step"] - self.first_step
        pace = done / elapsed if done > 0 and elapsed > 0 else None
        steps = {
            "max-steps": t.max_steps - state["step"] if t.max_steps != -1 else None,
            "max-epochs": (t.max_epochs - state["epoch"]) * n_batches - state["batch"]
            if t.max_epochs != -1
            else None,
        }
        ends = {"max-time": self.time_left()} if self.deadline is not None else {}
        ends |= {name: left / pace if pace else None for name, left in steps.items() if left is not None}
        known = {name: seconds for name, seconds in ends.items() if seconds is not None}
        if not known:
            return None
        first = min(known, key=known.__getitem__)
        return known[first], first, [name for name in known if name != first]

    def epochs_left(self, epoch: int) -> bool:
        """Whether --max-epochs lets epoch `epoch` (counted from 0) run."""
        return self.trainer.max_epochs == -1 or epoch < self.trainer.max_epochs

    def total_steps(self, state: dict[str, Any], n_batches: int) -> int | None:
        """The steps the run will have done when it stops at --max-epochs or --max-steps (None: no end)."""
        t = self.trainer
        ends = [t.max_steps] if t.max_steps != -1 else []
        if t.max_epochs != -1:
            ends.append(state["step"] + (t.max_epochs - state["epoch"]) * n_batches - state["batch"])
        return min(ends) if ends else None

    def due(self, cadence: str, epoch: int, step: int, since: tuple[int, int, float]) -> bool:
        """Whether `cadence` (N epochs, Nsteps or a time) has passed at the end of `epoch` (at `step`)
        since an event at `since` = (epochs finished, step, clock time)."""
        unit, amount = val_every(cadence)
        if unit == "epochs":
            return epoch + 1 - since[0] >= amount
        if unit == "steps":
            return step - since[1] >= amount
        return self.agreed(self.now() - since[2] >= amount)
