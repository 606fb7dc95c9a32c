"""Download what can be downloaded of MagnaTagATune, GTZAN and the MSD split files: HTTP range resume
(a `.part` file continues where it stopped), retries with back-off, SHA-256 verification, and
extraction that refuses any archive entry landing outside the target folder.

Checksums: a file with a published SHA-256 in the manifest is checked against it; the others are
checked against ROOT/checksums.json, which records the SHA-256 of every file on its first complete
download (so a later, different download of the same file is caught). Nothing is recorded until it
is verified: its size against what the server announced, and its content against its kind (a .npy
loads, a .cP unpickles as plain data, text is UTF-8, a tarball lists, the MTAT zip parts extract); a
file that fails is removed, so a rerun fetches it again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clmr.data.verify import ARCHIVE_ERRORS, DownloadError, extract_tar, extract_zip, verify_content
from clmr.errors import check_whole
from clmr.files import atomic_open, io_errors

MAX_RETRIES = 100

CHUNK = 1 << 20
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class Remote:
    """One file: fetched from `url` (or MIRROR/`target` with a mirror) into ROOT/`target`."""

    url: str
    target: str
    sha256: str | None = None
    optional: bool = False  # a 404 is reported and skipped, not an error


_WON = "https://raw.githubusercontent.com/minzwon/sota-music-tagging-models/master/split"
_MTAT = "https://mirg.city.ac.uk/datasets/magnatagatune"
_PONS = "https://raw.githubusercontent.com/jordipons/musicnn-training/master/data/index/mtt"
_GTZAN_SPLIT = "https://raw.githubusercontent.com/jongpillee/music_dataset_split/master/GTZAN_split"
MANIFESTS: dict[str, list[Remote]] = {
    "mtat": [
        *(Remote(f"{_MTAT}/mp3.zip.00{n}", f"mp3.zip.00{n}") for n in (1, 2, 3)),
        Remote(f"{_MTAT}/annotations_final.csv", "annotations_final.csv"),
        *(
            Remote(f"{_WON}/mtat/{f}.npy", f"split/mtat/{f}.npy")
            for f in ("train", "valid", "test", "binary", "tags")
        ),
        *(
            Remote(f"{_PONS}/{f}", f"index/mtt/{f}")
            for f in ("index_mtt.tsv", "train_gt_mtt.tsv", "val_gt_mtt.tsv", "test_gt_mtt.tsv")
        ),
    ],
    "gtzan": [
        Remote("http://opihi.cs.uvic.ca/sound/genres.tar.gz", "genres.tar.gz"),
        *(
            Remote(f"{_GTZAN_SPLIT}/{s}_filtered.txt", f"{s}_filtered.txt")
            for s in ("train", "valid", "test")
        ),
    ],
    "msd": [
        *(
            Remote(f"{_WON}/msd/{f}", f"split/msd/{f}")
            for f in (
                "50tagList.txt",
                "filtered_list_train.cP",
                "filtered_list_test.cP",
                "msd_id_to_tag_vector.cP",
            )
        ),
        Remote(f"{_WON}/msd/msd_id_to_7d.cP", "split/msd/msd_id_to_7d.cP", optional=True),
    ],
}
"""What `clmr download DATASET` fetches. MSD audio is not distributable: bring your own."""


def download(
    dataset: str,
    root: str | os.PathLike,
    *,
    mirror: str | None = None,
    extract: bool = True,
    retries: int = 4,
    progress: bool = True,
    manifest: list[Remote] | None = None,
) -> Path:
    """Fetch `dataset`'s files into `root` (resuming partial files), verify them, then extract
    MagnaTagATune's split zip or GTZAN's tarball. `manifest` overrides the built-in file list."""
    if manifest is None and dataset not in MANIFESTS:
        raise DownloadError(f"unknown dataset {dataset!r}; choose one of {', '.join(MANIFESTS)}")
    check_whole("retries (--retries)", retries, 0, DownloadError)
    if retries > MAX_RETRIES:
        raise DownloadError(f"retries (--retries) must be at most {MAX_RETRIES}, got {retries}")
    if mirror is not None and not (isinstance(mirror, str) and mirror.startswith(("http://", "https://"))):
        raise DownloadError(f"--mirror {mirror!r}: expected an http:// or https:// base URL")
    root = Path(root)
    with io_errors(root, DownloadError, "; fix it (free space, permissions) and rerun to resume"):
        return _download(dataset, root, mirror, extract, retries, progress, manifest)


def _download(
    dataset: str,
    root: Path,
    mirror: str | None,
    extract: bool,
    retries: int,
    progress: bool,
    manifest: list[Remote] | None,
) -> Path:
    """`download` once its arguments are checked."""
    if root.exists() and not root.is_dir():
        raise DownloadError(f"{root}: exists and is not a folder; --root names the dataset folder")
    root.mkdir(parents=True, exist_ok=True)
    known = read_checksums(root)
    for remote in manifest if manifest is not None else MANIFESTS[dataset]:
        url = f"{mirror.rstrip('/')}/{remote.target}" if mirror else remote.url
        target = root / remote.target
        if not target.is_file():
            try:
                fetch(url, target, retries=retries, progress=progress)
            except DownloadError as err:
                if remote.optional and "HTTP 404" in str(err):
                    _say(progress, f"skipped optional {remote.target}: not on the server")
                    continue
                raise
        digest = sha256_file(target)
        expected = remote.sha256 or known.get(remote.target)
        if expected and digest != expected:
            target.unlink()
            raise DownloadError(
                f"{target}: SHA-256 {digest} does not match the expected {expected}; removed it"
            )
        if not expected:  # not trusted yet: check what it is before recording it
            verify_content(target)
        if not _ZIP_PART.search(target.name) or (root / ".mp3-extracted").exists():
            known[remote.target] = digest  # zip parts: once they extracted (see extract_mtat)
            write_checksums(root, known)
    if extract and dataset == "mtat":
        extract_mtat(root, known)
    if extract and dataset == "gtzan" and (root / "genres.tar.gz").is_file():
        marker = root / ".genres-extracted"
        if not marker.exists():  # an interrupted extraction is redone, not mistaken for a finished one
            extract_tar(root / "genres.tar.gz", root)
            marker.touch()
    return root


def fetch(url: str, target: Path, *, retries: int = 4, progress: bool = True) -> Path:
    """Download `url` to `target` through `target.part`, resuming with an HTTP Range request."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                resumed = response.status == 206
                announced = _range_total(response.headers.get("Content-Range")) if resumed else None
                if resumed and _range_start(response.headers.get("Content-Range")) != have:
                    # the server answered another range than the one asked: start over
                    part.unlink()
                    raise urllib.error.URLError(
                        f"asked for bytes {have}- but got {response.headers.get('Content-Range')!r}"
                    )
                length = response.headers.get("Content-Length")
                total = (have if resumed else 0) + int(length) if length else None
                done = have if resumed else 0
                _say(progress, f"{'resuming' if resumed else 'downloading'} {url} -> {target}")
                with (
                    open(part, "ab" if resumed else "wb") as f,
                    _meter(progress, target.name, total, done) as show,
                ):
                    while chunk := response.read(CHUNK):
                        f.write(chunk)
                        done += len(chunk)
                        show(done)
                if total is not None and done < total:
                    raise urllib.error.URLError(f"connection closed at {done} of {total} bytes")
                if announced is not None and done != announced:
                    part.unlink()  # the pieces do not add up to the announced file: start over
                    raise urllib.error.URLError(f"got {done} bytes of a file announced as {announced}")
            os.replace(part, target)
            return target
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:
                size = _range_total(err.headers.get("Content-Range"))
                if size == have:  # the part is already complete (its checksum is checked next)
                    os.replace(part, target)
                    return target
                # longer than the file on the server, or a 416 that does not say the size: start over
                part.unlink()
                if attempt < retries:
                    continue
            if err.code < 500 or attempt == retries:
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            if attempt == retries:
                raise DownloadError(f"{url}: {err} (after {retries + 1} attempts; rerun to resume)") from err
        time.sleep(min(2**attempt, 30) * 0.5)
    raise DownloadError(f"{url}: download failed")


@contextmanager
def _meter(enabled: bool, name: str, total: int | None, start: int) -> Iterator[Callable[[int], None]]:
    """Yield `show(bytes_done)`: a rich bar (size, speed, time left) on a terminal, else a line every
    PROGRESS_EVERY_S, so logs of long downloads stay short."""
    if enabled and sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (
            TextColumn("{task.description}", markup=False),  # a name is shown as is, never as markup
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task(name, total=total, completed=start)
            yield lambda done: bar.update(task, completed=done)
        return
    began = last = time.monotonic()

    def line(done: int) -> None:
        nonlocal last
        if enabled and time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            _say(True, _progress_line(name, done, total, done - start, last - began))

    yield line


def _progress_line(name: str, done: int, total: int | None, fetched: int, seconds: float) -> str:
    """`  mp3.zip.001: 412.0 of 1,024.0 MB (8.1 MB/s)`."""
    mb = 1 << 20
    of = f" of {total / mb:,.1f}" if total else ""
    return f"  {name}: {done / mb:,.1f}{of} MB ({fetched / mb / max(seconds, 1e-9):,.1f} MB/s)"


def _range_start(content_range: str | None) -> int | None:
    """The first byte of a `Content-Range: bytes START-END/TOTAL` header, or None."""
    try:
        unit, _, span = (content_range or "").partition(" ")
        return int(span.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def _range_total(content_range: str | None) -> int | None:
    """The TOTAL of a `Content-Range: bytes START-END/TOTAL` (or `bytes */TOTAL`) header, or None."""
    size = (content_range or "").rpartition("/")[2].strip()
    return int(size) if size.isdigit() else None


_ZIP_PART = re.compile(r"\.zip\.\d{3}$")


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def extract_mtat(root: Path, known: dict[str, str] | None = None) -> None:
    """Join mp3.zip.001-003 into mp3.zip and extract it into ROOT (folders 0-9, a-f), once. Only then
    are the parts' checksums recorded in `known`; parts that do not make a valid zip are removed
    (unless their checksum was already trusted) so a rerun fetches them again."""
    marker = root / ".mp3-extracted"
    parts = sorted(root.glob("mp3.zip.0*"))
    if marker.exists() or not parts:
        return
    merged = root / "mp3.zip"
    with open(merged.with_suffix(".zip.tmp"), "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, CHUNK)
    os.replace(merged.with_suffix(".zip.tmp"), merged)
    known = read_checksums(root) if known is None else known
    try:
        extract_zip(merged, root)
    except DownloadError:
        merged.unlink()
        raise
    except ARCHIVE_ERRORS as err:
        merged.unlink()
        untrusted = [p for p in parts if p.name not in known]
        for part in untrusted:
            part.unlink()
        raise DownloadError(
            f"{merged}: the joined parts are not a valid zip ({err}); removed "
            f"{', '.join(p.name for p in untrusted) or 'nothing'}; rerun to fetch them again"
        ) from err
    marker.touch()
    known.update({p.name: sha256_file(p) for p in parts if p.name not in known})
    write_checksums(root, known)
    merged.unlink()  # the checksummed parts stay; the joined copy would only double the disk use


def read_checksums(root: Path) -> dict[str, str]:
    """ROOT/checksums.json: the SHA-256 recorded for each file (path relative to ROOT) when first made."""
    path = root / "checksums.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise DownloadError(f"{path}: not a JSON checksum record ({err}); delete it to record anew") from err
    if not isinstance(known, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
        for k, v in known.items()
    ):
        raise DownloadError(
            f"{path}: not a checksum record (expected {{file: 64 hex digits}}); delete it to record anew"
        )
    return known


def write_checksums(root: Path, known: dict[str, str]) -> None:
    """Replace ROOT/checksums.json atomically."""
    with atomic_open(root / "checksums.json") as f:
        f.write(json.dumps(dict(sorted(known.items())), indent=1))


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr)
