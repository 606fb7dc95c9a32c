"""`load_model`: a clmr model from our `.safetensors` file, a run directory, a `clmr pretrain` checkpoint
or any reference CLMR layout, with the cross-checks that keep a head on the encoder it was trained on
and a model at the sample rate it was trained at; `model_summary` for `clmr info`.

Our format is `clmr.models.native`, the PyTorch files (reference layouts, training checkpoints)
`clmr.models.reference`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import clmr.models.checks as checks
from clmr.errors import ClmrError
from clmr.models.clmr import CLMR
from clmr.models.native import (
    RUN_DIR_MODEL,
    SUFFIX,
    model_from_config,
    read_config,
    read_safetensors,
    save_model,
)
from clmr.models.reference import encoder_from, head_from, model_from, read_torch
from clmr.models.registry import model_file
from clmr.models.state import CheckpointError

__all__ = ["RUN_DIR_MODEL", "CheckpointError", "load_model", "model_summary", "read_config", "save_model"]


def _resolve(path: str | Path) -> Path:
    """`path` itself, or the model file of a run directory."""
    path = Path(path)
    if path.is_dir():
        if not (path / RUN_DIR_MODEL).exists():
            raise CheckpointError(path, f"a folder without {RUN_DIR_MODEL} (not a clmr run directory)")
        return path / RUN_DIR_MODEL
    if not path.exists():
        raise CheckpointError(path, "no such file")
    return path


def _check_rate(sample_rate: Any) -> None:
    """A sample rate given by the user is a whole number of Hz in 1..384,000 (checked before any file is read)."""
    if sample_rate is not None:
        checks.sample_rate(sample_rate, "the sample rate (sample_rate, --sample-rate)")


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Tensors and clmr config (None for reference files) of a `.safetensors` file or a torch file."""
    if path.stat().st_size == 0:
        raise CheckpointError(path, "not a checkpoint clmr can read (an empty file)")
    return read_safetensors(path) if path.suffix == SUFFIX else read_torch(path)


def _check_same_encoder(
    model: CLMR, trained_on: torch.nn.Module, path: Path, head_path: Path, meta: Mapping
) -> None:
    """A head file that holds the encoder its head was trained on must hold the base model's encoder."""
    ours, theirs = model.encoder.state_dict(), trained_on.state_dict()
    if set(ours) == set(theirs) and all(
        ours[k].shape == theirs[k].shape and torch.equal(ours[k], theirs[k].to(ours[k].dtype)) for k in ours
    ):
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
    """Add the head of file `head` to `model`, checking it was trained on `model`'s encoder when the file
    holds that encoder (our head and fine-tuned files do, and so may a reference fine-tuning file)."""
    head_path = _resolve(head)
    tensors, config = _read(head_path)
    if config is not None and config.get("head"):
        source = model_from_config(head_path, config, tensors)
        _check_same_encoder(model, source.encoder, path, head_path, source.meta)
        model.head, model.tags, model.task = source.head, source.tags, source.task
    else:
        model.head = head_from(tensors, head_path)
        trained_on = encoder_from(tensors, head_path)
        if trained_on is not None:
            _check_same_encoder(model, trained_on[0], path, head_path, {})
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
    _check_rate(sample_rate)
    path = _resolve(path)
    tensors, config = _read(path)
    if config is None:
        model = model_from(tensors, path, int(sample_rate) if sample_rate is not None else 22050)
    else:
        model = model_from_config(path, config, tensors)
        if sample_rate is not None and int(sample_rate) != model.sample_rate:
            raise ClmrError(
                f"{path}: this clmr checkpoint was trained at {model.sample_rate} Hz and records it; a sample "
                f"rate (--sample-rate) of {int(sample_rate)} Hz applies only to reference checkpoints, which "
                "record none (leave it out: audio is resampled to the model's rate)"
            )
    if head is not None:
        _attach_head(model, path, head)
    if tags is not None:
        model.tags = checks.tags(tags, model.head.n_classes if model.head is not None else None)
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
