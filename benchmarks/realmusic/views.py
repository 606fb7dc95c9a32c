"""A spectrogram pair per augmentation step (the excerpt, then the step alone at p = 1) so that a broken
step cannot hide: PNGs for docs/img/views/ and WAVs to listen to (docs/realmusic.md, "The views").

The excerpt is `--seconds` of a track of a clmr store (`--store`, `--track`), or, without a store, a
generated chord with a drum-like pulse at `--sample-rate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

VIEWS = ("polarity", "noise", "gain", "filter", "filter-rel", "delay", "pitch", "reverb")
"""The chain's steps, and the filter with ranges relative to the rate (`reference_rate` 22,050 Hz)."""


def generated(sample_rate: int, seconds: float) -> np.ndarray:
    """A test excerpt: an A minor chord with harmonics and a 2 Hz decaying noise pulse, peak 0.5."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    chord = sum(np.sin(2 * np.pi * f * k * t) / k for f in (220.0, 261.6, 329.6) for k in (1, 2, 3, 4))
    pulse = np.random.default_rng(0).standard_normal(len(t)) * np.exp(-30 * (t % 0.5))
    x = chord + 2 * pulse
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def view(audio: np.ndarray, sample_rate: int, name: str, seed: int = 0) -> np.ndarray:
    """`audio` through one step of `clmr.augment.Chain` alone, applied for certain (p = 1)."""
    from clmr.augment import Chain

    step = "filter" if name == "filter-rel" else name
    override = {"p": 1.0, "reference_rate": 22050} if name == "filter-rel" else 1.0
    chain = Chain(sample_rate, **{s: (override if s == step else 0.0) for s in Chain(sample_rate).steps})
    generator = torch.Generator().manual_seed(seed)
    return chain(torch.from_numpy(audio)[None].clone(), generator=generator)[0].numpy()


def spectrogram(audio: np.ndarray, n_fft: int = 512) -> np.ndarray:
    """(bins, frames) magnitude in dB (Hann window, hop n_fft / 4), floored at -100 dB."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[:: n_fft // 4] * np.hanning(n_fft)
    return 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1)).T + 1e-5)


def plot(audio: np.ndarray, augmented: np.ndarray, sample_rate: int, title: str, path: Path) -> None:
    """The two spectrograms side by side on one colour scale, written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 2.6), sharey=True, constrained_layout=True)
    extent = (0, len(audio) / sample_rate, 0, sample_rate / 2000)
    for ax, x, label in ((axes[0], audio, "excerpt"), (axes[1], augmented, title)):
        image = ax.imshow(spectrogram(x), origin="lower", aspect="auto", extent=extent, vmin=-60, vmax=40)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("s", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("kHz", fontsize=8)
    fig.colorbar(image, ax=axes, label="dB").ax.tick_params(labelsize=7)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/views"), help="PNG folder")
    parser.add_argument("--wav", type=Path, help="also write each pair's audio here (to listen to)")
    parser.add_argument("--store", type=Path, help="a clmr store to take the excerpt from")
    parser.add_argument("--track", type=int, default=0, help="the store's track index (default: 0)")
    parser.add_argument("--start", type=float, default=30.0, help="excerpt start in s (default: 30)")
    parser.add_argument("--seconds", type=float, default=4.0, help="excerpt length in s (default: 4)")
    parser.add_argument("--sample-rate", type=int, default=8000, help="without --store (default: 8000)")
    parser.add_argument("--seed", type=int, default=0, help="the steps' random draws (default: 0)")
    args = parser.parse_args(argv)
    if args.store is not None:
        from clmr.data import Store

        store = Store(args.store)
        rate = store.sample_rate
        n = int(args.seconds * rate)
        start = min(int(args.start * rate), max(store.length(args.track) - n, 0))
        audio, source = (
            store.crop(args.track, start, n),
            f"{store.track_id(args.track)} at {start / rate:.1f} s",
        )
    else:
        rate, source = args.sample_rate, "a generated chord and pulse"
        audio = generated(rate, args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in VIEWS:
        augmented = view(audio, rate, name, args.seed)
        plot(audio, augmented, rate, f"{name} (p = 1)", args.out / f"{name}.png")
        if args.wav is not None:
            from scipy.io import wavfile

            args.wav.mkdir(parents=True, exist_ok=True)
            wavfile.write(
                args.wav / f"{name}.wav", rate, np.concatenate([audio, np.zeros(rate // 2), augmented])
            )
        print(f"{args.out / (name + '.png')}: {source}, {rate} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
