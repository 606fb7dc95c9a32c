"""Checkpoint I/O: our format (one safetensors file with a JSON config) and the reference layouts.

Our file holds tensors `encoder.*`, `projector.*`, `head.*` and, in its safetensors metadata under
the key "clmr", the JSON of `CLMR.config()`. Reference files (plain `.pt` state dicts, Lightning
`.ckpt`, bare encoder dicts, fine-tuned heads) are read with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import argparse
import json
import numbers
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
from clmr.models.registry import model_file
from clmr.models.samplecnn import SampleCNN, infer_width

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
    # safetensors files start with an 8-byte little-endian header size followed by '{' (a text file
    # that happens to have '{' there gives a header size far beyond its length).
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size


# Lightning 1.0-1.4 (the reference code's era) pickles callback classes as the keys of
# checkpoint["callbacks"] and its AttributeDict as the hyper-parameters. weights_only loading refuses
# any class, so those names are mapped to the inert stand-ins below: nothing of Lightning is imported
# and no code from the file runs.
class _LightningClass:
    """Stands for a Lightning callback class that a checkpoint names (only used as a dict key)."""


class _AttributeDict(dict):
    """Stands for Lightning's AttributeDict; unpickles as a plain dict."""

    def __new__(cls, *args: Any, **kwargs: Any) -> dict:  # type: ignore[misc]
        return {}


_LIGHTNING_CALLBACKS = (
    "model_checkpoint.ModelCheckpoint",
    "early_stopping.EarlyStopping",
    "lr_monitor.LearningRateMonitor",
    "lr_logger.LearningRateLogger",
    "progress.ProgressBar",
    "gpu_stats_monitor.GPUStatsMonitor",
    "stochastic_weight_avg.StochasticWeightAveraging",
)
_LIGHTNING_CALLBACK_MODULES = ("pytorch_lightning.callbacks.", "lightning.pytorch.callbacks.")
_ATTRIBUTE_DICTS = (
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
)


def _lightning_stub(name: str) -> tuple[type, str] | None:
    """The stand-in for a Lightning global `name` (module.qualname), or None for any other name."""
    if name in _ATTRIBUTE_DICTS:
        return (_AttributeDict, name)
    if name.startswith(_LIGHTNING_CALLBACK_MODULES) and re.fullmatch(r"[\w.]+", name):
        return (_LightningClass, name)
    return None


_SAFE_GLOBALS: list[Any] = [argparse.Namespace]
_SAFE_GLOBALS += [_lightning_stub(f"pytorch_lightning.callbacks.{n}") for n in _LIGHTNING_CALLBACKS]
_SAFE_GLOBALS += [_lightning_stub(n) for n in _ATTRIBUTE_DICTS]


def _torch_load(path: Path) -> Any:
    """torch.load(weights_only=True) with the Lightning stand-ins; a Lightning callback class not in the
    list above is added when the load names it, and the load retried."""
    allowed = list(_SAFE_GLOBALS)
    for _ in range(16):
        try:
            with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected pickle protocol")  # old plain pickles
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
            stub = _lightning_stub(found.group(1)) if found else None
            if stub is None or stub in allowed:
                raise
            allowed.append(stub)
    raise CheckpointError(path, "names too many unknown Lightning classes")


def _sniff(path: Path) -> str | None:
    """What a file that is not a torch or safetensors checkpoint is, from its first bytes; None when
    it may be a torch file (a zip archive or a pickle)."""
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return None  # a cut torch archive: torch.load reports it
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return (
                "a TorchScript archive (torch.jit.save / clmr export), not a checkpoint; load the "
                "checkpoint it was exported from, or use torch.jit.load for the archive itself"
            )
        if not any(n.endswith("data.pkl") for n in names):
            return "a zip archive without a PyTorch checkpoint in it"
        return None
    known = {
        b"PAR1": "a Parquet table",
        b"\x89HDF": "an HDF5 file",
        b"\x93NUMPY": "a NumPy .npy array",
        b"RIFF": "a RIFF (WAV) audio file",
        b"fLaC": "a FLAC audio file",
        b"OggS": "an Ogg audio file",
        b"ID3": "an MP3 audio file",
        b"\x89PNG": "a PNG image",
        b"%PDF": "a PDF document",
        b"GGUF": "a GGUF model file",
    }
    for magic, what in known.items():
        if head.startswith(magic):
            return what
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON file"
    if _looks_like_onnx(head) or path.suffix.lower() == ".onnx":
        return "an ONNX model (protobuf), not a checkpoint; load the checkpoint it was exported from"
    return None


def _looks_like_onnx(head: bytes) -> bool:
    """ONNX ModelProto: field 1 (ir_version, varint) first, then a known field tag (producer, graph...)."""
    if len(head) < 3 or head[0] != 0x08:
        return False
    i = 1
    while i < len(head) and head[i] & 0x80:
        i += 1
    return i + 1 < len(head) and head[i + 1] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """All tensors of a safetensors or torch file, flattened to one state dict, and the clmr config the
    file carries (our safetensors metadata, or `clmr_config` in a Lightning checkpoint of `clmr pretrain`)."""
    what = _sniff(path) if not _is_safetensors(path) else None
    if what is not None:
        raise CheckpointError(path, f"not a checkpoint: {what}")
    if _is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as err:
            raise CheckpointError(path, f"truncated or corrupt safetensors file ({err})") from err
        return tensors, read_config(path)
    try:
        obj = _torch_load(path)
    except CheckpointError:
        raise
    except Exception as err:  # anything torch.load or the weights-only unpickler raises
        raise CheckpointError(path, _load_problem(path, err)) from err
    config = None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        config = _lightning_config(obj.get("clmr_config"), path)
        obj = obj["state_dict"]  # Lightning checkpoint
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"expected a state dict, found a {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(path, "holds no tensors")
    return tensors, config


def _lightning_config(value: Any, path: Path) -> dict[str, Any] | None:
    """The `clmr_config` entry of one of our Lightning checkpoints (a JSON string or a dict)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise CheckpointError(path, f"its 'clmr_config' is not valid JSON ({err})") from err
    if not isinstance(value, Mapping):
        raise CheckpointError(path, f"its 'clmr_config' is a {type(value).__name__}, not a config")
    return dict(value)


# torch.save(..., _use_new_zipfile_serialization=False) files start with this pickled magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."


def _load_problem(path: Path, err: Exception) -> str:
    """What a failed weights-only torch.load means for the user, without torch's advice to disable it."""
    message = str(err).strip()
    first = message.splitlines()[0] if message else type(err).__name__
    # "Unsupported global: GLOBAL a.b", or for a blocked module "unsupported GLOBAL posix.system whose ..."
    found = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", message, re.IGNORECASE)
    name = found.group(1).rstrip(".,") if found else None
    if name and re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
        return (
            f"holds pickled Python objects such as {name} besides tensors; clmr reads checkpoints with "
            "torch.load(weights_only=True) and never runs code from a file, so save the state dict "
            "(model.state_dict()) instead"
        )
    with open(path, "rb") as f:
        start = f.read(len(_LEGACY_TORCH_MAGIC))
    # a legacy torch file, or one cut inside its magic number
    legacy = len(start) >= 2 and _LEGACY_TORCH_MAGIC.startswith(start)
    if isinstance(err, EOFError) or legacy:
        detail = "" if isinstance(err, EOFError) or "Weights only" in message else f": {first}"
        return f"truncated or corrupt PyTorch checkpoint (the data ends early or is damaged{detail})"
    if "Weights only load failed" in message:
        return "a corrupt pickle (torch.load could not read it)"
    if isinstance(err, (RuntimeError, zipfile.BadZipFile, OSError, ValueError)):
        return f"not a PyTorch checkpoint, or truncated ({first})"
    detail = f": {message}" if re.search(r"[a-zA-Z]", message) else ""  # torch may say just "101"
    return f"not a PyTorch checkpoint (neither a torch zip archive nor a pickle{detail})"


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


def _encoder_from_reference(
    tensors: Mapping[str, torch.Tensor], path: Path
) -> tuple[SampleCNN, Head | None, str]:
    """The SampleCNN encoder of a reference state dict and, for the supervised variant, its `fc` as a
    linear head (the encoder then gives the 512-d h before `fc`); an all-zero `fc` is dropped."""
    for prefix in _ENCODER_PREFIXES:
        if f"{prefix}sequential.0.0.weight" in tensors:
            break
    else:
        raise CheckpointError(path, "missing key 'sequential.0.0.weight' (no SampleCNN encoder found)")
    state = {k: v for k, v in _strip(tensors, prefix).items() if k.startswith(("sequential.", "fc."))}
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"sequential\.(\d+)\.", k))}
    n_blocks = max(blocks) - 1
    if not 1 <= n_blocks <= 9 or blocks != set(range(n_blocks + 2)):
        raise CheckpointError(
            path, f"not a SampleCNN layout (blocks {sorted(blocks)} under '{prefix}sequential.')"
        )
    channels = []
    for i in range(n_blocks + 2):
        key = f"sequential.{i}.0.weight"
        if key not in state or state[key].dim() != 3:
            raise CheckpointError(path, f"missing key '{prefix}{key}'")
        channels.append(int(state[key].shape[0]))
    if channels[-1] != channels[-2]:
        raise CheckpointError(
            path,
            f"key '{prefix}sequential.{n_blocks + 1}.0.weight' has {channels[-1]} output channels, "
            f"expected {channels[-2]} (as block {n_blocks})",
        )
    width = infer_width(channels[:-1], n_blocks)
    if width is None:
        raise CheckpointError(path, f"not a SampleCNN layout (block channels {channels[:-1]} fit no width)")
    encoder = SampleCNN(width=width, n_blocks=n_blocks)
    fc = {k[3:]: v for k, v in state.items() if k.startswith("fc.")}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    _load_into(encoder, state, path, prefix)
    head = None
    if fc:
        if "weight" not in fc or fc["weight"].dim() != 2:
            raise CheckpointError(path, f"missing key '{prefix}fc.weight'")
        n_classes, in_dim = fc["weight"].shape
        if in_dim != encoder.out_dim:
            raise CheckpointError(
                path,
                f"key '{prefix}fc.weight' has shape {tuple(fc['weight'].shape)}, expected "
                f"({n_classes}, {encoder.out_dim}) for the encoder's {encoder.out_dim}-d features",
            )
        if any(bool(v.any()) for v in fc.values()):  # the reference's zero-filled fc is no classifier
            head = Head("linear", encoder.out_dim, int(n_classes))
            _load_into(head.model[0], fc, path, f"{prefix}fc.")
    return encoder, head, prefix


def _projector_from_reference(
    tensors: Mapping[str, torch.Tensor], path: Path, encoder_dim: int
) -> Projector | None:
    for prefix in _PROJECTOR_PREFIXES:
        if f"{prefix}0.weight" in tensors:
            state = _strip(tensors, prefix)
            if "2.weight" not in state:
                raise CheckpointError(path, f"missing key '{prefix}2.weight'")
            if state["0.weight"].dim() != 2 or state["2.weight"].dim() != 2:
                raise CheckpointError(path, f"key '{prefix}0.weight' or '{prefix}2.weight' is not a matrix")
            hidden, in_dim = state["0.weight"].shape
            if in_dim != encoder_dim:
                raise CheckpointError(
                    path,
                    f"key '{prefix}0.weight' has shape {tuple(state['0.weight'].shape)}: the projector "
                    f"takes {in_dim}-d input but the encoder gives {encoder_dim}-d features",
                )
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
    """A model from its clmr config and tensors: one of our .safetensors files, or a Lightning checkpoint
    of `clmr pretrain` (whose other weights, the online probe and augmentation buffers, are left out)."""
    try:
        model = CLMR.from_config(config)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(path, f"invalid clmr config ({err!r})") from err
    expected = model.state_dict()
    state = dict(tensors)
    if (
        "encoder.fc.weight" in state
        and "encoder.fc.weight" not in expected
        and "head.model.0.weight" not in state
    ):
        # a supervised encoder's fc (training checkpoints, older files) is the model's linear head
        state = {re.sub(r"^encoder\.fc\.", "head.model.0.", k): v for k, v in state.items()}
    if not _is_safetensors(path):
        state = {k: v for k, v in state.items() if k.split(".")[0] in ("encoder", "projector", "head")}
    _load_into(model, state, path, "")
    return model


def _check_positive_rate(sample_rate: Any) -> None:
    if sample_rate is not None and (
        isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real) or int(sample_rate) < 1
    ):
        raise ClmrError(f"the sample rate must be a positive number of Hz, got {sample_rate!r}")


def _check_same_encoder(
    model: CLMR, trained_on: Mapping[str, torch.Tensor], path: Path, head_path: Path, meta: Mapping[str, Any]
) -> None:
    """A head file that holds the encoder its head was trained on must hold the base model's encoder."""
    ours = model.encoder.state_dict()
    same = set(ours) == set(trained_on) and all(
        ours[k].shape == trained_on[k].shape and torch.equal(ours[k], trained_on[k].to(ours[k].dtype))
        for k in ours
    )
    if same:
        return
    source = meta.get("checkpoint") or meta.get("finetuned_from")
    recorded = f"; it records {source} as its checkpoint" if source else ""
    if meta.get("finetuned_from"):
        advice = f"it holds a whole fine-tuned model: load {head_path} on its own, without {path}"
    else:
        advice = (
            f"pass the checkpoint it was trained on, or, if {head_path} holds a whole fine-tuned model, "
            "load it on its own"
        )
    raise CheckpointError(
        head_path,
        f"its head was trained on a different encoder than the one in {path} (the encoder weights "
        f"differ{recorded}); a head only works on the encoder it was trained with, so {advice}",
    )


def _attach_head(model: CLMR, path: Path, head: str | Path) -> None:
    """Add the head of file `head` to `model`, checking it was trained on `model`'s encoder when the
    file says which encoder that was (our head and fine-tuned files hold its weights)."""
    head_path = _resolve(head)
    head_tensors, head_config = _read_checkpoint(head_path)
    if head_config is not None and head_config.get("head"):
        source = _load_ours(head_path, head_config, head_tensors)
        _check_same_encoder(model, source.encoder.state_dict(), path, head_path, source.meta)
        model.head, model.tags, model.task = source.head, source.tags, source.task
    else:
        model.head = _head_from_tensors(head_tensors, head_path)
        try:  # a reference fine-tuning checkpoint may hold its (frozen) encoder too
            trained_on, _, _ = _encoder_from_reference(head_tensors, head_path)
        except CheckpointError:
            trained_on = None
        if trained_on is not None:
            _check_same_encoder(model, trained_on.state_dict(), path, head_path, {})
    if model.head.in_dim != model.embedding_dim:
        raise CheckpointError(
            head_path,
            f"head takes {model.head.in_dim}-d features but the encoder of {path} gives {model.embedding_dim}",
        )


def load_model(
    path: str | Path,
    head: str | Path | None = None,
    *,
    tags: list[str] | None = None,
    sample_rate: int | None = None,
    map_location: str | torch.device = "cpu",
) -> CLMR:
    """Load a clmr model from our file, a run directory, or any reference CLMR checkpoint layout.

    `head` adds a classification head from another file (ours, or a reference fine-tuned head); a
    file that records the encoder the head was trained on must match `path`'s encoder. `tags` names
    its outputs when the file does not; `sample_rate` sets the rate of reference files, which record
    none (default 22,050 Hz); our files record the rate they were trained at, and another
    `sample_rate` is refused rather than feeding the model audio at the wrong rate. A supervised
    SampleCNN's `fc` becomes a linear head. The model is returned in eval mode.
    """
    path = model_file(path, load_model, save_model)  # a registry name (clmr-mtat) -> its cached clmr file
    _check_positive_rate(sample_rate)
    path = _resolve(path)
    tensors, config = _read_checkpoint(path)
    if config is not None:
        model = _load_ours(path, config, tensors)
        if sample_rate is not None and int(sample_rate) != model.sample_rate:
            raise ClmrError(
                f"{path}: this clmr checkpoint was trained at {model.sample_rate} Hz and records it; a sample "
                f"rate (--sample-rate) of {int(sample_rate)} Hz applies only to reference checkpoints, which record none "
                "(leave it out: audio is resampled to the model's rate)"
            )
    else:
        encoder, fc_head, _ = _encoder_from_reference(tensors, path)
        projector = _projector_from_reference(tensors, path, encoder.out_dim)
        model = CLMR(
            encoder,
            projector,
            fc_head,
            sample_rate=int(sample_rate) if sample_rate is not None else 22050,
            meta={"converted_from": path.name},
        )
    if head is not None:
        _attach_head(model, path, head)
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
