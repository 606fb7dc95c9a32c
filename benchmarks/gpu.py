"""The GPU check, one command: the training-step breakdown (`benchmarks/train.py`, reference SampleCNN,
bf16, batch 48 / 96 / 256, eager and compiled), the forward pass alone (the ceiling for embedding),
`benchmarks/embed.py`, and the targets, written as they come to one text file. Every part has its own
time limit (8 minutes in all); a part that fails or runs out of time is reported and the rest runs.

    PYTHONPATH=. python benchmarks/gpu.py --out gpu-results.txt     # from the repository root
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from clmr.config import load_config
from clmr.models import SampleCNN
from clmr.train.modules import ContrastiveModule, build_optimizer

HERE = Path(__file__).resolve().parent
PAPER_PAIRS = 10_000 * 18_706  # the paper's run: 10,000 epochs of MagnaTagATune's training tracks
BATCHES = ("48", "96", "256")


def write(out, text: str) -> None:
    print(text, flush=True)
    out.write(text + "\n")
    out.flush()


def run_part(out, title: str, command: list[str], limit_s: int) -> str:
    """Run `command`, streaming its output into `out`; its output ('' if it failed or timed out)."""
    write(out, f"\n## {title}\n$ {' '.join(command)}  (limit {limit_s} s)")
    start, lines = time.monotonic(), []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        try:
            for line in proc.stdout:
                if "Warning" not in line and "warnings.warn" not in line:
                    write(out, line.rstrip())
                    lines.append(line)
                if time.monotonic() - start > limit_s:
                    proc.kill()
                    write(out, f"(stopped after {limit_s} s)")
                    return ""
        finally:
            proc.wait()
    write(out, f"({time.monotonic() - start:.0f} s, exit {proc.returncode})")
    return "".join(lines) if proc.returncode == 0 else ""


def forward_alone(device: str, batch: int, repeats: int) -> float:
    """Crops/s of the reference SampleCNN's forward pass alone (bf16 autocast on CUDA, crops already on
    the device)."""
    model = SampleCNN().eval().to(device)
    crops = torch.randn(batch, 59049, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for _ in range(3):
            model(crops)
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            model(crops)
        sync()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("gpu-results.txt"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script only")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: no CUDA device here (--smoke rehearses the script on the CPU)")
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        train = [
            "--presets",
            "tiny",
            "--batch",
            "8",
            "--precision",
            "32-true",
            "--steps",
            "2",
            "--warmup",
            "1",
        ]
        train += ["--tracks", "128", "--compile", "off", "--threads", "1"]
        embed = ["--tracks", "2", "--seconds", "3", "--batch-sizes", "8", "--repeat", "1"]
    else:
        train = ["--presets", "paper", "--batch", *BATCHES, "--precision", "bf16-mixed", "--steps", "10"]
        train += ["--warmup", "3"]
        embed = ["--tracks", "48", "--seconds", "30", "--batch-sizes", "256", "--repeat", "2"]
    python = sys.executable
    with open(args.out, "w") as out:
        now = datetime.datetime.now(datetime.timezone.utc)
        write(out, f"# clmr GPU check, {now:%Y-%m-%d %H:%M} UTC")
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke run)"
        write(out, f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
        module = ContrastiveModule(load_config("paper")).to(device)
        fused = build_optimizer(module, module.config)[0].defaults["fused"]
        write(out, f"Adam fused: {fused}")
        del module
        table = run_part(
            out, "training step breakdown", [python, str(HERE / "train.py"), "--device", device, *train], 360
        )
        write(
            out, "\n## forward pass alone (reference SampleCNN, bf16 autocast on CUDA, crops on the device)"
        )
        alone = forward_alone(device, 8 if args.smoke else 256, 2 if args.smoke else 20)
        write(out, f"{alone:,.0f} crops/s")
        run_part(
            out,
            "embedding (benchmarks/embed.py)",
            [python, str(HERE / "embed.py"), "--device", device, *embed],
            90,
        )
        write(out, "\n## targets (one H100)")
        for cells in (line.split() for line in table.splitlines()):
            if (
                len(cells) == 13 and cells[1] in ("bf16-mixed", "32-true") and cells[2].isdigit()
            ):  # a table row
                batch, mode, pairs, augment = cells[2], cells[3], float(cells[4]), cells[8]
                hours = PAPER_PAIRS / pairs / 3600
                write(
                    out,
                    f"batch {batch} {mode}: {pairs:,.0f} pairs/s, the paper's run in {hours:.1f} h; augment {augment}",
                )
        write(
            out,
            ">= 10,000 pairs/s at batch 256 (the paper's run in <= 5 h); augmentation <= 10 % of the step; "
            f"embed >= 2,000 crops/s and within 1.5x of the forward pass alone ({alone:,.0f} crops/s, so "
            f">= {alone / 1.5:,.0f})",
        )


if __name__ == "__main__":
    main()
