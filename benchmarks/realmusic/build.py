"""Build a real-music development set from freely licensed Debian game soundtracks (docs/realmusic.md).

Each track is labelled by the soundtrack it belongs to (one composer or team per game), split by track
with a fixed seed per class, and listed in `labels.csv` (path,label,split) for `clmr preprocess`.
Packages are fetched with `apt-get download` (apt checks each package's hash against the signed archive
index) into a cache that a rerun reuses after re-checking the SHA256 against `apt-cache show`. A file whose
bytes repeat an earlier track's, and the files a source excludes (faster or test copies), are left out.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import os
import random
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

from clmr.errors import ClmrError
from clmr.files import atomic_open

AUDIO = (".ogg", ".flac", ".wav", ".mp3", ".opus")
SOURCES = (
    # label, Debian package, music folder inside the extracted package (files directly in it), file names
    # to leave out (fnmatch patterns)
    ("supertux", "supertux-data", "usr/share/games/supertux2/music/*", ()),
    ("nexuiz", "nexuiz-music", "usr/share/games/nexuiz/data/music.pk3:sound/cdtracks", ()),
    ("hyperrogue", "hyperrogue-music", "usr/share/hyperrogue/music", ()),
    ("singularity", "singularity-music", "usr/share/games/singularity/music", ()),
    ("flare", "flare-game", "usr/share/games/flare/mods/fantasycore/music", ()),
    ("planetblupi", "planetblupi-music-ogg", "usr/share/planetblupi/music", ()),
    ("extremetuxracer", "extremetuxracer-data", "usr/share/games/etr/music", ()),
    ("ufoai", "ufoai-music", "usr/share/games/ufoai/base/0music.pk3:music", ("dynamictest-*",)),
    ("naev", "naev-data", "usr/share/naev/dat/snd/music", ()),
    (
        "supertuxkart",
        "supertuxkart-data",
        "usr/share/games/supertuxkart/data/music",
        ("*_fast.ogg", "*_f.ogg"),
    ),
    ("widelands", "widelands-data", "usr/share/games/widelands/data/music", ()),
)
V1 = ("supertux", "nexuiz", "hyperrogue", "singularity", "flare", "planetblupi", "extremetuxracer")
"""The first set's classes (docs/realmusic.md's results before the bigger set: `--classes v1 --min-tracks 10`)."""
"""Never add wesnoth, warzone2100, drascula, colobot or hedgewars: their music is an independent check."""


class BuildError(ClmrError):
    """A package could not be fetched or unpacked, or the tree has too few tracks."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _apt_record(package: str) -> dict[str, str]:
    """The candidate version's Version/Filename/SHA256 from `apt-cache show`."""
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        raise BuildError(f"{package}: not in the apt archive (run apt-get update?): {out.stderr.strip()}")
    record = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line and line[0] != " ")
    return {k: record[k] for k in ("Version", "Filename", "SHA256")}


def fetch(package: str, debs: Path) -> Path:
    """The package's .deb in `debs`: reused when its SHA256 matches the archive's, else downloaded."""
    record = _apt_record(package)
    deb = debs / Path(record["Filename"]).name
    if deb.is_file() and _sha256(deb) == record["SHA256"]:
        return deb
    debs.mkdir(parents=True, exist_ok=True)
    deb.unlink(missing_ok=True)
    out = subprocess.run(
        ["apt-get", "download", f"{package}={record['Version']}"], cwd=debs, capture_output=True
    )
    saved = debs / deb.name.replace("_", f"_{record['Version'].split(':')[0]}%3a", 1)
    if ":" in record["Version"] and saved.is_file():  # apt names a file of an epoch version NAME_E%3aV_A.deb
        os.replace(saved, deb)
    if out.returncode != 0 or not deb.is_file():
        raise BuildError(f"{package}: apt-get download failed: {out.stderr.decode(errors='replace').strip()}")
    if _sha256(deb) != record["SHA256"]:
        raise BuildError(f"{deb}: SHA256 differs from the archive's")
    return deb


def unpack(package: str, deb: Path, extract: Path) -> Path:
    """`dpkg -x` the package into extract/PACKAGE once (a `.done` marker names the .deb it came from)."""
    root, done = extract / package, extract / f"{package}.done"
    if done.is_file() and done.read_text() == deb.name and root.is_dir():
        return root
    shutil.rmtree(root, ignore_errors=True)
    extract.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["dpkg", "-x", str(deb), str(root)], capture_output=True)
    if out.returncode != 0:
        raise BuildError(f"{deb}: dpkg -x failed: {out.stderr.decode(errors='replace').strip()}")
    done.write_text(deb.name)
    return root


def tracks_of(root: Path, folder: str, exclude: tuple[str, ...] = ()) -> list[Path]:
    """Audio files directly in `folder` under `root` ('a/*': in each subfolder of a; 'x.pk3:dir': inside
    a zip archive, unpacked next to it once), but those whose name matches an `exclude` pattern."""
    if ":" in folder:
        archive, inner = folder.split(":", 1)
        target = root / (archive + ".d")
        if not target.is_dir():
            with zipfile.ZipFile(root / archive) as z:
                z.extractall(target.with_suffix(".part"))
            os.replace(target.with_suffix(".part"), target)
        folder = f"{archive}.d/{inner}"
    base = root / folder.removesuffix("/*")
    dirs = sorted(p for p in base.iterdir() if p.is_dir()) if folder.endswith("/*") else [base]
    files = (f for d in dirs for f in d.iterdir() if f.is_file() and f.suffix.lower() in AUDIO)
    return sorted(f for f in files if not any(fnmatch.fnmatch(f.name, pattern) for pattern in exclude))


def drop_copies(found: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """`found` without files whose bytes equal an earlier file's (by label, then path): one track, once."""
    seen: set[str] = set()
    kept: dict[str, list[Path]] = {}
    for label in sorted(found):
        kept[label] = []
        for path in found[label]:
            digest = _sha256(path)
            if digest not in seen:
                seen.add(digest)
                kept[label].append(path)
    return kept


def split_tracks(
    tracks: dict[str, list[str]], seed: int, valid: float, test: float
) -> list[tuple[str, str, str]]:
    """(path, label, split) rows: each class shuffled with `seed` and cut by track, at least one valid and
    one test track per class."""
    rows = []
    for label in sorted(tracks):
        names = sorted(tracks[label])
        random.Random(f"{seed}:{label}").shuffle(names)
        n_test, n_valid = max(1, round(test * len(names))), max(1, round(valid * len(names)))
        splits = ["test"] * n_test + ["valid"] * n_valid + ["train"] * (len(names) - n_test - n_valid)
        rows += [(name, label, split) for name, split in zip(names, splits, strict=True)]
    return sorted(rows)


def write_set(
    found: dict[str, list[Path]], out: Path, seed: int, valid: float, test: float, min_tracks: int
) -> list[tuple[str, str, str]]:
    """Link each class's tracks into out/audio/LABEL/ and write out/labels.csv; classes with fewer than
    `min_tracks` tracks are left out."""
    kept = {label: files for label, files in found.items() if len(files) >= min_tracks}
    if len(kept) < 2:
        raise BuildError(f"{out}: fewer than 2 classes with >= {min_tracks} tracks ({dict(Counter(found))})")
    names: dict[str, list[str]] = {}
    for label, files in kept.items():
        folder = out / "audio" / label
        folder.mkdir(parents=True, exist_ok=True)
        names[label] = []
        for src in files:
            name = f"{label}/{src.parent.name}__{src.name}"
            dst = out / "audio" / name
            if not dst.exists():
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
            names[label].append(name)
    rows = split_tracks(names, seed, valid, test)
    with atomic_open(out / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("realmusic"), help="dataset folder (audio/, labels.csv)"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache/clmr/realmusic", help="debs + unpacked"
    )
    parser.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    parser.add_argument("--valid", type=float, default=0.15, help="valid fraction per class (default: 0.15)")
    parser.add_argument("--test", type=float, default=0.25, help="test fraction per class (default: 0.25)")
    parser.add_argument("--min-tracks", type=int, default=20, help="drop smaller classes (default: 20)")
    parser.add_argument(
        "--classes",
        default="all",
        help="'all' (default), 'v1' (the first set's seven) or a comma-separated list of labels",
    )
    args = parser.parse_args(argv)
    try:
        if not (
            0 < args.valid < 1 and 0 < args.test < 1 and args.valid + args.test < 1 and args.min_tracks >= 3
        ):
            raise BuildError("--valid and --test must be in (0, 1) with a sum < 1; --min-tracks >= 3")
        classes = {"all": [s[0] for s in SOURCES], "v1": list(V1)}.get(args.classes, args.classes.split(","))
        unknown = sorted(set(classes) - {s[0] for s in SOURCES})
        if unknown:
            raise BuildError(
                f"--classes: unknown label {unknown[0]!r} (labels: {', '.join(s[0] for s in SOURCES)})"
            )
        found = {}
        for label, package, folder, exclude in (s for s in SOURCES if s[0] in classes):
            root = unpack(package, fetch(package, args.cache / "debs"), args.cache / "extract")
            found[label] = tracks_of(root, folder, exclude)
            copyright = root / "usr/share/doc" / package / "copyright"
            (args.out / "licences").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(copyright, args.out / "licences" / f"{package}.copyright")
        rows = write_set(drop_copies(found), args.out, args.seed, args.valid, args.test, args.min_tracks)
    except (ClmrError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    counts = Counter((label, split) for _, label, split in rows)
    print("label,train,valid,test,total")
    for label in sorted({label for _, label, _ in rows}):
        n = [counts[(label, s)] for s in ("train", "valid", "test")]
        print(f"{label},{n[0]},{n[1]},{n[2]},{sum(n)}")
    print(f"wrote {args.out / 'labels.csv'} ({len(rows)} tracks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
