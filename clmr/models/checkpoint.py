"""Checkpoint I/O: our format (one safetensors file with a JSON config) and the reference layouts.

Our file holds tensors `encoder.*`, `projector.*`, `head.*` and, in its safetensors metadata under
the key "clmr", the JSON of `CLMR.config()`. Reference files (plain `.pt` state dicts, Lightning
`.ckpt`, bare encoder dicts, fine-tuned heads) are read with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from clmr.errors import ClmrError
from clmr.files import atomic_path
from clmr.models.clmr import CLMR
from clmr.models.heads import Head, Projector
from clmr.models.samplecnn import REFERENCE_CHANNELS, SampleCNN

RUN_DIR_MODEL = "model.safetensors"
_ENCODER_PREFIXES = ("model.encoder.", "encoder.", "")
_PROJECTOR_PREFIXES = ("model.projector.", "projector.")
_HEAD_PREFIXES = ("head.model.", "model.model.", "model.", "")


class CheckpointError(ClmrError):
    """A file that is not a usable checkpoint; the message names the file and the first bad key."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def save_model(model: CLMR, path: str | Path) -> Path:
    """Write `model` to `path` (.safetensors) atomically (`clmr.files.atomic_path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {"clmr": json.dumps(model.config())}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_config(path: str | Path) -> dict[str, Any] | None:
    """The JSON config of one of our files, or None for a safetensors file without one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(path, f"not a readable safetensors file ({err})") from err
    if "clmr" not in meta:
        return None
    try:
        return json.loads(meta["clmr"])
    except json.JSONDecodeError as err:
        raise CheckpointError(path, f"its 'clmr' metadata is not valid JSON ({err})") from err


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors files start with an 8-byte little-endian header size followed by '{'.
    return len(head) == 9 and head[8:9] == b"{"


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors or torch file, flattened to one state dict."""
    if _is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as err:
            raise CheckpointError(path, f"truncated or corrupt safetensors file ({err})") from err
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # old plain pickles
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            path, f"not a PyTorch checkpoint, or truncated ({str(err).splitlines()[0]})"
        ) from err
    except Exception as err:  # pickle.UnpicklingError and friends from weights_only loading
        raise CheckpointError(path, _unpickling_problem(err)) from err
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # Lightning checkpoint
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"expected a state dict, found a {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(path, "holds no tensors")
    return tensors


def _unpickling_problem(err: Exception) -> str:
    """What a weights-only load failure means for the user, without torch's advice to disable it."""
    message = str(err)
    if "Weights only load failed" not in message:
        detail = f": {message}" if re.search(r"[a-zA-Z]", message) else ""  # torch may say just "101"
        return f"not a PyTorch checkpoint (neither a torch zip archive nor a pickle{detail})"
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    what = f" such as {found.group(1)}" if found else ""
    return (
        f"holds pickled Python objects{what} besides tensors; clmr reads checkpoints with "
        "torch.load(weights_only=True) and never runs code from a file, so save the state dict "
        "(model.state_dict()) instead"
    )


def _strip(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, prefix: str) -> None:
    """Copy `state` into `module`, naming the first missing, unexpected or mis-shaped key on failure."""
    expected = module.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise CheckpointError(path, f"missing key '{prefix}{key}'")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                path, f"key '{prefix}{key}' has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(path, f"unexpected key '{prefix}{extra[0]}'")
    module.load_state_dict(state)


def _encoder_from_reference(tensors: Mapping[str, torch.Tensor], path: Path) -> tuple[SampleCNN, str]:
    for prefix in _ENCODER_PREFIXES:
        if f"{prefix}sequential.0.0.weight" in tensors:
            break
    else:
        raise CheckpointError(path, "missing key 'sequential.0.0.weight' (no SampleCNN encoder found)")
    state = {k: v for k, v in _strip(tensors, prefix).items() if k.startswith(("sequential.", "fc."))}
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"sequential\.(\d+)\.", k))}
    n_blocks = max(blocks) - 1
    width = state["sequential.0.0.weight"].shape[0] / REFERENCE_CHANNELS[0]
    n_classes = state["fc.weight"].shape[0] if "fc.weight" in state else None
    try:
        encoder = SampleCNN(width=width, n_blocks=n_blocks, n_classes=n_classes)
    except ValueError as err:
        raise CheckpointError(path, f"not a SampleCNN layout ({err})") from err
    _load_into(encoder, state, path, prefix)
    return encoder, prefix


def _projector_from_reference(tensors: Mapping[str, torch.Tensor], path: Path) -> Projector | None:
    for prefix in _PROJECTOR_PREFIXES:
        if f"{prefix}0.weight" in tensors:
            state = _strip(tensors, prefix)
            if "2.weight" not in state:
                raise CheckpointError(path, f"missing key '{prefix}2.weight'")
            hidden, in_dim = state["0.weight"].shape
            projector = Projector(in_dim, hidden, state["2.weight"].shape[0])
            _load_into(projector, state, path, prefix)
            return projector
    return None


def _head_from_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> Head:
    """A linear or MLP head from our `head.*` keys or a reference fine-tuned head (`model.0.*`...)."""
    for prefix in _HEAD_PREFIXES:
        state = {k: v for k, v in _strip(tensors, prefix).items() if re.fullmatch(r"\d+\.(weight|bias)", k)}
        if "0.weight" in state:
            break
    else:
        raise CheckpointError(path, "missing key 'model.0.weight' (no classification head found)")
    layers = sorted({int(k.split(".")[0]) for k in state})
    out_dim, in_dim = state["0.weight"].shape
    if layers == [0]:
        head = Head("linear", in_dim, out_dim)
    elif layers in ([0, 2], [0, 3]):
        kind = "mlp" if layers == [0, 2] else "marble"
        head = Head(kind, in_dim, state[f"{layers[1]}.weight"].shape[0], hidden=out_dim)
    else:
        raise CheckpointError(path, f"unexpected key '{prefix}{layers[-1]}.weight' for a linear or MLP head")
    _load_into(head.model, state, path, prefix)
    return head


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        candidate = path / RUN_DIR_MODEL
        if not candidate.exists():
            raise CheckpointError(path, f"a folder without {RUN_DIR_MODEL} (not a clmr run directory)")
        return candidate
    if not path.exists():
        raise CheckpointError(path, "no such file")
    return path


def _load_ours(path: Path, config: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> CLMR:
    try:
        model = CLMR.from_config(config)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(path, f"invalid clmr config ({err!r})") from err
    _load_into(model, tensors, path, "")
    return model


def load_model(
    path: str | Path,
    head: str | Path | None = None,
    *,
    tags: list[str] | None = None,
    sample_rate: int | None = None,
    map_location: str | torch.device = "cpu",
) -> CLMR:
    """Load a clmr model from our file, a run directory, or any reference CLMR checkpoint layout.

    `head` adds a classification head from another file (ours, or a reference fine-tuned head);
    `tags` names its outputs when the file does not; `sample_rate` overrides the default 22,050 Hz
    assumed for reference files. The model is returned in eval mode.
    """
    path = _resolve(path)
    tensors = _read_tensors(path)
    config = read_config(path) if _is_safetensors(path) else None
    if config is not None:
        model = _load_ours(path, config, tensors)
    else:
        encoder, _ = _encoder_from_reference(tensors, path)
        projector = _projector_from_reference(tensors, path)
        model = CLMR(encoder, projector, sample_rate=sample_rate or 22050, meta={"converted_from": path.name})
    if sample_rate is not None:
        model.sample_rate = int(sample_rate)
    if head is not None:
        head_path = _resolve(head)
        head_tensors = _read_tensors(head_path)
        head_config = read_config(head_path) if _is_safetensors(head_path) else None
        if head_config is not None and head_config.get("head"):
            source = _load_ours(head_path, head_config, head_tensors)
            model.head, model.tags, model.task = source.head, source.tags, source.task
        else:
            model.head = _head_from_tensors(head_tensors, head_path)
        if model.head.in_dim != model.embedding_dim:
            raise CheckpointError(
                head_path,
                f"head takes {model.head.in_dim}-d features but the encoder gives {model.embedding_dim}",
            )
    if tags is not None:
        n_out = model.head.n_classes if model.head is not None else None
        if n_out is not None and len(tags) != n_out:
            raise ClmrError(f"{len(tags)} tag names given for a head with {n_out} outputs")
        model.tags = list(tags)
    return model.to(map_location).eval()


def model_summary(model: CLMR) -> dict[str, Any]:
    """What `clmr info` prints: architecture, parameter counts, tags, sample rate, metadata."""
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    config = model.config()
    return {
        "encoder": config["encoder"],
        "projector": config["projector"],
        "head": config["head"],
        "parameters": {
            "encoder": count(model.encoder),
            "projector": count(model.projector),
            "head": count(model.head),
            "total": count(model),
        },
        "sample_rate": model.sample_rate,
        "crop_length": model.crop_length,
        "crop_seconds": round(model.crop_length / model.sample_rate, 3),
        "embedding_dim": model.embedding_dim,
        "task": model.task,
        "tags": model.tags,
        "meta": model.meta,
    }
