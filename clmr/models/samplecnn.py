"""SampleCNN (Lee et al. 2017) with the reference CLMR layout and parameter names."""

from __future__ import annotations

import torch
from torch import nn

import clmr.models.checks as checks

# Output channels of the reference blocks 0..9 (block 10 keeps the last width).
REFERENCE_CHANNELS = (128, 128, 128, 256, 256, 256, 256, 256, 256, 512)


def _block_channels(width: float, n_blocks: int) -> list[int]:
    """Output channels of blocks 0..n_blocks: the reference ramp, its last pooled block at full width."""
    outs = list(REFERENCE_CHANNELS[:n_blocks]) + [REFERENCE_CHANNELS[-1]]
    return [max(1, round(c * width)) for c in outs]


def infer_width(channels: list[int], n_blocks: int) -> float | None:
    """The width whose block channels (blocks 0..n_blocks) are `channels`, or None if none fits.

    Every block constrains the width to an interval (its channel count is round(base * width)); the
    answer lies in their intersection. A short decimal (0.1, 0.25), a simple fraction (1/16) or a
    block's exact ratio is preferred, so that the config shows the width the model was built with.
    """
    bases = list(REFERENCE_CHANNELS[:n_blocks]) + [REFERENCE_CHANNELS[-1]]
    if len(channels) != len(bases) or min(channels) < 1:
        return None
    low, high = 0.0, float("inf")
    for base, c in zip(bases, channels, strict=True):
        low = max(low, (c - 0.5) / base if c > 1 else 0.0)
        high = min(high, (c + 0.5) / base)
    if low > high:
        return None
    candidates = [round(low + (high - low) / 2, d) for d in (1, 2)]
    candidates += [round(low, d) for d in (1, 2)] + [round(high, d) for d in (1, 2)]
    candidates += [k / 16 for k in range(1, 65)] + [1 / k for k in range(1, 129)]
    candidates += [c / base for base, c in zip(bases, channels, strict=True)]
    candidates += [round((low + high) / 2, d) for d in range(3, 10)] + [(low + high) / 2]
    for width in candidates:
        if width > 0 and _block_channels(width, n_blocks) == list(channels):
            return float(width)
    return None


class SampleCNN(nn.Module):
    """Sample-level CNN on raw waveforms: 3^(n_blocks + 1) samples in, one feature vector out.

    The default (width 1, 9 pooled blocks) is the reference encoder: 59,049 samples -> 512-d, with
    keys `sequential.{0..10}.{0,1}.*` so that reference state dicts load unchanged. `n_classes` adds
    the supervised variant's Dropout + `fc`; otherwise `fc` is an identity (the CLMR encoder).
    """

    def __init__(
        self, width: float = 1.0, n_blocks: int = 9, n_classes: int | None = None, dropout: float = 0.5
    ) -> None:
        width = checks.real("width", width, 0.0, checks.MAX_WIDTH, open_low=True)
        n_blocks = checks.whole("n_blocks", n_blocks, 1, 9)
        if n_classes is not None:
            n_classes = checks.whole("n_classes", n_classes, 1, checks.MAX_CLASSES)
        dropout = checks.real("dropout", dropout, 0.0, 1.0)
        super().__init__()
        self.width = width
        self.n_blocks = n_blocks
        channels = _block_channels(width, n_blocks)
        layers = [
            nn.Sequential(
                nn.Conv1d(1, channels[0], 3, stride=3, padding=0), nn.BatchNorm1d(channels[0]), nn.ReLU()
            )
        ]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers.append(
                nn.Sequential(
                    nn.Conv1d(c_in, c_out, 3, stride=1, padding=1),
                    nn.BatchNorm1d(c_out),
                    nn.ReLU(),
                    nn.MaxPool1d(3, stride=3),
                )
            )
        last = channels[-1]
        layers.append(
            nn.Sequential(nn.Conv1d(last, last, 3, stride=1, padding=1), nn.BatchNorm1d(last), nn.ReLU())
        )
        self.sequential = nn.Sequential(*layers)
        self.out_dim = last
        self.n_classes = n_classes
        self.dropout = nn.Dropout(dropout) if n_classes else nn.Identity()
        self.fc = nn.Linear(last, n_classes) if n_classes else nn.Identity()

    def kaiming_init(self) -> SampleCNN:
        """Re-draw the conv weights kaiming-uniform (fan-in, ReLU). Not the default: the reference defines
        such an `initialize()` but never calls it, so its SampleCNN trains from PyTorch's default init."""
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
        return self

    @property
    def input_length(self) -> int:
        """Samples per crop: 3^(n_blocks + 1) (59,049 for the reference)."""
        return 3 ** (self.n_blocks + 1)

    def architecture(self) -> dict:
        """The constructor arguments, as stored in a checkpoint's JSON config."""
        return {
            "name": "samplecnn",
            "width": self.width,
            "n_blocks": self.n_blocks,
            "n_classes": self.n_classes,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) or (B, 1, T) waveforms, T == input_length -> (B, out_dim) features (or logits)."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if x.dim() != 3 or x.shape[1] != 1 or x.shape[-1] != self.input_length:
            raise ValueError(
                f"SampleCNN expects (B, {self.input_length}) or (B, 1, {self.input_length}) waveforms, got {tuple(x.shape)}"
            )
        out = self.sequential(x).flatten(1)
        return self.fc(self.dropout(out))

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, T) or (B, 1, T) waveforms -> each block's activations (B, C_k, T_k), first block to last,
        for layer-wise probes. At T == input_length the last is (B, out_dim, 1): `forward`'s features."""
        out = x.unsqueeze(1) if x.dim() == 2 else x
        activations = []
        for block in self.sequential:
            out = block(out)
            activations.append(out)
        return activations
