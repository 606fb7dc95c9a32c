"""Pre-train a SampleCNN encoder on a store: SimCLR (NT-Xent on two augmented crops of each song, the
paper's defaults) or, with --supervised, the supervised baseline on the store's labels. The run
directory gets config.yaml, Lightning checkpoints, logs and model.safetensors; --resume continues an
interrupted run. Any config key can be overridden: --batch-size 96 --augment.pitch 0 --model.width 0.5."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clmr.config import PRESETS, add_override_arguments

    parser.add_argument("--data", required=True, help="store made by `clmr preprocess`")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--preset", choices=list(PRESETS), help="named config (default: paper)")
    parser.add_argument("--config", help="YAML config file (applied after the preset)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue the run in --out from its last checkpoint (or from CKPT)",
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
    result = pretrain(args.data, args.out, config, resume=args.resume)
    if result["global_zero"]:
        print(f"{result['steps']} steps, {result['epochs']} epochs; model: {result['model']}")
    return 0
