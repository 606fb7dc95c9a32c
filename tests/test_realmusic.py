"""benchmarks/realmusic: the label/split writer on a fake extracted tree, the runner's plan and its table,
the scorer, the degraded queries, the ablation's variants and table."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1] / "benchmarks" / "realmusic"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"realmusic_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build, run, study = _load("build"), _load("run"), _load("study")
score, queries, ablate = _load("score"), _load("queries"), _load("ablate")
needs_sox = pytest.mark.skipif(not queries.available(), reason="the sox command line is not installed")


def _tree(root: Path) -> dict[str, list[Path]]:
    """A fake extracted package tree: music in subfolders, a zip archive, sound effects to ignore."""
    for world, n in (("forest", 7), ("snow", 6)):
        (root / "a/music" / world).mkdir(parents=True)
        for i in range(n):
            (root / "a/music" / world / f"t{i}.ogg").write_bytes(b"x")
    (root / "a/music/forest/readme.txt").write_text("not audio")
    (root / "b/sounds").mkdir(parents=True)
    (root / "b/sounds/boom.ogg").write_bytes(b"x")
    with zipfile.ZipFile(root / "b/music.pk3", "w") as z:
        for i in range(10):
            z.writestr(f"sound/cd/track{i}.ogg", b"y")
        z.writestr("sound/other/x.ogg", b"z")
    (root / "c").mkdir()
    (root / "c/only.ogg").write_bytes(b"x")
    return {
        "a": build.tracks_of(root, "a/music/*"),
        "b": build.tracks_of(root, "b/music.pk3:sound/cd"),
        "c": build.tracks_of(root, "c"),
    }


def test_tracks_of_finds_music_only(tmp_path):
    found = _tree(tmp_path)
    assert {k: len(v) for k, v in found.items()} == {"a": 13, "b": 10, "c": 1}
    assert all(p.suffix == ".ogg" for v in found.values() for p in v)
    assert build.tracks_of(tmp_path, "b/music.pk3:sound/cd") == found["b"]  # the unpacked archive is reused


def test_write_set_labels_splits_and_is_stable(tmp_path):
    found = _tree(tmp_path / "tree")
    rows = build.write_set(found, tmp_path / "out", seed=3, valid=0.15, test=0.25, min_tracks=5)
    assert {label for _, label, _ in rows} == {"a", "b"}  # c has 1 track < min_tracks
    counts = Counter((label, split) for _, label, split in rows)
    assert counts[("a", "test")] == 3 and counts[("a", "valid")] == 2 and counts[("a", "train")] == 8
    assert counts[("b", "test")] == 2 and counts[("b", "valid")] == 2 and counts[("b", "train")] == 6
    with open(tmp_path / "out/labels.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["path"], r["label"], r["split"]) for r in table] == rows
    assert all((tmp_path / "out/audio" / r["path"]).is_file() for r in table)
    assert len({r["path"] for r in table}) == 23  # same file name in two worlds stays two tracks
    again = build.write_set(found, tmp_path / "out2", seed=3, valid=0.15, test=0.25, min_tracks=5)
    other = build.write_set(found, tmp_path / "out3", seed=4, valid=0.15, test=0.25, min_tracks=5)
    assert again == rows and other != rows


def test_write_set_refuses_too_few_classes(tmp_path):
    found = _tree(tmp_path / "tree")
    with pytest.raises(build.BuildError, match="fewer than 2 classes"):
        build.write_set(found, tmp_path / "out", seed=0, valid=0.15, test=0.25, min_tracks=11)


def test_split_tracks_every_class_has_valid_and_test():
    rows = build.split_tracks(
        {"x": [f"x{i}" for i in range(3)], "y": [f"y{i}" for i in range(40)]}, 0, 0.15, 0.25
    )
    counts = Counter((label, split) for _, label, split in rows)
    assert counts == {("x", "test"): 1, ("x", "valid"): 1, ("x", "train"): 1,
                      ("y", "test"): 10, ("y", "valid"): 6, ("y", "train"): 24}  # fmt: skip


def test_commands_skip_finished_runs_and_evaluations(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    steps = run.commands(data, work, "tiny", 2, [0, 1], 8000)
    assert [s[0] for s in steps] == ["preprocess", "pretrain", "evaluate", "pretrain", "evaluate"]
    pretrain = steps[1]
    assert pretrain[pretrain.index("--trainer.max-time") + 1] == "00:00:02:00"
    assert pretrain[pretrain.index("--seed") + 1] == "0" and "--resume" in pretrain
    assert steps[2][steps[2].index("--baseline") + 1] == "random"
    long = run.commands(data, work, "paper", 150, [7], 22050)[1]
    assert (
        long[long.index("--trainer.max-time") + 1] == "00:02:30:00" and long[long.index("--seed") + 1] == "7"
    )
    tuned = run.commands(data, work, "tiny", 2, [0], 8000, ["loss.temperature=0.1", "model.n-blocks=8"])[1]
    assert tuned[-4:] == ["--loss.temperature", "0.1", "--model.n-blocks", "8"]
    (work / "run-seed0").mkdir(parents=True)
    (work / "run-seed0" / run.DONE).touch()
    (work / "eval-seed1").mkdir()
    (work / "eval-seed1/report.json").write_text("{}")
    assert [s[0] for s in run.commands(data, work, "tiny", 2, [0, 1], 8000)] == [
        "preprocess",
        "evaluate",
        "pretrain",
    ]


def _report(acc: float, f1: float, base: float) -> dict:
    part = {
        "accuracy": acc,
        "f1_macro": f1,
        "logistic_regression": {"accuracy": acc + 0.1, "f1_macro": f1 + 0.1},
    }
    baseline = {
        "accuracy": base,
        "f1_macro": base,
        "logistic_regression": {"accuracy": base, "f1_macro": 0.2},
    }
    return {"task": "multiclass", **part, "baseline": baseline}


def test_table_mean_and_std_over_seeds():
    lines = run.table([_report(0.5, 0.4, 0.3), _report(0.7, 0.6, 0.3)])
    assert lines[0] == "| probe | encoder | accuracy (%) | f1_macro (%) |"
    assert lines[2] == "| reference probe | pre-trained | 60.0 ± 14.1 | 50.0 ± 14.1 |"
    assert lines[3] == "| reference probe | random init | 30.0 ± 0.0 | 30.0 ± 0.0 |"
    assert lines[4] == "| reference probe | **gain** | +30.0 ± 14.1 | +20.0 ± 14.1 |"
    assert lines[5] == "| logistic regression | pre-trained | 70.0 ± 14.1 | 60.0 ± 14.1 |"
    assert lines[6] == "| logistic regression | random init | 30.0 ± 0.0 | 20.0 ± 0.0 |"
    assert lines[7] == "| logistic regression | **gain** | +40.0 ± 14.1 | +40.0 ± 14.1 |"
    assert (
        run.table([_report(0.5, 0.4, 0.3)])[2]
        == "| reference probe | pre-trained | 50.0 ± 0.0 | 40.0 ± 0.0 |"
    )


def test_fetch_reuses_a_matching_deb_and_refuses_a_bad_download(tmp_path, monkeypatch):
    good = b"package bytes"
    record = {
        "Version": "1.0-1",
        "Filename": "pool/main/p/pkg/pkg_1.0-1_all.deb",
        "SHA256": hashlib.sha256(good).hexdigest(),
    }
    monkeypatch.setattr(build, "_apt_record", lambda package: record)
    calls, archive = [], {"bytes": good}

    def download(cmd, cwd, capture_output):
        calls.append(cmd)
        (Path(cwd) / "pkg_1.0-1_all.deb").write_bytes(archive["bytes"])
        return subprocess.CompletedProcess(cmd, 0, b"", b"")

    monkeypatch.setattr(build.subprocess, "run", download)
    deb = build.fetch("pkg", tmp_path)
    assert deb.read_bytes() == good and calls == [["apt-get", "download", "pkg=1.0-1"]]
    assert build.fetch("pkg", tmp_path) == deb and len(calls) == 1  # cached and matching: reused
    deb.write_bytes(b"damaged")
    assert build.fetch("pkg", tmp_path).read_bytes() == good and len(calls) == 2  # mismatch: fetched again
    deb.write_bytes(b"damaged")
    archive["bytes"] = b"tampered"
    with pytest.raises(build.BuildError, match="SHA256 differs"):
        build.fetch("pkg", tmp_path)


def test_study_command_has_the_budget_and_the_variant_settings(tmp_path):
    command = study.pretrain_command(tmp_path / "store", tmp_path / "E", 7, study.VARIANTS["E"][1])
    assert command[:2] == ["pretrain", "--data"] and command[command.index("--preset") + 1] == "tiny"
    assert command[command.index("--trainer.max-time") + 1] == "00:00:07:00"
    assert command[-2:] == ["--augment.enabled", "false"]


def test_study_held_out_accuracy_separates_and_does_not_invent():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    separable = rng.normal(size=(60, 8)) + 4 * np.eye(8)[y]
    assert study.held_out_accuracy(separable[::2], y[::2], separable[1::2], y[1::2]) == 100.0
    noise = rng.normal(size=(60, 8))
    assert study.held_out_accuracy(noise[::2], y[::2], noise[1::2], y[1::2]) < 70.0


def test_study_song_features_average_evenly_spaced_crops(tiny_model, labelled_store):
    tracks = labelled_store.split_indices("train")[:2]
    features = study.song_features(tiny_model, labelled_store, tracks, crops=3)
    length = tiny_model.crop_length
    for row, i in zip(features, tracks, strict=True):
        starts = np.linspace(0, labelled_store.length(int(i)) - length, 3).astype(int)
        crops = np.stack([labelled_store.crop(int(i), int(s), length) for s in starts])
        with torch.no_grad():
            expected = tiny_model.embed(torch.from_numpy(crops)).mean(0).numpy()
        np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-5)


def test_drop_copies_keeps_one_file_per_content(tmp_path):
    files = {}
    for name, data in (("a1", b"same"), ("a2", b"other"), ("b1", b"same")):
        (tmp_path / name).write_bytes(data)
        files.setdefault(name[0], []).append(tmp_path / name)
    assert build.drop_copies(files) == {"a": [tmp_path / "a1", tmp_path / "a2"], "b": []}
    (tmp_path / "x").mkdir()
    for name in ("song.ogg", "song_fast.ogg", "test-1.ogg"):
        (tmp_path / "x" / name).write_bytes(name.encode())
    assert [f.name for f in build.tracks_of(tmp_path, "x", ("*_fast.ogg", "test-*"))] == ["song.ogg"]


def test_logmel_statistics_tell_a_low_tone_from_a_high_one():
    bank = score.mel_bank(8000)
    assert bank.shape == (score.N_MELS, score.N_FFT // 2 + 1) and bank.min() >= 0
    assert (np.diff(bank.argmax(axis=1)) >= 0).all()  # filters rise in frequency
    t = np.arange(8000) / 8000
    low, high = (score.logmel_stats(np.sin(2 * np.pi * f * t), 8000)[: score.N_MELS] for f in (200, 3000))
    assert low.argmax() < score.N_MELS // 3 < 2 * score.N_MELS // 3 < high.argmax()


def test_scorer_folds_are_shared_stratified_and_paired():
    y = np.repeat([0, 1, 2], 10)
    splits = score.folds(y, repeats=2, seed=0)
    assert len(splits) == 10
    again = score.folds(y, repeats=2, seed=0)
    assert all((a[1] == b[1]).all() for a, b in zip(splits, again, strict=True))
    assert all(np.bincount(y[test]).tolist() == [2, 2, 2] for _, test in splits)
    rng = np.random.default_rng(0)
    separable = rng.normal(size=(30, 6)) + 4 * np.eye(6)[y]
    good = score.fold_accuracies(separable, y, splits[:5])
    bad = score.fold_accuracies(rng.normal(size=(30, 6)), y, splits[:5])
    assert good.mean() > 95 and bad.mean() < 70
    assert score.paired(np.array([60.0, 70.0]), np.array([50.0, 50.0])) == "+15.0 ± 7.1"
    lines = score.table({"log-mel statistics": bad, "random init (seed 0)": bad, "model": good})
    assert lines[-1].startswith("| random init (mean of 1) |")
    model_row = next(line for line in lines if line.startswith("| model |"))
    assert f"{good.mean():.1f}" in model_row and score.paired(good, bad) in model_row


def test_retrieval_ranks_and_reciprocal_ranks():
    library = np.eye(4) + 1.0  # the shared offset is what subtracting the library mean removes
    assert queries.retrieval(library, library) == (100.0, 100.0)
    swapped = library[[1, 0, 2, 3]]  # queries 0 and 1 look like each other's track: rank 2 for both
    assert queries.retrieval(library, swapped) == (50.0, 75.0)


@needs_sox
def test_degradations_keep_length_and_do_what_they_say():
    rate = 8000
    t = np.arange(2 * rate) / rate
    x = (0.3 * np.sin(2 * np.pi * 150 * t) + 0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    x += (0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)

    def level(y, f):  # the tone's magnitude relative to the clean one's
        return np.abs(np.fft.rfft(y))[int(f * 2)] / np.abs(np.fft.rfft(x))[int(f * 2)]

    rng = np.random.default_rng(0)
    out = {name: queries.degrade(x, rate, name, rng) for name in queries.available()}
    assert all(y.shape == x.shape and y.dtype == np.float32 for y in out.values())
    assert level(out["telephone"], 150) < 0.05 and level(out["telephone"], 1000) > 0.8
    assert level(out["lowfi"], 3000) < 0.05 and level(out["lowfi"], 1000) > 0.8
    noise = out["noise"] - x
    assert 10 * np.log10(np.mean(x**2) / np.mean(noise**2)) == pytest.approx(queries.SNR_DB, abs=0.01)
    assert np.sqrt(np.mean(out["room"] ** 2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-3)
    assert np.abs(out["room"] - x).max() > 0.05
    with pytest.raises(queries.QueryError, match="unknown degradation"):
        queries.degrade(x, rate, "underwater", rng)


@needs_sox
def test_query_audio_is_cached_and_scored(tiny_model, labelled_store, tmp_path, monkeypatch):
    tracks = np.arange(len(labelled_store))
    names = ["clean", "telephone"]
    audio = queries.query_audio(labelled_store, tracks, 1.0, 0, tmp_path, names)
    assert audio["clean"].shape == (len(tracks), labelled_store.sample_rate)
    monkeypatch.setattr(queries, "degrade", lambda *a: pytest.fail("made again"))
    again = queries.query_audio(labelled_store, tracks, 1.0, 0, tmp_path, names)
    np.testing.assert_array_equal(again["telephone"], audio["telephone"])
    results = queries.score_model(tiny_model, labelled_store, again)
    assert set(results) == set(names)
    assert all(0 <= top1 <= mrr <= 100 for top1, mrr in results.values())
    assert results["clean"][1] > 100 / len(tracks)  # better than chance: an excerpt of its own track


def test_ablation_variants_are_whole_and_parse_as_config():
    from clmr.augment import Chain
    from clmr.config import load_config, set_value

    known = ablate.variants()
    assert len(known) == 4 + 2 * len(ablate.STEPS)
    for name, (_, settings) in known.items():
        config = load_config("cpu")
        for setting in settings:
            set_value(config, *setting.split("=", 1))
        chain = Chain.from_config(
            {"enabled": config.augment.enabled, **config.augment.chain_overrides()}, sample_rate=8000
        )
        on = {s for s, p in chain.probabilities().items() if p > 0}
        if name.startswith("only-"):
            assert on == {name[5:]}
        elif name.startswith("no-"):
            assert on == set(ablate.STEPS) - {name[3:]}
        elif name == "off":
            assert not on
    rel = known["chain-rel"][1]
    config = load_config("cpu")
    for setting in rel:
        set_value(config, *setting.split("=", 1))
    chain = Chain.from_config(config.augment.chain_overrides(), sample_rate=8000)
    assert chain.steps["filter"].lowpass_hz == pytest.approx((2200 * 8000 / 22050, 4000 * 8000 / 22050))


QUERIES = {"clean": [100.0, 100.0], "noise": [40.0, 50.0], "room": [20.0, 30.0]}
REFERENCES = {
    "genre": {"log-mel statistics": [50.0, 50.0], "random init (seed 0)": [55.0, 55.0]},
    "queries_random": [{"clean": [90.0, 90.0], "noise": [10.0, 20.0], "room": [10.0, 20.0]}],
}


def test_ablation_command_and_table(tmp_path):
    command = ablate.pretrain_command(tmp_path / "s", tmp_path / "r", 2, 90, ["augment.noise=0"])
    assert command[command.index("--trainer.max-time") + 1] == "00:01:30:00"
    assert command[command.index("--preset") + 1] == "cpu" and "--resume" in command
    assert command[-2:] == ["--augment.noise", "0"]
    assert ablate.score_path(tmp_path / "off-seed0", 5).name == "off-seed0.5min.json"
    rows = [
        {"variant": "off", "minutes": 5, "seed": s, "genre_folds": [60.0 + s, 70.0 + s], "queries": QUERIES}
        for s in (0, 1)
    ]
    lines = ablate.table(rows, REFERENCES)
    assert (
        lines[2]
        == "| off | 5 | 2 | 65.5 ± 0.7 | +10.5 ± 0.7 | 30.0 ± 0.0 | 40.0 ± 0.0 | +20.0 ± 0.0 | 52.8 ± 0.4 |"
    )
    assert lines[3].startswith("| random init (1 seeds) | 0 | | 55.0 | | 10.0 | 20.0 |")


def test_ablation_curves_are_seed_means_of_variants_with_two_budgets(tmp_path):
    def row(variant, minutes, seed, accuracy):
        return {
            "variant": variant,
            "minutes": minutes,
            "seed": seed,
            "genre_folds": [accuracy],
            "queries": QUERIES,
        }

    one = [row("chain", 5, 0, 50.0)]
    assert ablate.curve_points(one) == {}
    assert not ablate.plot_curves(one, REFERENCES, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    rows = [*one, row("off", 10, 1, 64.0), row("off", 5, 0, 60.0), row("off", 10, 0, 66.0)]
    assert ablate.curve_points(rows) == {"off": ([5, 10], [60.0, 65.0], [30.0, 30.0])}
    assert ablate.plot_curves(rows, REFERENCES, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
