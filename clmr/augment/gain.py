"""Gain: a uniform level change in decibels per example."""

from __future__ import annotations

import torch

from clmr.augment.base import Params, ScaleStep, check_range, uniform


class Gain(ScaleStep):
    """Multiplies each firing example by 10^(g / 20), g ~ U[min_db, max_db] (reference p = 0.3)."""

    name = "gain"

    def __init__(self, p: float = 0.3, min_db: float = -20.0, max_db: float = -1.0) -> None:
        super().__init__(p)
        self.min_db, self.max_db = check_range(self.name, "(min_db, max_db)", (min_db, max_db))

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        return {"gain_db": uniform(n, self.min_db, self.max_db, device, generator)}

    def factor(self, params: Params) -> torch.Tensor:
        return torch.pow(10.0, params["gain_db"] / 20.0)

    def extra_repr(self) -> str:
        return f"p={self.p}, min_db={self.min_db}, max_db={self.max_db}"
