"""The reference's linear-evaluation protocol (one fixed crop per train/valid track, batch 48, plateau
and patience, the last epoch's head) beside clmr's, report fields, the paper's label-fraction count,
the logistic-regression check and its disagreement note, standardised features, and scoring a
model's own trained head."""

import json

import numpy as np
import pytest
import torch

from clmr.cli import main
from clmr.evaluate import evaluate, select_fraction
from clmr.evaluate import features as features_module
from clmr.evaluate import probe as probe_module
from clmr.evaluate.features import extract
from clmr.evaluate.inputs import EvaluationError
from clmr.evaluate.logreg import disagreements, logistic_check
from clmr.evaluate.probe import Recipe, feature_scaling, fold_scaling, train_fixed, train_head
from clmr.evaluate.report import markdown
from clmr.evaluate.suite import fixed_crop_starts
from clmr.models import CLMR, Head, SampleCNN, save_model

SR = 8000
QUICK = Recipe(max_epochs=4)


@pytest.fixture(scope="module")
def small(tmp_path_factory, make_store):
    """40 generated 1.5 s pieces at 8 kHz as a genre store and a tag store, and a random-init model."""
    root = tmp_path_factory.mktemp("protocol")
    genre = make_store(40, 1.5, 1, "genre", min_length=2187)
    tags = make_store(40, 1.5, 1, min_length=2187)
    torch.manual_seed(0)
    model = CLMR(SampleCNN(width=1 / 16, n_blocks=6), sample_rate=SR)
    return {"genre": genre, "tags": tags, "model": save_model(model, root / "init.safetensors")}


def _rows(n: int, seed: int, flip: bool = False):
    """Two-class features whose valid labels are the opposite of train's when `flip` (valid loss rises)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.standard_normal((n, 8)) + 2.0 * y[:, None]).astype(np.float32)
    return x, (1 - y if flip else y)


def test_reference_protocol_batches_plateau_patience_and_last_epoch_head(monkeypatch):
    x, y = _rows(100, 0)
    xv, yv = _rows(30, 1, flip=True)  # every epoch of learning makes the valid loss worse
    sizes = []
    real_step = probe_module._step
    monkeypatch.setattr(
        probe_module, "_step", lambda h, o, c, xb, yb: sizes.append(len(xb)) or real_step(h, o, c, xb, yb)
    )
    trained = train_fixed("linear", x, y, xv, yv, "multiclass", 2, seed=0)
    assert sizes[:3] == [48, 48, 4]  # batch 48 over the 100 fixed rows, shuffled every epoch
    assert len(sizes) == 3 * trained.epochs
    # early stopping: best at epoch 1, then 10 epochs without improvement
    assert trained.best_epoch == 1 and trained.epochs == 11
    lrs = [h["lr"] for h in trained.history]
    assert lrs[:7] == [1e-3] * 7 and lrs[7:] == pytest.approx([1e-4] * 4)  # plateau: factor 0.1 after 5
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(trained.head(torch.as_tensor(xv)), torch.as_tensor(yv))
    assert float(loss) == pytest.approx(trained.history[-1]["valid_loss"], rel=1e-5)  # the last head
    assert float(loss) > trained.best_valid_loss + 1e-3  # ... not the best one
    # clmr's protocol restores the best epoch's head instead
    from clmr.evaluate.features import SplitFeatures

    def split(a):
        return SplitFeatures(a, np.arange(len(a) + 1), np.arange(len(a)))

    best = train_head("linear", split(x), y, split(xv), yv, "multiclass", 2, seed=0)
    with torch.no_grad():
        best_loss = torch.nn.functional.cross_entropy(best.head(torch.as_tensor(xv)), torch.as_tensor(yv))
    assert float(best_loss) == pytest.approx(best.best_valid_loss, rel=1e-5)


def test_one_fixed_crop_per_train_and_valid_track_encoded_once(small, tmp_path, monkeypatch):
    calls = []
    real = features_module.extract
    monkeypatch.setattr(
        features_module, "extract", lambda *a, **k: calls.append((a[2], k.get("starts"))) or real(*a, **k)
    )
    report = evaluate(small["model"], small["genre"], tmp_path, progress=False, recipe=QUICK, seeds=[3])
    store = small["genre"]
    fixed = [(idx, starts) for idx, starts in calls if starts is not None]
    assert [len(idx) for idx, _ in fixed] == [
        report["store"]["splits"]["train"],
        report["store"]["splits"]["valid"],
    ]
    crop = 2187
    for idx, starts in fixed:  # uniform starts anywhere in the track, not on the crop grid
        assert (starts >= 0).all() and (starts <= np.asarray(store.lengths)[idx] - crop).all()
        assert (starts % crop != 0).any()
    # the same crops for the same seed, other crops for another seed
    model = CLMR(SampleCNN(width=1 / 16, n_blocks=6), sample_rate=SR)
    from clmr.evaluate.inputs import split_plan

    splits = split_plan(store)
    a, b = fixed_crop_starts(store, splits, crop, 3), fixed_crop_starts(store, splits, crop, 4)
    assert np.array_equal(a["train"], fixed[0][1]) and not np.array_equal(a["train"], b["train"])
    # a fixed crop's feature is the encoder's output on exactly that crop
    feats = extract(model, store, splits.train[:2], starts=a["train"][:2])
    with torch.no_grad():
        want = model.eval().embed(
            torch.as_tensor(store.crop(int(splits.train[0]), int(a["train"][0]), crop))[None]
        )
    np.testing.assert_allclose(feats.features[0], want[0].numpy(), rtol=1e-4, atol=1e-5)
    assert report["protocol"] == "reference" and report["runs"][0]["epochs"] <= QUICK.max_epochs
    # rerun: every feature comes from the cache, none is encoded again
    calls.clear()
    evaluate(small["model"], small["genre"], tmp_path, progress=False, recipe=QUICK, seeds=[3])
    assert calls == []


def test_reports_name_protocol_and_split_and_clmr_protocol_is_kept(small, tmp_path):
    ref = evaluate(small["model"], small["genre"], tmp_path / "ref", progress=False, recipe=QUICK)
    own = evaluate(
        small["model"],
        small["genre"],
        tmp_path / "clmr",
        progress=False,
        recipe=QUICK,
        protocol="clmr",
        standardize=True,
    )
    assert own["config"]["standardize"] and own["config"]["recipe"]["standardize"]
    assert "| head | linear (standardised features) |" in (tmp_path / "clmr" / "report.md").read_text()
    for out, report, protocol in ((tmp_path / "ref", ref, "reference"), (tmp_path / "clmr", own, "clmr")):
        assert report["protocol"] == protocol
        saved = json.loads((out / "report.json").read_text())
        assert saved["protocol"] == protocol and saved["split"] == small["genre"].meta["split"]
        md = (out / "report.md").read_text()
        assert f"| head training protocol | {protocol} |" in md and f"| split | {saved['split']} |" in md
    with pytest.raises(EvaluationError, match="unknown --protocol 'other'"):
        evaluate(small["model"], small["genre"], tmp_path / "x", progress=False, protocol="other")


def test_label_fraction_counts_the_papers_way():
    """1% of MTAT is 259 tracks in the paper: 1% of the 25,860 clips of Pons et al.'s split (18,706 of
    them training clips), not 1% of the training clips (187)."""
    rng = np.random.default_rng(0)
    tags = (rng.random((18_706, 50)) < 0.05).astype(np.float32)
    assert len(select_fraction(tags, 0.01, seed=1, pool=18_706 + 1_825 + 5_329)) == 259
    assert len(select_fraction(tags, 0.01, seed=1)) == 187
    classes = rng.integers(0, 10, 18_706)
    assert len(select_fraction(classes, 0.01, seed=1, pool=25_860)) == 259
    assert len(select_fraction(classes, 0.9, seed=1, pool=25_860)) == 18_706  # capped at the training set


def test_evaluate_label_fraction_of_the_dataset_or_of_train(small, tmp_path):
    splits = small["genre"].meta["splits"]
    total = splits["train"] + splits["valid"] + splits["test"]
    kw = dict(progress=False, recipe=QUICK, label_fractions=[0.2])
    report = evaluate(small["model"], small["genre"], tmp_path / "a", **kw)
    assert report["n_train_tracks"] == round(0.2 * total) and report["config"]["fraction_pool"] == total
    assert f"label fraction 0.2 of all {total} labelled tracks" in (tmp_path / "a" / "report.md").read_text()
    train_based = evaluate(small["model"], small["genre"], tmp_path / "b", fraction_of="train", **kw)
    assert train_based["n_train_tracks"] == round(0.2 * splits["train"])


def test_logistic_regression_check_ignores_feature_scale():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.standard_normal((300, 6)) + 1.5 * np.eye(3, 6)[y]
    args = (x[:200], y[:200], x[200:250], y[200:250])
    small_scale = logistic_check(*args, x[250:], y[250:], "multiclass", ["a", "b", "c"])
    scaled = (1e4 * x[:200], y[:200], 1e4 * x[200:250], y[200:250])
    large_scale = logistic_check(*scaled, 1e4 * x[250:], y[250:], "multiclass", ["a", "b", "c"])
    assert small_scale["accuracy"] > 0.6 and small_scale["accuracy"] == pytest.approx(large_scale["accuracy"])
    assert small_scale["C"] == large_scale["C"] and set(small_scale["valid_by_C"]) == {
        "0.001",
        "0.01",
        "0.1",
        "1.0",
        "10.0",
    }
    tags = (rng.random((300, 4)) < 0.3).astype(np.float32)
    tags[:200, 3] = 0  # a tag never on in training is predicted constant, not an error
    xt = rng.standard_normal((300, 6)) + 2.0 * tags @ np.ones((4, 6))
    res = logistic_check(
        xt[:200], tags[:200], xt[200:250], tags[200:250], xt[250:], tags[250:], "multilabel", list("abcd")
    )
    assert res["roc_auc_macro"] > 0.7


def test_disagreement_between_probe_and_logistic_regression_is_reported():
    def part(probe, lr):
        return {"accuracy": probe, "logistic_regression": {"accuracy": lr, "C": 1.0}}

    report = {"task": "multiclass", **part(0.60, 0.64), "baseline": part(0.229, 0.56)}
    notes = disagreements(report, [("checkpoint", report), ("random init", report["baseline"])])
    assert len(notes) == 2
    assert notes[0].startswith("random init: the probe (22.9) and the logistic-regression check (56.0)")
    assert "37.1 points under the probe but 8.0 under logistic regression" in notes[1]
    close = {"task": "multiclass", **part(0.60, 0.62), "baseline": part(0.40, 0.41)}
    assert disagreements(close, [("checkpoint", close), ("random init", close["baseline"])]) == []


def test_every_report_carries_the_check_for_model_and_baseline(small, tmp_path):
    report = evaluate(
        small["model"], small["tags"], tmp_path, progress=False, recipe=QUICK, baseline="random"
    )
    for part in (report, report["baseline"]):
        lr = part["logistic_regression"]
        assert 0.0 <= lr["roc_auc_macro"] <= 1.0 and lr["C"] in (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    md = (tmp_path / "report.md").read_text()
    assert "## Check: logistic regression on standardised song features (%)" in md
    assert isinstance(report["notes"], list)
    report["notes"] = ["the probe and the check disagree"]
    assert "**Note:** the probe and the check disagree." in markdown(report)


def test_standardised_head_is_folded_into_raw_feature_weights():
    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((50, 8)) * 300 + 40).astype(np.float32)
    mean, std = feature_scaling(rows)
    for kind in ("linear", "mlp"):
        head = Head(kind, 8, 3).eval()
        with torch.no_grad():
            want = head(torch.as_tensor((rows - mean) / std, dtype=torch.float32))
            got = fold_scaling(head, mean, std)(torch.as_tensor(rows))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # huge, offset features: plain Adam at lr 1e-3 learns little in a few epochs; standardised it does
    y = (rows[:, 0] > 40).astype(np.int64)
    plain = train_fixed("linear", rows, y, rows, y, "multiclass", 2, seed=0, recipe=Recipe(max_epochs=5))
    scaled = train_fixed(
        "linear", rows, y, rows, y, "multiclass", 2, seed=0, recipe=Recipe(max_epochs=5, standardize=True)
    )
    assert scaled.history[-1]["valid_loss"] < plain.history[-1]["valid_loss"]
    with torch.no_grad():  # the returned head takes raw features: its loss on them is the last valid loss
        raw_loss = torch.nn.functional.cross_entropy(scaled.head(torch.as_tensor(rows)), torch.as_tensor(y))
    assert float(raw_loss) == pytest.approx(scaled.history[-1]["valid_loss"], rel=1e-4)


def test_own_head_of_a_supervised_model_is_scored_song_level(small, tmp_path, capsys):
    store = small["genre"]
    names = list(store.vocab)
    torch.manual_seed(1)
    encoder = SampleCNN(width=1 / 16, n_blocks=6)
    head = Head("linear", encoder.out_dim, len(names))
    order = names[::-1]  # the model's outputs in another order: matched by name
    model = CLMR(encoder, head=head, sample_rate=SR, tags=order, task="multiclass")
    path = save_model(model, tmp_path / "supervised.safetensors")
    report = evaluate(path, store, tmp_path / "own", head="own", progress=False)
    assert report["protocol"] == "own head" and report["config"]["head"] == "own"
    assert not (tmp_path / "own" / "head.safetensors").exists()
    from clmr.evaluate.inputs import split_plan
    from clmr.evaluate.metrics import classification_metrics

    test = extract(model, store, split_plan(store).test)
    with torch.no_grad():
        probs = torch.softmax(model.head(torch.as_tensor(test.features)), dim=1).numpy()
    song = features_module.segment_mean(probs, test.offsets)[:, [order.index(n) for n in names]]
    want = classification_metrics(store.targets(split_plan(store).test), song, names)
    assert report["accuracy"] == pytest.approx(want["accuracy"])
    assert "logistic_regression" in report
    with pytest.raises(EvaluationError, match="takes no --baseline"):
        evaluate(path, store, tmp_path / "x", head="own", baseline="random", progress=False)
    with pytest.raises(EvaluationError, match="not the store's"):
        evaluate(path, small["tags"], tmp_path / "y", head="own", progress=False)
    bare = save_model(CLMR(encoder, sample_rate=SR), tmp_path / "bare.safetensors")
    with pytest.raises(EvaluationError, match="needs a model with a trained head"):
        evaluate(bare, store, tmp_path / "z", head="own", progress=False)
    argv = ["evaluate", "--checkpoint", str(path), "--data", str(store.path), "--head", "own"]
    assert main([*argv, "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "cli" / "report.json").read_text())["accuracy"] == report["accuracy"]
    assert f"protocol: own head; split: {store.meta['split']}" in capsys.readouterr().out
