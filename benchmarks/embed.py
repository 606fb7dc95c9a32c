"""Embedding throughput (x real-time) of the reference SampleCNN: crops batched across tracks
(`clmr.inference.embed_files`) against a one-track-at-a-time loop (`embed_file` per track, crops
batched within the track), both decoding the same generated files in the same process.

    python benchmarks/embed.py [--tracks 12] [--seconds 8] [--batch-sizes 1,8,32] [--device cpu|cuda]

`--device cuda` runs under bf16 autocast. Prints a table with the ratio against the loop.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from clmr.data.synthetic import draw_piece, render
from clmr.inference import embed_file, embed_files
from clmr.models import CLMR, SampleCNN


def write_tracks(folder: Path, tracks: int, seconds: float, sample_rate: int) -> tuple[list[Path], float]:
    """Generated pieces of lengths spread around `seconds` (44.1 kHz FLAC, resampled when embedding)."""
    rng = np.random.default_rng(0)
    paths, total = [], 0.0
    for i in range(tracks):
        length = float(rng.uniform(0.5, 1.5) * seconds)
        piece_rng = np.random.default_rng([0, i])
        paths.append(folder / f"track_{i:03d}.flac")
        sf.write(paths[-1], render(draw_piece(piece_rng), length, 44100, piece_rng), 44100)
        total += length
    return paths, total


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracks", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=8.0, help="mean track length")
    parser.add_argument("--batch-sizes", default="1,8,32", help="crops per forward pass, comma-separated")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each (best is reported)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = CLMR(SampleCNN()).eval().to(args.device)  # the reference encoder, 22,050 Hz
    with tempfile.TemporaryDirectory() as tmp:
        paths, audio_seconds = write_tracks(Path(tmp), args.tracks, args.seconds, model.sample_rate)
        n_crops = sum(
            max(1, int(sf.info(str(p)).duration * model.sample_rate) // model.crop_length) for p in paths
        )
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        embed_file(model, paths[0], batch_size=sizes[0], device=args.device)  # warm-up
        results = {}
        for size in sizes:

            def loop(size: int = size) -> None:
                for p in paths:
                    embed_file(model, p, batch_size=size, device=args.device)

            def batched(size: int = size) -> None:
                list(embed_files(model, paths, batch_size=size, device=args.device))

            results[f"one track at a time, batch {size}"] = min(timed(loop) for _ in range(args.repeat))
            results[f"across tracks, batch {size}"] = min(timed(batched) for _ in range(args.repeat))

    precision = "bf16 autocast" if torch.device(args.device).type == "cuda" else "fp32"
    print(
        f"reference SampleCNN, {args.device} ({precision}, {torch.get_num_threads()} threads), "
        f"{args.tracks} tracks, {audio_seconds:.0f} s of audio, {n_crops} crops"
    )
    base = next(iter(results.values()))
    print(f"{'method':<34} {'seconds':>8} {'crops/s':>9} {'x real-time':>12} {'ratio':>6}")
    for name, seconds in results.items():
        print(
            f"{name:<34} {seconds:>8.2f} {n_crops / seconds:>9.1f} {audio_seconds / seconds:>12.1f} "
            f"{base / seconds:>6.2f}"
        )


if __name__ == "__main__":
    main()
