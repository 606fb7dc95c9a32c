"""Audio decoding: any wav/flac/ogg/mp3/opus/aiff/au file -> float32 mono at the requested sample rate,
whole (`load`) or block by block (`read_blocks`, so a one-hour file never sits in memory whole).

Decoding uses libsndfile (through soundfile; 1.1+ reads mp3 and opus) and resampling uses soxr at
HQ quality. Every failure is a typed `AudioError` that names the file, so callers (the preprocessor's
skip manifest, the CLI) can tell unreadable, empty and silent files apart.
"""

from __future__ import annotations

import os
import stat
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

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        """Pickled by (path, detail), so that a decode worker process can send it back."""
        return type(self), (self.path, self.detail)


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


def load(
    path: str | os.PathLike, sample_rate: int = 22050, *, mono: bool = True, notes: list[str] | None = None
) -> np.ndarray:
    """Decode `path` to float32 at `sample_rate` Hz: shape (T,) when `mono` (mean of the channels),
    else (channels, T). Decodes block by block, so memory follows the audio actually in the file,
    never the length its header claims. Raises UnreadableAudioError, EmptyAudioError or
    SilentAudioError; a file cut short is decoded as far as it goes and a note is added to `notes`."""
    blocks = list(_stream(path, sample_rate, BLOCK_SAMPLES, mono, notes))
    if mono:
        return np.concatenate(blocks) if len(blocks) != 1 else blocks[0]
    return np.ascontiguousarray(np.concatenate(blocks).T)


BLOCK_SAMPLES = 1 << 16
"""Samples (at the output rate) decoded per read by default (~3 s at 22,050 Hz)."""

UNKNOWN_LENGTH = 1 << 62
"""A frame count at or above this is libsndfile's "length unknown", not a claim."""

MAX_BLOCK_VALUES = 1 << 20
"""At most this many samples (frames x channels) are read at once, whatever the header says."""

SOURCE_RATES = (1000, 1_000_000)
"""Sample rates (Hz) accepted in a file's header: outside them a header is corrupt (and a 1 Hz claim
would make a small file resample to gigabytes)."""


def read_blocks(
    path: str | os.PathLike,
    sample_rate: int,
    block_samples: int = BLOCK_SAMPLES,
    notes: list[str] | None = None,
) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks of about `block_samples` samples of `path` at `sample_rate` Hz
    (decoded and resampled with soxr HQ incrementally).

    Raises the same typed errors as `clmr.audio.load`; emptiness and silence are only known at the
    end of the file, so they are raised after the last block (as is the truncation note).
    """
    return _stream(path, sample_rate, block_samples, True, notes)


def _stream(
    path: str | os.PathLike, sample_rate: int, block_samples: int, mono: bool, notes: list[str] | None
) -> Iterator[np.ndarray]:
    """Blocks of `path` at `sample_rate`: (T,) when `mono`, else (T, channels)."""
    handle = _open(path)
    with handle:
        rate, channels = handle.samplerate, handle.channels
        if not SOURCE_RATES[0] <= rate <= SOURCE_RATES[1]:
            raise UnreadableAudioError(
                path, f"the header claims {rate} Hz (outside {SOURCE_RATES[0]}..{SOURCE_RATES[1]}): corrupt"
            )
        wanted = max(1024, int(block_samples * rate / sample_rate))  # not a read per few frames
        block_frames = max(1, min(wanted, MAX_BLOCK_VALUES // max(1, channels)))
        width = 1 if mono else channels
        resampler = (
            soxr.ResampleStream(rate, sample_rate, width, dtype="float32", quality="HQ")
            if rate != sample_rate
            else None
        )
        frames, peak, mix_peak = 0, 0.0, 0.0
        while True:
            try:
                block = handle.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError, MemoryError) as err:
                raise UnreadableAudioError(path, f"decoding failed after {frames} frames ({err})") from err
            last = len(block) < block_frames
            if len(block):
                high, low = float(block.max()), float(block.min())  # NaN and inf carry through
                if not (np.isfinite(high) and np.isfinite(low)):
                    raise UnreadableAudioError(path, "the file holds NaN or infinite samples")
                peak = max(peak, high, -low)
                frames += len(block)
            if mono:
                block = downmix(block)
                if len(block):
                    mix_peak = max(mix_peak, float(block.max()), -float(block.min()))
            out = resampler.resample_chunk(block, last=last) if resampler is not None else block
            if len(out):
                yield np.ascontiguousarray(out, dtype=np.float32)
            if last:
                break
        claimed = handle.frames
    if frames == 0:
        raise EmptyAudioError(path, "the file holds no audio samples")
    if peak < SILENCE_PEAK:
        raise SilentAudioError(path, "the file is silent (every sample is below one 16-bit step)")
    if mono and mix_peak < SILENCE_PEAK:
        raise SilentAudioError(path, "the mono mix is silent (the channels cancel out or are near-silent)")
    if notes is not None:
        note = truncation(path, frames, claimed)
        if note:
            notes.append(note)


def _open(path: str | os.PathLike) -> sf.SoundFile:
    """The decoder on `path`, refusing anything but a regular file (a FIFO would block forever)."""
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a folder gets open_error's message
            raise UnreadableAudioError(path, "not a regular file (a FIFO, socket or device); not read")
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError, MemoryError) as err:
        raise open_error(path, err) from err


def truncation(path: str | os.PathLike, frames: int, claimed: int) -> str | None:
    """A note when the file holds fewer samples than its header says (cut short by a copy or a download),
    else None: from the decoder's frame count, or the data size a WAV/AIFF/AU header states, or an Ogg
    stream without its end-of-stream page."""
    if frames < claimed < UNKNOWN_LENGTH:
        return f"truncated: decoded {frames} of the {claimed} frames the header claims"
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - (1 << 16)))
            tail = f.read()
    except OSError:
        return None
    stated = _stated_data_end(head)
    if stated is not None and stated > size:
        return f"truncated: the header states {stated} bytes of audio data but the file has {size}"
    page = tail.rfind(b"OggS")
    if head.startswith(b"OggS") and page >= 0 and len(tail) > page + 5 and not tail[page + 5] & 4:
        return "truncated: the Ogg stream ends without its end-of-stream page"
    return None


def _stated_data_end(head: bytes) -> int | None:
    """The file size a WAV, AIFF or AU header implies (end of its audio data), when it states one."""
    if head[:4] == b".snd" and len(head) >= 12:
        offset, length = int.from_bytes(head[4:8], "big"), int.from_bytes(head[8:12], "big")
        return None if length == 0xFFFFFFFF else offset + length
    big = head[:4] in (b"FORM", b"RIFX")
    if head[:4] not in (b"RIFF", b"RIFX", b"FORM"):
        return None
    wanted = b"SSND" if head[:4] == b"FORM" else b"data"
    pos = 12
    while pos + 8 <= len(head):
        chunk, length = (
            head[pos : pos + 4],
            int.from_bytes(head[pos + 4 : pos + 8], "big" if big else "little"),
        )
        if chunk == wanted:
            unknown = length in (0, 0xFFFFFFFF)  # written by streaming encoders that never went back
            return None if unknown else pos + 8 + length
        pos += 8 + length + (length & 1)
    return None


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
