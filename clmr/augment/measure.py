"""Measures of what a reverb or pitch shift did: direct-to-reverberant ratio, T60, tail onset, level.

The definitions the fidelity tests and `benchmarks/fidelity.py` compare clmr and sox with, on the response
y (1-D) to a unit impulse at sample `at`: the direct sound is y within +-1 ms of the impulse, the tail
everything after that window.
"""

from __future__ import annotations

import math

import torch

DIRECT_MS = 1.0


def _direct_end(at: int, sample_rate: int) -> tuple[int, int]:
    """(first, last + 1) sample of the direct-sound window around `at`."""
    half = round(DIRECT_MS * sample_rate / 1000)
    return max(at - half, 0), at + half + 1


def drr_db(y: torch.Tensor, at: int, sample_rate: int) -> float:
    """Direct-to-reverberant ratio (dB): energy within +-1 ms of the impulse over all the rest."""
    start, end = _direct_end(at, sample_rate)
    energy = y.double().square()
    direct = float(energy[start:end].sum())
    return 10 * math.log10(direct / max(float(energy.sum()) - direct, 1e-300))


def t60_s(y: torch.Tensor, at: int, sample_rate: int) -> float:
    """Reverberation time (s) of the tail: the -5 to -25 dB slope of its Schroeder decay curve, to -60 dB.

    The record must outlast the decay well past -25 dB (the curve integrates to the record's end); NaN
    when no two samples lie in the fitted range.
    """
    tail = y[_direct_end(at, sample_rate)[1] :].double()
    if not bool(tail.any()):
        return math.nan
    edc = tail.square().flip(0).cumsum(0).flip(0)
    db = 10 * torch.log10(edc / edc[0] + 1e-300)
    fit = ((db <= -5) & (db >= -25)).nonzero().squeeze(1)
    if fit.numel() < 2:
        return math.nan
    t = fit.double() / sample_rate
    t = t - t.mean()
    slope = float((t * db[fit]).sum() / t.square().sum())  # least-squares dB per second
    return -60.0 / slope


def onset_ms(y: torch.Tensor, at: int, sample_rate: int) -> float:
    """Milliseconds from the impulse to the first tail sample within 40 dB of the tail's peak."""
    end = _direct_end(at, sample_rate)[1]
    tail = y[end:].abs()
    first = int((tail >= 0.01 * tail.max()).nonzero()[0, 0])
    return 1000.0 * (end + first - at) / sample_rate


def level_db(y: torch.Tensor, x: torch.Tensor) -> float:
    """Output level relative to the input (dB of mean power)."""
    return 10 * math.log10(float(y.double().square().mean()) / float(x.double().square().mean()))
