"""Which views teach the most: the augmentation chain's ablation on the real-music set, scored on both tasks
(docs/realmusic.md, "The ablation").

Each variant is a bundle of `clmr pretrain` settings on top of the `cpu` preset (the full chain, each step
left out, each step alone, the chain with filter ranges relative to the sample rate, the chain off, tiny's
five steps). Runs go `--parallel` at a time with one thread each, each for the budgets in `--minutes`
(one run per variant and seed, resumed from budget to budget: `--trainer.max-time` counts the time already
spent, so 5,10,20 gives the checkpoints at 5, 10 and 20 minutes of one run). After each budget the run is
scored on the labels (score.py's repeated CV) and on degraded queries (queries.py) and the scores are
written next to it; a rerun skips what is written, resumes what is not, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import queries  # noqa: E402
import score  # noqa: E402

STEPS = ("polarity", "noise", "gain", "filter", "delay", "pitch", "reverb")
REFERENCE_RATE = 22050  # the rate the reference's filter cut-offs are for
# store rate -> settings: 8 kHz is the cpu preset's SampleCNN; higher rates get 9 blocks (crops of 3^10
# samples: 2.68 s at 22.05 kHz, 3.69 s at 16 kHz)
RATES = {
    8000: [],
    16000: ["sample_rate=16000", "model.n_blocks=9"],
    22050: ["sample_rate=22050", "model.n_blocks=9"],
}


def variants() -> dict[str, tuple[str, list[str]]]:
    """name -> (what it is, KEY=VALUE settings on top of the cpu preset)."""
    on = ["augment.enabled=true"]
    out = {
        "off": ("no augmentation (the cpu preset)", ["augment.enabled=false"]),
        "chain": ("the reference's seven steps and probabilities", on),
        "chain-rel": (
            f"the chain, filter ranges x sample_rate / {REFERENCE_RATE}",
            [*on, f"augment.filter={{reference_rate: {REFERENCE_RATE}}}"],
        ),
        "tiny-chain": (
            "the chain without pitch and reverb (the tiny preset's)",
            [*on, "augment.pitch=0", "augment.reverb=0"],
        ),
    }
    for step in STEPS:
        out[f"no-{step}"] = (f"the chain without {step}", [*on, f"augment.{step}=0"])
    for step in STEPS:
        out[f"only-{step}"] = (f"{step} alone", [*on, *(f"augment.{s}=0" for s in STEPS if s != step)])
    return out


def budget(minutes: int) -> str:
    """`--trainer.max-time` for a budget in minutes (DD:HH:MM:SS)."""
    return f"00:{minutes // 60:02d}:{minutes % 60:02d}:00"


def pretrain_command(store: Path, run: Path, seed: int, minutes: int, settings: list[str]) -> list[str]:
    """`clmr pretrain` (arguments after `clmr`) of one run up to `minutes` of training in all."""
    command = ["pretrain", "--data", str(store), "--out", str(run), "--preset", "cpu", "--resume"]
    command += ["--seed", str(seed), "--trainer.max-time", budget(minutes), "--max-epochs", "-1"]
    for setting in settings:
        key, _, value = setting.partition("=")
        command += [f"--{key}", value]
    return command


def score_path(run: Path, minutes: int) -> Path:
    """Where a run's scores after `minutes` of training are written."""
    return run.parent / f"{run.name}.{minutes}min.json"


def job(args: argparse.Namespace, variant: str, seed: int) -> int:
    """Train one run budget by budget, scoring it after each (skipping what is already scored)."""
    from clmr import load_model
    from clmr.data import Store
    from clmr.files import atomic_open

    store = Store(args.store)
    tracks, y = score.labels_of(store)
    splits = score.folds(y, args.repeats, 0)
    cache = queries.query_audio(
        store, tracks, args.seconds, 0, args.store.parent / "queries", queries.available()
    )
    run = args.out / f"{variant}-seed{seed}"
    settings = [*RATES[args.rate], *variants()[variant][1]]
    for minutes in args.minutes:
        if score_path(run, minutes).is_file():
            continue
        started = time.monotonic()
        command = pretrain_command(args.store, run, seed, minutes, settings)
        print("clmr " + " ".join(command), flush=True)
        if subprocess.run([sys.executable, "-m", "clmr", *command]).returncode != 0:
            print(f"error: clmr pretrain of {run} failed", file=sys.stderr)
            return 1
        seconds = time.monotonic() - started
        model = load_model(run)
        genre = score.fold_accuracies(score.song_features(model, store, tracks, args.crops), y, splits)
        result = {
            "variant": variant,
            "seed": seed,
            "rate": args.rate,
            "minutes": minutes,
            "settings": settings,
            "pretrain_wall_s": round(seconds, 1),
            "genre_folds": genre.tolist(),
            "queries": queries.score_model(model, store, cache),
        }
        with atomic_open(score_path(run, minutes), "w") as f:
            json.dump(result, f, indent=1)
    return 0


def references(args: argparse.Namespace, like_run: Path) -> dict:
    """Random encoders and log-mel statistics on both tasks, once per output folder (cached)."""
    from clmr import load_model
    from clmr.data import Store
    from clmr.evaluate.run import random_init_like
    from clmr.files import atomic_open

    path = args.out / "references.json"
    if path.is_file():
        return json.loads(path.read_text())
    store = Store(args.store)
    tracks, y = score.labels_of(store)
    like = load_model(like_run)
    genre = score.references(store, like, args.random_seeds, args.crops, score.folds(y, args.repeats, 0))
    cache = queries.query_audio(
        store, tracks, args.seconds, 0, args.store.parent / "queries", queries.available()
    )
    randoms = [queries.score_model(random_init_like(like, s), store, cache) for s in range(args.random_seeds)]
    out = {"genre": {k: v.tolist() for k, v in genre.items()}, "queries_random": randoms}
    with atomic_open(path, "w") as f:
        json.dump(out, f, indent=1)
    return out


def query_mean(result: dict, k: int) -> float:
    """The mean over the degradations (not the clean control) of top-1 (k = 0) or MRR (k = 1)."""
    return float(np.mean([v[k] for d, v in result.items() if d != "clean"]))


def by_budget(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """(variant, minutes) -> its scored runs (one per seed), in the variants' order, then by minutes."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["minutes"]), []).append(row)
    order = list(variants())
    return dict(sorted(groups.items(), key=lambda g: (order.index(g[0][0]), g[0][1])))


def random_scores(refs: dict) -> tuple[np.ndarray, float, float]:
    """The random encoders' mean: fold accuracies (paired with a run's folds), query top-1 and MRR."""
    folds = np.mean([v for k, v in refs["genre"].items() if k.startswith("random")], axis=0)
    top1 = float(np.mean([query_mean(r, 0) for r in refs["queries_random"]]))
    mrr = float(np.mean([query_mean(r, 1) for r in refs["queries_random"]]))
    return folds, top1, mrr


def table(rows: list[dict], refs: dict) -> list[str]:
    """Markdown: per variant and budget, both tasks (mean over seeds) against the random encoders."""
    random_folds, random_top1, random_mrr = random_scores(refs)
    logmel = float(np.mean(refs["genre"]["log-mel statistics"]))
    lines = [
        "| variant | minutes | seeds | labels: accuracy (%) | − random (points) | queries: top-1 (%) | "
        "queries: MRR (%) | − random MRR (points) | mean of the two tasks (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def spread(values: list[float], sign: str = "") -> str:
        mean = f"{np.mean(values):{sign}.1f}"
        return f"{mean} ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else mean

    for (variant, minutes), group in by_budget(rows).items():
        acc = [float(np.mean(r["genre_folds"])) for r in group]
        gain = [float(np.mean(np.asarray(r["genre_folds"]) - random_folds)) for r in group]
        top1 = [query_mean(r["queries"], 0) for r in group]
        mrr = [query_mean(r["queries"], 1) for r in group]
        both = [(a + m) / 2 for a, m in zip(acc, mrr, strict=True)]
        cells = [
            spread(acc),
            spread(gain, "+"),
            spread(top1),
            spread(mrr),
            spread([m - random_mrr for m in mrr], "+"),
            spread(both),
        ]
        lines.append(f"| {variant} | {minutes} | {len(group)} | " + " | ".join(cells) + " |")
    random_acc = float(random_folds.mean())
    lines.append(
        f"| random init ({len(refs['queries_random'])} seeds) | 0 | | {random_acc:.1f} | | {random_top1:.1f} | "
        f"{random_mrr:.1f} | | {(random_acc + random_mrr) / 2:.1f} |"
    )
    lines.append(f"| log-mel statistics | | | {logmel:.1f} | {logmel - random_acc:+.1f} | | | | |")
    return lines


def curve_points(rows: list[dict]) -> dict[str, tuple[list[int], list[float], list[float]]]:
    """variant -> (minutes, label accuracy, query top-1), means over seeds, for each variant scored at
    two or more budgets."""
    curves: dict[str, tuple[list[int], list[float], list[float]]] = {}
    for (variant, minutes), group in by_budget(rows).items():
        budgets, acc, top1 = curves.setdefault(variant, ([], [], []))
        budgets.append(minutes)
        acc.append(float(np.mean([np.mean(r["genre_folds"]) for r in group])))
        top1.append(float(np.mean([query_mean(r["queries"], 0) for r in group])))
    return {v: c for v, c in curves.items() if len(c[0]) > 1}


def plot_curves(rows: list[dict], refs: dict, path: Path) -> bool:
    """Both tasks against pre-training minutes (`curve_points`), the random encoders as a dashed line;
    False (nothing written) when no variant has a curve."""
    curves = curve_points(rows)
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clmr.files import atomic_open

    random_folds, random_top1, _ = random_scores(refs)
    figure, (labels, found) = plt.subplots(1, 2, figsize=(10, 4))
    for variant, (minutes, acc, top1) in curves.items():
        labels.plot(minutes, acc, "o-", label=variant)
        found.plot(minutes, top1, "o-", label=variant)
    for axes, random, title in (
        (labels, float(random_folds.mean()), "labels: accuracy (%)"),
        (found, random_top1, "degraded queries: top-1 (%), mean of 5"),
    ):
        axes.axhline(random, color="grey", linestyle="--", label="random init")
        axes.set(xlabel="pre-training (minutes)", title=title)
        axes.legend()
    figure.tight_layout()
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=100)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="the real-music store at --rate")
    parser.add_argument("--out", type=Path, required=True, help="runs, scores, references, table.md")
    parser.add_argument("--rate", type=int, default=8000, choices=sorted(RATES), help="the store's rate")
    parser.add_argument("--variants", default="all", help="'all' or comma-separated names (see --list)")
    parser.add_argument("--seeds", default="0", help="comma-separated pre-training seeds (default: 0)")
    parser.add_argument(
        "--minutes", default="6", help="comma-separated budgets, one run resumed (default: 6)"
    )
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--crops", type=int, default=48, help="crops per track for the labels' features")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the stratified 5-fold CV")
    parser.add_argument("--random-seeds", type=int, default=3, help="random encoders (references)")
    parser.add_argument("--seconds", type=float, default=15.0, help="query excerpt length")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # VARIANT:SEED, run by the parent in a subprocess
    args = parser.parse_args(argv)
    known = variants()
    if args.list:
        for name, (what, settings) in known.items():
            print(f"{name}: {what}: {' '.join(settings)}")
        return 0
    names = list(known) if args.variants == "all" else args.variants.split(",")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        args.minutes = sorted(int(m) for m in args.minutes.split(","))
    except ValueError:
        print("error: --seeds and --minutes take comma-separated whole numbers", file=sys.stderr)
        return 2
    bad = sorted(set(names) - set(known))
    if bad or min(args.minutes) < 1 or args.parallel < 1 or not queries.available():
        print(
            f"error: unknown variant {bad[:1]} (see --list), a budget < 1, --parallel < 1 or no sox",
            file=sys.stderr,
        )
        return 2
    if args.job:
        variant, seed = args.job.split(":")
        return job(args, variant, int(seed))
    args.out.mkdir(parents=True, exist_ok=True)
    from clmr.data import Store

    queries.query_audio(
        Store(args.store),
        np.arange(len(Store(args.store))),
        args.seconds,
        0,
        args.store.parent / "queries",
        queries.available(),
    )
    todo = [
        (v, s)
        for v in names
        for s in seeds
        if not all(score_path(args.out / f"{v}-seed{s}", m).is_file() for m in args.minutes)
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    passed = list(argv if argv is not None else sys.argv[1:])
    running: list[tuple[str, subprocess.Popen]] = []
    failed = []
    while todo or running:
        while todo and len(running) < args.parallel:
            v, s = todo.pop(0)
            with (args.out / f"{v}-seed{s}.log").open("a") as log:
                job_process = subprocess.Popen(
                    [sys.executable, __file__, *passed, "--job", f"{v}:{s}"], stdout=log, stderr=log, env=env
                )
            running.append((f"{v}-seed{s}", job_process))
            print(f"started {v} seed {s} (log {args.out / f'{v}-seed{s}.log'})", flush=True)
        time.sleep(5)
        for entry in [r for r in running if r[1].poll() is not None]:
            running.remove(entry)
            if entry[1].returncode != 0:
                failed.append(entry[0])
            print(f"finished {entry[0]} (exit {entry[1].returncode})", flush=True)
    rows = [json.loads(p.read_text()) for p in sorted(args.out.glob("*-seed*.*min.json"))]
    if not rows:
        print("error: no run was scored", file=sys.stderr)
        return 1
    refs = references(args, args.out / f"{rows[0]['variant']}-seed{rows[0]['seed']}")
    lines = table(rows, refs)
    from clmr.files import atomic_open

    with atomic_open(args.out / "table.md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if plot_curves(rows, refs, args.out / "curves.png"):
        print(f"wrote {args.out / 'curves.png'}")
    if failed:
        print(f"error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
