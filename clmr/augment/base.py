"""The contract every augmentation step follows: draw per-example parameters, fire with probability p."""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import nn

from clmr.errors import ClmrError
from clmr.limits import AUGMENT_SCRATCH_MB

Params = dict[str, torch.Tensor]


class AugmentError(ClmrError):
    """A bad augmentation setting (unknown step or argument, probability outside [0, 1])."""


def uniform(
    n: int, low: float, high: float, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """n float32 draws from U[low, high) on `device`."""
    return low + (high - low) * torch.rand(n, device=device, generator=generator)


class Workspace:
    """Named scratch buffers that a step reuses across the row blocks of one call.

    On CPU a fresh batch-sized tensor is page-faulted on every allocation; a step that asks the workspace for
    its intermediates touches that memory once per call instead of once per block. A request for fewer
    elements than the buffer holds returns a view of its start, so a (b, n) view of a buffer first made for
    (b', n) rows, b <= b', is the same memory as its first b rows. A fresh workspace simply allocates.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def get(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, zero: bool = False
    ) -> torch.Tensor:
        """An uninitialised tensor of `shape` (the buffer `name`, grown or re-typed when needed); with `zero`
        a new buffer starts as zeros (for a caller that rewrites only part of it on every call)."""
        n = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            buf = self.buffers[name] = (torch.zeros if zero else torch.empty)(n, dtype=dtype, device=device)
        return buf[:n].view(shape)


def place(dst: torch.Tensor, x: torch.Tensor) -> None:
    """dst[...] = x, skipped when x already is dst (`Step.select` gathered the rows into the step's `slot`)."""
    if x.data_ptr() != dst.data_ptr() or x.stride() != dst.stride() or x.dtype != dst.dtype:
        dst.copy_(x)


def check_probability(p: float, name: str) -> float:
    """p as a float, or an AugmentError naming the step."""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise AugmentError(f"augmentation '{name}': probability p={p} is not in [0, 1]")
    return p


def check_range(
    step: str, what: str, value: Any, least: float | None = None, most: float | None = None
) -> tuple[float, float]:
    """A (low, high) pair of floats with least <= low <= high <= most, or an AugmentError naming the step."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise AugmentError(
            f"augmentation '{step}': {what} must be a (low, high) pair, got {value!r}"
        ) from None
    if not low <= high or (least is not None and low < least) or (most is not None and high > most):
        bounds = f" within [{least if least is not None else '-inf'}, {most if most is not None else 'inf'}]"
        raise AugmentError(
            f"augmentation '{step}': {what} needs low <= high{bounds}, got ({low:g}, {high:g})"
        )
    return low, high


def check_scratch_mb(scratch_mb: Any) -> int | None:
    """A scratch budget in MB (None: unbounded) as bytes, or an AugmentError."""
    if scratch_mb is None:
        return None
    if isinstance(scratch_mb, bool) or not isinstance(scratch_mb, (int, float)) or not scratch_mb > 0:
        raise AugmentError(f"augmentation scratch_mb must be a number of MB > 0, got {scratch_mb!r}")
    return int(scratch_mb * (1 << 20))


def real_size(dtype: torch.dtype) -> int:
    """Bytes of the real type the FFT steps compute in for an input of `dtype` (float64, else float32)."""
    return 8 if dtype == torch.float64 else 4


def check_sample_rate(step: str, sample_rate: Any) -> int:
    """A positive whole sample rate, or an AugmentError naming the step."""
    if isinstance(sample_rate, bool) or not float(sample_rate).is_integer() or int(sample_rate) <= 0:
        raise AugmentError(
            f"augmentation '{step}': sample_rate must be a positive whole number, got {sample_rate!r}"
        )
    return int(sample_rate)


class Step(nn.Module):
    """One augmentation step: `forward` = draw parameters + coin flips + `apply` on the examples that fire.

    `apply(x, params)` applies the step to every row of x with the given per-example parameters (tests use
    it to force parameters). On CPU only the rows that fire are computed (the mask is already on the host);
    on an accelerator every row is computed and the result selected with the mask (no host sync). Either
    way the rows go through in chunks of `chunk_rows`, so that the scratch memory of a call stays within
    `scratch_bytes` (None: no bound) whatever the batch size; the parameters are drawn for the whole batch
    first, so the output does not depend on the chunking.
    """

    name = "step"
    # On CPU, steps whose intermediates are several times the input (index tensors) run over blocks of
    # about this many samples: fresh allocations of batch-sized buffers are page-faulted on every call,
    # blocks are reused from the allocator's cache (2.5x faster for PitchShift on a 2-core machine).
    cpu_block_samples: int | None = None
    # a chunk holds a multiple of this many rows (Noise draws its noise this many rows at a time)
    row_multiple = 1

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = check_probability(p, self.name)
        self.scratch_bytes = check_scratch_mb(AUGMENT_SCRATCH_MB)

    def scratch_per_example(self, length: int, dtype: torch.dtype) -> int:
        """Bytes one example of `length` samples of `dtype` takes while a chunk runs, at most: its gathered
        input and selected output (two rows), `apply`'s intermediates and result (each step's formula)."""
        return 2 * length * dtype.itemsize

    def chunk_rows(self, length: int, dtype: torch.dtype, device: torch.device) -> int:
        """Rows per chunk: as many as `scratch_bytes` holds (on CPU also at most `cpu_block_samples`
        samples), rounded down to a multiple of `row_multiple`, at least one multiple."""
        rows = sys.maxsize
        if self.scratch_bytes is not None:
            rows = self.scratch_bytes // max(self.scratch_per_example(length, dtype), 1)
        if device.type == "cpu" and self.cpu_block_samples:
            rows = min(rows, self.cpu_block_samples // max(length, 1))
        return max(self.row_multiple, rows - rows % self.row_multiple)

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> Params:
        """Per-example parameters for n examples (always the same number of random draws)."""
        raise NotImplementedError

    def slot(
        self, work: Workspace, batch: int, length: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor | None:
        """Where in `work` `apply` copies a (batch, length) input of `dtype` (e.g. the middle of a padded
        buffer), so that `select` gathers a CPU block straight there; None: into a buffer of its own."""
        return None

    def apply(
        self,
        x: torch.Tensor,
        params: Params,
        generator: torch.Generator | None = None,
        work: Workspace | None = None,
    ) -> torch.Tensor:
        """The step applied to every row of x (B, T) with per-row params; returns (B, T).

        x is never written. With a `work`space the result may be one of its buffers (valid until the next
        call with the same workspace).
        """
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.run(x, generator)

    def run(
        self, x: torch.Tensor, generator: torch.Generator | None = None, inplace: bool = False
    ) -> torch.Tensor:
        """`forward`, optionally writing into x (the chain does so on the buffers it owns, on CPU)."""
        if x.dim() != 2:
            raise ValueError(f"{type(self).__name__} expects a batch of shape (B, T), got {tuple(x.shape)}")
        if self.p == 0.0 or x.shape[0] == 0:
            return x
        fire = torch.rand(x.shape[0], device=x.device, generator=generator) < self.p
        params = self.draw(x.shape[0], x.device, generator)
        return self.select(x, fire, params, generator, inplace)

    def compute_all(self, x: torch.Tensor) -> bool:
        """Whether to compute every row and mask (accelerators: no host sync) rather than only firing rows."""
        return x.device.type != "cpu"

    def select(
        self,
        x: torch.Tensor,
        fire: torch.Tensor,
        params: Params,
        generator: torch.Generator | None,
        inplace: bool = False,
    ) -> torch.Tensor:
        """x with the rows where `fire` is True replaced by the step's output, chunk by chunk."""
        batch, length = x.shape
        chunk = self.chunk_rows(length, x.dtype, x.device)
        work = Workspace()
        if self.compute_all(x):
            out = x if inplace else torch.empty_like(x)
            for start in range(0, batch, chunk):
                r = slice(start, start + chunk)
                result = self.apply(x[r], {k: v[r] for k, v in params.items()}, generator, work)
                out[r] = torch.where(fire[r, None], result, x[r])
            return out
        rows = fire.nonzero().squeeze(1)
        if rows.numel() == 0:
            return x
        out = x if inplace else x.clone()
        for start in range(0, rows.numel(), chunk):
            r = rows[start : start + chunk]
            rows_in = self.slot(work, r.numel(), length, x.dtype, x.device)
            if rows_in is None:
                rows_in = work.get("rows", (r.numel(), length), x.dtype, x.device)
            result = self.apply(
                torch.index_select(out, 0, r, out=rows_in),
                {k: v[r] for k, v in params.items()},
                generator,
                work,
            )
            out.index_copy_(0, r, result.to(x.dtype))
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ScaleStep(Step):
    """A step that multiplies each example by a scalar: one fused multiply, identical on every device."""

    def scratch_per_example(self, length: int, dtype: torch.dtype) -> int:
        return 0  # in place (the chain's buffer) or straight into the output

    def factor(self, params: Params) -> torch.Tensor:
        """The per-example multiplier (B,)."""
        raise NotImplementedError

    def apply(
        self,
        x: torch.Tensor,
        params: Params,
        generator: torch.Generator | None = None,
        work: Workspace | None = None,
    ) -> torch.Tensor:
        return x * self.factor(params).to(x.dtype)[:, None]

    def select(
        self,
        x: torch.Tensor,
        fire: torch.Tensor,
        params: Params,
        generator: torch.Generator | None,
        inplace: bool = False,
    ) -> torch.Tensor:
        factor = torch.where(fire, self.factor(params), torch.ones((), device=x.device)).to(x.dtype)
        return x.mul_(factor[:, None]) if inplace else x * factor[:, None]
