"""Preprocessing into the store and reading it back: formats, skip reasons, resume after an
interruption (an injected failure and a real SIGKILL) equals a clean run byte for byte, the views."""

import csv
import filecmp
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from clmr.data import ContrastivePairs, LabelledCrops, Store, StoreError, preprocess
from clmr.songs import track_crops

SR = 8000


def _tone(seconds, rate, channels=1, freq=330.0):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def _same_store(a: Path, b: Path) -> None:
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert ".partial" not in " ".join(names)
    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


def test_formats_rates_channels_and_skip_reasons(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    layouts = {
        "a.wav": (44100, 2, "WAV", "PCM_16"),
        "b.flac": (16000, 1, "FLAC", "PCM_24"),
        "sub/c.ogg": (48000, 4, "OGG", "VORBIS"),
        "sub/d.mp3": (22050, 2, "MP3", "MPEG_LAYER_III"),
        "e.opus": (24000, 1, "OGG", "OPUS"),
        "f.wav": (8000, 1, "WAV", "FLOAT"),
    }
    for name, (rate, ch, fmt, subtype) in layouts.items():
        sf.write(src / name, _tone(1.0, rate, ch), rate, format=fmt, subtype=subtype)
    (src / "corrupt.mp3").write_bytes(b"\x00garbage" * 200)
    sf.write(src / "empty.wav", np.zeros((0, 1), np.float32), SR)
    sf.write(src / "silent.flac", np.zeros((SR, 2), np.float32), SR)
    sf.write(src / "short.wav", _tone(0.1, SR), SR)
    (src / "notes.txt").write_text("not audio, not scanned")
    (src / "sub" / "g.m4a").write_bytes(b"an AAC file libsndfile cannot decode")

    store = preprocess(src, tmp_path / "store", sample_rate=SR, workers=0, min_length=SR // 2, progress=False)
    assert len(store) == len(layouts) and store.sample_rate == SR and store.task is None
    assert [store.source_path(i) for i in range(len(store))] == sorted(layouts)
    for i in range(len(store)):
        x = store.track(i)
        assert x.dtype == np.float32 and abs(len(x) - SR) < 0.02 * SR
        middle = x[len(x) // 4 : 3 * len(x) // 4]  # codecs may overshoot at the edges
        assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    skipped = {r["path"]: r["reason"] for r in csv.DictReader(open(tmp_path / "store" / "skipped.csv"))}
    assert skipped == {
        "corrupt.mp3": "unreadable",
        "empty.wav": "empty",
        "silent.flac": "silent",
        "short.wav": "too_short",
        "sub/g.m4a": "unsupported",  # an audio format clmr cannot read is listed, not passed over
    }
    meta = json.loads((tmp_path / "store" / "meta.json").read_text())
    assert meta["skipped"] == {"empty": 1, "silent": 1, "too_short": 1, "unreadable": 1, "unsupported": 1}
    assert sum(meta["splits"].values()) == len(layouts)  # every track got a hash split


def test_store_api_and_int16_roundtrip(tmp_path, synthetic_music, labelled_store):
    store = labelled_store
    assert store.task == "multilabel"
    assert store.vocab == sorted(
        {t for p in synthetic_music.pieces for t in p.tags}
    )  # labels seen in the CSV
    i = 3
    source, _ = sf.read(synthetic_music.files[i], dtype="int16")
    np.testing.assert_array_equal(store.pcm(i), source)  # same rate: stored bit-exact
    np.testing.assert_allclose(store.track(i), source / 32768.0, atol=1e-7)
    np.testing.assert_allclose(store.crop(i, 100, 50), source[100:150] / 32768.0, atol=1e-7)
    tail = store.crop(i, store.length(i) - 10, 30)  # zero-padded past the end
    assert len(tail) == 30 and not tail[10:].any()
    assert store.labels(i) == synthetic_music.pieces[i].tags
    targets = store.targets([i])
    assert targets.shape == (1, len(store.vocab)) and targets.dtype == np.float32
    assert {store.vocab[c] for c in np.flatnonzero(targets[0])} == set(synthetic_music.pieces[i].tags)
    splits = {s: set(store.split_indices(s)) for s in ("train", "valid", "test")}
    assert sum(map(len, splits.values())) == len(store) and not splits["train"] & splits["test"]
    assert len(store.split_indices(None)) == len(store)
    with pytest.raises(StoreError, match="split"):
        store.split_indices("dev")
    genre = preprocess(
        synthetic_music.root,
        tmp_path / "g",
        labels=synthetic_music.genre_csv,
        sample_rate=SR,
        workers=0,
        min_length=1,
        progress=False,
    )
    assert genre.task == "multiclass"
    assert genre.targets([i]).dtype == np.int64
    assert genre.vocab[genre.targets([i])[0]] == synthetic_music.pieces[i].genre
    with pytest.raises(StoreError, match="meta.json"):
        Store(tmp_path)


def test_parallel_equals_serial_and_rerun_reuses(tmp_path, synthetic_music):
    kw = dict(
        labels=synthetic_music.tags_csv, sample_rate=SR, min_length=1, shard_bytes=40_000, progress=False
    )
    preprocess(synthetic_music.root, tmp_path / "serial", workers=0, **kw)
    preprocess(synthetic_music.root, tmp_path / "parallel", workers=2, **kw)
    _same_store(tmp_path / "serial", tmp_path / "parallel")
    store = Store(tmp_path / "serial")
    assert store.meta["shards"] > 3  # the budget split the tracks over several shards
    before = (tmp_path / "serial" / "index.parquet").stat().st_mtime_ns
    preprocess(synthetic_music.root, tmp_path / "serial", workers=0, **kw)  # complete: reused
    assert (tmp_path / "serial" / "index.parquet").stat().st_mtime_ns == before
    with pytest.raises(StoreError, match="other parameters"):
        preprocess(synthetic_music.root, tmp_path / "serial", workers=0, **{**kw, "sample_rate": 4000})


class _Interrupt(Exception):
    pass


def test_resume_after_injected_failure_equals_clean_run(tmp_path, synthetic_music):
    kw = dict(
        labels=synthetic_music.tags_csv, sample_rate=SR, min_length=1, shard_bytes=40_000, progress=False
    )
    preprocess(synthetic_music.root, tmp_path / "clean", workers=0, **kw)

    def fail_at_third(shard):
        if shard == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        preprocess(synthetic_music.root, tmp_path / "resumed", workers=0, on_shard=fail_at_third, **kw)
    with pytest.raises(StoreError, match="unfinished"):
        Store(tmp_path / "resumed")
    # a write torn by the interruption (atomic_path's temp name next to a file clmr recorded) is discarded
    (tmp_path / "resumed" / "shards" / ".00002.npy.0123456789ab.tmp").write_bytes(b"torn")
    written = []
    preprocess(synthetic_music.root, tmp_path / "resumed", workers=0, on_shard=written.append, **kw)
    assert written[0] == 3  # shards 0-2 were kept, not rewritten
    _same_store(tmp_path / "clean", tmp_path / "resumed")


def test_resume_after_sigkill_equals_clean_run(tmp_path, synthetic_music):
    kw = dict(
        labels=str(synthetic_music.tags_csv), sample_rate=SR, min_length=1, shard_bytes=40_000, progress=False
    )
    preprocess(synthetic_music.root, tmp_path / "clean", workers=0, **kw)
    script = (
        "import os, signal, sys\n"
        "import clmr.data.preprocessing\n"
        "from clmr.data import preprocess\n"
        "def kill(shard):\n"
        "    if shard == 1:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"preprocess({str(synthetic_music.root)!r}, {str(tmp_path / 'killed')!r}, workers=2, on_shard=kill, **{kw!r})\n"
    )
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-c", script], stdout=f, stderr=subprocess.STDOUT, timeout=60)
    assert proc.returncode == -9, log.read_text()
    assert (tmp_path / "killed" / ".partial").is_dir() and not (tmp_path / "killed" / "meta.json").exists()
    preprocess(synthetic_music.root, tmp_path / "killed", workers=0, **kw)
    _same_store(tmp_path / "clean", tmp_path / "killed")


@pytest.fixture()
def store(labelled_store):
    """The shared store (conftest), under the name the view tests use."""
    return labelled_store


def test_contrastive_pairs(store):
    view = ContrastivePairs(store, "train", crop_length=4000, seed=7)
    assert len(view) == len(store.split_indices("train"))
    x_i, x_j = view[0]
    assert x_i.shape == x_j.shape == (4000,) and x_i.dtype == torch.float32
    assert not torch.equal(x_i, x_j)  # two independent crops
    track = store.track(int(view.indices[0]))
    # each view is a contiguous slice of the track
    for x in (x_i, x_j):
        start = int(
            np.argmin(
                [np.abs(track[s : s + 50] - x[:50].numpy()).sum() for s in range(len(track) - 4000 + 1)]
            )
        )
        np.testing.assert_array_equal(track[start : start + 4000], x.numpy())
    again = ContrastivePairs(store, "train", crop_length=4000, seed=7)
    assert torch.equal(again[0][0], x_i)  # reproducible
    again.set_epoch(1)
    assert not torch.equal(again[0][0], x_i)  # new epoch, new crops
    long = ContrastivePairs(store, "train", crop_length=3 * SR)  # longer than the tracks: zero-padded
    assert long[0][0].shape == (3 * SR,) and not long[0][0][-SR:].any()


def test_views_in_dataloader_workers_are_reproducible(store):
    view = ContrastivePairs(store, None, crop_length=1000, seed=3)
    pickle.loads(pickle.dumps(view))  # picklable (memory maps reopen lazily)
    view.set_epoch(2)
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(view, batch_size=4, num_workers=workers)
        batches.append(torch.cat([torch.cat(pair) for pair in loader]))
    assert torch.equal(batches[0], batches[1])


def test_labelled_crops_and_track_crops(store):
    view = LabelledCrops(store, "valid", crop_length=2000)
    x, y = view[0]
    assert x.shape == (2000,) and y.dtype == torch.float32 and y.shape == (len(store.vocab),)
    i = int(view.indices[0])
    np.testing.assert_array_equal(y.numpy(), store.targets([i])[0])
    crops = track_crops(store, i, 700)
    assert crops.shape == (store.length(i) // 700, 700) and crops.dtype == np.float32
    np.testing.assert_array_equal(crops.ravel(), store.track(i)[: crops.size])
    one = track_crops(store, i, store.length(i) + 5)
    assert one.shape == (1, store.length(i) + 5) and not one[0, -5:].any()
    blocks = list(store.blocks(i, 1000))  # float32 blocks of the memory map, the last one short
    assert [len(b) for b in blocks[:-1]] == [1000] * (len(blocks) - 1) and 0 < len(blocks[-1]) <= 1000
    assert all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), store.track(i))


def test_cli_preprocess(tmp_path, synthetic_music):
    from clmr.cli import main

    out = tmp_path / "cli"
    code = main(
        [
            "preprocess",
            str(synthetic_music.root),
            "--out",
            str(out),
            "--labels",
            str(synthetic_music.genre_csv),
            "--sample-rate",
            "4000",
            "--workers",
            "0",
            "--min-length",
            "1",
            "--quiet",
        ]
    )
    assert code == 0 and Store(out).task == "multiclass" and Store(out).sample_rate == 4000
    assert main(["preprocess", str(tmp_path / "nothing"), "--out", str(out / "x"), "--quiet"]) == 2
    os.makedirs(tmp_path / "noaudio")
    assert main(["preprocess", str(tmp_path / "noaudio"), "--out", str(out / "y"), "--quiet"]) == 2


def test_bad_options_are_refused_before_anything_is_written(tmp_path, synthetic_music, capsys):
    from clmr.cli import build_parser, main

    src = str(synthetic_music.root)
    out = tmp_path / "s"
    for options, match in (
        (["--sample-rate", "0"], "sample_rate"),
        (["--workers", "-1"], "workers"),
        (["--min-length", "0"], "min_length"),
        (["--shard-mb", "0"], "shard-mb"),
    ):
        args = build_parser().parse_args(["preprocess", src, "--out", str(out), "--quiet", *options])
        with pytest.raises(StoreError, match=match):
            args.func(args)
        assert not out.exists()
    capsys.readouterr()
    assert main(["preprocess", src, "--out", str(out), "--sample-rate", "0", "--quiet"]) == 2
    assert "sample_rate must be" in capsys.readouterr().err  # a one-line message, no traceback
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        preprocess(src, tmp_path / "a-file", progress=False)


def test_default_min_length_follows_the_sample_rate(tmp_path, capsys):
    """The default keeps one reference crop's duration (59049 / 22050 s) at any store rate: 3 s tracks
    are kept at 8 kHz; explicit values still apply, and the refusal names --min-length."""
    from clmr.cli import main
    from clmr.data.preprocessing import default_min_length

    assert default_min_length(22050) == 59049 and default_min_length(8000) == 21424
    src = tmp_path / "music"
    src.mkdir()
    for k in range(3):
        sf.write(src / f"{k}.wav", _tone(3.0, SR, freq=200.0 + 50 * k), SR)
    sf.write(src / "short.wav", _tone(2.0, SR), SR)  # under 2.68 s: too short by default
    out = tmp_path / "store"
    assert main(["preprocess", str(src), "--out", str(out), "--sample-rate", "8000", "--quiet"]) == 0
    store = Store(out)
    assert len(store) == 3 and store.meta["params"]["min_length"] == 21424
    assert store.meta["skipped"] == {"too_short": 1}
    assert "--min-length" in (out / "skipped.csv").read_text()
    api = preprocess(src, tmp_path / "api", sample_rate=SR, workers=0, progress=False)
    assert len(api) == 3 and api.meta["params"]["min_length"] == 21424
    kept = preprocess(src, tmp_path / "explicit", sample_rate=SR, workers=0, min_length=100, progress=False)
    assert len(kept) == 4 and kept.meta["params"]["min_length"] == 100
    capsys.readouterr()
    options = ["--sample-rate", str(SR), "--min-length", str(4 * SR), "--quiet"]
    assert main(["preprocess", str(src), "--out", str(tmp_path / "x"), *options]) == 2
    err = capsys.readouterr().err
    assert "no track could be stored (4 too_short)" in err and "--min-length" in err


def test_a_store_made_with_the_old_default_min_length_is_still_found(tmp_path):
    """Stores begun when --min-length defaulted to 59049 samples at every rate: rerunning the same command
    (now defaulting to 21424 at 8 kHz) returns or resumes them instead of refusing other parameters."""
    src = tmp_path / "music"
    src.mkdir()
    for k in range(2):
        sf.write(src / f"{k}.wav", _tone(8.0, SR, freq=200.0 + 50 * k), SR)
    old = preprocess(src, tmp_path / "store", sample_rate=SR, workers=0, min_length=59049, progress=False)
    again = preprocess(src, tmp_path / "store", sample_rate=SR, workers=0, progress=False)
    assert len(again) == len(old) == 2 and again.meta["params"]["min_length"] == 59049
    other = preprocess(src, tmp_path / "store", sample_rate=SR, workers=0, min_length=59049, progress=False)
    assert len(other) == 2
    with pytest.raises(StoreError, match="other parameters"):  # an explicit other value is still refused
        preprocess(src, tmp_path / "store", sample_rate=SR, workers=0, min_length=1000, progress=False)


def test_complete_store_rerun_removes_a_leftover_partial(tmp_path, synthetic_music):
    """A run killed after meta.json was written, while .partial/ was being deleted: the rerun reuses the
    store and finishes the cleanup."""
    kw = dict(labels=synthetic_music.tags_csv, sample_rate=SR, workers=0, min_length=1, progress=False)
    out = tmp_path / "s"
    preprocess(synthetic_music.root, out, **kw)
    (out / ".partial").mkdir()
    (out / ".partial" / "00000.json").write_text("{}")
    store = preprocess(synthetic_music.root, out, **kw)
    assert len(store) == len(synthetic_music.files) and not (out / ".partial").exists()
