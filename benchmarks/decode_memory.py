"""Decode memory benchmark: peak allocation (tracemalloc, which sees numpy buffers) and time of decoding
one long file, the whole-file approach (`soundfile.read` of every frame the header announces, then
`soxr.resample`, as clmr.audio.load did before) against clmr's block-streamed `load` and the
preprocessor's int16 `decode`, in the same process on the same generated file.

Usage: python benchmarks/decode_memory.py [--minutes 10] [--rate 44100] [--channels 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from clmr.audio import downmix, load
from clmr.data.preprocessing import decode

OUT_RATE = 22050


def whole_file(path: Path) -> np.ndarray:
    """The whole-file approach: every frame at once, downmix, resample."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return soxr.resample(downmix(data), rate, OUT_RATE, quality="HQ").astype(np.float32)


def measure(fn, *args) -> tuple[float, float]:
    """(peak MiB allocated, seconds) of one call."""
    tracemalloc.start()
    start = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / (1 << 20)
    tracemalloc.stop()
    return peak, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--channels", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        frames = int(args.minutes * 60 * args.rate)
        with sf.SoundFile(path, "w", args.rate, args.channels, subtype="PCM_16") as f:
            rng = np.random.default_rng(0)
            for start in range(0, frames, 1 << 20):
                n = min(1 << 20, frames - start)
                f.write((0.3 * rng.standard_normal((n, args.channels))).astype(np.float32).clip(-1, 1))
        base_peak, base_s = measure(whole_file, path)
        rows = [("whole file: sf.read + soxr.resample (before)", base_peak, base_s)]
        rows.append(("clmr.audio.load (streamed blocks, float32)", *measure(load, path, OUT_RATE)))
        rows.append(("preprocess decode (streamed blocks, int16)", *measure(decode, str(path), OUT_RATE, 1)))
        print(f"{args.minutes:g} min, {args.rate} Hz, {args.channels} ch -> {OUT_RATE} Hz mono")
        print(f"{'method':48} {'peak MiB':>9} {'vs before':>9} {'seconds':>8} {'vs before':>9}")
        for name, peak, seconds in rows:
            print(f"{name:48} {peak:9.1f} {peak / base_peak:9.2f} {seconds:8.2f} {seconds / base_s:9.2f}")


if __name__ == "__main__":
    main()
