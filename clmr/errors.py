"""The base of clmr's user-facing errors: each message names the file or key and the problem."""

from __future__ import annotations

import numbers


class ClmrError(ValueError):
    """A problem with the user's input (a file, a checkpoint, a config, a store), not a bug.

    The command line prints its message without a traceback.
    """


class TrainingError(RuntimeError):
    """Training stopped by a problem of the run itself (e.g. a non-finite loss), not of its input; the
    command line prints its message without a traceback."""


def check_whole(
    name: str, value: object, least: int = 1, error: type[ClmrError] = ClmrError, unit: str = ""
) -> None:
    """`value` must be a whole number (numpy integers included, bools not) of at least `least`, else
    `error` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise error(f"{name} must be a whole number >= {least}{f' ({unit})' if unit else ''}, got {value!r}")
