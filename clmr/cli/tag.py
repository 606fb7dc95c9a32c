"""Print the top tags of songs with a trained head: song-level probabilities are the mean over the
song's consecutive crops of the sigmoid (multi-label tagging) or softmax (multi-class) of the logits."""

from __future__ import annotations

import argparse
import json
import math
import sys

from clmr.cli.models import add_model_and_inputs, split_model
from clmr.errors import ClmrError

# Options whose default is None explain it in their help text; "%(default).0s" renders as nothing
# and keeps the default-adding help formatter from appending "(default: None)".


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_and_inputs(
        parser, "SONG", "audio files, folders or glob patterns (any format clmr reads, any sample rate)"
    )
    parser.add_argument(
        "--head", help="head file (a fine-tuned or probe head), unless the checkpoint has one"
    )
    parser.add_argument("--tags", help="text file with one tag name per line, for heads without names")
    parser.add_argument("--top", type=int, default=10, help="tags to show per song")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="crops per forward pass (default: by model size and device; 1 on CPU, 64 on GPU for the "
        "reference model)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1, mps"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `clmr --help` imports every command module, and these pull in
    # torch (seconds) and rich (~0.1 s)
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from clmr.audio import UNSUPPORTED_DETAIL
    from clmr.inference import tag_files, top_tags
    from clmr.inference.paths import find_audio
    from clmr.models import load_model
    from clmr.songs.apply import check_batch_size, check_top
    from clmr.songs.decode import python_stderr_aside
    from clmr.texts import read_lines

    check_top(args.top)
    check_batch_size(args.batch_size)
    tags = read_lines(args.tags, what="--tags file") if args.tags else None
    checkpoint, songs = split_model(args, "songs")
    model = load_model(checkpoint, head=args.head, tags=tags or None)
    if model.head is None:
        raise ClmrError(f"{checkpoint}: the model has no classification head; pass --head HEAD")
    found = find_audio(songs)
    skipped = [f"{item}: no such file or folder" for item in found.missing]
    skipped += [f"{path}: {UNSUPPORTED_DETAIL}" for path in found.unsupported]
    skipped += [f"{path}: {reason}" for path, reason in found.problems]
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)  # one unwrapped line per file, for logs
    results, failed = {}, len(skipped)
    console = Console()
    with python_stderr_aside():  # decoder warnings go to the song's note line, not the terminal
        for out in tag_files(model, found.files, batch_size=args.batch_size, device=args.device):
            notes = " | ".join(out.notes)
            if not out.ok:
                failed += 1
                print(
                    f"skipped {out.error}" + (f" (decoder said: {notes})" if notes else ""), file=sys.stderr
                )
                continue
            if notes:
                print(f"note {out.key}: decoder said: {notes}", file=sys.stderr)
            results[out.key] = top_tags(model, out.mean, args.top)
            if not args.json:
                # the song as a line of its own: a table title would wrap long paths to the table's width
                console.print(
                    f"[bold]{escape(out.key)}[/bold] ({out.duration:.1f} s, {out.n_crops} crops)",
                    soft_wrap=True,
                )
                table = Table()
                table.add_column("tag")
                table.add_column("probability", justify="right")
                for name, prob in results[out.key]:
                    table.add_row(name, f"{prob:.3f}")
                console.print(table)
    if args.json:
        print(
            json.dumps(
                {
                    k: [{"tag": t, "probability": p if math.isfinite(p) else None} for t, p in v]
                    for k, v in results.items()
                },
                indent=2,
                allow_nan=False,  # a non-finite probability is null: always valid JSON
            )
        )
    return 1 if failed else 0
