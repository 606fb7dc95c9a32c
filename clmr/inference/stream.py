"""Bounded-memory reading of audio for inference: decode and resample a file block by block and cut it
into consecutive crops, so a one-hour file never sits in memory whole.

The crops follow the evaluation protocol: consecutive, non-overlapping, `crop_length` samples at the
model's rate, the remainder dropped, and a track shorter than one crop zero-padded to one crop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import soundfile as sf
import soxr

from clmr.audio import (
    SILENCE_PEAK,
    EmptyAudioError,
    SilentAudioError,
    UnreadableAudioError,
    downmix,
    open_error,
)

BLOCK_SAMPLES = 1 << 16
"""Samples (at the output rate) decoded per read by default (~3 s at 22,050 Hz)."""


def read_blocks(
    path: str | os.PathLike, sample_rate: int, block_samples: int = BLOCK_SAMPLES
) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks of about `block_samples` samples of `path` at `sample_rate` Hz
    (decoded and resampled with soxr HQ incrementally).

    Raises the same typed errors as `clmr.audio.load`; emptiness and silence are only known at the
    end of the file, so they are raised after the last block.
    """
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise open_error(path, err) from err
    with handle:
        block_frames = max(1024, int(block_samples * handle.samplerate / sample_rate))
        resampler = (
            soxr.ResampleStream(handle.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
            if handle.samplerate != sample_rate
            else None
        )
        frames, peak = 0, 0.0
        while True:
            try:
                block = handle.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError) as err:
                raise UnreadableAudioError(path, f"decoding failed after {frames} frames ({err})") from err
            last = len(block) < block_frames
            if len(block):
                if not np.isfinite(block).all():
                    raise UnreadableAudioError(path, "the file holds NaN or infinite samples")
                peak = max(peak, float(np.abs(block).max()))
                frames += len(block)
            mono = downmix(block)
            out = resampler.resample_chunk(mono, last=last) if resampler is not None else mono
            if len(out):
                yield out
            if last:
                break
    if frames == 0:
        raise EmptyAudioError(path, "the file holds no audio samples")
    if peak < SILENCE_PEAK:
        raise SilentAudioError(path, "the file is silent (every sample is below one 16-bit step)")


class CropStream:
    """Consecutive crops of a stream of sample blocks, in chunks of at most `max_crops` crops.

    After iteration, `samples` holds the number of samples seen (the track's length at the model rate).
    """

    def __init__(self, blocks: Iterator[np.ndarray], crop_length: int, max_crops: int = 32) -> None:
        self.blocks = blocks
        self.crop_length = crop_length
        self.chunk_samples = crop_length * max(1, max_crops)
        self.samples = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        n_pending, emitted = 0, 0
        for block in self.blocks:
            self.samples += len(block)
            pending.append(block)
            n_pending += len(block)
            if n_pending >= self.chunk_samples:
                data = np.concatenate(pending)
                n = len(data) // self.crop_length * self.crop_length
                yield data[:n].reshape(-1, self.crop_length)
                emitted += n // self.crop_length
                pending, n_pending = [data[n:]], len(data) - n
        data = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        n = len(data) // self.crop_length * self.crop_length
        if n:
            yield data[:n].reshape(-1, self.crop_length)
        elif emitted == 0 and len(data):
            yield np.pad(data, (0, self.crop_length - len(data)))[None]


def waveform_crops(waveform: np.ndarray, crop_length: int) -> np.ndarray:
    """(n_crops, crop_length) crops of an in-memory mono waveform (a view when no padding is needed)."""
    n = len(waveform) // crop_length * crop_length
    if n == 0:
        return np.pad(waveform, (0, crop_length - len(waveform)))[None]
    return waveform[:n].reshape(-1, crop_length)
