"""Decode a dataset or any audio folder once into a store: int16 PCM shards that training memory-maps,
index.parquet (track, split, labels, shard, offset, length), meta.json and skipped.csv (every file not
stored, with the reason). Parallel over a thread per core; rerun the same command to resume an interrupted
run. See docs/data.md for the layouts and the store format."""

from __future__ import annotations

import argparse

from clmr.data import DATASETS, preprocess
from clmr.data.checks import shard_bytes_from_mb

# Options whose default is None explain it in their help text; "%(default).0s" renders as nothing
# and keeps the default-adding help formatter from appending "(default: None)".


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="dataset root or any folder of audio (searched recursively)")
    parser.add_argument("--out", required=True, help="store folder to write (or resume)")
    parser.add_argument("--dataset", choices=DATASETS, default="folder", help="layout of SOURCE")
    parser.add_argument("--labels", help="labels CSV: path,label or path,tags ('a;b'), optional split column")
    parser.add_argument(
        "--split",
        help="named split: mtat pons|won (default pons), gtzan filtered|random (default filtered), "
        "folder hash|none (default: the CSV's split column, else hash)",
    )
    parser.add_argument(
        "--task",
        choices=["multilabel", "multiclass"],
        help="force the labels CSV's task (default: from the CSV)",
    )
    parser.add_argument("--sample-rate", type=int, default=22050, help="store sample rate (Hz)")
    parser.add_argument(
        "--workers",
        type=int,
        help="decoding threads (default: one per core; 0: in the calling thread)",
    )
    parser.add_argument(
        "--min-length",
        type=int,
        help="skip tracks shorter than this many samples at --sample-rate (as too_short; default: one "
        "reference crop's duration, 59049 / 22050 s, at --sample-rate: 59049 at 22050 Hz, 21424 at 8000 Hz)"
        "%(default).0s",
    )
    parser.add_argument("--shard-mb", type=float, default=1024, help="shard size budget in MiB")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="discard an existing or unfinished store at --out (only the files clmr wrote there)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    shard_bytes = shard_bytes_from_mb(args.shard_mb)
    preprocess(
        args.source,
        args.out,
        dataset=args.dataset,
        labels=args.labels,
        split=args.split,
        task=args.task,
        sample_rate=args.sample_rate,
        workers=args.workers,
        min_length=args.min_length,
        shard_bytes=shard_bytes,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    return 0
