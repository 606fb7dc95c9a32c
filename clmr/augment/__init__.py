"""Batched, seeded audio augmentations (the CLMR chain) that run on the batch's device.

Every step takes (B, T), draws its parameters per example from a `torch.Generator`, fires per example
with probability p, and exposes `apply(x, params)` to apply given parameters.
"""

from clmr.augment.base import AugmentError, Step
from clmr.augment.chain import STEPS, Chain
from clmr.augment.crop import RandomCrop
from clmr.augment.delay import Delay
from clmr.augment.filter import HighLowPass
from clmr.augment.gain import Gain
from clmr.augment.noise import Noise
from clmr.augment.pitch import PitchShift
from clmr.augment.polarity import PolarityInversion
from clmr.augment.reverb import Reverb

__all__ = [
    "STEPS",
    "AugmentError",
    "Chain",
    "Delay",
    "Gain",
    "HighLowPass",
    "Noise",
    "PitchShift",
    "PolarityInversion",
    "RandomCrop",
    "Reverb",
    "Step",
]
