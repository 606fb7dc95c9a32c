"""Checking downloaded files before they are trusted: their content by kind (a .npy loads, a .cP
unpickles as plain data, text is UTF-8, a tarball reads to its end) and archive extraction that refuses
damaged archives and any entry landing outside the target folder."""

from __future__ import annotations

import gzip
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from clmr.data.datasets.base import DatasetError
from clmr.data.datasets.msd import load_pickle
from clmr.errors import ClmrError


class DownloadError(ClmrError):
    """A download that failed for good, a checksum mismatch or an unsafe archive."""


ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)
"""What a damaged archive raises while it is read (gzip's BadGzipFile is an OSError)."""


def verify_content(path: Path) -> None:
    """Check that a downloaded file is what its name says (a .npy array, a plain-data .cP pickle, UTF-8
    text, a readable tarball); otherwise remove it and raise DownloadError, so it is fetched anew."""
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            np.load(path, allow_pickle=False)
        elif name.endswith(".cp"):
            load_pickle(path)
        elif name.endswith((".txt", ".csv")):
            text = path.read_bytes().decode("utf-8")
            if "\0" in text:
                raise ValueError("it holds NUL bytes")
        elif name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(path) as t:
                t.getmembers()  # reads (and decompresses) the whole archive
        else:
            return
    except (DatasetError, *ARCHIVE_ERRORS, UnicodeDecodeError) as err:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{path}: the downloaded file is not a valid {name.rsplit('.', 1)[-1]} file ({err}); removed "
            "it, rerun to fetch it again (or check --mirror)"
        ) from err


def extract_zip(archive: Path, target: Path) -> None:
    """Extract every entry of a zip under `target`; an entry whose path would escape it is refused."""
    base = target.resolve()
    with zipfile.ZipFile(archive) as z:
        for member in z.infolist():
            _inside(base, member.filename, archive)
        if (bad := z.testzip()) is not None:
            raise zipfile.BadZipFile(f"entry {bad!r} fails its CRC check")
        z.extractall(target)


def extract_tar(archive: Path, target: Path) -> None:
    """Extract a tar archive under `target`, refusing entries (or links) that would escape it."""
    base = target.resolve()
    try:
        with tarfile.open(archive) as t:
            members = t.getmembers()
            for member in members:
                _inside(base, member.name, archive)
                if member.issym() or member.islnk():
                    _inside(base, str(Path(member.name).parent / member.linkname), archive)
            t.extractall(target, members=members, filter="data")
    except DownloadError:
        raise
    except ARCHIVE_ERRORS as err:
        if isinstance(err, OSError) and not isinstance(err, gzip.BadGzipFile) and err.errno is not None:
            raise  # a disk fault while writing, named by the caller
        raise DownloadError(
            f"{archive}: a damaged archive ({err}); delete it and rerun to fetch it again"
        ) from err


def _inside(base: Path, name: str, archive: Path) -> None:
    dest = (base / name).resolve()
    if Path(name).is_absolute() or not dest.is_relative_to(base):
        raise DownloadError(f"{archive}: entry {name!r} would be written outside {base}; refusing to extract")
