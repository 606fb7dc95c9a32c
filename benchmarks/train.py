"""Where a training step's time goes: real `clmr.train.pretrain` steps of a preset, per batch size and
precision, eager against `--trainer.compile` in the same process.

Each row is one run: `--warmup` untimed steps (compiling, with `--trainer.compile`), then `--steps` steps
timed phase by phase (the device is synchronised at each phase boundary, so the phases do not overlap:
waiting for data, which includes the copy to the device; augmenting the two views; forward + backward,
which includes the loss and the online probe; the optimiser), then `--steps` steps run as training
runs them, with no synchronisation, for pairs/s. MFU is the model FLOPs of those pairs/s (2 views x
(forward + backward = 3 forwards) of encoder + projector, counted by torch's FlopCounterMode) over the
device's dense bf16 peak (PEAK_BF16, for bf16 precisions on the devices listed there; otherwise not
shown). Epochs roll over inside the timed steps on the generated store; their restarts are counted.

    python benchmarks/train.py                                     # CPU: tiny preset, eager and compiled
    python benchmarks/train.py --device cuda --precision bf16-mixed --presets paper --batch 48 96 256
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.flop_counter import FlopCounterMode

from clmr.config import load_config
from clmr.data import preprocess
from clmr.data.synthetic import generate
from clmr.models import Projector, SampleCNN
from clmr.train import pretrain

# dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, FLOP/s; matched in this order
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H200", 989e12),
    ("A100", 312e12),
)
PHASES = ("data", "augment", "forward_backward", "optimizer")


def device_peak(device: str, precision: str) -> tuple[str, float | None]:
    """The device's name and its dense bf16 peak (None: unknown, not CUDA, or not a bf16 precision)."""
    if device != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name()
    if not precision.startswith("bf16"):
        return name, None
    return name, next((peak for key, peak in PEAK_BF16 if key in name), None)


def train_flops_per_pair(preset: str) -> float:
    """Model FLOPs of one training pair: 2 views x 3 (forward + backward) x encoder + projector forward."""
    c = load_config(preset)
    encoder = SampleCNN(width=c.model.width, n_blocks=c.model.n_blocks).eval().to("meta")
    projector = Projector(
        encoder.out_dim, c.model.projection_hidden or encoder.out_dim, c.model.projection_dim
    )
    crop = torch.empty(1, c.crop_length, device="meta")
    with FlopCounterMode(display=False) as counter:
        projector.eval().to("meta")(encoder(crop))
    return 2 * 3 * counter.get_total_flops()


class PhaseTimer:
    """An engine hook: `warmup` steps, then `steps` steps timed phase by phase (synchronised), then
    `steps` free steps timed as a whole."""

    def __init__(self, warmup: int, steps: int, device: str) -> None:
        self.warmup, self.steps = warmup, steps
        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        self.phases = dict.fromkeys(PHASES, 0.0)
        self.phase_pairs = self.free_pairs = 0
        self.wrapped, self._last_end, self._current = False, None, {}
        self.started = time.perf_counter()
        self.warmup_s = self.free_s = math.nan

    def _phased(self, step: int) -> bool:
        return self.warmup <= step < self.warmup + self.steps

    def _timed(self, engine, name: str, fn):
        def timed(*args, **kwargs):
            if not self._phased(engine.state["step"]):
                return fn(*args, **kwargs)
            self.sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self._current[name] = self._current.get(name, 0.0) + time.perf_counter() - start
            return out

        return timed

    def on_train_epoch_start(self, engine) -> None:
        if not self.wrapped:  # instance attributes shadow the methods the step calls
            engine.module._views = self._timed(engine, "augment", engine.module._views)
            engine.optimizer.step = self._timed(engine, "optimizer", engine.optimizer.step)
            self.wrapped = True
        self._last_end = None  # the first step of an epoch follows its start: its data wait is unknown

    def on_train_batch_start(self, engine) -> None:
        step = engine.state["step"]
        if step == self.warmup:
            self.sync()
            self.warmup_s = time.perf_counter() - self.started
        if self._phased(step):
            self.sync()
            self._start, self._current = time.perf_counter(), {}
        elif step == self.warmup + self.steps:
            self.sync()
            self.free_start = time.perf_counter()

    def on_train_batch_end(self, engine, batch) -> None:
        step = engine.state["step"] - 1  # the step just done
        if step == self.warmup - 1:  # the first phase-timed step's data wait counts from here
            self.sync()
            self._last_end = time.perf_counter()
        elif self._phased(step):
            self.sync()
            now = time.perf_counter()
            if self._last_end is not None:  # a step counts when its data wait is known
                augment, optimizer = (self._current.get(k, 0.0) for k in ("augment", "optimizer"))
                wait, busy = self._start - self._last_end, now - self._start
                for name, seconds in zip(
                    PHASES, (wait, augment, busy - augment - optimizer, optimizer), strict=True
                ):
                    self.phases[name] += seconds
                self.phase_pairs += batch[0].shape[0]
            self._last_end = now
        elif step >= self.warmup + self.steps:
            self.free_pairs += batch[0].shape[0]
            if step == self.warmup + 2 * self.steps - 1:
                self.sync()
                self.free_s = time.perf_counter() - self.free_start


def make_store(root: Path, sample_rate: int, tracks: int, crop: int) -> Path:
    """A labelled store of `tracks` tracks just longer than a crop: 32 generated pieces, each written again
    shifted in time and scaled (generating every track would take longer than the benchmark)."""
    seconds = 1.05 * crop / sample_rate
    music = generate(root / f"music{sample_rate}", 32, seconds=seconds, seed=0, sample_rate=sample_rate)
    pieces = [sf.read(path, dtype="float32")[0] for path in music.files]
    tags = [";".join(piece.tags) for piece in music.pieces]
    folder, rng, rows = root / f"many{sample_rate}", np.random.default_rng(0), ["path,tags,split"]
    folder.mkdir()
    for i in range(tracks):
        audio = np.roll(pieces[i % 32], int(rng.integers(len(pieces[0])))) * rng.uniform(0.5, 1.0)
        sf.write(folder / f"t{i:05d}.wav", audio, sample_rate, subtype="PCM_16")
        split = "train" if i % 10 < 8 else "valid" if i % 10 == 8 else "test"
        rows.append(f"t{i:05d}.wav,{tags[i % 32]},{split}")
    (folder / "tags.csv").write_text("\n".join(rows) + "\n")
    out = root / f"store{sample_rate}"
    preprocess(
        folder, out, labels=folder / "tags.csv", sample_rate=sample_rate, min_length=crop, progress=False
    )
    return out


def measure(store: Path, preset: str, batch: int, precision: str, compiled: bool, args, run: Path) -> dict:
    """One run of `warmup + 2 x steps` steps; the phase shares, pairs/s and warm-up seconds."""
    overrides = {
        "batch_size": batch,
        "trainer.accelerator": "gpu" if args.device == "cuda" else "cpu",
        "trainer.devices": 1,
        "trainer.precision": precision,
        "trainer.compile": compiled,
        "trainer.max_steps": args.warmup + 2 * args.steps,
        "trainer.max_epochs": -1,
        "trainer.val_every": "1000000steps",  # validation only after the last step, outside the timing
        "trainer.save_every": "1000000steps",
        "trainer.checkpoint_every": None,
    }
    if args.workers is not None:
        overrides["trainer.num_workers"] = args.workers
    timer = PhaseTimer(args.warmup, args.steps, args.device)
    pretrain(store, run, load_config(preset, overrides=overrides), progress=False, hooks=[timer])
    total = sum(timer.phases.values())
    return {
        "shares": {name: seconds / total for name, seconds in timer.phases.items()} if total else {},
        "pairs_per_s": timer.free_pairs / timer.free_s,
        "phase_pairs_per_s": timer.phase_pairs / total if total else math.nan,
        "warmup_s": timer.warmup_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--precision", nargs="+", default=None, help="Lightning precisions (cpu: 32-true; cuda: bf16-mixed)"
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[16], help="batch sizes to measure")
    parser.add_argument("--presets", nargs="+", default=["tiny"])
    parser.add_argument(
        "--compile", choices=["both", "off", "on"], default="both", help="eager, compiled, or both"
    )
    parser.add_argument(
        "--steps", type=int, default=10, help="steps timed by phase, and as many timed freely"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compiling happens here)")
    parser.add_argument(
        "--workers", type=int, help="DataLoader workers (default: the engine's, from the cores)"
    )
    parser.add_argument("--tracks", type=int, default=2048, help="tracks in the generated store")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = args.precision or (["bf16-mixed"] if args.device == "cuda" else ["32-true"])
    modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.compile]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root, stores, flops_per_pair = Path(tmp), {}, {}
        for preset in args.presets:
            c = load_config(preset)
            if c.sample_rate not in stores:
                stores[c.sample_rate] = make_store(root, c.sample_rate, args.tracks, c.crop_length)
            flops = flops_per_pair[preset] = train_flops_per_pair(preset)
            for precision in precisions:
                name, peak = device_peak(args.device, precision)
                for batch in args.batch:
                    for compiled in modes:
                        run = root / f"run-{preset}-{precision}-{batch}-{int(compiled)}"
                        label = f"{preset} {precision} batch {batch} {'compiled' if compiled else 'eager'}"
                        try:
                            m = measure(stores[c.sample_rate], preset, batch, precision, compiled, args, run)
                        except Exception as err:  # a row that cannot run (e.g. no compiler) is reported
                            first = (str(err).strip().splitlines() or [""])[0][:300]
                            print(f"{label}: failed: {type(err).__name__}: {first}", flush=True)
                            continue
                        m["mfu"] = m["pairs_per_s"] * flops / peak if peak else None
                        rows.append((preset, precision, batch, compiled, m))
                        print(f"{label}: {m['pairs_per_s']:.1f} pairs/s", flush=True)

    print(
        f"\ntraining step breakdown on {name} (torch threads: {torch.get_num_threads()}; {args.warmup} warm-up, "
        f"{args.steps} phase-timed and {args.steps} free steps per row; store of {args.tracks} tracks)"
    )
    print(
        f"{'preset':<7} {'precision':<11} {'batch':>5} {'mode':<9} {'pairs/s':>9} {'vs eager':>8} "
        f"{'step ms':>8} {'data':>6} {'augment':>8} {'fwd+bwd':>8} {'optim':>6} {'MFU':>6} {'warm-up s':>9}"
    )
    eager = {(p, q, b): m["pairs_per_s"] for p, q, b, compiled, m in rows if not compiled}
    for preset, precision, batch, compiled, m in rows:
        shares = [
            f"{100 * m['shares'][k]:>{w - 1}.1f}%" if m["shares"] else f"{'-':>{w}}"
            for k, w in zip(PHASES, (6, 8, 8, 6), strict=True)
        ]
        base = eager.get((preset, precision, batch))
        ratio = f"{m['pairs_per_s'] / base:>7.2f}x" if base else f"{'-':>8}"
        mfu = f"{100 * m['mfu']:>5.1f}%" if m["mfu"] is not None else f"{'-':>6}"
        print(
            f"{preset:<7} {precision:<11} {batch:>5} {'compiled' if compiled else 'eager':<9} {m['pairs_per_s']:>9.1f} "
            f"{ratio} {1e3 * batch / m['pairs_per_s']:>8.1f} {' '.join(shares)} {mfu} {m['warmup_s']:>9.1f}"
        )
    for preset, flops in flops_per_pair.items() if any(m["mfu"] is not None for *_, m in rows) else ():
        print(f"{preset}: {flops / 1e9:.2f} GFLOP per training pair (MFU: over {name}'s dense bf16 peak)")


if __name__ == "__main__":
    main()
