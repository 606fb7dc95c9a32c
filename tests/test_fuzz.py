"""Seeded header fuzzing of the decoder: a few hundred mutations of valid WAV, FLAC and MP3 files (flipped
bytes, extreme size/rate/count fields, cut tails) decode or fail with a typed AudioError: never another
exception, a crash or a hang, and the memory a decode takes stays bounded whatever the header claims."""

import io
import resource
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from clmr.audio import AudioError, load

RATE = 8000
MUTATIONS = 200  # per format: 600 decodes, a few seconds in all
PEAK_LIMIT = 64 << 20  # bytes a single decode may allocate at the peak (its audio is ~0.4 s)


def _valid(fmt: str) -> bytes:
    t = np.arange(int(0.4 * RATE)) / RATE
    x = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None].repeat(2, axis=1)
    buffer = io.BytesIO()
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "MP3": "MPEG_LAYER_III"}[fmt]
    sf.write(buffer, x, RATE, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One mutation, mostly of the header region where sizes, rates and counts live."""
    b = bytearray(data)
    head = min(len(b), 128)
    kind = rng.integers(4)
    if kind == 0:  # flip a few bytes
        for pos in rng.integers(0, head, size=rng.integers(1, 6)):
            b[pos] = int(rng.integers(256))
    elif kind == 1:  # an extreme 32-bit field (a size, a rate, a frame count)
        pos = int(rng.integers(0, head - 4))
        value = [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0xFFFFFFF0][int(rng.integers(6))]
        b[pos : pos + 4] = value.to_bytes(4, "little" if rng.integers(2) else "big")
    elif kind == 2:  # cut the file short
        del b[int(rng.integers(1, len(b))) :]
    else:  # both: an extreme field and a cut
        pos = int(rng.integers(0, head - 4))
        b[pos : pos + 4] = b"\xff\xff\xff\x7f"
        del b[int(rng.integers(head, len(b))) :]
    return bytes(b)


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("MP3", "mp3")])
def test_mutated_headers_fail_cleanly_with_bounded_memory(tmp_path, fmt, ext):
    rng = np.random.default_rng(1234 + len(ext))
    valid = _valid(fmt)
    path = tmp_path / f"fuzz.{ext}"
    outcomes = {"ok": 0, "error": 0}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    try:
        for _ in range(MUTATIONS):
            path.write_bytes(_mutate(valid, rng))
            tracemalloc.reset_peak()
            try:
                x = load(path, RATE)
                assert x.dtype == np.float32 and x.ndim == 1
                outcomes["ok"] += 1
            except AudioError as err:  # the only exception allowed, and it names the file
                assert str(path) in str(err)
                outcomes["error"] += 1
            assert tracemalloc.get_traced_memory()[1] < PEAK_LIMIT
    finally:
        tracemalloc.stop()
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert growth_mib < 256  # native allocations too (libsndfile, mpg123) stay bounded
    assert outcomes["ok"] + outcomes["error"] == MUTATIONS and outcomes["error"] > 0
