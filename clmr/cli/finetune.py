"""Fine-tune a pre-trained encoder and a new head end to end on a labelled store (encoder learning
rate 10x lower by default, early stopping on validation loss), then score the test split with the
same song-level protocol as `clmr evaluate`. Writes model.safetensors (encoder + head + tag names),
report.json, report.md and plots to --out. See docs/evaluation.md."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clmr.evaluate.cli import add_common_arguments

    add_common_arguments(
        parser,
        out_default="finetune",
        head_help="head on the encoder",
        baseline_help="also train the same architecture from a random initialisation (supervised)",
    )
    parser.add_argument(
        "--label-fraction",
        type=float,
        default=1.0,
        metavar="F",
        help="train on this fraction (see --fraction-of) of the labelled tracks, drawn from the training "
        "tracks (default: %(default)s)",
    )
    from clmr.config import load_config
    from clmr.presets import FINETUNE

    recipe = load_config(recipe=FINETUNE)  # the defaults, stated once in clmr.presets.FINETUNE
    for flag, metavar, kind, default, what in (
        ("--lr", "LR", float, recipe.optim.lr, "head learning rate"),
        ("--max-epochs", "N", int, recipe.trainer.max_epochs, "epochs at most"),
        ("--patience", "N", int, recipe.trainer.early_stopping_patience, "early stopping patience in epochs"),
        ("--batch-size", "N", int, recipe.batch_size, "training batch, one random crop per track"),
        ("--seed", "N", int, recipe.seed, "seed"),
        ("--workers", "N", int, recipe.trainer.num_workers, "data loader worker processes"),
    ):
        parser.add_argument(flag, type=kind, metavar=metavar, help=f"{what} (default: {default})")
    parser.add_argument(
        "--encoder-lr-factor",
        type=float,
        default=0.1,
        metavar="X",
        help="encoder learning rate = lr x this; 0 keeps its weights, BatchNorm statistics still adapt (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from clmr.evaluate import finetune
    from clmr.evaluate.cli import run_and_print

    return run_and_print(
        finetune,
        args,
        label_fraction=args.label_fraction,
        lr=args.lr,
        encoder_lr_factor=args.encoder_lr_factor,
        max_epochs=args.max_epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        seed=args.seed,
        num_workers=args.workers,
    )
