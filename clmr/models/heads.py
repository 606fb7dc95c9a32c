"""Projector and classification heads, with the reference key names (`0.*`, `2.*`, `model.0.*`)."""

from __future__ import annotations

import torch
from torch import nn

import clmr.models.checks as checks

HEAD_KINDS = ("linear", "mlp", "marble")


class Projector(nn.Sequential):
    """SimCLR projection g: Linear(512, 512, no bias) -> ReLU -> Linear(512, 64, no bias)."""

    def __init__(self, in_dim: int = 512, hidden: int = 512, out_dim: int = 64) -> None:
        in_dim, hidden, out_dim = (
            checks.whole(k, v, 1, checks.MAX_DIM)
            for k, v in (("in_dim", in_dim), ("hidden", hidden), ("out_dim", out_dim))
        )
        super().__init__(
            nn.Linear(in_dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, out_dim, bias=False)
        )
        self.dims = (in_dim, hidden, out_dim)


class Head(nn.Module):
    """A classifier on encoder features: `linear` (reference), `mlp` (reference 512-512-C) or
    `marble` (MARBLE benchmark probe: one 512 hidden layer, dropout 0.2)."""

    def __init__(self, kind: str, in_dim: int, n_classes: int, hidden: int = 512) -> None:
        if not isinstance(kind, str) or kind not in HEAD_KINDS:
            raise checks.ModelConfigError("kind", f"must be one of {', '.join(HEAD_KINDS)}, got {kind!r}")
        in_dim, hidden = (
            checks.whole("in_dim", in_dim, 1, checks.MAX_DIM),
            checks.whole("hidden", hidden, 1, checks.MAX_DIM),
        )
        n_classes = checks.whole("n_classes", n_classes, 1, checks.MAX_CLASSES)
        super().__init__()
        self.kind, self.in_dim, self.n_classes, self.hidden = kind, in_dim, n_classes, hidden
        if kind == "linear":
            layers: list[nn.Module] = [nn.Linear(in_dim, n_classes)]
        elif kind == "mlp":
            layers = [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)]
        else:
            layers = [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, n_classes)]
        self.model = nn.Sequential(*layers)

    def architecture(self) -> dict:
        """The constructor arguments, as stored in a checkpoint's JSON config."""
        return {"kind": self.kind, "in_dim": self.in_dim, "n_classes": self.n_classes, "hidden": self.hidden}

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) features -> (B, n_classes) logits."""
        return self.model(h)
