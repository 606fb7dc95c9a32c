"""The short table `clmr evaluate` / `clmr finetune` print when done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clmr.evaluate.report import HEADLINE


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
    table.add_row("checkpoint", *(pct(report.get(k)) for k in keys))
    if report.get("baseline"):
        table.add_row("random init", *(pct(report["baseline"].get(k)) for k in keys))
    if report.get("knn"):
        table.add_row(f"{report['knn']['k']}-NN", *(pct(report["knn"].get(k)) for k in keys))
    console = Console()
    console.print(table)
    console.print(f"report: {Path(out) / 'report.md'}")
