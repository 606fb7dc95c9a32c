"""The HEAR benchmark API (Turian et al. 2022) for clmr models, so HEAR's harness (hear-eval-kit,
hear-validator) can evaluate a clmr checkpoint as a module (MARBLE v2: `clmr.marble`).

- `load_model(model_file_path)` (default: the released `clmr-mtat`) -> a torch module with
  `sample_rate`, `scene_embedding_size` and `timestamp_embedding_size`. HEAR accepts audio at
  16, 22.05, 44.1 or 48 kHz only: a model at another rate (e.g. 8 kHz) takes audio at the lowest of
  those above its own and resamples it (soxr HQ) to its rate.
- `get_scene_embeddings(audio, model)`: audio (n_sounds, n_samples) float32 at `model.sample_rate`
  -> (n_sounds, D): mean of h over consecutive non-overlapping crops (clmr's song-level protocol;
  a sound shorter than one crop is zero-padded).
- `get_timestamp_embeddings(audio, model)` -> ((n_sounds, n_timestamps, D), (n_sounds, n_timestamps)):
  timestamps every `model.hop_ms` (50 ms by default), in milliseconds. One pass encodes crops centred
  on a coarser grid (every `grid_steps` timestamps, crops overlapping by at least a third; the audio
  zero-padded by half a crop at both ends); a timestamp on the grid gets its crop's h, one between
  two grid points the linear interpolation of their h. `grid_steps=1` encodes a crop per timestamp.
"""

from __future__ import annotations

import warnings

import numpy as np
import soxr
import torch
from torch import nn

from clmr.devices import resolve_device
from clmr.errors import ClmrError, check_whole
from clmr.models import CLMR, SampleCNN
from clmr.models import load_model as _load_clmr
from clmr.models.registry import DEFAULT_MODEL
from clmr.songs.apply import check_batch_size, crop_fn, default_batch_size, run_model
from clmr.songs.crops import array_songs

DEFAULT_HOP_MS = 50.0
HEAR_SAMPLE_RATES = (16000, 22050, 44100, 48000)
"""The input rates hear-validator accepts (`hearvalidator/validate.py:ValidateModel.ACCEPTABLE_SAMPLE_RATE`)."""
GRID_SPAN = 2 / 3
"""Default crop-grid step, as a fraction of a crop: adjacent grid crops overlap by at least a third."""


def hear_sample_rate(model_rate: int) -> int:
    """The rate the HEAR wrapper takes audio at: the model's own if HEAR accepts it, else the lowest
    accepted rate above it (the highest accepted rate for a model above 48 kHz)."""
    if model_rate in HEAR_SAMPLE_RATES:
        return model_rate
    return next((rate for rate in HEAR_SAMPLE_RATES if rate > model_rate), HEAR_SAMPLE_RATES[-1])


class HearModel(nn.Module):
    """A clmr model with the attributes the HEAR API requires."""

    def __init__(
        self,
        model: CLMR,
        hop_ms: float = DEFAULT_HOP_MS,
        batch_size: int | None = None,
        grid_steps: int | None = None,
    ) -> None:
        super().__init__()
        check_batch_size(batch_size)
        if not hop_ms > 0:
            raise ClmrError(f"hop_ms must be positive, got {hop_ms!r}")
        if grid_steps is not None:
            check_whole("grid_steps", grid_steps, unit="timestamps")
        self.model = model.eval()
        self.sample_rate = hear_sample_rate(model.sample_rate)
        self.scene_embedding_size = model.embedding_dim
        self.timestamp_embedding_size = model.embedding_dim
        self.hop_ms = float(hop_ms)
        self.batch_size = batch_size
        self.hop = max(1, round(self.hop_ms * model.sample_rate / 1000))  # samples, at the model's rate
        # one crop is encoded for every `grid_steps` timestamps
        self.grid_steps = int(grid_steps or max(1, int(GRID_SPAN * model.crop_length) // self.hop))

    @property
    def crop_length(self) -> int:
        """Samples per crop the encoder takes."""
        return self.model.crop_length

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return resolve_device(None, self.model)

    def to_model_rate(self, audio: torch.Tensor) -> np.ndarray:
        """(n_sounds, n_samples) at `sample_rate` -> float32 (n_sounds, m) at the model's rate."""
        rows = audio.detach().cpu().numpy().astype(np.float32, copy=False)
        if self.sample_rate == self.model.sample_rate:
            return rows
        resampled = soxr.resample(
            np.ascontiguousarray(rows.T), self.sample_rate, self.model.sample_rate, "HQ"
        )
        return np.ascontiguousarray(resampled.T, dtype=np.float32)

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(n, T, crop_length) frames (any view, e.g. from `unfold`) -> (n, T, D) float32 on the model's
        device, in batches of `batch_size` crops, so overlapping frames are never all copied at once."""
        n, t, _ = frames.shape
        device = self.device
        batch = self.batch_size or default_batch_size(self.model, device)
        fn = crop_fn(self.model, device)
        out = torch.empty(n * t, self.scene_embedding_size, device=device)
        for start in range(0, n * t, batch):
            rows = torch.arange(start, min(start + batch, n * t), device=frames.device)
            crops = frames[rows // t, rows % t].cpu().numpy()
            out[start : start + len(rows)] = torch.from_numpy(fn(crops)).to(device)
        return out.reshape(n, t, -1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Same as `get_scene_embeddings(audio, self)`."""
        return get_scene_embeddings(audio, self)


def load_model(
    model_file_path: str = DEFAULT_MODEL,
    hop_ms: float = DEFAULT_HOP_MS,
    batch_size: int | None = None,
    grid_steps: int | None = None,
) -> HearModel:
    """Load a clmr checkpoint (a registry name, by default the released `clmr-mtat`; ours, a run
    directory or a reference .pt/.ckpt) for the HEAR API.

    An empty path gives the reference architecture with random weights (a random-encoder baseline),
    with a warning.
    """
    if model_file_path:
        model = _load_clmr(model_file_path)
    else:
        warnings.warn(
            "clmr.hear.load_model: no model file given; using a randomly initialised SampleCNN", stacklevel=2
        )
        model = CLMR(SampleCNN())
    return HearModel(model, hop_ms=hop_ms, batch_size=batch_size, grid_steps=grid_steps)


def _as_batch(audio: torch.Tensor | np.ndarray) -> torch.Tensor:
    audio = torch.as_tensor(audio, dtype=torch.float32)
    if audio.dim() != 2:
        raise ClmrError(f"HEAR audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    if audio.shape[1] == 0:
        raise ClmrError("HEAR audio has no samples (n_samples is 0)")
    return audio


def get_scene_embeddings(audio: torch.Tensor | np.ndarray, model: HearModel) -> torch.Tensor:
    """(n_sounds, n_samples) at `model.sample_rate` -> (n_sounds, scene_embedding_size) on audio's device:
    each sound's song embedding, through the same song-level path as `clmr embed` and `clmr evaluate`."""
    audio = _as_batch(audio)
    rows = model.to_model_rate(audio)
    songs = array_songs(((str(k), row) for k, row in enumerate(rows)), model.crop_length)
    outputs = run_model(model.model, songs, batch_size=model.batch_size, device=model.device)
    return torch.from_numpy(np.stack([out.mean for out in outputs])).to(audio.device)


def get_timestamp_embeddings(
    audio: torch.Tensor | np.ndarray, model: HearModel
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_sounds, n_samples) -> embeddings (n_sounds, n_timestamps, D) and timestamps
    (n_sounds, n_timestamps) in ms, every `model.hop_ms`: crops on a grid every `model.grid_steps`
    timestamps are encoded in one pass, the timestamps between grid points linearly interpolated."""
    audio = _as_batch(audio)
    x = torch.from_numpy(model.to_model_rate(audio))
    length, steps = model.crop_length, model.grid_steps
    n_timestamps = 1 + (x.shape[1] - 1) // model.hop
    n_grid = 1 + -(-(n_timestamps - 1) // steps)  # grid points 0, steps, ... up to the last timestamp
    step = model.hop * steps
    left = length // 2
    right = max(0, (n_grid - 1) * step + length - left - x.shape[1])
    frames = nn.functional.pad(x, (left, right)).unfold(1, length, step)[:, :n_grid]  # centred on k * step
    grid = model.embed_frames(frames)
    index = torch.arange(n_timestamps, device=grid.device)
    below = index // steps
    above = (below + 1).clamp(max=n_grid - 1)
    weight = ((index % steps) / steps).unsqueeze(-1)
    embeddings = grid[:, below] * (1 - weight) + grid[:, above] * weight
    times = index.to(audio.device) * (model.hop * 1000.0 / model.model.sample_rate)
    return embeddings.to(audio.device), times.expand(audio.shape[0], -1).contiguous()
