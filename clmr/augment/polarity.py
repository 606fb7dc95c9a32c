"""Polarity inversion: x -> -x."""

from __future__ import annotations

import torch

from clmr.augment.base import Params, ScaleStep


class PolarityInversion(ScaleStep):
    """Negates the examples that fire (reference p = 0.8)."""

    name = "polarity"

    def __init__(self, p: float = 0.8) -> None:
        super().__init__(p)

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        return {"sign": torch.full((n,), -1.0, device=device)}

    def factor(self, params: Params) -> torch.Tensor:
        return params["sign"]
