"""Evaluation of learned representations: cached song-level features, probes (linear, MLP, MARBLE,
k-NN), label fractions, metrics, end-to-end fine-tuning, and reports (JSON, Markdown, plots).

Names load on first use, so that `clmr --help` does not import torch and scikit-learn."""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "Recipe": "clmr.evaluate.probe",
    "classification_metrics": "clmr.evaluate.metrics",
    "evaluate": "clmr.evaluate.run",
    "finetune": "clmr.evaluate.finetuning",
    "select_fraction": "clmr.evaluate.selection",
    "tagging_metrics": "clmr.evaluate.metrics",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'clmr.evaluate' has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)
