"""The reference's DSP, run for comparison: the `sox` command line (the libsox that torchaudio-augmentations
calls) on one signal at a time. Used by the fidelity tests and `benchmarks/fidelity.py`, not in training."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import soundfile as sf
import torch

from clmr.errors import ClmrError


class SoxError(ClmrError):
    """The reference tool is missing or failed on the given input."""


def have_sox() -> bool:
    """Whether the `sox` command line is installed."""
    return shutil.which("sox") is not None


def sox(x: torch.Tensor, sample_rate: int, effects: list[str]) -> torch.Tensor:
    """`sox in.wav -c 1 out.wav <effects>` on a mono signal x (T,) as 32-bit float WAV; returns (T',) float64.

    E.g. `sox(x, 22050, ["reverb", "50", "50", "100", "channels", "1"])` is torchaudio-augmentations'
    Reverb, `["pitch", "300", "rate", "22050"]` its PitchShift.
    """
    if not have_sox():
        raise SoxError("the sox command line is not installed (apt-get install sox)")
    with tempfile.TemporaryDirectory(prefix="clmr-sox-") as tmp:
        src, dst = Path(tmp, "in.wav"), Path(tmp, "out.wav")
        sf.write(src, x.detach().cpu().float().numpy(), sample_rate, subtype="FLOAT")
        run = subprocess.run(
            ["sox", str(src), "-c", "1", str(dst), *effects], capture_output=True, text=True, check=False
        )
        if run.returncode != 0:
            raise SoxError(f"sox {' '.join(effects)}: {run.stderr.strip().splitlines()[-1:]}")
        y, _ = sf.read(dst, dtype="float64")
    return torch.from_numpy(y)
