"""List the released CLMR models clmr can fetch by name (with what they were trained on, their paper
scores and whether they are cached), download them ahead of use (--download), or delete them from the
cache (--remove). Any command that takes a model accepts these names; files are cached under
$CLMR_HOME (default ~/.cache/clmr) and CLMR_MODEL_MIRROR replaces the release URL prefix."""

from __future__ import annotations

import argparse

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--download",
        nargs="*",
        metavar="NAME",
        help="download and convert these models now (no NAME: the default, clmr-mtat), e.g. before "
        "going offline",
    )
    parser.add_argument("--remove", nargs="+", metavar="NAME", help="delete these models from the cache")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def resolve_model(model: str) -> str:
    """A registry name -> the path of its verified cached clmr file (downloaded on first use); a path
    is returned unchanged. For commands that record or fingerprint the model's file."""
    from clmr.models import load_model, save_model
    from clmr.models.registry import model_file

    return str(model_file(model, load_model, save_model))


def add_model_and_inputs(parser: argparse.ArgumentParser, what: str, help_text: str) -> None:
    """`[--model M] [MODEL] INPUT [INPUT ...]` for `clmr tag` and `clmr embed`. The inputs are two
    positionals, one then one-or-more made optional, so that options may come between a model and the
    inputs (`clmr tag MODEL --head H song.mp3`) as with a required model argument."""
    parser.usage = f"%(prog)s [--model MODEL] [options] [MODEL] {what} [{what} ...]"
    parser.add_argument(
        "first",
        metavar=f"[MODEL] {what}",
        help=f"{help_text}; without --model, a first argument that is a model (registry name, "
        ".safetensors/.pt/.ckpt file or run directory) is the model, as in the older `MODEL "
        f"{what}...` form",
    )
    parser.add_argument("more", nargs="+", default=[], metavar=what, help=argparse.SUPPRESS).required = False
    parser.add_argument(
        "--model",
        help="registry name (`clmr models` lists them), clmr .safetensors file, run directory or "
        "reference .pt/.ckpt (default: clmr-mtat, the released MagnaTagATune model)",
    )


def split_model(args: argparse.Namespace, what: str) -> tuple[str, list[str]]:
    """(model, inputs) of `add_model_and_inputs`' arguments: --model if given, else a first input that
    names a model, else the default registered model."""
    from pathlib import Path

    from clmr.errors import ClmrError
    from clmr.models.checkpoint import RUN_DIR_MODEL
    from clmr.models.registry import DEFAULT_MODEL, is_model_name

    inputs = [args.first, *args.more]
    if args.model is not None:
        return args.model, inputs
    first = Path(args.first)
    if (
        is_model_name(args.first)
        or first.suffix.lower() in CHECKPOINT_SUFFIXES
        or (first / RUN_DIR_MODEL).is_file()
    ):
        if not args.more:
            raise ClmrError(f"{args.first} is a model; give the {what} after it")
        return args.first, inputs[1:]
    return DEFAULT_MODEL, inputs


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from clmr.errors import ClmrError
    from clmr.models.registry import (
        DEFAULT_MODEL,
        MODELS,
        base_url,
        cache_dir,
        cache_state,
        model_path,
        remove,
    )

    for name in [*(args.download or []), *(args.remove or [])]:
        if name not in MODELS:
            raise ClmrError(f"{name}: not a registered model; choose from {', '.join(MODELS)}")
    if args.remove:
        for name in args.remove:
            gone = remove(name)
            print(f"{name}: removed {len(gone)} files" + "".join(f"\n  {p}" for p in gone))
        return 0
    if args.download is not None:
        for name in args.download or [DEFAULT_MODEL]:
            print(f"{name}: {resolve_model(name)}")
        return 0
    rows = [
        {
            "name": m.name,
            "default": m.name == DEFAULT_MODEL,
            "release": m.release,
            "pretrained_on": m.pretrained_on,
            "batch_size": m.batch_size,
            "epochs": m.epochs,
            "parameters": m.parameters,
            "tags": len(m.tags),
            "sample_rate": m.sample_rate,
            "paper_scores": {k: {"roc_auc": r, "pr_auc": p} for k, (r, p) in m.scores.items()},
            "licence": m.licence,
            "source": m.source_urls(),
            "cached": cache_state(m.name),
            "path": str(model_path(m.name)),
        }
        for m in MODELS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"released CLMR models (cache: {cache_dir()})")
    for column in ("name", "pre-trained on", "paper ROC-AUC / PR-AUC", "parameters", "cached"):
        table.add_column(column)
    for m, row in zip(MODELS.values(), rows, strict=True):
        table.add_row(
            m.name + (" (default)" if row["default"] else ""),
            f"{m.pretrained_on}, batch {m.batch_size}, {m.epochs:,} epochs ({m.release})",
            "\n".join(f"{r} / {p} ({k} head)" for k, (r, p) in m.scores.items()),
            f"{m.parameters / 1e6:.2f} M",
            row["cached"],
        )
    console = Console()
    console.print(table)
    default = MODELS[DEFAULT_MODEL]
    console.print(
        f"Heads: {len(default.tags)} MagnaTagATune tags. Input: {default.sample_rate:,} Hz mono. Licence: "
        f"{default.licence}. Scores are the paper's, not measured by clmr. Files, from {base_url()}:"
    )
    for m in MODELS.values():
        console.print(f"  {m.name}: {m.encoder} + {m.head}", soft_wrap=True)
    return 0
