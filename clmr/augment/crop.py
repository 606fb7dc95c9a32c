"""Random crops: one uniform start per example, as the data side cuts training crops."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from clmr.augment.base import AugmentError, Params


class RandomCrop(nn.Module):
    """(B, T_long) -> (B, length) with a uniform start per example; shorter inputs are zero-padded."""

    def __init__(self, length: int = 59049) -> None:
        super().__init__()
        if length < 1:
            raise AugmentError(f"augmentation 'crop': length={length} must be positive")
        self.length = int(length)

    def draw(self, n: int, span: int, device: torch.device, generator: torch.Generator | None) -> Params:
        """Start offsets in [0, span - length] for n examples of `span` samples."""
        room = max(span - self.length, 0) + 1
        start = (torch.rand(n, device=device, generator=generator) * room).long().clamp_(max=room - 1)
        return {"start": start}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Crop row b at params['start'][b]."""
        if x.shape[1] < self.length:
            x = F.pad(x, (0, self.length - x.shape[1]))
        index = params["start"][:, None] + torch.arange(self.length, device=x.device)
        return torch.gather(x, 1, index)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.draw(x.shape[0], x.shape[1], x.device, generator))

    def extra_repr(self) -> str:
        return f"length={self.length}"
