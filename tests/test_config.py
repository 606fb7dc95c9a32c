"""Config: paper defaults, presets, YAML files, command-line overrides and clear errors for bad keys."""

import subprocess
import sys

import pytest
import yaml

from clmr.cli import build_parser
from clmr.config import PRESETS, Config, ConfigError, load_config, save_config, val_every
from clmr.errors import ClmrError


def test_defaults_are_the_papers():
    c = load_config()
    assert (c.preset, c.seed, c.sample_rate, c.batch_size, c.loss.temperature) == (
        "paper",
        42,
        22050,
        48,
        0.5,
    )
    assert (c.model.init, c.loss.negatives, c.trainer.sync_batchnorm) == ("pytorch", "global", None)
    assert (c.optim.optimizer, c.optim.plateau_factor, c.trainer.early_stopping_patience) == (
        "adam",
        None,
        None,
    )
    assert c.crop_length == 59049 and c.model.width == 1.0 and c.model.projection_dim == 64
    assert (c.optim.lr, c.optim.weight_decay) == (3e-4, 0.0)
    probabilities = {
        k: getattr(c.augment, k) for k in ("polarity", "noise", "gain", "filter", "delay", "pitch", "reverb")
    }
    assert probabilities == {
        "polarity": 0.8,
        "noise": 0.01,
        "gain": 0.3,
        "filter": 0.8,
        "delay": 0.3,
        "pitch": 0.6,
        "reverb": 0.6,
    }


def test_tiny_preset_is_small_and_low_rate():
    c = load_config("tiny")
    assert c.preset == "tiny" and c.sample_rate == 8000 and c.model.width <= 0.25 and c.model.n_blocks < 9
    assert c.loss.temperature == 0.5  # untouched keys keep the paper's value
    assert set(PRESETS) >= {"paper", "tiny", "cpu"}


def test_cpu_preset_is_tiny_without_augmentation_for_thirty_minutes():
    cpu, tiny = load_config("cpu"), load_config("tiny")
    assert (cpu.model, cpu.sample_rate, cpu.batch_size) == (tiny.model, tiny.sample_rate, tiny.batch_size)
    assert not cpu.augment.enabled and tiny.augment.enabled
    assert cpu.trainer.max_time == "00:00:30:00" and cpu.trainer.max_epochs == -1
    assert val_every(cpu.trainer.val_every) == ("seconds", 60) and cpu.trainer.checkpoint_every is None
    assert val_every(cpu.trainer.save_every) == ("seconds", 60) and tiny.trainer.save_every == "1"


def test_file_then_overrides_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"preset": "tiny", "batch_size": 16, "augment": {"pitch": 0.0}}))
    c = load_config(path=f, overrides={"batch-size": "96", "augment.reverb": "0", "trainer.devices": "2"})
    assert c.preset == "tiny" and c.sample_rate == 8000  # the file's preset applies
    assert c.batch_size == 96 and c.augment.pitch == 0.0 and c.augment.reverb == 0.0
    assert c.trainer.devices == 2
    assert load_config("paper", path=f).sample_rate == 22050  # an explicit preset wins over the file's


def test_supervised_recipe_is_the_references_under_any_preset():
    """clmr/modules/supervised_learning.py `configure_optimizers` and main.py's EarlyStopping(patience=20)."""
    c = load_config(overrides={"supervised": "true"})
    o = c.optim
    assert (o.optimizer, o.lr, o.momentum, o.weight_decay) == ("sgd", 3e-4, 0.9, 1e-6)
    assert (o.plateau_factor, o.plateau_patience, c.trainer.early_stopping_patience) == (0.2, 5, 20)
    tiny = load_config("tiny", overrides={"supervised": True, "optim.plateau_factor": "none"})
    assert (tiny.optim.optimizer, tiny.optim.lr, tiny.optim.plateau_factor) == ("sgd", 1e-3, None)
    assert load_config(overrides={"supervised": True, "optim.optimizer": "adam"}).optim.optimizer == "adam"


def test_saved_config_loads_back_equal_and_is_synced(tmp_path, monkeypatch):
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    c = load_config("tiny", overrides={"augment.filter": {"p": 0.5}, "model.projection_hidden": 32})
    path = save_config(c, tmp_path / "run" / "config.yaml")
    assert synced and load_config(path=path) == c
    sup = load_config(overrides={"supervised": True, "optim.lr": 0.01})
    assert load_config(path=save_config(sup, tmp_path / "sup.yaml")) == sup


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"augment.pich": 0}, "augment.pich"),
        ({"batchsize": 4}, "batchsize"),
        ({"model.width.x": 1}, "model.width.x"),
        ({"batch_size": "many"}, "batch_size"),
        ({"augment.gain": 1.5}, "augment.gain"),
        ({"augment.gain": {"p": -0.1, "min_db": -6.0}}, "augment.gain"),
        ({"trainer.sync_batchnorm": "maybe"}, "trainer.sync_batchnorm"),
        ({"trainer.max_epochs": 0}, "trainer.max_epochs"),
        ({"trainer.max_time": "12 hours"}, "trainer.max_time"),
        ({"trainer.val_every": "0"}, "trainer.val_every"),
        ({"trainer.val_every": "10 minutes"}, "trainer.val_every"),
        ({"trainer.val_every": "-5"}, "trainer.val_every"),
        ({"trainer.val_every": "5epoch"}, "trainer.val_every"),
        ({"trainer.save_every": "0"}, "trainer.save_every"),
        ({"trainer.save_every": "often"}, "trainer.save_every"),
        ({"optim.weight_decay": -1e-6}, "optim.weight_decay"),
        ({"model.init": "xavier"}, "model.init"),
        ({"loss.negatives": "some"}, "loss.negatives"),
        ({"optim.optimizer": "lars"}, "optim.optimizer"),
        ({"supervised": True, "batch_size": 1}, "batch_size"),  # BatchNorm cannot train on one crop
    ],
)
def test_bad_keys_and_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        load_config(overrides=overrides)
    assert isinstance(err.value, ClmrError)


def test_unknown_key_in_file_names_file_key_and_suggestion(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("augment:\n  pich: 0\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*'augment\.pich'.*augment\.pitch"):
        load_config(path=f)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config("huge")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path=tmp_path / "list.yaml")


def test_command_line_overrides_reach_the_config():
    from clmr.cli.pretrain import overrides_from_args

    args = build_parser().parse_args(
        ["pretrain", "--data", "s", "--out", "r", "--batch-size", "96", "--augment.pitch", "0"]
        + ["--max-epochs", "3", "--accelerator", "cpu", "--sync-batchnorm", "--model.n-blocks", "5"]
    )
    c = load_config(args.preset, args.config, overrides_from_args(args))
    assert c.batch_size == 96 and c.augment.pitch == 0.0 and c.trainer.max_epochs == 3
    assert c.trainer.accelerator == "cpu" and c.trainer.sync_batchnorm is True and c.model.n_blocks == 5
    assert Config().trainer.max_epochs == 10000  # dataclass defaults are not shared between instances


def test_print_config_and_unknown_flag_from_the_shell():
    cmd = [sys.executable, "-m", "clmr", "pretrain", "--data", "s", "--out", "r", "--preset", "tiny"]
    out = subprocess.run([*cmd, "--print-config", "--lr", "0.01"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["optim"]["lr"] == 0.01
    bad = subprocess.run([*cmd, "--augment.pich", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--augment.pich" in bad.stderr


def test_augment_dict_without_p_keeps_the_reference_probability():
    """Config and `Chain` agree: a dict of arguments without "p" leaves the step's reference p."""
    from clmr.augment import Chain

    c = load_config(overrides={"augment.filter": {"lowpass_hz": [1000, 3000]}})
    chain = Chain(22050, **c.augment.chain_overrides())
    assert chain.steps["filter"].p == 0.8 and tuple(chain.steps["filter"].lowpass_hz) == (1000, 3000)


def _pretrain_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices and "pretrain" in a.choices)
    return sub.choices["pretrain"]


def test_help_shows_every_flag_in_hyphen_form_and_describes_each_key():
    import re

    from clmr.config import all_keys, flag, help_of

    text = _pretrain_parser().format_help()
    shown = set(re.findall(r"(?<![\w-])--[\w.-]+", text))
    assert not [f for f in shown if "_" in f], sorted(f for f in shown if "_" in f)
    for key in all_keys():
        if key == "preset":
            continue
        assert flag(key) in shown and help_of(key) in " ".join(text.split()), key
    assert {"--batch-size", "--model.n-blocks", "--model.projection-hidden", "--max-epochs"} <= shown
    assert {"--trainer.max-epochs", "--optim.weight-decay", "--augment.pitch", "--temperature"} <= shown
    assert {"--model.init", "--negatives", "--loss.negatives", "--optimizer"} <= shown
    assert "(default: None)" not in text  # required options and unset ones say nothing misleading


@pytest.mark.parametrize(
    "argv",
    [
        ["--batch_size", "8", "--model.n_blocks", "5", "--trainer.max_epochs", "3", "--sample_rate", "8000"],
        ["--batch-size", "8", "--model.n-blocks", "5", "--trainer.max-epochs", "3", "--sample-rate", "8000"],
        ["--batch-size", "8", "--model.n-blocks", "5", "--max_epochs", "3", "--sample-rate", "8000"],
    ],
)
def test_underscore_and_hyphen_spellings_set_the_same_keys(argv):
    from clmr.cli.pretrain import overrides_from_args

    args = _pretrain_parser().parse_args(["--data", "s", "--out", "r", *argv, "--optim.weight_decay", "1e-6"])
    c = load_config(overrides=overrides_from_args(args))
    assert (c.batch_size, c.model.n_blocks, c.trainer.max_epochs, c.sample_rate) == (8, 5, 3, 8000)
    assert c.optim.weight_decay == 1e-6


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("1", ("epochs", 1)),
        ("5", ("epochs", 5)),
        ("5epochs", ("epochs", 5)),
        ("200steps", ("steps", 200)),
        (" 200 steps ", ("steps", 200)),
        ("30s", ("seconds", 30)),
        ("10min", ("seconds", 600)),
        ("2h", ("seconds", 7200)),
        ("10m", None),
        ("0steps", None),
        ("1.5", None),
    ],
)
def test_val_every_syntax(text, parsed):
    assert val_every(text) == parsed


def test_val_every_and_worker_defaults_reach_the_config():
    c = load_config(overrides={"trainer.val_every": "10min"})
    assert c.trainer.val_every == "10min" and load_config().trainer.val_every == "1"
    assert load_config().trainer.num_workers is None  # from the cores available (clmr.train.data)
    args = build_parser().parse_args(["pretrain", "--data", "s", "--out", "o", "--val-every", "200steps"])
    from clmr.cli.pretrain import overrides_from_args

    assert overrides_from_args(args) == {"trainer.val_every": "200steps"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("seed", -1, "config key 'seed'.*must be >= 0"),
        ("model.width", 1000, "model.width.*must be in \\(0, 8\\]"),
        ("model.width", float("inf"), "model.width"),
        ("model.projection_dim", 10**6, "model.projection_dim.*must be in 1..8192"),
        ("sample_rate", 2**70, "sample_rate.*must be in 1..384,000 Hz"),
        ("optim.lr", float("inf"), "optim.lr.*finite"),
    ],
)
def test_numbers_out_of_range_are_refused_when_the_config_loads(key, value, message):
    """Checked with the model's own bounds (clmr.models.checks) before a store is opened or a layer built."""
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={key: value})
