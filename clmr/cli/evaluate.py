"""Probe a frozen pre-trained encoder on a labelled store: features of every crop are extracted once
and cached in the output folder, a linear (reference), MLP or MARBLE head is trained on them with the
reference recipe, and the test split is scored song-level (mean of per-crop predictions). Writes
report.json, report.md, plots and head.safetensors (encoder + head + tag names) to --out."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="clmr .safetensors, run directory, or reference .pt/.ckpt"
    )
    parser.add_argument("--data", required=True, help="labelled store made by `clmr preprocess`")
    parser.add_argument("--head", default="linear", choices=["linear", "mlp", "marble"], help="probe head")
    parser.add_argument(
        "--label-fraction",
        type=float,
        nargs="+",
        default=[1.0],
        help="train on these fractions of labelled tracks",
    )
    parser.add_argument("--seed", type=int, nargs="+", default=[42], help="one head per seed (mean ± std)")
    parser.add_argument("--baseline", choices=["random"], help="also probe a random-initialised encoder")
    parser.add_argument("--knn", type=int, metavar="K", help="also score a cosine K-NN on song embeddings")
    parser.add_argument(
        "--train-crops", type=int, default=1, help="random crops per training track per epoch"
    )
    parser.add_argument("--max-epochs", type=int, default=200, help="head training epochs at most")
    parser.add_argument("--head-batch-size", type=int, default=48, help="head training mini-batch (crops)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="crops per encoder pass when extracting (default: 256 GPU, 16 CPU)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--out", default="evaluation", help="output folder (features cache, report, plots)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import torch

    from clmr.evaluate import Recipe, evaluate
    from clmr.evaluate.cli_output import print_summary

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = evaluate(
        args.checkpoint,
        args.data,
        args.out,
        head=args.head,
        label_fractions=args.label_fraction,
        seeds=args.seed,
        baseline=args.baseline,
        knn=args.knn,
        train_crops=args.train_crops,
        device=device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        recipe=Recipe(max_epochs=args.max_epochs, batch_size=args.head_batch_size),
    )
    print_summary(report, args.out)
    return 0
