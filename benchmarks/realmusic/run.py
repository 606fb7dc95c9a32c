"""Pre-train on the real-music set for a fixed budget and compare with a random encoder (docs/realmusic.md).

For each seed: `clmr pretrain` (--minutes of training), then `clmr evaluate --baseline random`; the table
reads the reference probe and the logistic-regression check from each report.json (mean ± std over
seeds). Every step is reused when done: the store (preprocess resumes), a run with a `.realmusic-done`
marker (else `--resume`: an interrupted run keeps the time it spent, since `--trainer.max-time` is a
budget for the whole run), an evaluation with a report.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

DONE = ".realmusic-done"
KEYS = {"multiclass": ("accuracy", "f1_macro"), "multilabel": ("roc_auc_macro", "pr_auc_macro")}
PROBES = (
    ("reference probe", lambda part: part),
    ("logistic regression", lambda part: part["logistic_regression"]),
)


def commands(
    data: Path,
    work: Path,
    preset: str,
    minutes: int,
    seeds: list[int],
    sample_rate: int,
    overrides: Sequence[str] = (),
) -> list[list[str]]:
    """The clmr commands still to run (arguments after `clmr`), in order; `overrides` are `KEY=VALUE`
    config settings passed to `clmr pretrain` as `--KEY VALUE`."""
    store, budget = work / "store", f"00:{minutes // 60:02d}:{minutes % 60:02d}:00"  # DD:HH:MM:SS
    todo = [["preprocess", str(data / "audio"), "--labels", str(data / "labels.csv"), "--out", str(store)]]
    todo[0] += ["--sample-rate", str(sample_rate), "--workers", "1", "--quiet"]
    for seed in seeds:
        run, evaluation = work / f"run-seed{seed}", work / f"eval-seed{seed}"
        if not (run / DONE).is_file():
            todo.append(["pretrain", "--data", str(store), "--out", str(run), "--preset", preset, "--resume"])
            todo[-1] += ["--seed", str(seed), "--trainer.max-time", budget, "--max-epochs", "-1"]
            for setting in overrides:
                name, _, value = setting.partition("=")
                todo[-1] += [f"--{name}", value]
        if not (evaluation / "report.json").is_file():
            todo.append(["evaluate", "--checkpoint", str(run), "--data", str(store), "--baseline", "random"])
            todo[-1] += ["--out", str(evaluation), "--seed", str(seed), "--no-progress"]
    return todo


def table(reports: list[dict]) -> list[str]:
    """A markdown table: model vs random init, both probes, mean ± std over the reports (one per seed)."""
    keys = KEYS[reports[0]["task"]]
    lines = [
        f"| probe | encoder | {' | '.join(f'{k} (%)' for k in keys)} |",
        "|---|---|" + "---|" * len(keys),
    ]
    for probe, part_of in PROBES:
        for encoder, pick in (("pre-trained", lambda r: r), ("random init", lambda r: r["baseline"])):
            cells = []
            for k in keys:
                values = [100 * part_of(pick(r))[k] for r in reports]
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.fmean(values):.1f} ± {std:.1f}")
            lines.append(f"| {probe} | {encoder} | {' | '.join(cells)} |")
        cells = []
        for k in keys:  # the gain of each seed (its model against its random init), then mean ± std
            gains = [100 * (part_of(r)[k] - part_of(r["baseline"])[k]) for r in reports]
            std = statistics.stdev(gains) if len(gains) > 1 else 0.0
            cells.append(f"{statistics.fmean(gains):+.1f} ± {std:.1f}")
        lines.append(f"| {probe} | **gain** | {' | '.join(cells)} |")
    return lines + [f"\n{len(reports)} seed(s): mean ± sample std (0 with one seed)."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("realmusic"), help="folder written by build.py")
    parser.add_argument(
        "--work", type=Path, default=Path("realmusic-work"), help="store, runs and evaluations"
    )
    parser.add_argument("--preset", default="cpu", help="clmr pretrain preset (default: cpu)")
    parser.add_argument(
        "--sample-rate", type=int, default=8000, help="store rate; the preset's (default: 8000)"
    )
    parser.add_argument("--minutes", type=int, default=30, help="pre-training budget per seed (default: 30)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config setting for clmr pretrain on top of the preset, e.g. loss.temperature=0.1 (repeatable)",
    )
    args = parser.parse_args(argv)
    bad = [s for s in args.set if "=" not in s or not s.partition("=")[0]]
    if bad:
        print(f"error: --set {bad[0]!r}: expected KEY=VALUE", file=sys.stderr)
        return 2
    if not (1 <= args.minutes < 24 * 60 and args.seeds >= 1 and args.sample_rate > 0):
        print("error: --minutes must be in 1..1439, --seeds >= 1, --sample-rate > 0", file=sys.stderr)
        return 2
    if not (args.data / "labels.csv").is_file():
        print(f"error: {args.data / 'labels.csv'}: missing (run build.py first)", file=sys.stderr)
        return 2
    seeds = list(range(args.seeds))
    for step in commands(args.data, args.work, args.preset, args.minutes, seeds, args.sample_rate, args.set):
        print("clmr " + " ".join(step), flush=True)
        if subprocess.run([sys.executable, "-m", "clmr", *step]).returncode != 0:
            print(f"error: clmr {step[0]} failed", file=sys.stderr)
            return 1
        if step[0] == "pretrain":
            (Path(step[step.index("--out") + 1]) / DONE).touch()
    reports = [json.loads((args.work / f"eval-seed{s}" / "report.json").read_text()) for s in seeds]
    settings = f" with {', '.join(args.set)}" if args.set else ""
    print(f"\n{args.preset}{settings}, {args.minutes} min per seed, seeds {seeds}\n")
    print("\n".join(table(reports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
