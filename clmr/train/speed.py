"""What keeps a training step fast on an accelerator: the step's values kept on the device and read back
once per log interval (a read after every step would make the host wait for the device each time), and
torch.compile'd callables of a module's parts (`trainer.compile`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from clmr.errors import TrainingError

STATUS_READ_S = 1.0  # the progress display reads the pending values at most this often


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; training stops before another checkpoint is written."""


class StepValues:
    """The loss and logged values of the steps since the last read, as device tensors, read in one
    transfer (`read`) by the engine at each log row, epoch end and checkpoint."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, torch.Tensor]] = []
        self.names: tuple[str, ...] = ()
        self.read_at = -math.inf

    def add(self, step: int, epoch: int, loss: torch.Tensor, values: dict[str, torch.Tensor]) -> None:
        """Keep step `step`'s loss and values (no transfer, no wait for the device)."""
        self.names = tuple(values)
        self.rows.append((step, epoch, torch.stack([loss.detach(), *values.values()]).float()))

    def read(self) -> list[dict[str, float]]:
        """The values of every step since the last read, oldest first, in one transfer; a non-finite loss
        is a NonFiniteLossError naming its step and epoch."""
        if not self.rows:
            return []
        rows, self.rows, self.read_at = self.rows, [], time.monotonic()
        out, table = [], torch.stack([values for _, _, values in rows]).tolist()
        for (step, epoch, _), (total, *logged) in zip(rows, table, strict=True):
            out.append(dict(zip(self.names, logged, strict=True)))
            if not math.isfinite(total):
                raise NonFiniteLossError(
                    f"the training loss is {out[-1]['train/loss']} at step {step} (epoch {epoch}); "
                    "stopped without writing a checkpoint: the last good one is kept. Try a lower "
                    "--optim.lr or --precision 32-true."
                )
        return out

    def due_for_display(self) -> bool:
        """Whether the progress display should read now: values are pending and the last read is older
        than STATUS_READ_S (so it shows a recent loss at the cost of one wait a second at most)."""
        return bool(self.rows) and time.monotonic() - self.read_at >= STATUS_READ_S


def compile_parts(module: nn.Module, names: tuple[str, ...]) -> dict[str, Callable]:
    """`torch.compile` of the module's children `names` (those it has), for the training step; the
    children themselves stay as they are, so the weights, the state-dict keys and the eager validation
    are unchanged. Compiling is lazy: the first training step pays for it."""
    return {
        name: torch.compile(getattr(module, name))
        for name in names
        if getattr(module, name, None) is not None
    }
