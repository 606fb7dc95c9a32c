"""Label fractions: the right number of tracks, stratified for classes, every tag covered while the
budget allows, deterministic for a seed."""

import numpy as np
import pytest

from clmr.evaluate import select_fraction
from clmr.evaluate.selection import subset_size


def test_stratified_counts_and_determinism():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    np.random.default_rng(0).shuffle(labels)
    pick = select_fraction(labels, 0.1, seed=3)
    assert len(pick) == 10
    assert np.bincount(labels[pick], minlength=3).tolist() == [5, 3, 2]
    assert np.array_equal(pick, select_fraction(labels, 0.1, seed=3))
    assert not np.array_equal(pick, select_fraction(labels, 0.1, seed=4))
    assert len(np.unique(pick)) == len(pick)


def test_stratified_rounding_and_small_classes():
    labels = np.repeat([0, 1, 2, 3], [97, 1, 1, 1])  # 1% of 100 is 1 track
    assert len(select_fraction(labels, 0.01, seed=0)) == 1
    pick = select_fraction(labels, 0.05, seed=0)  # 5 tracks: every class keeps one
    assert len(pick) == 5 and sorted(set(labels[pick])) == [0, 1, 2, 3]
    assert np.array_equal(select_fraction(labels, 1.0, seed=0), np.arange(100))
    with pytest.raises(ValueError):
        subset_size(10, 0.0)


def test_tag_subset_covers_every_tag():
    rng = np.random.default_rng(5)
    y = (rng.random((200, 8)) < 0.3).astype(np.float32)
    y[:, 7] = 0
    y[17, 7] = 1  # a tag with a single carrier
    pick = select_fraction(y, 0.05, seed=1)
    assert len(pick) == 10
    assert (y[pick].sum(0) > 0).all() and 17 in pick
    assert np.array_equal(pick, select_fraction(y, 0.05, seed=1))


@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_negative_seed_is_refused_before_any_work(tmp_path, capsys, command):
    """`--seed -1` used to fail with a numpy traceback after feature extraction; now it is refused first
    (before the checkpoint or the store is even opened)."""
    from clmr.cli import main
    from clmr.evaluate.inputs import EvaluationError, check_seeds

    argv = [command, "--checkpoint", str(tmp_path / "no.safetensors"), "--data", str(tmp_path / "none")]
    assert main([*argv, "--out", str(tmp_path / "out"), "--seed", "-1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--seed must be a whole number >= 0, got -1" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    check_seeds([0, 42, np.int64(3)])
    for bad in ([-1], [1, -5], [1.5], [True]):
        with pytest.raises(EvaluationError, match="--seed"):
            check_seeds(bad)


def _report(mode: str, fraction: float, used: int, pool: int) -> dict:
    config = {"head": "linear", "protocol": "p", "seeds": [42]}
    if mode == "evaluate":
        config["label_fractions"] = [fraction]
        extra = {"n_train_tracks": used, "by_fraction": {str(fraction): {"n_train_tracks": used}}}
    else:
        config |= {"label_fraction": fraction, "n_train_tracks": used}
        extra = {}
    return {
        "mode": mode,
        "task": "multiclass",
        "accuracy": 0.5,
        "f1_macro": 0.4,
        "checkpoint": {"path": "c.safetensors", "sha256": "0" * 64},
        "store": {"path": "s", "n_labels": 3, "splits": {"train": pool, "valid": 10, "test": 10}},
        "config": config,
        **extra,
    }


@pytest.mark.parametrize("mode", ["evaluate", "finetune"])
def test_report_says_how_much_labelled_data_the_head_used(mode, capsys):
    """A single label fraction < 1 used to leave no trace in report.md or on the console, and
    `--label-fraction 0.001` was silently rounded up to one track."""
    from clmr.evaluate.cli import print_summary
    from clmr.evaluate.report import markdown, training_data

    md = markdown(_report(mode, 0.25, 30, 120))
    assert "| label fraction / training tracks | label fraction 0.25: 30 of 120 training tracks |" in md
    assert "raised" not in md
    tiny = _report(mode, 0.001, 1, 120)
    line = training_data(tiny)
    assert line.startswith("label fraction 0.001: 1 of 120 training tracks") and "raised to 1" in line
    assert line in markdown(tiny)
    print_summary(tiny, "out")
    assert "0.001: 1 of 120 training tracks" in capsys.readouterr().out
    assert "label fraction 1: 120 of 120 training tracks" in markdown(_report(mode, 1.0, 120, 120))


def test_summary_prints_store_paths_with_markup_literally(capsys):
    from clmr.evaluate.cli import print_summary

    report = _report("evaluate", 1.0, 10, 10)
    report["store"]["path"] = "stores/[/]odd [bold]name"
    print_summary(report, "out[/]")
    out = capsys.readouterr().out
    assert "[/]odd" in out and "[bold]name" in out and "out[/]/report.md" in out
