"""Pre-training end to end on a tiny generated store: the loss falls, checkpoints and the exported model
appear, a kill -9 run resumes to the same weights, DDP on two CPU processes, clear errors up front."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import clmr
from clmr.config import ConfigError, load_config
from clmr.errors import ClmrError, TrainingError
from clmr.train import NonFiniteLossError, RunDirError, pretrain
from clmr.train.data import EpochSampler, StoreMismatchError

RATE = 8000
TINY = {
    "model.width": 1 / 16,
    "model.n_blocks": 5,  # 729-sample crops
    "batch_size": 4,
    "trainer.accelerator": "cpu",
    "trainer.devices": 1,
    "trainer.num_workers": 0,
    "trainer.checkpoint_every": 5,
}
TINY_ARGS = ["--preset", "tiny", "--model.width", "0.0625", "--model.n-blocks", "5", "--batch-size", "4"]
TINY_ARGS += ["--accelerator", "cpu", "--num-workers", "0"]


@pytest.fixture(scope="module")
def store(make_store):
    """24 generated pieces of 2 s at 8 kHz with tags, preprocessed (about 19 train / 2-3 valid tracks)."""
    return make_store(24, 2.0, 0, min_length=729).path


@pytest.fixture(scope="module")
def genre_store(make_store):
    """The same pieces with one genre label each (single-label)."""
    return make_store(24, 2.0, 0, "genre", min_length=729).path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions run fastest on one thread, and the CPU may be shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(**overrides):
    return load_config("tiny", overrides={**TINY, **overrides})


def test_tiny_run_learns_checkpoints_and_exports_the_same_encoder(store, tmp_path):
    # without augmentation a 60-step run learns reliably (crops of one piece still differ); the
    # augmented path is covered by the resume and DDP tests
    c = config(**{"trainer.max_epochs": 12, "augment.enabled": False})
    result = pretrain(store, tmp_path / "run", c, progress=False)
    losses = [row["train/loss"] for row in result["history"]]
    assert len(losses) == 12 and result["steps"] == 12 * (
        len(clmr.data.Store(store).split_indices("train")) // 4
    )
    valid = [row["valid/loss"] for row in result["history"]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses
    assert np.mean(valid[-3:]) < np.mean(valid[:3]) - 0.3, valid
    assert "valid/loss" in result["history"][-1] and "valid/probe_roc_auc" in result["history"][-1]
    assert result["pairs_per_s"] > 0 and 0.0 <= result["data_wait_share"] < 1.0  # over the whole run
    names = {p.name for p in (tmp_path / "run" / "checkpoints").iterdir()}
    assert {"last.ckpt", "best.ckpt", "epoch0004.ckpt", "epoch0009.ckpt"} <= names
    assert (tmp_path / "run" / "config.yaml").is_file() and (
        tmp_path / "run" / "logs" / "csv" / "metrics.csv"
    ).is_file()

    model = clmr.load_model(tmp_path / "run")
    assert model.sample_rate == RATE and model.crop_length == 729 and model.projector is not None
    assert model.meta["step"] == result["steps"] and model.meta["store"] == str(store.resolve())
    assert model.meta["valid_loss"] is not None
    trained = result["module"].eval()
    x = torch.randn(5, 729)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), trained.encoder(x))
        torch.testing.assert_close(model.project(model.embed(x)), trained.projector(trained.encoder(x)))


def _cli(run_dir, *extra):
    return [
        sys.executable,
        "-m",
        "clmr",
        "pretrain",
        "--data",
        "STORE",
        "--out",
        str(run_dir),
        *TINY_ARGS,
        *extra,
    ]


def test_kill_9_then_resume_gives_the_uninterrupted_weights(store, tmp_path):
    extra = [
        "--max-epochs",
        "14",
        "--checkpoint-every",
        "4",
        "--augment.pitch",
        "0.6",
        "--augment.reverb",
        "0.6",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = lambda run, *more: [a if a != "STORE" else str(store) for a in _cli(run, *extra, *more)]  # noqa: E731
    whole = subprocess.Popen(
        cmd(tmp_path / "whole"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    killed = subprocess.Popen(
        cmd(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    marker = tmp_path / "killed" / "checkpoints" / "epoch0003.ckpt"
    deadline = time.monotonic() + 120
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    last = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    partial = last["step"]
    assert whole.wait() == 0, whole.stderr.read().decode()[-3000:]
    final = clmr.load_model(tmp_path / "whole").meta["step"]
    assert partial < final

    resumed = subprocess.run(cmd(tmp_path / "killed", "--resume"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert clmr.load_model(tmp_path / "killed").meta["step"] == final
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the CSV log was flushed at each checkpoint before the kill, and the resumed run appended to it
    with open(tmp_path / "killed" / "logs" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    epoch_rows = [int(r["epoch"]) for r in rows if r.get("train/loss_epoch")]
    step_rows = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    # rows logged after the last checkpoint are dropped on resume, not repeated
    assert len(epoch_rows) == len(set(epoch_rows)) and len(step_rows) == len(set(step_rows))
    assert sorted(epoch_rows) == list(range(14))
    assert {"lr/pg1", "perf/pairs_per_s", "perf/data_wait_s", "valid/loss"} <= set(rows[0])

    # resuming below the epochs already done is refused before the run's config.yaml is touched
    saved = (tmp_path / "whole" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="past --max-epochs 5"):
        pretrain(store, tmp_path / "whole", config(**{"trainer.max_epochs": 5}), resume=True)
    # and so is resuming with another model (the checkpoint could not be loaded into it)
    wider = config(**{"trainer.max_epochs": 20, "model.width": 0.125})
    with pytest.raises(ConfigError, match="the run's model differs .*'encoder.sequential.0.0.bias'"):
        pretrain(store, tmp_path / "whole", wider, resume=True)
    assert (tmp_path / "whole" / "config.yaml").read_text() == saved


def test_ddp_on_two_cpu_processes(store, tmp_path):
    cmd = [
        a if a != "STORE" else str(store)
        for a in _cli(tmp_path / "ddp", "--devices", "2", "--strategy", "ddp")
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([*cmd, "--max-epochs", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    n_train = len(clmr.data.Store(store).split_indices("train"))
    steps_per_epoch = -(-n_train // 2) // 4  # each rank gets ceil(n/2) tracks, full batches of 4
    assert clmr.load_model(tmp_path / "ddp").meta["step"] == 2 * steps_per_epoch
    assert out.stdout.count("steps,") == 1  # one summary line, from rank 0
    assert out.stdout.count("epoch 2/2 done") == 1  # not a terminal: plain progress lines, rank 0 only
    assert out.stdout.count("% in training steps") == 1
    assert out.stderr.count(f"pretrain: {2 * steps_per_epoch}/{2 * steps_per_epoch} steps, epoch 2/2") == 1
    assert "num_workers" not in out.stderr  # no framework warning a user cannot act on


def test_epoch_sampler_is_keyed_by_seed_and_epoch_and_shards_evenly():
    ranks = [EpochSampler(10, seed=3, shuffle=True, rank=r, world=3) for r in range(3)]
    for s in ranks:
        s.set_epoch(5)
    keys = [list(s) for s in ranks]
    assert {len(k) for k in keys} == {4} and all(e == 5 for k in keys for _, e in k)
    assert set(i for k in keys for i, _ in k) == set(range(10))
    again = EpochSampler(10, seed=3, shuffle=True, rank=1, world=3)
    again.set_epoch(5)
    assert list(again) == keys[1]
    again.set_epoch(6)
    assert list(again) != keys[1]
    # a run stopped after 2 keys of epoch 5 resumes after them; the pass after that is whole again
    again.set_epoch(5)
    again.resume(5, 2)
    assert list(again) == keys[1][2:] and list(again) == keys[1]
    again.resume(4, 2)  # for another epoch: no effect
    assert list(again) == keys[1]


def test_problems_are_reported_before_training(store, tmp_path):
    with pytest.raises(StoreMismatchError, match="clmr preprocess .*--sample-rate 22050"):
        pretrain(store, tmp_path / "a", config(sample_rate=22050))
    with pytest.raises(StoreMismatchError, match="shorter than the crop of 19683"):
        pretrain(store, tmp_path / "b", config(**{"model.n_blocks": 8}))
    with pytest.raises(StoreMismatchError, match="larger than the .* training tracks"):
        pretrain(store, tmp_path / "c", config(batch_size=64))
    with pytest.raises(RunDirError, match="missing.ckpt: no checkpoint to resume"):
        pretrain(store, tmp_path / "d", config(), resume=tmp_path / "missing.ckpt")
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="is a file"):
        pretrain(store, tmp_path / "file", config())
    with pytest.raises(ConfigError, match="sync_batchnorm"):
        pretrain(store, tmp_path / "e", config(**{"trainer.sync_batchnorm": True}))
    with pytest.raises(
        ConfigError, match="Lightning cannot run with accelerator='cpu', devices=1, strategy='bogus'"
    ):
        pretrain(store, tmp_path / "f", config(**{"trainer.strategy": "bogus"}))
    assert not (tmp_path / "a").exists() and not (tmp_path / "c" / "checkpoints").exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(store, tmp_path, capsys):
    class Poison:
        def on_train_epoch_start(self, engine):
            if engine.state["epoch"] == 2:
                with torch.no_grad():
                    engine.module.encoder.sequential[0][0].weight.fill_(float("nan"))

    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"at step \d+ \(epoch 2\)") as err:
        pretrain(store, run, config(**{"trainer.max_epochs": 5}), hooks=[Poison()], progress=False)
    assert isinstance(err.value, TrainingError) and not isinstance(err.value, ValueError)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and all(torch.isfinite(v).all() for v in last["model"].values())
    with pytest.raises(RunDirError, match="--resume"):
        pretrain(store, run, config())


def test_ctrl_c_stops_cleanly_and_the_run_resumes(store, tmp_path):
    """Ctrl-C reaches the caller as KeyboardInterrupt (the CLI prints how to resume and exits 130), and
    the last checkpoint continues the run."""

    class CtrlC:
        def on_train_epoch_start(self, engine):
            if engine.state["epoch"] == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(store, tmp_path / "run", config(**{"trainer.max_epochs": 2}), hooks=[CtrlC()])
    last = str(tmp_path / "run" / "checkpoints" / "last.ckpt")  # --resume PATH
    result = pretrain(
        store, tmp_path / "run", config(**{"trainer.max_epochs": 2}), resume=last, progress=False
    )
    assert result["epochs"] == 2 and [row["epoch"] for row in result["history"]] == [1]


def test_supervised_baseline_exports_encoder_and_tagging_head(store, tmp_path):
    result = pretrain(
        store, tmp_path / "sup", config(supervised=True, **{"trainer.max_epochs": 3}), progress=False
    )
    model = clmr.load_model(tmp_path / "sup")
    s = clmr.data.Store(store)
    assert model.tags == s.vocab and model.task == "multilabel" and model.meta["objective"] == "supervised"
    assert model.projector is None and model.head is not None
    trained = result["module"].eval()
    x = torch.randn(3, 729)
    with torch.no_grad():
        torch.testing.assert_close(model.classify(x), trained.encoder(x))
    assert "valid/probe_roc_auc" in result["history"][-1]
    # the reference's recipe (clmr/modules/supervised_learning.py): SGD with Nesterov momentum, weight
    # decay 1e-6, ReduceLROnPlateau(factor 0.2, patience 5), early stopping with patience 20
    saved = torch.load(tmp_path / "sup" / "checkpoints" / "last.ckpt", weights_only=True)
    (group,) = saved["optimizer"]["param_groups"]
    assert group["nesterov"] and (group["momentum"], group["weight_decay"]) == (0.9, 1e-6)
    assert "momentum_buffer" in saved["optimizer"]["state"][0]
    assert (saved["scheduler"]["factor"], saved["scheduler"]["patience"]) == (0.2, 5)
    assert saved["stopping"]["best_epoch"] >= 0 and saved["epoch"] == 3


def test_model_init_and_negatives_options_reach_the_module(monkeypatch):
    from clmr.train import modules

    def largest(module):
        conv = module.encoder.sequential[1][0]
        return float(conv.weight.detach().abs().max()) * (conv.in_channels * conv.kernel_size[0]) ** 0.5

    torch.manual_seed(0)
    # PyTorch's default init is bounded by 1/sqrt(fan_in), kaiming-uniform by sqrt(6/fan_in)
    assert (
        largest(modules.ContrastiveModule(config()))
        <= 1.0
        < largest(modules.ContrastiveModule(config(**{"model.init": "kaiming"})))
    )
    gathered = []
    monkeypatch.setattr(modules, "nt_xent", lambda *a, gather: gathered.append(gather) or torch.zeros(()))
    x = torch.randn(2, 729)
    for negatives in ("global", "local"):
        modules.ContrastiveModule(config(**{"loss.negatives": negatives}))._contrastive(x, x)
    assert gathered == [True, False]


def test_single_label_store_trains_with_cross_entropy_and_reports_accuracy(genre_store, tmp_path):
    sup = pretrain(
        genre_store, tmp_path / "sup", config(supervised=True, **{"trainer.max_epochs": 2}), progress=False
    )
    model = clmr.load_model(tmp_path / "sup")
    assert model.task == "multiclass" and model.tags == clmr.data.Store(genre_store).vocab
    assert 0.0 <= sup["history"][-1]["valid/probe_accuracy"] <= 1.0
    simclr = pretrain(genre_store, tmp_path / "simclr", config(**{"trainer.max_epochs": 1}), progress=False)
    assert 0.0 <= simclr["history"][-1]["valid/probe_accuracy"] <= 1.0  # the online probe on classes


def test_cli_ctrl_c_prints_how_to_resume(monkeypatch, capsys, tmp_path):
    import clmr.train.run
    from clmr.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(clmr.train.run, "pretrain", interrupted)
    run = tmp_path / "run"
    assert main(["pretrain", "--data", "STORE", "--out", str(run), "--preset", "tiny"]) == 130
    assert f"clmr pretrain --data STORE --out {run} --resume" in capsys.readouterr().err


def test_resumed_csv_log_drops_rows_logged_after_the_checkpoint(tmp_path):
    from clmr.train.logs import RunLog

    log = tmp_path / "csv" / "metrics.csv"
    log.parent.mkdir()
    log.write_text("epoch,step,train/loss_step\n" + "".join(f"0,{s},1.0\n" for s in range(0, 50, 10)))
    resumed = RunLog(tmp_path, resume_step=20)  # opening the log trims it
    with open(log) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [0, 10, 20]
    resumed.log({"train/loss_step": 2.0, "valid/loss": 3.0}, 30)  # a new key widens the header
    resumed.close()
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 10, 20, 30] and rows[-1]["valid/loss"] == "3.0"
    RunLog(tmp_path, resume_step=None).close()  # a fresh run starts a new log
    assert not log.exists()


def test_checkpoint_every_epoch_keeps_last_periodic_and_best(store, tmp_path):
    # the "last" and "every 1 epoch" checkpoints once had one Lightning state key: a RuntimeError
    run = tmp_path / "run"
    pretrain(store, run, config(**{"trainer.max_epochs": 1, "trainer.checkpoint_every": 1}), progress=False)
    ckpts = run / "checkpoints"
    assert {p.name for p in ckpts.iterdir()} == {"last.ckpt", "best.ckpt", "epoch0000.ckpt"}
    saved = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert {"model", "optimizer", "epoch", "step", "batch", "clmr_config"} <= set(saved)
    assert (saved["epoch"], saved["batch"]) == (1, 0)
    result = pretrain(
        store, run, config(**{"trainer.max_epochs": 2, "trainer.checkpoint_every": 1}), resume=True
    )
    assert result["epochs"] == 2
    assert {p.name for p in ckpts.iterdir()} == {"last.ckpt", "best.ckpt", "epoch0000.ckpt", "epoch0001.ckpt"}


def test_mid_epoch_stops_resume_to_the_uninterrupted_steps_and_weights(store, tmp_path):
    """A stop inside an epoch (--max-steps here, --max-time alike) resumes inside it: the epoch's other
    batches are trained, in the uninterrupted order, and the epoch is not counted twice."""
    n_batches = len(clmr.data.Store(store).split_indices("train")) // 4
    assert n_batches >= 3
    whole = pretrain(store, tmp_path / "whole", config(**{"trainer.max_epochs": 3}), progress=False)
    assert whole["steps"] == 3 * n_batches
    run = tmp_path / "run"
    steps = []
    # stop in epoch 0, then (resuming with --max-steps, as a SLURM slot may) in epoch 1, then finish
    epochs_reported = []
    for max_steps, resume in ((2, None), (n_batches + 2, True), (-1, True)):
        c = config(**{"trainer.max_epochs": 3, "trainer.max_steps": max_steps, "trainer.checkpoint_every": 1})
        result = pretrain(store, run, c, resume=resume, progress=False)
        steps.append(result["steps"])
        epochs_reported += [row["epoch"] for row in result["history"]]
        if max_steps == 2:  # the stopped epoch's data position depends on the batch layout: kept on resume
            with pytest.raises(ConfigError, match="stopped in the middle of epoch 0 with batch_size 4"):
                pretrain(store, run, config(batch_size=2, **{"trainer.max_epochs": 3}), resume=True)
    assert steps == [2, n_batches + 2, 3 * n_batches]
    assert epochs_reported == [0, 1, 2]  # an epoch is reported once, when it is finished
    # the periodic checkpoints are of whole epochs: none at a stop, none twice ("epoch0000-v1.ckpt")
    names = {p.name for p in (run / "checkpoints").iterdir()}
    assert names == {"last.ckpt", "best.ckpt", "epoch0000.ckpt", "epoch0001.ckpt", "epoch0002.ckpt"}
    # and a run stopped at an epoch's end, resumed with --max-steps (Lightning once ran an empty epoch
    # there and trained the next one on the keys of the epoch after it)
    ended = tmp_path / "ended"
    pretrain(store, ended, config(**{"trainer.max_epochs": 1}), progress=False)
    c = config(**{"trainer.max_epochs": 3, "trainer.max_steps": 3 * n_batches})
    result = pretrain(store, ended, c, resume=True, progress=False)
    assert result["steps"] == 3 * n_batches and [row["epoch"] for row in result["history"]] == [1, 2]
    a = load_file(tmp_path / "whole" / "model.safetensors")
    for other in (run, ended):
        b = load_file(other / "model.safetensors")
        for key in a:
            assert torch.equal(a[key], b[key]), (other.name, key)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 3 and last["step"] == 3 * n_batches and last["batch"] == 0


def test_supervised_stops_mid_epoch_do_not_count_as_epochs_without_improvement(store, tmp_path):
    """Early stopping looks at validations only: a stop before the first one must not fail, and stops
    mid-epoch must not use up patience."""
    n_batches = len(clmr.data.Store(store).split_indices("train")) // 4
    run = tmp_path / "sup"
    for max_steps, resume in ((1, None), (2, True), (-1, True)):
        c = config(supervised=True, **{"trainer.max_epochs": 2, "trainer.max_steps": max_steps})
        result = pretrain(store, run, c, resume=resume, progress=False)
    assert result["steps"] == 2 * n_batches
    pretrain(store, tmp_path / "whole", config(supervised=True, **{"trainer.max_epochs": 2}), progress=False)
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)  # dropout masks are keyed by step: same weights
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["stopping"]
    assert saved["stale"] <= 1  # one validation after the best at most, not one per stop


def test_a_checkpoint_with_pickled_objects_is_refused_not_unpickled(store, tmp_path):
    import argparse

    path = tmp_path / "pickled.ckpt"
    torch.save({"epoch": 0, "step": 1, "hparams": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(RunDirError, match="pickled.ckpt: holds pickled Python objects"):
        pretrain(store, tmp_path / "run", config(), resume=path)


def _ticking_clock(monkeypatch, tick: float = 1.0) -> None:
    """The engine's clock (`clmr.train.limits`) advances `tick` seconds at every reading."""
    import types

    from clmr.train import limits

    now = [0.0]

    def clock() -> float:
        now[0] += tick
        return now[0]

    monkeypatch.setattr(limits, "time", types.SimpleNamespace(monotonic=clock))


def test_max_time_is_a_budget_for_the_whole_run_across_resumes(store, tmp_path, monkeypatch, capsys):
    """Checkpoints record the time spent, so an interrupted --max-time run resumes with the time it had
    left; once spent, a resume says so and trains nothing, and a larger --max-time continues the run.
    The first slot of a job array runs the same command (--resume without a checkpoint starts the run)."""
    _ticking_clock(monkeypatch)
    budget = {"batch_size": 2, "trainer.max_epochs": 1000, "trainer.max_time": "00:00:00:30"}
    whole = pretrain(store, tmp_path / "whole", config(**budget), progress=False)
    assert 10 < whole["steps"] < 1000
    run = tmp_path / "run"
    first = pretrain(store, run, config(**budget, **{"trainer.max_steps": 8}), resume=True, progress=False)
    assert "no checkpoint to resume yet: starting the run" in capsys.readouterr().err
    spent = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["time_spent"]
    assert first["steps"] == 8 and 0 < spent < 30
    second = pretrain(store, run, config(**budget), resume=True, progress=False)
    # a fresh budget would train about whole["steps"] more: the resumed run stops where the whole one did
    assert whole["steps"] - 3 <= second["steps"] <= whole["steps"] + 3, (whole["steps"], second["steps"])
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["time_spent"] >= 30
    capsys.readouterr()
    third = pretrain(store, run, config(**budget), resume=True)
    assert third["steps"] == second["steps"]
    assert (
        "pretrain: nothing to train: the run has reached --max-time 00:00:00:30 (" in capsys.readouterr().err
    )
    longer = pretrain(store, run, config(**{**budget, "trainer.max_time": "00:00:00:40"}), resume=True)
    assert longer["steps"] > second["steps"] + 3


def test_resume_from_a_corrupt_checkpoint_is_a_one_line_error(store, tmp_path, capsys):
    from clmr.cli import main

    good = tmp_path / "good.ckpt"
    torch.save({"epoch": 0, "step": 1, "model": {"w": torch.zeros(1000)}}, good)
    data = good.read_bytes()
    broken = {
        "truncated.ckpt": data[: len(data) // 2],
        "empty.ckpt": b"",
        "damaged.ckpt": data[:200] + bytes(255 - b for b in data[200:2000]) + data[2000:],
    }
    for name, content in broken.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(RunDirError, match=f"{name}: not a readable checkpoint"):
            pretrain(store, tmp_path / "run", config(), resume=path)
    weights = tmp_path / "weights.pt"  # a readable torch file, but not a training state
    torch.save({"encoder.w": torch.zeros(3)}, weights)
    with pytest.raises(
        RunDirError, match="weights.pt: not a checkpoint of `clmr pretrain` \\(no 'epoch' entry\\)"
    ):
        pretrain(store, tmp_path / "run", config(), resume=weights)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(broken["truncated.ckpt"])
    assert main(["pretrain", "--data", str(store), "--out", str(run), "--preset", "tiny", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "last.ckpt: not a readable checkpoint" in err, err


def _trainer_run(run_dir, model):
    """A run directory as clmr wrote it before its own engine (Lightning's Trainer): checkpoints with the
    Trainer's entries and the model's clmr config, and a config.yaml with a key that has moved since."""
    import json

    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("preset: tiny\nbatch_size: 4\ntemperature: 0.5\n")
    ckpt = {
        "epoch": 1,
        "global_step": 4,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": model.state_dict(),
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 1}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"dirpath": str(run_dir / "checkpoints")}},
        "optimizer_states": [],
        "lr_schedulers": [],
        "clmr_config": json.dumps(model.config(), default=str),
    }
    for name in ("last.ckpt", "best.ckpt"):
        torch.save(ckpt, run_dir / "checkpoints" / name)
    return run_dir


def test_a_run_directory_of_the_trainer_based_code_is_one_error_saying_how_to_load_it(
    tmp_path, tiny_model, capsys
):
    from clmr.cli import main

    run = _trainer_run(tmp_path / "old run", tiny_model)
    saved = (run / "config.yaml").read_text()
    best = run / "checkpoints" / "best.ckpt"
    for extra, named in (
        (("--resume",), "last.ckpt"),
        ((), "last.ckpt"),
        (("--resume", str(best)), "best.ckpt"),
    ):
        args = ["pretrain", "--data", str(tmp_path / "store"), "--out", str(run), "--preset", "tiny", *extra]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"{named}: written by Lightning's Trainer (pytorch-lightning 2.6.6" in err, err
        assert "cannot be resumed" in err and f"`clmr info '{run}/checkpoints/{named}'`" in err
    with pytest.raises(RunDirError, match="last.ckpt: written by Lightning's Trainer .*`clmr.load_model"):
        pretrain(tmp_path / "store", run, config(), resume=True)
    assert (run / "config.yaml").read_text() == saved  # nothing of the old run is touched
    loaded = clmr.load_model(run / "checkpoints" / "last.ckpt")  # what the message says works
    x = torch.randn(2, 729)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), tiny_model.embed(x))


def validated_steps(run_dir) -> list[int]:
    with open(run_dir / "logs" / "csv" / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("valid/loss")]


def test_val_every_steps_validates_inside_epochs_and_a_kill_9_resumes_to_the_same_history(store, tmp_path):
    """--val-every Nsteps validates every N steps, inside epochs too (and at the last epoch's end). A
    run killed (kill -9) between two validations, or stopped mid-epoch, resumes to the uninterrupted
    validations and weights: the plateau schedule the validations drive makes the weights depend on
    them."""
    n = len(clmr.data.Store(store).split_indices("train")) // 4
    every = {"trainer.val_every": f"{n + 1}steps", "trainer.max_epochs": 5, "optim.plateau_patience": 0}
    every |= {"trainer.save_every": "100"}  # last.ckpt at a validation with a lowest loss, and the stop
    whole = pretrain(store, tmp_path / "whole", config(supervised=True, **every), progress=False)
    expected = sorted(set(range(n + 1, 5 * n + 1, n + 1)) | {5 * n})
    assert [row["step"] for row in whole["validations"]] == expected and any(s % n for s in expected)
    assert [row["epoch"] for row in whole["validations"]] == [(s - 1) // n for s in expected]
    assert validated_steps(tmp_path / "whole") == expected
    assert "valid/loss" not in whole["history"][0] and whole["history"][0]["train/loss"] > 0
    kill_at = expected[1] + 2  # between the second validation and the third
    assert kill_at < expected[2]
    script = (
        "import os, signal, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from clmr.config import load_config\n"
        "from clmr.train import pretrain\n"
        "class Kill:\n"
        "    def on_train_batch_end(self, engine, batch):\n"
        f"        if engine.state['step'] == {kill_at}:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        f"config = load_config('tiny', overrides={ {**TINY, 'supervised': True, **every}!r})\n"
        "pretrain(sys.argv[1], sys.argv[2], config, progress=False, hooks=[Kill()])\n"
    )
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(store), str(killed)], env=env, timeout=300)
    assert done.returncode == -signal.SIGKILL
    restart = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["step"]
    assert restart < kill_at
    stopped = tmp_path / "stopped"
    for max_steps, resume in ((expected[0] + 2, None), (-1, True)):  # a stop mid-epoch, after a validation
        c = config(supervised=True, **every, **{"trainer.max_steps": max_steps})
        pretrain(store, stopped, c, resume=resume, progress=False)
    resumed = pretrain(store, killed, config(supervised=True, **every), resume=True, progress=False)
    assert [row["step"] for row in resumed["validations"]] == [s for s in expected if s > restart]
    history = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)["validations"]
    a = load_file(tmp_path / "whole" / "model.safetensors")
    for run in (killed, stopped):
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["validations"] == history
        assert validated_steps(run) == expected  # the log's rows after the checkpoint are not repeated
        b = load_file(run / "model.safetensors")
        assert all(torch.equal(a[key], b[key]) for key in a), run.name
    assert clmr.load_model(killed).meta["valid_loss"] == history[-1]["valid/loss"]


@pytest.mark.parametrize(("tick", "expected"), [(0.0, [2]), (3600.0, [0, 1, 2])])
def test_val_every_time_follows_the_clock(store, tmp_path, monkeypatch, tick, expected):
    """--val-every 1h: a frozen clock validates only at the last epoch, an hour per reading every epoch."""
    _ticking_clock(monkeypatch, tick)
    c = config(**{"trainer.max_epochs": 3, "trainer.val_every": "1h"})
    result = pretrain(store, tmp_path / "run", c, progress=False)
    assert [row["epoch"] for row in result["history"] if "valid/loss" in row] == expected


def test_progress_lines_and_the_share_of_time_in_training(store, tmp_path, monkeypatch, capsys):
    """Not on a terminal: plain progress lines on stderr with step, epoch, loss, pairs/s and ETA; the
    summary says which share of the wall time went to training steps and which to validation."""
    from clmr import progress
    from clmr.train.engine import Engine

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    validate = Engine.validate

    def slow_validate(self, loader):
        time.sleep(0.5)
        return validate(self, loader)

    monkeypatch.setattr(Engine, "validate", slow_validate)
    result = pretrain(store, tmp_path / "run", config(**{"trainer.max_epochs": 2}))
    captured = capsys.readouterr()
    total = result["steps"]
    lines = [line for line in captured.err.splitlines() if line.startswith("pretrain: ")]
    assert len(lines) == total and lines[0].startswith(f"pretrain: 1/{total} steps, epoch 1/2, loss ")
    assert "pairs/s, ETA " in lines[0] and lines[0].endswith(" (max-epochs)")  # the limit that ends it
    assert lines[-1].startswith(f"pretrain: {total}/{total} steps, epoch 2/2")
    assert captured.out.count("/2 done  ") == 2
    assert result["valid_share"] * result["wall_s"] >= 1.0  # two validations of at least 0.5 s each
    assert 0 < result["train_share"] and result["train_share"] + result["valid_share"] <= 1.0
    assert result["overall_pairs_per_s"] < result["pairs_per_s"]


def test_default_workers_leave_a_core_to_training(monkeypatch):
    from clmr.train.data import default_workers

    for cores, workers in ((1, 0), (2, 1), (3, 2), (64, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert default_workers() == workers


def test_a_second_pretrain_into_a_held_run_directory_is_refused(store, tmp_path):
    """Rank 0 holds the run directory's lock while it writes it; another process is refused at once."""
    from clmr.files import folder_lock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with folder_lock(run_dir, "run directory"), pytest.raises(ClmrError, match="another clmr process"):
        pretrain(store, run_dir, config())
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "config.yaml").exists()


def _recorded_saves(monkeypatch) -> list[tuple[int, int]]:
    """(epochs finished, step) at each checkpoint the engine writes."""
    from clmr.train.engine import Engine

    saves, save = [], Engine.save

    def recording(self, *also):
        saves.append((self.state["epoch"], self.state["step"]))
        return save(self, *also)

    monkeypatch.setattr(Engine, "save", recording)
    return saves


def test_save_every_epochs_writes_fewer_checkpoints_and_always_the_last(store, tmp_path, monkeypatch):
    """--save-every 2: last.ckpt at epochs 2 and 4 and at the end (5), not after every epoch (the cost
    that grows with the run's history); a run stopped mid-epoch still saves where it stopped."""
    n = len(clmr.data.Store(store).split_indices("train")) // 4
    saves = _recorded_saves(monkeypatch)
    quiet = {"trainer.val_every": "100", "trainer.checkpoint_every": None, "trainer.max_epochs": 5}
    pretrain(store, tmp_path / "a", config(**quiet, **{"trainer.save_every": "2"}), progress=False)
    assert saves == [(2, 2 * n), (4, 4 * n), (5, 5 * n)]
    saves.clear()
    pretrain(store, tmp_path / "b", config(**quiet), progress=False)  # the default: every epoch
    assert [epoch for epoch, _ in saves] == [1, 2, 3, 4, 5]
    saves.clear()
    stop = {"trainer.save_every": "1h", "trainer.max_steps": n + 1}
    result = pretrain(store, tmp_path / "c", config(**quiet, **stop), progress=False)
    assert saves == [(1, n + 1)] and result["steps"] == n + 1
    assert clmr.load_model(tmp_path / "c").meta["step"] == n + 1
