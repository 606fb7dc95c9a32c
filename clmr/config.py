"""Typed run configuration: the paper's defaults (DESIGN section 1), named presets, YAML files and
`--key value` overrides, resolved in that order and written into every run directory.

`load_config(preset, path, overrides)` is the one entry point; unknown keys and ill-typed values
raise `ConfigError`, which names the key (and, for a typo, the closest known key).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clmr.errors import ClmrError

AUGMENT_STEPS = ("polarity", "noise", "gain", "filter", "delay", "pitch", "reverb")


class ConfigError(ClmrError):
    """A config key that does not exist, or a value of the wrong type or range; names the key."""


@dataclass
class ModelConfig:
    """Encoder and projector shape (the reference: SampleCNN width 1, 9 pooled blocks, 512-512-64)."""

    width: float = 1.0
    n_blocks: int = 9
    projection_dim: int = 64
    projection_hidden: int | None = None  # None: the encoder's output size (512 for the reference)


@dataclass
class AugmentConfig:
    """Probability of each augmentation step (reference values), or a dict of the step's arguments."""

    enabled: bool = True
    polarity: float | dict = 0.8
    noise: float | dict = 0.01
    gain: float | dict = 0.3
    filter: float | dict = 0.8
    delay: float | dict = 0.3
    pitch: float | dict = 0.6
    reverb: float | dict = 0.6

    def chain_overrides(self) -> dict[str, Any]:
        """Keyword arguments for `clmr.augment.Chain` (one per step)."""
        return {name: getattr(self, name) for name in AUGMENT_STEPS}


@dataclass
class OptimConfig:
    """Adam, lr 3e-4, no weight decay (the reference's 1e-6 is ignored by its Adam); probe lr 1e-3."""

    lr: float = 3e-4
    weight_decay: float = 0.0
    probe_lr: float = 1e-3


@dataclass
class TrainerConfig:
    """What is handed to Lightning, plus checkpoint, logging and early-stopping cadence."""

    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    sync_batchnorm: bool = False
    max_epochs: int = 10000
    max_steps: int = -1
    max_time: str | None = None  # wall-clock limit "DD:HH:MM:SS" (e.g. a SLURM slot); stops cleanly
    num_workers: int = 4
    checkpoint_every: int = 10  # epochs between kept periodic checkpoints (last and best: every epoch)
    log_every_n_steps: int = 10
    early_stopping_patience: int = 10  # supervised baseline: epochs without a better valid loss
    deterministic: bool = False


@dataclass
class Config:
    """A whole run. `batch_size` is per device (the global batch is batch_size x devices x nodes)."""

    preset: str = "paper"
    seed: int = 42
    sample_rate: int = 22050
    batch_size: int = 48
    temperature: float = 0.5
    supervised: bool = False
    probe: bool = True  # online linear probe on detached features when the store has labels
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @property
    def crop_length(self) -> int:
        """Samples per crop: 3^(n_blocks + 1), 59,049 for the reference encoder."""
        return 3 ** (self.model.n_blocks + 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what config.yaml holds)."""
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's setting: every default above.
    "paper": {},
    # A small SampleCNN at 8 kHz (crops of 3^8 = 6,561 samples, 0.82 s) that learns in minutes on a CPU.
    # Pitch shift and reverb are off: on a CPU they cost 2/3 of the step, and in a few hundred steps the
    # full chain does not beat a random encoder's probe while the lighter one does (docs/training.md).
    "tiny": {
        "sample_rate": 8000,
        "batch_size": 32,
        "model": {"width": 0.25, "n_blocks": 7, "projection_dim": 64},
        "augment": {"pitch": 0.0, "reverb": 0.0},
        "optim": {"lr": 1e-3},
        "trainer": {"max_epochs": 120, "num_workers": 0, "checkpoint_every": 20, "log_every_n_steps": 20},
    },
}


def _is_optional(tp: Any) -> bool:
    return isinstance(tp, types.UnionType) and type(None) in tp.__args__


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """`value` (from YAML or a command line string) as type `tp`, or a ConfigError naming `key`."""
    if _is_optional(tp):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        tp = next(a for a in tp.__args__ if a is not type(None))
    args = tp.__args__ if isinstance(tp, types.UnionType) else (tp,)
    for arg in args:
        try:
            return _coerce_one(value, arg)
        except (TypeError, ValueError):
            continue
    names = " or ".join(getattr(a, "__name__", str(a)) for a in args)
    raise ConfigError(f"config key '{key}' ({flag(key)}): expected {names}, got {value!r}")


def _coerce_one(value: Any, tp: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ValueError
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int)):
            raise ValueError
        return str(value)
    if tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
        if isinstance(value, str) and value.strip().startswith("{"):
            parsed = yaml.safe_load(value)
            if isinstance(parsed, dict):
                return parsed
        raise ValueError
    raise TypeError(tp)


def _fields(obj: Any) -> dict[str, Any]:
    """Field name -> resolved type of a config dataclass instance."""
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def all_keys(config: Config | None = None) -> list[str]:
    """Every dotted key a config file or override may set (`batch_size`, `augment.pitch`, ...)."""
    config = config or Config()
    keys = []
    for name in _fields(config):
        value = getattr(config, name)
        if dataclasses.is_dataclass(value):
            keys += [f"{name}.{sub}" for sub in _fields(value)]
        else:
            keys.append(name)
    return keys


def _unknown(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def set_value(config: Config, key: str, value: Any) -> None:
    """Set one dotted key (`-` and `_` are interchangeable), converting `value` to the field's type."""
    parts = key.replace("-", "_").split(".")
    target: Any = config
    for i, part in enumerate(parts):
        fields = _fields(target)
        if part not in fields:
            raise _unknown(".".join(parts[: i + 1]), all_keys(config))
        dotted = ".".join(parts[: i + 1])
        current = getattr(target, part)
        if dataclasses.is_dataclass(current):
            if i == len(parts) - 1:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"config key '{dotted}' is a section; give its keys, e.g. '{dotted}.…'")
                for sub, sub_value in value.items():
                    set_value(config, f"{dotted}.{sub}", sub_value)
                return
            target = current
            continue
        if i != len(parts) - 1:
            raise _unknown(".".join(parts), all_keys(config))
        setattr(target, part, _coerce(dotted, value, fields[part]))
        return


def apply(config: Config, values: Mapping[str, Any]) -> Config:
    """Set every key of a (nested or dotted) mapping on `config`; returns `config`."""
    for key, value in values.items():
        set_value(config, str(key), value)
    return config


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a dict; ConfigError for a missing, malformed or non-mapping file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, found {type(data).__name__}")
    return data


def load_config(
    preset: str | None = None,
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults <- preset <- YAML file <- overrides. The preset is `preset`, else the file's `preset`
    key, else `paper`. The result is validated."""
    file_values = read_yaml(path) if path is not None else {}
    name = preset or file_values.get("preset") or "paper"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    config = apply(Config(), PRESETS[name])
    config.preset = name
    try:
        apply(config, {k: v for k, v in file_values.items() if k != "preset"})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    apply(config, overrides or {})
    validate(config)
    return config


def validate(config: Config) -> None:
    """Range checks that would otherwise fail deep inside training."""
    t = config.trainer
    checks = [
        # NT-Xent needs a negative; BatchNorm in training mode needs two values per channel
        ("batch_size", config.batch_size >= 2, "must be at least 2"),
        ("sample_rate", config.sample_rate > 0, "must be positive"),
        ("temperature", config.temperature > 0, "must be positive"),
        ("model.width", config.model.width > 0, "must be positive"),
        ("model.n_blocks", 1 <= config.model.n_blocks <= 9, "must be in 1..9"),
        ("model.projection_dim", config.model.projection_dim > 0, "must be positive"),
        ("optim.lr", config.optim.lr > 0, "must be positive"),
        ("trainer.num_workers", config.trainer.num_workers >= 0, "must be >= 0"),
        ("trainer.checkpoint_every", config.trainer.checkpoint_every >= 1, "must be >= 1"),
        ("trainer.num_nodes", config.trainer.num_nodes >= 1, "must be >= 1"),
        ("optim.weight_decay", config.optim.weight_decay >= 0, "must be >= 0"),
        ("optim.probe_lr", config.optim.probe_lr > 0, "must be positive"),
        # 0 would train nothing and export no model; -1 is Lightning's "no limit"
        ("trainer.max_epochs", t.max_epochs == -1 or t.max_epochs >= 1, "must be >= 1 (or -1: no limit)"),
        ("trainer.max_steps", t.max_steps == -1 or t.max_steps >= 1, "must be >= 1 (or -1: no limit)"),
        ("trainer.log_every_n_steps", t.log_every_n_steps >= 1, "must be >= 1"),
        ("trainer.early_stopping_patience", t.early_stopping_patience >= 1, "must be >= 1"),
        (
            "trainer.max_time",
            t.max_time is None or re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", t.max_time) is not None,
            "must be DD:HH:MM:SS (e.g. 00:12:00:00 for 12 hours)",
        ),
    ]
    for step in AUGMENT_STEPS:
        p = getattr(config.augment, step)
        if isinstance(p, dict):  # a dict of the step's arguments; without "p" the reference probability holds
            if "p" not in p:
                continue
            p = p["p"]
        checks.append((f"augment.{step}", 0.0 <= float(p) <= 1.0, "must be a probability in [0, 1]"))
    for key, ok, problem in checks:
        if not ok:
            raise ConfigError(f"config key '{key}' ({flag(key)}) {problem}")


def save_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (it loads back with `load_config(path=...)`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    tmp.replace(path)
    return path


# What each key does, for `clmr pretrain --help` (every key of `Config` has an entry; a test checks).
KEY_HELP: dict[str, str] = {
    "seed": "seeds the model, the crops, the shuffling and the augmentations",
    "sample_rate": "Hz; must equal the store's sample rate",
    "batch_size": "songs per step and process (global batch = batch x devices x nodes)",
    "temperature": "NT-Xent temperature",
    "supervised": "train the supervised baseline on the store's labels instead of SimCLR",
    "probe": "online linear probe on detached features when the store has labels",
    "model.width": "SampleCNN channel scale (1 = the reference's 128..512 channels)",
    "model.n_blocks": "pooled SampleCNN blocks (1..9); the crop is 3^(n+1) samples",
    "model.projection_dim": "projector output size (z)",
    "model.projection_hidden": "projector hidden size (none: the encoder's output size)",
    "augment.enabled": "the whole augmentation chain on or off",
    "augment.polarity": "probability of polarity inversion",
    "augment.noise": "probability of white noise",
    "augment.gain": "probability of a random gain",
    "augment.filter": "probability of a high- or low-pass filter",
    "augment.delay": "probability of a delay (echo)",
    "augment.pitch": "probability of a pitch shift",
    "augment.reverb": "probability of reverb",
    "optim.lr": "Adam learning rate of encoder and projector",
    "optim.weight_decay": "Adam weight decay",
    "optim.probe_lr": "learning rate of the online probe",
    "trainer.accelerator": "cpu, gpu, auto ... (Lightning)",
    "trainer.devices": "devices per node: a number or auto (Lightning)",
    "trainer.num_nodes": "machines (Lightning)",
    "trainer.strategy": "auto, ddp ... (Lightning)",
    "trainer.precision": "32-true, bf16-mixed, 16-mixed ... (Lightning)",
    "trainer.sync_batchnorm": "BatchNorm statistics over all processes (GPUs only)",
    "trainer.max_epochs": "stop after this many epochs (-1: no limit)",
    "trainer.max_steps": "stop after this many steps (-1: no limit)",
    "trainer.max_time": "stop cleanly after this wall-clock time, DD:HH:MM:SS",
    "trainer.num_workers": "data loader worker processes",
    "trainer.checkpoint_every": "epochs between kept periodic checkpoints",
    "trainer.log_every_n_steps": "steps between logged values and progress lines",
    "trainer.early_stopping_patience": "--supervised: epochs without a better valid loss before stopping",
    "trainer.deterministic": "deterministic kernels where torch has them (slower on GPU)",
}

_SECTION_TITLES = {
    "": "run",
    "model": "model (SampleCNN encoder and projector)",
    "augment": "augment (each step: a probability in [0, 1], 0 switches it off; a dict of its arguments in YAML)",
    "optim": "optim (Adam)",
    "trainer": "trainer (devices, precision, stopping, checkpoints, logs)",
}
# Sections whose keys also get a flag without the section (`--max-epochs` for `trainer.max_epochs`).
_SHORT_SECTIONS = ("trainer", "optim")
_OVERRIDE_PREFIX = "override:"


def flag(key: str) -> str:
    """The command-line flag shown for a config key: `batch_size` -> `--batch-size`,
    `model.n_blocks` -> `--model.n-blocks`, `trainer.max_epochs` -> `--max-epochs`."""
    section, _, name = key.rpartition(".")
    shown = name if section in _SHORT_SECTIONS else key
    return "--" + shown.replace("_", "-")


def _metavar(key: str, tp: Any) -> str:
    special = {"trainer.max_time": "DD:HH:MM:SS", "trainer.devices": "N|auto"}
    if key in special:
        return special[key]
    if key.startswith("augment.") and key != "augment.enabled":
        return "P"
    if _is_optional(tp):
        tp = next(a for a in tp.__args__ if a is not type(None))
    return {bool: "BOOL", int: "INT", float: "FLOAT", str: "NAME"}.get(tp, "VALUE")


def _show(value: Any) -> str:
    """A default as a YAML-ish word: none, true, false, 3e-4."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def add_override_arguments(parser: Any) -> None:
    """One option per config key, grouped by section and shown in hyphen form (`--batch-size`,
    `--model.n-blocks`, `--augment.pitch`; trainer and optim keys also without their section:
    `--max-epochs`, `--lr`). The underscore spellings (`--batch_size`, `--model.n_blocks`,
    `--trainer.max_epochs`) are accepted too but not listed. Boolean keys also work as bare flags."""
    defaults = Config()
    groups: dict[str, Any] = {}
    for key in all_keys(defaults):
        if key == "preset":
            continue
        section, _, name = key.rpartition(".")
        if section not in groups:
            title = _SECTION_TITLES.get(section, section)
            if not section:
                title += " (config keys, applied after --preset and --config; defaults are the paper's)"
            groups[section] = parser.add_argument_group(title)
        target = getattr(defaults, section) if section else defaults
        default = getattr(target, name)
        tp = _fields(target)[name]
        is_bool = isinstance(default, bool)
        accepted = {f"--{key}", f"--{key.replace('_', '-')}"}
        shown = [flag(key)]
        if section in _SHORT_SECTIONS:
            accepted |= {f"--{name}", f"--{name.replace('_', '-')}"}
            shown.append(f"--{key.replace('_', '-')}")
        hidden = accepted - set(shown)
        common = dict(
            dest=_OVERRIDE_PREFIX + key,
            metavar=_metavar(key, tp),
            nargs="?" if is_bool else None,
            const="true" if is_bool else None,
            default=argparse.SUPPRESS,
        )
        groups[section].add_argument(*shown, help=f"{KEY_HELP[key]} (default: {_show(default)})", **common)
        if hidden:
            groups[section].add_argument(*sorted(hidden), help=argparse.SUPPRESS, **common)


def overrides_from_args(args: Any) -> dict[str, Any]:
    """The config overrides given on the command line, as {dotted key: string value}."""
    return {
        key[len(_OVERRIDE_PREFIX) :]: value
        for key, value in vars(args).items()
        if key.startswith(_OVERRIDE_PREFIX)
    }
