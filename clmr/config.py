"""One typed run configuration: dataclasses whose defaults are the reference's (stated once, with what
each key does), the objective's recipe and a named preset on top, then a YAML file and `--key value`
overrides. `load_config` resolves them; `save_config` writes the result into every run directory.

Unknown keys and ill-typed or out-of-range values raise `ConfigError`, which names the key (and, for a
typo, the closest known key).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from clmr.errors import ClmrError
from clmr.files import atomic_open
from clmr.limits import AUGMENT_SCRATCH_MB, MAX_DIM, MAX_SAMPLE_RATE, MAX_WIDTH
from clmr.presets import PRESETS, SUPERVISED
from clmr.texts import read_text

AUGMENT_STEPS = ("polarity", "noise", "gain", "filter", "delay", "pitch", "reverb")


class ConfigError(ClmrError):
    """A config key that does not exist, or a value of the wrong type or range; names the key."""


def key(default: Any, help: str) -> Any:
    """A config field: its default and what it does (shown by `--help`)."""
    return field(default=default, metadata={"help": help})


def section(cls: type) -> Any:
    return field(default_factory=cls)


@dataclass
class ModelConfig:
    """Encoder and projector shape (the reference: SampleCNN width 1, 9 pooled blocks, 512-512-64)."""

    width: float = key(1.0, "SampleCNN channel scale (1 = the reference's 128..512 channels)")
    n_blocks: int = key(9, "pooled SampleCNN blocks (1..9); the crop is 3^(n+1) samples")
    projection_dim: int = key(64, "projector output size (z)")
    projection_hidden: int | None = key(None, "projector hidden size (none: the encoder's output size)")
    init: Literal["pytorch", "kaiming"] = key(
        "pytorch", "initial encoder weights: pytorch (its default init, as the reference) or kaiming"
    )


@dataclass
class AugmentConfig:
    """Probability of each augmentation step (reference values), or a dict of the step's arguments."""

    enabled: bool = key(True, "the whole augmentation chain on or off")
    polarity: float | dict = key(0.8, "probability of polarity inversion")
    noise: float | dict = key(0.01, "probability of white noise")
    gain: float | dict = key(0.3, "probability of a random gain")
    filter: float | dict = key(0.8, "probability of a high- or low-pass filter")
    delay: float | dict = key(0.3, "probability of a delay (echo)")
    pitch: float | dict = key(0.6, "probability of a pitch shift")
    reverb: float | dict = key(0.6, "probability of reverb")
    scratch_mb: float = key(AUGMENT_SCRATCH_MB, "bound on one augmentation step's scratch memory (MB)")

    def chain_overrides(self) -> dict[str, Any]:
        """Keyword arguments for `clmr.augment.Chain` (one per step, and the scratch budget)."""
        return {name: getattr(self, name) for name in AUGMENT_STEPS} | {"scratch_mb": self.scratch_mb}


@dataclass
class LossConfig:
    """NT-Xent (the reference: temperature 0.5)."""

    temperature: float = key(0.5, "NT-Xent temperature")
    negatives: Literal["global", "local"] = key(
        "global", "DDP: negatives from the global batch, or from each process's own (the reference)"
    )


@dataclass
class OptimConfig:
    """Pre-training: Adam, lr 3e-4, no weight decay (the reference's 1e-6 is not passed to its Adam)."""

    optimizer: Literal["adam", "sgd"] = key("adam", "adam, or sgd (Nesterov momentum)")
    lr: float = key(3e-4, "learning rate of the encoder and projector (or classifier)")
    weight_decay: float = key(0.0, "weight decay")
    momentum: float = key(0.9, "sgd: momentum")
    plateau_factor: float | None = key(
        None, "lr x this after plateau_patience epochs without a lower valid loss"
    )
    plateau_patience: int = key(5, "epochs without a lower valid loss before the lr drops")
    probe_lr: float = key(1e-3, "learning rate of the online probe")


@dataclass
class TrainerConfig:
    """Devices, precision, stopping, and the cadence of checkpoints and logs."""

    accelerator: str = key("auto", "cpu, gpu, auto ... (Lightning Fabric)")
    devices: int | str = key("auto", "devices per node: a number or auto")
    num_nodes: int = key(1, "machines")
    strategy: str = key("auto", "auto, ddp ... (Lightning Fabric)")
    precision: str = key("32-true", "32-true, bf16-mixed, 16-mixed ... (Lightning Fabric)")
    sync_batchnorm: bool | None = key(
        None, "BatchNorm statistics over all processes (none: on under DDP on GPUs, as the reference)"
    )
    max_epochs: int = key(10000, "stop after this many epochs (-1: no limit)")
    max_steps: int = key(-1, "stop after this many steps (-1: no limit)")
    max_time: str | None = key(None, "stop cleanly after this wall-clock time, DD:HH:MM:SS, resumes included")
    num_workers: int | None = key(None, "data loader workers (none: from the cores, at most 4; 8 for GPUs)")
    checkpoint_every: int | None = key(10, "epochs between kept periodic checkpoints (none: no such copies)")
    save_every: str = key(
        "1", "write last.ckpt and model.safetensors every N epochs, Nsteps or a time (1min)"
    )
    log_every_n_steps: int = key(10, "steps between logged values")
    val_every: str = key(
        "1", "validate every N epochs, every N steps (200steps, inside epochs) or a time (10min)"
    )
    early_stopping_patience: int | None = key(
        None, "epochs without a lower valid loss before stopping (none: never; --supervised: 20)"
    )
    deterministic: bool = key(False, "deterministic kernels where torch has them (slower on GPU)")
    compile: bool = key(False, "torch.compile the encoder and projector (faster steps after a warm-up)")


@dataclass
class Config:
    """A whole run. `batch_size` is per device (the global batch is batch_size x devices x nodes)."""

    preset: str = key("paper", "named config the run started from")
    seed: int = key(42, "seeds the model, the crops, the shuffling and the augmentations")
    sample_rate: int = key(22050, "Hz; must equal the store's sample rate")
    batch_size: int = key(48, "songs per step and process (global batch = batch x devices x nodes)")
    supervised: bool = key(False, "train the supervised baseline on the store's labels instead of SimCLR")
    probe: bool = key(True, "online linear probe on detached features when the store has labels")
    model: ModelConfig = section(ModelConfig)
    augment: AugmentConfig = section(AugmentConfig)
    loss: LossConfig = section(LossConfig)
    optim: OptimConfig = section(OptimConfig)
    trainer: TrainerConfig = section(TrainerConfig)

    @property
    def crop_length(self) -> int:
        """Samples per crop: 3^(n_blocks + 1), 59,049 for the reference encoder."""
        return 3 ** (self.model.n_blocks + 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what config.yaml holds)."""
        return dataclasses.asdict(self)


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def all_keys(config: Config | None = None) -> list[str]:
    """Every dotted key a config file or override may set (`batch_size`, `augment.pitch`, ...)."""
    config = config or Config()
    keys = []
    for name in _fields(config):
        value = getattr(config, name)
        keys += [f"{name}.{sub}" for sub in _fields(value)] if dataclasses.is_dataclass(value) else [name]
    return keys


def help_of(dotted: str) -> str:
    """What a key does (its field's help)."""
    section_name, _, name = dotted.rpartition(".")
    target = getattr(Config(), section_name) if section_name else Config()
    return _fields(target)[name].metadata["help"]


def _coerce(dotted: str, value: Any, tp: Any) -> Any:
    """`value` (from YAML or a command line string) as type `tp`, or a ConfigError naming the key."""
    if typing.get_origin(tp) is Literal:
        if value in tp.__args__:
            return value
        raise ConfigError(
            f"config key '{dotted}' ({flag(dotted)}): choose one of {', '.join(tp.__args__)}, got {value!r}"
        )
    args = tp.__args__ if isinstance(tp, types.UnionType) else (tp,)
    if type(None) in args and (value is None or str(value).lower() in ("none", "null")):
        return None
    for arg in (a for a in args if a is not type(None)):
        try:
            return _coerce_one(value, arg)
        except (TypeError, ValueError):
            continue
    names = " or ".join(getattr(a, "__name__", str(a)) for a in args)
    raise ConfigError(f"config key '{dotted}' ({flag(dotted)}): expected {names}, got {value!r}")


_BOOLS = dict.fromkeys(("true", "yes", "1", "on"), True) | dict.fromkeys(("false", "no", "0", "off"), False)


def _coerce_one(value: Any, tp: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool) or (isinstance(value, str) and value.lower() in _BOOLS):
            return value if isinstance(value, bool) else _BOOLS[value.lower()]
        raise ValueError
    if isinstance(value, bool) and tp in (int, float):
        raise ValueError
    if tp is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    if tp is float:
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int)):
            raise ValueError
        return str(value)
    if tp is dict:
        parsed = yaml.safe_load(value) if isinstance(value, str) and value.strip().startswith("{") else value
        if isinstance(parsed, Mapping):
            return dict(parsed)
        raise ValueError
    raise TypeError(tp)


def set_value(config: Config, dotted: str, value: Any) -> None:
    """Set one dotted key (`-` and `_` are interchangeable), converting `value` to the field's type."""
    parts = dotted.replace("-", "_").split(".")
    target: Any = config
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if not dataclasses.is_dataclass(target) or part not in _fields(target):
            close = difflib.get_close_matches(".".join(parts), all_keys(config), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{'.'.join(parts)}'{hint}")
        current = getattr(target, part)
        if i < len(parts) - 1:
            target = current
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{here}' is a section; give its keys, e.g. '{here}.…'")
            for sub, sub_value in value.items():
                set_value(config, f"{here}.{sub}", sub_value)
        else:
            setattr(target, part, _coerce(here, value, typing.get_type_hints(type(target))[part]))


def apply(config: Config, values: Mapping[str, Any]) -> Config:
    """Set every key of a (nested or dotted) mapping on `config`; returns `config`."""
    for name, value in values.items():
        set_value(config, str(name), value)
    return config


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a dict; ConfigError for a missing, malformed or non-mapping file."""
    path = Path(path)
    text = read_text(path, ConfigError, "config file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, found {type(data).__name__}")
    return data or {}


def load_config(
    preset: str | None = None,
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults <- `recipe` (e.g. `FINETUNE`) <- the supervised recipe with `supervised` <- preset <-
    YAML file <- overrides. The preset is `preset`, else the file's `preset` key, else `paper`. Validated."""
    file_values = read_yaml(path) if path is not None else {}
    name = preset or file_values.get("preset") or "paper"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")

    def resolve(objective: Mapping[str, Any]) -> Config:
        config = apply(apply(apply(Config(), recipe or {}), objective), PRESETS[name])
        config.preset = name
        try:
            apply(config, {k: v for k, v in file_values.items() if k != "preset"})
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
        return apply(config, overrides or {})

    config = resolve({})
    if config.supervised:
        config = resolve(SUPERVISED)
    validate(config)
    return config


def val_every(text: str) -> tuple[str, float] | None:
    """`val_every` as (unit, amount): 5 -> (epochs, 5), 200steps -> (steps, 200), 10min -> (seconds, 600)."""
    match = re.fullmatch(r"(\d+)\s*(epochs|steps|s|min|h|)", str(text).strip())
    if match is None or int(match[1]) < 1:
        return None
    unit = {"": "epochs", "epochs": "epochs", "steps": "steps"}.get(match[2], "seconds")
    return unit, int(match[1]) * {"min": 60, "h": 3600}.get(match[2], 1)


MAX_TIME = re.compile(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}")  # DD:HH:MM:SS, e.g. 00:12:00:00 for 12 hours


def validate(config: Config) -> None:
    """Range checks that would otherwise fail deep inside training."""
    t, o = config.trainer, config.optim
    checks = [
        # NT-Xent needs a negative; BatchNorm in training mode needs two values per channel
        ("batch_size", config.batch_size >= 2, "must be at least 2"),
        ("seed", config.seed >= 0, "must be >= 0"),
        ("sample_rate", 1 <= config.sample_rate <= MAX_SAMPLE_RATE, f"must be in 1..{MAX_SAMPLE_RATE:,} Hz"),
        ("loss.temperature", config.loss.temperature > 0, "must be positive"),
        ("model.width", 0 < config.model.width <= MAX_WIDTH, f"must be in (0, {MAX_WIDTH:g}]"),
        ("model.n_blocks", 1 <= config.model.n_blocks <= 9, "must be in 1..9"),
        ("model.projection_dim", 1 <= config.model.projection_dim <= MAX_DIM, f"must be in 1..{MAX_DIM}"),
        ("augment.scratch_mb", 0 < config.augment.scratch_mb < math.inf, "must be positive and finite"),
        ("optim.lr", 0 < o.lr < math.inf, "must be positive and finite"),
        ("optim.weight_decay", o.weight_decay >= 0, "must be >= 0"),
        ("optim.momentum", 0 <= o.momentum < 1, "must be in [0, 1)"),
        ("optim.plateau_factor", o.plateau_factor is None or 0 < o.plateau_factor < 1, "must be in (0, 1)"),
        ("optim.plateau_patience", o.plateau_patience >= 0, "must be >= 0"),
        ("optim.probe_lr", o.probe_lr > 0, "must be positive"),
        ("trainer.num_workers", (t.num_workers or 0) >= 0, "must be >= 0"),
        ("trainer.val_every", val_every(t.val_every) is not None, "must be N, Nsteps, Ns, Nmin or Nh"),
        ("trainer.save_every", val_every(t.save_every) is not None, "must be N, Nsteps, Ns, Nmin or Nh"),
        ("trainer.checkpoint_every", (t.checkpoint_every or 1) >= 1, "must be >= 1"),
        ("trainer.num_nodes", t.num_nodes >= 1, "must be >= 1"),
        # 0 would train nothing and export no model; -1 is "no limit"
        ("trainer.max_epochs", t.max_epochs == -1 or t.max_epochs >= 1, "must be >= 1 (or -1: no limit)"),
        ("trainer.max_steps", t.max_steps == -1 or t.max_steps >= 1, "must be >= 1 (or -1: no limit)"),
        ("trainer.log_every_n_steps", t.log_every_n_steps >= 1, "must be >= 1"),
        ("trainer.early_stopping_patience", (t.early_stopping_patience or 1) >= 1, "must be >= 1"),
        ("trainer.max_time", t.max_time is None or MAX_TIME.fullmatch(t.max_time), "must be DD:HH:MM:SS"),
    ]
    for step in AUGMENT_STEPS:
        p = getattr(config.augment, step)
        if isinstance(p, dict):  # a dict of the step's arguments; without "p" the reference probability holds
            if "p" not in p:
                continue
            p = p["p"]
        checks.append((f"augment.{step}", 0.0 <= float(p) <= 1.0, "must be a probability in [0, 1]"))
    for dotted, ok, problem in checks:
        if not ok:
            raise ConfigError(f"config key '{dotted}' ({flag(dotted)}) {problem}")


def save_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically and synced (it loads back with `load_config(path=...)`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        f.write(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path


SHORT_SECTIONS = ("trainer", "optim", "loss")  # their keys' flags omit the section: --max-epochs


def flag(dotted: str) -> str:
    """A config key's flag: `batch_size` -> `--batch-size`, `trainer.max_epochs` -> `--max-epochs`."""
    section_name, _, name = dotted.rpartition(".")
    return "--" + (name if section_name in SHORT_SECTIONS else dotted).replace("_", "-")
