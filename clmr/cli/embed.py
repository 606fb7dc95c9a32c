"""Embed audio files, folders (searched recursively) or glob patterns into a table: one row per
track (path, duration, n_crops, embedding = mean of h over the track's crops, by default consecutive
and non-overlapping). The format follows --out's suffix: .parquet, .npz or .csv.

Rerunning on the same --out skips tracks already embedded; unusable files are listed in
OUT.errors.csv (next to the table) with their reason, and the job goes on."""

from __future__ import annotations

import argparse
import sys

from clmr.cli.models import add_model_and_inputs, resolve_model, split_model

# Options whose default is None explain it in their help text; "%(default).0s" renders as nothing
# and keeps the default-adding help formatter from appending "(default: None)".


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_and_inputs(parser, "PATH", "audio files, folders or glob patterns (quote globs)")
    parser.add_argument(
        "--out",
        default="embeddings.parquet",
        help="table to write or extend: .parquet, .npz (arrays embedding, path, ...) or .csv (path, "
        "duration, n_crops, e0, e1, ...); failures go to OUT.errors.csv (OUT without its suffix)",
    )
    parser.add_argument(
        "--per-crop",
        action="store_true",
        help="also store every crop's embedding and start time (crop_embeddings and crop_start_s; in "
        ".npz: crop_embedding, crop_start_s, crop_track)",
    )
    parser.add_argument(
        "--hop",
        type=float,
        metavar="SECONDS",
        help="seconds between crop starts (default: the crop length, non-overlapping crops as in the "
        "reference evaluation)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="crops per forward pass (default: by model size and device; 1 on CPU, 64 on GPU for the "
        "reference model)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes decoding files ahead of the model (default: one less than the cores, at most "
        "8; 0: decode in the main process)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1, mps"
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        help="sample rate of a reference checkpoint (default 22050); a clmr checkpoint records its own "
        "rate, and a different one is refused",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `clmr --help` imports every command module, and these pull in torch
    from clmr.inference.catalogue import embed_catalogue
    from clmr.models import load_model

    checkpoint, paths = split_model(args, "audio files or folders")
    checkpoint = resolve_model(checkpoint)  # the table records the model's file
    model = load_model(checkpoint, sample_rate=args.sample_rate)
    summary = embed_catalogue(
        model,
        checkpoint,
        paths,
        args.out,
        batch_size=args.batch_size,
        device=args.device,
        per_crop=args.per_crop,
        progress=not args.quiet,
        hop=args.hop,
        workers=args.workers,
    )
    print(
        f"{summary.out}: embedded {summary.embedded} tracks ({summary.audio_seconds:,.0f} s of audio, "
        f"{summary.realtime:,.1f}x real-time), skipped {summary.skipped} already embedded, "
        f"{len(summary.failed)} not embedded (unreadable, empty, silent, missing or unsupported)"
        + (f", {summary.noted} embedded with decoder warnings" if summary.noted else "")
        + (f" (listed in {summary.errors_csv})" if summary.failed or summary.noted else ""),
        file=sys.stderr,
    )
    return 0
