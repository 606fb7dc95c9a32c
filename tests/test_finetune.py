"""`clmr.evaluate.finetune` / `clmr finetune`: end-to-end training with a lower encoder learning rate,
the same song-level test and report, and a saved model that tags with its store's vocabulary."""

import json

import numpy as np
import pytest
import torch

from clmr import devices, load_model
from clmr.cli import main
from clmr.evaluate import finetune
from clmr.evaluate.inputs import EvaluationError
from clmr.models import CLMR, Projector, SampleCNN, save_model

SR = 8000


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_store):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ft")
    store = make_store(40, 1.0, 3, min_length=729)
    torch.manual_seed(0)
    ckpt = save_model(
        CLMR(SampleCNN(width=1 / 16, n_blocks=5), Projector(32, 32, 16), sample_rate=SR),
        root / "c.safetensors",
    )
    yield {"store": store, "ckpt": ckpt}
    torch.set_num_threads(threads)


def _conv_weights(model: CLMR) -> list[torch.Tensor]:
    return [m.weight.detach().clone() for m in model.encoder.modules() if isinstance(m, torch.nn.Conv1d)]


def test_finetune_trains_encoder_and_writes_report(world, tmp_path):
    report = finetune(
        world["ckpt"], world["store"], tmp_path, max_epochs=3, baseline="random", progress=False
    )
    assert report["mode"] == "finetune" and 0.0 <= report["roc_auc_macro"] <= 1.0
    assert "pr_auc_macro" in report["baseline"] and report["training"]["epochs"] == 3
    md = (tmp_path / "report.md").read_text()
    assert "| fine-tuned checkpoint |" in md and "| random init, trained end to end |" in md
    assert json.loads((tmp_path / "report.json").read_text())["pr_auc_macro"] == pytest.approx(
        report["pr_auc_macro"]
    )
    tuned = load_model(tmp_path / "model.safetensors")
    assert tuned.tags == world["store"].vocab and tuned.head is not None
    before = _conv_weights(load_model(world["ckpt"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, _conv_weights(tuned), strict=True))


def test_zero_encoder_lr_keeps_encoder_weights(world, tmp_path):
    finetune(world["ckpt"], world["store"], tmp_path, max_epochs=2, encoder_lr_factor=0.0, progress=False)
    before = _conv_weights(load_model(world["ckpt"]))
    after = _conv_weights(load_model(tmp_path / "model.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_cli_finetune(world, tmp_path, monkeypatch):
    out = tmp_path / "cli"
    args = [
        "finetune",
        "--checkpoint",
        str(world["ckpt"]),
        "--data",
        str(world["store"].path),
        "--out",
        str(out),
    ]
    resolved = []  # --device defaults to auto, resolved once for the whole run
    monkeypatch.setattr(devices, "auto_device", lambda: resolved.append(1) or torch.device("cpu"))
    flags = ["--max-epochs", "1", "--no-progress", "--label-fraction", "0.5", "--fraction-of", "train"]
    assert main([*args, *flags]) == 0
    config = json.loads((out / "report.json").read_text())["config"]
    assert config["n_train_tracks"] == round(0.5 * len(world["store"].split_indices("train")))
    assert config["device"] == "cpu" and resolved == [1]


def test_label_fraction_is_of_the_whole_labelled_set_by_default_as_in_evaluate(world, tmp_path):
    from clmr.evaluate.selection import select_fraction

    store = world["store"]
    splits = {s: store.split_indices(s) for s in ("train", "valid", "test")}
    total = sum(map(len, splits.values()))
    report = finetune(world["ckpt"], store, tmp_path, max_epochs=1, label_fraction=0.2, progress=False)
    config = report["config"]
    assert config["fraction_of"] == "dataset" and config["fraction_pool"] == total
    assert config["n_train_tracks"] == round(0.2 * total) != round(0.2 * len(splits["train"]))
    # the same tracks `evaluate` would pick for this fraction and seed
    picked = select_fraction(store.targets(splits["train"]), 0.2, config["seed"], pool=total)
    assert len(picked) == config["n_train_tracks"]
    assert f"label fraction 0.2 of all {total} labelled tracks" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 1}, "--batch-size must be at least 2"),
        ({"label_fraction": 0.01}, "leaves 1 training track"),
        ({"num_workers": -1}, "--workers must be >= 0"),
        ({"device": "bogus"}, "--device 'bogus'"),
        ({"fraction_of": "songs"}, "unknown --fraction-of 'songs'"),
        ({"baseline": "supervised"}, "unknown baseline"),
    ],
)
def test_bad_options_fail_before_any_work(world, tmp_path, kwargs, message):
    out = tmp_path / "out"
    with pytest.raises(EvaluationError, match=message):
        finetune(world["ckpt"], world["store"], out, max_epochs=1, progress=False, **kwargs)
    assert not out.exists()


def test_interrupted_finetune_resumes_to_the_uninterrupted_result(world, tmp_path, monkeypatch):
    from clmr.train.engine import Engine

    kw = dict(max_epochs=4, patience=10, baseline="random", head="marble", progress=False)  # dropout
    whole = finetune(world["ckpt"], world["store"], tmp_path / "whole", **kw)
    real, calls = Engine.validate, []

    def interrupted_in_the_baselines_second_epoch(self, loader):
        calls.append(1)
        if len(calls) == 6:  # 4 epochs of the checkpoint run, then the baseline's 2nd
            raise KeyboardInterrupt
        return real(self, loader)

    monkeypatch.setattr(Engine, "validate", interrupted_in_the_baselines_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        finetune(world["ckpt"], world["store"], tmp_path / "cut", **kw)
    assert len(list((tmp_path / "cut").glob(".finetune-*"))) == 2
    monkeypatch.setattr(Engine, "validate", lambda self, loader: calls.append(1) or real(self, loader))
    resumed = finetune(world["ckpt"], world["store"], tmp_path / "cut", **kw)
    assert len(calls) == 6 + 3  # the baseline's epochs 2-4 only: the checkpoint run was finished
    assert resumed["history"] == whole["history"]
    assert resumed["roc_auc_macro"] == whole["roc_auc_macro"]
    assert resumed["baseline"]["roc_auc_macro"] == whole["baseline"]["roc_auc_macro"]
    assert not list((tmp_path / "cut").glob(".finetune-*"))  # removed once the report is written


def test_a_damaged_finetune_state_starts_over_with_a_warning(tmp_path):
    from clmr.evaluate.finetuning import _readable_state

    state = tmp_path / "last.ckpt"
    torch.save({"epoch": 1, "step": 3, "model": {"w": torch.zeros(100)}}, state)
    assert _readable_state(state) == state
    state.write_bytes(state.read_bytes()[:50])
    with pytest.warns(UserWarning, match="unreadable fine-tuning state"):
        assert _readable_state(state) is None
    assert _readable_state(tmp_path / "missing.ckpt") is None


def test_finetune_valid_crops_are_the_song_level_crops_extract_cuts(world):
    """The validation loss is over every consecutive crop of the valid tracks, as `extract` cuts them."""
    from clmr.evaluate.finetuning import SongCrops
    from clmr.songs import track_crops

    store = world["store"]
    valid = store.split_indices("valid")
    crops = SongCrops(store, valid, 729)
    expected = np.concatenate([track_crops(store, int(i), 729) for i in valid])
    assert len(crops) == len(expected)
    got = np.stack([crops[k][0].numpy() for k in range(len(crops))])
    np.testing.assert_array_equal(got, expected)
    assert torch.equal(crops[len(crops) - 1][1], torch.as_tensor(store.targets(valid[-1:])[0]))
