"""Peak extra memory and time of the augmentation chain per batch size: chunked within the scratch budget
(`augment.scratch_mb`) against every row in one chunk (the unbounded code path), in the same process.

    python benchmarks/augment_memory.py [--device cpu|cuda] [--batches 48 256 1024] [--repeats 3]
        [--scratch-mb 1024] [--masked] [--skip-whole-above N] [--threads N]

A batch is one view batch of 59,049-sample crops at 22,050 Hz through the reference chain (reference
probabilities). "Peak extra" is the memory the call allocates at its peak less its output (CUDA:
torch.cuda.max_memory_allocated; CPU: the resident high-water mark, see clmr.augment.memory); "ratio" is
the chunked chain's time over the one-chunk chain's (timed before any peak is measured). --masked runs
the accelerator code path on a CPU (every row computed, the result masked), whose one-chunk peak is what a
GPU allocated before chunking.
"""

from __future__ import annotations

import argparse
import time

import torch

from clmr.augment import Chain
from clmr.augment.memory import peak_extra_bytes

SAMPLE_RATE = 22050
CROP = 59049
MB = 1 << 20


def build(scratch_mb: float | None, device: torch.device, masked: bool) -> Chain:
    """The reference chain; scratch_mb None: no bound and no CPU blocks (every firing row in one apply)."""
    chain = Chain(SAMPLE_RATE, scratch_mb=scratch_mb).to(device)
    for step in chain.steps.values():
        if scratch_mb is None:
            step.cpu_block_samples = None
        if masked:
            step.compute_all = lambda x: True
    return chain


def seconds_per_call(chain: Chain, x: torch.Tensor, repeats: int) -> float:
    """The fastest of `repeats` calls in seconds: wall time synchronised on CUDA, this process's CPU time
    on a CPU (the least disturbed by other load on a shared machine; use --threads 1 there)."""
    clock = time.perf_counter if x.device.type == "cuda" else time.process_time
    best = float("inf")
    for i in range(repeats):
        start = clock()
        with torch.no_grad():
            chain(x, torch.Generator(device=x.device).manual_seed(i))
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        best = min(best, clock() - start)
    return best


def peak_mb(chain: Chain, x: torch.Tensor) -> float:
    """Peak extra MB of one call past its output."""
    with torch.no_grad():
        extra, y = peak_extra_bytes(
            lambda: chain(x, torch.Generator(device=x.device).manual_seed(0)), x.device
        )
    return (extra - y.numel() * y.element_size()) / MB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batches", type=int, nargs="+", default=[48, 256, 1024])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row, the best kept")
    parser.add_argument("--scratch-mb", type=float, default=1024.0, help="the chunked chain's budget")
    parser.add_argument("--masked", action="store_true", help="the accelerator code path on a CPU")
    parser.add_argument(
        "--skip-whole-above", type=int, default=None, help="no one-chunk row for batches above N"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    masked = args.masked or device.type != "cpu"
    chunked, whole = build(args.scratch_mb, device, masked), build(None, device, masked)
    warm = 0.3 * torch.randn(4, CROP, device=device)
    chunked(warm), whole(warm)  # FFT plans, window and grid caches
    bound = chunked.scratch_bound(CROP) / MB
    path = "masked (every row)" if masked else "firing rows only"
    print(f"device {device}, {path}, crops of {CROP} samples, torch threads {torch.get_num_threads()}")
    print(f"stated bound of the chunked chain at scratch_mb={args.scratch_mb:g}: {bound:.0f} MB per call")
    for name, step in chunked.steps.items():
        need = step.scratch_per_example(CROP, torch.float32)
        if need:
            print(
                f"  {name:8s} {need / MB:6.2f} MB per example, chunks of {step.chunk_rows(CROP, warm.dtype, device)}"
            )
    # every timing first: the CPU peak measure makes glibc map (and page-fault) each large block afresh
    batches = {batch: 0.3 * torch.randn(batch, CROP, device=device) for batch in args.batches}
    whole_too = {b: args.skip_whole_above is None or b <= args.skip_whole_above for b in args.batches}
    times = {
        (b, label): seconds_per_call(chain, x, args.repeats)
        for b, x in batches.items()
        for label, chain in (("chunked", chunked), ("whole", whole))
        if label == "chunked" or whole_too[b]
    }
    print(
        f"{'batch':>6s} {'output MB':>10s} {'chunked MB':>11s} {'one chunk MB':>13s} {'chunked s':>10s}",
        end="",
    )
    print(f" {'one chunk s':>12s} {'ratio':>6s}")
    for b, x in batches.items():
        row = f"{b:6d} {x.numel() * 4 / MB:10.0f} {peak_mb(chunked, x):11.0f}"
        if whole_too[b]:
            ratio = times[b, "chunked"] / times[b, "whole"]
            row += f" {peak_mb(whole, x):13.0f} {times[b, 'chunked']:10.2f} {times[b, 'whole']:12.2f} {ratio:5.2f}x"
        else:
            row += f" {'skipped':>13s} {times[b, 'chunked']:10.2f}"
        print(row)


if __name__ == "__main__":
    main()
