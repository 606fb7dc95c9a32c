"""Run the main job on built-in data: generate tagged synthetic music, preprocess it, pre-train the
`tiny` preset (a small SampleCNN at 8 kHz) with an online linear probe, then probe the frozen encoder
on held-out tracks against a random-initialised one. Takes a few minutes on a laptop CPU; everything
lands under --out."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clmr.demo import DEMO_SECONDS, DEMO_SEED, DEMO_TRACKS

    parser.add_argument("--out", default="demo-run", help="folder for the music, store and run")
    parser.add_argument("--tracks", type=int, default=DEMO_TRACKS, help="pieces to generate")
    parser.add_argument("--seconds", type=float, default=DEMO_SECONDS, help="length of each piece")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="seed of the generated music")
    parser.add_argument("--max-epochs", type=int, help="pre-training epochs (default: the tiny preset's)")


def run(args: argparse.Namespace) -> int:
    from clmr.demo import format_summary, run_demo

    overrides = {"trainer.max_epochs": args.max_epochs} if args.max_epochs else {}
    summary = run_demo(
        args.out, tracks=args.tracks, seconds=args.seconds, seed=args.seed, overrides=overrides
    )
    print(format_summary(summary))
    return 0
