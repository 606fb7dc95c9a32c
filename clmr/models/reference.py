"""PyTorch checkpoints: the reference CLMR layouts (Spijkervet/CLMR releases 1.0 and 2.x) and the
Lightning checkpoints of `clmr pretrain`, read with `torch.load(weights_only=True)` and a fixed
allow-list of the few non-tensor globals they hold; no other pickled object is ever built.

Layouts (keys of the flat tensor dict a file holds, after an optional Lightning `state_dict`):
- 2.x encoder: `[model.]encoder.sequential.{i}.{0,1}.*` (or bare `sequential.*`), supervised `fc.*`;
  release 1.0 (`clmr_checkpoint_1550.pt`) names the same blocks `encoder.conv{i+1}.{0,1}.*`.
- projector: `[model.]projector.0.weight`, `projector.2.weight`.
- fine-tuned heads: `[model.]model.0.*` (linear), `model.0.*` + `model.2.*` (MLP); release 1.0-l
  (`finetuner_checkpoint_20.pt`) holds bare `0.weight`, `0.bias`.
- `clmr pretrain` checkpoints: a `clmr_config` entry (JSON of `CLMR.config()`) and the weights under
  `model` or `state_dict` (`encoder.*`, `projector.*`; the online probe and other entries are ignored).
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from clmr.models.clmr import CLMR
from clmr.models.heads import Head, Projector
from clmr.models.native import parse_config
from clmr.models.samplecnn import SampleCNN, infer_width
from clmr.models.state import CheckpointError, built_from, load_state, strip

_ENCODER_PREFIXES = ("model.encoder.", "encoder.", "")
_PROJECTOR_PREFIXES = ("model.projector.", "projector.")
_HEAD_PREFIXES = ("head.model.", "model.model.", "model.", "")
_OURS = ("encoder.", "projector.", "head.")


class _LightningCallback:
    """Inert stand-in for a Lightning 1.x callback class; such checkpoints pickle the class only as the
    key of its saved state in `checkpoint["callbacks"]`, which clmr never reads."""


def _callback(name: str) -> tuple[type, str]:
    """A distinct stand-in class for the Lightning callback `name` (so that dict keys stay distinct)."""
    return (type(name.rpartition(".")[2], (_LightningCallback,), {}), name)


# The globals that reference Lightning checkpoints hold besides tensors: the callback classes that
# Lightning 1.0-1.4 (the reference's era) pickles as dict keys, its AttributeDict hyper-parameters
# (rebuilt as a plain dict) and argparse.Namespace hyper-parameters (plain attributes). Nothing of
# Lightning is imported, and any other global makes torch.load refuse the file.
_LIGHTNING_1X_CALLBACKS = """model_checkpoint.ModelCheckpoint early_stopping.EarlyStopping timer.Timer
    gradient_accumulation_scheduler.GradientAccumulationScheduler lr_monitor.LearningRateMonitor
    lr_logger.LearningRateLogger progress.ProgressBar gpu_stats_monitor.GPUStatsMonitor
    stochastic_weight_avg.StochasticWeightAveraging finetuning.BackboneFinetuning""".split()
_ATTRIBUTE_DICTS = """pytorch_lightning.utilities.parsing.AttributeDict lightning.fabric.utilities.data.AttributeDict
    lightning_fabric.utilities.data.AttributeDict""".split()
ALLOWED_GLOBALS: list[Any] = [
    argparse.Namespace,
    *[(dict, name) for name in _ATTRIBUTE_DICTS],
    *[_callback(f"pytorch_lightning.callbacks.{name}") for name in _LIGHTNING_1X_CALLBACKS],
]


def torch_load(path: Path) -> Any:
    """`torch.load(weights_only=True)` with `ALLOWED_GLOBALS`; any failure is one line naming `path`."""
    with torch.serialization.safe_globals(ALLOWED_GLOBALS), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch.load warns about the file; the error says it
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # anything torch.load or its weights-only unpickler raises
            raise CheckpointError(path, f"not a checkpoint clmr can read ({_why(path, err)})") from err


def _why(path: Path, err: Exception) -> str:
    """Why torch.load refused `path`: the globals it would have to build (from torch's static scan of
    the archive: nothing is run), or what kind of failure it was."""
    if not zipfile.is_zipfile(path):
        return (
            "not a torch zip archive, nor a legacy torch pickle that weights-only loading reads (another "
            f"kind of file, a truncated one, or one holding Python objects): {type(err).__name__}"
        )
    try:
        unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a TorchScript archive or a damaged one: torch.load's own error says which
        unsafe = []
    if unsafe:
        return (
            f"it holds pickled Python objects such as {unsafe[0]}, which clmr never builds: they could "
            "run code; save the model's state_dict() instead"
        )
    lines = str(err).strip().splitlines()
    if isinstance(err, pickle.UnpicklingError) or not lines:  # torch's text here advises weights_only=False
        return f"a torch archive whose pickle is damaged: {type(err).__name__}"
    return f"{type(err).__name__}: {lines[0].split('. ')[0]}"  # the first sentence: what, not torch's advice


def read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The tensors of a torch checkpoint as one flat dict, and the clmr config of a `clmr pretrain`
    checkpoint (None for reference files, which record none)."""
    obj = torch_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"not a checkpoint clmr can read (it holds a {type(obj).__name__})")
    config = parse_config(obj.get("clmr_config"), path, "'clmr_config'")
    weights = obj.get("model", obj.get("state_dict")) if config is not None else obj.get("state_dict", obj)
    if not isinstance(weights, Mapping):
        raise CheckpointError(path, "not a checkpoint clmr can read (no state dict in it)")
    tensors = {str(k): v for k, v in weights.items() if isinstance(v, torch.Tensor)}
    if config is not None:
        tensors = {k: v for k, v in tensors.items() if k.startswith(_OURS)}
    if not tensors:
        raise CheckpointError(path, "not a checkpoint clmr can read (it holds no tensors)")
    return tensors, config


def _prefixed(prefix: str) -> Callable[[str], str]:
    return lambda key: prefix + key


def _release_1_0_name(prefix: str) -> Callable[[str], str]:
    """The release 1.0 name (`conv{i+1}.*`) of SampleCNN key `sequential.{i}.*`."""
    return lambda key: prefix + re.sub(r"^sequential\.(\d+)\.", lambda m: f"conv{int(m[1]) + 1}.", key)


def _encoder_state(
    tensors: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], Callable[[str], str]] | None:
    """The encoder's tensors under SampleCNN's names (`sequential.{i}.*`, `fc.*`) and a function giving
    each one's name in the file; None if the file holds no SampleCNN."""
    for prefix in _ENCODER_PREFIXES:
        if f"{prefix}sequential.0.0.weight" in tensors:
            state = strip(tensors, prefix)
            return {k: v for k, v in state.items() if k.startswith(("sequential.", "fc."))}, _prefixed(prefix)
        if f"{prefix}conv1.0.weight" in tensors:  # release 1.0: conv1..conv11 = sequential.0..10
            state = {}
            for key, value in strip(tensors, prefix).items():
                if found := re.fullmatch(r"conv([1-9]\d*)\.(.+)", key):
                    state[f"sequential.{int(found[1]) - 1}.{found[2]}"] = value
                elif key.startswith("fc."):
                    state[key] = value
            return state, _release_1_0_name(prefix)
    return None


def encoder_shape(
    state: Mapping[str, torch.Tensor], path: Path, name: Callable[[str], str]
) -> tuple[float, int]:
    """Width and pooled-block count of a SampleCNN state dict, from its conv weights' output channels."""
    blocks = sorted(int(m[1]) for k in state if (m := re.fullmatch(r"sequential\.(\d+)\.0\.weight", k)))
    n_blocks = len(blocks) - 2
    if not 1 <= n_blocks <= 9 or blocks != list(range(n_blocks + 2)):
        raise CheckpointError(
            path, f"not a SampleCNN layout (conv blocks {blocks} under '{name('sequential.')}')"
        )
    channels = [int(state[f"sequential.{i}.0.weight"].shape[0]) for i in blocks]  # load_state checks the rest
    if channels[-1] != channels[-2]:
        raise CheckpointError(
            path,
            f"key '{name(f'sequential.{blocks[-1]}.0.weight')}' has {channels[-1]} output channels, "
            f"expected {channels[-2]} (as block {n_blocks})",
        )
    width = infer_width(channels[:-1], n_blocks)
    if width is None:
        raise CheckpointError(path, f"not a SampleCNN layout (block channels {channels[:-1]} fit no width)")
    return width, n_blocks


def encoder_from(tensors: Mapping[str, torch.Tensor], path: Path) -> tuple[SampleCNN, Head | None] | None:
    """The SampleCNN a reference file holds (None if none) and, for the supervised variant, its `fc` as
    a linear head (the encoder then gives the 512-d h before `fc`); the all-zero `fc` that the
    reference's `load_encoder_checkpoint` (Spijkervet/CLMR clmr/utils/checkpoint.py) adds is no classifier: dropped."""
    found = _encoder_state(tensors)
    if found is None:
        return None
    state, name = found
    with built_from(path, "its encoder's"):
        encoder = SampleCNN(*encoder_shape(state, path, name))
    fc = strip(state, "fc.")
    load_state(encoder, {k: v for k, v in state.items() if not k.startswith("fc.")}, path, name)
    if not any(bool(v.any()) for v in fc.values()):
        return encoder, None
    if fc.get("weight") is None or fc["weight"].dim() != 2 or fc["weight"].shape[1] != encoder.out_dim:
        shape = tuple(fc["weight"].shape) if "weight" in fc else None
        raise CheckpointError(
            path, f"key '{name('fc.weight')}' has shape {shape}, expected (classes, {encoder.out_dim})"
        )
    with built_from(path, f"its '{name('fc.weight')}' gives a head whose"):
        head = Head("linear", encoder.out_dim, int(fc["weight"].shape[0]))
    load_state(head.model[0], fc, path, lambda key: name(f"fc.{key}"))
    return encoder, head


def projector_from(tensors: Mapping[str, torch.Tensor], path: Path, encoder_dim: int) -> Projector | None:
    """The SimCLR projector (`projector.0.weight`, `projector.2.weight`) of a reference file, if any."""
    prefix = next((p for p in _PROJECTOR_PREFIXES if f"{p}0.weight" in tensors), None)
    if prefix is None:
        return None
    state = strip(tensors, prefix)
    first = state["0.weight"]
    last = state.get("2.weight", first)  # a missing one is named by load_state
    if first.dim() != 2 or first.shape[1] != encoder_dim or last.dim() != 2:
        raise CheckpointError(
            path,
            f"key '{prefix}0.weight' has shape {tuple(first.shape)} and '{prefix}2.weight' {tuple(last.shape)}, "
            f"expected (hidden, {encoder_dim}) and (out, hidden): the encoder gives {encoder_dim}-d features",
        )
    with built_from(path, "its projector's"):
        projector = Projector(encoder_dim, first.shape[0], last.shape[0])
    load_state(projector, state, path, _prefixed(prefix))
    return projector


def head_from(tensors: Mapping[str, torch.Tensor], path: Path) -> Head:
    """A linear or MLP head from our `head.*` keys or a reference fine-tuned head (`model.0.*`, `0.*`...)."""
    for prefix in _HEAD_PREFIXES:
        state = {k: v for k, v in strip(tensors, prefix).items() if re.fullmatch(r"\d+\.(weight|bias)", k)}
        if "0.weight" in state and state["0.weight"].dim() == 2:
            break
    else:
        raise CheckpointError(path, "missing key 'model.0.weight' (no classification head found)")
    layers = sorted({int(k.split(".")[0]) for k in state})
    out_dim, in_dim = state["0.weight"].shape
    if layers not in ([0], [0, 2], [0, 3]):
        raise CheckpointError(path, f"unexpected key '{prefix}{layers[-1]}.weight' for a linear or MLP head")
    with built_from(path, "its head's"):
        if layers == [0]:
            head = Head("linear", in_dim, out_dim)
        else:
            kind = "mlp" if layers == [0, 2] else "marble"
            head = Head(kind, in_dim, state[f"{layers[1]}.weight"].shape[0], hidden=out_dim)
    load_state(head.model, state, path, _prefixed(prefix))
    return head


def model_from(tensors: Mapping[str, torch.Tensor], path: Path, sample_rate: int) -> CLMR:
    """A CLMR model from a reference file's tensors (encoder, projector if any, supervised `fc` as head)."""
    found = encoder_from(tensors, path)
    if found is None:
        raise CheckpointError(
            path,
            "missing key 'sequential.0.0.weight' (no SampleCNN encoder found, nor release 1.0's 'conv1.0.weight')",
        )
    encoder, head = found
    projector = projector_from(tensors, path, encoder.out_dim)
    return CLMR(encoder, projector, head, sample_rate=sample_rate, meta={"converted_from": path.name})
