"""The `clmr` command: one sub-command per job, each in its own module under `clmr.cli`.

Each command module defines `add_arguments(parser)` and `run(args) -> int`; heavy imports
happen inside `run` so that `clmr --help` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from collections.abc import Sequence

from clmr import __version__
from clmr.errors import ClmrError, TrainingError

# name -> help line
COMMANDS: dict[str, str] = {
    "demo": "generate music, preprocess, pre-train a tiny model and probe it (the main job)",
    "generate": "write a seeded set of synthetic music with tags and labels",
    "download": "download MagnaTagATune, GTZAN or MSD split files (resumable, checksummed)",
    "preprocess": "decode a dataset or audio folder once into a memory-mapped store",
    "pretrain": "contrastive (or --supervised) pre-training (Lightning Fabric)",
    "evaluate": "linear/MLP probe of a frozen encoder, label fractions, report",
    "finetune": "fine-tune encoder and head end to end on a store's labels",
    "models": "list, download or remove the released CLMR models (clmr-mtat...) usable by name",
    "embed": "embed audio files or folders into a parquet table",
    "tag": "print the top tags of songs with a trained head",
    "similar": "nearest neighbours of a song in an embedding table",
    "export": "export a model to ONNX or TorchScript and verify it",
    "convert": "convert a reference CLMR checkpoint to the clmr format",
    "info": "print a checkpoint's architecture, parameter count, tags and sample rate",
}


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
    parser = argparse.ArgumentParser(
        prog="clmr",
        description="Contrastive Learning of Musical Representations (SimCLR + SampleCNN on raw audio).",
    )
    parser.add_argument("--version", action="version", version=f"clmr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_line in COMMANDS.items():
        module = importlib.import_module(f"clmr.cli.{name}")
        p = sub.add_parser(
            name,
            help=help_line,
            description=(module.__doc__ or help_line).strip(),
            formatter_class=_DefaultsFormatter,
            allow_abbrev=False,  # `--temp 0.1` or `--augment.pit 0` must not silently set another key
        )
        module.add_arguments(p)
        p.set_defaults(func=module.run, command_parser=p)
    return parser


def _unknown_options(parser: argparse.ArgumentParser, extra: Sequence[str]) -> str:
    """ "unrecognized arguments: ..." with, for each unknown flag, the command's options it abbreviates or
    the closest one by spelling."""
    known = [
        o
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for o in action.option_strings
        if o.startswith("--")
    ]
    hints = []
    for arg in extra:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--"):
            continue
        close = [o for o in known if o.startswith(flag)][:3]
        if not close:
            names = {o[2:]: o for o in known}
            close = [names[n] for n in difflib.get_close_matches(flag[2:], list(names), n=1, cutoff=0.7)]
        if close:
            hints.append(f"\n  {flag}: did you mean {' or '.join(close)}?")
    return "unrecognized arguments: " + " ".join(extra) + "".join(hints)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `clmr` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # reported by the command's own parser (its usage line), with suggestions
        args.command_parser.error(_unknown_options(args.command_parser, extra))
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ClmrError, TrainingError, FileNotFoundError, FileExistsError) as err:
        # Bad input (audio, checkpoint, config, store): the message names the file and the problem.
        print(f"clmr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if not err.filename:  # not about a file: a bug or an environment problem worth its traceback
            raise
        # a file or folder the command could not read or write (denied, read-only, full, a folder)
        print(f"clmr {args.command}: error: {err.filename}: {err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
