"""Find each track again from a degraded excerpt: top-1 and mean reciprocal rank per degradation
(docs/realmusic.md, "Degraded queries").

Library: each clean track's song embedding (the mean of all its consecutive crops, as `clmr similar`
embeds a file). Queries: a seeded `--seconds` excerpt of each track through one real-world degradation at a
time, made with the sox command line and numpy (never `clmr.augment`, so the chain is not graded by its
own operations), cached per store as .npy files. Similarity: cosine after subtracting the library mean.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

SNR_DB = 5.0
ROOM_RT60_S = 0.5
# name -> what it models (the sox arguments are in `degrade`)
DEGRADATIONS = {
    "clean": "the excerpt as it is (the control)",
    "telephone": "telephone band: 8 kHz, band-pass 300-3400 Hz (sox `rate 8k sinc 300-3400`)",
    "noise": f"pink noise at {SNR_DB:g} dB SNR (numpy)",
    "room": f"a room: a seeded exponentially decaying noise impulse response, RT60 {ROOM_RT60_S:g} s (numpy)",
    "lowfi": "low bandwidth and bit depth: 4 kHz sampling (2 kHz band), 8 bits with dither (sox)",
    "mp3": "a lossy codec: MP3 at 16 kbit/s (sox with libmp3lame)",
}


class QueryError(RuntimeError):
    """sox is missing or failed on a degradation."""


def _sox(audio: np.ndarray, rate: int, out: list[str], effects: list[str]) -> bytes:
    """sox from float32 raw mono at `rate` to the output described by `out` (format options, then
    `-t TYPE`), through `effects`; the output's bytes."""
    command = ["sox", "-q", "-t", "f32", "-r", str(rate), "-c", "1", "-", *out, "-", *effects]
    result = subprocess.run(command, input=audio.astype(np.float32).tobytes(), capture_output=True)
    if result.returncode != 0:
        raise QueryError(f"sox {' '.join(out + effects)}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _fit(audio: np.ndarray, n: int) -> np.ndarray:
    """float32 `audio` cut or zero-padded to n samples."""
    audio = audio[:n].astype(np.float32)
    return np.pad(audio, (0, n - len(audio)))


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of unit-RMS 1/f noise (white noise shaped in the frequency domain)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise / np.sqrt(np.mean(noise**2))


def room_response(rate: int, rng: np.random.Generator) -> np.ndarray:
    """A room impulse response: the direct sound, then from 5 ms noise decaying by 60 dB in ROOM_RT60_S."""
    t = np.arange(int(ROOM_RT60_S * rate)) / rate
    response = rng.standard_normal(len(t)) * 10 ** (-3 * t / ROOM_RT60_S) * 0.3
    response[: int(0.005 * rate)] = 0
    response[0] = 1.0
    return response


def degrade(audio: np.ndarray, rate: int, name: str, rng: np.random.Generator) -> np.ndarray:
    """`audio` (float32 mono at `rate`) through the degradation `name`, at the same length and rate."""
    n, rms = len(audio), float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-12)
    if name == "clean":
        return audio.astype(np.float32)
    if name == "noise":
        return (audio + pink_noise(n, rng) * rms * 10 ** (-SNR_DB / 20)).astype(np.float32)
    if name == "room":
        from scipy.signal import fftconvolve

        wet = fftconvolve(audio, room_response(rate, rng))[:n]
        return (wet * rms / (np.sqrt(np.mean(wet**2)) + 1e-12)).astype(np.float32)
    if name == "telephone":
        out = _sox(audio, rate, ["-t", "f32"], ["rate", "8000", "sinc", "300-3400", "rate", str(rate)])
        return _fit(np.frombuffer(out, np.float32), n)
    if name == "lowfi":
        to_8bit = ["-b", "8", "-e", "signed-integer", "-t", "s8"]
        out = _sox(audio, rate, to_8bit, ["rate", "4000", "rate", str(rate), "dither"])
        return _fit(np.frombuffer(out, np.int8) / 128.0, n)
    if name == "mp3":
        encoded = _sox(audio, rate, ["-C", "16", "-t", "mp3"], [])
        command = ["sox", "-q", "-t", "mp3", "-", "-t", "f32", "-r", str(rate), "-c", "1", "-"]
        decoded = subprocess.run(command, input=encoded, capture_output=True)
        if decoded.returncode != 0:
            raise QueryError(f"sox decoding mp3: {decoded.stderr.decode(errors='replace').strip()}")
        return _fit(np.frombuffer(decoded.stdout, np.float32), n)
    raise QueryError(f"unknown degradation {name!r} (known: {', '.join(DEGRADATIONS)})")


def available() -> list[str]:
    """The degradations this machine can make (all need sox; mp3 needs its MP3 format)."""
    if shutil.which("sox") is None:
        return []
    formats = subprocess.run(["sox", "-h"], capture_output=True, text=True).stdout
    mp3 = any("FILE FORMATS" in line and " mp3" in line for line in formats.splitlines())
    return [d for d in DEGRADATIONS if d != "mp3" or mp3]


def excerpts(store, tracks: np.ndarray, seconds: float, seed: int) -> np.ndarray:
    """(n_tracks, seconds * rate) float32: a seeded excerpt of each track (zero-padded if shorter)."""
    n = int(seconds * store.sample_rate)
    rng = np.random.default_rng(seed)
    starts = [int(rng.integers(0, max(store.length(int(i)) - n, 0) + 1)) for i in tracks]
    return np.stack(
        [
            _fit(store.crop(int(i), s, min(n, store.length(int(i)))), n)
            for i, s in zip(tracks, starts, strict=True)
        ]
    )


def query_audio(
    store, tracks, seconds: float, seed: int, cache: Path, names: list[str]
) -> dict[str, np.ndarray]:
    """name -> (n_tracks, samples) degraded excerpts, made once per (seed, seconds) and kept in `cache`."""
    from clmr.files import atomic_path

    folder = cache / f"seed{seed}-{seconds:g}s-{store.sample_rate}Hz-{len(tracks)}tracks"
    folder.mkdir(parents=True, exist_ok=True)
    clean = None
    out = {}
    for name in names:
        path = folder / f"{name}.npy"
        if not path.is_file():
            clean = excerpts(store, tracks, seconds, seed) if clean is None else clean
            rng = np.random.default_rng([seed, list(DEGRADATIONS).index(name)])
            audio = np.stack([degrade(x, store.sample_rate, name, rng) for x in clean])
            with atomic_path(path, suffix=".tmp.npy") as tmp:
                np.save(tmp, audio)
        out[name] = np.load(path, mmap_mode="r")
    return out


def embed_arrays(model, audio: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """(n, D): each row's song embedding, the mean of its consecutive crops (as `clmr similar` does)."""
    from clmr.songs import array_songs, run_model

    songs = array_songs(((str(k), np.asarray(a)) for k, a in enumerate(audio)), model.crop_length)
    return np.stack([o.mean for o in run_model(model, songs, batch_size=batch_size, device="cpu")])


def library(model, store, tracks: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """(n_tracks, D): each clean track's song embedding, the mean of all its consecutive crops."""
    from clmr.songs import run_model, store_songs

    songs = store_songs(store, tracks, model.crop_length)
    return np.stack([o.mean for o in run_model(model, songs, batch_size=batch_size, device="cpu")])


def retrieval(library_rows: np.ndarray, queries: np.ndarray) -> tuple[float, float]:
    """(top-1 %, mean reciprocal rank %) of finding query i's track i in the library: cosine similarity
    after subtracting the library mean from both."""
    centre = library_rows.mean(axis=0)
    a, q = library_rows - centre, queries - centre
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
    q = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-12)
    sims = q @ a.T
    ranks = 1 + (sims > np.diag(sims)[:, None]).sum(axis=1)
    return float(100 * np.mean(ranks == 1)), float(100 * np.mean(1 / ranks))


def score_model(model, store, queries: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """degradation -> (top-1 %, MRR %) of `model` on every track of `store`."""
    rows = library(model, store, np.arange(len(store)))
    return {name: retrieval(rows, embed_arrays(model, audio)) for name, audio in queries.items()}


def table(results: dict[str, dict[str, tuple[float, float]]]) -> list[str]:
    """Markdown: one row per degradation, top-1 / MRR (%) per encoder."""
    names = list(results)
    degradations = list(next(iter(results.values())))
    lines = ["| degradation | " + " | ".join(f"{n}: top-1 / MRR (%)" for n in names) + " |"]
    lines.append("|---|" + "---|" * len(names))
    for d in degradations:
        cells = [f"{results[n][d][0]:.1f} / {results[n][d][1]:.1f}" for n in names]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="the real-music store (clmr preprocess)")
    parser.add_argument("--run", type=Path, action="append", default=[], help="a trained run (repeatable)")
    parser.add_argument("--random-seeds", type=int, default=3, help="random encoders (default: 3)")
    parser.add_argument("--seconds", type=float, default=15.0, help="query excerpt length (default: 15)")
    parser.add_argument("--seed", type=int, default=0, help="excerpt and degradation seed (default: 0)")
    parser.add_argument("--cache", type=Path, help="degraded excerpts (default: STORE/../queries)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    names = available()
    if not names:
        print("error: the sox command line is needed for the degradations (apt install sox)", file=sys.stderr)
        return 2
    if not (args.run and args.random_seeds >= 0 and args.seconds > 0):
        print("error: give --run at least once; --random-seeds >= 0; --seconds > 0", file=sys.stderr)
        return 2
    from clmr import load_model
    from clmr.data import Store
    from clmr.evaluate.run import random_init_like
    from clmr.files import atomic_open

    store = Store(args.store)
    cache = args.cache or args.store.parent / "queries"
    try:
        queries = query_audio(store, np.arange(len(store)), args.seconds, args.seed, cache, names)
    except QueryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    models = {str(run): load_model(run) for run in args.run}
    results = {name: score_model(m, store, queries) for name, m in models.items()}
    like = next(iter(models.values()))
    randoms = [score_model(random_init_like(like, s), store, queries) for s in range(args.random_seeds)]
    if randoms:
        results[f"random init (mean of {len(randoms)})"] = {
            d: tuple(float(np.mean([r[d][k] for r in randoms])) for k in (0, 1)) for d in queries
        }
    print(f"\n{len(store)} tracks, {args.seconds:g} s queries, seed {args.seed}\n")
    print("\n".join(table(results)))
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
