"""The `clmr` command: one sub-command per job, each in its own module under `clmr.cli`.

Each command module defines `add_arguments(parser)` and `run(args) -> int`; heavy imports
happen inside `run` so that `clmr --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from clmr.errors import ClmrError

# name -> (help line, issue that brings it)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "generate music, preprocess, pre-train a tiny model and probe it (the main job)",
        "pre-training",
    ),
    "generate": ("write a seeded set of synthetic music with tags and labels", "data"),
    "download": ("download MagnaTagATune, GTZAN or MSD split files (resumable, checksummed)", "data"),
    "preprocess": ("decode a dataset or audio folder once into a memory-mapped store", "data"),
    "pretrain": ("contrastive (or --supervised) pre-training with Lightning", "pre-training"),
    "evaluate": ("linear/MLP probe of a frozen encoder, label fractions, report", "evaluation"),
    "finetune": ("fine-tune encoder and head end to end on a store's labels", "evaluation"),
    "embed": ("embed audio files or folders into a parquet table", "inference"),
    "tag": ("print the top tags of songs with a trained head", "inference"),
    "similar": ("nearest neighbours of a song in an embedding table", "inference"),
    "export": ("export a model to ONNX or TorchScript and verify it", "inference"),
    "convert": ("convert a reference CLMR checkpoint to the clmr format", "foundation"),
    "info": ("print a checkpoint's architecture, parameter count, tags and sample rate", "foundation"),
}


def _not_built(feature: str):
    def run(args: argparse.Namespace) -> int:
        print(f"clmr {args.command}: not built yet; it arrives with the {feature} feature.", file=sys.stderr)
        return 2

    return run


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help only where there is a default and the help does not
    already speak of it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if unset or "default" in (action.help or ""):  # `is`: a default of 0 is worth showing
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    from clmr import __version__

    parser = argparse.ArgumentParser(
        prog="clmr",
        description="Contrastive Learning of Musical Representations (SimCLR + SampleCNN on raw audio).",
    )
    parser.add_argument("--version", action="version", version=f"clmr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_line, feature) in COMMANDS.items():
        try:
            module = importlib.import_module(f"clmr.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"clmr.cli.{name}":
                raise
            p = sub.add_parser(name, help=f"{help_line} [not built yet]", description=help_line)
            p.set_defaults(func=_not_built(feature))
            continue
        p = sub.add_parser(
            name,
            help=help_line,
            description=(module.__doc__ or help_line).strip(),
            formatter_class=_DefaultsFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `clmr` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ClmrError, FileNotFoundError, FileExistsError) as err:
        # Bad input (audio, checkpoint, config, store): the message names the file and the problem.
        print(f"clmr {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
