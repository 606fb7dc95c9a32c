"""HEAR timestamp embeddings of the reference SampleCNN: the one-pass crop grid (`clmr.hear`) against the
per-hop method it replaced (a crop encoded for every 50 ms timestamp, kept here only as the baseline),
both timed as a ratio of the scene embedding of the same sounds, in the same process.

    python benchmarks/hear.py [--sounds 1] [--seconds 10] [--hop-ms 50] [--device cpu|cuda] [--repeat 3]

Also prints how far the grid's embeddings are from the per-hop ones (random weights, generated music):
equal on the grid points; between them, their distance relative to how far the per-hop embeddings
move from their time average (0: the same; 1: as far off as using the sound's mean embedding).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import clmr.hear as hear
from clmr.data.synthetic import draw_piece, render
from clmr.models import CLMR, SampleCNN


def per_hop(audio: torch.Tensor, model: hear.HearModel) -> torch.Tensor:
    """The previous `get_timestamp_embeddings`: one crop centred on every timestamp, each encoded."""
    x = torch.from_numpy(model.to_model_rate(audio))
    length = model.crop_length
    padded = nn.functional.pad(x, (length // 2, length - 1 - length // 2))
    return model.embed_frames(padded.unfold(1, length, model.hop))


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hop-ms", type=float, default=50.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of scene and grid (best is kept)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = hear.HearModel(CLMR(SampleCNN()).to(args.device), hop_ms=args.hop_ms)  # 22,050 Hz
    sr = model.sample_rate
    audio = torch.from_numpy(
        np.stack(
            [
                render(draw_piece(rng), args.seconds, sr, rng)
                for rng in map(np.random.default_rng, range(args.sounds))
            ]
        ).astype(np.float32)
    )
    hear.get_scene_embeddings(audio[:1, : model.crop_length], model)  # warm-up
    scene_s = min(timed(lambda: hear.get_scene_embeddings(audio, model))[0] for _ in range(args.repeat))
    runs = [timed(lambda: hear.get_timestamp_embeddings(audio, model)) for _ in range(args.repeat)]
    grid_s, (grid, _) = min(runs, key=lambda run: run[0])
    hop_s, slow = timed(lambda: per_hop(audio, model))  # once: it is the slow one

    n = grid.shape[1]
    n_grid = 1 + -(-(n - 1) // model.grid_steps)
    cos = nn.functional.cosine_similarity(grid, slow, dim=-1)
    spread = (slow - slow.mean(dim=1, keepdim=True)).norm(dim=-1).mean().item()  # how much h moves in time
    relative = (grid - slow).norm(dim=-1).mean().item() / spread
    on_grid = (grid[:, :: model.grid_steps] - slow[:, :: model.grid_steps]).abs().max().item()
    print(
        f"reference SampleCNN (random weights), {args.device}, {torch.get_num_threads()} threads; "
        f"{args.sounds} x {args.seconds:g} s at {sr} Hz; {n} timestamps of {args.hop_ms:g} ms per sound"
    )
    print(f"{'method':<38} {'crops/sound':>11} {'seconds':>8} {'x scene':>8}")
    rows = [
        ("scene embedding", max(1, int(args.seconds * sr) // model.crop_length), scene_s),
        ("timestamps, per hop (before)", n, hop_s),
        (f"timestamps, grid every {model.grid_steps} hops (after)", n_grid, grid_s),
    ]
    for name, crops, seconds in rows:
        print(f"{name:<38} {crops:>11} {seconds:>8.2f} {seconds / scene_s:>8.2f}")
    print(f"speed-up of the grid over per hop: {hop_s / grid_s:.1f}x")
    print(
        f"grid vs per hop: max |difference| on grid points {on_grid:.1e}; cosine similarity "
        f"mean {cos.mean().item():.4f}, min {cos.min().item():.4f}; mean distance {relative:.2f} of the "
        "per-hop embeddings' mean distance from their time average"
    )


if __name__ == "__main__":
    main()
