"""Augmented pairs per second: the batched `clmr.augment.Chain` against a per-example loop over the same
chain (the baseline, run in the same process) and pedalboard's per-example equivalent of the chain.

    python benchmarks/augment.py [--device cpu|cuda] [--batch 48] [--repeats 5] [--threads N] [--per-step]

A "pair" is one song's two views (two crops of 59,049 samples at 22,050 Hz), each augmented independently.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from clmr.augment import Chain

SAMPLE_RATE = 22050
CROP = 59049


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Seconds per call (after one warm-up call), synchronising the device around the timed calls."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def pedalboard_pairs(views: np.ndarray, rng: np.random.Generator) -> Callable[[], object]:
    """Per-example pedalboard version of the chain (same steps, probabilities and ranges)."""
    import pedalboard as pb

    def one(x: np.ndarray) -> np.ndarray:
        x = -x if rng.random() < 0.8 else x
        if rng.random() < 0.01:
            x = x + rng.normal(size=x.shape).astype(np.float32) * rng.uniform(1e-4, 1e-2) * x.std()
        board = pb.Pedalboard()
        if rng.random() < 0.3:
            board.append(pb.Gain(gain_db=rng.uniform(-20, -1)))
        if rng.random() < 0.8:
            if rng.random() < 0.5:
                board.append(pb.HighpassFilter(cutoff_frequency_hz=rng.uniform(200, 1200)))
            else:
                board.append(pb.LowpassFilter(cutoff_frequency_hz=rng.uniform(2200, 4000)))
        if rng.random() < 0.3:
            board.append(pb.Delay(delay_seconds=rng.integers(4, 9) * 0.05, feedback=0.0, mix=0.333))
        if rng.random() < 0.6:
            board.append(pb.PitchShift(semitones=rng.integers(-700, 701) / 100))
        if rng.random() < 0.6:
            board.append(
                pb.Reverb(room_size=rng.random(), damping=rng.random(), wet_level=0.33, dry_level=0.4)
            )
        return board(x, SAMPLE_RATE)

    return lambda: [one(v) for v in views]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batch", type=int, default=48, help="songs per batch (two views each)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per row")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--per-step", action="store_true", help="also time each step on every row of one view batch"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    chain = Chain(SAMPLE_RATE).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    x_i = 0.3 * torch.randn(args.batch, CROP, device=device)
    x_j = 0.3 * torch.randn(args.batch, CROP, device=device)

    def batched() -> object:
        with torch.no_grad():
            return chain(x_i, generator), chain(x_j, generator)

    def looped() -> object:
        with torch.no_grad():
            return [chain(v[None], generator) for v in (*x_i, *x_j)]

    rows: list[tuple[str, float | None, str]] = []
    loop_s = timed(looped, device, max(1, args.repeats // 2))
    rows.append(("per-example loop over Chain (baseline)", loop_s, ""))
    rows.append(("batched Chain", timed(batched, device, args.repeats), ""))
    try:
        import pedalboard  # noqa: F401

        views = np.concatenate([x_i.cpu().numpy(), x_j.cpu().numpy()])
        fn = pedalboard_pairs(views, np.random.default_rng(0))
        rows.append(
            ("pedalboard per example (CPU)", timed(fn, torch.device("cpu"), max(1, args.repeats // 2)), "")
        )
    except ImportError:
        rows.append(
            ("pedalboard per example (CPU)", None, "skipped: pip install pedalboard (the bench extra)")
        )

    print(
        f"device {device}, batch {args.batch} pairs ({2 * args.batch} views of {CROP} samples), "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'method':42s} {'pairs/s':>10s} {'x baseline':>11s}")
    for name, seconds, note in rows:
        if seconds is None:
            print(f"{name:42s} {note}")
            continue
        pairs = args.batch / seconds
        print(f"{name:42s} {pairs:10.1f} {loop_s / seconds:10.2f}x")
    if args.per_step:
        with torch.no_grad():
            per_step_times(chain, x_i, device, args.repeats)


def per_step_times(chain: Chain, x: torch.Tensor, device: torch.device, repeats: int) -> None:
    """Milliseconds of each step's `apply` on all rows of `x` (what an accelerator computes per call)."""
    print(f"\nper step, all {x.shape[0]} rows of one view batch:")
    for name, step in chain.steps.items():
        params = step.draw(x.shape[0], device, torch.Generator(device=device).manual_seed(1))
        seconds = timed(lambda step=step, params=params: step.apply(x, params), device, repeats)
        print(f"  {name:10s} {1e3 * seconds:8.2f} ms")


if __name__ == "__main__":
    main()
