"""Peak extra memory and time of the augmentation chain per batch size: chunked within the scratch budget
(`augment.scratch_mb`) against every row in one chunk (the unbounded code path).

    python benchmarks/augment_memory.py [--device cpu|cuda] [--batches 48 256 1024] [--repeats 3]
        [--scratch-mb 1024] [--masked] [--skip-whole-above N] [--threads N]

A batch is one view batch of 59,049-sample crops at 22,050 Hz through the reference chain (reference
probabilities). "Peak extra" is the memory the call allocates at its peak less its output (CUDA:
torch.cuda.max_memory_allocated; CPU: the resident high-water mark, see clmr.augment.memory, measured in a
second run of this script whose allocator setting would slow the timed calls); "ratio" is the chunked
chain's time over the one-chunk chain's, both timed in this process. --masked runs the accelerator code
path on a CPU (every row computed, the result masked, chunks sized by the budget alone): its one-chunk
peak is what a GPU allocated before chunking.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from clmr.augment import Chain
from clmr.augment.memory import map_large_blocks, peak_extra_bytes

SAMPLE_RATE = 22050
CROP = 59049
MB = 1 << 20


def build(scratch_mb: float | None, device: torch.device, masked: bool) -> Chain:
    """The reference chain; scratch_mb None: no bound and no CPU blocks (every firing row in one apply);
    masked: every row computed and masked, in chunks from the budget alone (as on an accelerator)."""
    chain = Chain(SAMPLE_RATE, scratch_mb=scratch_mb).to(device)
    for step in chain.steps.values():
        if scratch_mb is None or masked:
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


def rows(args: argparse.Namespace) -> list[tuple[int, str]]:
    """The (batch, "chunked" | "whole") rows to run."""
    return [
        (batch, label)
        for batch in args.batches
        for label in ("chunked", "whole")
        if label == "chunked" or args.skip_whole_above is None or batch <= args.skip_whole_above
    ]


def peaks(args: argparse.Namespace, chains: dict[str, Chain], device: torch.device) -> dict[str, float]:
    """Peak extra MB per row, keyed "batch label"."""
    out = {}
    for batch, label in rows(args):
        out[f"{batch} {label}"] = peak_mb(chains[label], 0.3 * torch.randn(batch, CROP, device=device))
    return out


def cpu_peaks_in_a_fresh_process() -> dict[str, float]:
    """The CPU peaks measured by this script in a new process that maps large blocks before any tensor
    exists (see clmr.augment.memory), so that the timing here runs with the usual allocator."""
    done = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], "--peaks-only"], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


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
    parser.add_argument("--peaks-only", action="store_true", help="(internal) print the peaks as JSON")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.peaks_only and device.type == "cpu":
        map_large_blocks()
    if args.threads:
        torch.set_num_threads(args.threads)
    masked = args.masked or device.type != "cpu"
    chains = {"chunked": build(args.scratch_mb, device, masked), "whole": build(None, device, masked)}
    warm = 0.3 * torch.randn(4, CROP, device=device)
    for chain in chains.values():
        chain(warm)  # FFT plans, window and grid caches
    if args.peaks_only:
        print(json.dumps(peaks(args, chains, device)))
        return
    chunked = chains["chunked"]
    path = "masked (every row)" if masked else "firing rows only"
    print(f"device {device}, {path}, crops of {CROP} samples, torch threads {torch.get_num_threads()}")
    print(f"stated bound of the chunked chain at scratch_mb={args.scratch_mb:g}: ", end="")
    print(f"{chunked.scratch_bound(CROP) / MB:.0f} MB per call")
    for name, step in chunked.steps.items():
        if need := step.scratch_per_example(CROP, torch.float32):
            rows_per_chunk = step.chunk_rows(CROP, warm.dtype, device)
            print(f"  {name:8s} {need / MB:6.2f} MB per example, chunks of {rows_per_chunk}")
    times = {
        (batch, label): seconds_per_call(
            chains[label], 0.3 * torch.randn(batch, CROP, device=device), args.repeats
        )
        for batch, label in rows(args)
    }
    peak = cpu_peaks_in_a_fresh_process() if device.type == "cpu" else peaks(args, chains, device)
    print(f"{'batch':>6s} {'output MB':>10s} {'chunked MB':>11s} {'one chunk MB':>13s} ", end="")
    print(f"{'chunked s':>10s} {'one chunk s':>12s} {'ratio':>6s}")
    for batch in args.batches:
        row = f"{batch:6d} {batch * CROP * 4 / MB:10.0f} {peak[f'{batch} chunked']:11.0f}"
        if (batch, "whole") in times:
            ratio = times[batch, "chunked"] / times[batch, "whole"]
            row += f" {peak[f'{batch} whole']:13.0f} {times[batch, 'chunked']:10.2f}"
            row += f" {times[batch, 'whole']:12.2f} {ratio:5.2f}x"
        else:
            row += f" {'skipped':>13s} {times[batch, 'chunked']:10.2f}"
        print(row)


if __name__ == "__main__":
    main()
