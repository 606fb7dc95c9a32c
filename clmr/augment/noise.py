"""White Gaussian noise whose level is relative to each example's own standard deviation."""

from __future__ import annotations

import torch

from clmr.augment.base import Params, Step, Workspace, check_range, uniform


class Noise(Step):
    """Adds Gaussian noise of std s * std(x), s ~ U[min_snr, max_snr] per example (reference p = 0.01).

    Silence stays silent (its std is 0), so the output is finite for any finite input. The noise is drawn
    `row_multiple` rows at a time, so the draws (and the output) do not depend on the chunk size.
    """

    name = "noise"
    row_multiple = 16

    def __init__(self, p: float = 0.01, min_snr: float = 1e-4, max_snr: float = 1e-2) -> None:
        super().__init__(p)
        self.min_snr, self.max_snr = check_range(self.name, "(min_snr, max_snr)", (min_snr, max_snr), 0.0)

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        return {"snr": uniform(n, self.min_snr, self.max_snr, device, generator)}

    def apply(
        self,
        x: torch.Tensor,
        params: Params,
        generator: torch.Generator | None = None,
        work: Workspace | None = None,
    ) -> torch.Tensor:
        scale = params["snr"].to(x.dtype)[:, None] * x.std(dim=1, correction=0, keepdim=True)
        out = torch.empty_like(x)
        for start in range(0, x.shape[0], self.row_multiple):
            r = slice(start, start + self.row_multiple)
            noise = torch.randn(out[r].shape, device=x.device, dtype=x.dtype, generator=generator)
            torch.addcmul(x[r], noise, scale[r], out=out[r])
        return out

    def scratch_per_example(self, length: int, dtype: torch.dtype) -> int:
        # gathered input, selected output, result, this block's noise: four rows measured, five stated
        return 5 * length * dtype.itemsize

    def extra_repr(self) -> str:
        return f"p={self.p}, min_snr={self.min_snr}, max_snr={self.max_snr}"
