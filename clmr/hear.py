"""The HEAR benchmark API (Turian et al. 2022) for clmr models, so the HEAR and MARBLE harnesses can
evaluate a clmr checkpoint as a module: `--module clmr.hear --model CHECKPOINT`.

- `load_model(model_file_path)` (default: the released `clmr-mtat`) -> a torch module with
  `sample_rate`, `scene_embedding_size` and `timestamp_embedding_size`.
- `get_scene_embeddings(audio, model)`: audio (n_sounds, n_samples) float32 at `model.sample_rate`
  -> (n_sounds, D): mean of h over consecutive non-overlapping crops (clmr's song-level protocol;
  a sound shorter than one crop is zero-padded).
- `get_timestamp_embeddings(audio, model)` -> ((n_sounds, n_timestamps, D), (n_sounds, n_timestamps)):
  h of a crop centred on every timestamp (hop `model.hop_ms`, 50 ms by default; the audio is
  zero-padded by half a crop at both ends), timestamps in milliseconds.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from clmr.devices import resolve_device
from clmr.errors import ClmrError
from clmr.models import CLMR, SampleCNN
from clmr.models import load_model as _load_clmr
from clmr.models.registry import DEFAULT_MODEL
from clmr.songs.apply import check_batch_size, crop_fn, default_batch_size, run_model
from clmr.songs.crops import array_songs

DEFAULT_HOP_MS = 50.0


class HearModel(nn.Module):
    """A clmr model with the attributes the HEAR API requires."""

    def __init__(self, model: CLMR, hop_ms: float = DEFAULT_HOP_MS, batch_size: int | None = None) -> None:
        super().__init__()
        check_batch_size(batch_size)
        if not hop_ms > 0:
            raise ClmrError(f"hop_ms must be positive, got {hop_ms!r}")
        self.model = model.eval()
        self.sample_rate = model.sample_rate
        self.scene_embedding_size = model.embedding_dim
        self.timestamp_embedding_size = model.embedding_dim
        self.hop_ms = float(hop_ms)
        self.batch_size = batch_size

    @property
    def crop_length(self) -> int:
        """Samples per crop the encoder takes."""
        return self.model.crop_length

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return resolve_device(None, self.model)

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
    model_file_path: str = DEFAULT_MODEL, hop_ms: float = DEFAULT_HOP_MS, batch_size: int | None = None
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
    return HearModel(model, hop_ms=hop_ms, batch_size=batch_size)


def _as_batch(audio: torch.Tensor | np.ndarray) -> torch.Tensor:
    audio = torch.as_tensor(audio, dtype=torch.float32)
    if audio.dim() != 2:
        raise ClmrError(f"HEAR audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    return audio


def get_scene_embeddings(audio: torch.Tensor | np.ndarray, model: HearModel) -> torch.Tensor:
    """(n_sounds, n_samples) at `model.sample_rate` -> (n_sounds, scene_embedding_size) on audio's device:
    each sound's song embedding, through the same song-level path as `clmr embed` and `clmr evaluate`."""
    audio = _as_batch(audio)
    rows = audio.detach().cpu().numpy()
    songs = array_songs(((str(k), row) for k, row in enumerate(rows)), model.crop_length)
    outputs = run_model(model.model, songs, batch_size=model.batch_size, device=model.device)
    return torch.from_numpy(np.stack([out.mean for out in outputs])).to(audio.device)


def get_timestamp_embeddings(
    audio: torch.Tensor | np.ndarray, model: HearModel
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_sounds, n_samples) -> embeddings (n_sounds, n_timestamps, D) and timestamps
    (n_sounds, n_timestamps) in ms: one crop centred on every multiple of `model.hop_ms`."""
    audio = _as_batch(audio)
    length = model.crop_length
    hop = max(1, round(model.hop_ms * model.sample_rate / 1000))
    padded = nn.functional.pad(audio, (length // 2, length - 1 - length // 2))
    frames = padded.unfold(1, length, hop)  # frame i is centred on sample i * hop
    embeddings = model.embed_frames(frames).to(audio.device)
    centres = torch.arange(frames.shape[1], device=audio.device) * (hop * 1000.0 / model.sample_rate)
    return embeddings, centres.expand(audio.shape[0], -1).contiguous()
