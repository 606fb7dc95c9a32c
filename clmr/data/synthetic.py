"""Seeded synthetic music with tags: the built-in data of the demo and the tests.

Each piece has one style archetype (its single "genre" label) that biases, but does not fix, its
tempo, mode, instruments, drums and loudness; those attributes are its multi-label tags, in the
spirit of MagnaTagATune. A piece keeps its character for its whole length (same tempo, key,
instruments, a repeating motif over a chord progression and a drum pattern), so two crops of it
sound alike, and every cue sits below 4 kHz so it survives an 8 kHz store. Rendering is wavetable
synthesis with per-sample envelopes and FFT-convolved drum hits: numpy arrays, no per-sample loops.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from clmr.errors import ClmrError, check_whole
from clmr.files import atomic_open, atomic_path
from clmr.limits import MAX_PIECE_SAMPLES, MAX_SAMPLE_RATE, MAX_TRACKS

TABLE_SIZE = 4096


class GenerateError(ClmrError):
    """A bad argument to `generate` (the CLI prints it without a traceback)."""


@dataclass(frozen=True)
class Instrument:
    """A synthetic timbre: harmonic amplitudes, envelope, register and an optional vibrato/breath."""

    harmonics: tuple[float, ...]
    attack: float  # seconds
    decay: float  # exponential decay time constant in seconds (inf: sustained)
    low: int  # MIDI register
    high: int
    vibrato: float = 0.0  # relative depth of a 5.5 Hz vibrato
    breath: float = 0.0  # amount of noise mixed into the tone


INSTRUMENTS: dict[str, Instrument] = {
    "piano": Instrument(tuple(1 / k**1.5 for k in range(1, 11)), 0.004, 0.45, 55, 79),
    "strings": Instrument(tuple(1 / k for k in range(1, 13)), 0.12, np.inf, 55, 79, vibrato=0.006),
    "flute": Instrument((1.0, 0.25, 0.08, 0.03), 0.06, np.inf, 67, 88, vibrato=0.004, breath=0.08),
    "guitar": Instrument(tuple((1 / k) * (1.0 if k % 3 else 0.3) for k in range(1, 11)), 0.003, 0.22, 48, 72),
    "synth": Instrument(tuple((1 / k if k % 2 else 0.0) for k in range(1, 16)), 0.01, np.inf, 60, 84),
    "organ": Instrument((1.0, 0.8, 0.0, 0.6, 0.0, 0.0, 0.0, 0.45), 0.02, np.inf, 55, 76),
    "bass": Instrument((1.0, 0.55, 0.25, 0.1), 0.008, 0.6, 33, 48),
}
"""Instrument timbres; the bass plays the bass line, the others melody or chords."""


@dataclass(frozen=True)
class Style:
    """A genre archetype: probabilities of each attribute and the instruments it draws from."""

    instruments: tuple[str, ...]
    p_fast: float
    p_major: float
    p_drums: float
    p_loud: float


STYLES: dict[str, Style] = {
    "ambient": Style(("strings", "flute", "synth", "organ"), 0.1, 0.3, 0.1, 0.1),
    "rock": Style(("guitar", "organ", "piano"), 0.85, 0.7, 0.95, 0.9),
    "classical": Style(("piano", "strings", "flute"), 0.35, 0.6, 0.0, 0.25),
    "electronic": Style(("synth", "organ", "piano"), 0.9, 0.4, 0.95, 0.8),
    "folk": Style(("guitar", "flute", "piano", "strings"), 0.5, 0.8, 0.3, 0.3),
}
"""The single-label field ("genre") of a generated piece."""

TAGS: tuple[str, ...] = (
    *INSTRUMENTS,
    "drums",
    "no drums",
    "fast",
    "slow",
    "major",
    "minor",
    "loud",
    "quiet",
)
"""The multi-label vocabulary, in this order."""

MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4))  # scale degrees of chord roots


@dataclass
class Piece:
    """What was drawn for one piece (its metadata row)."""

    genre: str
    bpm: float
    key: int
    mode: str
    instruments: list[str]
    drums: bool
    loud: bool

    @property
    def tags(self) -> list[str]:
        return [
            *self.instruments,
            "drums" if self.drums else "no drums",
            "fast" if self.bpm >= 120 else "slow",
            self.mode,
            "loud" if self.loud else "quiet",
        ]


@dataclass
class SyntheticSet:
    """Where `generate` wrote things: the dataset root, audio files and the two labels CSVs."""

    root: Path
    files: list[Path]
    tags_csv: Path  # path,tags,split ("tag1;tag2"): multilabel
    genre_csv: Path  # path,label,split: multiclass
    tracks_csv: Path  # every drawn attribute per piece
    pieces: list[Piece] = field(repr=False)
    tags: tuple[str, ...] = TAGS
    genres: tuple[str, ...] = tuple(STYLES)


def draw_piece(rng: np.random.Generator) -> Piece:
    """Draw a piece's attributes: a style, then each attribute with that style's probabilities."""
    genre = str(rng.choice(list(STYLES)))
    style = STYLES[genre]
    fast = rng.random() < style.p_fast
    n_inst = int(rng.integers(1, 3))
    instruments = sorted(rng.choice(style.instruments, size=n_inst, replace=False).tolist())
    if rng.random() < 0.6:
        instruments.append("bass")
    return Piece(
        genre=genre,
        bpm=float(rng.uniform(135, 165) if fast else rng.uniform(65, 90)),
        key=int(rng.integers(0, 12)),
        mode="major" if rng.random() < style.p_major else "minor",
        instruments=instruments,
        drums=bool(rng.random() < style.p_drums),
        loud=bool(rng.random() < style.p_loud),
    )


def render(piece: Piece, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The piece as float32 mono audio of `seconds` at `sample_rate`, peak <= 1."""
    n = int(round(seconds * sample_rate))
    beat = 60.0 / piece.bpm
    bars = int(np.ceil(seconds / (4 * beat))) + 1
    scale = MAJOR if piece.mode == "major" else MINOR
    progression = np.array(PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))])
    chord_roots = np.tile(progression, bars // len(progression) + 1)[:bars]  # scale degree per bar
    mix = np.zeros(n, np.float32)
    melodic = [name for name in piece.instruments if name != "bass"]
    roles = ["melody", "chords"] if len(melodic) > 1 else ["melody"]
    for name, role in zip(melodic, roles, strict=False):
        inst = INSTRUMENTS[name]
        if role == "melody":
            degrees, starts = _melody(rng, chord_roots, subdivision=2)
            mix += 0.5 * _voice(inst, piece.key, scale, degrees, starts * beat, sample_rate, n, rng)
        else:
            for third in (0, 2, 4):  # a triad per bar, one voice per chord tone
                starts = np.arange(bars) * 4.0
                mix += 0.2 * _voice(
                    inst, piece.key, scale, chord_roots + third, starts * beat, sample_rate, n, rng
                )
    if "bass" in piece.instruments:
        starts = np.arange(bars * 2) * 2.0  # half notes on the chord root
        degrees = np.repeat(chord_roots, 2)
        mix += 0.45 * _voice(
            INSTRUMENTS["bass"], piece.key, scale, degrees, starts * beat, sample_rate, n, rng
        )
    if piece.drums:
        mix += _drums(rng, beat, sample_rate, n)
    phrase = 8 * beat  # slow swell over two bars: dynamics within the piece
    t = np.arange(n, dtype=np.float32) / sample_rate
    mix *= 1.0 + 0.25 * np.sin(2 * np.pi * t / phrase + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    mix /= max(float(np.abs(mix).max()), 1e-6)
    if piece.loud:  # saturated and near full scale
        mix = np.tanh(2.5 * mix) / np.tanh(2.5) * rng.uniform(0.8, 0.95)
    else:
        mix *= rng.uniform(0.1, 0.2)
    return mix.astype(np.float32)


def generate(
    out_dir: str | os.PathLike,
    tracks: int,
    seconds: float = 10.0,
    seed: int = 0,
    sample_rate: int = 22050,
    fmt: str = "wav",
) -> SyntheticSet:
    """Write `tracks` pieces to OUT/audio/ plus OUT/tags.csv, OUT/genre.csv and OUT/tracks.csv.

    The same (tracks, seconds, seed, sample_rate, fmt) always writes the same set. Splits are
    80/10/10 train/valid/test over a seeded permutation (at least one valid and test piece when
    there are three or more). Every file is written under a temporary name and renamed, and
    `track_NNNNN.*` files of an earlier, different set in OUT/audio are removed, so OUT/audio holds
    exactly the files the CSVs list (a folder preprocessed without the CSVs gets the same set).
    """
    if fmt not in FORMATS:
        raise GenerateError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_whole("tracks", tracks, error=GenerateError)
    if tracks > MAX_TRACKS:
        raise GenerateError(f"tracks must be at most {MAX_TRACKS:,}, got {tracks:,}")
    if not 1000 <= sample_rate <= MAX_SAMPLE_RATE:
        raise GenerateError(f"sample_rate must be 1000 to {MAX_SAMPLE_RATE:,} Hz, got {sample_rate!r}")
    if not (np.isfinite(seconds) and seconds * sample_rate >= 1):
        raise GenerateError(f"seconds must be positive (at least one sample long), got {seconds!r}")
    if seconds * sample_rate > MAX_PIECE_SAMPLES:  # checked before any allocation sized by it
        raise GenerateError(
            f"seconds must be at most {MAX_PIECE_SAMPLES / sample_rate:,.0f} at {sample_rate:,} Hz (a piece of "
            f"at most {MAX_PIECE_SAMPLES:,} samples is rendered in memory), got {seconds:g}"
        )
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise GenerateError(f"{root}: exists and is not a folder")
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    splits = _splits(tracks, np.random.default_rng([seed, 2**31]))
    files, pieces = [], []
    sf_format, subtype = FORMATS[fmt]
    for i in range(tracks):
        rng = np.random.default_rng([seed, i])
        piece = draw_piece(rng)
        audio = render(piece, seconds, sample_rate, rng)
        path = audio_dir / f"track_{i:05d}.{fmt}"
        with atomic_path(path) as tmp:
            sf.write(tmp, audio, sample_rate, format=sf_format, subtype=subtype)
        files.append(path)
        pieces.append(piece)
    keep = set(files)
    for stale in audio_dir.iterdir():  # files of an earlier set (other count or format)
        if _OWN_FILE.fullmatch(stale.name) and stale not in keep and stale.is_file():
            stale.unlink()
    rel = [p.relative_to(root).as_posix() for p in files]
    tags_csv, genre_csv, tracks_csv = root / "tags.csv", root / "genre.csv", root / "tracks.csv"
    _write_csv(
        tags_csv,
        ["path", "tags", "split"],
        [[r, ";".join(p.tags), s] for r, p, s in zip(rel, pieces, splits, strict=True)],
    )
    _write_csv(
        genre_csv,
        ["path", "label", "split"],
        [[r, p.genre, s] for r, p, s in zip(rel, pieces, splits, strict=True)],
    )
    _write_csv(
        tracks_csv,
        ["path", "genre", "bpm", "key", "mode", "instruments", "drums", "loud", "split"],
        [
            [r, p.genre, f"{p.bpm:.2f}", p.key, p.mode, ";".join(p.instruments), int(p.drums), int(p.loud), s]
            for r, p, s in zip(rel, pieces, splits, strict=True)
        ],
    )
    return SyntheticSet(root, files, tags_csv, genre_csv, tracks_csv, pieces)


FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III")}
"""Output formats of `generate`: extension -> (soundfile format, subtype)."""

_OWN_FILE = re.compile(r"(\.)?track_\d{5,}\.(wav|flac|mp3)(\.tmp)?")
"""Names `generate` writes in OUT/audio (and their temporary names)."""


def _splits(tracks: int, rng: np.random.Generator) -> list[str]:
    n_valid = n_test = max(1, round(0.1 * tracks)) if tracks >= 3 else 0
    names = np.array(["train"] * (tracks - n_valid - n_test) + ["valid"] * n_valid + ["test"] * n_test)
    return names[rng.permutation(tracks)].tolist()


def _melody(
    rng: np.random.Generator, chord_roots: np.ndarray, subdivision: int
) -> tuple[np.ndarray, np.ndarray]:
    """A one-bar motif (scale degrees, rhythm) repeated over the chord roots; starts in beats."""
    steps = 4 * subdivision
    onsets = rng.random(steps) < 0.7
    onsets[0] = True
    motif = np.cumsum(rng.integers(-2, 3, size=steps))
    slots = np.flatnonzero(onsets)
    bars = len(chord_roots)
    starts = (np.arange(bars)[:, None] * steps + slots[None, :]).ravel() / subdivision
    degrees = (chord_roots[:, None] + motif[slots][None, :]).ravel()
    return degrees, starts


def _voice(
    inst: Instrument,
    key: int,
    scale: np.ndarray,
    degrees: np.ndarray,
    starts: np.ndarray,
    sample_rate: int,
    n: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """One monophonic line: note i plays scale degree `degrees[i]` from `starts[i]` seconds to the next start."""
    octave, step = np.divmod(degrees, len(scale))
    midi = 12 * (inst.low // 12 + 1) + key + 12 * octave + scale[step]
    midi = _fold(midi, inst.low, inst.high)
    bounds = np.minimum(np.round(np.append(starts, np.inf) * sample_rate), n).astype(np.int64)
    lengths = np.diff(bounds)
    keep = lengths > 0
    bounds, lengths, midi = bounds[:-1][keep], lengths[keep], midi[keep]
    note = np.repeat(np.arange(len(lengths)), lengths)
    t = (np.arange(n, dtype=np.float32) - bounds[note].astype(np.float32)) / np.float32(sample_rate)
    remaining = lengths[note].astype(np.float32) / np.float32(sample_rate) - t
    freq = (440.0 * 2.0 ** ((midi - 69) / 12.0)).astype(np.float32)[note]
    # phase in cycles since the note's onset, closed form (no running sum); a vibrato of depth d at
    # rate w integrates to f * (t + d * (1 - cos(w t)) / w)
    w = np.float32(2 * np.pi * 5.5)
    cycles = freq * (t + np.float32(inst.vibrato) * (1 - np.cos(w * t)) / w) if inst.vibrato else freq * t
    table = _table(inst.harmonics, sample_rate, int(inst.high))
    tone = table[(cycles * TABLE_SIZE).astype(np.int64) & (TABLE_SIZE - 1)]
    if inst.breath:
        tone += np.float32(inst.breath) * rng.standard_normal(n, dtype=np.float32)
    velocity = rng.uniform(0.7, 1.0, size=len(lengths)).astype(np.float32)[note]
    env = np.minimum(t / np.float32(inst.attack), 1.0) * np.minimum(remaining / np.float32(0.01), 1.0)
    if np.isfinite(inst.decay):
        env *= np.exp(-t / np.float32(inst.decay))
    return (tone * env * velocity).astype(np.float32)


def _fold(midi: np.ndarray, low: int, high: int) -> np.ndarray:
    """Move notes by octaves into [low, high]."""
    span = (high - low) // 12 * 12
    return low + (midi - low) % span


@lru_cache(maxsize=64)
def _table(harmonics: tuple[float, ...], sample_rate: int, highest_midi: int) -> np.ndarray:
    """One period of the timbre, keeping only harmonics below Nyquist for the highest note."""
    top = 440.0 * 2.0 ** ((highest_midi - 69) / 12.0)
    phase = np.arange(TABLE_SIZE) / TABLE_SIZE
    wave = np.zeros(TABLE_SIZE)
    for k, amp in enumerate(harmonics, start=1):
        if amp and k * top < 0.45 * sample_rate:
            wave += amp * np.sin(2 * np.pi * k * phase)
    return (wave / np.abs(wave).max()).astype(np.float32)


def _drums(rng: np.random.Generator, beat: float, sample_rate: int, n: int) -> np.ndarray:
    """Kick, snare and hi-hat hits on a one-bar sixteenth-note pattern, tiled over the piece.

    One bar is rendered (hit tails wrap into the next bar, as they do when the bar repeats) and
    tiled, so the cost is one bar's worth of hits whatever the length.
    """
    bar = int(round(4 * beat * sample_rate))
    pos = np.arange(16)
    hits = {
        "kick": (pos == 0) | (pos == 8) | ((pos == 10) & (rng.random() < 0.5)),
        "snare": (pos == 4) | (pos == 12),
        "hat": pos % 2 == 0,
    }
    t = np.arange(min(int(0.25 * sample_rate), bar)) / sample_rate
    sweep = 2 * np.pi * np.cumsum(50 + 100 * np.exp(-t / 0.03)) / sample_rate
    noise = rng.standard_normal(len(t))
    templates = {
        "kick": np.sin(sweep) * np.exp(-t / 0.12),
        "snare": (0.7 * noise + 0.5 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t / 0.06),
        "hat": np.diff(noise, prepend=0.0) * 0.4 * np.exp(-t / 0.015),
    }
    onsets = pos * bar // 16
    one_bar = np.zeros(bar)
    for name, mask in hits.items():
        velocity = rng.uniform(0.8, 1.0, size=int(mask.sum()))
        idx = (onsets[mask][:, None] + np.arange(len(t))[None, :]) % bar
        one_bar += np.bincount(idx.ravel(), (velocity[:, None] * templates[name]).ravel(), minlength=bar)
    return (0.6 * np.tile(one_bar, n // bar + 1)[:n]).astype(np.float32)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
