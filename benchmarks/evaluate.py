"""Benchmark of evaluation: feature extraction batched across tracks (clmr) against the reference's
one-track-at-a-time loop, and head training on cached crop features (clmr's protocol: fresh crops
every epoch, none re-encoded) against a naive baseline that re-encodes a random crop per training
track every epoch. That baseline is not the reference's: the reference encodes one crop per track
once, before training (`--protocol reference`). Both baselines run in the same process.

    python benchmarks/evaluate.py [--width 1.0] [--tracks 24] [--seconds 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0, help="SampleCNN width (1.0 = reference)")
    parser.add_argument("--tracks", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=30.0, help="track length (MTAT clips are ~30 s)")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="crops per forward pass (clmr; try 256 on a GPU)"
    )
    parser.add_argument("--epochs", type=int, default=50, help="head epochs timed on cached features")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    from clmr.data import preprocess
    from clmr.data.synthetic import generate
    from clmr.evaluate.features import extract
    from clmr.evaluate.probe import Recipe, train_head
    from clmr.models import CLMR, SampleCNN
    from clmr.songs import track_crops

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        gen = generate(Path(tmp) / "gen", args.tracks, seconds=args.seconds, seed=0)
        store = preprocess(gen.root, Path(tmp) / "store", labels=gen.tags_csv, workers=0, progress=False)
        torch.manual_seed(0)
        model = CLMR(SampleCNN(width=args.width)).to(device).eval()
        tracks = np.arange(len(store))
        audio_s = store.lengths.sum() / store.sample_rate
        L = model.crop_length

        extract(model, store, tracks[:2], batch_size=args.batch_size, device=device)  # warm-up
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        sync()
        t = time.perf_counter()
        with torch.no_grad():  # reference: one track's crops per forward pass, fp32
            ref = [
                model.embed(torch.as_tensor(track_crops(store, int(i), L)).to(device)).cpu() for i in tracks
            ]
        sync()
        t_ref = time.perf_counter() - t
        n_crops = sum(len(r) for r in ref)

        t = time.perf_counter()
        feats = extract(model, store, tracks, batch_size=args.batch_size, device=device)
        sync()
        t_ours = time.perf_counter() - t

        rows = [
            ("reference: one track per forward", t_ref),
            (f"clmr: {args.batch_size} crops across tracks", t_ours),
        ]
        print(
            f"\nfeature extraction: {len(tracks)} tracks, {n_crops} crops, {audio_s:.0f} s of audio, "
            f"SampleCNN width {args.width}, {device}"
        )
        print(f"{'method':<40} {'seconds':>8} {'crops/s':>9} {'x real-time':>12} {'speed-up':>9}")
        for name, sec in rows:
            print(f"{name:<40} {sec:8.2f} {n_crops / sec:9.1f} {audio_s / sec:12.1f} {t_ref / sec:9.2f}")

        # Head training: cached features vs a naive loop re-encoding a random crop per track every epoch
        # (not the reference: it encodes one crop per track once, before training).
        targets = store.targets(tracks)
        recipe = Recipe(max_epochs=args.epochs, stop_patience=args.epochs + 1)
        t = time.perf_counter()
        trained = train_head(
            "linear",
            feats,
            targets,
            feats,
            targets,
            store.task,
            len(store.vocab),
            recipe=recipe,
            device=device,
        )
        t_cached = time.perf_counter() - t
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        with torch.no_grad():
            crops = np.stack(
                [
                    store.crop(int(i), int(rng.integers(0, max(1, store.length(int(i)) - L))), L)
                    for i in tracks
                ]
            )
            for s in range(0, len(crops), recipe.batch_size):
                model.embed(torch.as_tensor(crops[s : s + recipe.batch_size]).to(device))
        sync()
        t_epoch_ref = time.perf_counter() - t + t_cached / trained.epochs
        print(
            f"\nhead training ({trained.epochs} epochs, linear, {len(tracks)} tracks, batch {recipe.batch_size})"
        )
        print(f"{'method':<40} {'seconds':>8} {'s/epoch':>9} {'speed-up':>9}")
        print(
            f"{'baseline: re-encode crops every epoch*':<40} {t_epoch_ref * trained.epochs:8.2f} {t_epoch_ref:9.3f} {1.0:9.2f}"
        )
        print(
            f"{'clmr: cached crop features':<40} {t_cached:8.2f} {t_cached / trained.epochs:9.3f} "
            f"{t_epoch_ref * trained.epochs / t_cached:9.1f}"
        )
        print("* one epoch of encoder passes measured, extrapolated to the same number of epochs")
        print("  (a naive loop, not the reference: it encodes one crop per track once, before training)")


if __name__ == "__main__":
    main()
