"""Convert a reference CLMR checkpoint (release 1.0 or 2.x `.pt`, Lightning `.ckpt`, encoder dict, with
a fine-tuned head) to the clmr format: one .safetensors file with the weights and a JSON config
(architecture, sample rate, tags). The layouts are read by `clmr.models.reference`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="reference checkpoint (.pt or .ckpt) or clmr file")
    parser.add_argument("dst", help="output .safetensors file")
    parser.add_argument(
        "--head", help="reference fine-tuned head (linear or MLP, e.g. finetuner_checkpoint_20.pt) to include"
    )
    parser.add_argument("--tags", help="text file with one tag name per line, in the head's output order")
    parser.add_argument(
        "--sample-rate",
        type=_positive_int,
        default=None,
        help="sample rate the model was trained at (reference: 22050)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")


def _positive_int(text: str) -> int:
    """A sample rate in Hz: a whole number above zero (0 would make every crop duration infinite)."""
    from clmr.models.checks import MAX_SAMPLE_RATE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of Hz, got {text!r}") from None
    if not 0 < value <= MAX_SAMPLE_RATE:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of Hz up to {MAX_SAMPLE_RATE:,}, got {value}"
        )
    return value


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clmr.models import load_model, save_model
    from clmr.texts import read_lines

    dst = Path(args.dst)
    if dst.suffix != ".safetensors":
        dst = dst.with_name(dst.name + ".safetensors")
    if dst.exists() and not args.force:
        raise FileExistsError(f"{dst} exists; pass --force to overwrite")
    tags = read_lines(args.tags, what="--tags file") if args.tags else None
    model = load_model(args.src, head=args.head, tags=tags, sample_rate=args.sample_rate)
    save_model(model, dst)
    print(f"wrote {dst}")
    return 0
