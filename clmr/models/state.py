"""Strict copying of checkpoint tensors into modules: the first missing, unexpected, mis-shaped or
non-finite key is named in a one-line `CheckpointError`, rather than torch's list of every mismatch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from clmr.errors import ClmrError
from clmr.models.checks import ModelConfigError

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class CheckpointError(ClmrError):
    """A file that is not a usable checkpoint; the message names the file and the first bad key."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@contextmanager
def built_from(path: str | Path, what: str) -> Iterator[None]:
    """A size read from file `path` that a module refuses (`ModelConfigError`) names the file and `what`."""
    try:
        yield
    except ModelConfigError as err:
        raise CheckpointError(path, f"{what} {err}") from None


def strip(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `tensors` under `prefix`, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_state(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    path: Path,
    name: Callable[[str], str] = str,
) -> None:
    """Copy `state` into `module`; `name(key)` is the key as the file spells it, for the error message.

    NaN or infinite weights are refused: such a model gives NaN for every input, which is better
    said at load time than found in a table of embeddings; so are integer weights and non-integer
    counters (`num_batches_tracked`). A module built on the meta device takes the tensors themselves.
    """
    expected = module.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise CheckpointError(path, f"missing key '{name(key)}'")
        value = state[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise CheckpointError(
                path, f"key '{name(key)}' has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
            )
        kinds = FLOATS if ref.is_floating_point() else INTEGERS
        if value.dtype not in kinds:
            raise CheckpointError(
                path,
                f"key '{name(key)}' has dtype {str(value.dtype).removeprefix('torch.')}, expected "
                + ("floating point (float16/32/64, bfloat16)" if kinds is FLOATS else "an integer type"),
            )
        # a finite sum means no NaN or inf (both propagate); only an overflowing sum needs the element check
        if value.is_floating_point() and not value.sum().isfinite() and not torch.isfinite(value).all():
            raise CheckpointError(path, f"key '{name(key)}' holds NaN or infinite values")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(path, f"unexpected key '{name(extra[0])}'")
    if any(ref.is_meta for ref in expected.values()):  # built on the meta device: take the file's tensors
        module.load_state_dict({k: state[k].to(ref.dtype) for k, ref in expected.items()}, assign=True)
    else:
        module.load_state_dict(state)
