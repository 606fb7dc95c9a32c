"""Pre-train a SampleCNN encoder on a store: SimCLR (NT-Xent on two augmented crops of each song, the
paper's defaults) or, with --supervised, the supervised baseline on the store's labels. The run
directory gets config.yaml, training checkpoints, logs and model.safetensors; --resume continues an
interrupted run. Any config key can be overridden: --batch-size 96 --augment.pitch 0 --model.width 0.5
(flags may be spelt with underscores for hyphens too). See docs/training.md."""

from __future__ import annotations

import argparse
import shlex
import sys

USAGE = (
    "%(prog)s --data STORE --out RUN_DIR [--preset NAME] [--config FILE] [--resume [CKPT]]\n"
    "       [--print-config] [--KEY VALUE ...]"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clmr.config import PRESETS, add_override_arguments

    # defaults are written into the help lines themselves (the override groups state theirs)
    parser.formatter_class = argparse.HelpFormatter
    parser.usage = USAGE
    parser.add_argument("--data", required=True, metavar="STORE", help="store made by `clmr preprocess`")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        metavar="NAME",
        help=f"named config: {', '.join(PRESETS)} (default: the --config file's preset key, else paper)",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config file (applied after the preset)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue the run in --out from its last checkpoint (or from CKPT), with its own config.yaml; "
        "starts the run if --out has no checkpoint yet (one command for every slot of a job array)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    add_override_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import yaml

    from clmr.config import overrides_from_args
    from clmr.train.run import pretrain, resolve_config

    config = resolve_config(
        args.out,
        preset=args.preset,
        config_file=args.config,
        overrides=overrides_from_args(args),
        resume=args.resume,
    )
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    try:
        result = pretrain(args.data, args.out, config, resume=args.resume)
    except KeyboardInterrupt:
        print(
            f"clmr pretrain: interrupted; continue from the last checkpoint with\n"
            f"  clmr pretrain --data {shlex.quote(str(args.data))} --out {shlex.quote(str(args.out))} --resume",
            file=sys.stderr,
        )
        return 130
    if result["global_zero"]:
        print(f"{result['steps']} steps, {result['epochs']} epochs; model: {result['model']}")
    return 0
