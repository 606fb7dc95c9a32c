"""Print what a checkpoint holds: architecture, parameter count, sample rate, crop length, tags and
training metadata. Works on clmr files, run directories and reference checkpoints."""

from __future__ import annotations

import argparse

# Options whose default is None explain it in their help text; "%(default).0s" renders as nothing
# and keeps the default-adding help formatter from appending "(default: None)".


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="clmr .safetensors file, run directory, or reference .pt/.ckpt")
    parser.add_argument("--head", help="also load this head file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from clmr.models import load_model, model_summary

    summary = _finite(model_summary(load_model(args.checkpoint, head=args.head)))
    if args.json:
        print(json.dumps(summary, indent=2, allow_nan=False))
        return 0
    table = Table(title=str(args.checkpoint), show_header=False)
    enc = summary["encoder"]
    table.add_row(
        "encoder",
        f"SampleCNN width={enc['width']} pooled blocks={enc['n_blocks']}"
        + (f" supervised classes={enc['n_classes']}" if enc.get("n_classes") else ""),
    )
    table.add_row(
        "projector", " -> ".join(map(str, summary["projector"])) if summary["projector"] else "none"
    )
    head = summary["head"]
    table.add_row("head", f"{head['kind']} {head['in_dim']} -> {head['n_classes']}" if head else "none")
    params = summary["parameters"]
    table.add_row("parameters", ", ".join(f"{k} {v:,}" for k, v in params.items() if v))
    table.add_row("sample rate", f"{summary['sample_rate']} Hz")
    table.add_row("crop", f"{summary['crop_length']} samples ({summary['crop_seconds']} s)")
    table.add_row("embedding", f"{summary['embedding_dim']}-d")
    table.add_row("task", str(summary["task"] or "-"))
    tags = summary["tags"]
    table.add_row("tags", f"{len(tags)}: " + ", ".join(tags) if tags else "none")
    for key, value in summary["meta"].items():
        table.add_row(f"meta.{key}", json.dumps(value) if not isinstance(value, str) else value)
    Console().print(table)
    return 0


def _finite(value):
    """`value` with NaN and infinite floats (e.g. a metric that was undefined) as None, so that
    --json prints standard JSON (null) rather than NaN, which JSON parsers reject."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
