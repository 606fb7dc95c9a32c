"""What `clmr evaluate` and `clmr finetune` share on the command line: the checkpoint, store, head,
baseline, what label fractions are of, device and output options, the call, and the short table
printed when done."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clmr.evaluate.report import HEADLINE, row_names, training_data
from clmr.evaluate.selection import FRACTION_OF


def add_common_arguments(
    parser: argparse.ArgumentParser,
    *,
    out_default: str,
    head_help: str,
    baseline_help: str,
    own_head: bool = False,
):
    """The options both commands take (`own_head`: --head may be `own`, the model's trained head).
    Defaults are written into the help lines (plain formatter), so options without one do not say
    `(default: None)`."""
    parser.formatter_class = argparse.HelpFormatter
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="clmr .safetensors file, run directory (its model.safetensors), or reference .pt/.ckpt",
    )
    parser.add_argument(
        "--data", required=True, metavar="STORE", help="labelled store made by `clmr preprocess`"
    )
    parser.add_argument(
        "--head",
        default="linear",
        choices=["linear", "mlp", "marble"] + (["own"] if own_head else []),
        help=f"{head_help}: linear (reference), mlp (reference 512-512-C), marble (MARBLE's probe)"
        + (", own (score the model's own trained head, e.g. a supervised run's)" if own_head else "")
        + " (default: %(default)s)",
    )
    parser.add_argument("--baseline", choices=["random"], help=baseline_help)
    parser.add_argument(
        "--fraction-of",
        default="dataset",
        choices=list(FRACTION_OF),
        help="what --label-fraction is of: every labelled track (train + valid + test, the paper's "
        "count: 1%% of MTAT = 259 tracks) or the training tracks; either way the tracks are drawn "
        "from the training split (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda, cuda:1, mps ... (default: auto: CUDA, else MPS, else the CPU)",
    )
    parser.add_argument(
        "--out", default=out_default, metavar="DIR", help="output folder (default: %(default)s)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_and_print(fn: Callable[..., dict[str, Any]], args: argparse.Namespace, **options: Any) -> int:
    """Call `evaluate` or `finetune` with the common options and `options`, then print the summary."""
    report = fn(
        args.checkpoint,
        args.data,
        args.out,
        head=args.head,
        baseline=args.baseline,
        fraction_of=args.fraction_of,
        device=args.device,
        progress=not args.no_progress,
        **options,
    )
    print_summary(report, args.out)
    return 0


def print_summary(report: dict[str, Any], out: str | Path) -> None:
    """Headline scores (checkpoint, random-init baseline, k-NN) and where the report went."""
    from rich.console import Console
    from rich.table import Table

    keys = HEADLINE[report["task"]]
    table = Table(title=f"clmr {report['mode']}: {report['store']['path']}")
    table.add_column("model")
    for k in keys:
        table.add_column(k, justify="right")
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    checkpoint_name, baseline_name = row_names(report["mode"])
    table.add_row(checkpoint_name, *(pct(report.get(k)) for k in keys))
    if report.get("baseline"):
        table.add_row(baseline_name, *(pct(report["baseline"].get(k)) for k in keys))
    if report.get("knn"):
        table.add_row(f"{report['knn']['k']}-NN", *(pct(report["knn"].get(k)) for k in keys))
    for name, part in ((checkpoint_name, report), (baseline_name, report.get("baseline") or {})):
        if part.get("logistic_regression"):
            lr = part["logistic_regression"]
            table.add_row(f"{name}: logistic regression (check)", *(pct(lr.get(k)) for k in keys))
    console = Console(markup=False)  # store paths and tag names are printed literally
    console.print(table)
    if report.get("protocol"):
        console.print(f"protocol: {report['protocol']}; split: {report.get('split') or '-'}")
    console.print(training_data(report))
    for note in report.get("notes") or []:
        console.print(f"note: {note}")
    console.print(f"report: {Path(out) / 'report.md'}")
