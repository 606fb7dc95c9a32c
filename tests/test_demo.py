"""`clmr demo` end to end at a toy size: every step runs and the result names what a next step needs."""

import time
import types

import pytest
import torch

import clmr
from clmr.demo import format_summary, run_demo


@pytest.fixture
def one_thread():
    """Tiny convolutions run fastest on one thread, and the CPU may be shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_run_demo_small(tmp_path, capsys, one_thread, monkeypatch):
    overrides = {"model.width": 1 / 16, "model.n_blocks": 5, "batch_size": 4, "trainer.max_epochs": 2}
    # the demo is epoch-bound: a clock that jumps an hour at every reading (a very busy machine) still
    # gets every epoch trained, so the result does not depend on the machine's load
    from clmr.train import engine

    hours = iter(range(0, 10**9, 3600))
    slow = types.SimpleNamespace(monotonic=lambda: float(next(hours)), perf_counter=time.perf_counter)
    monkeypatch.setattr(engine, "time", slow)
    summary = run_demo(tmp_path / "demo", tracks=20, seconds=1.5, overrides=overrides, progress=False)
    monkeypatch.undo()
    assert summary["store"] == tmp_path / "demo" / "store" and summary["run_dir"] == tmp_path / "demo" / "run"
    assert (summary["music"] / "tags.csv").is_file()
    assert summary["epochs"] == 2 and summary["steps"] > 0 and summary["probe_metric"] == "roc_auc"
    assert 0.0 <= summary["probe_last"] <= 1.0 and summary["train_loss_last"] > 0
    model = clmr.load_model(summary["model"])
    assert model.sample_rate == 8000 and model.meta["dataset"] == "folder"
    text = format_summary(summary)
    assert "online probe" in text and str(summary["model"]) in text
    out = capsys.readouterr().out
    assert "[1/4]" in out and "[4/4]" in out
    assert 0.0 <= summary["test_roc_auc"] <= 1.0 and 0.0 <= summary["random_roc_auc"] <= 1.0
    assert (summary["eval_dir"] / "report.md").is_file() and "test probe" in text
    table = text.splitlines()[-6:-3]  # the result table: pre-trained vs random-initialised encoder
    assert table[0].endswith("ROC-AUC   PR-AUC") and f"{summary['test_roc_auc']:.3f}" in table[1]
    assert f"{summary['random_pr_auc']:.3f}" in table[2] and "% of" in text.splitlines()[0]
    mine = [tmp_path / "demo" / "run" / "notes.txt", tmp_path / "demo" / "run" / "checkpoints" / "keep.txt"]
    for path in mine:  # the user's own files in the run folder
        path.write_text("mine")
    again = run_demo(tmp_path / "demo", tracks=20, seconds=1.5, overrides=overrides, progress=False)
    assert again["steps"] == summary["steps"]  # a second demo replaces its previous run ...
    assert all(path.read_text() == "mine" for path in mine)  # ... and deletes only what a run wrote
    other = run_demo(tmp_path / "demo", tracks=24, seconds=1.5, overrides=overrides, progress=False)
    assert len(clmr.data.Store(other["store"])) == 24  # ... and its store, made with other settings


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tracks", "5"], "at least 50 pieces"),
        (["--seconds", "0.5"], "at least one crop long"),
        (["--max-epochs", "0"], "--max-epochs must be at least 1"),
    ],
)
def test_cli_refuses_options_it_cannot_run_before_any_work(tmp_path, capsys, argv, message):
    from clmr.cli import main

    assert main(["demo", "--out", str(tmp_path / "demo"), *argv]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "demo").exists()
