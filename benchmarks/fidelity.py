"""clmr's reverb, pitch shift and filter against the reference's DSP: the `sox` command line (the libsox that
torchaudio-augmentations calls) and julius. Prints DRR, T60, tail onset and level (reverb), level change
and moved peak (pitch shift), relative error (filter).

    python benchmarks/fidelity.py [--sample-rate 22050] [--seconds 10]

Measures (clmr.augment.measure) on the response to an impulse: DRR = energy within +-1 ms of the impulse
over the rest; T60 from the -5..-25 dB slope of the tail's Schroeder curve; onset = first tail sample within
40 dB of the tail's peak. Levels are mean-power changes in dB over the middle 3/4 (pitch) or the whole
signal (reverb, on music at a peak of 0.25: sox clips at full scale), on white noise, a four-note chord
and a generated piece (clmr.data.synthetic).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from clmr.augment import HighLowPass, PitchShift, Reverb
from clmr.augment.measure import drr_db, level_db, onset_ms, t60_s
from clmr.augment.reference import have_sox, sox
from clmr.data.synthetic import draw_piece, render

REVERB_GRID = [(50, 50, 100), (100, 0, 100), (20, 50, 20), (80, 80, 50), (50, 50, 0), (0, 100, 70)]
CENTS = [-700, -300, 300, 700]


def signals(sr: int, seconds: float) -> dict[str, torch.Tensor]:
    """White noise, a C major chord with its octave, and a generated piece, each `seconds` long."""
    n = int(seconds * sr)
    t = torch.arange(n, dtype=torch.float64) / sr
    chord = sum(0.1 * torch.sin(2 * math.pi * f * t) for f in (261.63, 329.63, 392.0, 523.25)).float()
    rng = np.random.default_rng(3)
    piece = torch.from_numpy(render(draw_piece(rng), seconds, sr, rng))
    noise = 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(0))
    return {"noise": noise, "chord": chord, "music": piece}


def reverb_table(sr: int, seconds: float) -> None:
    """Impulse measures and level on music: sox `reverb r d s channels 1` against clmr's Reverb."""
    x = torch.zeros(int(seconds * sr))
    x[0] = 0.5
    piece = signals(sr, 2.7)["music"]
    piece = piece * (0.25 / float(piece.abs().max()))  # sox clips its output at full scale, clmr does not
    print(f"reverb, {seconds:g} s impulse responses at {sr} Hz (sox | clmr):")
    print(f"{'rev/damp/room':>14s} {'DRR dB':>14s} {'T60 s':>14s} {'onset ms':>14s} {'music level dB':>16s}")
    for r, d, s in REVERB_GRID:
        effect = ["reverb", str(r), str(d), str(s), "channels", "1"]
        params = {
            k: torch.tensor([float(v)]) for k, v in (("room_size", s), ("reverberance", r), ("damping", d))
        }
        ref, y = sox(x, sr, effect), Reverb(sr).apply(x[None], params)[0].double()
        ref_m, y_m = sox(piece, sr, effect), Reverb(sr).apply(piece[None], params)[0]
        print(
            f"{f'{r}/{d}/{s}':>14s} {drr_db(ref, 0, sr):6.1f} |{drr_db(y, 0, sr):6.1f} "
            f"{t60_s(ref, 0, sr):6.2f} |{t60_s(y, 0, sr):6.2f} "
            f"{onset_ms(ref, 0, sr):6.1f} |{onset_ms(y, 0, sr):6.1f} "
            f"{level_db(ref_m, piece):7.2f} |{level_db(y_m, piece):7.2f}"
        )


def pitch_table(sr: int) -> None:
    """Level change on noise, chord and music, and where a 440 Hz tone goes: sox `pitch c rate` vs clmr."""
    step = PitchShift(sr)
    sigs = signals(sr, 2.7)
    n = int(1.5 * sr)
    tone = torch.sin(2 * math.pi * 440 * torch.arange(n, dtype=torch.float64) / sr).float()
    print(f"\npitch shift, level change in dB (sox | clmr) and the peak of a 440 Hz tone, at {sr} Hz:")
    print(f"{'cents':>6s} " + " ".join(f"{name:>14s}" for name in sigs) + f" {'440 Hz ->':>22s}")
    for cents in CENTS:
        effect = ["pitch", str(cents), "rate", str(sr)]
        cells = []
        for x in sigs.values():
            ref = sox(x, sr, effect)[: x.numel()]
            y = step.apply(x[None], {"cents": torch.tensor([float(cents)])})[0]
            mid = slice(x.numel() // 8, -x.numel() // 8)
            cells.append(f"{level_db(ref[mid], x[mid]):6.2f} |{level_db(y[mid], x[mid]):6.2f}")
        ref_tone = sox(tone, sr, effect)[:n].float()
        y_tone = step.apply(tone[None], {"cents": torch.tensor([float(cents)])})[0]
        want = 440 * 2 ** (cents / 1200)
        peaks = f"{peak_hz(ref_tone, sr):6.1f} |{peak_hz(y_tone, sr):6.1f} ({want:.1f})"
        print(f"{cents:6d} " + " ".join(cells) + f" {peaks:>22s}")


def peak_hz(y: torch.Tensor, sr: int) -> float:
    """Frequency of the spectral peak of the middle of y (Hann window, 8x zero padding)."""
    mid = y[y.numel() // 8 : -y.numel() // 8].double()
    spec = torch.fft.rfft(mid * torch.hann_window(mid.numel(), dtype=torch.float64), n=8 * mid.numel()).abs()
    return float(spec.argmax()) * sr / (8 * mid.numel())


def filter_table(sr: int) -> None:
    """Relative error (L2) of clmr's HighLowPass against julius' highpass_filter / lowpass_filter."""
    import julius

    sigs = {k: v for k, v in signals(sr, 2.7).items() if k != "chord"}  # a chord has nothing above 1 kHz
    grid = [(True, 200.0), (True, 700.0), (True, 1200.0), (False, 2200.0), (False, 3100.0), (False, 4000.0)]
    print(f"\nfilter, relative error against julius at {sr} Hz:")
    print(f"{'kind':>10s} {'cutoff Hz':>10s} " + " ".join(f"{name:>10s}" for name in sigs))
    step = HighLowPass(sr)
    for high, cutoff in grid:
        errors = []
        for x in sigs.values():
            params = {"highpass": torch.tensor([high]), "cutoff": torch.tensor([cutoff])}
            y = step.apply(x[None], params)[0]
            ref = (julius.highpass_filter if high else julius.lowpass_filter)(x, cutoff / sr)
            errors.append(f"{float((y - ref).norm() / ref.norm()):10.1e}")
        print(f"{'high-pass' if high else 'low-pass':>10s} {cutoff:10.0f} " + " ".join(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--seconds", type=float, default=10.0, help="impulse response length for T60")
    args = parser.parse_args()
    if have_sox():
        reverb_table(args.sample_rate, args.seconds)
        pitch_table(args.sample_rate)
    else:
        print("reverb and pitch shift: skipped, the sox command line is not installed (apt-get install sox)")
    try:
        filter_table(args.sample_rate)
    except ImportError:
        print("filter: skipped, julius is not installed (pip install julius)")


if __name__ == "__main__":
    main()
