"""Download MagnaTagATune (mp3 parts, annotations, Pons et al. and Won et al. split files; the parts are merged and
extracted), GTZAN (audio tarball, Kereliuk/Sturm filtered split files) or the MSD top-50 split files
(MSD audio is not distributable). Partial files resume with HTTP Range requests; every file is
SHA-256 checked (ROOT/checksums.json records first downloads). --mirror replaces the base URL:
files are then fetched from MIRROR/<path under ROOT>."""

from __future__ import annotations

import argparse

# Options whose default is None explain it in their help text; "%(default).0s" renders as nothing
# and keeps the default-adding help formatter from appending "(default: None)".


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=["mtat", "gtzan", "msd"], help="what to download")
    parser.add_argument("--root", required=True, help="dataset folder to download into (created)")
    parser.add_argument(
        "--mirror",
        help="base URL serving the same files under their ROOT-relative paths (default: the upstream URLs)",
    )
    parser.add_argument("--no-extract", action="store_true", help="keep the archives, do not extract")
    parser.add_argument("--retries", type=int, default=4, help="retries per file on network errors")


def run(args: argparse.Namespace) -> int:
    from clmr.data.download import download  # here: it adds ~70 ms to every `clmr --help`

    root = download(
        args.dataset, args.root, mirror=args.mirror, extract=not args.no_extract, retries=args.retries
    )
    print(
        f"{args.dataset}: files in {root}; next: clmr preprocess {root} --dataset {args.dataset} --out STORE"
    )
    return 0
