"""A MARBLE v2 encoder for clmr models, so MARBLE's probes can evaluate a clmr checkpoint layer by layer
without glue code (and without clmr depending on MARBLE).

It follows MARBLE's encoder conventions (`marble/encoders/*/model.py`): class constants `NAME`,
`SAMPLING_RATE`, `TOKEN_RATE` (frames per second) and `NUM_FEATURES`, and `forward(waveforms (B, T))`
returning the hidden states as a sequence of L layers of (B, T', H), which MARBLE's `LayerSelector`
stacks into (B, L, T', H). A SampleCNN's blocks differ in width and frame rate, so here:

- a frame is a crop: the waveform is cut into T' = max(1, T // crop_length) consecutive
  non-overlapping crops (clmr's song-level protocol; the remainder dropped, a shorter waveform
  zero-padded to one crop), so `TOKEN_RATE` is sample_rate / crop_length (0.37 Hz for clmr-mtat);
- layer k is block k's activations in that crop averaged over time, zero-padded from the block's
  C_k channels to H = NUM_FEATURES (the final width); the last layer is h itself.
"""

from __future__ import annotations

import torch
from torch import nn

from clmr.errors import ClmrError
from clmr.models import load_model
from clmr.models.registry import DEFAULT_MODEL

TRAIN_MODES = ("freeze", "full")


class CLMREncoder(nn.Module):
    """A clmr checkpoint (a registry name, by default the released `clmr-mtat`, or a model file) as a
    MARBLE encoder. `train_mode="freeze"` (the default) keeps the weights fixed and BatchNorm in eval
    mode even when MARBLE puts the task in training mode; `"full"` fine-tunes the whole encoder."""

    NAME = "CLMR"
    SAMPLING_RATE = 22050
    TOKEN_RATE = 22050 / 59049
    NUM_FEATURES = 512
    N_LAYERS = 11

    def __init__(self, model_path: str | None = None, train_mode: str = "freeze") -> None:
        super().__init__()
        if train_mode not in TRAIN_MODES:
            raise ClmrError(f"train_mode must be one of {TRAIN_MODES}, got {train_mode!r}")
        self.model = load_model(model_path or DEFAULT_MODEL)
        # the class constants describe clmr-mtat; these are the loaded model's
        self.SAMPLING_RATE = self.sample_rate = self.model.sample_rate
        self.TOKEN_RATE = self.model.sample_rate / self.model.crop_length
        self.NUM_FEATURES = self.model.embedding_dim
        self.N_LAYERS = len(self.model.encoder.sequential)
        self.frozen = train_mode == "freeze"
        self.model.requires_grad_(not self.frozen)
        self.train(False)

    def train(self, mode: bool = True) -> CLMREncoder:
        """Set the training mode; a frozen encoder stays in eval mode (its BatchNorm statistics fixed)."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor, ...]:
        """Waveforms (B, T) or (B, 1, T) at `SAMPLING_RATE` -> N_LAYERS hidden states, each (B, T', H):
        T' crops per waveform, H = NUM_FEATURES (see the module's docstring for what each layer is)."""
        if x.dim() == 3 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 2 or x.shape[1] == 0:
            raise ClmrError(f"CLMREncoder takes waveforms (B, T) or (B, 1, T), got shape {tuple(x.shape)}")
        length = self.model.crop_length
        n_crops = max(1, x.shape[1] // length)
        x = nn.functional.pad(x, (0, max(0, length - x.shape[1])))[:, : n_crops * length]
        crops = x.reshape(-1, length).to(next(self.model.parameters()))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            blocks = self.model.encoder.block_outputs(crops)
        width = self.NUM_FEATURES
        return tuple(
            nn.functional.pad(b.mean(-1), (0, width - b.shape[1])).reshape(len(x), n_crops, width)
            for b in blocks
        )
