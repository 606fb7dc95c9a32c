"""Run the main job on built-in data: generate tagged synthetic music, preprocess it, pre-train the
`tiny` preset (a small SampleCNN at 8 kHz) with an online linear probe, then probe the frozen encoder
on held-out tracks against a random-initialised one. Takes a few minutes on a laptop CPU; everything
lands under --out."""

from __future__ import annotations

import argparse

MIN_TRACKS = 50  # a tenth each goes to valid and test; the tiny preset trains on batches of 32 songs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clmr.demo import DEMO_SECONDS, DEMO_SEED, DEMO_TRACKS

    parser.formatter_class = argparse.HelpFormatter  # defaults are in the help lines
    parser.add_argument(
        "--out",
        default="demo-run",
        metavar="DIR",
        help="folder for the music, store and run (default: %(default)s)",
    )
    parser.add_argument(
        "--tracks",
        type=int,
        default=DEMO_TRACKS,
        metavar="N",
        help=f"pieces to generate, at least {MIN_TRACKS} (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEMO_SECONDS,
        metavar="S",
        help="length of each piece (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEMO_SEED,
        metavar="N",
        help="seed of the generated music (default: %(default)s)",
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        metavar="N",
        help="pre-training epochs (default: the tiny preset's, 120)",
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Options the demo cannot run with, refused before any music is generated."""
    from clmr.config import ConfigError, load_config

    tiny = load_config("tiny")
    shortest = tiny.crop_length / tiny.sample_rate
    if args.tracks < MIN_TRACKS:
        raise ConfigError(
            f"--tracks {args.tracks}: the demo needs at least {MIN_TRACKS} pieces (the tiny preset trains on "
            f"batches of {tiny.batch_size} songs, and a tenth of the pieces each go to valid and test)"
        )
    if args.seconds < shortest:
        raise ConfigError(
            f"--seconds {args.seconds:g}: pieces must be at least one crop long ({shortest:.2f} s for the tiny preset)"
        )
    if args.max_epochs is not None and args.max_epochs < 1:
        raise ConfigError(f"--max-epochs must be at least 1, got {args.max_epochs}")


def run(args: argparse.Namespace) -> int:
    from clmr.demo import format_summary, run_demo

    check_arguments(args)
    overrides = {"trainer.max_epochs": args.max_epochs} if args.max_epochs is not None else {}
    summary = run_demo(
        args.out, tracks=args.tracks, seconds=args.seconds, seed=args.seed, overrides=overrides
    )
    print(format_summary(summary))
    return 0
