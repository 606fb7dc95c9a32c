"""Export the encoder (and head) to ONNX or TorchScript with a dynamic batch size, and verify the
exported file against PyTorch on random input.

Input `audio`: (batch, crop_length) float32 at the model's sample rate. Outputs: `embedding`
(batch, D) and, with a head, `logits` (batch, n_classes; apply sigmoid for tags, softmax for
classes). The model's config (sample rate, crop length, tags, task) travels in the file: ONNX
metadata_props["clmr"], TorchScript extra file "clmr.json".
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clmr.errors import ClmrError
from clmr.files import atomic_path
from clmr.models import CLMR

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4
"""Largest accepted absolute difference between the exported model and PyTorch (fp32)."""


class ExportError(ClmrError):
    """The export failed or does not reproduce PyTorch; names the file."""


class _Exported(nn.Module):
    """audio -> embedding, or audio -> (embedding, logits) when the model has a head."""

    def __init__(self, model: CLMR, with_head: bool) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.head = model.head if with_head else None

    def forward(self, audio: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(audio)
        return h if self.head is None else (h, self.head(h))


@dataclass
class ExportReport:
    """Where the model went and how closely it reproduces PyTorch."""

    path: Path
    format: str
    outputs: list[str]
    max_abs_diff: float
    batch_sizes: tuple[int, ...]


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path, names: list[str], config: str) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    sink = io.StringIO()
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # the exporter logs every optional op library it does not find
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                external_data=False,
                input_names=["audio"],
                output_names=names,
                dynamic_shapes=({0: batch},),
            )
    finally:
        onnx_log.setLevel(level)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "clmr", config
    onnx.save(proto, str(path))


def _run_onnx(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"audio": x})


def _export_torchscript(module: nn.Module, example: torch.Tensor, path: Path, config: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,))
        torch.jit.save(traced, str(path), _extra_files={"clmr.json": config})


def _run_torchscript(path: Path, x: np.ndarray) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        out = loaded(torch.from_numpy(x))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def export_model(
    model: CLMR,
    path: str | os.PathLike,
    format: str = "onnx",
    *,
    with_head: bool | None = None,
    verify_batches: tuple[int, ...] = (1, 3),
    seed: int = 0,
) -> ExportReport:
    """Export `model` (on CPU, fp32, eval mode) to `path` and verify it on random batches of the given
    sizes (different from the traced batch of 2, to check the dynamic batch axis)."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    with_head = model.head is not None if with_head is None else with_head
    if with_head and model.head is None:
        raise ExportError("the model has no head to export; load one with --head")
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; --out names the file to write (e.g. model.{format})")
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _Exported(model, with_head).cpu().float().eval()
    names = ["embedding", "logits"] if with_head else ["embedding"]
    config = json.dumps(model.config())
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(2, model.crop_length, generator=generator)
    # written and verified under a temporary name, then renamed: a failed export never leaves a
    # half-written file at `path` (nor replaces a good one)
    with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp:
        try:
            if format == "onnx":
                _export_onnx(module, example, tmp, names, config)
            else:
                _export_torchscript(module, example, tmp, config)
        except Exception as err:  # the exporters raise many types; report them as one user-facing error
            raise ExportError(f"{path}: {format} export failed ({type(err).__name__}: {err})") from err
        worst = 0.0
        for size in verify_batches:
            x = torch.randn(size, model.crop_length, generator=generator)
            with torch.inference_mode():
                expected = module(x)
            expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
            got = _run_onnx(tmp, x.numpy()) if format == "onnx" else _run_torchscript(tmp, x.numpy())
            for want, have in zip(expected, got, strict=True):
                if want.shape != have.shape:
                    raise ExportError(
                        f"{path}: output shape {have.shape} for batch {size}, expected {want.shape}"
                    )
                worst = max(worst, float(np.abs(want - have).max()))
    return ExportReport(path, format, names, worst, tuple(verify_batches))
