"""Data pipeline benchmark: preprocessing throughput and crop loading, each against the reference
approach run in the same process on the same generated mp3 set.

- preprocess: `clmr.data.preprocess` (decode + resample once, on a thread per core) vs the reference's
  one `ffmpeg` subprocess per file, serial, to 22,050 Hz mono WAV (row skipped if ffmpeg is missing).
- crops: random 59,049-sample crop pairs from the store (one process, memory map) vs decoding the
  whole file per example as the reference does (its WAVs, and the mp3 directly).

Usage: python benchmarks/data.py [--tracks 40] [--seconds 30]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from clmr.data import ContrastivePairs, preprocess
from clmr.data.synthetic import generate

CROP = 59049
RATE = 22050


def ffmpeg_convert(files: list[Path], out: Path) -> None:
    """The reference preprocessing: one ffmpeg process per file, one file at a time."""
    out.mkdir()
    for f in files:
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(f),
                "-ar",
                str(RATE),
                "-ac",
                "1",
                str(out / f"{f.stem}.wav"),
            ],
            check=True,
        )


def decode_per_crop(files: list[Path], n: int, rng: np.random.Generator) -> None:
    """The reference loading: read the whole file for every example, then crop twice."""
    for k in range(n):
        audio, rate = sf.read(files[k % len(files)], dtype="float32")
        if rate != RATE:
            import soxr

            audio = soxr.resample(audio, rate, RATE)
        for _ in range(2):
            start = int(rng.integers(0, max(1, len(audio) - CROP)))
            audio[start : start + CROP].copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        data = generate(tmp / "mp3", args.tracks, seconds=args.seconds, seed=0, sample_rate=16000, fmt="mp3")
        gen_s = time.perf_counter() - t0
        audio_s = args.tracks * args.seconds
        print(f"generated {args.tracks} mp3 x {args.seconds:g} s (16 kHz, MTAT-like) in {gen_s:.1f} s")

        t0 = time.perf_counter()
        store = preprocess(
            data.root, tmp / "store", sample_rate=RATE, workers=args.workers, min_length=1, progress=False
        )
        ours = time.perf_counter() - t0
        if shutil.which("ffmpeg"):
            t0 = time.perf_counter()
            ffmpeg_convert(data.files, tmp / "wav")
            ref = time.perf_counter() - t0
            rows.append(
                ("preprocess: ffmpeg per file, serial (reference)", f"{audio_s / ref:.0f}x real-time", "1.0")
            )
            rows.append(
                (
                    f"preprocess: clmr ({args.workers} decoding threads)",
                    f"{audio_s / ours:.0f}x real-time",
                    f"{ref / ours:.1f}",
                )
            )
        else:
            print("ffmpeg not found: skipping the reference preprocessing row (apt-get install ffmpeg)")
            rows.append(
                (
                    f"preprocess: clmr ({args.workers} decoding threads)",
                    f"{audio_s / ours:.0f}x real-time",
                    "-",
                )
            )

        rng = np.random.default_rng(0)
        n_ref = 60
        wavs = sorted((tmp / "wav").glob("*.wav")) if (tmp / "wav").is_dir() else []
        t0 = time.perf_counter()
        decode_per_crop(wavs or data.files, n_ref, rng)
        ref_rate = 2 * n_ref / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        decode_per_crop(data.files, n_ref // 3, rng)
        mp3_rate = 2 * (n_ref // 3) / (time.perf_counter() - t0)
        view = ContrastivePairs(store, None, CROP)
        n = 20000
        t0 = time.perf_counter()
        for k in range(n):
            view[k % len(view)]
        ours_rate = 2 * n / (time.perf_counter() - t0)
        label = "WAV" if wavs else "mp3 (no ffmpeg WAVs)"
        rows.append((f"crops/s: decode whole {label} per example (reference)", f"{ref_rate:,.0f}", "1.0"))
        rows.append(
            ("crops/s: decode whole mp3 per example", f"{mp3_rate:,.0f}", f"{mp3_rate / ref_rate:.2f}")
        )
        rows.append(
            ("crops/s: store memory map, 1 process", f"{ours_rate:,.0f}", f"{ours_rate / ref_rate:.0f}")
        )
    width = max(len(r[0]) for r in rows)
    print(f"\n{'stage':<{width}}  {'throughput':>18}  {'ratio':>6}")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>18}  {ratio:>6}")


if __name__ == "__main__":
    main()
