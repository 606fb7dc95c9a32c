"""The numbers a model is built from, checked before anything is allocated: constructor arguments
(what `--model.*` flags and a file's JSON config reach) and the size and nesting of that JSON."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from clmr.errors import ClmrError
from clmr.limits import MAX_CLASSES, MAX_DIM, MAX_SAMPLE_RATE, MAX_WIDTH  # noqa: F401 (re-exported)

MAX_CONFIG_CHARS = 8 << 20  # a model's JSON config is a few kB; MAX_CLASSES tag names fit in 8 MiB
MAX_CONFIG_DEPTH = 16  # nesting of that JSON (the config itself is 3 deep; meta adds a few)

_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class ModelConfigError(ClmrError):
    """A model argument or config value of the wrong type or out of range; `key` names it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key} {problem}")
        self.key, self.problem = key, problem

    def under(self, section: str) -> ModelConfigError:
        """The same error with `key` as `section.key` (its place in a checkpoint's config)."""
        return ModelConfigError(f"{section}.{self.key}" if self.key else section, self.problem)


@contextmanager
def within(section: str) -> Iterator[None]:
    """Errors raised inside name their key under `section` (`width` -> `encoder.width`)."""
    try:
        yield
    except ModelConfigError as err:
        raise err.under(section) from None


def whole(key: str, value: Any, low: int, high: int) -> int:
    """`value` as an int in low..high (bools, floats and strings refused), else ModelConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ModelConfigError(key, f"must be a whole number in {low:,}..{high:,}, got {show(value)}")
    return int(value)


def real(key: str, value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    """`value` as a finite float in [low, high] (or (low, high] when `open_low`), else ModelConfigError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > high or value < low or (open_low and value == low):
        bounds = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise ModelConfigError(key, f"must be a finite number in {bounds}, got {show(value)}")
    return float(value)


def sample_rate(value: Any, key: str = "sample_rate") -> int:
    """A model's sample rate: a whole number of Hz in 1..MAX_SAMPLE_RATE."""
    return whole(key, value, 1, MAX_SAMPLE_RATE)


def tags(value: Any, n_classes: int | None) -> list[str] | None:
    """Tag names: None, or a list of strings, one per head output when there is a head."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        raise ModelConfigError("tags", f"must be a list of strings, got {show(value)}")
    if n_classes is not None and len(value) != n_classes:
        raise ModelConfigError("tags", f"has {len(value)} tag names for a head with {n_classes} outputs")
    return list(value)


def required(config: dict[str, Any], key: str) -> Any:
    """`config[key]`, which must be present."""
    if key not in config:
        raise ModelConfigError(key, "is missing")
    return config[key]


def json_object(value: Any, key: str = "", *, optional: bool = False) -> dict[str, Any] | None:
    """`value`, which must be a JSON object (or null when `optional`)."""
    if not isinstance(value, dict) and not (optional and value is None):
        raise ModelConfigError(
            key, f"must be a JSON object{' or null' if optional else ''}, got {show(value)}"
        )
    return value


def json_text(text: str) -> None:
    """Refuse JSON text too large or too deeply nested to be a model config, before json.loads (whose
    recursion a deeply nested document can exhaust)."""
    if len(text) > MAX_CONFIG_CHARS:
        raise ModelConfigError("config", f"is {len(text):,} characters, more than {MAX_CONFIG_CHARS:,}")
    depth = deepest = 0
    for token in _JSON_TOKEN.finditer(text):
        bracket = token[0]
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_CONFIG_DEPTH:
                raise ModelConfigError("config", f"is nested deeper than {MAX_CONFIG_DEPTH} levels")
        elif bracket in "]}":
            depth -= 1


def show(value: Any) -> str:
    """A short repr for an error message (a huge list or string is cut)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
