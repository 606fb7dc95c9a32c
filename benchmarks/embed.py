"""Embedding throughput of the reference SampleCNN on generated 44.1 kHz files (resampled to 22,050 Hz),
every number measured in this process on the same files:

1. decoding alone (files -> crops, `clmr.songs.workers.decoded_songs`; the files `--passes` times over)
   with 0, 1, ..., N decode worker processes, as a speed-up over one worker;
2. `embed_files` end to end with 0, 1 and N workers;
3. crops batched across tracks against a one-track-at-a-time loop (`embed_file` per track);
4. on CUDA: feature extraction alone (the model on crops already decoded into memory, copied to the
   GPU batch by batch as embedding does) against `embed_files` end to end, for the target of at least
   2,000 crops/s and within 1.5x of feature extraction alone.

    python benchmarks/embed.py [--tracks 12] [--seconds 8] [--workers 2] [--device cpu|cuda]
        [--batch-sizes 1,8,32] [--format flac|mp3]

`--device cuda` runs under bf16 autocast; for the GPU target use enough work and workers, e.g.
`--device cuda --workers 8 --tracks 200 --seconds 30 --batch-sizes 64`. Heavy imports (torch, the model) happen inside main():
decode workers re-import this script as their main module, and need only the decoder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from clmr.audio import AudioError
from clmr.songs.workers import decoded_songs

SOURCE_RATE = 44100


def write_tracks(folder: Path, tracks: int, seconds: float, suffix: str) -> tuple[list[str], float]:
    """Generated pieces of lengths spread around `seconds` (44.1 kHz, resampled when embedding)."""
    from clmr.data.synthetic import draw_piece, render

    rng = np.random.default_rng(0)
    paths, total = [], 0.0
    for i in range(tracks):
        length = float(rng.uniform(0.5, 1.5) * seconds)
        piece_rng = np.random.default_rng([0, i])
        paths.append(str(folder / f"track_{i:03d}.{suffix}"))
        sf.write(paths[-1], render(draw_piece(piece_rng), length, SOURCE_RATE, piece_rng), SOURCE_RATE)
        total += length
    return paths, total


def best_of(repeat: int, fn) -> float:
    """The shortest of `repeat` timed calls of `fn` (which waits for the device itself)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def decode_all(paths: list[str], rate: int, crop_length: int, chunk: int, workers: int) -> int:
    """Every crop of `paths` decoded (and dropped) by `workers` processes; the number of crops."""
    n = 0
    for _, open_crops in decoded_songs(paths, rate, crop_length, chunk, workers=workers):
        try:
            n += sum(len(c) for c in open_crops())
        except AudioError:  # an unreadable file counts no crops
            continue
    return n


def table(title: str, rows: dict[str, float], n_crops: int, audio_seconds: float, base: str) -> None:
    print(f"\n{title}")
    print(f"{'':<40} {'seconds':>8} {'crops/s':>9} {'x real-time':>12} {'ratio':>6}")
    for name, seconds in rows.items():
        print(
            f"{name:<40} {seconds:>8.2f} {n_crops / seconds:>9.1f} {audio_seconds / seconds:>12.1f} "
            f"{rows[base] / seconds:>6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracks", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=8.0, help="mean track length")
    parser.add_argument("--workers", type=int, default=2, help="the most decode workers tried")
    parser.add_argument("--passes", type=int, default=10, help="times the decoding test reads the files")
    parser.add_argument("--batch-sizes", default="1,8,32", help="crops per forward pass, comma-separated")
    parser.add_argument("--format", default="flac", choices=["flac", "mp3", "wav"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each (best is reported)")
    args = parser.parse_args()

    import torch

    from clmr.inference import embed_file, embed_files
    from clmr.models import CLMR, SampleCNN
    from clmr.songs.apply import crop_fn, default_batch_size

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = CLMR(SampleCNN()).eval().to(device)  # the reference encoder, 22,050 Hz
    rate, length = model.sample_rate, model.crop_length
    batch = default_batch_size(model, device)
    chunk = max(16, batch)
    with tempfile.TemporaryDirectory() as tmp:
        paths, audio_seconds = write_tracks(Path(tmp), args.tracks, args.seconds, args.format)
        n_crops = decode_all(paths, rate, length, chunk, 0)
        precision = "bf16 autocast" if device.type == "cuda" else "fp32"
        print(
            f"reference SampleCNN, {device} ({precision}, {torch.get_num_threads()} threads), {args.tracks} "
            f"{args.format} tracks at {SOURCE_RATE} Hz, {audio_seconds:.0f} s of audio, {n_crops} crops, "
            f"batch {batch}"
        )

        decode, many = {}, paths * args.passes
        for w in range(args.workers + 1):
            decode_all(paths[: w + 1], rate, length, chunk, w)  # warm-up: worker start-up, caches
            name = f"{w} workers" if w != 1 else "1 worker"
            decode[name] = best_of(args.repeat, lambda w=w: decode_all(many, rate, length, chunk, w))
        title = f"decoding alone, {args.passes} passes (worker start-up included)"
        table(title, decode, n_crops * args.passes, audio_seconds * args.passes, "1 worker")

        def embed(workers: int) -> None:
            list(embed_files(model, paths, batch_size=batch, device=device, workers=workers))
            sync()

        embed(0)  # warm-up
        counts = sorted({0, min(1, args.workers), args.workers})
        ends = {f"embed_files, {w} workers": best_of(args.repeat, lambda w=w: embed(w)) for w in counts}
        table("embedding end to end", ends, n_crops, audio_seconds, f"embed_files, {counts[0]} workers")

        loops = {}
        for size in (int(b) for b in args.batch_sizes.split(",")):

            def loop(size: int = size) -> None:
                for p in paths:
                    embed_file(model, p, batch_size=size, device=device)
                sync()

            def batched(size: int = size) -> None:
                list(embed_files(model, paths, batch_size=size, device=device))
                sync()

            loops[f"one track at a time, batch {size}"] = best_of(args.repeat, loop)
            loops[f"across tracks, batch {size}"] = best_of(args.repeat, batched)
        table("batching across tracks (0 workers)", loops, n_crops, audio_seconds, next(iter(loops)))

        if device.type == "cuda":
            crops = np.concatenate(
                [c for _, open_crops in decoded_songs(paths, rate, length, chunk) for c in open_crops()]
            )
            fn = crop_fn(model, device)

            def features() -> None:
                for start in range(0, len(crops), batch):
                    fn(crops[start : start + batch])
                sync()

            features()  # warm-up
            alone = best_of(args.repeat, features)
            end = ends[f"embed_files, {args.workers} workers"]
            gpu = {"feature extraction alone": alone, f"embed_files, {args.workers} workers": end}
            table("GPU: feature extraction on decoded crops", gpu, n_crops, audio_seconds, next(iter(gpu)))
            print(
                f"target: embed >= 2,000 crops/s ({n_crops / end:,.0f}) and within 1.5x of feature "
                f"extraction alone ({end / alone:.2f}x)"
            )


if __name__ == "__main__":
    main()
