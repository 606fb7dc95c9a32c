"""clmr.data.synthetic: deterministic by seed, labels CSVs consistent, and tags audible in the audio."""

import csv

import numpy as np
import pytest
import soundfile as sf

from clmr.data.synthetic import STYLES, TAGS, generate


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn"), tracks=40, seconds=4.0, seed=3, sample_rate=8000)


def _onset_strength(x, hop=256):
    """Mean positive spectral flux relative to mean magnitude: high for percussive audio."""
    frames = x[: len(x) // hop * hop].reshape(-1, hop) * np.hanning(hop)
    mag = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=1)) / (np.abs(frames).max() + 1e-9))
    return np.maximum(np.diff(mag, axis=0), 0).sum(axis=1).mean() / (mag.mean() + 1e-9)


def test_deterministic_by_seed(tmp_path, small_set):
    again = generate(tmp_path / "a", tracks=4, seconds=4.0, seed=3, sample_rate=8000)
    for path in again.files:
        a, _ = sf.read(path, dtype="int16")
        b, _ = sf.read(small_set.root / "audio" / path.name, dtype="int16")
        np.testing.assert_array_equal(a, b)
    other = generate(tmp_path / "b", tracks=2, seconds=4.0, seed=4, sample_rate=8000)
    assert not np.array_equal(sf.read(other.files[0])[0], sf.read(again.files[0])[0])


def test_files_and_csvs(small_set):
    assert len(small_set.files) == 40
    x, rate = sf.read(small_set.files[0], dtype="float32")
    assert rate == 8000 and len(x) == 32000 and 0 < np.abs(x).max() <= 1.0
    tags = list(csv.DictReader(open(small_set.tags_csv)))
    genres = list(csv.DictReader(open(small_set.genre_csv)))
    assert [r["path"] for r in tags] == [f.relative_to(small_set.root).as_posix() for f in small_set.files]
    assert all(set(r["tags"].split(";")) <= set(TAGS) for r in tags)
    assert all(r["label"] in STYLES for r in genres)
    splits = [r["split"] for r in tags]
    assert splits.count("valid") == splits.count("test") == 4 and splits.count("train") == 32
    assert len({r["label"] for r in genres}) >= 4  # several genres drawn
    for r in tags:  # exactly one of each pair
        t = set(r["tags"].split(";"))
        for pair in (("drums", "no drums"), ("fast", "slow"), ("major", "minor"), ("loud", "quiet")):
            assert len(t & set(pair)) == 1


def test_tags_match_audio(small_set):
    pieces = small_set.pieces
    audio = [sf.read(f, dtype="float32")[0] for f in small_set.files]
    onset = np.array([_onset_strength(x) for x in audio])
    drums = np.array([p.drums for p in pieces])
    assert drums.any() and (~drums).any()
    assert np.median(onset[drums]) > 1.3 * np.median(onset[~drums])
    loud = np.array([p.loud for p in pieces])
    rms = np.array([np.sqrt(np.mean(x**2)) for x in audio])
    assert rms[loud].min() > rms[~loud].max()  # loud/quiet is a level difference
    bass = np.array(["bass" in p.instruments for p in pieces])

    def low_share(x):
        spec = np.abs(np.fft.rfft(x)) ** 2
        return spec[: len(spec) * 150 // 4000].sum() / spec.sum()  # below 150 Hz

    low = np.array([low_share(x) for x in audio])
    assert np.median(low[bass & ~drums]) > 2 * np.median(low[~bass & ~drums])


def test_two_crops_of_a_piece_resemble_each_other(small_set):
    """Character is consistent over time: the spectra of a piece's two halves are closer to each
    other than to other pieces' halves (the property contrastive learning relies on)."""

    def spectrum(x):
        frames = x[: len(x) // 512 * 512].reshape(-1, 512)
        s = np.log1p(np.abs(np.fft.rfft(frames, axis=1)).mean(axis=0))
        return (s - s.mean()) / s.std()

    halves = [sf.read(f, dtype="float32")[0] for f in small_set.files]
    a = np.stack([spectrum(x[: len(x) // 2]) for x in halves])
    b = np.stack([spectrum(x[len(x) // 2 :]) for x in halves])
    sim = a @ b.T / a.shape[1]
    assert (sim.argmax(axis=1) == np.arange(len(halves))).mean() > 0.4  # chance: 1/40
    off_diagonal = sim[~np.eye(len(halves), dtype=bool)]
    assert np.diag(sim).mean() > off_diagonal.mean() + 0.1


def test_mp3_and_flac_output(tmp_path):
    for fmt in ("flac", "mp3"):
        s = generate(tmp_path / fmt, tracks=2, seconds=2.0, seed=0, sample_rate=22050, fmt=fmt)
        assert s.files[0].suffix == f".{fmt}" and sf.info(s.files[0]).samplerate == 22050
    with pytest.raises(ValueError, match="format"):
        generate(tmp_path / "x", tracks=1, fmt="aiff")


def test_bad_arguments_are_clear_errors(tmp_path):
    from clmr.cli import main
    from clmr.data.synthetic import GenerateError

    for kwargs, match in (
        ({"tracks": 0}, "tracks"),
        ({"tracks": 2, "seconds": 0.0}, "seconds"),
        ({"tracks": 2, "seconds": -1.0}, "seconds"),
        ({"tracks": 2, "sample_rate": 0}, "sample_rate"),
    ):
        with pytest.raises(GenerateError, match=match):
            generate(tmp_path / "bad", **kwargs)
    assert main(["generate", str(tmp_path / "cli"), "--tracks", "-1"]) == 2  # a message, no traceback
    (tmp_path / "file").write_text("x")
    with pytest.raises(GenerateError, match="not a folder"):
        generate(tmp_path / "file", tracks=1)


def test_regenerating_into_the_same_folder_leaves_only_the_new_set(tmp_path):
    generate(tmp_path, tracks=5, seconds=0.5, seed=0, sample_rate=8000)
    (tmp_path / "audio" / "mine.wav").write_bytes(b"a user's file is never touched")
    again = generate(tmp_path, tracks=2, seconds=0.5, seed=0, sample_rate=8000, fmt="flac")
    names = sorted(p.name for p in (tmp_path / "audio").iterdir())
    assert names == ["mine.wav", "track_00000.flac", "track_00001.flac"]
    assert [p.name for p in again.files] == names[1:]
    assert not list(tmp_path.rglob("*.tmp"))  # written under temporary names, then renamed
    assert len(list(csv.DictReader(open(again.tags_csv)))) == 2
