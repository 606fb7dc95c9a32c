"""Pre-train a SampleCNN encoder on a store: SimCLR (NT-Xent on two augmented crops of each song, the
paper's defaults) or, with --supervised, the supervised baseline on the store's labels. The run
directory gets config.yaml, training checkpoints, logs and model.safetensors; --resume continues an
interrupted run. Any config key can be overridden: --batch-size 96 --augment.pitch 0 --model.width 0.5
(flags may be spelt with underscores for hyphens too). See docs/training.md."""

from __future__ import annotations

import argparse
import shlex
import sys
import types
import typing
from typing import Any, Literal

from clmr.config import SHORT_SECTIONS, Config, all_keys, flag, help_of

USAGE = (
    "%(prog)s --data STORE --out RUN_DIR [--preset NAME] [--config FILE] [--resume [CKPT]]\n"
    "       [--print-config] [--KEY VALUE ...]"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clmr.config import PRESETS

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
        print(
            f"{result['steps']} steps, {result['epochs']} epochs; model: {result['model']}\n"
            f"{time_line(result)}"
        )
    return 0


def time_line(result: dict[str, Any]) -> str:
    """Where this invocation's wall time went: training steps, validation, the rest (checkpoints, start)."""
    train, valid = result["train_share"], result["valid_share"]
    return (
        f"{result['wall_s'] / 60:.1f} min: {100 * train:.0f} % in training steps "
        f"({result['pairs_per_s']:.1f} pairs/s), {100 * valid:.0f} % validating, "
        f"{100 * max(0.0, 1 - train - valid):.0f} % checkpoints and start-up; "
        f"{result['overall_pairs_per_s']:.1f} pairs/s overall"
    )


_SECTION_TITLES = {
    "": "run",
    "model": "model (SampleCNN encoder and projector)",
    "augment": "augment (each step: a probability in [0, 1], 0 switches it off; a dict of its arguments in YAML)",
    "loss": "loss (NT-Xent)",
    "optim": "optim (defaults for SimCLR; with --supervised: sgd, weight decay 1e-6, plateau factor 0.2, as the reference)",
    "trainer": "trainer (devices, precision, stopping, checkpoints, logs)",
}
_OVERRIDE_PREFIX = "override:"


def _metavar(dotted: str, tp: Any) -> str:
    special = {"trainer.max_time": "DD:HH:MM:SS", "trainer.devices": "N|auto"}
    if dotted in special:
        return special[dotted]
    if typing.get_origin(tp) is Literal:
        return "{" + ",".join(tp.__args__) + "}"
    if dotted.startswith("augment.") and dotted != "augment.enabled":
        return "P"
    args = [a for a in (tp.__args__ if isinstance(tp, types.UnionType) else (tp,)) if a is not type(None)]
    return {bool: "BOOL", int: "INT", float: "FLOAT", str: "NAME"}.get(args[0], "VALUE")


def _show(value: Any) -> str:
    """A default as a YAML-ish word: none, true, false, 3e-4."""
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def add_override_arguments(parser: Any) -> None:
    """One option per config key, grouped by section and shown in hyphen form (`--batch-size`,
    `--model.n-blocks`, `--augment.pitch`; trainer, optim and loss keys also without their section:
    `--max-epochs`, `--lr`). The underscore spellings (`--batch_size`, `--trainer.max_epochs`) are
    accepted too but not listed. Boolean keys also work as bare flags."""
    defaults = Config()
    groups: dict[str, Any] = {}
    for dotted in all_keys(defaults):
        if dotted == "preset":
            continue
        section_name, _, name = dotted.rpartition(".")
        if section_name not in groups:
            title = _SECTION_TITLES[section_name]
            if not section_name:
                title += " (config keys, applied after --preset and --config; defaults are the paper's)"
            groups[section_name] = parser.add_argument_group(title)
        target = getattr(defaults, section_name) if section_name else defaults
        default, tp = getattr(target, name), typing.get_type_hints(type(target))[name]
        is_bool = bool in (tp.__args__ if isinstance(tp, types.UnionType) else (tp,))
        accepted = {f"--{dotted}", f"--{dotted.replace('_', '-')}"}
        shown = [flag(dotted)]
        if section_name in SHORT_SECTIONS:
            accepted |= {f"--{name}", f"--{name.replace('_', '-')}"}
            shown.append(f"--{dotted.replace('_', '-')}")
        common = dict(
            dest=_OVERRIDE_PREFIX + dotted,
            metavar=_metavar(dotted, tp),
            nargs="?" if is_bool else None,
            const="true" if is_bool else None,
            default=argparse.SUPPRESS,
        )
        groups[section_name].add_argument(
            *shown, help=f"{help_of(dotted)} (default: {_show(default)})", **common
        )
        if accepted - set(shown):
            groups[section_name].add_argument(
                *sorted(accepted - set(shown)), help=argparse.SUPPRESS, **common
            )


def overrides_from_args(args: Any) -> dict[str, Any]:
    """The config overrides given on the command line, as {dotted key: string value}."""
    prefix = len(_OVERRIDE_PREFIX)
    return {k[prefix:]: v for k, v in vars(args).items() if k.startswith(_OVERRIDE_PREFIX)}
