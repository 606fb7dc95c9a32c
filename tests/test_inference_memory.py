"""Bounded memory on long audio: embedding a 20-minute file peaks at about the memory of a 1-minute file."""

import tracemalloc

import numpy as np
import soundfile as sf
import torch

from clmr.inference import embed_file
from clmr.models import CLMR, SampleCNN

FILE_RATE, MODEL_RATE = 3000, 2000  # low rates keep the test fast; the file is resampled on the way


def write_long(path, minutes: float) -> None:
    """A noisy chord written block by block, so the test itself never holds the whole file."""
    t = np.arange(FILE_RATE * 10) / FILE_RATE
    block = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=FILE_RATE, channels=1, subtype="PCM_16") as f:
        for _ in range(int(minutes * 6)):
            f.write(block + 0.01 * rng.standard_normal(len(block)).astype(np.float32))


def peak_bytes(model, path) -> tuple[int, np.ndarray]:
    tracemalloc.start()
    try:
        embedding = embed_file(model, path, batch_size=16)
        return tracemalloc.get_traced_memory()[1], embedding
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_track_length(tmp_path):
    torch.manual_seed(0)
    model = CLMR(SampleCNN(width=1 / 16, n_blocks=5), sample_rate=MODEL_RATE).eval()
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    write_long(short, 1)
    write_long(long, 20)
    peak_short, _ = peak_bytes(model, short)
    peak_long, embedding = peak_bytes(model, long)
    whole_file = 20 * 60 * FILE_RATE * 4  # the long file decoded at once as float32: 14.4 MB
    assert embedding.shape == (model.embedding_dim,) and np.isfinite(embedding).all()
    assert peak_long - peak_short < 500_000, (peak_short, peak_long)
    assert peak_long < whole_file / 4, (peak_long, whole_file)
