"""Score frozen encoders on the real-music set's labels with low variance (docs/realmusic.md, "The scorer").

Song-level features (the mean of `--crops` evenly spaced crops per track), a standardised logistic
regression with C chosen inside each training fold, and scikit-learn's repeated stratified 5-fold CV over
all tracks: the same folds for every encoder, so differences are paired per fold (mean ± std over folds).
Three references are scored every time: random-initialised encoders (`--random-seeds`), log-mel
statistics (no learning) and each trained encoder given with `--run`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study import C_GRID, song_features  # noqa: E402

N_MELS, N_FFT = 64, 512


def mel_bank(sample_rate: int, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters from 0 Hz to Nyquist."""
    mel = np.linspace(0, 2595 * np.log10(1 + sample_rate / 2 / 700), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising, falling = (bins - lo) / (mid - lo), (hi - bins) / (hi - mid)
    return np.clip(np.minimum(rising, falling), 0, None)


def logmel_stats(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(2 * N_MELS,) mean and std over frames of the log-mel spectrogram (hop N_FFT / 2, Hann window)."""
    hop = N_FFT // 2
    audio = np.pad(np.asarray(audio, np.float32), (0, max(0, N_FFT - len(audio))))
    frames = np.lib.stride_tricks.sliding_window_view(audio, N_FFT)[::hop] * np.hanning(N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    logmel = np.log(power @ mel_bank(sample_rate).T + 1e-8)
    return np.concatenate([logmel.mean(axis=0), logmel.std(axis=0)])


def logmel_features(store, tracks: np.ndarray) -> np.ndarray:
    """(n_tracks, 2 * N_MELS): log-mel statistics of each whole track (the no-learning baseline)."""
    return np.stack([logmel_stats(store.track(int(i)), store.sample_rate) for i in tracks])


def folds(y: np.ndarray, repeats: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) index pairs of repeated stratified 5-fold CV: the same for every encoder."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    cv = RepeatedStratifiedKFold(n_splits=5, n_repeats=repeats, random_state=seed)
    return list(cv.split(np.zeros(len(y)), y))


def fold_accuracies(features: np.ndarray, y: np.ndarray, splits) -> np.ndarray:
    """Accuracy (%) per fold of a standardised logistic regression, C by stratified 5-fold CV inside the
    fold's training tracks."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = []
    for train, test in splits:
        logreg = LogisticRegressionCV(Cs=list(C_GRID), cv=5, max_iter=3000, scoring="accuracy")
        with warnings.catch_warnings():  # scikit-learn's notices of future defaults; these are set explicitly
            warnings.simplefilter("ignore", FutureWarning)
            model = make_pipeline(StandardScaler(), logreg).fit(features[train], y[train])
        out.append(100 * np.mean(model.predict(features[test]) == y[test]))
    return np.asarray(out)


def paired(a: np.ndarray, b: np.ndarray) -> str:
    """'+m ± s': mean and sample std over folds of a - b (points)."""
    d = np.asarray(a) - np.asarray(b)
    return f"{d.mean():+.1f} ± {d.std(ddof=1) if len(d) > 1 else 0.0:.1f}"


def labels_of(store) -> tuple[np.ndarray, np.ndarray]:
    """Every track of the store and its class index (a multiclass store)."""
    tracks = np.arange(len(store))
    y = store.targets(tracks)
    return tracks, (y.argmax(axis=1) if y.ndim > 1 else y)


def references(store, like, random_seeds: int, crops: int, splits) -> dict[str, np.ndarray]:
    """Fold accuracies of log-mel statistics and of `random_seeds` random encoders shaped like `like`."""
    from clmr.evaluate.run import random_init_like

    tracks, y = labels_of(store)
    out = {"log-mel statistics": fold_accuracies(logmel_features(store, tracks), y, splits)}
    for seed in range(random_seeds):
        features = song_features(random_init_like(like, seed), store, tracks, crops)
        out[f"random init (seed {seed})"] = fold_accuracies(features, y, splits)
    return out


def table(scores: dict[str, np.ndarray]) -> list[str]:
    """Markdown rows: accuracy (mean ± std over folds) and the paired difference to the random encoders'
    per-fold mean and to log-mel statistics."""
    randoms = [v for k, v in scores.items() if k.startswith("random init")]
    random = np.mean(randoms, axis=0) if randoms else None
    logmel = scores.get("log-mel statistics")
    lines = ["| encoder | accuracy (%) | − random init (points) | − log-mel (points) |", "|---|---|---|---|"]
    rows = dict(scores)
    if random is not None:
        rows[f"random init (mean of {len(randoms)})"] = random
    for name, acc in rows.items():
        vs_random = paired(acc, random) if random is not None and not name.startswith("random") else ""
        vs_logmel = paired(acc, logmel) if logmel is not None and name != "log-mel statistics" else ""
        lines.append(f"| {name} | {acc.mean():.1f} ± {acc.std(ddof=1):.1f} | {vs_random} | {vs_logmel} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="the real-music store (clmr preprocess)")
    parser.add_argument("--run", type=Path, action="append", default=[], help="a trained run (repeatable)")
    parser.add_argument("--crops", type=int, default=48, help="evenly spaced crops per track (default: 48)")
    parser.add_argument("--repeats", type=int, default=5, help="CV repeats, >= 5 (default: 5)")
    parser.add_argument("--random-seeds", type=int, default=3, help="random encoders, >= 3 (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="the folds' seed (default: 0)")
    parser.add_argument("--json", type=Path, help="also write the per-fold accuracies here")
    args = parser.parse_args(argv)
    if not (args.run and args.crops >= 1 and args.repeats >= 1 and args.random_seeds >= 1):
        print("error: give --run at least once; --crops, --repeats, --random-seeds >= 1", file=sys.stderr)
        return 2
    from clmr import load_model
    from clmr.data import Store
    from clmr.files import atomic_open

    store = Store(args.store)
    tracks, y = labels_of(store)
    splits = folds(y, args.repeats, args.seed)
    models = {str(run): load_model(run) for run in args.run}
    scores = references(store, next(iter(models.values())), args.random_seeds, args.crops, splits)
    for name, model in models.items():
        scores[name] = fold_accuracies(song_features(model, store, tracks, args.crops), y, splits)
    print(f"\n{len(tracks)} tracks, {len(store.vocab)} classes, {args.repeats} x stratified 5-fold CV\n")
    print("\n".join(table(scores)))
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump({k: v.tolist() for k, v in scores.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
