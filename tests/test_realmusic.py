"""benchmarks/realmusic: the label/split writer on a fake extracted tree, the runner's plan and its table."""

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
