"""clmr's own format: one `.safetensors` file holding tensors `encoder.*`, `projector.*`, `head.*` and,
in its metadata under "clmr", the JSON of `CLMR.config()`; a run directory holds it as model.safetensors."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import clmr.models.checks as checks
from clmr.files import atomic_path
from clmr.models.clmr import CLMR
from clmr.models.state import CheckpointError, built_from, load_state

RUN_DIR_MODEL = "model.safetensors"
SUFFIX = ".safetensors"


def save_model(model: CLMR, path: str | Path) -> Path:
    """Write `model` to `path` (.safetensors) atomically (`clmr.files.atomic_path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"clmr": json.dumps(model.config())})
    return path


def read_config(path: str | Path) -> dict[str, Any] | None:
    """The JSON config of one of our files, or None for a safetensors file without one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(path, f"not a checkpoint clmr can read (safetensors: {err})") from err
    return parse_config(meta.get("clmr"), path, "'clmr' metadata")


def parse_config(value: Any, path: Path | str, where: str) -> dict[str, Any] | None:
    """A clmr config stored as JSON text (or already a dict) under `where` in file `path`; None if absent."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            checks.json_text(value)
            value = json.loads(value)
        except checks.ModelConfigError as err:
            raise CheckpointError(path, f"its {where} {err.problem}") from None
        except json.JSONDecodeError as err:
            raise CheckpointError(path, f"its {where} is not valid JSON ({err})") from None
    if not isinstance(value, Mapping):
        raise CheckpointError(path, f"its {where} is a {type(value).__name__}, not a clmr config")
    return dict(value)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """All tensors of a safetensors file and the clmr config in its metadata (None if it has none)."""
    config = read_config(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, config
    except (SafetensorError, OSError) as err:
        raise CheckpointError(path, f"not a checkpoint clmr can read (safetensors: {err})") from err


def model_from_config(path: Path, config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> CLMR:
    """The model a clmr config describes, holding `tensors` (keys `encoder.*`, `projector.*`, `head.*`).

    A supervised encoder's `encoder.fc.*` (training checkpoints, files written before heads were
    split off) is the model's linear head.
    """
    with built_from(path, "its clmr config's"), torch.device("meta"):  # checked before any allocation
        model = CLMR.from_config(dict(config))
        _check_derived(model, config)
    state = dict(tensors)
    if (
        "encoder.fc.weight" in state
        and "head.model.0.weight" not in state
        and model.encoder.n_classes is None
    ):
        state = {re.sub(r"^encoder\.fc\.", "head.model.0.", k): v for k, v in state.items()}
    load_state(model, state, path)  # a meta model takes the file's tensors as its own
    return model


def _check_derived(model: CLMR, config: Mapping[str, Any]) -> None:
    """The config's own record of format, version, crop length and embedding size must agree with the
    model its architecture describes (a file edited by hand, or damaged, would otherwise load)."""
    expected = {
        "format": "clmr",
        "version": 1,
        "crop_length": model.crop_length,
        "embedding_dim": model.embedding_dim,
    }
    for key, value in expected.items():
        found = config.get(key, value)
        if type(found) is not type(value) or found != value:
            raise checks.ModelConfigError(key, f"is {checks.show(found)}, expected {value!r}")
