"""Probe a frozen pre-trained encoder on a labelled store: features are extracted once and cached in
the output folder, a linear (reference), MLP or MARBLE head is trained on them under the reference's
protocol (one fixed random crop per train/valid track, last epoch's head) or clmr's, and the test split
is scored song-level (mean of per-crop predictions); a logistic regression on standardised song
features checks the probe. --head own scores a model's own trained head (a supervised run's) the same
way. Writes report.json, report.md, plots and head.safetensors (encoder + head + tag names) to --out.
See docs/evaluation.md."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clmr.evaluate.cli import add_common_arguments

    add_common_arguments(
        parser,
        out_default="evaluation",
        head_help="probe head",
        baseline_help="also probe a random-initialised encoder of the same architecture",
        own_head=True,
    )
    parser.add_argument(
        "--protocol",
        default="reference",
        choices=["reference", "clmr"],
        help="head training: reference (one random crop per train and valid track, drawn and encoded "
        "once; batch 48; the last epoch's head is tested, as the reference's linear_evaluation.py) or "
        "clmr (fresh crops every epoch, validation on every crop, the best epoch's head) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--standardize",
        action="store_true",
        help="standardise features with the training rows' mean and std before the head (a "
        "non-affine BatchNorm, as MAE-style linear probes do); folded into the saved head",
    )
    parser.add_argument(
        "--label-fraction",
        type=float,
        nargs="+",
        default=[1.0],
        metavar="F",
        help="train heads on these label fractions, drawn from the training tracks (default: 1)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[42],
        metavar="N",
        help="one head per seed: mean ± std (default: 42)",
    )
    parser.add_argument("--knn", type=int, metavar="K", help="also score a cosine K-NN on song embeddings")
    parser.add_argument(
        "--train-crops",
        type=int,
        default=1,
        metavar="K",
        help="--protocol clmr: random crops per training track per epoch (default: %(default)s)",
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=200,
        metavar="N",
        help="head training epochs at most (default: %(default)s)",
    )
    parser.add_argument(
        "--head-batch-size",
        type=int,
        default=48,
        metavar="N",
        help="head training mini-batch in crops (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="crops per encoder pass when extracting (default: 256 GPU, 16 CPU)",
    )


def run(args: argparse.Namespace) -> int:
    from clmr.evaluate import Recipe, evaluate
    from clmr.evaluate.cli import run_and_print

    return run_and_print(
        evaluate,
        args,
        label_fractions=args.label_fraction,
        seeds=args.seed,
        knn=args.knn,
        protocol=args.protocol,
        standardize=args.standardize,
        train_crops=args.train_crops,
        batch_size=args.batch_size,
        recipe=Recipe(max_epochs=args.max_epochs, batch_size=args.head_batch_size),
    )
