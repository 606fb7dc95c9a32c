"""Training throughput: pairs/s of real `clmr.train.pretrain` steps for the reference SampleCNN and the
`tiny` preset, with the augmentation chain on and off, and the share of step time spent waiting for
data; `CPU ms` is the process CPU time of a step, steadier than wall time on a shared machine. Ratios
are against the first row (reference encoder, augmentation off, first batch size), run
in the same process.

    python benchmarks/train.py                                  # CPU
    python benchmarks/train.py --device cuda --precision bf16-mixed --batch 48 256 --steps 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from clmr.config import load_config
from clmr.data import preprocess
from clmr.data.synthetic import generate
from clmr.train import pretrain


class StepTimer:
    """An engine hook: per-step data wait (end of one step to start of the next, same epoch) and step
    time after warm-up."""

    def __init__(self, warmup: int, sync: bool) -> None:
        self.warmup, self.sync = warmup, sync
        self.wait = self.busy = self.cpu = 0.0
        self.pairs = 0

    def on_train_epoch_start(self, engine) -> None:
        self._last_end = None  # the gap before an epoch's first batch includes validation: not counted

    def on_train_batch_start(self, engine) -> None:
        self._start, self._cpu = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, engine, batch) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        if engine.state["step"] > self.warmup and self._last_end is not None:
            self.wait += self._start - self._last_end
            self.busy += now - self._start
            self.cpu += time.process_time() - self._cpu
            self.pairs += batch[0].shape[0]
        self._last_end = now


def make_store(root: Path, sample_rate: int, tracks: int, crop: int) -> Path:
    seconds = max(3.0, 1.1 * crop / sample_rate)
    music = generate(root / f"music{sample_rate}", tracks, seconds=seconds, seed=0, sample_rate=sample_rate)
    out = root / f"store{sample_rate}"
    preprocess(
        music.root, out, labels=music.tags_csv, sample_rate=sample_rate, min_length=crop, progress=False
    )
    return out


def measure(
    store: Path, preset: str, augment: bool, batch: int, steps: int, args: argparse.Namespace, run: Path
) -> dict:
    overrides = {
        "batch_size": batch,
        "augment.enabled": augment,
        "trainer.accelerator": "gpu" if args.device == "cuda" else "cpu",
        "trainer.devices": 1,
        "trainer.precision": args.precision,
        "trainer.max_steps": args.warmup + steps,
        "trainer.num_workers": args.workers,
        "trainer.log_every_n_steps": 1000,
    }
    timer = StepTimer(args.warmup, sync=args.device == "cuda")
    pretrain(store, run, load_config(preset, overrides=overrides), progress=False, hooks=[timer])
    total = timer.wait + timer.busy
    return {
        "pairs_per_s": timer.pairs / total,
        "wait_share": timer.wait / total,
        "step_ms": 1e3 * total / steps,
        "cpu_ms": 1e3 * timer.cpu / steps,  # process CPU time: steadier than wall time on a shared machine
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    parser.add_argument("--batch", type=int, nargs="+", default=[16], help="batch sizes to measure")
    parser.add_argument("--steps", type=int, help="timed steps per row (default: 3 for paper, 30 otherwise)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--presets", nargs="+", default=["paper", "tiny"])
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # enough tracks for the timed steps to fit in one epoch (train split = 80%), within reason; past
        # that, epochs roll over and the first step of each epoch is left out of the timing
        steps = {p: args.steps or (3 if p == "paper" else 30) for p in args.presets}
        stores = {}
        for preset in args.presets:
            c = load_config(preset)
            tracks = min(2048, int(1.25 * max(args.batch) * (args.warmup + steps[preset])) + 16)
            if c.sample_rate not in stores:
                stores[c.sample_rate] = make_store(root, c.sample_rate, tracks, c.crop_length)
        for preset in args.presets:
            store = stores[load_config(preset).sample_rate]
            for batch in args.batch:
                for augment in (False, True):
                    run = root / f"run-{preset}-{batch}-{int(augment)}"
                    rows.append(
                        (
                            preset,
                            augment,
                            batch,
                            measure(store, preset, augment, batch, steps[preset], args, run),
                        )
                    )

    base = rows[0][3]["pairs_per_s"]
    print(
        f"\ntraining throughput on {args.device} ({args.precision}, {args.workers} workers, timed steps {steps})"
    )
    print(
        f"{'preset':<8} {'augment':<8} {'batch':>5} {'pairs/s':>9} {'ratio':>7} {'step ms':>9} {'CPU ms':>8} "
        f"{'data wait':>10}"
    )
    for preset, augment, batch, m in rows:
        print(
            f"{preset:<8} {'on' if augment else 'off':<8} {batch:>5} {m['pairs_per_s']:>9.1f} "
            f"{m['pairs_per_s'] / base:>6.2f}x {m['step_ms']:>9.0f} {m['cpu_ms']:>8.0f} {100 * m['wait_share']:>9.1f}%"
        )


if __name__ == "__main__":
    main()
