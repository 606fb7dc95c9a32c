"""Delay: mix in one echo of the signal at a lag drawn from a grid of milliseconds."""

from __future__ import annotations

import torch

from clmr.augment.base import AugmentError, Params, Step, Workspace, check_range, check_sample_rate, place


class Delay(Step):
    """y = (x + volume * x delayed by d) / 2, d ~ {min_ms, min_ms + step_ms, ...} below max_ms (reference p = 0.3)."""

    name = "delay"
    cpu_block_samples = 1 << 18

    def __init__(
        self,
        sample_rate: int,
        p: float = 0.3,
        min_ms: float = 200.0,
        max_ms: float = 500.0,
        step_ms: float = 50.0,
        volume: float = 0.5,
    ) -> None:
        super().__init__(p)
        self.sample_rate = check_sample_rate(self.name, sample_rate)
        self.min_ms, self.max_ms = check_range(self.name, "(min_ms, max_ms)", (min_ms, max_ms), 0.0)
        self.step_ms = float(step_ms)
        if not self.step_ms > 0:
            raise AugmentError(f"augmentation 'delay': step_ms must be > 0, got {step_ms!r}")
        self.volume = float(volume)
        self.choices = int(round((self.max_ms - self.min_ms) / self.step_ms))
        if self.choices < 1:
            raise AugmentError(f"augmentation 'delay': no delay between min_ms={min_ms} and max_ms={max_ms}")

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        k = torch.randint(0, self.choices, (n,), device=device, generator=generator)
        return {"delay_ms": self.min_ms + self.step_ms * k.float()}

    def max_lag(self) -> int:
        """The longest drawn lag in samples; `apply` limits lags to it (so that no device needs a host sync)."""
        return round((self.min_ms + self.step_ms * (self.choices - 1)) * self.sample_rate / 1000.0)

    def scratch_per_example(self, length: int, dtype: torch.dtype) -> int:
        # the zero-padded rows, the echo, the selected output (three rows and the lag measured), four stated
        return (self.max_lag() + 4 * length) * dtype.itemsize

    def slot(
        self, work: Workspace, batch: int, length: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor | None:
        most = self.max_lag()
        return work.get("padded", (batch, most + length), dtype, device)[:, most:]

    def apply(
        self,
        x: torch.Tensor,
        params: Params,
        generator: torch.Generator | None = None,
        work: Workspace | None = None,
    ) -> torch.Tensor:
        work = work or Workspace()
        batch, length = x.shape
        most = self.max_lag()
        lag = torch.round(params["delay_ms"] * (self.sample_rate / 1000.0)).long().clamp_(0, most)
        # x behind `most` zeros; the echo of row b is the window of the padded row starting at most - lag[b]
        padded = work.get("padded", (batch, most + length), x.dtype, x.device)
        padded[:, :most] = 0.0
        place(padded[:, most:], x)
        windows = padded.unfold(1, length, 1)  # (B, most + 1, T), no copy
        echo = windows[torch.arange(batch, device=x.device), most - lag]  # a new tensor
        return echo.mul_(0.5 * self.volume).add_(x, alpha=0.5)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, p={self.p}, min_ms={self.min_ms}, max_ms={self.max_ms}, "
            f"step_ms={self.step_ms}, volume={self.volume}"
        )
