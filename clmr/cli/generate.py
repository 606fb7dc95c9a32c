"""Write a seeded set of synthetic music: OUT/audio/track_NNNNN.<fmt>, OUT/tags.csv (multi-label:
instruments, drums/no drums, fast/slow, major/minor, loud/quiet), OUT/genre.csv (single label: one of
five style archetypes) and OUT/tracks.csv (every drawn attribute). Both CSVs carry a train/valid/test
split column; `clmr preprocess OUT --labels OUT/tags.csv` turns the set into a store."""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out", help="output folder (created; another set's track files in OUT/audio are replaced)"
    )
    parser.add_argument("--tracks", type=int, default=200, help="number of pieces (at least 1)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each piece in seconds")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same set")
    parser.add_argument("--sample-rate", type=int, default=22050, help="sample rate of the files")
    parser.add_argument("--format", choices=["wav", "flac", "mp3"], default="wav", help="audio format")


def run(args: argparse.Namespace) -> int:
    from clmr.data.synthetic import generate  # here: it adds ~25 ms to every `clmr --help`

    start = time.perf_counter()
    out = generate(
        args.out,
        args.tracks,
        seconds=args.seconds,
        seed=args.seed,
        sample_rate=args.sample_rate,
        fmt=args.format,
    )
    print(
        f"wrote {len(out.files)} pieces x {args.seconds:g} s to {out.root / 'audio'} "
        f"in {time.perf_counter() - start:.1f} s; labels: {out.tags_csv} (multi-label), {out.genre_csv} (genre)\n"
        f"next: clmr preprocess {out.root} --labels {out.tags_csv} --out STORE"
    )
    return 0
