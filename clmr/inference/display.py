"""Paths as a person reads them in a table: relative to the folder they share, and cut from the left
when still too long, so that the file names (the part a user reads) stay whole."""

from __future__ import annotations

import os
from collections.abc import Sequence

SEPARATORS = "/" + os.sep
ELLIPSIS = "…"


def common_folder(paths: Sequence[str]) -> str:
    """The deepest folder holding every path, by name ("" when they share none, or mix absolute and
    relative paths)."""
    if not paths:
        return ""
    try:
        return os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:
        return ""


def shorten_left(text: str, width: int) -> str:
    """`text` in at most `width` characters: whole if it fits, else its end after an ellipsis, starting
    at a folder boundary (`…/x/track07.ogg`), so the file name is kept; a file name that alone does not
    fit keeps its start and its end (`track07_of_a_lo…title.ogg`)."""
    if len(text) <= width:
        return text
    if width < 1:
        return ""
    tail = text[len(text) - (width - 1) :]
    cut = min((i for i in (tail.find(s) for s in SEPARATORS) if i >= 0), default=-1)
    if cut >= 0:
        return ELLIPSIS + tail[cut:]
    name = text[max(text.rfind(s) for s in SEPARATORS) + 1 :]
    end = (width - 1) // 2
    return name[: width - 1 - end] + ELLIPSIS + name[len(name) - end :]


def shown_paths(paths: Sequence[str], width: int) -> tuple[str, list[str]]:
    """(common folder, each path relative to it and shortened from the left to `width` characters)."""
    folder = common_folder(paths)
    rel = [p[len(folder) :].lstrip(SEPARATORS) if folder else p for p in paths]
    return folder, [shorten_left(p, width) for p in rel]
