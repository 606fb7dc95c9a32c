"""Fine-tune a pre-trained encoder and a new head end to end on a labelled store (encoder learning
rate 10x lower by default, early stopping on validation loss), then score the test split with the
same song-level protocol as `clmr evaluate`. Writes model.safetensors (encoder + head + tag names),
report.json, report.md and plots to --out."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="clmr .safetensors, run directory, or reference .pt/.ckpt"
    )
    parser.add_argument("--data", required=True, help="labelled store made by `clmr preprocess`")
    parser.add_argument(
        "--head", default="linear", choices=["linear", "mlp", "marble"], help="head on the encoder"
    )
    parser.add_argument(
        "--label-fraction", type=float, default=1.0, help="train on this fraction of labelled tracks"
    )
    parser.add_argument("--baseline", choices=["random"], help="also train the same model from random init")
    parser.add_argument("--lr", type=float, default=1e-3, help="head learning rate")
    parser.add_argument("--encoder-lr-factor", type=float, default=0.1, help="encoder lr = lr x this")
    parser.add_argument("--max-epochs", type=int, default=200, help="epochs at most")
    parser.add_argument("--patience", type=int, default=10, help="early stopping patience (epochs)")
    parser.add_argument("--batch-size", type=int, default=48, help="training batch (one crop per track)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--out", default="finetune", help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import torch

    from clmr.evaluate import finetune
    from clmr.evaluate.cli_output import print_summary

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = finetune(
        args.checkpoint,
        args.data,
        args.out,
        head=args.head,
        label_fraction=args.label_fraction,
        baseline=args.baseline,
        lr=args.lr,
        encoder_lr_factor=args.encoder_lr_factor,
        max_epochs=args.max_epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        seed=args.seed,
        device=device,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
    print_summary(report, args.out)
    return 0
