"""`clmr.evaluate.evaluate` and `clmr evaluate` on generated music: song-level crops, the feature
cache, reports and plots, the saved head, sample-rate checks, and a briefly pre-trained tiny encoder
whose probe beats a random-initialised one."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from clmr import devices, load_model
from clmr.cli import main
from clmr.data import ContrastivePairs, Store, preprocess
from clmr.evaluate import Recipe, evaluate, plots
from clmr.evaluate import features as features_module
from clmr.evaluate.features import extract
from clmr.evaluate.inputs import EvaluationError
from clmr.losses import nt_xent
from clmr.models import CLMR, Projector, SampleCNN, save_model

SR = 8000
QUICK = Recipe(max_epochs=5)


def tiny_model(seed: int) -> CLMR:
    torch.manual_seed(seed)
    return CLMR(SampleCNN(width=1 / 16, n_blocks=6), Projector(32, 32, 16), sample_rate=SR)


def pretrain(model: CLMR, store: Store, steps: int, seed: int = 0) -> CLMR:
    """A few hundred NT-Xent steps on pairs of random crops (no augmentation): enough to beat random init."""
    pairs = ContrastivePairs(store, "train", model.crop_length, seed=seed)
    loader = torch.utils.data.DataLoader(
        pairs, batch_size=32, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed)
    )
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    step, epoch = 0, 0
    while step < steps:
        pairs.set_epoch(epoch)
        epoch += 1
        for a, b in loader:
            loss = nt_xent(model.project(model.embed(a)), model.project(model.embed(b)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    return model.eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_store):
    """200 generated 3 s pieces at 8 kHz as a tag store and a genre store, a random-init checkpoint
    and the same encoder after 800 contrastive steps."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add contention on shared cores
    root = tmp_path_factory.mktemp("eval")
    tags = make_store(200, 3.0, 0, min_length=729)
    genre = make_store(200, 3.0, 0, "genre", min_length=729)
    init = save_model(tiny_model(0), root / "init.safetensors")
    trained_model = pretrain(tiny_model(0), tags, steps=800)
    trained_model.meta = {"store": str(tags.path)}  # as `clmr pretrain` records it
    trained = save_model(trained_model, root / "trained.safetensors")
    yield {"root": root, "tags": tags, "genre": genre, "init": init, "trained": trained}
    torch.set_num_threads(threads)


def test_pretrained_probe_beats_random_init(world, tmp_path):
    report = evaluate(world["trained"], world["tags"], tmp_path, baseline="random", knn=5, progress=False)
    base = report["baseline"]
    assert report["roc_auc_macro"] > base["roc_auc_macro"] + 0.04
    assert report["pr_auc_macro"] > base["pr_auc_macro"] + 0.04
    assert 0.0 <= report["knn"]["roc_auc_macro"] <= 1.0  # k-NN is reported, not compared: too noisy here
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["baseline"]["roc_auc_macro"] == pytest.approx(base["roc_auc_macro"])
    assert saved["store"]["path"] == str(world["tags"].path) and saved["checkpoint"]["sha256"]
    md = (tmp_path / "report.md").read_text()
    assert "| random init (same architecture) |" in md and "| cosine 5-NN, random init (no training) |" in md
    for png in ("per_tag_scores.png", "embeddings_pca.png", "embeddings_tsne.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
        assert f"]({png})" in md  # report.md shows every figure
    table = md.split("## Per tag (%), best PR-AUC first")[1].split("\n\n")[1].splitlines()[2:]
    pr_auc = [float(row.split("|")[4]) for row in table if row.split("|")[4].strip() != "-"]
    assert len(pr_auc) >= 2 and pr_auc == sorted(pr_auc, reverse=True)
    tagger = load_model(world["trained"], head=tmp_path / "head.safetensors")
    assert tagger.tags == world["tags"].vocab and tagger.task == "multilabel"
    crops = torch.zeros(2, tagger.crop_length)
    assert tagger.classify(crops).shape == (2, len(world["tags"].vocab))


def test_per_tag_bars_are_sorted_best_first_in_both_panels(tmp_path, monkeypatch):
    drawn = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig.axes) or real_save(fig, path))
    per_tag = {
        "a": {"positives": 3, "roc_auc": 0.9, "pr_auc": 0.2},
        "b": {"positives": 2, "roc_auc": 0.6, "pr_auc": 0.7},
        "c": {"positives": 4, "roc_auc": 0.7, "pr_auc": 0.5},
        "silent": {"positives": 0},  # no test positives: no score, no bar
    }
    baseline = {t: {"roc_auc": 0.5, "pr_auc": 0.1} for t in per_tag}
    for base in (None, baseline):
        path = plots.per_tag_bars(per_tag, tmp_path / "bars.png", base)
        assert path.read_bytes()[:4] == b"\x89PNG"
        roc, pr = drawn.pop()
        for ax, best_first in ((roc, ["a", "c", "b"]), (pr, ["b", "c", "a"])):
            top_down = [label.get_text() for label in ax.get_yticklabels()][::-1]
            assert top_down == best_first
            ours = ax.containers[-1]  # the checkpoint's bars (drawn after the baseline's)
            assert [bar.get_width() for bar in ours][::-1] == sorted(
                (b.get_width() for b in ours), reverse=True
            )
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("n", [2, 3, 40])
def test_tsne_map_of_small_sets(tmp_path, n):
    rng = np.random.default_rng(0)
    labels = ["x", "y"] * (n // 2) + ["x"] * (n % 2)
    path = plots.tsne_scatter(rng.standard_normal((n, 16)), labels, tmp_path / "tsne.png", "t")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_tsne_maps_a_seeded_sample_of_large_sets(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "TSNE_MAX_TRACKS", 6)
    monkeypatch.setattr(plots, "_scatter", lambda xy, labels, path, title, axes: drawn.append((xy, title)))
    x = np.random.default_rng(0).standard_normal((20, 8))
    plots.tsne_scatter(x, ["a", "b"] * 10, tmp_path / "tsne.png", "t")
    xy, title = drawn[0]
    assert xy.shape == (6, 2) and "6 sampled tracks" in title


def test_track_of_five_and_a_half_crops_gives_five(tmp_path):
    model = tiny_model(1).eval()
    L = model.crop_length
    rng = np.random.default_rng(0)
    lengths = {"a.wav": int(5.5 * L), "b.wav": L, "c.wav": 2 * L + 5}
    for name, n in lengths.items():
        sf.write(tmp_path / name, 0.3 * rng.standard_normal(n), SR, subtype="PCM_16")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,split\n" + "".join(f"{n},x,test\n" for n in lengths))
    store = preprocess(
        tmp_path, tmp_path / "store", labels=csv, sample_rate=SR, workers=0, min_length=L, progress=False
    )
    order = [store.source_path(i) for i in range(len(store))]
    feats = extract(model, store, np.arange(len(store)), batch_size=4)  # batches cross track boundaries
    counts = dict(zip(order, feats.counts.tolist(), strict=True))
    assert counts == {"a.wav": 5, "b.wav": 1, "c.wav": 2}
    a = order.index("a.wav")
    pcm = store.track(a)
    with torch.no_grad():
        expected = model.embed(torch.as_tensor(pcm[: 5 * L].reshape(5, L)))
    got = feats.features[feats.offsets[a] : feats.offsets[a + 1]]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(feats.song_means()[a], expected.mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_feature_cache_reused_and_keyed_by_checkpoint(world, tmp_path, monkeypatch):
    calls = []
    real = features_module.extract
    monkeypatch.setattr(features_module, "extract", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = evaluate(world["init"], world["genre"], tmp_path, progress=False, recipe=QUICK)
    # grid crops of train, valid, test; the reference protocol's fixed crops of train and valid
    assert not first["features"]["reused"] and len(calls) == 5
    second = evaluate(world["init"], world["genre"], tmp_path, progress=False, recipe=QUICK)
    assert second["features"]["reused"] and len(calls) == 5
    assert second["accuracy"] == first["accuracy"]
    other = evaluate(world["trained"], world["genre"], tmp_path, progress=False, recipe=QUICK)
    assert not other["features"]["reused"] and len(calls) == 10
    assert len(list((tmp_path / "features").glob("features-*.npz"))) == 2
    assert len(list((tmp_path / "features").glob("crops-*.npz"))) == 2  # one per encoder and seed
    assert not list((tmp_path / "features").glob("*.tmp"))
    assert not list((tmp_path / "features").glob("*.parts"))  # parts are removed once the cache is whole


def test_a_damaged_feature_cache_is_recomputed_with_a_warning(world, tmp_path):
    first = evaluate(world["init"], world["genre"], tmp_path, progress=False, recipe=QUICK)
    (cache,) = (tmp_path / "features").glob("features-*.npz")
    cache.write_bytes(cache.read_bytes()[:1000])  # a disk fault: the file is there but cut short
    with pytest.warns(UserWarning, match="unreadable cached features"):
        again = evaluate(world["init"], world["genre"], tmp_path, progress=False, recipe=QUICK)
    assert not again["features"]["reused"] and again["accuracy"] == first["accuracy"]
    third = evaluate(world["init"], world["genre"], tmp_path, progress=False, recipe=QUICK)
    assert third["features"]["reused"]
    cache.write_bytes(b"")  # an empty file (numpy raises EOFError)
    with pytest.warns(UserWarning, match="unreadable cached features"):
        assert not evaluate(world["init"], world["genre"], tmp_path, progress=False, recipe=QUICK)[
            "features"
        ]["reused"]


def test_interrupted_extraction_resumes_from_saved_parts(world, tmp_path, monkeypatch):
    monkeypatch.setattr(features_module, "RESUME_TRACKS", 40)
    real = features_module.extract
    before, after = [], []  # tracks encoded per call, before and after the interruption

    def interrupted_at_the_fourth_part(*args, **kwargs):
        if len(before) == 3:
            raise KeyboardInterrupt
        before.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(features_module, "extract", interrupted_at_the_fourth_part)
    with pytest.raises(KeyboardInterrupt):
        evaluate(world["init"], world["tags"], tmp_path / "a", progress=False, recipe=QUICK)
    assert len(list((tmp_path / "a" / "features").rglob("*.npz"))) == 3  # three parts saved
    monkeypatch.setattr(features_module, "extract", lambda *a, **k: after.append(len(a[2])) or real(*a, **k))
    resumed = evaluate(world["init"], world["tags"], tmp_path / "a", progress=False, recipe=QUICK)
    splits = resumed["store"]["splits"]
    grid, fixed = splits["train"] + splits["valid"] + splits["test"], splits["train"] + splits["valid"]
    assert sum(before) + sum(after) == grid + fixed  # no track encoded twice
    monkeypatch.setattr(features_module, "extract", real)
    whole = evaluate(world["init"], world["tags"], tmp_path / "b", progress=False, recipe=QUICK)
    assert resumed["roc_auc_macro"] == whole["roc_auc_macro"]


def test_single_label_report_fractions_and_seeds(world, tmp_path):
    report = evaluate(
        world["trained"],
        world["genre"],
        tmp_path,
        head="marble",
        label_fractions=(0.1, 1.0),
        seeds=(1, 2),
        knn=3,
        baseline="random",
        progress=False,
        recipe=QUICK,
        train_crops=2,
    )
    assert report["task"] == "multiclass" and 0.0 <= report["accuracy"] <= 1.0
    assert set(report["by_fraction"]) == {"1.0", "0.1"}
    splits = report["store"]["splits"]  # the paper's count: 10% of every labelled track, from train
    assert report["by_fraction"]["0.1"]["n_train_tracks"] == round(0.1 * sum(splits.values()))
    assert len(report["runs"]) == 4 and "accuracy_std" in report["by_fraction"]["1.0"]
    head_meta = load_model(tmp_path / "head.safetensors").meta  # the saved head is the first run's
    first = report["runs"][0]
    assert (
        (head_meta["label_fraction"], head_meta["seed"])
        == (first["label_fraction"], first["seed"])
        == (1.0, 1)
    )
    assert head_meta["accuracy"] == first["accuracy"] and Path(head_meta["labels_from"]).is_absolute()
    assert np.asarray(report["confusion_matrix"]).shape == (5, 5)
    assert (tmp_path / "confusion_matrix.png").exists()
    md = (tmp_path / "report.md").read_text()
    # transfer: pre-trained on the tag store, evaluated on the genre store; the report names both
    assert report["checkpoint"]["pretrained_on"] == str(world["tags"].path)
    assert report["store"]["path"] == str(world["genre"].path)
    assert f"| pre-trained on | {world['tags'].path} |" in md and f"`{world['genre'].path}`" in md
    assert "| 0.1 | checkpoint |" in md and "| 0.1 | random init |" in md  # fractions with the baseline
    assert (
        report["baseline"]["by_fraction"]["0.1"]["n_train_tracks"]
        == report["by_fraction"]["0.1"]["n_train_tracks"]
    )
    assert not list(tmp_path.glob(".*.tmp"))  # reports and plots are written through temp files


def test_sample_rate_mismatch_is_a_clear_error(world, tmp_path):
    model = tiny_model(2)
    model.sample_rate = 16000
    path = save_model(model, tmp_path / "sr16k.safetensors")
    with pytest.raises(EvaluationError, match="8000 Hz.*16000 Hz"):
        evaluate(path, world["tags"], tmp_path / "out", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_fractions": [0.0]}, "label-fraction must be in"),
        ({"train_crops": 0}, "--train-crops must be at least 1"),
        ({"knn": 0}, "--knn must be at least 1"),
        ({"head": "huge"}, "unknown head 'huge'"),
        ({"device": "bogus"}, "--device 'bogus': unknown device name"),
        ({"device": "cuda:99"}, "CUDA device"),
    ],
)
def test_bad_options_fail_before_any_work(world, tmp_path, kwargs, message):
    out = tmp_path / "out"
    with pytest.raises(EvaluationError, match=message):
        evaluate(world["init"], world["tags"], out, progress=False, **kwargs)
    assert not out.exists()


def test_out_that_is_a_file_is_a_clear_error(world, tmp_path):
    taken = tmp_path / "report"
    taken.write_text("not a folder")
    with pytest.raises(EvaluationError, match="is a file"):
        evaluate(world["init"], world["tags"], taken, progress=False)


def test_tracks_shorter_than_the_crop_are_a_clear_error(world, tmp_path):
    model = CLMR(SampleCNN(width=1 / 16, n_blocks=9), sample_rate=SR)  # 3^10 samples > 3 s at 8 kHz
    path = save_model(model, tmp_path / "long_crop.safetensors")
    with pytest.raises(EvaluationError, match="shorter than the model's crop of 59049 samples"):
        evaluate(path, world["tags"], tmp_path / "out", progress=False)


def test_cli_evaluate(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli"
    args = [
        "evaluate",
        "--checkpoint",
        str(world["init"]),
        "--data",
        str(world["genre"].path),
        "--out",
        str(out),
    ]
    resolved = []  # --device defaults to auto, resolved once for the whole run
    monkeypatch.setattr(devices, "auto_device", lambda: resolved.append(1) or torch.device("cpu"))
    assert main([*args, "--max-epochs", "3", "--no-progress", "--head", "mlp", "--knn", "1000"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "accuracy" in report and report["config"]["head"] == "mlp"
    assert report["config"]["device"] == "cpu" and resolved == [1]
    # K above the number of training tracks: all of them vote, and the report says so
    assert report["knn"]["k"] == report["store"]["splits"]["train"] and report["knn"]["k_asked"] == 1000
    assert "report.md" in capsys.readouterr().out
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "missing.safetensors"),
                "--data",
                str(world["genre"].path),
            ]
        )
        == 2
    )
