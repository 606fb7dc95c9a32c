"""Bounded scratch memory of the augmentation chain: chunked == one chunk, and the stated bound holds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from clmr.augment import STEPS, AugmentError, Chain
from clmr.augment.memory import cpu_peak_supported, map_large_blocks, peak_extra_bytes
from clmr.config import ConfigError, load_config

SR = 22050
HEAVY = ["noise", "filter", "delay", "pitch", "reverb"]
CPU = torch.device("cpu")
# the phase vocoder's peak picking can flip on a last-bit difference of SIMD vs scalar code (a row's
# offset in its chunk): near-tied bins then lock to another peak, a change far below the signal
TOLERANCE = {"pitch": {"atol": 5e-3, "rtol": 0.0}}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_chunk(step: torch.nn.Module) -> None:
    """No bound and no CPU blocks: every row in one `apply` (the code before chunking)."""
    step.scratch_bytes = None
    step.cpu_block_samples = None


def budget_for(step, rows: int, length: int) -> int:
    """A scratch budget in bytes that gives chunks of `rows` rows."""
    return rows * step.scratch_per_example(length, torch.float32)


@pytest.mark.parametrize("accelerator", [False, True], ids=["cpu-subset", "masked"])
@pytest.mark.parametrize("name", HEAVY)
def test_chunked_step_equals_one_chunk(name, accelerator, monkeypatch):
    """Chunks of 5 rows (a smaller last one) give the output of all rows at once, for the same seed."""
    length = 3000
    make = lambda: Chain(SR, **{name: 0.7}).steps[name]  # noqa: E731
    chunked, whole = make(), make()
    chunked.scratch_bytes, chunked.cpu_block_samples = budget_for(chunked, 5, length), None
    one_chunk(whole)
    if accelerator:
        monkeypatch.setattr(type(chunked), "compute_all", lambda self, x: True)
    x = torch.randn(37, length, generator=gen(1))
    rows = 16 if name == "noise" else 5  # noise draws its noise 16 rows at a time
    assert chunked.chunk_rows(length, x.dtype, x.device) == rows
    torch.testing.assert_close(chunked(x, gen(3)), whole(x, gen(3)), **TOLERANCE.get(name, {}))


@pytest.mark.parametrize("accelerator", [False, True], ids=["cpu-subset", "masked"])
def test_chunked_chain_equals_one_chunk(accelerator, monkeypatch):
    """The whole chain (every step firing half the time) under a 1 MB budget equals it unbounded."""
    chain = Chain(SR, scratch_mb=1.0, **{name: 0.5 for name in STEPS})
    whole = Chain(SR, scratch_mb=None, **{name: 0.5 for name in STEPS})
    for step in whole.steps.values():
        one_chunk(step)
    if accelerator:
        for step in chain.steps.values():
            monkeypatch.setattr(type(step), "compute_all", lambda self, x: True)
    x = torch.randn(40, 4000, generator=gen(2))
    assert chain.steps["pitch"].chunk_rows(4000, x.dtype, x.device) < 10  # several chunks
    torch.testing.assert_close(chain(x, gen(4)), whole(x, gen(4)), **TOLERANCE["pitch"])


def test_chunk_planner_stays_within_the_budget():
    """Rows per chunk follow from the budget, not from the batch; one example at least (noise: 16)."""
    chain = Chain(SR, scratch_mb=64)
    for length in (3000, 59049):
        for step in chain.steps.values():
            need = step.scratch_per_example(length, torch.float32)
            if need == 0:  # polarity and gain scale in place
                continue
            rows = step.chunk_rows(length, torch.float32, torch.device("meta"))
            assert rows * need <= 64 << 20 and (rows + step.row_multiple) * need > 64 << 20
        assert chain.scratch_bound(length) <= 64 << 20
    tiny = Chain(SR, scratch_mb=0.001)
    assert tiny.steps["reverb"].chunk_rows(59049, torch.float32, CPU) == 1
    assert tiny.steps["noise"].chunk_rows(59049, torch.float32, CPU) == 16
    need = {name: step.scratch_per_example(59049, torch.float32) for name, step in tiny.steps.items()}
    assert tiny.scratch_bound(59049) == max(16 * need["noise"], need["pitch"])  # one chunk's minimum
    assert Chain(SR, scratch_mb=None).scratch_bound(59049) is None
    for bad in (0, -5, "big", True):
        with pytest.raises(AugmentError, match="scratch_mb must be a number of MB > 0"):
            Chain(SR, scratch_mb=bad)


def test_config_key_sets_the_budget():
    """`augment.scratch_mb` reaches every step of the training chain; a bad value names the key."""
    config = load_config(overrides={"augment.scratch_mb": "64"})
    chain = Chain(SR, **config.augment.chain_overrides())
    assert {step.scratch_bytes for step in chain.steps.values()} == {64 << 20}
    with pytest.raises(ConfigError, match=r"augment\.scratch_mb.*must be positive"):
        load_config(overrides={"augment.scratch_mb": "0"})


SLACK = 4 << 20  # page rounding, allocator headers, FFT plans and the per-call tables
MEASURED = ["filter", "pitch", "reverb"]
LENGTH, BATCH, CHUNK = 22050, 24, 3


def measure_peaks() -> dict[str, int]:
    """Peak extra bytes past the output: each measured step on BATCH rows in chunks of CHUNK and in one chunk
    (CPU subset and masked paths), and the masked chain at an 8 MiB budget at batch 8 and 32. Run in a
    fresh process (`python tests/test_augment_memory.py`), where large blocks are mapped on their own
    before any tensor exists."""
    map_large_blocks()
    torch.set_num_threads(1)  # one thread: no per-thread buffers in the peak
    out = {}
    for accelerator in (False, True):
        for name in MEASURED:
            steps = {label: Chain(SR, **{name: 1.0}).steps[name] for label in ("chunked", "whole")}
            steps["chunked"].scratch_bytes = budget_for(steps["chunked"], CHUNK, LENGTH)
            steps["chunked"].cpu_block_samples = None
            one_chunk(steps["whole"])
            x = 0.3 * torch.randn(BATCH, LENGTH, generator=gen(5))
            for label, step in steps.items():
                if accelerator:
                    step.compute_all = lambda x: True
                step.run(x[:3].clone(), gen(6), inplace=True)  # warm up the FFT plans
                peak, y = peak_extra_bytes(lambda s=step, x=x: s.run(x.clone(), gen(6), inplace=True), CPU)
                out[f"{name} {accelerator} {label}"] = peak - y.numel() * y.element_size()
    chain = Chain(SR, scratch_mb=8.0, **{name: 1.0 for name in STEPS})
    for step in chain.steps.values():
        step.compute_all = lambda x: True
    chain(torch.randn(2, LENGTH), gen(7))
    for batch in (8, 32):
        x = 0.3 * torch.randn(batch, LENGTH, generator=gen(8))
        peak, y = peak_extra_bytes(lambda x=x: chain(x, gen(9)), CPU)
        out[f"chain {batch}"] = peak - y.numel() * y.element_size()
    return out


@pytest.fixture(scope="module")
def peaks() -> dict[str, int]:
    if not cpu_peak_supported():
        pytest.skip("peak resident memory is measured on Linux with glibc")
    done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("accelerator", [False, True], ids=["cpu-subset", "masked"])
@pytest.mark.parametrize("name", MEASURED)
def test_measured_step_peak_is_within_the_stated_bound(peaks, name, accelerator):
    """A step on 24 examples in chunks of 3 peaks below 3 x its stated bytes per example; in one chunk
    the same call peaks well above that (so the measure can tell the two apart)."""
    bound = CHUNK * Chain(SR).steps[name].scratch_per_example(LENGTH, torch.float32)
    chunked, whole = peaks[f"{name} {accelerator} chunked"], peaks[f"{name} {accelerator} whole"]
    assert chunked <= bound + SLACK, (chunked, bound)
    assert whole > 3 * bound, (whole, bound)


def test_measured_chain_peak_does_not_grow_with_the_batch(peaks):
    """The masked (accelerator-path) chain at 8 MiB: its peak past the output stays within the 8 MiB."""
    assert Chain(SR, scratch_mb=8.0).scratch_bound(LENGTH) <= 8 << 20  # every step fits an example
    for batch in (8, 32):
        assert peaks[f"chain {batch}"] <= (8 << 20) + SLACK, (batch, peaks)


if __name__ == "__main__":
    print(json.dumps(measure_peaks()))
