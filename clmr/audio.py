"""Audio decoding: any wav/flac/ogg/mp3/opus/aiff/au file -> float32 mono at the requested sample rate,
whole (`load`) or block by block (`read_blocks`, so a one-hour file never sits in memory whole).

Decoding uses libsndfile (through soundfile; 1.1+ reads mp3 and opus) and resampling uses soxr at
HQ quality. Every failure is a typed `AudioError` that names the file, so callers (the preprocessor's
skip manifest, the CLI) can tell unreadable, empty and silent files apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from clmr.errors import ClmrError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aif", ".aiff", ".au")
"""File extensions `clmr` treats as audio when scanning folders (lower case)."""

UNSUPPORTED_EXTENSIONS = (
    ".m4a",
    ".m4b",
    ".aac",
    ".wma",
    ".alac",
    ".ape",
    ".wv",
    ".mpc",
    ".ac3",
    ".amr",
    ".mka",
)
"""Audio formats libsndfile cannot decode: folder scans report such files (reason `unsupported`)
instead of passing over them in silence."""

UNSUPPORTED_DETAIL = (
    "a format clmr cannot decode (it reads wav, flac, ogg, mp3, opus, aiff, au); "
    "convert it first, e.g. ffmpeg -i song.m4a song.flac"
)

SILENCE_PEAK = 1.0 / 32768.0
"""A file whose absolute peak stays below one 16-bit step would store as all zeros: it is silent."""


class AudioError(ClmrError):
    """A file that cannot be used as audio; `reason` is a short machine-readable word."""

    reason = "unreadable"

    def __init__(self, path: str | os.PathLike, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")


class UnreadableAudioError(AudioError):
    """The file is missing, not audio, truncated or corrupt, or holds non-finite samples."""

    reason = "unreadable"


class EmptyAudioError(AudioError):
    """The file decodes to zero samples."""

    reason = "empty"


class SilentAudioError(AudioError):
    """Every sample is below one 16-bit step (digital silence)."""

    reason = "silent"


def info(path: str | os.PathLike) -> tuple[int, int, int]:
    """(sample_rate, channels, frames) from the file header, without decoding the audio."""
    try:
        meta = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise open_error(path, err) from err
    return int(meta.samplerate), int(meta.channels), int(meta.frames)


def load(path: str | os.PathLike, sample_rate: int = 22050, *, mono: bool = True) -> np.ndarray:
    """Decode `path` to float32 at `sample_rate` Hz: shape (T,) when `mono` (mean of the channels),
    else (channels, T). Raises UnreadableAudioError, EmptyAudioError or SilentAudioError."""
    try:
        data, source_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise open_error(path, err) from err
    if data.shape[0] == 0:
        raise EmptyAudioError(path, "the file holds no audio samples")
    high, low = float(data.max()), float(data.min())  # no temporaries; NaN and inf carry through
    if not (np.isfinite(high) and np.isfinite(low)):
        raise UnreadableAudioError(path, "the file holds NaN or infinite samples")
    if max(high, -low) < SILENCE_PEAK:
        raise SilentAudioError(path, "the file is silent (every sample is below one 16-bit step)")
    if mono and data.shape[1] > 1:
        data = downmix(data)
        if max(float(data.max()), -float(data.min())) < SILENCE_PEAK:
            raise SilentAudioError(
                path, "the mono mix is silent (the channels cancel out or are near-silent)"
            )
    elif mono:
        data = data[:, 0]
    if source_rate != sample_rate:
        data = soxr.resample(data, source_rate, sample_rate, quality="HQ")
    data = np.ascontiguousarray(data, dtype=np.float32)
    return data if mono else np.ascontiguousarray(data.T)


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


def downmix(data: np.ndarray) -> np.ndarray:
    """The mean of the channels of (frames, channels) float32 audio. Summing columns is several
    times faster than `mean(axis=1)`, whose reduction over a short inner axis is slow; a mono file
    costs nothing (a view)."""
    channels = data.shape[1]
    if channels == 1:
        return data[:, 0]
    out = data[:, 0].copy()
    for c in range(1, channels):
        out += data[:, c]
    out /= np.float32(channels)
    return out


def open_error(path: str | os.PathLike, err: BaseException) -> AudioError:
    """The typed error for a file that the decoder could not open: missing, a folder, 0 bytes
    (EmptyAudioError), or not decodable (with the decoder's reason, unless it is misleading)."""
    p = Path(path)
    if not p.exists():
        return UnreadableAudioError(path, "no such file")
    if p.is_dir():
        return UnreadableAudioError(path, "a folder, not an audio file")
    if p.stat().st_size == 0:
        return EmptyAudioError(path, "the file is empty (0 bytes)")
    if not os.access(p, os.R_OK):
        return UnreadableAudioError(path, "permission denied")
    message = str(err).split("': ", 1)[-1]  # libsndfile repeats the path: "Error opening 'x.wav': ..."
    # libsndfile says "File does not exist or is not a regular file" about existing files it cannot
    # parse (e.g. a corrupt mp3): name the real problem instead.
    if "does not exist" in message or not message:
        return UnreadableAudioError(path, "not a recognised audio format, or the file is corrupt")
    return UnreadableAudioError(path, f"not a recognised audio format, or the file is corrupt ({message})")
