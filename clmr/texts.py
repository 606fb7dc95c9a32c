"""Reading a user's text file (config YAML, tag lists, label CSVs, dataset split files): UTF-8 (with or
without a byte-order mark) or UTF-16 with one; any other encoding (Latin-1, cp1252...) is refused with
one line naming the file and the first bad byte, never guessed (a guess can turn "é" into "Ã©")."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from clmr.errors import ClmrError
from clmr.files import io_errors


def read_text(path: str | os.PathLike, error: type[ClmrError] = ClmrError, what: str = "file") -> str:
    """The text of `path`; a file that cannot be read (missing, a folder, denied) or decoded raises
    `error` naming it (`what` says which file it is, e.g. "tag names file (--tags)")."""
    path = Path(path)
    with io_errors(path, error, f" (the {what})"):
        data = path.read_bytes()
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    try:
        return data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise error(
            f"{path}: not {'UTF-16' if utf16 else 'UTF-8'} text (byte 0x{data[err.start]:02x} at offset "
            f"{err.start}, line {line}); save the {what} as UTF-8"
        ) from err


def read_lines(path: str | os.PathLike, error: type[ClmrError] = ClmrError, what: str = "file") -> list[str]:
    """The non-blank lines of `read_text(path)`, stripped (a one-name-per-line list such as tag names;
    Windows line ends included)."""
    return [line.strip() for line in read_text(path, error, what).splitlines() if line.strip()]
