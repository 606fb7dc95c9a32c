"""Why a small encoder does or does not learn on the real-music set: short pre-trainings of config
variants, scored against random-initialised encoders (docs/realmusic.md, "The preset study").

Variants run two at a time, one thread each, for the same wall-clock budget (so each gets half of a
2-core machine); each is scored by a standardised logistic regression on song-level features (the mean
of `--crops` evenly spaced crops per track), its C chosen by 5-fold cross-validation on the train
tracks and tested on the valid + test tracks, which pre-training never saw. A finished variant (its
`.study-done` marker) is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

DONE = ".study-done"
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
# name -> (what it changes, clmr pretrain arguments on top of the tiny preset)
VARIANTS = {
    "A": ("tiny as it is", []),
    "B": ("temperature 0.1, lr 3e-3", ["--loss.temperature", "0.1", "--optim.lr", "3e-3"]),
    "C": (
        "B + 2.46 s crops (8 blocks)",
        ["--loss.temperature", "0.1", "--optim.lr", "3e-3", "--model.n-blocks", "8"],
    ),
    "D": (
        "B + no augmentation",
        ["--loss.temperature", "0.1", "--optim.lr", "3e-3", "--augment.enabled", "false"],
    ),
    "E": ("tiny + no augmentation (the cpu preset)", ["--augment.enabled", "false"]),
    "F": ("B + no filter step", ["--loss.temperature", "0.1", "--optim.lr", "3e-3", "--augment.filter", "0"]),
}


def pretrain_command(store: Path, run: Path, minutes: int, extra: list[str]) -> list[str]:
    """`clmr pretrain` of one variant: the tiny preset, seed 0, a wall-clock budget, no periodic copies."""
    budget = f"00:{minutes // 60:02d}:{minutes % 60:02d}:00"
    return [
        *("pretrain", "--data", str(store), "--out", str(run), "--preset", "tiny", "--seed", "0", "--resume"),
        *("--trainer.max-time", budget, "--max-epochs", "-1", "--trainer.val-every", "25"),
        *("--trainer.checkpoint-every", "none", *extra),
    ]


def held_out_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy (%) of a standardised logistic regression, C by 5-fold CV on the training rows."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    logreg = LogisticRegressionCV(Cs=list(C_GRID), cv=5, max_iter=3000, scoring="accuracy")
    with warnings.catch_warnings():  # scikit-learn's notices of future defaults; these are set explicitly
        warnings.simplefilter("ignore", FutureWarning)
        model = make_pipeline(StandardScaler(), logreg).fit(train, y_train)
    return float(100 * np.mean(model.predict(test) == y_test))


def song_features(model, store, tracks: np.ndarray, crops: int) -> np.ndarray:
    """(n_tracks, D): the mean feature of `crops` evenly spaced crops of each track (frozen encoder)."""
    from clmr.evaluate.features import extract

    length = model.crop_length
    starts = np.concatenate(
        [np.linspace(0, store.length(int(i)) - length, crops).astype(int) for i in tracks]
    )
    rows = extract(model, store, np.repeat(tracks, crops), batch_size=128, starts=starts).features
    return rows.reshape(len(tracks), crops, -1).mean(axis=1)


def score(model, store, crops: int) -> float:
    """Held-out accuracy of `model`'s song features: fit on the train split, test on valid + test."""
    train = store.split_indices("train")
    held = np.concatenate([store.split_indices("valid"), store.split_indices("test")])
    features = song_features(model, store, np.concatenate([train, held]), crops)
    labels = [store.targets(t) for t in (train, held)]
    y_train, y_held = (y.argmax(axis=1) if y.ndim > 1 else y for y in labels)
    return held_out_accuracy(features[: len(train)], y_train, features[len(train) :], y_held)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", type=Path, required=True, help="the real-music store (run.py's WORK/store)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("realmusic-study"), help="one run folder per variant"
    )
    parser.add_argument("--minutes", type=int, default=7, help="pre-training budget per variant (default: 7)")
    parser.add_argument("--crops", type=int, default=48, help="crops per track for the song features")
    parser.add_argument("--random-seeds", type=int, default=4, help="random-initialised encoders to score")
    parser.add_argument("--variants", default="".join(VARIANTS), help="which variants (default: ABCDEF)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown or not (1 <= args.minutes < 1440 and args.crops >= 1 and args.random_seeds >= 0):
        print(f"error: bad option (unknown variants {unknown} or a number out of range)", file=sys.stderr)
        return 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [v for v in args.variants if not (args.out / v / DONE).is_file()]
    for pair in (todo[i : i + 2] for i in range(0, len(todo), 2)):
        jobs = []
        for v in pair:
            command = pretrain_command(args.store, args.out / v, args.minutes, VARIANTS[v][1])
            print("clmr " + " ".join(command), flush=True)
            with (args.out / f"{v}.log").open("w") as log:
                job = subprocess.Popen(
                    [sys.executable, "-m", "clmr", *command], stdout=log, stderr=log, env=env
                )
            jobs.append((v, job))
        for v, job in jobs:
            if job.wait() != 0:
                print(f"error: variant {v} failed (see {args.out / f'{v}.log'})", file=sys.stderr)
                return 1
            (args.out / v / DONE).touch()

    from clmr import load_model
    from clmr.data import Store
    from clmr.evaluate.run import random_init_like

    store = Store(args.store)
    rows = {v: score(load_model(args.out / v), store, args.crops) for v in args.variants}
    variant_a = args.variants[0]
    reference = load_model(args.out / variant_a)
    randoms = [score(random_init_like(reference, s), store, args.crops) for s in range(args.random_seeds)]
    print(json.dumps({"variants": rows, "random": randoms}))
    print("\n| variant | change | held-out accuracy (%) |\n|---|---|---|")
    for v in args.variants:
        print(f"| {v} | {VARIANTS[v][0]} | {rows[v]:.1f} |")
    if randoms:
        seeds = ", ".join(f"{r:.1f}" for r in randoms)
        print(
            f"| random init | {variant_a}'s encoder, {args.random_seeds} seeds: {seeds} | {np.mean(randoms):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
