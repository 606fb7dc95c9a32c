"""Nearest neighbours (exact cosine similarity) of a song in an embedding table made by `clmr embed`.

QUERY is a track already in the table, or any audio file, which is embedded on the fly with the
table's checkpoint (recorded in its metadata; --checkpoint if it has moved). Scores are cosine
similarities of embeddings centred on the table's mean embedding (--whiten: also whitened). The table
shows paths relative to the folder the neighbours share (printed above it), cut from the left to fit
the terminal so that file names stay whole; --json gives the whole paths."""

from __future__ import annotations

import argparse
import json
import math

from clmr.cli.models import resolve_model

# Options whose default is None explain it in their help text; "%(default).0s" renders as nothing
# and keeps the default-adding help formatter from appending "(default: None)".


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="a path in the index, or an audio file to embed")
    parser.add_argument(
        "--index", required=True, help="table written by `clmr embed` (.parquet, .npz or .csv)"
    )
    parser.add_argument("--k", type=int, default=10, help="number of neighbours")
    parser.add_argument(
        "--checkpoint",
        "--model",
        help="the index's checkpoint (a path or registry name), if it has moved (default: the path the "
        "table records)",
    )
    parser.add_argument(
        "--whiten",
        action="store_true",
        help="also whiten the centred embeddings by the table's covariance (decorrelates dimensions)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="device for embedding a query file: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1, mps",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `clmr --help` imports every command module, and these pull in
    # torch (seconds) and rich (~0.1 s)
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from clmr.inference.display import shown_paths
    from clmr.inference.similar import Index, check_k

    check_k(args.k)
    index = Index.load(args.index, whiten=args.whiten)
    checkpoint = resolve_model(args.checkpoint) if args.checkpoint else None
    hits = index.query(args.query, args.k, checkpoint=checkpoint, device=args.device)
    if args.json:
        rows = [{"path": p, "similarity": s if math.isfinite(s) else None} for p, s in hits]
        print(json.dumps(rows, indent=2, allow_nan=False))  # non-finite scores are null: valid JSON
        return 0
    console = Console()
    console.print(f"nearest to [bold]{escape(str(args.query))}[/bold]", soft_wrap=True)  # unwrapped
    scores = [f"{score:.4f}" for _, score in hits]
    # 3 columns: 4 borders and 2 spaces of padding each; the path gets what the others leave
    others = 10 + len(str(len(hits))) + max([len("cosine"), *map(len, scores)])
    folder, names = shown_paths([path for path, _ in hits], max(console.width - others, 16))
    if folder:
        console.print(f"in {escape(folder)}", soft_wrap=True)
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("path", no_wrap=True)
    table.add_column("cosine", justify="right")
    for rank, (name, score) in enumerate(zip(names, scores, strict=True), 1):
        table.add_row(str(rank), escape(name), score)
    console.print(table)
    return 0
